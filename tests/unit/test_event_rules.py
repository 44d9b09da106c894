"""The campaign's events (the demo webinar) without AWS: steps timed before the start and after
the end, late registrations, a held-up dispatcher, and the calendar invite read back by a real
iCalendar parser (the ``icalendar`` package)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import icalendar
import pytest

from chalicelib.config import load_campaign
from chalicelib.entities import Enrolment, iso, parse_iso
from chalicelib.nurture import invite
from chalicelib.nurture.rules import Advance, Defer, Exit, Send, decide, first_step
from testkit.leads import a_lead

DEMO = load_campaign("demo")
WEBINAR = DEMO.events["demo-webinar"]
SEQUENCE = DEMO.sequences["webinar"]
START = parse_iso(WEBINAR.starts_at)
END = START + WEBINAR.duration


def test_the_demo_webinar_is_what_these_tests_assume() -> None:
    assert [s.id for s in SEQUENCE.steps] == [
        "registered",
        "reminder-day",
        "reminder-hour",
        "thanks-for-attending",
        "recording-offer",
    ]
    assert WEBINAR.duration == timedelta(minutes=45)
    assert datetime.now(UTC) + timedelta(days=12) < START  # "+14d 16:00" from when it was compiled


def run(registered_at: datetime, ticks: list[datetime], **lead: Any) -> list[tuple[str, datetime]]:
    """The webinar sequence for one registrant through the dispatcher's decisions at ``ticks``:
    (step, when) of every email sent."""
    index, due = first_step(DEMO, SEQUENCE, registered_at)
    person = a_lead(email="ann@example.com", at=registered_at, lead_id="lead-1", **lead)
    sent: list[tuple[str, datetime]] = []
    for now in ticks:
        while due is not None and due <= now:
            enrolment = Enrolment("lead-1", "webinar", "active", index, iso(registered_at), iso(due))
            decision = decide(DEMO, enrolment, person, None, now)
            if isinstance(decision, Send):
                sent.append((SEQUENCE.steps[decision.step_index].id, now))
                index, due = decision.next_index, decision.next_due
            elif isinstance(decision, Advance):
                index, due = decision.next_index, decision.next_due
            elif isinstance(decision, Defer):
                due = decision.until
            else:
                assert isinstance(decision, Exit)
                return sent
    return sent


def every(step: timedelta, start: datetime, end: datetime) -> list[datetime]:
    times = []
    while start <= end:
        times.append(start)
        start += step
    return times


def test_three_days_ahead_gets_both_reminders_at_their_times_then_the_follow_up() -> None:
    registered = START - timedelta(days=3)
    sent = run(registered, every(timedelta(minutes=1), registered, END + timedelta(days=1, hours=1)))
    assert sent == [
        ("registered", registered),
        ("reminder-day", START - timedelta(days=1)),
        ("reminder-hour", START - timedelta(hours=1)),
        ("recording-offer", END + timedelta(days=1)),
    ]


def test_thirty_minutes_ahead_gets_the_confirmation_and_no_reminder() -> None:
    registered = START - timedelta(minutes=30)
    sent = run(registered, every(timedelta(minutes=1), registered, END + timedelta(days=1, hours=1)))
    assert sent == [("registered", registered), ("recording-offer", END + timedelta(days=1))]


def test_a_day_ahead_skips_the_passed_reminder_and_gets_the_next() -> None:
    registered = START - timedelta(hours=20)
    sent = run(registered, every(timedelta(minutes=1), registered, START))
    assert [name for name, _ in sent] == ["registered", "reminder-hour"]


def test_a_held_up_dispatcher_sends_only_the_nearest_reminder_never_a_burst() -> None:
    registered = START - timedelta(days=3)
    # Nothing ran between the confirmation and 30 minutes before the start: both reminders are due.
    sent = run(registered, [registered, START - timedelta(minutes=30)])
    assert sent == [("registered", registered), ("reminder-hour", START - timedelta(minutes=30))]


def test_no_reminder_once_the_event_started() -> None:
    registered = START - timedelta(days=3)
    sent = run(registered, [registered, START + timedelta(minutes=5), END + timedelta(days=1)])
    assert sent == [("registered", registered), ("recording-offer", END + timedelta(days=1))]


def test_reminders_ignore_the_send_window_the_cap_and_a_pause_but_not_an_unsubscribe() -> None:
    registered = START - timedelta(days=3)
    busy = {
        "paused_until": iso(START + timedelta(days=30)),
        "recent_sends": (iso(START - timedelta(hours=2)),),  # the cap (1 per 20h) is reached
        "timezone": "Pacific/Kiritimati",  # UTC+14: 16:00 in Berlin is 05:00 there, outside the window
    }
    day_before = START - timedelta(days=1)
    sent = run(registered, [registered, day_before, START - timedelta(hours=1)], **busy)
    assert sent == [
        ("registered", registered),
        ("reminder-day", day_before),
        ("reminder-hour", START - timedelta(hours=1)),
    ]
    assert run(registered, [registered, day_before], unsubscribed_at=iso(registered)) == []


def test_a_registration_after_every_timed_step_still_gets_its_confirmation() -> None:
    index, due = first_step(DEMO, SEQUENCE, START + timedelta(minutes=10))
    assert (index, due) == (0, START + timedelta(minutes=10))


# -- the invite ---------------------------------------------------------------------------------

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def an_invite(**overrides: Any) -> invite.Invite:
    values: dict[str, Any] = {
        "event_id": "demo-webinar",
        "event": WEBINAR,
        "campaign": "demo",
        "organiser_name": "Trellis Demo",
        "organiser_address": "hello@demo.trellis.example",
        "attendee_address": "ann@example.com",
        "attendee_name": "Ann Lee",
        "join_url": "https://api.example/t/c/token",
        **overrides,
    }
    return invite.Invite(**values)


def parsed(data: bytes) -> tuple[icalendar.Calendar, icalendar.Event]:
    calendar = icalendar.Calendar.from_ical(data)
    events = [c for c in calendar.walk() if c.name == "VEVENT"]
    assert len(events) == 1
    return calendar, events[0]


def test_the_invite_parses_and_its_times_match_the_event() -> None:
    data = invite.ics(an_invite(), NOW)
    assert b"\r\n" in data and all(len(line) <= 75 for line in data.split(b"\r\n"))
    calendar, event = parsed(data)
    assert str(calendar["METHOD"]) == "REQUEST"
    assert event.decoded("DTSTART") == START
    assert event.decoded("DTEND") == END
    assert str(event["UID"]) == "demo-webinar.demo@demo.trellis.example"
    assert int(event["SEQUENCE"]) == 0
    assert str(event["SUMMARY"]) == WEBINAR.title
    assert str(event["LOCATION"]) == "https://api.example/t/c/token"
    assert str(event["ORGANIZER"]) == "mailto:hello@demo.trellis.example"
    assert str(event["ATTENDEE"]) == "mailto:ann@example.com"
    assert WEBINAR.description in str(event["DESCRIPTION"])


def test_an_update_keeps_the_uid_and_a_cancel_says_so() -> None:
    _, first = parsed(invite.ics(an_invite(), NOW))
    _, update = parsed(invite.ics(an_invite(sequence=1), NOW))
    calendar, cancel = parsed(invite.ics(an_invite(sequence=2, method=invite.METHOD_CANCEL), NOW))
    assert first["UID"] == update["UID"] == cancel["UID"]
    assert (int(update["SEQUENCE"]), int(cancel["SEQUENCE"])) == (1, 2)
    assert (str(calendar["METHOD"]), str(cancel["STATUS"])) == ("CANCEL", "CANCELLED")


@pytest.mark.parametrize(
    "name",
    [
        'Ann "x";\r\nBEGIN:VALARM',
        "Ann\nATTENDEE:mailto:evil@example.com",
        "Ann\u2028END:VEVENT",
        "Zoë, 李; \\ \u00e9" * 6,
    ],
)
def test_a_hostile_name_adds_no_property_line_or_component(name: str) -> None:
    data = invite.ics(an_invite(attendee_name=name, event=WEBINAR.model_copy(update={"title": name})), NOW)
    _, event = parsed(data)
    assert [str(a) for a in [event["ATTENDEE"]]] == ["mailto:ann@example.com"]  # one attendee, ours
    assert "VALARM" not in [c.name for c in icalendar.Calendar.from_ical(data).walk()]
    unfolded = data.replace(b"\r\n ", b"")
    assert [line.split(b":")[0].split(b";")[0] for line in unfolded.split(b"\r\n") if line][:6] == [
        b"BEGIN",
        b"VERSION",
        b"PRODID",
        b"CALSCALE",
        b"METHOD",
        b"BEGIN",
    ]
    assert unfolded.count(b"\r\nATTENDEE") == 1 and unfolded.count(b"\r\nEND:VEVENT") == 1
    assert str(event["SUMMARY"]).startswith(name[:3])  # the text itself stays, as one value


def test_calendar_links_carry_the_times_in_utc() -> None:
    google = invite.google_calendar_url(WEBINAR, "https://api.example/t/c/token")
    outlook = invite.outlook_calendar_url(WEBINAR, "https://api.example/t/c/token")
    assert f"dates={START:%Y%m%dT%H%M%SZ}%2F{END:%Y%m%dT%H%M%SZ}" in google
    assert f"startdt={START:%Y-%m-%dT%H%%3A%M%%3A%SZ}" in outlook
    assert "token" in google and "token" in outlook


# -- attendance uploads -------------------------------------------------------------------------


def test_attendance_csv_rows_are_read_as_platforms_export_them_and_bad_rows_named() -> None:
    from chalicelib.webinars import parse_attendance

    text = (
        "Email,Attended,Minutes,Name\n"  # another column, the header in any case
        "Ann@Example.com,yes,42,Ann\n"
        "bob@example.com,0,,Bob\n"
        "not-an-address,true,3,X\n"
        "cy@example.com,maybe,3,Cy\n"
        "di@example.com,true,-5,Di\n"
    )
    parsed = parse_attendance("text/csv", text)
    assert [(r.row, r.identity, r.attended, r.minutes) for r in parsed.rows] == [
        (1, "ann@example.com", True, 42),
        (2, "bob@example.com", False, None),
    ]
    assert [(p.row, p.field) for p in parsed.problems] == [(3, "email"), (4, "attended"), (5, "minutes")]


def test_attendance_json_rows_and_what_is_no_upload_at_all() -> None:
    from chalicelib.errors import ValidationFailed
    from chalicelib.webinars import parse_attendance

    parsed = parse_attendance("application/json", '{"attendance": [{"email": "a@example.com", "attended": true}, 7]}')
    assert [r.identity for r in parsed.rows] == ["a@example.com"]
    assert [(p.row, p.field) for p in parsed.problems] == [(2, "row")]
    for media, text in [
        ("text/csv", "name,joined\nann,yes\n"),
        ("application/json", "[]"),
        ("application/json", "{not json"),
        ("application/json", '{"attendance": {}}'),
    ]:
        with pytest.raises(ValidationFailed) as caught:
            parse_attendance(media, text)
        assert set(caught.value.fields) == {"body"}
