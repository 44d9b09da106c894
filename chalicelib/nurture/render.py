"""Render a step for a lead: Jinja2 (autoescaped HTML), tracked links, open pixel, text part."""

from __future__ import annotations

import functools
import html
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chalicelib.campaign_types import CalendarEvent, Campaign, Step
from chalicelib.config import TEMPLATES_DIR
from chalicelib.entities import PROFILE_FIELDS, Lead
from chalicelib.nurture import invite
from chalicelib.nurture.schedule import EventSchedule, notice_of
from chalicelib.tracking import LinkBuilder

if TYPE_CHECKING:  # Jinja2 is imported by the first render (the stream handler seldom renders)
    from jinja2 import Environment

_HREF = re.compile(r"""href\s*=\s*(["'])(https?://.*?)\1""", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    unsubscribe_url: str
    links: int = 0  # distinct tracked destinations (the trap link not counted)


TRAP_LABEL = "Do not follow: a link for automated mail scanners only"


@functools.cache
def _html_environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_blank_none,
    )


@functools.cache
def _subject_environment() -> Environment:
    from jinja2 import Environment, StrictUndefined

    # Subjects are header text, not HTML: escaping "&" to "&amp;" there would be a bug. Header
    # safety (no CR/LF) is enforced after rendering.
    return Environment(autoescape=False, undefined=StrictUndefined, finalize=_blank_none)  # noqa: S701


def _blank_none(value: Any) -> Any:
    """A missing optional value prints as nothing, never as "None"."""
    return "" if value is None else value


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def template_exists(name: str) -> bool:
    return (TEMPLATES_DIR / name).is_file()


