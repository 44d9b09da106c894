"""The whole loop in a real browser: Debian's headless Chromium, driven through its chromedriver,
against the twin exactly as `make demo` runs it (moto server, chalice local, stream pump,
dispatcher tick, dev console), on free ports of 127.0.0.1.

One visitor signs up with JavaScript off (a plain HTML form post and a redirect), one with it on
(JSON and an inline answer); both get the welcome email; one clicks a tracked link, the clock is
fast-forwarded until the next step arrives, that one unsubscribes through the email's link, and
after more fast-forwarding only the other still gets mail. A screenshot of the outbox is left in
``test-artifacts/outbox.png``.
"""

from __future__ import annotations

import html
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from tests.helpers import BROWSER_UA
from tests.twin_process import OPENER, ROOT, TwinProcess, running_twin

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts"
WAIT_SECONDS = 30.0
MIN_FILL_SECONDS = 3.2  # the demo campaign's bot defence refuses forms filled faster than 3 s
HOUR = 3600
DAY = 24 * HOUR

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], Optional[T]], timeout: float = WAIT_SECONDS) -> T:
    """Poll until ``probe`` returns something truthy (the pump and the tick run in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None  # the page is still being replaced
        except WebDriverException as e:
            # Chromium's own words for a stale element when the page is replaced between finding
            # the node and reading it (seen once on a fresh clone); anything else is a real error.
            if "does not belong to the document" not in str(e):
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def chromium(profile: Path, javascript: bool) -> WebDriver:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `make test` installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        # The person this browser stands in for runs a desktop Chrome: headless Chromium names
        # itself HeadlessChrome, which Trellis rightly takes for a scanner (chalicelib.engagement).
        f"--user-agent={BROWSER_UA}",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,1800",
        # Nothing leaves the machine: every host but the twin's is unresolvable.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


@pytest.fixture
def twin(tmp_path: Path) -> Iterator[TwinProcess]:
    with running_twin(tmp_path, tick_seconds=1.0) as running:
        running.wait_for_health()
        running.start_on_a_monday_morning()  # the days it walks through meet the same send windows
        yield running


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[Callable[[bool], WebDriver]]:
    started: list[WebDriver] = []

    def start(javascript: bool) -> WebDriver:
        driver = chromium(tmp_path / f"profile-{len(started)}", javascript)
        started.append(driver)
        return driver

    yield start
    for driver in started:
        driver.quit()


def fill_signup(browser: WebDriver, email: str, first_name: str) -> None:
    browser.find_element(By.ID, "email").send_keys(email)
    browser.find_element(By.ID, "first_name").send_keys(first_name)
    browser.find_element(By.NAME, "consent").click()


def emails_to(twin: TwinProcess, address: str) -> list[str]:
    """Subjects of the emails SES accepted for ``address``, oldest first."""
    return [m["subject"] for m in reversed(twin.console_json("/outbox.json")) if m["to"] == address]


def lead(twin: TwinProcess, address: str) -> dict[str, Any]:
    found = [entry for entry in twin.console_json("/leads.json") if entry["email"] == address]
    return found[0] if found else {}


def timeline(twin: TwinProcess, address: str) -> list[str]:
    return [event["type"] for event in lead(twin, address).get("timeline", [])]


def console_post(twin: TwinProcess, path: str) -> None:
    request = urllib.request.Request(f"{twin.console_url}{path}", data=b"", method="POST")
    with OPENER.open(request, timeout=30) as response:
        assert response.status == 200


def email_frame(browser: WebDriver, subject: str) -> WebElement:
    """The outbox's iframe showing the newest email with this subject."""
    return browser.find_element(By.CSS_SELECTOR, f'iframe[title="{subject}"]')


def click_in_email(browser: WebDriver, subject: str, link_text: str) -> str:
    """Click a link inside an email in the outbox, as a reader would; returns its href."""
    browser.switch_to.frame(email_frame(browser, subject))
    link = browser.find_element(By.LINK_TEXT, link_text)
    href = str(link.get_attribute("href"))
    link.click()
    return href


