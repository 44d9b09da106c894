"""The demo webinar on moto: registration through its form, the confirmation with a tracked join
link and a calendar invite (parsed by the ``icalendar`` package), reminders at their times for
an early registrant and none for a late one, a second registration that sends nothing twice,
and a full or finished event that stores nothing."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import icalendar

from chalicelib.entities import lead_id_for, parse_iso
from testkit import items
from tests.conftest import PUBLIC_URL
from tests.helpers import body, post_json, visible_html

FORM = "/forms/webinar"
JOIN_URL = "https://meet.demo.trellis.example/live/demo-webinar"
HREF = re.compile(r'href="([^"]+)"')


def register(client: Any, email: str, **fields: Any) -> Any:
    return post_json(client, FORM, {"email": email, "first_name": "Ann", "consent": True, **fields})


def move_to(clock: Any, moment: datetime) -> None:
    clock.advance((moment - clock.now()).total_seconds())


def mail_to(outbox: Any, email: str) -> list[EmailMessage]:
    return [m for m in outbox() if str(m["To"]) == email]


def invite_of(message: EmailMessage) -> icalendar.Calendar:
    [attachment] = [part for part in message.iter_attachments() if part.get_content_type() == "text/calendar"]
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_param("method") == "REQUEST"
    return icalendar.Calendar.from_ical(attachment.get_payload(decode=True))


def tick_times(now: datetime, start: datetime, duration: timedelta) -> list[datetime]:
    """Six hours apart, and every five minutes in the half hour around each timed step's time."""
    fine = [
        reminder - timedelta(minutes=15) + timedelta(minutes=5 * n)
        for reminder in (start - timedelta(days=1), start - timedelta(hours=1), start + duration + timedelta(days=1))
        for n in range(7)
    ]
    coarse = []
    while now < start + duration + timedelta(days=1, hours=1):
        now += timedelta(hours=6)
        coarse.append(now)
    return sorted(set(fine + coarse))


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def test_an_early_registrant_gets_the_invite_both_reminders_at_their_times_and_nothing_twice(
    client, rt, clock, tick, deliver, outbox, table_items
):
    webinar = rt.campaign.events["demo-webinar"]
    start = parse_iso(webinar.starts_at)
    move_to(clock, start - timedelta(days=3))
    assert register(client, "ann@example.com", utm_source="linkedin").status_code == 200
    deliver()  # the stream sends the immediate confirmation
    tick()

    [confirmation] = mail_to(outbox, "ann@example.com")
    assert str(confirmation["Subject"]) == f"You're registered: {webinar.title}"
    [event] = [c for c in invite_of(confirmation).walk() if c.name == "VEVENT"]
    assert event.decoded("DTSTART") == start
    assert event.decoded("DTEND") == start + webinar.duration
    assert str(event["UID"]) == "demo-webinar.demo@demo.trellis.example"
    assert int(event["SEQUENCE"]) == 0
    # The join link is the registrant's own tracked link, in the email and in the invite.
    hrefs = [html.unescape(h) for h in HREF.findall(visible_html(html_of(confirmation)))]
    tracked = [h for h in hrefs if h.startswith(f"{PUBLIC_URL}/t/c/")]
    joined = client.http.get(tracked[0].removeprefix(PUBLIC_URL))
    assert (joined.status_code, joined.headers["Location"]) == (302, JOIN_URL)
    assert str(event["LOCATION"]).startswith(f"{PUBLIC_URL}/t/c/")
    assert not any("calendar.google.com" in h for h in hrefs)  # the calendars' links are tracked too
    assert JOIN_URL not in html_of(confirmation)  # the join URL only behind the tracked link

    # The same person registers again: the lead is updated, nothing is sent or counted twice.
    assert register(client, "ann@example.com").status_code == 200
    deliver()
    tick()
    assert len(mail_to(outbox, "ann@example.com")) == 1
    lead_id = lead_id_for("ann@example.com")
    stored = table_items()
    assert len(items.events(stored, lead_id, "event_registered")) == 1
    assert rt.store.registration_count("demo-webinar") == 1
    registration = rt.store.get_registration("demo-webinar", lead_id)
    assert registration is not None and registration.source == "linkedin"
    lead = rt.store.get_lead(lead_id)
    assert lead is not None and lead.registered_for == ("demo-webinar",)
    # Scored once: the first submission (5) and the registration (20); the second came without
    # the lead's token, so (as anyone's submission of a known address) it scores nothing.
    assert (lead.score, lead.score_events) == (5 + 20, 3)

    # Fast-forward: ticks six hours apart, five minutes apart around each reminder's time. Each
    # arrives in the five minutes after its time, once; nothing arrives between.
    arrivals: dict[str, datetime] = {}
    for moment in tick_times(clock.now(), start, webinar.duration):
        move_to(clock, moment)
        tick()
        deliver()
        for message in mail_to(outbox, "ann@example.com"):
            arrivals.setdefault(str(message["Subject"]), clock.now())
    assert len(mail_to(outbox, "ann@example.com")) == 4
    day_before = arrivals[f"Tomorrow: {webinar.title}"]
    hour_before = arrivals[f"Starting in an hour: {webinar.title}"]
    follow_up = arrivals[f"Sorry we missed you: the recording of {webinar.title}"]  # no attendance uploaded
    tick_apart = timedelta(minutes=5)
    assert start - timedelta(days=1) <= day_before < start - timedelta(days=1) + tick_apart
    assert start - timedelta(hours=1) <= hour_before < start - timedelta(hours=1) + tick_apart
    after_end = start + webinar.duration + timedelta(days=1)
    assert after_end <= follow_up < after_end + tick_apart


