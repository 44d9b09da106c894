"""Human or machine: a verdict on every open and click of an email, with its reasons. Pure rules.

In real inboxes most early engagement is not a person. Security gateways (Defender Safe Links,
Mimecast, Proofpoint, Barracuda...) fetch every link seconds after delivery, often with HEAD
requests or headless browsers; Apple Mail Privacy Protection fetches every image, the open pixel
included, whether or not anyone reads the mail. Only a person's opens and clicks may move scores,
stages, handoffs and nurture conditions, so each hit is judged from two kinds of evidence:

- what the request itself shows (``hit_signals``, decided once, when the hit arrives, and kept on
  the event): a method other than GET, no user agent or a machine's (scanner, crawler, link
  preview, headless browser, HTTP library; a mail service's image proxy on a click), Apple's
  proxy (user agent exactly ``Mozilla/5.0``, or an open from Apple's 17.0.0.0/8);
- what the message's history shows (``judge``, recomputed from the lead's events and sends
  whenever engagement is read): a click sooner after SES accepted the message than a person can
  read it, most of the message's links hit within a few seconds of each other, and any hit on
  the trap link (hidden from people, see ``chalicelib.nurture.render``), which makes everything
  of that message until then a machine's.

A verdict never changes what a hit is answered: a machine's click still gets its redirect.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Optional

from chalicelib.campaign_types import EngagementRules
from chalicelib.entities import Event, Message, parse_iso

OPEN = "open"
CLICK = "click"
HUMAN = "human"
MACHINE = "machine"

# Reasons, as they show on the timeline and in the API. A reason with a detail reads
# "<reason>:<detail>", e.g. "agent:scanner Mimecast", "too_soon:3s".
METHOD = "method"  # a request other than GET (HEAD, mostly)
AGENT = "agent"  # no user agent, or a machine's
APPLE_PROXY = "apple_proxy"  # Mail Privacy Protection fetched the pixel
TOO_SOON = "too_soon"  # clicked before a person could have read the message
BURST = "burst"  # most of the message's links hit at once
TRAP = "trap"  # the hidden link was hit: a person cannot have seen it

# Apple's own network, which its Mail Privacy Protection proxies fetch from.
APPLE_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)
APPLE_PROXY_AGENT = "Mozilla/5.0"

# Mail services that fetch images when their user opens a message: a person's open.
_READERS_PROXIES = re.compile(r"GoogleImageProxy|YahooMailProxy", re.IGNORECASE)
# (family, pattern). Families name what kind of machine it is; the match names which one.
_MACHINE_AGENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "scanner",
        re.compile(
            r"Barracuda|Mimecast|Proofpoint|Symantec|MessageLabs|Forcepoint|Trend ?Micro|Sophos|FireEye|"
            r"IronPort|Zscaler|Trustwave|SpamTitan|Bitdefender|FortiGuard|Fortinet|Cisco|SafeLinks|Safe Links|"
            r"Defender|Check ?Point|Cloudmark|Vade|Hornet|Libraesva|Avanan|Abnormal|Egress|Ironscales|"
            r"Kaspersky|BingPreview|MicrosoftPreview",
            re.IGNORECASE,
        ),
    ),
    ("headless", re.compile(r"HeadlessChrome|PhantomJS|Puppeteer|Playwright|Selenium|SlimerJS", re.IGNORECASE)),
    (
        "library",
        re.compile(
            r"^(?:python-requests|python-urllib|python-httpx|aiohttp|httpx|curl|Wget|Go-http-client|Java/|"
            r"Apache-HttpClient|okhttp|libwww-perl|lwp-request|node-fetch|axios|undici|Ruby|Faraday|PycURL|"
            r"Dart/|http\.rb|GuzzleHttp|PostmanRuntime|Jakarta|Scrapy|WinHttp|HTTPie|PHP|Deno|Bun/|reqwest)"
            # aiohttp puts the interpreter first: "Python/3.9 aiohttp/3.7.3".
            r"|\baiohttp/",
            re.IGNORECASE,
        ),
    ),
    (
        "crawler",
        re.compile(
            # The whole "...bot" token, to name it ("Googlebot", "LinkedInBot"); CUBOT makes phones.
            r"\b(?!cubot\b)[\w-]*?bot\b|crawler|spider|slurp|facebookexternalhit|embedly|WhatsApp|SkypeUriPreview|"
            r"Slack-ImgProxy|Iframely|Snap URL Preview|\+https?://[^\s;)]+",
            re.IGNORECASE,
        ),
    ),
)


@dataclass(frozen=True)
class Verdict:
    human: bool
    reasons: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return HUMAN if self.human else MACHINE

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.label, "reasons": list(self.reasons)}


def agent_signal(user_agent: Optional[str]) -> Optional[str]:
    """Why a user agent is a machine's, or None for a person's browser or mail app."""
    agent = (user_agent or "").strip()
    if not agent:
        return f"{AGENT}:none"
    if _READERS_PROXIES.search(agent):
        return None
    for family, pattern in _MACHINE_AGENTS:
        found = pattern.search(agent)
        if found:
            return f"{AGENT}:{family} {found.group(0).strip('/+ ')}"
    return None


def hit_signals(kind: str, method: str, user_agent: Optional[str], source_ip: Optional[str]) -> tuple[str, ...]:
    """What one request shows by itself: a machine's signals, none for a person's."""
    signals = []
    if method.upper() != "GET":
        signals.append(f"{METHOD}:{method.upper()}")
    agent = (user_agent or "").strip()
    if agent == APPLE_PROXY_AGENT:
        # Only Apple's proxy sends the bare product token; on a click it is no browser either.
        signals.append(APPLE_PROXY if kind == OPEN else f"{AGENT}:bare {APPLE_PROXY_AGENT}")
    else:
        reason = agent_signal(agent)
        proxy = _READERS_PROXIES.search(agent)
        if reason is None and proxy and kind != OPEN:
            # These proxies fetch a message's images for their reader, never its links.
            reason = f"{AGENT}:proxy {proxy.group(0)}"
        if reason is not None:
            signals.append(reason)
    if kind == OPEN and _from_apple(source_ip) and APPLE_PROXY not in signals:
        signals.append(APPLE_PROXY)
    return tuple(signals)


def _from_apple(source_ip: Optional[str]) -> bool:
    if not source_ip:
        return False
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return False
    return any(address in network for network in APPLE_NETWORKS)


# -- the message's history ----------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """An open or click as the judge sees it."""

    event_id: str
    kind: str  # OPEN or CLICK
    message_id: str
    at: datetime
    url: Optional[str] = None
    trap: bool = False
    signals: tuple[str, ...] = ()


@dataclass(frozen=True)
class Send:
    message_id: str
    sent_at: datetime
    links: Optional[int] = None  # tracked links in the message, the trap not counted; None: unknown


def judge(hits: Iterable[Hit], sends: Iterable[Send], rules: EngagementRules) -> dict[str, Verdict]:
    """Every hit's verdict, from its own signals and its message's history."""
    by_message: dict[str, list[Hit]] = {}
    for hit in hits:
        by_message.setdefault(hit.message_id, []).append(hit)
    sends_of: dict[str, list[Send]] = {}
    for send in sends:
        sends_of.setdefault(send.message_id, []).append(send)
    verdicts: dict[str, Verdict] = {}
    for message_id, message_hits in by_message.items():
        ordered = sorted(message_hits, key=lambda h: (h.at, h.event_id))
        reasons: dict[str, list[str]] = {h.event_id: list(h.signals) for h in ordered}
        message_sends = sorted(sends_of.get(message_id, []), key=lambda s: s.sent_at)
        _too_soon(ordered, message_sends, rules, reasons)
        _bursts(ordered, message_sends, rules, reasons)
        _traps(ordered, message_sends, rules, reasons)
        for hit in ordered:
            found = tuple(dict.fromkeys(reasons[hit.event_id]))  # each reason once, in order
            verdicts[hit.event_id] = Verdict(not found, found)
    return verdicts


def _send_before(sends: Sequence[Send], moment: datetime) -> Optional[Send]:
    """The send a hit belongs to: the latest before it, or (a hit faster than the send was
    recorded) the first one."""
    earlier = [s for s in sends if s.sent_at <= moment]
    if earlier:
        return earlier[-1]
    return sends[0] if sends else None


def _too_soon(
    hits: Sequence[Hit], sends: Sequence[Send], rules: EngagementRules, reasons: dict[str, list[str]]
) -> None:
    limit = timedelta(seconds=rules.min_seconds_to_click)
    if not limit:
        return  # 0 switches the rule off, also for a click recorded a moment before its send
    for hit in hits:
        if hit.kind != CLICK or hit.trap:
            continue
        send = _send_before(sends, hit.at)
        if send is None:
            continue  # a send we have no record of: no timing to judge by
        elapsed = hit.at - send.sent_at
        if elapsed < limit:
            reasons[hit.event_id].append(f"{TOO_SOON}:{max(elapsed.total_seconds(), 0):.0f}s")


def burst_size(links: int, rules: EngagementRules) -> Optional[int]:
    """How many distinct links hit inside one burst window make it a machine's sweep: more than
    ``burst_share`` of them, and never fewer than two (a message of one link has no burst)."""
    if links < 2:
        return None
    return max(2, math.floor(links * rules.burst_share) + 1)


def _bursts(hits: Sequence[Hit], sends: Sequence[Send], rules: EngagementRules, reasons: dict[str, list[str]]) -> None:
    known = [s.links for s in sends if s.links is not None]
    if not known:
        return
    needed = burst_size(max(known), rules)
    if needed is None:
        return
    window = timedelta(seconds=rules.burst_seconds)
    clicks = [h for h in hits if h.kind == CLICK and not h.trap and h.url]
    start = 0
    for end in range(len(clicks)):
        while clicks[end].at - clicks[start].at > window:
            start += 1
        inside = clicks[start : end + 1]
        if len({h.url for h in inside}) >= needed:
            swept = [h for h in hits if clicks[start].at <= h.at <= clicks[end].at]
            for hit in swept:  # the opens of the sweep too: the same machine fetched the pixel
                reasons[hit.event_id].append(BURST)


def _traps(hits: Sequence[Hit], sends: Sequence[Send], rules: EngagementRules, reasons: dict[str, list[str]]) -> None:
    """A trap hit makes the message's engagement until then a machine's, and the rest of the
    same sweep (``burst_seconds`` after it) too: of the send it belongs to, as a message sent
    again (a recycled lead's) is another delivery, read or scanned apart."""
    traps = [h for h in hits if h.trap]
    if not traps:
        return
    sweep = timedelta(seconds=rules.burst_seconds)
    reaches = [(trap.at + sweep, _send_before(sends, trap.at)) for trap in traps]
    for hit in hits:
        send = _send_before(sends, hit.at)
        if any(hit.at <= until and send == trap_send for until, trap_send in reaches):
            reasons[hit.event_id].append(TRAP)


# -- events and messages as stored --------------------------------------------------------------

# What a hit's event keeps in its data (besides message_id and url).
SIGNALS_KEY = "signals"
TRAP_KEY = "trap"


def hit_of(event: Event, kind: str) -> Optional[Hit]:
    message_id = event.data.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        return None
    url = event.data.get("url")
    signals = event.data.get(SIGNALS_KEY) or ()
    return Hit(
        event_id=event.event_id,
        kind=kind,
        message_id=message_id,
        at=parse_iso(event.at),
        url=url if isinstance(url, str) else None,
        trap=bool(event.data.get(TRAP_KEY)),
        signals=tuple(str(s) for s in signals),
    )


def judge_events(
    events: Iterable[Event], messages: Iterable[Message], rules: EngagementRules, kinds: Mapping[str, str]
) -> dict[str, Verdict]:
    """Verdicts for the opens and clicks among a lead's events (``kinds``: event type to OPEN or
    CLICK); other events have none."""
    hits = []
    for event in events:
        kind = kinds.get(event.type)
        hit = hit_of(event, kind) if kind else None
        if hit is not None:
            hits.append(hit)
    sends = [Send(m.message_id, parse_iso(m.sent_at), m.links) for m in messages if m.sent_at]
    return judge(hits, sends, rules)