def test_signup_nurture_click_and_unsubscribe_in_a_real_browser(
    twin: TwinProcess, browsers: Callable[[bool], WebDriver]
) -> None:
    plain, enhanced = "noor@example.com", "ada@example.com"

    # The JavaScript browser's form is filled first: the bot defence's fill time passes while the
    # plain browser signs up.
    browser = browsers(True)
    browser.get(f"{twin.console_url}/?utm_source=e2e-js")
    loaded = time.monotonic()
    fill_signup(browser, enhanced, "Ada")

    # 1. JavaScript off: the form posts as plain HTML, the API answers 303, the browser follows it.
    no_js = browsers(False)
    no_js.get(f"{twin.console_url}/?utm_source=e2e-plain")
    fill_signup(no_js, plain, "Noor")
    no_js.find_element(By.CSS_SELECTOR, "#signup button[type=submit]").click()
    wait_for("the thank-you page", lambda: no_js.current_url == f"{twin.console_url}/thanks.html")
    assert no_js.find_element(By.TAG_NAME, "h1").text == "Thank you!"

    # 2. JavaScript on: the script posts JSON (CORS from the console's origin) and answers inline.
    time.sleep(max(0.0, MIN_FILL_SECONDS - (time.monotonic() - loaded)))
    browser.find_element(By.CSS_SELECTOR, "#signup button[type=submit]").click()
    result = wait_for("the inline answer", lambda: browser.find_element(By.ID, "result").text)
    assert result == "Thank you! Check your inbox."
    assert browser.current_url == f"{twin.console_url}/?utm_source=e2e-js"  # no page load
    assert not browser.find_element(By.ID, "signup").is_displayed()
    assert browser.execute_script("return localStorage.getItem('trellis_lead')")
    # The stored lead token makes the pricing page report a visit.
    browser.get(f"{twin.console_url}/pricing.html")
    wait_for("the pricing view", lambda: "pricing_view" in timeline(twin, enhanced))

    # 3. Both welcome emails were sent at once (an immediate step, dispatched from the stream).
    welcome = "Welcome to the Trellis newsletter, Ada"
    wait_for("both welcome emails", lambda: emails_to(twin, plain) and emails_to(twin, enhanced))
    assert emails_to(twin, plain) == ["Welcome to the Trellis newsletter, Noor"]
    assert emails_to(twin, enhanced) == [welcome]
    for address, source in ((plain, "e2e-plain"), (enhanced, "e2e-js")):
        assert (lead(twin, address)["first_touch"], lead(twin, address)["utm_source"]) == ("newsletter", source)
        assert "form_submitted" in timeline(twin, address)
    browser.get(f"{twin.console_url}/outbox")
    assert "2 email(s)" in browser.find_element(By.ID, "count").text

    # The preference centre with JavaScript off: the plain reader adds a topic and keeps the rest.
    [plain_welcome] = [m for m in twin.console_json("/outbox.json") if m["to"] == plain]
    [choices] = [html.unescape(u) for u in re.findall(r'href="([^"]+)"', plain_welcome["html"]) if "/p/" in u]
    no_js.get(choices)
    assert no_js.find_element(By.NAME, "topic_newsletter").is_selected()
    assert not no_js.find_element(By.NAME, "topic_events").is_selected()
    no_js.find_element(By.NAME, "topic_events").click()
    no_js.find_element(By.CSS_SELECTOR, "button[value=save]").click()
    wait_for("the saved choices", lambda: "Saved." in no_js.page_source)
    assert no_js.find_element(By.NAME, "topic_events").is_selected()
    assert no_js.find_element(By.NAME, "topic_newsletter").is_selected()

    # 4. A tracked link, a quarter of an hour later (a click seconds after the send is a machine's):
    #    the click goes through the API (then on to a site this machine cannot reach).
    console_post(twin, f"/clock/advance?seconds={15 * 60}")
    score_before_click = lead(twin, enhanced)["score"]
    href = click_in_email(browser, welcome, "Lead nurture in 15 minutes")
    browser.switch_to.default_content()
    assert href.startswith(f"{twin.api_url}/t/c/")
    wait_for("the click", lambda: "email_clicked" in timeline(twin, enhanced))
    wait_for("the click's points", lambda: lead(twin, enhanced)["score"] > score_before_click)

    # 5. Fast-forward with the outbox's buttons until the next step ("best-of", two days later,
    #    inside the Monday-Friday 9-17 send window) arrives: two days, then hour by hour.
    best_of = "Our three most-read guides"
    for _ in range(2):
        browser.get(f"{twin.console_url}/outbox")
        before = browser.find_element(By.ID, "clock").text
        browser.find_element(By.ID, "advance-day").click()
        # Back on the outbox, its clock a day on (from a Monday morning: see the twin fixture).
        wait_for("the outbox again", lambda before=before: browser.find_element(By.ID, "clock").text != before)
        assert "days ahead of real time" in browser.find_element(By.ID, "clock").text
    browser.find_element(By.ID, "tick").click()
    for _ in range(4 * 24):  # at most a weekend and a night away
        if best_of in emails_to(twin, enhanced):
            break
        console_post(twin, f"/clock/advance?seconds={HOUR}")
        console_post(twin, "/tick")
    assert emails_to(twin, enhanced) == [welcome, best_of]

    # 6. Unsubscribe through the email's own link: the page's button sends the same POST a mail
    #    client's one-click unsubscribe (List-Unsubscribe-Post) does.
    browser.get(f"{twin.console_url}/outbox")
    unsubscribe_href = click_in_email(browser, best_of, "Unsubscribe")
    newest = next(m for m in twin.console_json("/outbox.json") if m["subject"] == best_of)
    assert newest["list_unsubscribe"].startswith(f"<{unsubscribe_href}>")
    wait_for("the unsubscribe page", lambda: browser.find_element(By.TAG_NAME, "h1").text == "Unsubscribe")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for("the confirmation", lambda: browser.find_element(By.TAG_NAME, "h1").text == "You are unsubscribed")
    browser.switch_to.default_content()
    wait_for("the unsubscribe event", lambda: "unsubscribed" in timeline(twin, enhanced))

    # 7. A week later: the other subscriber got the pricing nudge (the clock and the dispatcher
    #    still work), the one who left got nothing.
    for _ in range(7):
        console_post(twin, f"/clock/advance?seconds={DAY}")
        console_post(twin, "/tick")
    assert "How teams run Trellis for cents" in emails_to(twin, plain)
    assert emails_to(twin, enhanced) == [welcome, best_of]

    browser.get(f"{twin.console_url}/outbox")
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "outbox.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "lead: subscriber" in browser.find_element(By.TAG_NAME, "body").text


def test_browser_reaches_nothing_but_the_twin(browsers: Callable[[bool], WebDriver]) -> None:
    # The guard the test above relies on for its tracked link's destination.
    browser = browsers(True)
    try:
        browser.get("https://trellis.example/guides/lead-nurture-basics")
    except WebDriverException as e:  # how chromedriver usually reports it ...
        assert "ERR_NAME_NOT_RESOLVED" in str(e)
    else:  # ... or Chromium's own error page
        assert "ERR_NAME_NOT_RESOLVED" in browser.page_source
