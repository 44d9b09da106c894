"""The dashboard through the app (chalice.test.Client): login form, session cookie, logout."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from tests.conftest import ADMIN_TOKEN
from tests.helpers import post_json

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def headers_of(response: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in response.headers.items()}


def login(client: Any, token: str) -> Any:
    return client.http.post("/admin/login", headers=FORM, body=urlencode({"token": token}))


def session_from(response: Any) -> str:
    return headers_of(response)["set-cookie"].split(";")[0]


def test_without_a_session_the_dashboard_is_the_login_form_and_shows_no_data(client):
    assert post_json(client, "/forms/newsletter", {"email": "ann@example.com", "consent": True}).status_code == 200
    response = client.http.get("/admin/dashboard")
    page = response.body.decode()
    assert response.status_code == 401
    assert headers_of(response)["content-type"].startswith("text/html")
    assert 'name="token"' in page and 'action="login"' in page
    assert "ann@example.com" not in page and "<svg" not in page


def test_login_sets_a_signed_http_only_strict_cookie_that_opens_the_dashboard(client, rt):
    wrong = login(client, "x" * 40)
    assert wrong.status_code == 401 and "set-cookie" not in headers_of(wrong)
    assert "That token is not right." in wrong.body.decode()

    response = login(client, ADMIN_TOKEN)

    assert response.status_code == 303 and headers_of(response)["location"] == "dashboard"
    attributes = [part.strip() for part in headers_of(response)["set-cookie"].split(";")]
    assert attributes[0].startswith("trellis_admin=") and ADMIN_TOKEN not in attributes[0]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    assert "Secure" in attributes  # the test stage's public URL is https
    page = client.http.get("/admin/dashboard", headers={"Cookie": session_from(response)})
    assert page.status_code == 200
    text = page.body.decode()
    assert rt.campaign.title in text and "<svg" in text
    assert headers_of(page)["cache-control"].startswith("no-store")


def test_a_tampered_cookie_is_no_session_and_the_bearer_token_also_works(client):
    cookie = session_from(login(client, ADMIN_TOKEN))
    tampered = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
    assert client.http.get("/admin/dashboard", headers={"Cookie": tampered}).status_code == 401
    bearer = client.http.get("/admin/dashboard", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert bearer.status_code == 200


def test_logout_clears_the_cookie(client):
    cookie = session_from(login(client, ADMIN_TOKEN))
    response = client.http.post("/admin/logout", headers={"Cookie": cookie})
    assert response.status_code == 303 and headers_of(response)["location"] == "dashboard"
    cleared = headers_of(response)["set-cookie"]
    assert cleared.startswith("trellis_admin=;") and "Max-Age=0" in cleared


def test_login_with_anything_but_a_form_is_the_login_page_again(client):
    for content_type, raw in (
        ("application/json", json.dumps({"token": ADMIN_TOKEN})),
        ("text/plain", f"token={ADMIN_TOKEN}"),
        ("application/json", f"token={ADMIN_TOKEN}"),  # a form body under another name is no form
    ):
        response = client.http.post("/admin/login", headers={"Content-Type": content_type}, body=raw)
        assert response.status_code == 401, content_type
        assert "set-cookie" not in headers_of(response) and 'name="token"' in response.body.decode()