def test_a_registration_half_an_hour_before_gets_only_its_confirmation(client, rt, clock, tick, deliver, outbox):
    webinar = rt.campaign.events["demo-webinar"]
    start = parse_iso(webinar.starts_at)
    move_to(clock, start - timedelta(minutes=30))
    assert register(client, "late@example.com").status_code == 200
    deliver()
    for _ in range(12):  # on past the start: no reminder, and nothing in a burst
        tick()
        deliver()
        clock.advance(300)
    assert clock.now() > start
    [confirmation] = mail_to(outbox, "late@example.com")
    assert str(confirmation["Subject"]).startswith("You're registered")
    assert invite_of(confirmation) is not None


def test_a_full_event_answers_409_and_stores_nothing(client, rt, clock, table_items):
    capacity = rt.campaign.events["demo-webinar"].capacity
    assert capacity is not None
    items.fill_event(rt.settings.table_name, "demo-webinar", capacity)
    before = table_items()
    response = register(client, "full@example.com")
    assert response.status_code == 409
    assert body(response)["message"] == f"event 'demo-webinar' is full: all {capacity} places are taken"
    assert table_items() == before
    assert rt.store.registration_count("demo-webinar") == capacity


def test_registration_closes_when_the_event_ends(client, rt, clock, table_items):
    webinar = rt.campaign.events["demo-webinar"]
    move_to(clock, parse_iso(webinar.starts_at) + webinar.duration)
    before = table_items()
    response = register(client, "after@example.com")
    assert response.status_code == 409
    assert "is over" in body(response)["message"]
    assert table_items() == before


def test_an_erased_registrant_leaves_no_registration_behind(client, rt, deliver, table_items):
    from tests.conftest import ADMIN_TOKEN

    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert register(client, "gone@example.com").status_code == 200
    lead_id = lead_id_for("gone@example.com")
    assert len(items.registrations(table_items(), lead_id)) == 1
    exported = body(client.http.get(f"/admin/leads/{lead_id}/export", headers=auth))
    assert [r["event_id"] for r in exported["registrations"]] == ["demo-webinar"]
    assert client.http.delete(f"/admin/leads/{lead_id}", headers=auth).status_code == 200
    assert rt.store.get_registration("demo-webinar", lead_id) is None
    assert items.registrations(table_items(), lead_id) == []


