"""POST /forms/{form_id}: capture, dedupe, attribution, consent, bots, CORS, errors, write count."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.entities import lead_id_for
from chalicelib.store import Store
from chalicelib.tracking import CREATOR, MAILBOX, LeadClaim
from testkit import items as table
from tests.conftest import START
from tests.helpers import RequestCounter, body, post_form, post_json

NEWSLETTER = {"email": "Ann.Lee@Example.com", "first_name": "Ann", "consent": True}
EBOOK = {"email": "ann.lee@example.com", "first_name": "Ann", "consent": "on", "company": "Acme"}


def lead_items(items):
    return table.profiles(items)


def events_of(items):
    return table.events(items)


# -- accepted submissions ---------------------------------------------------------------------


def test_new_lead_answers_200_with_signed_lead_token(client, rt, table_items):
    response = post_json(client, "/forms/newsletter", NEWSLETTER)

    assert response.status_code == 200
    answer = body(response)
    assert answer["lead_id"] == lead_id_for("ann.lee@example.com")
    assert rt.signer.lead_from_token(answer["lead_token"], rt.clock.now()) == LeadClaim(answer["lead_id"], CREATOR)
    assert "download_url" not in answer
    [lead] = lead_items(table_items())
    assert lead["email"] == "Ann.Lee@example.com"  # kept as given (domain lower-cased) for sending
    assert lead["email_identity"] == "ann.lee@example.com"
    assert lead["first_name"] == "Ann"
    assert lead["stage"] == "subscriber"
    assert lead["score"] == 0


def test_resubmit_in_other_case_updates_same_lead_and_keeps_first_touch(client, clock, table_items):
    first = post_json(client, "/forms/newsletter", {**NEWSLETTER, "utm_source": "linkedin", "utm_medium": "paid"})
    clock.advance(3600)
    second = post_json(
        client,
        "/forms/newsletter",
        {"email": "  ANN.LEE@EXAMPLE.COM ", "first_name": "Annie", "consent": True, "utm_source": "newsletter"},
    )

    assert first.status_code == 200
    assert second.status_code == 200
    assert body(first)["lead_id"] == body(second)["lead_id"]
    items = table_items()
    [lead] = lead_items(items)
    # No proof the second is Ann: her name stays, the change is only proposed on the timeline.
    assert lead["first_name"] == "Ann"
    assert [e["data"].get("proposed_changes") for e in sorted(events_of(items), key=lambda e: e["at"])] == [
        None,
        {"first_name": "Annie"},
    ]
    assert lead["first_touch"]["utm_source"] == "linkedin"
    assert lead["first_touch"]["utm_medium"] == "paid"
    assert lead["last_touch"]["utm_source"] == "newsletter"
    assert "utm_medium" not in lead["last_touch"]
    assert lead["first_touch"]["at"] < lead["last_touch"]["at"]
    assert lead["created_at"] == lead["first_touch"]["at"]
    assert lead["submissions"] == 2
    assert len(events_of(items)) == 2
    assert len(table.enrolments(items)) == 1  # enrolled once


def test_plus_tag_makes_a_different_lead(client, table_items):
    a = post_json(client, "/forms/newsletter", {**NEWSLETTER, "email": "ann@example.com"})
    b = post_json(client, "/forms/newsletter", {**NEWSLETTER, "email": "ann+news@example.com"})

    assert a.status_code == b.status_code == 200
    assert body(a)["lead_id"] != body(b)["lead_id"]
    assert len(lead_items(table_items())) == 2


def test_submission_event_has_attribution_user_agent_and_ip_hash_not_ip(client, table_items):
    post_json(
        client,
        "/forms/newsletter",
        {
            **NEWSLETTER,
            "utm_source": "google",
            "utm_medium": "cpc",
            "utm_campaign": "spring",
            "utm_term": "lead nurture",
            "utm_content": "ad-3",
            "referrer": "https://www.google.com/",
            "page_url": "https://example.com/landing?x=1",
        },
        headers={"User-Agent": "Mozilla/5.0 test"},
    )

    items = table_items()
    [event] = events_of(items)
    data = event["data"]
    assert event["type"] == "form_submitted"
    assert data["form_id"] == "newsletter"
    assert (data["utm_source"], data["utm_medium"], data["utm_campaign"]) == ("google", "cpc", "spring")
    assert (data["utm_term"], data["utm_content"]) == ("lead nurture", "ad-3")
    assert data["referrer"] == "https://www.google.com/"
    assert data["page_url"] == "https://example.com/landing?x=1"
    assert data["user_agent"] == "Mozilla/5.0 test"
    assert len(data["ip_hash"]) == 32
    # chalice.test.Client reports the source IP as 127.0.0.1; it must not be stored anywhere.
    assert "127.0.0.1" not in repr(items)


def test_urlencoded_post_redirects_303_to_thank_you_url(client, table_items):
    response = post_form(client, "/forms/newsletter", {"email": "bo@example.com", "consent": "on", "submit": "Go"})

    assert response.status_code == 303
    assert response.headers["Location"] == "http://127.0.0.1:8001/thanks.html"
    [lead] = lead_items(table_items())
    assert lead["email"] == "bo@example.com"


def test_undeclared_fields_are_ignored_not_stored(client, table_items):
    response = post_json(
        client,
        "/forms/newsletter",
        {**NEWSLETTER, "phone": "+49 30 1234567", "favourite_colour": "red", "submit": "Subscribe"},
    )

    assert response.status_code == 200
    stored = repr(table_items())
    assert "favourite_colour" not in stored and "red" not in stored
    assert "1234567" not in stored  # phone is a standard field, but this form does not declare it


def test_custom_fields_are_stored(client, table_items):
    response = post_json(client, "/forms/ebook", {**EBOOK, "company_size": "11-50", "country": "DE"})

    assert response.status_code == 200
    [lead] = lead_items(table_items())
    assert lead["cf_company_size"] == "11-50"
    assert lead["cf_country"] == "DE"
    assert lead["company"] == "Acme"


def test_enrols_in_the_forms_sequence_with_first_step_due(client, clock, table_items):
    post_json(client, "/forms/newsletter", NEWSLETTER)

    [enrolment] = table.enrolments(table_items())
    assert enrolment["sequence_id"] == "welcome"
    assert enrolment["status"] == "active"
    assert enrolment["step_index"] == 0
    assert enrolment["due_at"] == "2026-11-23T09:30:00.000000Z"  # first step: no delay
    assert enrolment["due_shard"].startswith("DUE#")


def test_signup_then_magnet_promotes_subscriber_to_lead_and_never_demotes(client, rt, clock, table_items):
    lead_id = body(post_json(client, "/forms/newsletter", NEWSLETTER))["lead_id"]
    # Back through a link in one of her emails: the page's token proves the mailbox is hers.
    proof = rt.signer.lead_token(lead_id, clock.now(), MAILBOX)
    post_json(client, "/forms/ebook", {**EBOOK, "lead_token": proof})
    post_json(client, "/forms/newsletter", NEWSLETTER)

    [lead] = lead_items(table_items())
    assert lead["stage"] == "lead"
    assert lead["sequences"] == {"welcome", "ebook-nurture"}
    assert lead["first_touch"]["form_id"] == "newsletter"


# -- lead magnets -----------------------------------------------------------------------------


def test_magnet_returns_presigned_download_url_and_records_magnet(client, rt, table_items):
    response = post_json(client, "/forms/ebook", EBOOK)

    assert response.status_code == 200
    url = urlsplit(body(response)["download_url"])
    query = parse_qs(url.query)
    assert url.path.endswith("/magnets/lead-nurture-playbook.pdf")
    assert rt.settings.assets_bucket in url.path
    assert query["X-Amz-Expires"] == [str(7 * 24 * 3600)]  # the campaign's link_lifetime: 7d
    assert "X-Amz-Signature" in query
    [lead] = lead_items(table_items())
    assert lead["magnets"] == {"ebook"}
    assert lead["stage"] == "lead"
    assert lead["first_touch"]["magnet"] == "ebook"


def test_presigned_url_fetches_the_asset(client, rt):
    s3 = aws.s3()
    s3.put_object(Bucket=rt.settings.assets_bucket, Key="magnets/lead-nurture-playbook.pdf", Body=b"%PDF-1.4 demo")
    url = body(post_json(client, "/forms/ebook", EBOOK))["download_url"]

    import requests  # moto intercepts requests' HTTP for its mocked services

    fetched = requests.get(url, timeout=5)
    assert fetched.status_code == 200
    assert fetched.content == b"%PDF-1.4 demo"


def test_magnet_html_post_redirects_with_download_link(client):
    response = post_form(client, "/forms/ebook", {"email": "c@example.com", "first_name": "C", "consent": "on"})

    assert response.status_code == 303
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "http://127.0.0.1:8001/ebook-thanks.html"
    assert "lead-nurture-playbook.pdf" in parse_qs(location.query)["download_url"][0]


# -- consent ----------------------------------------------------------------------------------


def test_consent_is_stored_with_version_time_and_form(client, table_items):
    post_json(client, "/forms/newsletter", NEWSLETTER)

    [lead] = lead_items(table_items())
    assert lead["consent"] == {
        "status": "granted",
        "version": "2026-11",
        "text": "Send me the Trellis newsletter. I can unsubscribe at any time.",
        "form_id": "newsletter",
        "at": "2026-11-23T09:30:00.000000Z",
    }


@pytest.mark.parametrize("consent", [None, False, "", "off", "no"])
def test_form_requiring_consent_rejects_without_it(client, table_items, consent):
    data = {k: v for k, v in NEWSLETTER.items() if k != "consent"}
    if consent is not None:
        data["consent"] = consent

    response = post_json(client, "/forms/newsletter", data)

    assert response.status_code == 400
    assert body(response)["error"] == "validation_error"
    assert set(body(response)["fields"]) == {"consent"}
    assert table_items() == []


def test_double_opt_in_form_keeps_consent_pending_and_does_not_schedule(client, rt, monkeypatch, table_items):
    form = rt.campaign.forms["newsletter"].model_copy(update={"double_opt_in": True})
    monkeypatch.setitem(rt.campaign.forms, "newsletter", form)

    post_json(client, "/forms/newsletter", NEWSLETTER)

    items = table_items()
    [lead] = lead_items(items)
    enrolments = {i["sequence_id"]: i for i in table.enrolments(items)}
    assert lead["consent"]["status"] == "pending_confirmation"
    assert enrolments["welcome"]["status"] == "awaiting_confirmation"
    assert "due_at" not in enrolments["welcome"] and "due_shard" not in enrolments["welcome"]  # not due
    # The confirmation email is due at once, through the dispatcher like every email.
    assert enrolments["_confirm"]["status"] == "active"
    assert enrolments["_confirm"]["due_at"] == "2026-11-23T09:30:00.000000Z"
    # Unconfirmed leads disappear by TTL (the campaign's confirmation.expires_after: 7 days).
    expiry = int(START.timestamp()) + 7 * 24 * 3600
    assert {i.get("expires_at") for i in items} == {expiry}


# -- bots -------------------------------------------------------------------------------------


def _leads_and_events(items):
    return [i for i in items if table.is_leads(i)]


def test_honeypot_gets_same_answer_and_stores_nothing_but_a_count(client, rt, table_items):
    response = post_json(client, "/forms/newsletter", {**NEWSLETTER, "website": "http://spam.example"})

    assert response.status_code == 200
    assert set(body(response)) == {"lead_id", "lead_token"}
    assert _leads_and_events(table_items()) == []
    assert rt.store.bot_counts() == {"blocked": 1, "newsletter:honeypot": 1}


def test_honeypot_html_post_gets_the_same_redirect(client, table_items):
    response = post_form(client, "/forms/newsletter", {"email": "x@example.com", "consent": "on", "website": "x"})

    assert response.status_code == 303
    assert response.headers["Location"] == "http://127.0.0.1:8001/thanks.html"
    assert _leads_and_events(table_items()) == []


def test_fill_time_below_minimum_is_a_bot(client, rt, clock, table_items):
    rendered_ms = int((clock.now() - timedelta(seconds=1)).timestamp() * 1000)

    response = post_json(client, "/forms/newsletter", {**NEWSLETTER, "rendered_at": rendered_ms})

    assert response.status_code == 200
    assert _leads_and_events(table_items()) == []
    assert rt.store.bot_counts()["newsletter:too_fast"] == 1


def test_human_fill_time_is_accepted(client, clock, table_items):
    rendered_ms = int((clock.now() - timedelta(seconds=20)).timestamp() * 1000)

    response = post_json(client, "/forms/newsletter", {**NEWSLETTER, "rendered_at": str(rendered_ms)})

    assert response.status_code == 200
    assert len(lead_items(table_items())) == 1


# -- CORS -------------------------------------------------------------------------------------


def test_preflight_grants_allowed_origin_only(client):
    allowed = client.http.request(
        "OPTIONS",
        "/forms/newsletter",
        headers={"Origin": "http://127.0.0.1:8001", "Access-Control-Request-Method": "POST"},
    )
    other = client.http.request(
        "OPTIONS",
        "/forms/newsletter",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )

    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8001"
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in allowed.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Methods" not in other.headers


def test_post_from_allowed_origin_carries_cors_grant_even_on_error(client):
    ok = post_json(client, "/forms/newsletter", NEWSLETTER, headers={"Origin": "http://localhost:8001"})
    bad = post_json(client, "/forms/newsletter", {"email": "nope"}, headers={"Origin": "http://localhost:8001"})
    foreign = post_json(client, "/forms/newsletter", NEWSLETTER, headers={"Origin": "https://evil.example"})

    assert ok.headers["Access-Control-Allow-Origin"] == "http://localhost:8001"
    assert bad.status_code == 400
    assert bad.headers["Access-Control-Allow-Origin"] == "http://localhost:8001"
    assert "Access-Control-Allow-Origin" not in foreign.headers


# -- one write per submission -----------------------------------------------------------------


def test_one_write_request_per_accepted_submission(client):
    counter = RequestCounter(aws.dynamodb())

    post_json(client, "/forms/newsletter", NEWSLETTER)
    new_lead = list(counter.calls)
    counter.reset()
    post_json(client, "/forms/ebook", EBOOK)
    known_lead = list(counter.calls)

    assert new_lead == ["GetItem", "TransactWriteItems"]
    assert known_lead == ["GetItem", "TransactWriteItems"]


def test_bot_costs_one_counter_write_and_no_read(client):
    counter = RequestCounter(aws.dynamodb())

    post_json(client, "/forms/newsletter", {**NEWSLETTER, "website": "spam"})

    assert counter.calls == ["UpdateItem"]


# -- races and failures -----------------------------------------------------------------------


def test_stale_read_conflict_is_retried_without_partial_writes(client, rt, monkeypatch, table_items):
    post_json(client, "/forms/newsletter", NEWSLETTER)
    real_get = Store.get_lead
    reads = []

    def get_lead(self, lead_id):
        # The first read pretends the lead is new, as a concurrent first submission would see it.
        reads.append(lead_id)
        return None if len(reads) == 1 else real_get(self, lead_id)

    monkeypatch.setattr(Store, "get_lead", get_lead)

    response = post_json(client, "/forms/newsletter", {**NEWSLETTER, "first_name": "Second"})

    assert response.status_code == 200  # the retry saw the real lead
    assert len(reads) == 2
    items = table_items()
    assert len(events_of(items)) == 2  # the failed attempt left nothing behind
    assert lead_items(items)[0]["submissions"] == 2


def test_dynamodb_failure_answers_503_and_stores_nothing(client, monkeypatch, table_items):
    dynamodb = aws.dynamodb()

    def fail(**_):
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"}}, "TransactWriteItems")

    monkeypatch.setattr(dynamodb, "transact_write_items", fail)

    response = post_json(client, "/forms/newsletter", NEWSLETTER)

    assert response.status_code == 503
    assert body(response) == {"error": "unavailable"}
    assert response.headers["Retry-After"] == "30"
    assert table_items() == []


def test_health(client):
    response = client.http.get("/health")

    assert response.status_code == 200
    assert body(response) == {"status": "ok"}
