"""Nurture end to end on moto: what the dispatcher sends, how it looks, and when it stops."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

from chalicelib.entities import Event, iso, lead_id_for
from chalicelib.tracking import CLICK_PURPOSE, OPEN_PURPOSE, UNSUBSCRIBE_PURPOSE
from testkit import items
from tests.conftest import PUBLIC_URL
from tests.helpers import BROWSER, post_json

NEWSLETTER = {"email": "ann@example.com", "first_name": "Ann", "consent": True}
EBOOK = {"email": "bo@example.com", "first_name": "Bo", "consent": True}


def html_of(message):
    return message.get_body(("html",)).get_content()


def text_of(message):
    return message.get_body(("plain",)).get_content()


def enrolment(table_items, sequence_id):
    [item] = items.enrolments(table_items(), sequence_id)
    return item


def test_welcome_goes_out_on_the_first_tick_as_a_proper_mime_message(client, rt, tick, outbox, table_items):
    post_json(client, "/forms/newsletter", NEWSLETTER)

    report = tick()

    assert report["sent"] == 1
    [message] = outbox()
    assert message["To"] == "ann@example.com"
    assert message["From"] == "Trellis Demo <hello@demo.trellis.example>"
    assert message["Reply-To"] == "team@demo.trellis.example"
    assert message["Subject"] == "Welcome to the Trellis newsletter, Ann"
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert "Hi Ann" in text_of(message)
    assert "<" not in text_of(message)  # the text part is text

    # RFC 2369 / RFC 8058 headers: https and mailto, one-click POST.
    unsubscribe = message["List-Unsubscribe"]
    https_url, mailto = re.findall(r"<([^>]+)>", unsubscribe)
    assert https_url.startswith(f"{PUBLIC_URL}/u/")
    assert mailto.startswith("mailto:unsubscribe@demo.trellis.example?subject=")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    claims = rt.signer.verify(UNSUBSCRIBE_PURPOSE, https_url.rsplit("/", 1)[1], rt.clock.now())
    assert claims["lead"] == lead_id_for("ann@example.com")

    # The step is recorded and the enrolment advanced to the next step, two days on.
    [msg_item] = items.messages(table_items())
    assert msg_item["message_id"] == "welcome.welcome"
    assert msg_item["ses_message_id"]
    state = enrolment(table_items, "welcome")
    assert state["step_index"] == 1
    assert state["due_at"] == iso(rt.clock.now() + timedelta(days=2))
    assert "claim_id" not in state


def test_every_link_is_tracked_and_verifies_and_the_pixel_is_there(client, rt, tick, outbox):
    post_json(client, "/forms/newsletter", NEWSLETTER)
    tick()
    [message] = outbox()
    html = html_of(message)

    links = re.findall(r'href="([^"]+)"', html)
    assert links
    for link in links:
        assert link.startswith(PUBLIC_URL + "/"), link
        path = urlsplit(link).path
        if "/t/c/" in path:
            claims = rt.signer.verify(CLICK_PURPOSE, path.rsplit("/", 1)[1], rt.clock.now())
            assert claims["msg"] == "welcome.welcome"
            assert claims["url"].startswith("https://trellis.example/")
    [pixel] = re.findall(r'<img src="([^"]+/t/o/[^"]+)"', html)
    assert rt.signer.verify(OPEN_PURPOSE, pixel.rsplit("/", 1)[1], rt.clock.now())["msg"] == "welcome.welcome"
    text_links = re.findall(r"https?://[^\s)]+", text_of(message))
    assert text_links and all(u.startswith(PUBLIC_URL + "/") for u in text_links)


def test_hostile_names_render_harmlessly(client, tick, outbox):
    post_json(client, "/forms/newsletter", {**NEWSLETTER, "first_name": "<script>alert(1)</script>"})
    tick()
    [message] = outbox()

    html = html_of(message)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "\n" not in message["Subject"]


def test_magnet_delivery_goes_out_from_the_stream_without_a_tick(client, rt, deliver, outbox, tick):
    post_json(client, "/forms/ebook", EBOOK)

    deliver()  # the enrolment's INSERT reaches the stream handler, as on Lambda

    [message] = outbox()
    assert message["Subject"] == "Your copy of The Lead Nurture Playbook"
    links = re.findall(r'href="([^"]+/t/c/[^"]+)"', html_of(message))
    destinations = [rt.signer.verify(CLICK_PURPOSE, u.rsplit("/", 1)[1], rt.clock.now())["url"] for u in links]
    assert any("magnets/lead-nurture-playbook.pdf" in d and "X-Amz-Signature" in d for d in destinations)
    # The tick that follows finds nothing more to send, and a redelivered batch sends nothing twice.
    assert tick()["sent"] == 0
    deliver()
    assert len(outbox()) == 1


def test_nurture_talks_about_the_asset_the_lead_took(client, clock, deliver, tick, outbox):
    post_json(client, "/forms/ebook", EBOOK)
    deliver()
    clock.advance(timedelta(days=1).total_seconds())
    tick()

    assert [m["Subject"] for m in outbox()] == [
        "Your copy of The Lead Nurture Playbook",
        "The one chapter of The Lead Nurture Playbook to read first",
    ]
    assert "The Lead Nurture Playbook" in html_of(outbox()[1])


def test_scheduled_step_waits_for_the_send_window(client, clock, tick, outbox, table_items):
    # Friday 16:30 Berlin: the welcome (immediate) goes; the next step falls due on Sunday.
    clock.advance(timedelta(days=4, hours=6).total_seconds())  # Fri 2026-11-27 15:30 UTC = 16:30 Berlin
    post_json(client, "/forms/newsletter", NEWSLETTER)
    tick()
    clock.advance(timedelta(days=2).total_seconds())  # Sun 16:30 Berlin: due, outside the window

    report = tick()

    assert report["deferred"] == 1 and report["sent"] == 0
    assert enrolment(table_items, "welcome")["due_at"] == "2026-11-30T08:00:00.000000Z"  # Mon 09:00 Berlin
    clock.advance(timedelta(hours=16, minutes=30).total_seconds())  # Mon 09:00 Berlin
    assert tick()["sent"] == 1
    assert [m["Subject"] for m in outbox()][-1] == "Our three most-read guides"


def test_lead_time_zone_moves_the_window(client, clock, tick, table_items):
    # 2026-11-28 is a Saturday. A lead in New York gets Monday 09:00 New York (14:00 UTC).
    post_json(client, "/forms/newsletter", {**NEWSLETTER, "timezone": "America/New_York"})
    tick()
    clock.advance(timedelta(days=5).total_seconds())  # Sat 09:30 UTC

    tick()

    assert enrolment(table_items, "welcome")["due_at"] == "2026-11-30T14:00:00.000000Z"


def test_sequence_exits_when_the_lead_becomes_sql(client, rt, clock, tick, outbox, table_items, settings):
    import boto3

    post_json(client, "/forms/newsletter", NEWSLETTER)
    tick()
    table = boto3.resource("dynamodb").Table(settings.table_name)
    table.update_item(
        Key=items.lead_key(lead_id_for("ann@example.com")),
        UpdateExpression="SET stage = :sql",
        ExpressionAttributeValues={":sql": "sql"},
    )
    clock.advance(timedelta(days=2).total_seconds())

    report = tick()

    assert report["exited"] == 1 and report["exits"] == {"stage:sql": 1}
    assert len(outbox()) == 1
    state = enrolment(table_items, "welcome")
    assert state["status"] == "exited" and state["exit_reason"] == "stage:sql"
    assert "due_at" not in state and "due_shard" not in state  # out of the due index for good


def test_goal_event_exits_and_skip_if_event_skips(client, rt, clock, tick, outbox, table_items):
    lead_id = lead_id_for("ann@example.com")
    post_json(client, "/forms/newsletter", NEWSLETTER)
    tick()
    clock.advance(timedelta(days=2).total_seconds())
    tick()  # best-of
    rt.store.record_event(Event(lead_id, "e1", "pricing_view", iso(clock.now()), {}))
    clock.advance(timedelta(days=3).total_seconds())

    report = tick()  # pricing-nudge is skip_if pricing_view: skipped, and it was the last step

    assert report["sent"] == 0 and report["skipped"] == 1 and report["completed"] == 1
    assert [m["Subject"] for m in outbox()] == [
        "Welcome to the Trellis newsletter, Ann",
        "Our three most-read guides",
    ]
    assert enrolment(table_items, "welcome")["status"] == "completed"


def test_demo_offer_only_goes_to_leads_who_clicked_the_tip(client, rt, clock, deliver, tick, outbox):
    clicker, other = "c@example.com", "d@example.com"
    for address in (clicker, other):
        post_json(client, "/forms/ebook", {"email": address, "first_name": "X", "consent": True})
    deliver()
    for _ in range(3):  # tip (day 1), case study (day 3), demo offer (day 6 after enrolment)
        clock.advance(timedelta(days=1).total_seconds())
        tick()
        if len([m for m in outbox() if "chapter" in m["Subject"]]) == 2:
            break
    tip_for_clicker = next(m for m in outbox() if m["To"] == clicker and "chapter" in m["Subject"])
    click_url = re.findall(r'href="([^"]+/t/c/[^"]+)"', html_of(tip_for_clicker))[0]
    clock.advance(15 * 60)  # read, then clicked: a person's click (the stream notes it for nurture)
    assert client.http.get(click_url.removeprefix(PUBLIC_URL), headers=BROWSER).status_code == 302
    deliver()
    for _ in range(8):
        clock.advance(timedelta(days=1).total_seconds())
        tick()

    offers = [m["To"] for m in outbox() if m["Subject"] == "Want us to show you in 20 minutes?"]
    assert offers == [clicker]


def test_entry_event_enrols_the_lead(client, rt, monkeypatch, deliver, tick, outbox):
    from chalicelib.models import SequenceEntry

    welcome = rt.campaign.sequences["welcome"]
    monkeypatch.setitem(
        rt.campaign.sequences,
        "welcome",
        welcome.model_copy(update={"entry": SequenceEntry(events=["webinar_registered"])}),
    )
    rt.__dict__.pop("streams", None)  # rebuild the stream processor with the changed campaign
    post_json(client, "/forms/ebook", EBOOK)
    deliver()
    lead_id = lead_id_for("bo@example.com")
    rt.store.record_event(Event(lead_id, "w1", "webinar_registered", iso(rt.clock.now()), {}))

    deliver()  # the event enrols; the new enrolment's INSERT is dispatched on the next batch
    deliver()

    assert "Welcome to the Trellis newsletter, Bo" in [m["Subject"] for m in outbox()]
    deliver()
    tick()
    assert [m["Subject"] for m in outbox()].count("Welcome to the Trellis newsletter, Bo") == 1


def test_entering_sql_ends_the_nurture_at_once(client, deliver, table_items):
    answer = post_json(client, "/forms/ebook", EBOOK)
    deliver()  # the delivery email; the nurture continues tomorrow
    assert enrolment(table_items, "ebook-nurture")["status"] == "active"

    post_json(client, "/events", {"token": answer.json_body["lead_token"], "type": "demo_request"})
    deliver()  # scored: a hand-raiser, so SQL

    state = enrolment(table_items, "ebook-nurture")
    assert (state["status"], state["exit_reason"]) == ("exited", "stage:sql")
    assert "due_at" not in state and "due_shard" not in state
