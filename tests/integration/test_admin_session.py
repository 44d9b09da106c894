"""Attacks on the dashboard's sign-in and the admin list (issue 14), through the app.

Logout closes the session in the table (the old cookie is the login form again); login and
logout refuse posts from other sites; failed sign-ins are throttled per source address and in
total; admin dates that UTC cannot hold are a 400, not a 500; and the twin console's thank-you
page links only downloads Trellis could have issued.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from chalice.local import LambdaEventConverter

from chalicelib import aws, dashboard
from chalicelib.assets import S3AssetLinks
from chalicelib.clock import OffsetFileClock
from tests.conftest import ADMIN_TOKEN, PUBLIC_URL, START
from tests.e2e.test_twin_console import call
from tests.helpers import body
from twin.console import Console

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
OURS = {"Origin": "https://trellis.test", "Sec-Fetch-Site": "same-origin"}
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WRONG = "w" * len(ADMIN_TOKEN)


def headers_of(response: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in response.headers.items()}


def login(client: Any, token: str, headers: dict[str, str] | None = None) -> Any:
    return client.http.post("/admin/login", headers={**FORM, **(headers or OURS)}, body=urlencode({"token": token}))


def logout(client: Any, cookie: str, headers: dict[str, str] | None = None) -> Any:
    return client.http.post("/admin/logout", headers={"Cookie": cookie, **(headers or OURS)})


def cookie_of(response: Any) -> str:
    assert response.status_code == 303, response.body
    return headers_of(response)["set-cookie"].split(";")[0]


def dashboard_status(client: Any, cookie: str) -> int:
    response = client.http.get("/admin/dashboard", headers={"Cookie": cookie})
    if response.status_code == 401:
        assert 'name="token"' in response.body.decode() and "<svg" not in response.body.decode()
    return int(response.status_code)


@pytest.fixture
def source_ip(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set the address API Gateway reports (requestContext.identity.sourceIp) for what follows."""

    def use(address: str) -> None:
        monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", address)

    return use


# -- logout revokes the session -----------------------------------------------------------------


def test_after_logout_the_old_cookie_is_the_login_form_and_other_sessions_stay(client):
    laptop = cookie_of(login(client, ADMIN_TOKEN))
    phone = cookie_of(login(client, ADMIN_TOKEN))
    assert dashboard_status(client, laptop) == 200

    response = logout(client, laptop)

    assert response.status_code == 303 and "Max-Age=0" in headers_of(response)["set-cookie"]
    # The browser dropped it; an attacker who copied it replays it: still signed, not expired.
    assert dashboard_status(client, laptop) == 401
    assert dashboard_status(client, phone) == 200


def test_a_session_the_table_never_opened_is_no_session(client, rt):
    forged_elsewhere = dashboard.session_cookie(rt, "never-opened").split(";")[0]
    assert dashboard_status(client, forged_elsewhere) == 401


# -- cross-site posts -------------------------------------------------------------------------------

