"""GET /admin/leads: filters, cursor pagination, served by the indexes."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from chalicelib import aws
from chalicelib.entities import iso, parse_iso
from tests.conftest import ADMIN_TOKEN, PUBLIC_URL
from tests.helpers import RequestCounter, body, post_json

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def leads(client: Any, headers: dict[str, str] | None = AUTH, **params: Any) -> Any:
    return client.http.get("/admin/leads?" + urlencode(params), headers=headers or {})


@pytest.fixture
def captured(client, clock) -> list[str]:
    """Six leads, a minute apart, oldest first: newsletter/ebook, three sources."""
    emails = []
    for n in range(6):
        form = "newsletter" if n % 2 == 0 else "ebook"
        email = f"lead{n}@example.com"
        fields = {
            "email": email,
            "first_name": f"L{n}",
            "consent": True,
            "utm_source": ["ads", "blog", "social"][n % 3],
        }
        assert post_json(client, f"/forms/{form}", fields).status_code == 200
        emails.append(email)
        clock.advance(60)
    return emails


def captured_before(lead: dict[str, Any]) -> str:
    """A moment 30 s before the lead was captured (captures are a minute apart)."""
    return iso(parse_iso(lead["created_at"]) - timedelta(seconds=30))


def emails_of(response: Any) -> list[str]:
    return [lead["email"] for lead in body(response)["leads"]]


def test_needs_the_admin_token(client, captured):
    assert leads(client, headers=None).status_code == 401
    wrong = leads(client, headers={"Authorization": "Bearer " + "x" * 40})
    assert (wrong.status_code, body(wrong)) == (401, {"error": "unauthorized"})


def test_newest_first_and_every_lead_once_across_pages_with_queries_only(client, captured):
    calls = RequestCounter(aws.dynamodb())
    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        response = leads(client, limit=4, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200
        seen += emails_of(response)
        pages += 1
        cursor = body(response)["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(captured))
    assert pages == 2
    assert set(calls.calls) == {"Query"}


def test_filters(client, captured, clock):
    # With a stage, highest score first; equal scores in no promised order.
    assert sorted(emails_of(leads(client, stage="lead"))) == [
        "lead1@example.com",
        "lead3@example.com",
        "lead5@example.com",
    ]
    assert emails_of(leads(client, form="newsletter")) == [
        "lead4@example.com",
        "lead2@example.com",
        "lead0@example.com",
    ]
    assert emails_of(leads(client, utm_source="blog")) == ["lead4@example.com", "lead1@example.com"]
    assert emails_of(leads(client, stage="subscriber", utm_source="ads")) == ["lead0@example.com"]
    newest = body(leads(client, limit=1))["leads"][0]
    assert emails_of(leads(client, created_from=newest["created_at"])) == ["lead5@example.com"]
    assert emails_of(leads(client, stage="lead", created_from=newest["created_at"])) == ["lead5@example.com"]
    earlier = emails_of(leads(client, stage="lead", created_to=captured_before(newest)))
    assert sorted(earlier) == ["lead1@example.com", "lead3@example.com"]
    scores = {lead["email"]: lead["score"] for lead in body(leads(client))["leads"]}
    assert set(scores.values()) == {0}  # nothing scored yet: the stream has not run
    assert emails_of(leads(client, stage="lead", min_score=1)) == []
    assert len(emails_of(leads(client, stage="lead", min_score=0, max_score=0))) == 3
    assert emails_of(leads(client, min_score=1)) == []


def test_a_filtered_page_resumes_where_it_stopped(client, captured):
    first = leads(client, form="ebook", limit=2)
    second = leads(client, form="ebook", limit=2, cursor=body(first)["next_cursor"])

    assert emails_of(first) + emails_of(second) == ["lead5@example.com", "lead3@example.com", "lead1@example.com"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"stage": "won"}, "stage"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1000"}, "limit"),
        ({"min_score": "abc"}, "min_score"),
        ({"min_score": "5", "max_score": "1"}, "query"),
        ({"created_from": "yesterday"}, "created_from"),
        ({"created_from": "2026-11-23T00:00:00"}, "created_from"),  # no time zone: the field says so
        ({"colour": "red"}, "colour"),
        ({"cursor": "abc.def"}, "cursor"),
    ],
)
def test_bad_parameters_are_400_with_the_field(client, captured, params, field):
    response = leads(client, **params)

    assert response.status_code == 400
    assert field in body(response)["fields"]


def test_cursor_is_bound_to_its_filters_and_tamper_proof(client, captured):
    cursor = body(leads(client, limit=2))["next_cursor"]
    other = leads(client, limit=2, form="ebook", cursor=cursor)
    tampered = leads(client, limit=2, cursor=cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1])

    assert (other.status_code, body(other)["fields"]) == (400, {"cursor": "belongs to other filters"})
    assert tampered.status_code == 400 and "cursor" in body(tampered)["fields"]


# -- one lead ---------------------------------------------------------------------------------


def test_one_lead_with_consent_attribution_score_and_timeline(client, deliver, tick):
    fields = {"email": "Kim@Example.com", "first_name": "Kim", "consent": True, "utm_source": "ads", "company": "Acme"}
    lead_id = body(post_json(client, "/forms/ebook", fields))["lead_id"]
    for _ in range(4):
        deliver()
    tick()

    response = client.http.get(f"/admin/leads/{lead_id}", headers=AUTH)

    assert response.status_code == 200
    record = body(response)
    assert record["lead"]["email"] == "Kim@example.com"
    assert record["lead"]["profile"]["company"] == "Acme"
    assert record["consent"]["status"] == "granted" and record["consent"]["form_id"] == "ebook"
    assert record["attribution"]["first_touch"]["utm_source"] == "ads"
    assert record["score"]["total"] == record["lead"]["score"] == 5  # the form submission
    assert record["score"]["events_counted"] == 1
    assert [e["sequence"] for e in record["enrolments"]] == ["ebook-nurture"]
    kinds = [(entry["kind"], entry.get("type") or entry.get("message_id")) for entry in record["timeline"]]
    assert ("event", "form_submitted") in kinds
    assert ("message", "ebook-nurture.ebook-delivery") in kinds
    moments = [entry["at"] for entry in record["timeline"]]
    assert moments == sorted(moments, reverse=True)


# A person's browser (Chrome on Windows): no machine signal of its own.
BROWSER = {
    "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
}
_HIDDEN = re.compile(r"<div hidden[^>]*>.*?</div>", re.DOTALL)  # the trap link people never see


def visible_tracked_links(message: Any) -> list[str]:
    """The tracked links of an email a person can see (not the hidden trap), as paths."""
    page = _HIDDEN.sub("", message.get_body(("html",)).get_content())
    hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', page)]
    return [h[len(PUBLIC_URL) :] for h in hrefs if h.startswith(f"{PUBLIC_URL}/t/c/")]


def pixel_of(message: Any) -> str:
    [src] = [html.unescape(s) for s in re.findall(r'<img src="([^"]+)"', message.get_body(("html",)).get_content())]
    return src[len(PUBLIC_URL) :]


def test_each_open_and_click_on_the_timeline_shows_its_verdict_and_reasons(client, clock, deliver, outbox):
    lead_id = body(post_json(client, "/forms/newsletter", {"email": "vic@example.com", "consent": True}))["lead_id"]
    deliver()
    [welcome] = [m for m in outbox() if m["To"] == "vic@example.com"]
    [link] = visible_tracked_links(welcome)

    # A scanner's HEAD a second after the send, then the person's browser a quarter of an hour on.
    clock.advance(1)
    assert client.http.head(link).status_code == 302
    clock.advance(15 * 60)
    assert client.http.get(link, headers=BROWSER).status_code == 302
    # Apple's Mail Privacy Protection fetches the pixel, whether or not anyone reads the mail.
    apple_proxy = {"User-Agent": "Mozilla/5.0", "Accept": "image/*"}
    assert client.http.get(pixel_of(welcome), headers=apple_proxy).status_code == 200

    record = body(client.http.get(f"/admin/leads/{lead_id}", headers=AUTH))
    clicks = [e for e in record["timeline"] if e.get("type") == "email_clicked"]
    person, scanner = clicks  # newest first
    assert (person["verdict"], person["reasons"]) == ("human", [])
    assert scanner["verdict"] == "machine"
    assert {"method:HEAD", "agent:none", "too_soon:1s"} <= set(scanner["reasons"]), scanner["reasons"]
    [apple] = [e for e in record["timeline"] if e.get("type") == "email_opened"]
    assert (apple["verdict"], apple["reasons"]) == ("machine", ["apple_proxy"])
    assert record["email_engagement"] == {
        "human": {"opened": 0, "clicked": 1},
        "machine": {"opened": 1, "clicked": 1},
    }
    # Only opens and clicks have a verdict.
    others = [e for e in record["timeline"] if e.get("type") not in ("email_clicked", "email_opened")]
    assert others and all("verdict" not in e and "reasons" not in e for e in others)


def test_one_lead_needs_the_token_and_unknown_is_404(client, captured):
    lead_id = body(leads(client, limit=1))["leads"][0]["lead_id"]

    assert client.http.get(f"/admin/leads/{lead_id}").status_code == 401
    wrong = client.http.get(f"/admin/leads/{lead_id}", headers={"Authorization": "Bearer " + "x" * 40})
    assert wrong.status_code == 401 and "email" not in json.dumps(body(wrong))
    unknown = client.http.get(f"/admin/leads/{'0' * 32}", headers=AUTH)
    assert (unknown.status_code, body(unknown)["error"]) == (404, "not_found")


def test_score_bounds_finer_than_storable_are_rounded_not_a_500(client, captured):
    response = leads(client, min_score=1e-200, max_score=2.4e-267)
    assert response.status_code == 200 and len(body(response)["leads"]) == 6  # every score is 0
