"""Attacks on someone else's lead by someone who knows only the address (issue 14, items 1, 2, 6, 8).

Each test is one attack from the issue, run through the API with the stream and the dispatcher as
Lambda runs them: a stranger's token moves no score, stage, nurture or handoff; a stranger cannot
rewrite a known lead's profile or redirect its mail; every answer is the same for a new lead, a
known one and a bot; input that is not what a field means is a 400 that stores nothing.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chalicelib.entities import lead_id_for
from chalicelib.tracking import CLAIMED, CREATOR, MAILBOX, VOID
from testkit import items as table_of
from tests.helpers import BROWSER, RENDERED_LONG_AGO, SalesInbox, body, post_form, post_json

VICTIM = {
    "email": "victim@corp.example",
    "first_name": "Vera",
    "company": "Corp",
    "job_title": "Analyst",
    "phone": "+49 30 1234567",
    "consent": True,
    "timezone": "Europe/Berlin",
}
VICTIM_ID = lead_id_for("victim@corp.example")


@pytest.fixture
def sales(stack_outputs: dict[str, str]) -> SalesInbox:
    return SalesInbox(stack_outputs["SalesTopicArn"])


@pytest.fixture
def victim(client: Any, deliver: Any, outbox: Any) -> dict[str, Any]:
    """A real lead: signed up for the ebook, got the delivery email, is in nurture."""
    answer = post_json(client, "/forms/ebook", VICTIM)
    assert answer.status_code == 200
    deliver()
    assert [m["To"] for m in outbox()] == ["victim@corp.example"]
    return body(answer)


def profile(table_items: Any, lead_id: str = VICTIM_ID) -> dict[str, Any]:
    [item] = table_of.profiles(table_items(), lead_id)
    return item


def enrolment(table_items: Any, sequence: str = "ebook-nurture") -> dict[str, Any]:
    [item] = table_of.enrolments(table_items(), sequence, VICTIM_ID)
    return item


def handoffs(table_items: Any) -> list[dict[str, Any]]:
    return table_of.handoffs(table_items())


def events(table_items: Any, lead_id: str = VICTIM_ID) -> list[dict[str, Any]]:
    return table_of.events(table_items(), lead_id)


def trust_of(rt: Any, clock: Any, token: str) -> str:
    return str(rt.signer.lead_from_token(token, clock.now()).trust)


# -- 1. a token for an address proves nothing ---------------------------------------------------


def test_a_bot_path_token_cannot_push_a_known_lead_to_sql(client, rt, clock, victim, deliver, tick, table_items, sales):
    bot = post_json(
        client, "/forms/ebook", {"email": "victim@corp.example", "first_name": "V", "consent": True, "website": "x"}
    )
    assert bot.status_code == 200 and set(body(bot)) == set(victim)
    token = body(bot)["lead_token"]
    assert trust_of(rt, clock, token) == VOID
    before = profile(table_items)

    raised = post_json(client, "/events", {"token": token, "type": "demo_request"})
    for _ in range(4):
        post_json(client, "/events", {"token": token, "type": "webinar_registered"})
    deliver()
    tick()
    deliver()

    assert raised.status_code == 202
    after = profile(table_items)
    assert (after["stage"], after["score"], after.get("owner")) == (before["stage"], before["score"], None)
    assert handoffs(table_items) == [] and sales.messages() == []
    assert enrolment(table_items)["status"] == "active"  # demo_request exits nurture: it did not
    assert {e["type"] for e in events(table_items)} == {"form_submitted"}


def test_a_plain_resubmission_token_reports_a_page_view_at_most(
    client, rt, clock, victim, deliver, tick, table_items, sales
):
    again = post_json(client, "/forms/ebook", {"email": "VICTIM@corp.example", "first_name": "X", "consent": True})
    token = body(again)["lead_token"]
    assert again.status_code == 200 and set(body(again)) == set(victim)
    assert trust_of(rt, clock, token) == CLAIMED
    deliver()
    before = profile(table_items)

    for kind in ("demo_request", "webinar_registered", "webinar_registered", "pricing_view"):
        assert post_json(client, "/events", {"token": token, "type": kind}).status_code == 202
    viewed = post_json(
        client, "/events", {"token": token, "type": "page_view", "url": "https://trellis.example/pricing"}
    )
    deliver()
    tick()
    deliver()

    assert viewed.status_code == 202
    after = profile(table_items)
    assert (after["stage"], after["score"], after["score_events"]) == (
        before["stage"],
        before["score"],
        before["score_events"],
    )
    assert handoffs(table_items) == [] and sales.messages() == []
    assert enrolment(table_items)["status"] == "active"
    kept = [e for e in events(table_items) if e["type"] != "form_submitted"]
    assert [(e["type"], e["data"]["trust"]) for e in kept] == [("page_view", CLAIMED)]  # the timeline only
    assert "page_view" not in after.get("event_types", set())  # nurture conditions never see it


def test_the_browser_that_created_a_lead_may_raise_its_hand(client, rt, clock, deliver, table_items, sales):
    created = post_json(client, "/forms/ebook", VICTIM)
    token = body(created)["lead_token"]
    assert trust_of(rt, clock, token) == CREATOR
    deliver()

    assert post_json(client, "/events", {"token": token, "type": "demo_request"}).status_code == 202
    deliver()

    assert profile(table_items)["stage"] == "sql"
    assert len(handoffs(table_items)) == 1


def test_a_token_from_the_leads_own_email_counts(client, rt, clock, victim, deliver, table_items):
    # What a click on a link in the victim's email to the campaign's own site hands the page.
    url = rt.links.click(VICTIM_ID, "ebook-nurture.ebook-delivery", "http://127.0.0.1:8001/pricing.html", clock.now())
    clock.advance(15 * 60)  # a person reads first (a machine's click gets no token)
    location = client.http.get(url.removeprefix(rt.links.public_url), headers=BROWSER).headers["Location"]
    token = location.split("trellis_lead=")[1]
    assert trust_of(rt, clock, token) == MAILBOX

    post_json(client, "/events", {"token": token, "type": "demo_request"})
    deliver()

    assert profile(table_items)["stage"] == "sql"


def test_events_answer_alike_whether_or_not_the_lead_exists(client, rt, clock):
    for address in ("victim@corp.example", "nobody@corp.example"):
        bot = post_json(client, "/forms/newsletter", {"email": address, "consent": True, "website": "0"})
        for trust in (CREATOR, CLAIMED, VOID):
            token = rt.signer.lead_token(lead_id_for(address), clock.now(), trust) if trust != VOID else None
            answer = post_json(client, "/events", {"token": token or body(bot)["lead_token"], "type": "page_view"})
            assert (answer.status_code, body(answer)) == (202, {"accepted": True}), (address, trust)


def test_events_are_rate_limited_per_lead_and_per_address(client, rt, clock, table_items):
    tokens = [
        body(post_json(client, "/forms/newsletter", {"email": f"r{i}@corp.example", "consent": True}))["lead_token"]
        for i in range(5)
    ]
    limits = rt.campaign.rate_limits

    answers = [post_json(client, "/events", {"token": tokens[0], "type": "page_view"}) for _ in range(31)]
    assert [a.status_code for a in answers].count(202) == limits.events_per_lead_per_minute == 30
    refused = answers[-1]
    assert refused.status_code == 429
    assert body(refused)["error"] == "rate_limited" and 0 < int(refused.headers["Retry-After"]) <= 60
    stored = len(events(table_items, lead_id_for("r0@corp.example")))

    # One source address (every test request comes from 127.0.0.1): 120 a minute across leads.
    spread = [post_json(client, "/events", {"token": t, "type": "page_view"}) for t in tokens[1:] for _ in range(25)]
    # The refused 31st counted against the address too: it was a request from there.
    assert [a.status_code for a in spread].count(202) == limits.events_per_address_per_minute - 31
    assert spread[-1].status_code == 429
    assert len(events(table_items, lead_id_for("r0@corp.example"))) == stored  # a refusal stores nothing

    clock.advance(60)  # the next window
    assert post_json(client, "/events", {"token": tokens[0], "type": "page_view"}).status_code == 202


# -- 2. email is one address, as text -------------------------------------------------------------


HOSTILE_EMAILS = [
    {"address": "attacker@evil.example", "identity": "victim@corp.example"},
    ["victim@corp.example"],
    "attacker@evil.example, victim@corp.example",
    "victim@corp.example\r\nBcc: attacker@evil.example",
    "victim@corp.example\x00",
    "",
    42,
    True,
    "not-an-address",
    "änne@corp.example",  # SES cannot send to a non-ASCII local part (no SMTPUTF8)
    "a" * 65 + "@corp.example",  # RFC 5321: 64 octets at most before the @
    "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 60 + ".example",
]


def test_email_must_be_one_plain_address(client, table_items):
    # One moto world for every case: each is a separate request that must store nothing.
    for email in HOSTILE_EMAILS:
        answer = post_json(client, "/forms/newsletter", {"email": email, "consent": True})

        assert answer.status_code == 400, email
        assert body(answer)["error"] == "validation_error"
        assert "email" in body(answer)["fields"], email
    assert table_items() == []


def test_an_international_domain_is_accepted_and_mailed_in_punycode(client, deliver, outbox, table_items):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    answer = post_json(client, "/forms/newsletter", {"email": "anne@bücher.example", "consent": True})
    deliver()

    assert answer.status_code == 200
    assert profile(table_items, body(answer)["lead_id"])["email"] == "anne@bücher.example"
    [sent] = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert set(sent.destinations) == {"anne@xn--bcher-kva.example"}  # envelope and To, as SES takes them
    assert outbox()[0]["To"] == "anne@xn--bcher-kva.example"


def test_the_object_form_cannot_redirect_a_known_leads_mail(client, victim, table_items):
    attack = {"email": {"address": "attacker@evil.example", "identity": "victim@corp.example"}, "consent": True}
    assert post_json(client, "/forms/ebook", attack).status_code == 400
    assert profile(table_items)["email"] == "victim@corp.example"


# -- strict fields ------------------------------------------------------------------------------


HOSTILE_FIELDS = [
    ("first_name", "Ann\x00"),
    ("first_name", "Ann\r\nBcc: x@evil.example"),
    ("company", "Acme\u2028Inc"),
    ("job_title", "CTO\x1b[31m"),
    ("country", "D\x00"),
    ("utm_source", "news\nletter"),
    ("timezone", "localtime"),
    ("timezone", "Factory"),
    ("timezone", "../../etc/passwd"),
    ("timezone", "Europe/Nowhere"),
]


def test_control_characters_and_unknown_time_zones_are_refused(client, table_items):
    for field, value in HOSTILE_FIELDS:
        answer = post_json(client, "/forms/ebook", {**VICTIM, field: value})

        assert answer.status_code == 400, (field, value)
        assert field in body(answer)["fields"], (field, value)
    assert table_items() == []


# -- the bot checks ------------------------------------------------------------------------------


BOT_SIGNALS = [
    {"website": "0"},
    {"website": 0},
    {"website": False},
    {"website": "false"},
    {"rendered_at": "9" * 4000},
    {"rendered_at": int("9" * 4000)},
    {"rendered_at": "Infinity"},
    {"rendered_at": "1e999"},
    {"rendered_at": "NaN"},
    {"rendered_at": "soon"},
    {"rendered_at": "-5"},
    {"rendered_at": True},
    {"rendered_at": str(4102444800000)},  # 2100: in the future
    {"rendered_at": None},  # a JSON post always comes from a script, which sets it
]


def test_doubtful_bot_signals_are_a_bot(client, rt, table_items):
    for fields in BOT_SIGNALS:
        answer = post_json(client, "/forms/newsletter", {"email": "b@corp.example", "consent": True, **fields})

        assert answer.status_code == 200, fields  # answered as a success, so the bot learns nothing
        assert trust_of(rt, rt.clock, body(answer)["lead_token"]) == VOID, fields
        assert [i["sk"] for i in table_items()] == ["BOTS"], fields
    [counter] = table_items()
    assert counter["blocked"] == len(BOT_SIGNALS)


def test_a_plain_html_post_needs_no_timestamp(client, table_items):
    answer = post_form(client, "/forms/newsletter", {"email": "h@corp.example", "consent": "on"})
    assert answer.status_code == 303
    assert len(table_of.profiles(table_items())) == 1


# -- 6. known leads are not rewritten by strangers ------------------------------------------------


def test_a_stranger_cannot_rewrite_a_known_leads_profile(client, clock, victim, table_items):
    before = profile(table_items)
    clock.advance(60)
    attack = {
        "email": "Victim@Corp.example",
        "first_name": "Mallory",
        "last_name": "Evil",
        "company": "Evil Inc",
        "job_title": "CEO",  # +15 fit points if it were taken
        "phone": "+1 555 0100",
        "timezone": "Pacific/Kiritimati",
        "consent": True,
    }

    answer = post_json(client, "/forms/ebook", attack)

    assert answer.status_code == 200
    after = profile(table_items)
    for name in ("email", "first_name", "company", "job_title", "phone", "timezone", "consent"):
        assert after[name] == before[name], name
    assert after["last_name"] == "Evil"  # missing before: filled in
    latest = max(events(table_items), key=lambda e: e["at"])
    assert latest["data"]["proposed_changes"] == {
        "first_name": "Mallory",
        "company": "Evil Inc",
        "job_title": "CEO",
        "phone": "+1 555 0100",
        "timezone": "Pacific/Kiritimati",
    }
    assert latest["data"]["trust"] == CLAIMED


def test_the_mailbox_owner_may_change_their_profile(client, rt, clock, victim, table_items):
    proof = rt.signer.lead_token(VICTIM_ID, clock.now(), MAILBOX)

    answer = post_json(client, "/forms/ebook", {**VICTIM, "company": "NewCorp", "lead_token": proof})

    assert answer.status_code == 200
    assert trust_of(rt, clock, body(answer)["lead_token"]) == MAILBOX
    assert profile(table_items)["company"] == "NewCorp"


def test_another_leads_mailbox_token_proves_nothing(client, rt, clock, victim, table_items):
    proof = rt.signer.lead_token(lead_id_for("attacker@evil.example"), clock.now(), MAILBOX)
    post_json(client, "/forms/ebook", {**VICTIM, "company": "Evil Inc", "lead_token": proof})
    assert profile(table_items)["company"] == "Corp"


def test_new_known_and_bot_submissions_answer_alike(client):
    answers = [
        post_json(client, "/forms/newsletter", {"email": "new@corp.example", "consent": True}),
        post_json(client, "/forms/newsletter", {"email": "new@corp.example", "consent": True}),
        post_json(client, "/forms/newsletter", {"email": "bot@corp.example", "consent": True, "website": "x"}),
    ]
    assert {a.status_code for a in answers} == {200}
    assert {tuple(sorted(body(a))) for a in answers} == {("lead_id", "lead_token")}
    assert len({len(body(a)["lead_token"]) for a in answers}) == 1


# -- 5. two captures of one address at once ------------------------------------------------------


def test_two_captures_of_one_address_at_once_send_the_delivery_once(rt, deliver, tick, outbox):
    from chalicelib.capture import RequestMeta

    fields = {**VICTIM, "rendered_at": RENDERED_LONG_AGO}
    meta = RequestMeta(user_agent="test", source_ip="192.0.2.1", scripted=True)
    start = threading.Barrier(4)

    def submit() -> None:
        start.wait()
        rt.capture.submit("ebook", fields, meta)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deliver()
    tick()
    deliver()

    assert [m["Subject"] for m in outbox()] == ["Your copy of The Lead Nurture Playbook"]