def upload(client: Any, event_id: str, content: str, media: str = "text/csv") -> Any:
    from tests.conftest import ADMIN_TOKEN

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": media}
    return client.http.post(f"/admin/events/{event_id}/attendance", headers=headers, body=content.encode())


def test_attendance_uploaded_twice_scores_once_and_the_follow_ups_branch_on_it(
    client, rt, clock, tick, deliver, outbox, table_items
):
    webinar = rt.campaign.events["demo-webinar"]
    start = parse_iso(webinar.starts_at)
    move_to(clock, start - timedelta(days=2))
    for email in ("came@example.com", "away@example.com", "silent@example.com"):
        assert register(client, email).status_code == 200
    assert post_json(client, "/forms/newsletter", {"email": "reader@example.com", "consent": True}).status_code == 200
    deliver()
    move_to(clock, start + webinar.duration + timedelta(minutes=30))
    came = lead_id_for("came@example.com")
    deliver()
    score_before = rt.store.get_lead(came).score

    csv_text = (
        "email,attended,minutes\n"
        "Came@Example.com,yes,41\n"
        "away@example.com,no,0\n"
        "stranger@example.com,yes,12\n"
        "reader@example.com,yes,30\n"
        "not-an-address,yes,3\n"
        "came@example.com,maybe,\n"
    )
    first = upload(client, "demo-webinar", csv_text)
    assert first.status_code == 200, first.body
    answer = body(first)
    assert (answer["rows"], answer["attended"], answer["missed"], answer["unchanged"]) == (6, 1, 1, 0)
    assert (answer["unknown"], answer["not_registered"]) == (["stranger@example.com"], ["reader@example.com"])
    assert [(p["row"], p["field"]) for p in answer["invalid"]] == [(5, "email"), (6, "attended")]
    assert rt.store.get_lead(lead_id_for("stranger@example.com")) is None  # reported, never created
    deliver()
    score_after_first = rt.store.get_lead(came).score
    # event_attended's 25 points, less what the registration's 20 decayed since (half-life 14d).
    assert score_before + 20 < score_after_first <= score_before + 25

    # The same export again, as JSON: nothing changes.
    again = upload(
        client,
        "demo-webinar",
        '{"attendance": [{"email": "came@example.com", "attended": true, "minutes": 41},'
        ' {"email": "away@example.com", "attended": false}]}',
        "application/json",
    )
    assert (body(again)["attended"], body(again)["missed"], body(again)["unchanged"]) == (0, 0, 2)
    deliver()
    stored = table_items()
    assert len(items.events(stored, came, "event_attended")) == 1
    assert len(items.events(stored, lead_id_for("away@example.com"), "event_missed")) == 1
    assert rt.store.get_lead(came).score == score_after_first  # scored once
    registration = rt.store.get_registration("demo-webinar", came)
    assert registration is not None and (registration.attended, registration.minutes) == (True, 41)

    # A day after the end: the attendee gets the slides, the others the recording.
    move_to(clock, start + webinar.duration + timedelta(days=1, minutes=1))
    tick()
    deliver()
    follow_ups = {
        str(m["To"]): str(m["Subject"]).split(":")[0]
        for m in outbox()
        if str(m["Subject"]).startswith(("Thanks", "Sorry"))
    }
    assert follow_ups == {
        "came@example.com": "Thanks for joining",
        "away@example.com": "Sorry we missed you",
        "silent@example.com": "Sorry we missed you",
    }


def test_attendance_of_an_unknown_event_or_in_another_format_is_refused(client, table_items):
    before = table_items()
    assert upload(client, "gala", "email,attended\na@example.com,yes\n").status_code == 404
    assert upload(client, "demo-webinar", "email,attended\n", "text/plain").status_code == 415
    refused = upload(client, "demo-webinar", "name,joined\nann,yes\n")
    assert refused.status_code == 400 and "body" in body(refused)["fields"]
    assert table_items() == before
