"""Broadcasts on moto: created through the admin API (bad input stores nothing), their segment
enrolled by the dispatcher, each recipient one copy under dispatchers at once and crashes, the
topic, consent, pause and suppression respected, cancel and test sends, the report per variant."""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.entities import iso, lead_id_for
from chalicelib.nurture.dispatcher import LEASE, TickReport
from testkit import items
from testkit.fanout import BroadcastsOnly
from tests.conftest import ADMIN_TOKEN, PUBLIC_URL, START
from tests.helpers import BROWSER, body, post_form, post_json, visible_html
from tests.integration.test_dispatcher_guarantees import (
    FOREVER,
    LambdaKilled,
    Ses,
    new_dispatcher,
    ticks_at_once,
)

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
ISSUE = {"subject": "The Trellis letter, {{ first_name or 'friend' }}", "template": "email/broadcast.html"}


def signup(client: Any, email: str, form_id: str = "newsletter") -> str:
    response = post_json(client, f"/forms/{form_id}", {"email": email, "first_name": "Sam", "consent": True})
    assert response.status_code in (200, 201), response.body
    lead_id: str = body(response)["lead_id"]
    return lead_id


def create(client: Any, **fields: Any) -> Any:
    payload = {"name": "December issue", "topic": "newsletter", "segment": "newsletter-readers", "variants": [ISSUE]}
    return client.http.post("/admin/broadcasts", headers=AUTH, body=json.dumps({**payload, **fields}))


def report(client: Any, broadcast_id: str) -> dict[str, Any]:
    response = client.http.get(f"/admin/broadcasts/{broadcast_id}", headers=AUTH)
    assert response.status_code == 200, response.body
    found: dict[str, Any] = body(response)
    return found


def enrol_only(rt: Any, remaining: Any = lambda: FOREVER) -> TickReport:
    """A tick that enrols the due broadcasts' recipients and sends nothing."""
    return new_dispatcher(rt, store=BroadcastsOnly(rt.store)).tick(remaining)


def copies(outbox: Any) -> Counter[str]:
    return Counter(str(m["To"]) for m in outbox() if "Trellis letter" in str(m["Subject"]))


@pytest.fixture
def readers(client: Any, deliver: Any) -> list[str]:
    """Five newsletter readers (their welcomes sent), one ebook-only lead, and readers who turned
    the topic off, paused, unsubscribed or bounced."""
    emails = [f"reader{n}@example.com" for n in range(5)]
    for email in emails:
        signup(client, email)
    signup(client, "ebook-only@example.com", "ebook")
    deliver()
    return emails


def test_a_broadcast_goes_once_to_each_reader_who_wants_its_topic(
    client, rt, clock, tick, deliver, outbox, readers, table_items
):
    created = create(client)
    assert created.status_code == 201, created.body
    broadcast = body(created)
    assert (broadcast["status"], broadcast["recipients"]) == ("scheduled", 0)

    first = tick()
    assert first["enrolled"] == 5
    tick()
    deliver()

    assert copies(outbox) == Counter(readers)
    done = report(client, broadcast["broadcast_id"])
    assert (done["status"], done["recipients"], done["sent"]) == ("sent", 5, 5)
    [variant] = done["variants"]
    assert (variant["variant_id"], variant["sent"]) == ("a", 5)
    # Nothing more however often the dispatcher runs, and the drips' report does not list it.
    clock.advance(3600)
    tick()
    assert copies(outbox) == Counter(readers)
    steps = body(client.http.get("/admin/reports/sequences", headers=AUTH))["steps"]
    assert not [s for s in steps if s["sequence_id"].startswith("_b-")]
    assert len(items.messages(table_items())) == 5 + 5 + 1  # welcomes, the ebook delivery, the copies


def test_topic_off_pause_unsubscribe_and_suppression_get_nothing_and_are_counted(
    client, rt, clock, tick, deliver, outbox, readers, table_items
):
    from chalicelib.entities import Suppression

    preferences = rt.links.preferences
    for email, fields in (
        (readers[0], {"topic_product": "on", "action": "save"}),  # newsletter off
        (readers[1], {"topic_newsletter": "on", "pause": "30", "action": "save"}),
    ):
        path = preferences(lead_id_for(email), "welcome.welcome", clock.now()).split("/p/")[1]
        response = post_form(client, f"/p/{path}", fields)
        assert response.status_code == 200
    rt.tracker.unsubscribe_lead(lead_id_for(readers[2]), "welcome.welcome")
    rt.store.suppress(Suppression(lead_id_for(readers[3]), "bounced", iso(clock.now())))
    deliver()

    broadcast = body(create(client, segment={}))  # inline: every lead
    tick()
    tick()
    deliver()

    assert copies(outbox) == Counter({readers[4]: 1})
    done = report(client, broadcast["broadcast_id"])
    assert done["recipients"] == 6  # every lead was in the segment...
    assert done["skipped"] == {  # ...and each who got nothing is counted with why
        "paused": 1,
        "suppressed:bounced": 1,
        "suppressed:unsubscribed": 1,
        "topic_off": 2,  # reader 0, and the ebook-only lead who never took the newsletter
    }
    assert done["status"] == "sent"


