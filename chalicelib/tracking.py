"""Signed tokens: lead tokens now; click, open, unsubscribe and confirm tokens build on them.

A token is ``base64url(json claims) + "." + base64url(HMAC-SHA256(key, purpose + "." + claims))``,
truncated to 128 bits. The purpose is inside the MAC, so a token minted for one use (a lead token)
can never be replayed as another (an unsubscribe). Verification is constant-time and failures
say nothing about why: callers act on nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from chalicelib import engagement
from chalicelib.campaign_types import Campaign, EngagementRules
from chalicelib.clock import Clock
from chalicelib.entities import Event, Lead, Message, Suppression, iso
from chalicelib.errors import ConditionFailed, InvalidToken, NotFound, RateLimited, ValidationFailed
from chalicelib.nurture.rules import first_step_due
from chalicelib.store import Store
from chalicelib.vocabulary import INTERNAL_EVENT_TYPES, PAGE_VIEW, EventType, SuppressionReason

_MAC_BYTES = 16
LEAD_TOKEN_PURPOSE = "lead"
LEAD_TOKEN_LIFETIME = timedelta(days=400)

# What a lead token proves about whoever holds it. Every kind looks the same (the same claims,
# a MAC of the same size): the kind is in the MAC's purpose, so only the key tells them apart.
MAILBOX = "mailbox"  # came through a link in one of the lead's own emails: the mailbox is theirs
CREATOR = "creator"  # the browser whose submission created the lead: it may report its own behaviour
CLAIMED = "claimed"  # a submission named a lead that already existed: proves nothing but the address
VOID = "void"  # a bot's answer: accepted everywhere, does nothing
TOKEN_TRUSTS = (MAILBOX, CREATOR, CLAIMED, VOID)
# May change what scoring, stages, handoffs and nurture see.
TRUSTED = frozenset({MAILBOX, CREATOR})
# Where an event says whose token (or submission) stands behind it; events without it are
# Trellis's own records (opens, clicks, unsubscribes) or older than token kinds, and count.
TRUST_KEY = "trust"


def is_trusted(data: dict[str, Any]) -> bool:
    return data.get(TRUST_KEY, MAILBOX) in TRUSTED


@dataclass(frozen=True)
class LeadClaim:
    lead_id: str
    trust: str


def _lead_purpose(trust: str) -> str:
    return f"{LEAD_TOKEN_PURPOSE}/{trust}"


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, key: bytes) -> None:
        # Separate subkeys per use, so no output of one use helps forge another.
        self._token_key = hmac.new(key, b"trellis/tokens", hashlib.sha256).digest()
        self._hash_key = hmac.new(key, b"trellis/pseudonyms", hashlib.sha256).digest()

    def _mac(self, purpose: str, body: str) -> bytes:
        message = f"{purpose}.{body}".encode("ascii")
        return hmac.new(self._token_key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def sign(self, purpose: str, claims: dict[str, Any], expires_at: datetime) -> str:
        payload = dict(claims, exp=int(expires_at.timestamp()))
        body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64encode(self._mac(purpose, body))}"

    def verify(self, purpose: str, token: str, now: datetime) -> dict[str, Any]:
        return self.verify_any((purpose,), token, now)[1]

    def verify_any(self, purposes: tuple[str, ...], token: str, now: datetime) -> tuple[str, dict[str, Any]]:
        """The first of ``purposes`` the token was signed for, and its claims."""
        try:
            body, mac = token.split(".")
            # Compare the canonical text, not decoded bytes: base64's spare low bits would
            # otherwise let several spellings of one MAC pass. Every purpose is compared, so
            # the time taken says nothing about which one matched.
            given = mac.encode("ascii")
            matches = [
                hmac.compare_digest(given, _b64encode(self._mac(purpose, body)).encode("ascii")) for purpose in purposes
            ]
            if not any(matches):
                raise InvalidToken("bad signature")
            purpose = purposes[matches.index(True)]
            claims = json.loads(_b64decode(body))
        except (ValueError, UnicodeError, binascii.Error) as e:
            raise InvalidToken("malformed token") from e
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            raise InvalidToken("malformed claims")
        if claims["exp"] <= now.timestamp():
            raise InvalidToken("expired")
        return purpose, claims

    def pseudonym(self, value: str) -> str:
        """A keyed hash for values we must correlate but not keep (client IPs)."""
        return hmac.new(self._hash_key, value.encode(), hashlib.sha256).hexdigest()[:32]

    def lead_token(self, lead_id: str, now: datetime, trust: str) -> str:
        # A nonce, so two tokens of one lead never repeat (and the kind cannot show in them).
        claims = {"lead": lead_id, "n": secrets.token_urlsafe(6)}
        return self.sign(_lead_purpose(trust), claims, now + LEAD_TOKEN_LIFETIME)

    def lead_from_token(self, token: str, now: datetime) -> LeadClaim:
        """The lead a token names and what it proves. Tokens of the plain ``lead`` purpose
        (handed out before tokens had kinds, to anyone who named an address) prove nothing."""
        purposes = (*(_lead_purpose(trust) for trust in TOKEN_TRUSTS), LEAD_TOKEN_PURPOSE)
        purpose, claims = self.verify_any(purposes, token, now)
        lead_id = claims.get("lead")
        if not isinstance(lead_id, str):
            raise InvalidToken("malformed claims")
        trust = purpose.partition("/")[2] or CLAIMED
        return LeadClaim(lead_id, trust)


CLICK_PURPOSE = "click"
OPEN_PURPOSE = "open"
UNSUBSCRIBE_PURPOSE = "unsubscribe"
CONFIRM_PURPOSE = "confirm"
PREFERENCES_PURPOSE = "preferences"
TOPIC_PURPOSE = "topic-unsubscribe"
# Emails are read and clicked months later; links must keep working as long as people keep mail.
TRACKING_LIFETIME = timedelta(days=730)
UNSUBSCRIBE_LIFETIME = timedelta(days=3650)


class LinkBuilder:
    """Signed URLs of the public API that emails carry: tracked clicks, the open pixel,
    unsubscribe and confirmation."""

    def __init__(self, signer: TokenSigner, public_url: str) -> None:
        self._signer = signer
        self.public_url = public_url.rstrip("/")

    def click(self, lead_id: str, message_id: str, destination: str, now: datetime, *, trap: bool = False) -> str:
        claims: dict[str, Any] = {"lead": lead_id, "msg": message_id, "url": destination}
        if trap:  # a click on it is a machine's (chalicelib.engagement); it looks like any other link
            claims[engagement.TRAP_KEY] = 1
        token = self._signer.sign(CLICK_PURPOSE, claims, now + TRACKING_LIFETIME)
        return f"{self.public_url}/t/c/{token}"

    def open_pixel(self, lead_id: str, message_id: str, now: datetime) -> str:
        token = self._signer.sign(OPEN_PURPOSE, {"lead": lead_id, "msg": message_id}, now + TRACKING_LIFETIME)
        return f"{self.public_url}/t/o/{token}"

    def unsubscribe(self, lead_id: str, message_id: str, now: datetime) -> str:
        token = self._signer.sign(UNSUBSCRIBE_PURPOSE, {"lead": lead_id, "msg": message_id}, now + UNSUBSCRIBE_LIFETIME)
        return f"{self.public_url}/u/{token}"

    def preferences(self, lead_id: str, message_id: str, now: datetime) -> str:
        token = self._signer.sign(PREFERENCES_PURPOSE, {"lead": lead_id, "msg": message_id}, now + UNSUBSCRIBE_LIFETIME)
        return f"{self.public_url}/p/{token}"

    def topic_unsubscribe(self, lead_id: str, message_id: str, topic: str, now: datetime) -> str:
        claims = {"lead": lead_id, "msg": message_id, "topic": topic}
        token = self._signer.sign(TOPIC_PURPOSE, claims, now + UNSUBSCRIBE_LIFETIME)
        return f"{self.public_url}/p/t/{token}"

    def confirm(self, lead_id: str, now: datetime, lifetime: timedelta) -> str:
        token = self._signer.sign(CONFIRM_PURPOSE, {"lead": lead_id}, now + lifetime)
        return f"{self.public_url}/confirm/{token}"

    def is_own(self, url: str) -> bool:
        return url.startswith(self.public_url + "/")


class Tracker:
    """What email links do: record a click or an open, unsubscribe, confirm a subscription.

    A token that fails verification, or names a lead that no longer exists, records nothing.
    """

    def __init__(self, signer: TokenSigner, store: Store, clock: Clock, campaign: Campaign) -> None:
        self._signer = signer
        self._store = store
        self._clock = clock
        self._campaign = campaign
        self._own_origins = {origin for form in campaign.forms.values() for origin in form.allowed_origins}

    def click(
        self, token: str, method: str = "GET", user_agent: Optional[str] = None, source_ip: Optional[str] = None
    ) -> str:
        """Record the click, with what the request shows of who made it, and return where to
        send the reader: a machine's click is redirected too (a scanner finding a dead link
        would flag the mail). One write, whoever clicks how often."""
        now = self._clock.now()
        claims = self._signer.verify(CLICK_PURPOSE, token, now)
        lead_id, message_id, destination = _claim(claims, "lead"), _claim(claims, "msg"), _claim(claims, "url")
        if urlsplit(destination).scheme not in ("http", "https"):
            raise InvalidToken("destination is not a web URL")
        signals = engagement.hit_signals(engagement.CLICK, method, user_agent, source_ip)
        data: dict[str, Any] = {"message_id": message_id, "url": destination, engagement.SIGNALS_KEY: list(signals)}
        if claims.get(engagement.TRAP_KEY):
            data[engagement.TRAP_KEY] = True
        # Off the profile's event types: what nurture reads of clicks is set from human ones only.
        if not self._store.record_event(_event(lead_id, EMAIL_CLICKED, now, data), note_type=False):
            raise NotFound("lead", lead_id)
        if signals or data.get(engagement.TRAP_KEY) or self._sooner_than_a_reader(claims, now):
            return destination  # no lead token for a machine: its page views must not count
        return self._with_lead_token(destination, lead_id, now)

    def open(
        self, token: str, method: str = "GET", user_agent: Optional[str] = None, source_ip: Optional[str] = None
    ) -> None:
        now = self._clock.now()
        claims = self._signer.verify(OPEN_PURPOSE, token, now)
        lead_id, message_id = _claim(claims, "lead"), _claim(claims, "msg")
        signals = engagement.hit_signals(engagement.OPEN, method, user_agent, source_ip)
        data = {"message_id": message_id, engagement.SIGNALS_KEY: list(signals)}
        if not self._store.record_event(_event(lead_id, EMAIL_OPENED, now, data), note_type=False):
            raise NotFound("lead", lead_id)

    def _sooner_than_a_reader(self, claims: dict[str, Any], now: datetime) -> bool:
        """Clicked sooner after the email was made than a person reads (its token's age: the
        send follows within a second); the judge decides from the recorded send later."""
        minted = datetime.fromtimestamp(int(claims["exp"]), UTC) - TRACKING_LIFETIME
        return (now - minted).total_seconds() < self._campaign.engagement.min_seconds_to_click

    def check_unsubscribe(self, token: str) -> str:
        """Verify an unsubscribe token (the confirmation page), changing nothing."""
        return _claim(self._signer.verify(UNSUBSCRIBE_PURPOSE, token, self._clock.now()), "lead")

    def unsubscribe(self, token: str) -> None:
        """Unsubscribe for good: the address suppressed and the lead marked. Idempotent."""
        claims = self._signer.verify(UNSUBSCRIBE_PURPOSE, token, self._clock.now())
        lead_id = _claim(claims, "lead")
        if self._store.get_lead(lead_id) is None:
            raise NotFound("lead", lead_id)
        self.unsubscribe_lead(lead_id, str(claims.get("msg") or ""))

    def unsubscribe_lead(self, lead_id: str, message_id: str) -> None:
        """The address suppressed for good and the lead marked, once (the unsubscribe link, the
        preference centre's "leave everything")."""
        now = self._clock.now()
        if self._store.suppress(Suppression(lead_id, SuppressionReason.UNSUBSCRIBED, iso(now), message_id)):
            event = _event(lead_id, UNSUBSCRIBED, now, {"message_id": message_id or None})
            self._store.record_event(event, profile_sets={"unsubscribed_at": iso(now)})

    def check_confirm(self, token: str) -> bool:
        """Verify a confirm token (the page with the confirm button), changing nothing.

        True when the lead has confirmed already. Link scanners fetch every link of a message;
        a GET must not grant consent on behalf of whoever owns the address.
        """
        lead = self._confirmable_lead(token, self._clock.now())
        return lead.consent is not None and lead.consent.status == "granted"

    def confirm(self, token: str) -> None:
        """Double opt-in: grant consent and start the nurture that waited for it. Idempotent."""
        now = self._clock.now()
        lead = self._confirmable_lead(token, now)
        lead_id = lead.lead_id
        if lead.consent is None or lead.consent.status == "granted":
            return
        due = {}
        for sequence_id in lead.sequences:
            sequence = self._campaign.sequences.get(sequence_id)
            if sequence is not None:
                due[sequence_id] = iso(first_step_due(sequence, now))
        try:
            self._store.confirm_lead(lead_id, iso(now), due, _event(lead_id, CONFIRMED, now, {}))
        except ConditionFailed:
            return  # confirmed concurrently (a double click): the first one did the work

    def _confirmable_lead(self, token: str, now: datetime) -> Lead:
        """The lead a confirm token names; NotFound unless it exists with a consent to confirm."""
        lead_id = _claim(self._signer.verify(CONFIRM_PURPOSE, token, now), "lead")
        lead = self._store.get_lead(lead_id)
        if lead is None or lead.consent is None:
            raise NotFound("lead", lead_id)
        return lead

    def record_behaviour(self, fields: dict[str, Any], source_ip: Optional[str]) -> None:
        """A landing-page event (``POST /events``) for the lead its token names.

        Rate-limited per source address and per lead. What happens then depends on what the
        token proves (``TRUSTED``): the event is recorded and counts; or, for a token handed to
        whoever named a known lead's address, only a page view is kept, on the timeline, and it
        counts for nothing; or (a bot's token) nothing at all. The answer is the same in every
        case, and the same whether the lead exists, so the endpoint tells nobody who is a lead.
        """
        # Imported here: pydantic loads with the first event, not with every function's cold start.
        from pydantic import ValidationError

        from chalicelib.models import BehaviourEventIn

        try:
            incoming = BehaviourEventIn.model_validate(fields)
        except ValidationError as e:
            raise ValidationFailed(
                {str(err["loc"][0]) if err["loc"] else "body": err["msg"] for err in e.errors()}
            ) from e
        if incoming.type not in self._public_event_types:
            allowed = ", ".join(sorted(self._public_event_types)) or "none"
            raise ValidationFailed({"type": f"unknown event type; this campaign takes: {allowed}"})
        now = self._clock.now()
        try:
            claim = self._signer.lead_from_token(incoming.token, now)
        except InvalidToken as e:
            raise ValidationFailed({"token": "not a valid lead token"}) from e
        self._take_allowances(claim.lead_id, source_ip, now)
        if claim.trust == VOID or (claim.trust not in TRUSTED and incoming.type != PAGE_VIEW):
            return
        data: dict[str, Any] = {"url": incoming.url} if incoming.url else {}
        data[TRUST_KEY] = claim.trust
        # An untrusted page view goes on the timeline only: not into the types nurture looks at.
        trusted = claim.trust in TRUSTED
        self._store.record_event(_event(claim.lead_id, incoming.type, now, data), note_type=trusted)

    def _take_allowances(self, lead_id: str, source_ip: Optional[str], now: datetime) -> None:
        limits = self._campaign.rate_limits
        epoch = now.timestamp()
        retry_after = RATE_WINDOW_SECONDS - int(epoch) % RATE_WINDOW_SECONDS
        # Without a known source (a local test client) all such requests share one allowance.
        address = self._signer.pseudonym(source_ip or "unknown")
        if not self._store.take_allowance(
            EVENTS_BY_ADDRESS, address, RATE_WINDOW_SECONDS, limits.events_per_address_per_minute, epoch
        ):
            raise RateLimited("events from this address", retry_after)
        if not self._store.take_allowance(
            EVENTS_BY_LEAD, lead_id, RATE_WINDOW_SECONDS, limits.events_per_lead_per_minute, epoch
        ):
            raise RateLimited("events for this lead", retry_after)

    @property
    def _public_event_types(self) -> set[str]:
        """Event types a page may report: what the campaign scores, enrols or exits on,
        never what Trellis itself records (opens, clicks, submissions, unsubscribes)."""
        scoring = self._campaign.scoring
        named = set(scoring.events) | set(scoring.hand_raisers) | {PAGE_VIEW}
        for sequence in self._campaign.sequences.values():
            named |= set(sequence.entry.events) | set(sequence.exit.events)
        return named - INTERNAL_EVENT_TYPES

    def _with_lead_token(self, destination: str, lead_id: str, now: datetime) -> str:
        """Our own landing pages get the lead token, so their script can attribute page views."""
        parts = urlsplit(destination)
        if f"{parts.scheme}://{parts.netloc}".lower() not in self._own_origins:
            return destination
        query = parse_qsl(parts.query, keep_blank_values=True)
        # Handed out through a link in the lead's own email: proof of the mailbox.
        query.append((LEAD_TOKEN_PARAM, self._signer.lead_token(lead_id, now, MAILBOX)))
        return urlunsplit(parts._replace(query=urlencode(query)))


LEAD_TOKEN_PARAM = "trellis_lead"
# Rate-limit scopes of POST /events (store.take_allowance) and their window.
EVENTS_BY_ADDRESS = "events-ip"
EVENTS_BY_LEAD = "events-lead"
RATE_WINDOW_SECONDS = 60
# The event types this module records, by the names its importers use (chalicelib.vocabulary).
EMAIL_CLICKED = EventType.EMAIL_CLICKED
EMAIL_OPENED = EventType.EMAIL_OPENED
UNSUBSCRIBED = EventType.UNSUBSCRIBED
CONFIRMED = EventType.SUBSCRIPTION_CONFIRMED
STAGE_CHANGED = EventType.STAGE_CHANGED
EMAIL_BOUNCED = EventType.EMAIL_BOUNCED
EMAIL_COMPLAINED = EventType.EMAIL_COMPLAINED
# Which events are a person's (or a machine's) reaction to an email, judged by chalicelib.engagement.
ENGAGEMENT_KINDS: dict[str, str] = {EMAIL_OPENED: engagement.OPEN, EMAIL_CLICKED: engagement.CLICK}


def _claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken("malformed claims")
    return value


def _event(lead_id: str, event_type: str, now: datetime, data: dict[str, Any]) -> Event:
    return Event(lead_id=lead_id, event_id=secrets.token_hex(8), type=event_type, at=iso(now), data=data)


def engagement_verdicts(
    events: Iterable[Event], messages: Iterable[Message], rules: EngagementRules
) -> dict[str, engagement.Verdict]:
    """Each open's and click's verdict among a lead's events, from its whole history."""
    return engagement.judge_events(events, messages, rules, ENGAGEMENT_KINDS)


def counts_as_human(event: Event, verdicts: Mapping[str, engagement.Verdict]) -> bool:
    """What scoring, stages and nurture may see: every event but a machine's open or click."""
    verdict = verdicts.get(event.event_id)
    return event.type not in ENGAGEMENT_KINDS or verdict is None or verdict.human