class Renderer:
    """``schedule``: the campaign's events as they stand (moved, cancelled); by default the file's."""

    def __init__(self, campaign: Campaign, links: LinkBuilder, schedule: Optional[EventSchedule] = None) -> None:
        self._campaign = campaign
        self._links = links
        self._schedule = schedule or EventSchedule(campaign)

    def context(
        self,
        lead: Lead,
        sequence_id: str,
        step: Step,
        message_id: str,
        now: datetime,
        *,
        magnet_id: Optional[str] = None,
        download_url: Optional[str] = None,
        confirm_url: Optional[str] = None,
        topic: Optional[str] = None,
    ) -> dict[str, Any]:
        """What a template sees. ``topic``: a broadcast's, whose footer offers to unsubscribe
        from that topic alone."""
        sender = self._campaign.sender
        known_topic = self._campaign.topics.get(topic) if topic else None
        magnet = self._campaign.magnets.get(magnet_id) if magnet_id else None
        return {
            "lead": {
                **dict.fromkeys(PROFILE_FIELDS),
                **lead.custom,
                **lead.profile,
                "email": lead.email,
            },
            "email": lead.email,
            "first_name": lead.profile.get("first_name"),
            "last_name": lead.profile.get("last_name"),
            "company": lead.profile.get("company"),
            "job_title": lead.profile.get("job_title"),
            "first_touch": asdict(lead.first_touch),  # every key, None when unknown
            "campaign_title": self._campaign.title or self._campaign.name,
            "sender_name": sender.from_name,
            "postal_address": sender.postal_address,
            "magnet_id": magnet_id if magnet else None,
            "magnet_title": magnet.title if magnet else None,
            "download_url": download_url,
            "confirm_url": confirm_url,
            "unsubscribe_url": self._links.unsubscribe(lead.lead_id, message_id, now),
            "preferences_url": self._links.preferences(lead.lead_id, message_id, now),
            "topic_title": known_topic.title if known_topic else None,
            "topic_unsubscribe_url": (
                self._links.topic_unsubscribe(lead.lead_id, message_id, topic, now) if topic and known_topic else None
            ),
            "sequence_id": sequence_id,
            "step_id": step.id,
            "event": self._event_context(lead, sequence_id, message_id, now),
        }

    def event_of(self, sequence_id: str) -> Optional[tuple[str, CalendarEvent]]:
        """The event a sequence (or an event's notice) is about, as it stands now, if any."""
        scheduled = self._schedule.of_sequence(sequence_id)
        return (scheduled.event_id, scheduled.event) if scheduled is not None else None

    def join_link(self, lead_id: str, message_id: str, event: CalendarEvent, now: datetime) -> str:
        """The lead's own join link: tracked, so that joining is recorded (a human click on it)."""
        return self._links.click(lead_id, message_id, event.join_url, now)

    def invite(
        self, lead: Lead, sequence_id: str, message_id: str, now: datetime, *, to: str
    ) -> Optional[invite.Invite]:
        """The calendar invite of the sequence's event for this lead (``to``: the address as sent)."""
        scheduled = self._schedule.of_sequence(sequence_id)
        if scheduled is None:
            return None
        event_id, event = scheduled.event_id, scheduled.event
        notice = notice_of(sequence_id)
        cancelling = notice is not None and notice[0] == "cancel"
        sender = self._campaign.sender
        name = " ".join(filter(None, (lead.profile.get("first_name"), lead.profile.get("last_name"))))
        return invite.Invite(
            event_id=event_id,
            event=event,
            campaign=self._campaign.name,
            organiser_name=sender.from_name,
            organiser_address=sender.from_address,
            attendee_address=to,
            attendee_name=name,
            join_url=self.join_link(lead.lead_id, message_id, event, now),
            sequence=scheduled.revision,
            method=invite.METHOD_CANCEL if cancelling else invite.METHOD_REQUEST,
        )

    def _event_context(self, lead: Lead, sequence_id: str, message_id: str, now: datetime) -> Optional[dict[str, Any]]:
        found = self.event_of(sequence_id)
        if found is None:
            return None
        event_id, event = found
        starts_at, ends_at = invite.event_times(event)
        # In the lead's own time zone when the landing page gave one, else the event's.
        zone = ZoneInfo(lead.timezone) if lead.timezone and _known_zone(lead.timezone) else ZoneInfo(event.timezone)
        local = starts_at.astimezone(zone)
        # The join URL as written: the link rewriting tracks it like every other link. The calendar
        # entries carry the lead's tracked join link, so that joining from the calendar counts too.
        tracked_join = self.join_link(lead.lead_id, message_id, event, now)
        return {
            "id": event_id,
            "title": event.title,
            "description": event.description,
            "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(),
            "when": f"{local:%A} {local.day} {local:%B %Y}, {local:%H:%M} {local.tzname()}",
            "join_url": event.join_url,
            "google_calendar_url": invite.google_calendar_url(event, tracked_join),
            "outlook_calendar_url": invite.outlook_calendar_url(event, tracked_join),
        }

    def render(
        self, step: Step, context: dict[str, Any], lead_id: str, message_id: str, now: datetime
    ) -> RenderedEmail:
        subject = _subject_environment().from_string(step.subject).render(**context)
        subject = " ".join(subject.split())  # no CR/LF can reach the header
        body = _html_environment().get_template(step.template).render(**context)
        body, destinations = self._track_links(body, lead_id, message_id, now)
        text = html_to_text(body)  # before the trap goes in: the text part has no hidden link
        pixel = self._links.open_pixel(lead_id, message_id, now)
        # A machine that follows every link finds this one; a person never sees it: hidden by
        # markup (mso-hide for Outlook, which ignores display:none), nothing to click if shown,
        # out of the tab order, and named for screen readers as not to be followed.
        trap_to = destinations[0] if destinations else f"{self._links.public_url}/health"
        trap = self._links.click(lead_id, message_id, trap_to, now, trap=True)
        hidden = (
            '<div hidden style="display:none;max-height:0;overflow:hidden;mso-hide:all">'
            f'<a href="{html.escape(trap)}" tabindex="-1" rel="nofollow" aria-label="{TRAP_LABEL}"></a></div>'
        )
        img = f'<img src="{html.escape(pixel)}" width="1" height="1" alt="" style="display:block;border:0">'
        head, closing, tail = body.rpartition("</body>")
        body = f"{head}{hidden}{img}{closing}{tail}" if closing else body + hidden + img
        return RenderedEmail(
            subject=subject,
            html=body,
            text=text,
            unsubscribe_url=context["unsubscribe_url"],
            links=len(destinations),
        )

    def _track_links(self, body: str, lead_id: str, message_id: str, now: datetime) -> tuple[str, list[str]]:
        """The body with every link of ours to follow tracked, and those links' destinations."""
        destinations: list[str] = []

        def rewrite(match: re.Match[str]) -> str:
            destination = html.unescape(match.group(2).strip())
            if self._links.is_own(destination):
                return match.group(0)  # unsubscribe and confirm links are ours already
            if destination not in destinations:
                destinations.append(destination)
            tracked = self._links.click(lead_id, message_id, destination, now)
            return f'href="{html.escape(tracked)}"'

        return _HREF.sub(rewrite, body), destinations


class _TextExtractor(HTMLParser):
    """HTML to a readable plain-text part: paragraphs, list items, and links as "text (url)"."""

    _BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "tr", "td", "table", "ul", "ol", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._href: list[Optional[str]] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip += 1
        elif tag == "a":
            self._href.append(dict(attrs).get("href"))
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._href:
            href = self._href.pop()
            if href:
                self.parts.append(f" ({href})")
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(body: str) -> str:
    extractor = _TextExtractor()
    extractor.feed(body)
    lines = [line.strip() for line in "".join(extractor.parts).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
