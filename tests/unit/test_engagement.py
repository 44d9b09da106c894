"""Human or machine (chalicelib.engagement), as pure rules: what one request shows, on a table of
real user agents; what a message's history shows (too soon after the send, a burst over its links,
the trap link); and the campaign's ``engagement`` settings, refused when out of range.

Every user agent below is copied verbatim from a public source: the isbot fixtures
(omrilotan/isbot fixtures/browsers.yml, crawlers.yml), Crawler-Detect's categories
(JayBizzle/Crawler-Detect tests/data/categories), yauaa's e-mail clients
(nielsbasjes/yauaa EMailClients.yaml), Braze's bot filtering docs ("Barracuda Sentinel (EE)").
No public user agent of their own was found for Mimecast, Proofpoint, Symantec/MessageLabs,
Trend Micro, Forcepoint, Cisco IronPort or Sophos (they fetch with browser-like ones): their
sweeps are caught by the history rules, tested below, and their names in a user agent by
``test_a_security_vendors_name_in_a_user_agent_is_a_scanner``.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from chalicelib.config import CAMPAIGNS_DIR, load_campaign_file
from chalicelib.engagement import (
    CLICK,
    OPEN,
    Hit,
    Send,
    Verdict,
    agent_signal,
    burst_size,
    hit_signals,
    judge,
    judge_events,
)
from chalicelib.entities import Event, Message, iso
from chalicelib.errors import ConfigError
from chalicelib.models import EngagementRules

HOME_IP = "203.0.113.7"  # a reader's own address (TEST-NET-3), nowhere near Apple's 17.0.0.0/8
APPLE_IP = "17.58.63.12"  # inside Apple's 17.0.0.0/8, where Mail Privacy Protection fetches from
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/74.0.3729.169 "
    "Safari/537.36"
)
PERSON: tuple[str, ...] = ()  # no reason at all: a person's open or click
T0 = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)  # when the message was sent
RULES = EngagementRules()  # the defaults: 10 s to click, 5 s bursts over more than half the links
MSG = "welcome.welcome"
OTHER = "welcome.tips"
URL_A, URL_B, URL_C, URL_D = (f"https://trellis.example/{page}" for page in ("a", "b", "c", "d"))
READ = 15 * 60  # seconds after the send a person clicks: long after any scanner

# -- people: browsers and mail apps, human for an open and for a click --------------------------

PEOPLE = [
    ("chrome-windows", CHROME),
    (
        "chrome-macos",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/100.0.4758.102 Safari/537.36",
    ),
    (
        "chrome-linux",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/44.0.2403.157 Safari/537.36",
    ),
    (
        "chrome-android",
        "Mozilla/5.0 (Linux; Android 13; Pixel 6) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/104.0.0.0 "
        "Mobile Safari/537.36",
    ),
    (
        "chrome-os",
        "Mozilla/5.0 (X11; CrOS x86_64 13904.66.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.114 "
        "Safari/537.36",
    ),
    (
        "edge-windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/81.0.4044.113 "
        "Safari/537.36 Edg/81.0.416.62",
    ),
    (
        "edge-macos",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_6) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/81.0.4044.92 Safari/537.36 Edg/81.0.416.45",
    ),
    (
        "edge-ios",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 13_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/13.0 EdgiOS/44.10.19 Mobile/15E148 Safari/605.1.15",
    ),
    ("firefox-windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:100.0) Gecko/20100101 Firefox/100.0"),
    ("firefox-macos", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_10; rv:33.0) Gecko/20100101 Firefox/33.0"),
    ("firefox-linux", "Mozilla/5.0 (X11; Ubuntu; Linux i686; rv:24.0) Gecko/20100101 Firefox/24.0"),
    ("firefox-android", "Mozilla/5.0 (Android 9; Mobile; rv:78.0) Gecko/78.0 Firefox/78.0"),
    (
        "safari-macos",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/12.1.1 Safari/605.1.15",
    ),
    (
        "safari-ios",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 13_2_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/13.0.3 Mobile/15E148 Safari/604.1",
    ),
    (
        "samsung-internet-android",
        "Mozilla/5.0 (Linux; Android 9; SAMSUNG SM-G960U) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/10.2 Chrome/71.0.3578.99 Mobile Safari/537.36",
    ),
    # Apple Mail without Mail Privacy Protection: WebKit, no Version/ or Safari/ token.
    ("apple-mail-macos", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_5) AppleWebKit/605.1.15 (KHTML, like Gecko)"),
    (
        "apple-mail-ios",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 12_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    ),
    # Outlook on Windows fetches images as Office, not as a browser.
    ("outlook-ms-office", "Mozilla/4.0 (compatible; ms-office; MSOffice 16)"),
    ("outlook-office-16", "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.8241; Pro)"),
    (
        "outlook-2010",
        "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.1; WOW64; Trident/7.0; SLCC2; .NET CLR 2.0.50727; "
        ".NET CLR 3.5.30729; .NET CLR 3.0.30729; Media Center PC 6.0; MAGW; .NET4.0C; .NET4.0E; "
        "Microsoft Outlook 14.0.7113; ms-office; MSOffice 14)",
    ),
    ("outlook-ios", "Outlook-iOS/726.5856270.prod.iphone (4.57.0)"),
    ("outlook-android", "Outlook-Android/2.0"),
    # Outlook for Android shows a message's images in the system WebView (yauaa's note).
    (
        "outlook-android-webview",
        "Mozilla/5.0 (Linux; Android 9; SM-G950F Build/PPR1.180610.011; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/86.0.4240.110 Mobile Safari/537.36",
    ),
    ("thunderbird-linux", "Mozilla/5.0 (X11; Linux x86_64; rv:45.0) Gecko/20100101 Thunderbird/45.8.0"),
    (
        "thunderbird-windows",
        "Mozilla/5.0 (Windows NT 10.0; WOW64; rv:60.0) Gecko/20100101 Thunderbird/60.7.0 Lightning/6.2.7",
    ),
    # CUBOT makes phones: "CUBOT" is not a bot.
    (
        "cubot-max",
        "Mozilla/5.0 (Linux; Android 6.0; CUBOT MAX Build/MRA58K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/51.0.2704.81 Mobile Safari/537.36",
    ),
    (
        "cubot-dinosaur-webview",
        "Mozilla/5.0 (Linux; Android 6.0; CUBOT DINOSAUR Build/MRA58K; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/44.0.2403.119 Mobile Safari/537.36",
    ),
    (
        "cubot-c11-opera",
        "Mozilla/5.0 (Linux; Android 4.2.2; CUBOT C11 Build/JDQ39) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/31.0.1650.57 Mobile Safari/537.36 OPR/18.0.1290.66961",
    ),
    (
        "cubot-p20",
        "Mozilla/5.0 (Linux; Android 8.0.0; CUBOT_P20) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/70.0.3538.110 Mobile Safari/537.36",
    ),
]

# (name, user agent, reasons for an open, reasons for a click)
TABLE: list[tuple[str, str | None, tuple[str, ...], tuple[str, ...]]] = [
    *((name, agent, PERSON, PERSON) for name, agent in PEOPLE),
    # Mail services' image proxies fetch when their user opens the message: a person's open. They
    # fetch images only, so a link "clicked" through one is no person's.
    (
        "gmail-image-proxy",
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        PERSON,
        ("agent:proxy GoogleImageProxy",),
    ),
    (
        "yahoo-mail-proxy",
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
        PERSON,
        ("agent:proxy YahooMailProxy",),
    ),
    # Apple's Mail Privacy Protection: the bare product token, nothing else.
    ("apple-mpp", "Mozilla/5.0", ("apple_proxy",), ("agent:bare Mozilla/5.0",)),
    # Security gateways and link previews of mail services.
    ("barracuda", "Barracuda Sentinel (EE)", ("agent:scanner Barracuda",), ("agent:scanner Barracuda",)),
    (
        "kaspersky-link-resolver",
        "Kaspersky Lab CFR link resolver cfradmins@kaspersky.com",
        ("agent:scanner Kaspersky",),
        ("agent:scanner Kaspersky",),
    ),
    (
        "bing-preview",
        "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/534+ (KHTML, like Gecko) BingPreview/1.0b",
        ("agent:scanner BingPreview",),
        ("agent:scanner BingPreview",),
    ),
    (
        "microsoft-preview",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; MicrosoftPreview/2.0; "
        "+https://aka.ms/MicrosoftPreview) Chrome/100.0.4896.127 Safari/537.36",
        ("agent:scanner MicrosoftPreview",),
        ("agent:scanner MicrosoftPreview",),
    ),
    # Crawlers and link previews, named by their own token.
    (
        "googlebot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; "
        "+http://www.google.com/bot.html) Chrome/84.0.4147.108 Safari/537.36",
        ("agent:crawler Googlebot",),
        ("agent:crawler Googlebot",),
    ),
    (
        "googlebot-smartphone",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/80.0.3987.92 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        ("agent:crawler Googlebot",),
        ("agent:crawler Googlebot",),
    ),
    (
        "bingbot",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        ("agent:crawler bingbot",),
        ("agent:crawler bingbot",),
    ),
    (
        "applebot",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 "
        "Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
        ("agent:crawler Applebot",),
        ("agent:crawler Applebot",),
    ),
    (
        "slackbot",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        ("agent:crawler Slackbot",),
        ("agent:crawler Slackbot",),
    ),
    ("twitterbot", "Twitterbot/1.0", ("agent:crawler Twitterbot",), ("agent:crawler Twitterbot",)),
    (
        "linkedinbot",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Jakarta Commons-HttpClient/3.1 +http://www.linkedin.com)",
        ("agent:crawler LinkedInBot",),
        ("agent:crawler LinkedInBot",),
    ),
    (
        "facebook",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        ("agent:crawler facebookexternalhit",),
        ("agent:crawler facebookexternalhit",),
    ),
    ("whatsapp", "WhatsApp/2.21.12.21 A", ("agent:crawler WhatsApp",), ("agent:crawler WhatsApp",)),
    (
        "discordbot",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        ("agent:crawler Discordbot",),
        ("agent:crawler Discordbot",),
    ),
    ("telegrambot", "TelegramBot (like TwitterBot)", ("agent:crawler TelegramBot",), ("agent:crawler TelegramBot",)),
    (
        "skype-preview",
        "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
        ("agent:crawler SkypeUriPreview",),
        ("agent:crawler SkypeUriPreview",),
    ),
    (
        "snap-preview",
        "Snap URL Preview Service; bot; snapchat; https://developers.snap.com/robots",
        ("agent:crawler Snap URL Preview",),
        ("agent:crawler Snap URL Preview",),
    ),
    # Headless browsers.
    (
        "headless-chrome",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/100.0.4896.88 "
        "Safari/537.36",
        ("agent:headless HeadlessChrome",),
        ("agent:headless HeadlessChrome",),
    ),
    (
        "phantomjs",
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
        ("agent:headless PhantomJS",),
        ("agent:headless PhantomJS",),
    ),
    # HTTP libraries, as they send themselves by default.
    (
        "python-requests",
        "python-requests/2.21.0",
        ("agent:library python-requests",),
        ("agent:library python-requests",),
    ),
    ("python-urllib", "Python-urllib/2.7", ("agent:library Python-urllib",), ("agent:library Python-urllib",)),
    ("aiohttp", "Python/3.9 aiohttp/3.7.3", ("agent:library aiohttp",), ("agent:library aiohttp",)),
    ("curl", "curl/7.29.0", ("agent:library curl",), ("agent:library curl",)),
    ("wget", "Wget/1.14 (linux-gnu)", ("agent:library Wget",), ("agent:library Wget",)),
    ("go", "Go-http-client/1.1", ("agent:library Go-http-client",), ("agent:library Go-http-client",)),
    ("java", "Java/1.8.0_121", ("agent:library Java",), ("agent:library Java",)),
    ("okhttp", "okhttp/4.9.0", ("agent:library okhttp",), ("agent:library okhttp",)),
    (
        "apache-httpclient",
        "Apache-HttpClient/4.5.2 (Java/1.8.0_72)",
        ("agent:library Apache-HttpClient",),
        ("agent:library Apache-HttpClient",),
    ),
    (
        "node-fetch",
        "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
        ("agent:library node-fetch",),
        ("agent:library node-fetch",),
    ),
    ("axios", "axios/1.2.0", ("agent:library axios",), ("agent:library axios",)),
    ("libwww-perl", "libwww-perl/6.04", ("agent:library libwww-perl",), ("agent:library libwww-perl",)),
    # No user agent at all.
    ("no-user-agent", None, ("agent:none",), ("agent:none",)),
    ("empty-user-agent", "", ("agent:none",), ("agent:none",)),
    ("blank-user-agent", "   ", ("agent:none",), ("agent:none",)),
]


@pytest.mark.parametrize(("agent", "on_open", "on_click"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_a_get_with_this_user_agent_is_judged_by_it(
    agent: str | None, on_open: tuple[str, ...], on_click: tuple[str, ...]
) -> None:
    assert hit_signals(OPEN, "GET", agent, HOME_IP) == on_open
    assert hit_signals(CLICK, "GET", agent, HOME_IP) == on_click
    # Alone on its message, a hit's verdict is its own signals.
    hit = Hit("e1", CLICK, MSG, T0 + timedelta(seconds=READ), URL_A, signals=on_click)
    assert judge([hit], [Send(MSG, T0, links=4)], RULES)["e1"] == Verdict(not on_click, on_click)


def test_agent_signal_names_the_machine_and_passes_people() -> None:
    assert agent_signal(CHROME) is None
    assert agent_signal(None) == "agent:none"
    assert agent_signal("Twitterbot/1.0") == "agent:crawler Twitterbot"
    # Gmail's image proxy fetches when its user opens the message: a person's open.
    assert (
        agent_signal("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)")
        is None
    )


@pytest.mark.parametrize(
    "vendor",
    [
        "Mimecast",
        "Proofpoint",
        "Symantec",
        "MessageLabs",
        "Trend Micro",
        "TrendMicro",
        "Forcepoint",
        "IronPort",
        "Sophos",
        "Barracuda",
        "SafeLinks",
        "Zscaler",
    ],
)
def test_a_security_vendors_name_in_a_user_agent_is_a_scanner(vendor: str) -> None:
    """Not real user agents (none is published for these): the vendor's name alone, as a sweep
    would carry it, names a scanner."""
    assert agent_signal(f"Mozilla/5.0 (compatible; {vendor})") == f"agent:scanner {vendor}"


# -- the request's method and source address --------------------------------------------------


@pytest.mark.parametrize("method", ["HEAD", "head", "POST", "OPTIONS", "PUT"])
@pytest.mark.parametrize("kind", [OPEN, CLICK])
def test_anything_but_a_get_is_a_machine_whatever_the_user_agent(kind: str, method: str) -> None:
    assert hit_signals(kind, method, CHROME, HOME_IP) == (f"method:{method.upper()}",)


def test_a_head_with_a_machines_user_agent_carries_both_reasons() -> None:
    assert hit_signals(CLICK, "HEAD", "python-requests/2.21.0", HOME_IP) == (
        "method:HEAD",
        "agent:library python-requests",
    )
    assert hit_signals(CLICK, "HEAD", None, HOME_IP) == ("method:HEAD", "agent:none")


def test_a_lower_case_get_is_a_get() -> None:
    assert hit_signals(CLICK, "get", CHROME, HOME_IP) == PERSON


@pytest.mark.parametrize("address", [APPLE_IP, "17.0.0.0", "17.255.255.255"])
def test_an_open_from_apples_network_is_apples_proxy_whatever_the_user_agent(address: str) -> None:
    assert hit_signals(OPEN, "GET", CHROME, address) == ("apple_proxy",)
    # The bare token and the address are one reason, given once.
    assert hit_signals(OPEN, "GET", "Mozilla/5.0", address) == ("apple_proxy",)
    # A click from Apple's network is someone at Apple clicking: the proxy only fetches images.
    assert hit_signals(CLICK, "GET", CHROME, address) == PERSON


@pytest.mark.parametrize("address", ["16.255.255.255", "18.0.0.0", "2001:db8::17", "not-an-address", "", None])
def test_an_open_from_elsewhere_or_from_an_unreadable_address_is_judged_by_its_agent(address: str | None) -> None:
    assert hit_signals(OPEN, "GET", CHROME, address) == PERSON


# -- the message's history --------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def click(event_id: str, seconds: float, url: str | None = URL_A, *, message: str = MSG, trap: bool = False) -> Hit:
    return Hit(event_id, CLICK, message, at(seconds), url, trap=trap)


def opened(event_id: str, seconds: float, *, message: str = MSG) -> Hit:
    return Hit(event_id, OPEN, message, at(seconds))


def sent(seconds: float = 0, links: int | None = 4, *, message: str = MSG) -> Send:
    return Send(message, at(seconds), links)


def reasons(hits: list[Hit], sends: list[Send], rules: EngagementRules = RULES) -> dict[str, tuple[str, ...]]:
    verdicts = judge(hits, sends, rules)
    assert set(verdicts) == {h.event_id for h in hits}
    for verdict in verdicts.values():
        assert verdict.human == (not verdict.reasons)
    return {event_id: verdict.reasons for event_id, verdict in verdicts.items()}


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, ("too_soon:0s",)),
        (3, ("too_soon:3s",)),
        (9.4, ("too_soon:9s",)),
        (10, PERSON),  # not sooner than 10 s
        (11, PERSON),
        (READ, PERSON),
    ],
)
def test_a_click_sooner_than_a_person_reads_is_a_machines(seconds: float, expected: tuple[str, ...]) -> None:
    assert reasons([click("c", seconds)], [sent()]) == {"c": expected}


def test_an_open_is_never_too_soon() -> None:
    """A person may open a message the moment it arrives; only a click needs reading first."""
    assert reasons([opened("o", 1)], [sent()]) == {"o": PERSON}


def test_a_click_without_a_recorded_send_has_no_timing_to_judge_by() -> None:
    assert reasons([click("c", 1)], []) == {"c": PERSON}
    assert reasons([click("c", 1)], [sent(message=OTHER)]) == {"c": PERSON}


def test_a_click_recorded_before_its_send_is_too_soon() -> None:
    """A scanner can hit faster than the send was written."""
    assert reasons([click("c", -2)], [sent(0)]) == {"c": ("too_soon:0s",)}


def test_the_latest_send_before_a_click_is_the_one_that_counts() -> None:
    """A recycled lead gets the same message id again, a month on."""
    month = 30 * 24 * 3600
    sends = [sent(0), sent(month)]
    hits = [click("first-read", 5 * 24 * 3600), click("resent-scanned", month + 3), click("resent-read", month + READ)]
    assert reasons(hits, sends) == {"first-read": PERSON, "resent-scanned": ("too_soon:3s",), "resent-read": PERSON}
    # Just before the second send, a click still belongs to the first: long after it.
    assert reasons([click("c", month - 3600)], sends) == {"c": PERSON}


def test_three_of_four_links_within_the_window_is_a_sweep_with_its_open() -> None:
    hits = [
        opened("open-before", READ - 30),
        click("a", READ, URL_A),
        opened("open-inside", READ + 1),
        click("b", READ + 2, URL_B),
        click("c", READ + 5, URL_C),  # the window is 5 s, both ends in
        click("d-later", READ + 600, URL_D),
    ]
    assert reasons(hits, [sent(links=4)]) == {
        "open-before": PERSON,
        "a": ("burst",),
        "open-inside": ("burst",),
        "b": ("burst",),
        "c": ("burst",),
        "d-later": PERSON,
    }


def test_two_of_four_links_at_once_is_no_sweep() -> None:
    hits = [click("a", READ, URL_A), click("b", READ + 1, URL_B)]
    assert reasons(hits, [sent(links=4)]) == {"a": PERSON, "b": PERSON}


def test_links_spread_over_more_than_the_window_are_no_sweep() -> None:
    hits = [click("a", READ, URL_A), click("b", READ + 3, URL_B), click("c", READ + 6, URL_C)]
    assert reasons(hits, [sent(links=4)]) == {"a": PERSON, "b": PERSON, "c": PERSON}


def test_both_links_of_a_two_link_message_at_once_is_a_sweep() -> None:
    hits = [click("a", READ, URL_A), click("b", READ + 4, URL_B)]
    assert reasons(hits, [sent(links=2)]) == {"a": ("burst",), "b": ("burst",)}


def test_the_same_link_hit_again_is_no_sweep() -> None:
    """A person double-clicks, or comes back to the same link."""
    hits = [click("a1", READ, URL_A), click("a2", READ + 1, URL_A), click("a3", READ + 2, URL_A)]
    assert reasons(hits, [sent(links=2)]) == {"a1": PERSON, "a2": PERSON, "a3": PERSON}


def test_a_one_link_message_never_has_a_sweep() -> None:
    hits = [click(f"a{i}", READ + i, URL_A) for i in range(5)]
    assert reasons(hits, [sent(links=1)]) == {h.event_id: PERSON for h in hits}


def test_an_unknown_link_count_never_has_a_sweep() -> None:
    hits = [click("a", READ, URL_A), click("b", READ, URL_B), click("c", READ, URL_C), click("d", READ, URL_D)]
    assert reasons(hits, [sent(links=None)]) == {h.event_id: PERSON for h in hits}
    assert reasons(hits, []) == {h.event_id: PERSON for h in hits}


def test_a_sweep_is_one_reason_however_many_windows_overlap_it() -> None:
    hits = [
        click(name, READ + i, url)
        for i, (name, url) in enumerate(zip("abcd", (URL_A, URL_B, URL_C, URL_D), strict=True))
    ]
    assert reasons(hits, [sent(links=4)]) == {name: ("burst",) for name in "abcd"}


def test_a_trap_hit_makes_its_message_a_machines_until_then_and_its_sweep() -> None:
    hits = [
        opened("open", READ - 60),
        click("read-looking", READ, URL_A),
        click("read-looking-too", READ + 300, URL_B),
        click("trap", READ + 600, "https://trellis.example/trap", trap=True),
        click("same-sweep", READ + 604, URL_C),  # within burst_seconds after the trap
        click("later", READ + 3600, URL_A),
        click("other-message", READ, URL_A, message=OTHER),
    ]
    assert reasons(hits, [sent(), sent(message=OTHER)]) == {
        "open": ("trap",),
        "read-looking": ("trap",),
        "read-looking-too": ("trap",),
        "trap": ("trap",),
        "same-sweep": ("trap",),
        "later": PERSON,
        "other-message": PERSON,
    }


def test_a_trap_hit_on_a_message_sent_again_leaves_the_earlier_delivery_alone() -> None:
    month = 30 * 24 * 3600
    hits = [click("read", READ, URL_A), click("trap", month + 60, trap=True), opened("resent-open", month + 58)]
    assert reasons(hits, [sent(0), sent(month)]) == {"read": PERSON, "trap": ("trap",), "resent-open": ("trap",)}


def test_a_trap_hit_without_a_recorded_send_still_marks_its_message() -> None:
    hits = [click("read-looking", READ), click("trap", READ + 60, trap=True), click("later", READ + 120)]
    assert reasons(hits, []) == {"read-looking": ("trap",), "trap": ("trap",), "later": PERSON}


def test_a_hits_own_signals_come_first_and_each_reason_once() -> None:
    hits = [
        replace(click("head", 1, URL_A), signals=("method:HEAD", "agent:none")),
        replace(click("head-again", 2, URL_B), signals=("method:HEAD", "agent:none")),
        click("trap", 3, trap=True),
    ]
    hits.append(click("c", 3, URL_C))
    assert reasons(hits, [sent(links=3)]) == {
        "head": ("method:HEAD", "agent:none", "too_soon:1s", "burst", "trap"),
        "head-again": ("method:HEAD", "agent:none", "too_soon:2s", "burst", "trap"),
        "trap": ("burst", "trap"),  # no timing of its own: a trap hit is a machine's anyway
        "c": ("too_soon:3s", "burst", "trap"),
    }


def _a_rich_history() -> tuple[list[Hit], list[Send]]:
    """Every rule at once, over three messages, one of them sent twice, and two hits at the same moment."""
    month = 30 * 24 * 3600
    sends = [sent(0, links=4), sent(month, links=4), sent(0, links=2, message=OTHER), sent(5, links=None, message="x")]
    hits = [
        replace(click("scan-head", 1, URL_A), signals=("method:HEAD",)),
        click("scan-b", 1, URL_B),
        click("scan-c", 2, URL_C),
        opened("scan-open", 1),
        click("read", READ, URL_A),
        opened("read-open", READ - 5),
        click("resent-a", month + READ, URL_A),
        click("resent-trap", month + READ + 30, trap=True),
        click("resent-after", month + READ + 3600, URL_D),
        click("other-a", READ, URL_A, message=OTHER),
        click("other-b", READ, URL_B, message=OTHER),  # the same moment: order settled by event id
        click("other-later", READ * 4, URL_A, message=OTHER),
        click("x-fast", 6, URL_A, message="x"),
        replace(opened("x-apple", 7, message="x"), signals=("apple_proxy",)),
    ]
    return hits, sends


def test_a_rich_history_gets_the_verdicts_each_rule_gives() -> None:
    hits, sends = _a_rich_history()
    assert reasons(hits, sends) == {
        "scan-head": ("method:HEAD", "too_soon:1s", "burst"),
        "scan-b": ("too_soon:1s", "burst"),
        "scan-c": ("too_soon:2s", "burst"),
        "scan-open": ("burst",),
        "read": PERSON,
        "read-open": PERSON,
        "resent-a": ("trap",),
        "resent-trap": ("trap",),
        "resent-after": PERSON,
        "other-a": ("burst",),
        "other-b": ("burst",),
        "other-later": PERSON,
        "x-fast": ("too_soon:1s",),
        "x-apple": ("apple_proxy",),
    }


@pytest.mark.parametrize("seed", range(8))
def test_the_verdicts_do_not_depend_on_the_order_hits_and_sends_come_in(seed: int) -> None:
    hits, sends = _a_rich_history()
    expected = judge(hits, sends, RULES)
    shuffler = random.Random(seed)  # noqa: S311 - shuffles test input, no secret
    shuffler.shuffle(hits)
    shuffler.shuffle(sends)
    assert judge(hits, sends, RULES) == expected
    assert judge(reversed(hits), reversed(sends), RULES) == expected


# -- the campaign's settings change the outcome -----------------------------------------------


def test_min_seconds_to_click_zero_switches_the_timing_rule_off() -> None:
    rules = EngagementRules(min_seconds_to_click=0)
    assert reasons([click("c", 0), click("early", -1, URL_B)], [sent(links=None)], rules) == {
        "c": PERSON,
        "early": PERSON,
    }


def test_a_slower_reader_setting_judges_a_half_minute_click_too_soon() -> None:
    assert reasons([click("c", 30)], [sent()], EngagementRules(min_seconds_to_click=60)) == {"c": ("too_soon:30s",)}
    assert reasons([click("c", 30)], [sent()]) == {"c": PERSON}


def test_a_narrower_burst_window_lets_a_quick_reader_through() -> None:
    hits = [click("a", READ, URL_A), click("b", READ + 2, URL_B), click("c", READ + 4, URL_C)]
    assert reasons(hits, [sent(links=4)]) == {"a": ("burst",), "b": ("burst",), "c": ("burst",)}
    assert reasons(hits, [sent(links=4)], EngagementRules(burst_seconds=1)) == {"a": PERSON, "b": PERSON, "c": PERSON}


def test_a_higher_burst_share_needs_more_of_the_links() -> None:
    rules = EngagementRules(burst_share=0.75)
    three = [click("a", READ, URL_A), click("b", READ + 1, URL_B), click("c", READ + 2, URL_C)]
    assert reasons(three, [sent(links=4)], rules) == {"a": PERSON, "b": PERSON, "c": PERSON}
    four = [*three, click("d", READ + 3, URL_D)]
    assert reasons(four, [sent(links=4)], rules) == {name: ("burst",) for name in "abcd"}


def test_a_trap_sweep_follows_burst_seconds() -> None:
    hits = [click("trap", READ, trap=True), click("after", READ + 8, URL_B)]
    assert reasons(hits, [sent()]) == {"trap": ("trap",), "after": PERSON}
    assert reasons(hits, [sent()], EngagementRules(burst_seconds=10)) == {"trap": ("trap",), "after": ("trap",)}


@pytest.mark.parametrize(
    ("links", "share", "needed"),
    [
        (0, 0.5, None),
        (1, 0.5, None),
        (2, 0.5, 2),
        (3, 0.5, 2),
        (4, 0.5, 3),
        (5, 0.5, 3),
        (10, 0.5, 6),
        (4, 0.75, 4),
        (4, 0.0, 2),
        (200, 0.5, 101),
        (2, 0.99, 2),
    ],
)
def test_a_sweep_needs_more_than_the_share_of_the_links_and_at_least_two(
    links: int, share: float, needed: int | None
) -> None:
    assert burst_size(links, EngagementRules(burst_share=share)) == needed


# -- events and messages as stored ------------------------------------------------------------

KINDS = {"email_opened": OPEN, "email_clicked": CLICK}


def test_judge_events_reads_hits_from_stored_events_and_messages() -> None:
    def event(event_id: str, seconds: float, event_type: str, **data: Any) -> Event:
        return Event("lead", event_id, event_type, iso(at(seconds)), data)

    events = [
        event("scan", 2, "email_clicked", message_id=MSG, url=URL_A, signals=["method:HEAD"]),
        event("read", READ, "email_clicked", message_id=MSG, url=URL_B, signals=[]),
        event("open", READ - 5, "email_opened", message_id=MSG, signals=["apple_proxy"]),
        event("trap", READ * 2, "email_clicked", message_id=OTHER, url=URL_A, trap=True),
        event("signup", 0, "form_submitted", message_id=MSG),  # not an open or a click: no verdict
        event("lost", 5, "email_clicked", url=URL_A),  # no message: nothing to judge it by
    ]
    messages = [
        Message("lead", MSG, "welcome", "welcome", "Welcome", iso(at(0)), "ses-1", links=4),
        Message("lead", OTHER, "welcome", "tips", "Tips", "", "ses-2"),  # never sent: no timing
    ]
    verdicts = judge_events(events, messages, RULES, KINDS)
    assert {k: v.to_json() for k, v in verdicts.items()} == {
        "scan": {"verdict": "machine", "reasons": ["method:HEAD", "too_soon:2s"]},
        "read": {"verdict": "human", "reasons": []},
        "open": {"verdict": "machine", "reasons": ["apple_proxy"]},
        "trap": {"verdict": "machine", "reasons": ["trap"]},
    }


# -- the campaign file's engagement settings --------------------------------------------------


def write_campaign(tmp_path: Path, engagement: Any) -> Path:
    data = yaml.safe_load((CAMPAIGNS_DIR / "demo.yaml").read_text())
    data["engagement"] = engagement
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_campaign_files_engagement_settings_are_read_and_default() -> None:
    # The demo campaign says nothing: the defaults.
    assert load_campaign_file(CAMPAIGNS_DIR / "demo.yaml").engagement == EngagementRules(
        min_seconds_to_click=10, burst_seconds=5, burst_share=0.5
    )


def test_the_campaign_files_engagement_settings_are_used(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, {"min_seconds_to_click": 0, "burst_seconds": 2.5, "burst_share": 0.75})
    assert load_campaign_file(path).engagement == EngagementRules(
        min_seconds_to_click=0, burst_seconds=2.5, burst_share=0.75
    )


@pytest.mark.parametrize(
    ("engagement", "where", "problem"),
    [
        ({"min_seconds_to_click": -1}, "engagement.min_seconds_to_click", "greater than or equal to 0"),
        ({"min_seconds_to_click": 3601}, "engagement.min_seconds_to_click", "less than or equal to 3600"),
        ({"min_seconds_to_click": "soon"}, "engagement.min_seconds_to_click", "valid number"),
        ({"min_seconds_to_click": float("nan")}, "engagement.min_seconds_to_click", "finite number"),
        ({"burst_seconds": -0.5}, "engagement.burst_seconds", "greater than or equal to 0"),
        ({"burst_seconds": 601}, "engagement.burst_seconds", "less than or equal to 600"),
        ({"burst_share": 1}, "engagement.burst_share", "less than 1"),
        ({"burst_share": 1.5}, "engagement.burst_share", "less than 1"),
        ({"burst_share": float("inf")}, "engagement.burst_share", "finite number"),
        ({"burst_share": -0.1}, "engagement.burst_share", "greater than or equal to 0"),
        ({"min_seconds": 5}, "engagement.min_seconds", "Extra inputs are not permitted"),
        ({"min_seconds_to_click": True}, "engagement.min_seconds_to_click", "valid number"),
        ("strict", "engagement", "valid dictionary"),
    ],
)
def test_out_of_range_engagement_settings_are_refused_naming_the_field(
    tmp_path: Path, engagement: Any, where: str, problem: str
) -> None:
    path = write_campaign(tmp_path, engagement)
    with pytest.raises(ConfigError) as caught:
        load_campaign_file(path)
    message = str(caught.value)
    assert f"{path}: {where}: " in message
    assert problem in message