@pytest.mark.parametrize("dispatchers", [2, 3])
def test_dispatchers_at_once_send_each_recipient_one_copy(client, rt, deliver, outbox, readers, dispatchers):
    broadcast = body(create(client))
    assert enrol_only(rt).enrolled == 5

    reports = ticks_at_once(rt, dispatchers)
    assert copies(outbox) == Counter(readers)
    assert sum(r.sent for r in reports) == 5
    assert sum(r.lost_claims for r in reports) >= 1  # they did race
    deliver()
    assert report(client, broadcast["broadcast_id"])["sent"] == 5


def test_a_crash_mid_broadcast_then_the_rest_is_sent_once(
    client, rt, clock, tick, deliver, outbox, readers, monkeypatch
):
    broadcast = body(create(client))
    assert enrol_only(rt).enrolled == 5
    ses = Ses(monkeypatch)
    ses.fail = lambda number, to: LambdaKilled() if number == 3 else None
    with pytest.raises(LambdaKilled):
        tick()
    sent_before = copies(outbox)
    assert 0 < sum(sent_before.values()) < 5

    ses.fail = lambda number, to: None
    clock.advance(LEASE.total_seconds() + 1)  # the dead claim's lease ends
    tick()
    assert copies(outbox) == Counter(readers)  # every reader once: the crashed send never went
    deliver()
    assert report(client, broadcast["broadcast_id"])["sent"] == 5


def test_enrolling_a_big_segment_goes_on_from_its_cursor_across_ticks(client, rt, tick, deliver, outbox, readers):
    from chalicelib.nurture import dispatcher as dispatching

    broadcast = body(create(client, segment={}))
    budget = iter([FOREVER])  # the tick runs out of time after its first page

    original = dispatching.RECIPIENT_PAGE
    dispatching.RECIPIENT_PAGE = 2
    try:
        stopped = enrol_only(rt, lambda: next(budget, 0))
        assert stopped.enrolled == 2 and stopped.stopped_early
        rest = new_dispatcher(rt).tick(lambda: FOREVER)
    finally:
        dispatching.RECIPIENT_PAGE = original
    assert rest.enrolled == 4  # six leads, each enrolled once
    new_dispatcher(rt).tick(lambda: FOREVER)
    assert copies(outbox) == Counter(readers)
    assert report(client, broadcast["broadcast_id"])["recipients"] == 6


def test_cancel_stops_what_has_not_been_sent(client, rt, clock, tick, deliver, outbox, readers):
    later = body(create(client, send_at=iso(START + timedelta(hours=2))))
    cancelled = client.http.post(f"/admin/broadcasts/{later['broadcast_id']}/cancel", headers=AUTH)
    assert cancelled.status_code == 200
    assert body(cancelled)["status"] == "cancelled"
    clock.advance(3 * 3600)
    tick()
    assert not copies(outbox)

    started = body(create(client))
    assert enrol_only(rt).enrolled == 5
    assert client.http.post(f"/admin/broadcasts/{started['broadcast_id']}/cancel", headers=AUTH).status_code == 200
    tick()
    deliver()
    assert not copies(outbox)
    assert report(client, started["broadcast_id"])["skipped"] == {"cancelled": 5}
    again = client.http.post(f"/admin/broadcasts/{started['broadcast_id']}/cancel", headers=AUTH)
    assert again.status_code == 200  # cancelling twice changes nothing