CROSS_SITE = [
    {"Origin": "https://evil.example"},
    {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain is another origin
    {"Origin": "https://trellis.test.evil.example"},
    {"Origin": "null"},  # a sandboxed frame on any site
    {"Referer": "https://evil.example/page.html"},  # an old browser: no Origin, a foreign referrer
    {"Origin": "https://trellis.test", "Sec-Fetch-Site": "cross-site"},
]


# Each case of these is its own request in one moto world (a world per case costs a second each).


def test_cross_site_logout_is_refused_and_the_session_survives(client):
    cookie = cookie_of(login(client, ADMIN_TOKEN))
    for headers in CROSS_SITE:
        response = logout(client, cookie, headers)

        assert response.status_code == 403, headers
        assert "set-cookie" not in headers_of(response), headers
        assert dashboard_status(client, cookie) == 200, headers


def test_cross_site_login_is_refused_even_with_the_right_token(client):
    for headers in CROSS_SITE:
        response = login(client, ADMIN_TOKEN, headers)

        assert response.status_code == 403, headers
        assert "set-cookie" not in headers_of(response), headers


OWN_POSTS = [
    {"Origin": "https://trellis.test"},
    {"Origin": "https://trellis.test", "Sec-Fetch-Site": "same-origin"},
    {"Origin": "null", "Sec-Fetch-Site": "same-origin"},  # a privacy setting hid our origin
    {"Referer": f"{PUBLIC_URL}/admin/dashboard"},
    {"Origin": "http://127.0.0.1:8000", "Host": "127.0.0.1:8000"},  # the host the browser addressed
]


def test_the_dashboards_own_posts_pass(client):
    for headers in OWN_POSTS:
        cookie = cookie_of(login(client, ADMIN_TOKEN, headers))
        assert logout(client, cookie, headers).status_code == 303, headers
        assert dashboard_status(client, cookie) == 401, headers


# -- sign-in throttle -------------------------------------------------------------------------------


def test_the_eleventh_failure_from_one_address_is_429_and_reveals_nothing(client, source_ip):
    source_ip("203.0.113.7")
    for _ in range(dashboard.LOGIN_FAILURES_PER_ADDRESS):
        assert login(client, WRONG).status_code == 401

    wrong = login(client, WRONG)
    right = login(client, ADMIN_TOKEN)

    for response in (wrong, right):
        assert response.status_code == 429
        # Until the fixed window ends: START (09:30) is exactly on a 15-minute boundary.
        window = int(dashboard.LOGIN_WINDOW.total_seconds())
        assert int(headers_of(response)["retry-after"]) == window - int(START.timestamp()) % window == window
        assert "set-cookie" not in headers_of(response)
        assert "Too many failed sign-ins" in response.body.decode()
    # The same page for the right token and a wrong one: a guess learns nothing once throttled.
    assert right.body == wrong.body
    assert {k: v for k, v in headers_of(right).items() if k != "x-correlation-id"} == {
        k: v for k, v in headers_of(wrong).items() if k != "x-correlation-id"
    }

    source_ip("198.51.100.9")  # another address still signs in
    assert login(client, ADMIN_TOKEN).status_code == 303


def test_the_throttle_ends_with_its_window_and_successes_are_not_counted(client, rt, source_ip):
    source_ip("203.0.113.8")
    for _ in range(3 * dashboard.LOGIN_FAILURES_PER_ADDRESS):
        assert login(client, ADMIN_TOKEN).status_code == 303
    for _ in range(dashboard.LOGIN_FAILURES_PER_ADDRESS):
        login(client, WRONG)
    assert login(client, ADMIN_TOKEN).status_code == 429

    rt.clock.advance(dashboard.LOGIN_WINDOW.total_seconds())

    assert login(client, ADMIN_TOKEN).status_code == 303


def test_guesses_spread_over_many_addresses_hit_the_total_cap(client, source_ip):
    per_address = dashboard.LOGIN_FAILURES_PER_ADDRESS
    for n in range(dashboard.LOGIN_FAILURES_TOTAL):
        source_ip(f"10.0.{n // per_address}.{n % per_address}")
        assert login(client, WRONG).status_code == 401

    source_ip("192.0.2.200")  # a fresh address
    assert login(client, WRONG).status_code == 429
    assert login(client, ADMIN_TOKEN).status_code == 429


def test_a_wrong_bearer_on_the_dashboard_counts_as_a_failed_sign_in(client, source_ip):
    source_ip("203.0.113.9")
    for _ in range(dashboard.LOGIN_FAILURES_PER_ADDRESS):
        assert client.http.get("/admin/dashboard", headers={"Authorization": f"Bearer {WRONG}"}).status_code == 401

    assert client.http.get("/admin/dashboard", headers=BEARER).status_code == 429
    assert login(client, ADMIN_TOKEN).status_code == 429


def test_the_table_holds_no_source_address(client, source_ip, table_items):
    source_ip("203.0.113.10")
    login(client, WRONG)

    assert "203.0.113.10" not in repr(table_items())


# -- admin dates UTC cannot hold ------------------------------------------------------------------


def test_dates_before_or_after_what_utc_holds_are_a_400_naming_the_field(client):
    for path in ("/admin/leads", "/admin/export/leads.csv"):
        for field, moment in (
            ("created_from", "0001-01-01T00:00:00+14:00"),
            ("created_to", "9999-12-31T23:59:59-14:00"),
        ):
            response = client.http.get(f"{path}?{field}={quote(moment)}", headers=BEARER)

            assert response.status_code == 400, (path, field)
            answer = body(response)
            assert answer["error"] == "validation_error"
            assert set(answer["fields"]) == {field} and "UTC" in answer["fields"][field]


def test_the_edges_utc_does_hold_still_list(client):
    query = urlencode({"created_from": "0001-01-01T00:00:00-14:00", "created_to": "9999-12-31T23:59:59+14:00"})
    assert client.http.get(f"/admin/leads?{query}", headers=BEARER).status_code == 200


# -- the console's thank-you page -------------------------------------------------------------------

MOTO = "http://127.0.0.1:5000"
BUCKET = "trellis-demo-assets"


@pytest.fixture
def console(tmp_path) -> Iterator[Console]:
    running = Console(0, dict, OffsetFileClock(str(tmp_path / "clock")), list, assets_url=f"{MOTO}/{BUCKET}/")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def issued(monkeypatch: pytest.MonkeyPatch) -> str:
    """A link the API hands out in the twin: presigned by the app's own S3 client against moto."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", MOTO)
    aws.reset()
    return S3AssetLinks(aws.s3, BUCKET).download_url("ebooks/playbook.pdf", 3600)


def thanks(console: Console, download_url: str) -> str:
    status, page = call(console, "GET", "/ebook-thanks.html?" + urlencode({"download_url": download_url}))
    assert status == 200
    return str(page)


def test_the_thank_you_page_links_a_download_the_twin_issued(console, issued):
    page = thanks(console, issued)
    assert 'id="download"' in page and f"{MOTO}/{BUCKET}/ebooks/playbook.pdf?" in page


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        " javascript:alert(1)",
        "https://evil.example/playbook.pdf",
        "https://evil.example/playbook.pdf?X-Amz-Signature=abc",
        f"{MOTO}@evil.example/{BUCKET}/x.pdf?X-Amz-Signature=abc",
        f"http://127.0.0.1:5001/{BUCKET}/x.pdf?X-Amz-Signature=abc",
        f"{MOTO}/another-bucket/x.pdf?X-Amz-Signature=abc",
        f"{MOTO}/{BUCKET}-evil/x.pdf?X-Amz-Signature=abc",
        f"{MOTO}/{BUCKET}/../another-bucket/x.pdf?X-Amz-Signature=abc",
        f"{MOTO}/{BUCKET}/%2e%2e/another-bucket/x.pdf?X-Amz-Signature=abc",
        f"{MOTO}/{BUCKET}/x.pdf",  # not presigned: not what Trellis hands out
        f"//evil.example/{BUCKET}/x.pdf?X-Amz-Signature=abc",
        "data:text/html,<script>alert(1)</script>",
    ],
)
def test_the_thank_you_page_links_nothing_else(console, issued, url):
    page = thanks(console, url)
    assert 'id="download"' not in page
    assert "evil.example" not in page and "javascript:" not in page and "another-bucket" not in page


def test_without_the_assets_location_the_page_links_nothing(tmp_path, issued):
    running = Console(0, dict, OffsetFileClock(str(tmp_path / "clock")), list)
    running.start()
    try:
        assert 'id="download"' not in thanks(running, issued)
    finally:
        running.stop()
