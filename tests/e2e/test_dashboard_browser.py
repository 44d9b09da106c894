"""The team's dashboard in a real browser, after a scripted run of the demo campaign on the twin.

Leads arrive from three channels (paid search, LinkedIn ads, direct), some read the pricing
page, two ask for a demo, bots try the honeypot, ad spend is entered through the API, and the
clock is fast-forwarded so more of the sequence goes out. Then Chromium signs in through the
login form (a signed, HttpOnly, SameSite=Strict cookie), sees the funnel and the step table
(people's and machines' opens and clicks apart), signs out, and is shown the login form again.
The page is left in ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.test_browser_e2e import ARTIFACTS, chromium, console_post, wait_for
from tests.helpers import with_rendered_at
from tests.twin_process import OPENER, TwinProcess, running_twin

ADMIN_TOKEN = "dashboard-test-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# (email, form, first name, job title, utm_source, utm_medium, what they do next)
VISITORS = [
    ("maria@acme.example", "ebook", "Maria", "CTO", "google", "cpc", "demo_request"),
    ("tom@acme.example", "ebook", "Tom", "Engineer", "google", "cpc", "pricing_view"),
    ("lin@globex.example", "ebook", "Lin", "Head of Growth", "linkedin", "paid-social", "demo_request"),
    ("sam@globex.example", "ebook", "Sam", "Marketer", "linkedin", "paid-social", "pricing_view"),
    ("ola@initech.example", "newsletter", "Ola", "", "google", "cpc", ""),
    ("ken@initech.example", "newsletter", "Ken", "", "", "", ""),
    ("ivy@hooli.example", "newsletter", "Ivy", "", "", "", ""),
    ("raj@hooli.example", "ebook", "Raj", "Analyst", "linkedin", "paid-social", ""),
]


def api(twin: TwinProcess, method: str, path: str, data: Any = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        f"{twin.api_url}{path}",
        data=None if data is None else json.dumps(with_rendered_at(path, data)).encode(),
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with OPENER.open(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def twin(tmp_path: Path) -> Iterator[TwinProcess]:
    # A production SES quota, not moto's sandbox 1/s: one that fans the tick out to eight parts
    # (the twin runs them as threads), so the dashboard shows what they sent together.
    env = {"TRELLIS_ADMIN_TOKEN": ADMIN_TOKEN, "TRELLIS_MAX_SEND_RATE": "200"}
    with running_twin(tmp_path, tick_seconds=1.0, extra_env=env) as running:
        running.wait_for_health()
        running.start_on_a_monday_morning()  # the days it walks through meet the same send windows
        yield running


def scripted_run(twin: TwinProcess) -> None:
    for email, form, name, title, source, medium, action in VISITORS:
        fields: dict[str, Any] = {"email": email, "first_name": name, "consent": True}
        fields.update({k: v for k, v in (("job_title", title), ("utm_source", source), ("utm_medium", medium)) if v})
        token = api(twin, "POST", f"/forms/{form}", fields)["lead_token"]
        if action:
            api(twin, "POST", "/events", {"token": token, "type": action, "url": "https://trellis.example/pricing"})
    for _ in range(2):  # bots fill the hidden field
        api(twin, "POST", "/forms/newsletter", {"email": "bot@spam.example", "consent": True, "website": "x"})
    api(twin, "PUT", "/admin/reports/spend", {"utm_source": "google", "utm_medium": "cpc", "amount": 1450}, AUTH)

    def sqls() -> bool:
        funnel = api(twin, "GET", "/admin/reports/funnel", headers=AUTH)
        return bool(funnel["total"]["reached"]["sql"] == 2)

    wait_for("two SQLs in the funnel", sqls)

    def later_steps_sent() -> bool:
        steps = api(twin, "GET", "/admin/reports/sequences", headers=AUTH)["steps"]
        return sum(step["sent"] for step in steps) > len(VISITORS) + 2

    # Days on in three-hour jumps (two or more in any day's send window), whatever the hour and
    # weekday the run starts at, until later steps have gone out (at most a week of the clock).
    for _ in range(7 * 8):
        console_post(twin, "/clock/advance?seconds=10800")
        console_post(twin, "/tick")
        if later_steps_sent():
            break


def send_broadcast(twin: TwinProcess) -> str:
    """The console's "Send the broadcast" button with the newsletter readers chosen; the copies
    arrive in the outbox (the clock moved on to the send window when it is closed)."""
    request = urllib.request.Request(
        f"{twin.console_url}/broadcast",
        data=b"segment=newsletter-readers",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with OPENER.open(request, timeout=60) as response:
        broadcast_id: str = json.loads(response.read())["broadcast_id"]
    for _ in range(8):
        if [m for m in twin.console_json("/outbox.json") if m["subject"].startswith("The Trellis letter")]:
            break
        console_post(twin, "/clock/advance?seconds=10800")
        console_post(twin, "/tick")
    return broadcast_id


def test_dashboard_behind_the_login_form_shows_the_campaign(twin, tmp_path):
    scripted_run(twin)
    send_broadcast(twin)
    copies = {m["to"] for m in twin.console_json("/outbox.json") if m["subject"].startswith("The Trellis letter")}
    newsletter = {email for email, form, *_ in VISITORS if form == "newsletter"}
    assert copies == newsletter  # the ebook readers took the product topic, not the newsletter
    # At 200/s each tick is eight parts (the twin's threads), whose sends add up.
    request = urllib.request.Request(f"{twin.console_url}/tick", data=b"", method="POST")
    with OPENER.open(request, timeout=60) as response:
        assert json.loads(response.read())["fanned_out"] == 8
    funnel = api(twin, "GET", "/admin/reports/funnel", headers=AUTH)
    steps = api(twin, "GET", "/admin/reports/sequences", headers=AUTH)["steps"]
    assert funnel["total"]["reached"]["captured"] == len(VISITORS)
    assert sum(step["sent"] for step in steps) > len(VISITORS)  # the first emails and later steps

    browser: WebDriver = chromium(tmp_path / "profile", javascript=True)
    try:
        browser.get(f"{twin.api_url}/admin/dashboard")
        assert browser.find_elements(By.NAME, "token"), "no login form for a browser without the cookie"
        browser.find_element(By.NAME, "token").send_keys("not-the-token")
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait_for("the refusal", lambda: "not right" in browser.page_source)
        assert not browser.get_cookies()

        browser.find_element(By.NAME, "token").send_keys(ADMIN_TOKEN)
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait_for("the dashboard", lambda: browser.find_elements(By.CSS_SELECTOR, "svg"))
        [cookie] = browser.get_cookies()
        assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == ("trellis_admin", True, "Strict")
        assert ADMIN_TOKEN not in cookie["value"]

        page = browser.find_element(By.TAG_NAME, "body").text
        for expected in ("google", "linkedin", "(direct)", "Your copy of", "Welcome to the Trellis newsletter"):
            assert expected in page, expected
        [broadcast] = browser.find_elements(By.CSS_SELECTOR, "#broadcasts tr.broadcast")
        assert "Demo issue to newsletter-readers" in broadcast.text and "newsletter" in broadcast.text
        # People's opens and clicks (with the rates) and machines' apart, per step and in total.
        groups = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#emails thead th.group")]
        assert groups == ["People", "Machines"]
        machine_cells = browser.find_elements(By.CSS_SELECTOR, "#emails td.machine")
        assert len(machine_cells) == 2 * (len(steps) + 1)
        bars = browser.find_elements(By.CSS_SELECTOR, "svg rect")
        assert len(bars) >= len(funnel["stages"])

        ARTIFACTS.mkdir(exist_ok=True)
        browser.set_window_size(1280, int(browser.execute_script("return document.body.scrollHeight")) + 40)
        assert browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

        browser.find_element(By.CSS_SELECTOR, "form[action=logout] button").click()
        wait_for("the login form again", lambda: browser.find_elements(By.NAME, "token"))
        browser.get(f"{twin.api_url}/admin/dashboard")
        assert browser.find_elements(By.NAME, "token") and "linkedin" not in browser.page_source

        # The signed-out cookie put back (as an attacker who copied it would): logout closed it.
        browser.add_cookie({k: cookie[k] for k in ("name", "value", "path", "httpOnly", "sameSite")})
        browser.get(f"{twin.api_url}/admin/dashboard")
        assert browser.find_elements(By.NAME, "token") and "linkedin" not in browser.page_source
    finally:
        browser.quit()
