"""``POST /events``: landing pages report what a known lead did, under a signed lead token.

202 and one event for the token's lead; anything else a clear 4xx with nothing stored. Trellis's
own event types cannot be forged from a page, and only the campaign's own origins get CORS.
What a token may make count is tested in tests/integration/test_lead_takeover.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from chalicelib.entities import lead_id_for
from chalicelib.tracking import CREATOR, LEAD_TOKEN_LIFETIME, MAILBOX, UNSUBSCRIBE_PURPOSE
from chalicelib.vocabulary import EventType
from testkit import items as table_of
from tests.helpers import body, post_json

EBOOK = {"email": "bo@example.com", "first_name": "Bo", "consent": True}
LEAD_ID = lead_id_for("bo@example.com")
PAGE = "http://127.0.0.1:8001"


def lead_token(client: Any) -> str:
    response = post_json(client, "/forms/ebook", EBOOK)
    assert response.status_code == 200
    return str(body(response)["lead_token"])


def stored(table_items: Any) -> list[dict[str, Any]]:
    """Every item but the rate-limit windows (which every accepted request moves)."""
    return [i for i in table_items() if not i["pk"].startswith("LIMIT#")]


def behaviour(table_items: Any) -> list[dict[str, Any]]:
    """Every event item but the submission's."""
    return [i for i in table_of.events(table_items()) if i["type"] != EventType.FORM_SUBMITTED]


def test_an_event_is_accepted_and_recorded_for_the_tokens_lead(client, rt, table_items):
    token = lead_token(client)

    viewed = post_json(
        client, "/events", {"token": token, "type": "page_view", "url": "https://trellis.example/pricing"}
    )
    plain = post_json(client, "/events", {"token": token, "type": "pricing_view"})  # the url is optional

    assert viewed.status_code == 202 and plain.status_code == 202
    assert body(viewed) == {"accepted": True}
    assert viewed.headers["Content-Type"] == "application/json"
    events = sorted(behaviour(table_items), key=lambda i: i["type"])
    assert all(table_of.is_leads(e, LEAD_ID) for e in events)
    assert [(e["lead_id"], e["type"], e["data"]) for e in events] == [
        (LEAD_ID, "page_view", {"url": "https://trellis.example/pricing", "trust": CREATOR}),
        (LEAD_ID, "pricing_view", {"trust": CREATOR}),
    ]
    assert all(e["at"] == events[0]["at"] for e in events)
    [profile] = table_of.profiles(table_items())
    assert {"page_view", "pricing_view"} <= set(profile["event_types"])  # what nurture exits look at


def test_a_bad_token_is_a_400_on_the_token_field_and_stores_nothing(client, rt, clock, table_items):
    token = lead_token(client)
    body_part, mac = token.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    expired = rt.signer.lead_token(LEAD_ID, clock.now() - LEAD_TOKEN_LIFETIME - timedelta(seconds=1), MAILBOX)
    other_purpose = rt.signer.sign(UNSUBSCRIBE_PURPOSE, {"lead": LEAD_ID}, clock.now() + timedelta(days=1))
    before = stored(table_items)

    for bad in (f"{body_part}.{flipped}", body_part[:-2] + "xx." + mac, expired, other_purpose, "nonsense", ""):
        response = post_json(client, "/events", {"token": bad, "type": "page_view"})
        assert response.status_code == 400, bad
        assert body(response)["error"] == "validation_error"
        assert "token" in body(response)["fields"], bad
    missing = post_json(client, "/events", {"type": "page_view"})
    assert missing.status_code == 400 and "token" in body(missing)["fields"]
    assert stored(table_items) == before


def test_trellis_own_and_unknown_event_types_are_refused(client, table_items):
    token = lead_token(client)
    before = stored(table_items)

    for kind in ("email_opened", "email_clicked", "form_submitted", "stage_changed", "unsubscribed"):
        response = post_json(client, "/events", {"token": token, "type": kind})
        assert response.status_code == 400, kind
        assert list(body(response)["fields"]) == ["type"], kind
    for kind in ("webinar_attended", "Page View", "", 7):
        response = post_json(client, "/events", {"token": token, "type": kind})
        assert response.status_code == 400, kind
        assert "type" in body(response)["fields"], kind
    assert stored(table_items) == before