def test_a_test_copy_is_marked_and_counted_nowhere(client, outbox, readers, table_items):
    broadcast = body(create(client, variants=[ISSUE, {**ISSUE, "subject": "Faster handoffs"}]))
    before = table_items()
    response = client.http.post(
        f"/admin/broadcasts/{broadcast['broadcast_id']}/test", headers=AUTH, body='{"to": "team@trellis.example"}'
    )
    assert response.status_code == 200, response.body
    sent = [m for m in outbox() if m["To"] == "team@trellis.example"]
    assert sorted(str(m["Subject"]) for m in sent) == ["[TEST] Faster handoffs", "[TEST] The Trellis letter, Ada"]
    assert table_items() == before
    assert body(response)["counted"] is False


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"topic": "sports"}, "topic"),
        ({"segment": "nobody"}, "segment"),
        ({"segment": {"shoe_size": 44}}, "segment.shoe_size"),
        ({"segment": {"fields": {"shoe_size": "44"}}}, "segment.fields.shoe_size"),
        ({"variants": [{"subject": "x", "template": "email/missing.html"}]}, "variants.0.template"),
        ({"variants": [{"subject": "x", "template": "../app.py"}]}, "variants.0.template"),
        ({"variants": [ISSUE] * 5}, "variants"),
        ({"send_at": iso(START - timedelta(hours=1))}, "send_at"),
        ({"send_at": "tomorrow"}, "send_at"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_input_is_named_and_stores_nothing(client, table_items, fields, field):
    before = table_items()
    response = create(client, **fields)
    assert response.status_code == 400, response.body
    assert field in body(response)["fields"]
    assert table_items() == before


def test_the_list_and_unknown_broadcasts(client, readers):
    first = body(create(client))["broadcast_id"]
    listed = body(client.http.get("/admin/broadcasts", headers=AUTH))["broadcasts"]
    assert [b["broadcast_id"] for b in listed] == [first]
    assert client.http.get("/admin/broadcasts/20261123T000000-000000", headers=AUTH).status_code == 404
    assert client.http.post("/admin/broadcasts/nope/cancel", headers=AUTH).status_code == 404
    assert client.http.get("/admin/broadcasts").status_code == 401


def test_an_ab_test_sends_its_winner_to_the_rest(client, rt, clock, tick, deliver, outbox):
    emails = [f"ab{n}@example.com" for n in range(16)]
    for email in emails:
        signup(client, email)
    deliver()
    variants = [ISSUE, {"subject": "Faster handoffs, {{ first_name }}", "template": "email/broadcast.html"}]
    created = create(
        client, variants=variants, test_fraction=0.5, winner_after="4h", segment={"topics": ["newsletter"]}
    )
    assert created.status_code == 201, created.body
    broadcast_id = body(created)["broadcast_id"]

    tick()
    tick()
    deliver()
    testing = report(client, broadcast_id)
    assert testing["status"] == "testing" and testing["recipients"] == 16
    first = [m for m in outbox() if str(m["To"]) in emails and "welcome" not in str(m["X-Trellis-Reference"])]
    by_variant = Counter(str(m["X-Trellis-Reference"]).rpartition(".")[2] for m in first)
    assert set(by_variant) == {"a", "b"} and sum(by_variant.values()) < 16  # the test share only

    # People click variant b's copies a quarter of an hour later; nobody clicks a's.
    clock.advance(15 * 60)
    for message in first:
        if str(message["X-Trellis-Reference"]).endswith(".b"):
            page = visible_html(message.get_body(("html",)).get_content())
            [link, *_] = [html.unescape(u) for u in re.findall(r'href="([^"]+)"', page) if "/t/c/" in u]
            assert client.http.get(link[len(PUBLIC_URL) :], headers=BROWSER).status_code == 302
    deliver()

    clock.advance(4 * 3600)  # the test is over
    tick()
    tick()
    deliver()
    done = report(client, broadcast_id)
    assert (done["winner"], done["status"]) == ("b", "sent")
    assert "a: 0 of" in done["winner_reason"] and "b: " in done["winner_reason"]
    sent = [m for m in outbox() if "welcome" not in str(m["X-Trellis-Reference"])]
    assert Counter(str(m["To"]) for m in sent) == Counter(emails)  # each reader one copy
    rest = [m for m in sent if m not in first]
    assert rest and all(str(m["X-Trellis-Reference"]).endswith(".b") for m in rest)
    assert {v["variant_id"]: v["sent"] for v in done["variants"]} == {"a": by_variant["a"], "b": 16 - by_variant["a"]}


def test_local_time_gives_each_recipient_the_hour_in_their_own_zone(client, rt, clock, deliver, table_items):
    for email, zone in (("tokyo@example.com", "Asia/Tokyo"), ("nyc@example.com", "America/New_York")):
        data = {"email": email, "first_name": "Sam", "consent": True, "timezone": zone}
        assert post_json(client, "/forms/newsletter", data).status_code == 200
    deliver()  # the welcomes go from the stream: the broadcast is the tick's only due work
    broadcast_id = body(create(client, local_time="10:00"))["broadcast_id"]

    assert enrol_only(rt).enrolled == 2
    due = {e["lead_id"]: e["due_at"] for e in items.enrolments(table_items(), f"_b-{broadcast_id}")}
    # START is Monday 09:30 UTC: 18:30 in Tokyo (10:00 there is Tuesday's), 04:30 in New York.
    assert due == {
        lead_id_for("tokyo@example.com"): iso(START.replace(hour=1, minute=0) + timedelta(days=1)),
        lead_id_for("nyc@example.com"): iso(START.replace(hour=15, minute=0)),
    }


def test_a_broadcast_footer_unsubscribes_from_its_topic_alone(client, rt, tick, deliver, outbox, table_items):
    signup(client, "ann@example.com", "ebook")
    signup(client, "ann@example.com")  # Ann takes product and newsletter
    deliver()
    [welcome] = [m for m in outbox() if "Welcome" in str(m["Subject"])]
    assert "Unsubscribe from" not in welcome.get_body(("html",)).get_content()  # drips: the two links only

    create(client)
    tick()
    tick()
    deliver()
    [copy] = [m for m in outbox() if "Trellis letter" in str(m["Subject"])]
    page = visible_html(copy.get_body(("html",)).get_content())
    [link] = [html.unescape(u) for u in re.findall(r'href="([^"]+)"', page) if "/p/t/" in u]
    assert "Unsubscribe from The Trellis newsletter" in page
    path = link[len(PUBLIC_URL) :]

    before = table_items()
    shown = client.http.get(path)
    assert shown.status_code == 200 and '<form method="post">' in shown.body.decode()
    assert table_items() == before  # a scanner's GET changes nothing
    for _ in range(2):  # twice: the same
        done = post_form(client, path, {})
        assert done.status_code == 200
    [lead] = items.profiles(table_items(), lead_id_for("ann@example.com"))
    assert (lead["topics"], lead["topics_off"]) == ({"product"}, {"newsletter"})
    assert len(items.events(table_items(), lead["lead_id"], "preferences_changed")) == 1

    second = body(create(client, segment={}))
    tick()
    tick()
    deliver()
    assert report(client, second["broadcast_id"])["skipped"] == {"topic_off": 1}
    tampered = path[:-1] + ("A" if path[-1] != "A" else "B")
    assert post_form(client, tampered, {}).status_code == 400


def test_ses_throttling_halfway_loses_no_recipient_and_sends_none_twice(
    client, rt, clock, tick, deliver, outbox, readers, monkeypatch
):
    from tests.integration.test_dispatcher_guarantees import ses_error

    broadcast = body(create(client))
    assert enrol_only(rt).enrolled == 5
    ses = Ses(monkeypatch)
    ses.fail = lambda number, to: ses_error("Throttling") if number == 2 else None
    throttled = tick()
    assert throttled["throttled"] == 1 and throttled["stopped_early"]

    ses.fail = lambda number, to: None
    for _ in range(3):  # the backoff (30 s) passes; the rest and the throttled one go
        clock.advance(60)
        tick()
    deliver()
    assert copies(outbox) == Counter(readers)
    assert report(client, broadcast["broadcast_id"])["sent"] == 5


def test_by_default_a_broadcast_neither_waits_for_nor_fills_the_frequency_cap(
    client, tick, deliver, outbox, readers, table_items
):
    before = {p["lead_id"]: p for p in items.profiles(table_items())}
    create(client)
    tick()
    tick()
    deliver()
    assert copies(outbox) == Counter(readers)  # the welcome just sent held nobody back (cap: 1 per 20 h)
    after = {p["lead_id"]: p for p in items.profiles(table_items())}
    # The drips after it see no extra send in the cap: the profiles were not written at all.
    assert after == before


def test_a_page_enrolled_again_after_a_crash_adds_only_who_is_missing(client, rt, clock, readers, table_items):
    from chalicelib.nurture.broadcasts import recipient_enrolment

    created = body(create(client))
    broadcast = rt.store.get_broadcast(created["broadcast_id"])
    leads = [rt.store.load_for_dispatch(lead_id_for(email))[0] for email in readers]
    page = [recipient_enrolment(rt.campaign, broadcast, lead, clock.now()) for lead in leads]

    assert rt.store.enrol_recipients(page[:2]) == 2  # one transaction
    assert rt.store.enrol_recipients(page) == 3  # two there already: each on its own, once
    assert rt.store.enrol_recipients(page) == 0
    enrolments = [i for i in table_items() if i["sk"] == f"ENROL#_b-{created['broadcast_id']}"]
    assert len(enrolments) == 5
