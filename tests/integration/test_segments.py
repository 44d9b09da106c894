"""``GET /admin/segments/{name}/count``: the campaign's named segments counted on moto, from the
index that narrows them (never a Scan), with engagement as the stream judged it."""

from __future__ import annotations

import html
import re
from typing import Any

from chalicelib import aws
from tests.conftest import ADMIN_TOKEN, PUBLIC_URL
from tests.helpers import BROWSER, RequestCounter, body, post_json, visible_html

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READ = 15 * 60  # a person reads the email a quarter of an hour later


def signup(client: Any, email: str, form_id: str) -> None:
    data = {"email": email, "first_name": "Sam", "consent": True}
    response = post_json(client, f"/forms/{form_id}", data)
    assert response.status_code in (200, 201), response.body


def count(client: Any, name: str) -> dict[str, Any]:
    response = client.http.get(f"/admin/segments/{name}/count", headers=AUTH)
    assert response.status_code == 200, response.body
    found: dict[str, Any] = body(response)
    return found


def test_a_segment_is_counted_from_the_index_that_narrows_it(client, clock, deliver, outbox):
    for n in range(3):
        signup(client, f"reader{n}@example.com", "newsletter")  # subscribers, topic newsletter
    signup(client, "ann@example.com", "ebook")  # leads, topic product
    signup(client, "bob@example.com", "ebook")
    signup(client, "ann@example.com", "newsletter")  # Ann takes both topics
    deliver()

    readers = count(client, "newsletter-readers")
    assert (readers["count"], readers["read"]) == (4, 5)  # every profile read: no index narrows topics
    calls = RequestCounter(aws.dynamodb())
    engaged = count(client, "engaged-product-leads")
    assert (engaged["count"], engaged["read"]) == (0, 2)  # only the two stage-"lead" profiles read
    assert set(calls.calls) == {"Query"}  # never a Scan

    # Bob reads his ebook email and clicks, as a person does: the stream judges it human.
    clock.advance(READ)
    [delivery] = [m for m in outbox() if m["To"] == "bob@example.com"]
    page = visible_html(delivery.get_body(("html",)).get_content())
    [link, *_] = [html.unescape(u) for u in re.findall(r'href="([^"]+)"', page) if "/t/c/" in u]
    assert client.http.get(link[len(PUBLIC_URL) :], headers=BROWSER).status_code == 302
    deliver()
    assert count(client, "engaged-product-leads")["count"] == 1

    clock.advance(31 * 86_400)  # a month later he is no longer engaged "within 30 days"
    assert count(client, "engaged-product-leads")["count"] == 0


def test_an_unknown_segment_is_404_and_the_count_is_the_teams_only(client):
    response = client.http.get("/admin/segments/nobody/count", headers=AUTH)
    assert (response.status_code, body(response)["error"]) == (404, "not_found")
    assert client.http.get("/admin/segments/newsletter-readers/count").status_code == 401