def test_a_url_that_is_not_a_web_url_is_refused(client, table_items):
    token = lead_token(client)
    before = stored(table_items)

    for url in ("javascript:alert(1)", "not a url", "ftp://trellis.example/x", "//trellis.example/pricing", 42):
        response = post_json(client, "/events", {"token": token, "type": "page_view", "url": url})
        assert response.status_code == 400, url
        assert "url" in body(response)["fields"], url
    assert stored(table_items) == before


def test_a_token_for_a_lead_that_does_not_exist_gets_the_same_answer_and_stores_nothing(client, rt, clock, table_items):
    # The answer must not tell whether an address is a lead.
    lead_token(client)  # some other lead exists
    before = stored(table_items)
    token = rt.signer.lead_token(lead_id_for("ghost@example.com"), clock.now(), MAILBOX)

    response = post_json(client, "/events", {"token": token, "type": "page_view"})

    assert response.status_code == 202
    assert body(response) == {"accepted": True}
    assert stored(table_items) == before


def test_only_json_of_a_sensible_size_is_read(client, table_items):
    token = lead_token(client)
    before = stored(table_items)
    event = {"token": token, "type": "page_view"}

    form = client.http.post(
        "/events", headers={"Content-Type": "application/x-www-form-urlencoded"}, body=f"token={token}&type=page_view"
    )
    text = client.http.post("/events", headers={"Content-Type": "text/plain"}, body=json.dumps(event))
    none = client.http.post("/events", headers={}, body=json.dumps(event))
    huge = post_json(client, "/events", {**event, "padding": "x" * 20_000})
    broken = client.http.post("/events", headers={"Content-Type": "application/json"}, body="{not json")
    array = post_json(client, "/events", [event])

    for response in (form, text, none):
        assert response.status_code == 415
        assert body(response)["error"] == "unsupported_media_type"
        assert body(response)["accepted"] == ["application/json"]
    assert huge.status_code == 413 and body(huge)["error"] == "payload_too_large"
    assert broken.status_code == 400 and "body" in body(broken)["fields"]
    assert array.status_code == 400 and "body" in body(array)["fields"]
    assert stored(table_items) == before
    assert post_json(client, "/events", {**event, "extra": "ignored"}).status_code == 202


def test_cors_is_granted_to_the_campaigns_form_origins_only(client):
    token = lead_token(client)
    event = {"token": token, "type": "page_view"}

    ok = post_json(client, "/events", event, headers={"Origin": PAGE})
    refused = post_json(
        client, "/events", {**event, "type": "email_opened"}, headers={"Origin": "http://localhost:8001"}
    )
    foreign = post_json(client, "/events", event, headers={"Origin": "https://evil.example"})

    assert ok.status_code == 202 and ok.headers["Access-Control-Allow-Origin"] == PAGE
    assert "Origin" in ok.headers["Vary"]
    assert refused.status_code == 400  # the page can read why
    assert refused.headers["Access-Control-Allow-Origin"] == "http://localhost:8001"
    assert foreign.status_code == 202  # CORS guards reading the answer, not the request
    assert "Access-Control-Allow-Origin" not in foreign.headers


def test_preflight_grants_post_to_the_campaigns_form_origins_only(client):
    def preflight(origin: str, method: str = "POST") -> Any:
        return client.http.request(
            "OPTIONS", "/events", headers={"Origin": origin, "Access-Control-Request-Method": method}
        )

    allowed, foreign, wrong_method = preflight(PAGE), preflight("https://evil.example"), preflight(PAGE, "DELETE")

    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == PAGE
    assert allowed.headers["Access-Control-Allow-Methods"] == "POST"
    assert "Content-Type" in allowed.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Origin" not in foreign.headers
    assert "Access-Control-Allow-Methods" not in foreign.headers
    assert "Access-Control-Allow-Methods" not in wrong_method.headers
