"""What Trellis stores. Each entity turns itself into and out of a DynamoDB item's attributes;
``chalicelib.store`` adds the keys and index attributes, which only it knows.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Optional

from chalicelib.vocabulary import ConsentStatus, HandoffStatus


def iso(moment: datetime) -> str:
    """UTC timestamps in one fixed-width format, so they sort as strings in DynamoDB keys."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def lead_id_for(email_identity: str) -> str:
    """Deterministic id from the normalised email: resubmits land on the same item, no lookup."""
    return hashlib.sha256(f"trellis-lead:{email_identity}".encode()).hexdigest()[:32]


def to_dynamo_value(value: Any) -> Any:
    """DynamoDB has no floats; numbers travel as Decimal."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: to_dynamo_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [to_dynamo_value(v) for v in value]
    return value


def from_dynamo_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo_value(v) for v in value]
    if isinstance(value, set):
        return sorted(from_dynamo_value(v) for v in value)
    return value


@dataclass(frozen=True)
class Touch:
    """One attribution touch: where a submission came from."""

    at: str
    form_id: str
    magnet: Optional[str] = None
    utm_source: Optional[str] = None
    utm_medium: Optional[str] = None
    utm_campaign: Optional[str] = None
    utm_term: Optional[str] = None
    utm_content: Optional[str] = None
    referrer: Optional[str] = None
    page_url: Optional[str] = None

    def to_item(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Touch:
        return cls(**{k: item.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


GRANTED = ConsentStatus.GRANTED
PENDING_CONFIRMATION = ConsentStatus.PENDING_CONFIRMATION


@dataclass(frozen=True)
class ConsentRecord:
    """Marketing consent as given: which wording (version), when, on which form."""

    status: str  # a ConsentStatus
    version: str
    text: str
    form_id: str
    at: str

    def to_item(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ConsentRecord:
        return cls(**{k: item[k] for k in cls.__dataclass_fields__})


PROFILE_FIELDS = ("first_name", "last_name", "phone", "company", "job_title")
CUSTOM_PREFIX = "cf_"


@dataclass(frozen=True)
class Lead:
    lead_id: str
    email: str
    email_identity: str
    stage: str
    score: int
    created_at: str
    updated_at: str
    first_touch: Touch
    last_touch: Touch
    profile: dict[str, str] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    consent: Optional[ConsentRecord] = None
    magnets: tuple[str, ...] = ()
    sequences: tuple[str, ...] = ()
    submissions: int = 0
    timezone: Optional[str] = None
    unsubscribed_at: Optional[str] = None
    # Topics the lead is subscribed to, and those it turned off (which only the lead can turn
    # back on: a stranger's submission adds no topic the lead turned off).
    topics: tuple[str, ...] = ()
    topics_off: tuple[str, ...] = ()
    paused_until: Optional[str] = None  # the preference centre's "pause all mail"
    forms: tuple[str, ...] = ()  # every form the lead submitted
    registered_for: tuple[str, ...] = ()  # the campaign's events the lead registered for
    engaged_at: Optional[str] = None  # the lead's latest human open or click (segments)
    # What nurture conditions and exits look at, kept on the profile by the writes that record
    # the events, so deciding a step needs no query of the timeline.
    event_types: tuple[str, ...] = ()
    clicked: tuple[str, ...] = ()  # "<sequence>.<step>" of messages clicked
    opened: tuple[str, ...] = ()
    recent_sends: tuple[str, ...] = ()  # send times inside the frequency-cap period
    # Scoring: how many events the stored score counts, and what it is made of.
    score_events: int = 0
    score_engagement: float = 0.0
    score_fit: float = 0.0
    score_reset_at: Optional[str] = None
    stage_reason: Optional[str] = None
    owner: Optional[dict[str, str]] = None

    def subscribed_to(self, topic: str) -> bool:
        """On the topic and not turned off (a topic off stays off until the lead turns it on)."""
        return topic in self.topics and topic not in self.topics_off

    def field_value(self, name: str) -> Any:
        """A named lead field for conditions: profile, custom, or derived (email_domain)."""
        if name == "email_domain":
            return self.email_identity.rpartition("@")[2]
        if name in ("email", "stage", "score", "timezone"):
            return getattr(self, name)
        return self.profile.get(name, self.custom.get(name))

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Lead:
        plain = from_dynamo_value(item)
        return cls(
            lead_id=plain["lead_id"],
            email=plain["email"],
            email_identity=plain["email_identity"],
            stage=plain["stage"],
            score=int(plain.get("score", 0)),
            created_at=plain["created_at"],
            updated_at=plain["updated_at"],
            first_touch=Touch.from_item(plain["first_touch"]),
            last_touch=Touch.from_item(plain["last_touch"]),
            profile={k: plain[k] for k in PROFILE_FIELDS if k in plain},
            custom={k[len(CUSTOM_PREFIX) :]: v for k, v in plain.items() if k.startswith(CUSTOM_PREFIX)},
            consent=ConsentRecord.from_item(plain["consent"]) if "consent" in plain else None,
            magnets=tuple(plain.get("magnets", ())),
            sequences=tuple(plain.get("sequences", ())),
            submissions=int(plain.get("submissions", 0)),
            timezone=plain.get("timezone"),
            unsubscribed_at=plain.get("unsubscribed_at"),
            topics=tuple(plain.get("topics", ())),
            topics_off=tuple(plain.get("topics_off", ())),
            paused_until=plain.get("paused_until"),
            forms=tuple(plain.get("forms", ())),
            registered_for=tuple(plain.get("registered_for", ())),
            engaged_at=plain.get("engaged_at"),
            event_types=tuple(plain.get("event_types", ())),
            clicked=tuple(plain.get("clicked", ())),
            opened=tuple(plain.get("opened", ())),
            recent_sends=tuple(plain.get("recent_sends", ())),
            score_events=int(plain.get("score_events", 0)),
            score_engagement=float(plain.get("score_engagement", 0.0)),
            score_fit=float(plain.get("score_fit", 0.0)),
            score_reset_at=plain.get("score_reset_at"),
            stage_reason=plain.get("stage_reason"),
            owner=plain.get("owner"),
        )


@dataclass(frozen=True)
class Registration:
    """A lead registered for one of the campaign's events (webinars): once per lead and event."""

    event_id: str
    lead_id: str
    registered_at: str
    form_id: str
    source: Optional[str] = None  # utm_source of the registration, else "direct"
    attended: Optional[bool] = None  # from the attendance upload; None until then
    minutes: Optional[int] = None

    def to_item(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Registration:
        plain = from_dynamo_value(item)
        return cls(
            event_id=plain["event_id"],
            lead_id=plain["lead_id"],
            registered_at=plain["registered_at"],
            form_id=plain["form_id"],
            source=plain.get("source"),
            attended=plain.get("attended"),
            minutes=int(plain["minutes"]) if plain.get("minutes") is not None else None,
        )


@dataclass(frozen=True)
class Event:
    """Something a lead did or that happened to them; the stream handler scores these."""

    lead_id: str
    event_id: str
    type: str
    at: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_item(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "event_id": self.event_id,
            "type": self.type,
            "at": self.at,
            "data": to_dynamo_value(self.data),
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Event:
        plain = from_dynamo_value(item)
        return cls(plain["lead_id"], plain["event_id"], plain["type"], plain["at"], plain.get("data", {}))


@dataclass(frozen=True)
class Enrolment:
    """A lead's place in one sequence. ``due_at`` is set only while a step waits to be sent."""

    lead_id: str
    sequence_id: str
    status: str  # an EnrolmentStatus
    step_index: int
    enrolled_at: str
    due_at: Optional[str]
    attempts: int = 0  # claims of the current step so far (backoff after failures)
    claim_id: Optional[str] = None
    exit_reason: Optional[str] = None  # an ExitReason, or "<prefix>:<detail>" (chalicelib.vocabulary)

    def to_item(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Enrolment:
        plain = from_dynamo_value(item)
        return cls(
            lead_id=plain["lead_id"],
            sequence_id=plain["sequence_id"],
            status=plain["status"],
            step_index=int(plain["step_index"]),
            enrolled_at=plain["enrolled_at"],
            due_at=plain.get("due_at"),
            attempts=int(plain.get("attempts", 0)),
            claim_id=plain.get("claim_id"),
            exit_reason=plain.get("exit_reason"),
        )


@dataclass(frozen=True)
class Message:
    """One email sent to a lead: the step it was, and what SES called it."""

    lead_id: str
    message_id: str  # "<sequence>.<step>": unique per lead, so a step can only be recorded once
    sequence_id: str
    step_id: str
    subject: str
    sent_at: str
    ses_message_id: str
    # The enrolment this send belongs to (its enrolled_at): a lead recycled into a sequence, or
    # re-captured after an unconfirmed sign-up expired, gets the same steps again as new messages.
    enrolled_at: str = ""
    # Tracked links in it (the trap link not counted): a scanner's sweep hits most of them at once.
    links: Optional[int] = None
    # Which version of a drip step with variants it was ("a" the step's own; None: no variants).
    variant: Optional[str] = None

    def to_item(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Message:
        plain = {k: item[k] for k in cls.__dataclass_fields__ if k in item}
        if "links" in plain:
            plain["links"] = int(plain["links"])
        return cls(**plain)


def message_id_for(sequence_id: str, step_id: str) -> str:
    return f"{sequence_id}.{step_id}"


@dataclass(frozen=True)
class Suppression:
    """An address that must never be mailed again: bounced, complained, unsubscribed, erased."""

    lead_id: str
    reason: str  # a SuppressionReason
    at: str
    detail: str = ""

    def to_item(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Suppression:
        return cls(item["lead_id"], item["reason"], item["at"], item.get("detail", ""))


@dataclass(frozen=True)
class Handoff:
    """One crossing into SQL: who owns the lead now, and which notifications went out."""

    lead_id: str
    handoff_id: str
    at: str
    owner_name: str
    owner_email: str
    reason: str
    score: float
    status: str = HandoffStatus.PENDING
    email_sent_at: Optional[str] = None
    sns_sent_at: Optional[str] = None
    webhook_status: Optional[str] = None  # a WebhookStatus; None when there is no webhook
    webhook_attempts: int = 0
    claim_id: Optional[str] = None

    def to_item(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Handoff:
        plain = from_dynamo_value(item)
        return cls(**{k: plain[k] for k in cls.__dataclass_fields__ if k in plain})


@dataclass(frozen=True)
class Variant:
    """One version of a broadcast: its own subject and template (A/B tests compare them)."""

    variant_id: str  # "a", "b", ...: the step id its sends and counters carry
    subject: str
    template: str


@dataclass(frozen=True)
class Broadcast:
    """One email to a segment: scheduled, then its recipients enrolled (each an enrolment of the
    broadcast's own one-step sequence, so every drip guarantee holds), then sent."""

    broadcast_id: str
    name: str
    topic: str
    segment: dict[str, Any]  # {"name": <campaign segment>} or {"rules": {...}}
    variants: tuple[Variant, ...]
    send_at: str
    status: str  # a BroadcastStatus
    created_at: str
    local_time: Optional[str] = None  # "HH:MM" in each lead's time zone
    test_fraction: Optional[float] = None
    winner_after: Optional[int] = None  # seconds after send_at
    winner_metric: str = "human_clicks"
    recipients: int = 0  # enrolled so far
    winner: Optional[str] = None
    winner_reason: Optional[str] = None
    cancelled_at: Optional[str] = None
    claim_id: Optional[str] = None
    cursor: Optional[str] = None  # where the recipients' enrolment goes on
    due_at: Optional[str] = None  # set while recipients wait to be enrolled (the due index)

    def to_item(self) -> dict[str, Any]:
        item = asdict(self)
        item["variants"] = [asdict(v) for v in self.variants]
        stored: dict[str, Any] = to_dynamo_value({k: v for k, v in item.items() if v is not None})
        return stored

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Broadcast:
        plain = from_dynamo_value(item)
        values = {k: plain[k] for k in cls.__dataclass_fields__ if k in plain}
        values["variants"] = tuple(Variant(**v) for v in plain["variants"])
        return cls(**values)
