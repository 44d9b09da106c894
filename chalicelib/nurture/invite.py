"""Calendar invites for a campaign's events: an RFC 5545 ``.ics`` (METHOD:REQUEST, or CANCEL) and
"add to Google / Outlook calendar" links. Pure: no AWS, no clock of its own.

One VEVENT per event, with a UID that stays the same for the event's life (so an updated invite,
SEQUENCE + 1, replaces the one in the calendar instead of adding a second), times in UTC.
Everything that comes from a lead or the campaign file is escaped as TEXT (RFC 5545 3.3.11) or
stripped to a safe parameter value (3.1, no DQUOTE or control characters), and lines are folded
at 75 octets (3.1): no value can add a property, a component or a line.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final
from urllib.parse import urlencode

from chalicelib.campaign_types import CalendarEvent
from chalicelib.entities import parse_iso

if TYPE_CHECKING:  # mime imports render, which imports this
    from chalicelib.nurture.mime import Attachment

METHOD_REQUEST: Final = "REQUEST"
METHOD_CANCEL: Final = "CANCEL"
INVITE_FILENAME: Final = "invite.ics"
CALENDAR_CONTENT_TYPE: Final = "text/calendar"
PRODUCT_ID: Final = "-//Trellis//Trellis lead nurture//EN"
_FOLD_OCTETS = 75
_UTC_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Invite:
    """What one registrant's invite says."""

    event_id: str
    event: CalendarEvent
    campaign: str
    organiser_name: str
    organiser_address: str
    attendee_address: str
    attendee_name: str
    join_url: str  # the registrant's own tracked join link
    sequence: int = 0  # the event's revision: each reschedule adds one
    method: str = METHOD_REQUEST


def uid(event_id: str, campaign: str, organiser_address: str) -> str:
    """The event's UID: the same in every invite and update, for every registrant."""
    domain = organiser_address.rpartition("@")[2] or "trellis.invalid"
    return f"{event_id}.{campaign}@{domain}"


def event_times(event: CalendarEvent) -> tuple[datetime, datetime]:
    starts_at = parse_iso(event.starts_at)
    return starts_at, starts_at + event.duration


def ics(invite: Invite, now: datetime) -> bytes:
    """The invite as an iCalendar object (CRLF line ends, UTF-8)."""
    starts_at, ends_at = event_times(invite.event)
    cancelled = invite.method == METHOD_CANCEL
    attendee_name = _parameter(invite.attendee_name)
    attendee = "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=FALSE"
    if attendee_name:
        attendee += f';CN="{attendee_name}"'
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODUCT_ID}",
        "CALSCALE:GREGORIAN",
        f"METHOD:{invite.method}",
        "BEGIN:VEVENT",
        f"UID:{_text(uid(invite.event_id, invite.campaign, invite.organiser_address))}",
        f"DTSTAMP:{now.strftime(_UTC_FORMAT)}",
        f"SEQUENCE:{invite.sequence}",
        f"DTSTART:{starts_at.strftime(_UTC_FORMAT)}",
        f"DTEND:{ends_at.strftime(_UTC_FORMAT)}",
        f"SUMMARY:{_text(invite.event.title)}",
        f"DESCRIPTION:{_text(_description(invite.event, invite.join_url))}",
        f"LOCATION:{_text(invite.join_url)}",
        f"URL:{_text(invite.join_url)}",
        f'ORGANIZER;CN="{_parameter(invite.organiser_name)}":mailto:{_address(invite.organiser_address)}',
        f"{attendee}:mailto:{_address(invite.attendee_address)}",
        f"STATUS:{'CANCELLED' if cancelled else 'CONFIRMED'}",
        "TRANSP:OPAQUE",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "".join(_fold(line) + "\r\n" for line in lines).encode("utf-8")


def calendar_attachment(invite: Invite, now: datetime) -> Attachment:
    """The invite as the email's ``invite.ics`` (text/calendar with its method, as mail clients
    expect to offer "add to calendar")."""
    from chalicelib.nurture.mime import Attachment

    return Attachment(
        filename=INVITE_FILENAME,
        content_type=CALENDAR_CONTENT_TYPE,
        data=ics(invite, now),
        params=(("method", invite.method), ("charset", "utf-8")),
    )


def google_calendar_url(event: CalendarEvent, join_url: str) -> str:
    starts_at, ends_at = event_times(event)
    query = {
        "action": "TEMPLATE",
        "text": event.title,
        "dates": f"{starts_at.strftime(_UTC_FORMAT)}/{ends_at.strftime(_UTC_FORMAT)}",
        "details": _description(event, join_url),
        "location": join_url,
    }
    return "https://calendar.google.com/calendar/render?" + urlencode(query)


def outlook_calendar_url(event: CalendarEvent, join_url: str) -> str:
    starts_at, ends_at = event_times(event)
    query = {
        "path": "/calendar/action/compose",
        "rru": "addevent",
        "subject": event.title,
        "startdt": starts_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "enddt": ends_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "body": _description(event, join_url),
        "location": join_url,
    }
    return "https://outlook.live.com/calendar/0/deeplink/compose?" + urlencode(query)


def _description(event: CalendarEvent, join_url: str) -> str:
    return f"{event.description}\n\nJoin: {join_url}".strip()


def _clean(value: str) -> str:
    """Control characters (line breaks included) out; the escaping below makes newlines."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") and c != "\n" else c for c in value)


def _text(value: str) -> str:
    """A TEXT value: backslash, semicolon and comma escaped, a newline as the two characters \\n."""
    cleaned = _clean(value).replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return cleaned.replace("\n", "\\n")


def _parameter(value: str) -> str:
    """A quoted parameter value: no DQUOTE and no control character can be in one (RFC 5545 3.1)."""
    return " ".join(_clean(value).replace('"', "'").replace("\n", " ").split())[:100]


def _address(value: str) -> str:
    """A mailto address as the mail carries it; anything that could end the line or the value goes."""
    return "".join(c for c in value if c.isprintable() and c not in ' ";:,<>\\')


def _fold(line: str) -> str:
    """Fold at 75 octets, never inside a UTF-8 character: CRLF and one space before each piece."""
    pieces: list[str] = []
    current = ""
    size = 0
    limit = _FOLD_OCTETS
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > limit:
            pieces.append(current)
            current, size = "", 0
            limit = _FOLD_OCTETS - 1  # the leading space of a continuation line counts
        current += char
        size += width
    pieces.append(current)
    return "\r\n ".join(pieces)
