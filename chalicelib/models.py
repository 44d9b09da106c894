"""Pydantic models at the boundaries: the campaign file and form submissions.

Every model is declared with ``defer_build=True``: pydantic builds a model's validator the first
time it validates, not at import. A cold start validates the campaign file (one validator for
``Campaign``, its parts inlined) and whatever its own requests need; the other models (admin
queries, events, the campaign's parts on their own) cost nothing until used.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Self, Union, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    create_model,
    field_validator,
    model_validator,
)

# Re-exported: the schema's words, defined where code without pydantic reads them.
from chalicelib.vocabulary import CONSENT_FIELD as CONSENT_FIELD
from chalicelib.vocabulary import FEEDBACK_STAGES
from chalicelib.vocabulary import LEAD_TOKEN_FIELD as LEAD_TOKEN_FIELD
from chalicelib.vocabulary import RENDERED_AT_FIELD as RENDERED_AT_FIELD
from chalicelib.vocabulary import TRACKING_FIELDS as TRACKING_FIELDS
from chalicelib.vocabulary import WEEKDAYS as WEEKDAYS
from chalicelib.vocabulary import Weekday as Weekday

if TYPE_CHECKING:  # a form's submission model is built from the compiled campaign's form (or the schema's)
    from chalicelib import campaign_types

# ---------------------------------------------------------------------------------------------
# Shared field types

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("expected a duration such as 30s, 15m, 2h, 3d or 1w")
    amount, unit = match.groups()
    return timedelta(**{_DURATION_UNITS[unit]: int(amount)})


Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]


# Control characters (NUL, CR, LF, ESC...) and Unicode line and paragraph separators: nothing a
# person types into a one-line field, and what header and log injection is made of.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def _no_control_characters(value: str) -> str:
    for char in value:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise ValueError(f"must not contain control characters or line breaks (found U+{ord(char):04X})")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return value


def _origin(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError("must be an origin such as https://www.example.com (no path)")
    return f"{parts.scheme}://{parts.netloc}".lower()


HttpUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=2048),
    AfterValidator(_no_control_characters),
    AfterValidator(_http_url),
]
Origin = Annotated[str, AfterValidator(_origin)]
Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class NormalisedEmail(BaseModel):
    """An address as given (for sending) and its identity form (for deduplication)."""

    model_config = ConfigDict(defer_build=True)

    address: str
    identity: str


def normalise_email(value: str) -> NormalisedEmail:
    """Validate syntax (no DNS at request time) and derive the identity used for dedupe.

    The identity is the whole address trimmed and case-folded, as CRMs match contacts; plus-tags
    are kept, so ``a+x@`` and ``a@`` are different leads.
    """
    # Imported on first use: only the capture path and SES feedback handle addresses, and
    # email-validator compiles its grammar's regexes at import.
    from email_validator import EmailNotValidError, validate_email

    _no_control_characters(value)
    try:
        # No SMTPUTF8: SES cannot deliver to a non-ASCII local part, so such an address is refused
        # here, with a reason, rather than accepted and never mailed. Domains may be international
        # (they go out in punycode).
        result = validate_email(value.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as e:
        raise ValueError(str(e)) from e
    # RFC 5321 limits, which email-validator leaves to the caller for the local part.
    if len(result.local_part) > MAX_LOCAL_PART:
        raise ValueError(f"the part before the @-sign is longer than {MAX_LOCAL_PART} characters")
    if len(result.ascii_email or result.normalized) > MAX_ADDRESS:
        raise ValueError(f"the address is longer than {MAX_ADDRESS} characters")
    return NormalisedEmail(address=result.normalized, identity=result.normalized.casefold())


def email_text(value: Any) -> NormalisedEmail:
    """A form's ``email``: exactly one address, given as text (an object or a list is refused)."""
    if not isinstance(value, str):
        raise ValueError("must be a single email address as text")
    return normalise_email(value)


MAX_LOCAL_PART = 64
MAX_ADDRESS = 254
# Files in the zone database that are not places: ZoneInfo loads them, but they mean "this
# machine's zone" or "no zone", never what a visitor's browser reports.
_NOT_PLACES = frozenset({"Factory", "localtime", "posixrules"})


@functools.cache
def _iana_zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_PLACES


def _check_timezone(value: str) -> str:
    if len(value) > 64 or value not in _iana_zones():
        raise ValueError("unknown time zone: expected an IANA name such as Europe/Berlin")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError("unknown time zone: expected an IANA name such as Europe/Berlin") from e
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)  # subclasses inherit it


# ---------------------------------------------------------------------------------------------
# The campaign file

StandardField = Literal["email", "first_name", "last_name", "phone", "company", "job_title"]
Requirement = Literal["required", "optional"]
Stage = Literal["subscriber", "lead", "mql", "sql", "opportunity", "customer", "recycled", "disqualified"]
CAPTURE_STAGES = ("subscriber", "lead")

_RESERVED = set(get_args(StandardField)) | set(TRACKING_FIELDS) | {CONSENT_FIELD, RENDERED_AT_FIELD, LEAD_TOKEN_FIELD}


class CustomField(_Strict):
    type: Literal["text", "number", "choice", "checkbox"] = "text"
    required: bool = False
    max_length: int = Field(default=200, ge=1, le=2000)
    choices: Optional[list[str]] = None

    @model_validator(mode="after")
    def _choices_match_type(self) -> CustomField:
        if self.type == "choice" and not self.choices:
            raise ValueError("a choice field needs a non-empty 'choices' list")
        if self.type != "choice" and self.choices is not None:
            raise ValueError("'choices' is only allowed on a choice field")
        return self


class Consent(_Strict):
    required: bool = True
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    text: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class Topic(_Strict):
    """What a lead may subscribe to (the newsletter, product news, events): forms subscribe to
    topics, and every drip and broadcast belongs to one, so a lead can turn one off and keep
    the rest (the preference centre)."""

    title: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    description: Annotated[str, StringConstraints(max_length=300)] = ""


def _email_only() -> dict[StandardField, Requirement]:
    return {"email": "required"}


class Form(_Strict):
    # "event": a registration for one of the campaign's ``events`` (its ``event``).
    kind: Literal["signup", "magnet", "event"]
    stage: Literal["subscriber", "lead"] = "lead"
    thank_you_url: HttpUrl
    allowed_origins: list[Origin] = Field(default_factory=list)
    fields: dict[StandardField, Requirement] = Field(default_factory=_email_only)
    custom_fields: dict[Identifier, CustomField] = Field(default_factory=dict)
    consent: Optional[Consent] = None
    double_opt_in: bool = False
    magnet: Optional[Identifier] = None
    event: Optional[Identifier] = None
    sequence: Optional[Identifier] = None
    # The topics a submission subscribes the lead to, when it gives marketing consent.
    topics: list[Identifier] = Field(default_factory=list)

    @model_validator(mode="after")
    def _coherent(self) -> Form:
        if self.fields.get("email") != "required":
            raise ValueError("fields.email must be 'required': a lead is identified by its email")
        if (self.kind == "magnet") != (self.magnet is not None):
            raise ValueError("a 'magnet' form must name its magnet, and only a magnet form may")
        if (self.kind == "event") != (self.event is not None):
            raise ValueError("an 'event' form must name its event, and only an event form may")
        if self.double_opt_in and self.consent is None:
            raise ValueError("double_opt_in needs a consent block to confirm")
        if self.topics and self.consent is None:
            raise ValueError("topics need a consent block: subscribing to a topic is marketing consent")
        if len(set(self.topics)) != len(self.topics):
            raise ValueError("topics: each topic once")
        clashes = sorted(set(self.custom_fields) & _RESERVED)
        if clashes:
            raise ValueError(f"custom_fields may not reuse built-in names: {', '.join(clashes)}")
        return self


def _moment(value: Any) -> str:
    """An ISO date or time (a date is its midnight UTC; a time needs its offset) as the
    fixed-width UTC text stored times are compared with."""
    from chalicelib.entities import iso

    text = str(value).strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ValueError("expected an ISO date or time such as 2026-11-01 or 2026-11-01T09:00:00Z") from e
    if len(text) > 10 and moment.tzinfo is None:
        raise ValueError("a time needs its offset (Z or +01:00)")
    return iso(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _values(value: Any) -> Any:
    return [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


_FieldValue = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_control_characters)]
_FieldName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
_FieldValues = Annotated[list[_FieldValue], BeforeValidator(_values), Field(min_length=1, max_length=50)]


class Segment(_Strict):
    """Who a broadcast goes to: every rule given must hold (none given: every lead). Named in the
    campaign file's ``segments`` or given inline to a broadcast, with the same keys."""

    stages: Optional[list[Stage]] = Field(default=None, min_length=1)
    score_min: Optional[float] = None
    score_max: Optional[float] = None
    forms: Optional[list[Identifier]] = Field(default=None, min_length=1)  # submitted any of them
    topics: Optional[list[Identifier]] = Field(default=None, min_length=1)  # subscribed to all of them
    # First- or last-touch attribution (either one matching).
    source: Optional[_FieldValue] = None
    medium: Optional[_FieldValue] = None
    utm_campaign: Optional[_FieldValue] = None
    created_after: Optional[Annotated[str, BeforeValidator(_moment)]] = None
    created_before: Optional[Annotated[str, BeforeValidator(_moment)]] = None
    # {field: value or [values]}: the field equals one of them (case-insensitive); "contains"
    # is spelled {"field": "~text"}.
    fields: Optional[dict[_FieldName, _FieldValues]] = None
    engaged_within: Optional[Duration] = None  # a person's open or click within it

    @model_validator(mode="after")
    def _ranges(self) -> Segment:
        if self.score_min is not None and self.score_max is not None and self.score_min > self.score_max:
            raise ValueError("score_min is above score_max")
        if self.created_after and self.created_before and self.created_after >= self.created_before:
            raise ValueError("created_after is not before created_before")
        if self.engaged_within is not None and self.engaged_within <= timedelta(0):
            raise ValueError("engaged_within must be a positive duration")
        return self


# What a segment's ``fields`` may name besides the forms' own fields.
SEGMENT_DERIVED_FIELDS = ("email_domain", "timezone")


def segment_problems(segment: Segment, campaign: Any) -> list[str]:
    """What a segment names that the campaign lacks (``campaign``: the schema's or the compiled
    one), each as "<key>: <reason>"."""
    problems = [f"forms: no form named {f!r}" for f in segment.forms or () if f not in campaign.forms]
    problems += [f"topics: no topic named {t!r}" for t in segment.topics or () if t not in campaign.topics]
    known = {*get_args(StandardField), *SEGMENT_DERIVED_FIELDS}
    for form in campaign.forms.values():
        known |= set(form.custom_fields)
    problems += [f"fields.{name}: no form has this field" for name in segment.fields or {} if name not in known]
    return problems


RESERVED_ASSET_PREFIX = "_trellis/"


class Magnet(_Strict):
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    asset_key: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    # SigV4 presigned URLs cannot outlive seven days.
    link_lifetime: Duration = timedelta(days=1)

    @field_validator("asset_key")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        # The stage's deploy state lives under this prefix of the assets bucket (infra/deploy.py),
        # and the functions may read only the magnets' own keys.
        if value.startswith(RESERVED_ASSET_PREFIX):
            raise ValueError(
                f"asset_key may not start with {RESERVED_ASSET_PREFIX!r}: reserved for Trellis's deploy state"
            )
        return value

    @field_validator("link_lifetime")
    @classmethod
    def _within_presign_limit(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=7):
            raise ValueError("link_lifetime must be between 1m and 7d (the S3 presigned URL limit)")
        return value


# ``starts_at`` as the demo gives it: days from when the campaign is compiled, at a local time.
_RELATIVE_START = re.compile(r"^\s*\+(\d{1,3})d\s+(\d{1,2}):(\d{2})\s*$")


def _event_start(value: Any, zone: ZoneInfo, today: datetime) -> str:
    """``starts_at`` as fixed-width UTC text: an ISO local time in the event's zone (an offset,
    if given, wins), or ``+<days>d HH:MM`` from ``today`` (a demo that always has a future event)."""
    from chalicelib.entities import iso

    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        relative = _RELATIVE_START.match(text)
        if relative:
            days, hour, minute = (int(g) for g in relative.groups())
            day = today.astimezone(zone).date() + timedelta(days=days)
            moment = datetime.combine(day, time(hour, minute))
        else:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError as e:
                raise ValueError(
                    "expected an ISO local time such as 2027-01-14T16:00, or +14d 16:00 (days from today)"
                ) from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return iso(moment)


class CalendarEvent(_Strict):
    """A webinar or an event people register for (a form of kind ``event``): its invite, its
    reminders (steps timed ``before_start`` / ``after_end``) and its attendance."""

    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    # Fixed-width UTC once validated; written as a local time in ``timezone`` (see _event_start).
    starts_at: str
    timezone: str
    duration: Duration
    # Secret until registration: only registrants' emails (and invites) carry it, tracked.
    join_url: HttpUrl
    capacity: Optional[int] = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="before")
    @classmethod
    def _resolve_start(cls, data: Any) -> Any:
        if isinstance(data, dict) and "starts_at" in data and isinstance(data.get("timezone"), str):
            try:
                zone = ZoneInfo(data["timezone"])
            except (ZoneInfoNotFoundError, ValueError):
                return data  # the timezone's own check names it
            try:
                data = {**data, "starts_at": _event_start(data["starts_at"], zone, datetime.now(UTC))}
            except ValueError:
                return data  # the field's own check names it
        return data

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _check_timezone(value)

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=14):
            raise ValueError("duration must be between 1m and 14d")
        return value

    @field_validator("starts_at")
    @classmethod
    def _canonical(cls, value: str) -> str:
        from chalicelib.entities import parse_iso

        try:
            parse_iso(value)
        except ValueError as e:
            raise ValueError(
                "expected an ISO local time such as 2027-01-14T16:00, or +14d 16:00 (days from today)"
            ) from e
        return value


def event_problems(event_id: str, event: CalendarEvent, now: datetime) -> list[str]:
    """What ``make validate`` refuses of an event besides its fields: one already over."""
    from chalicelib.entities import parse_iso

    if parse_iso(event.starts_at) <= now:
        return [f"events.{event_id}.starts_at: {event.starts_at} is in the past (an event must be ahead)"]
    return []


class ScoreRange(_Strict):
    min: Optional[float] = None
    max: Optional[float] = None


class Condition(_Strict):
    """One test on a lead; a step's ``only_if`` needs all of its conditions, ``skip_if`` any.

    Exactly one of: ``field`` (with ``equals``, ``in`` or ``exists``), ``stage``, ``score``,
    ``clicked`` / ``opened`` (a step id of this sequence, or ``sequence.step``), ``event``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: Optional[str] = None
    equals: Optional[str | float | bool] = None
    in_: Optional[list[str]] = Field(default=None, alias="in")
    exists: Optional[bool] = None
    stage: Optional[list[Stage]] = None
    score: Optional[ScoreRange] = None
    clicked: Optional[str] = None
    opened: Optional[str] = None
    event: Optional[str] = None

    @model_validator(mode="after")
    def _exactly_one_test(self) -> Condition:
        tests = [name for name in ("field", "stage", "score", "clicked", "opened", "event") if getattr(self, name)]
        if len(tests) != 1:
            raise ValueError("a condition needs exactly one of field, stage, score, clicked, opened, event")
        operators = [op for op in (self.equals, self.in_, self.exists) if op is not None]
        if self.field and len(operators) != 1:
            raise ValueError("a field condition needs exactly one of equals, in, exists")
        if not self.field and operators:
            raise ValueError("equals, in and exists only go with field")
        return self


class StepVariant(_Strict):
    """Another version of a step's email (an A/B test of a drip: an even, fixed split)."""

    subject: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    # Unless given, the step's own template (a test of subject lines).
    template: Optional[Annotated[str, StringConstraints(min_length=1)]] = None


class Step(_Strict):
    id: Identifier
    # One of three timings: ``delay`` (after the previous step or the enrolment), or relative to
    # the sequence's event: ``before_start`` (a reminder) or ``after_end`` (a follow-up).
    delay: Duration = timedelta(0)
    before_start: Optional[Duration] = None
    after_end: Optional[Duration] = None
    # "previous": the delay counts from when the previous step went (or was skipped);
    # "enrolment": from when the lead entered the sequence.
    after: Literal["previous", "enrolment"] = "previous"
    subject: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    template: Annotated[str, StringConstraints(min_length=1)]
    # "immediate" steps (deliveries, welcomes) go out as soon as due, at any hour and past the
    # frequency cap; "scheduled" steps wait for the send window and the cap.
    timing: Literal["scheduled", "immediate"] = "scheduled"
    only_if: list[Condition] = Field(default_factory=list)
    skip_if: list[Condition] = Field(default_factory=list)
    # Variants b, c, d of the email (the step's own subject and template are variant a): each
    # lead gets one, fixed by a hash of the lead, the sequence and the step, split evenly; the
    # sequence report counts each. The message stays "<sequence>.<step>" for conditions.
    variants: list[StepVariant] = Field(default_factory=list, max_length=3)
    # Attach the sequence's event as a calendar invite (an .ics, METHOD:REQUEST).
    attach_invite: bool = False

    @model_validator(mode="after")
    def _one_timing(self) -> Step:
        timings = [name for name in ("before_start", "after_end") if getattr(self, name) is not None]
        if self.delay != timedelta(0):  # "delay: 0s" is no timing of its own (a dump writes it)
            timings.insert(0, "delay")
        if len(timings) > 1:
            raise ValueError(f"give one timing, not {' and '.join(timings)}")
        if self.before_start is not None and self.before_start <= timedelta(0):
            raise ValueError("before_start must be more than 0s (a reminder at or after the start: use after_end)")
        if self.after == "enrolment" and timings and timings[0] != "delay":
            raise ValueError("'after' goes with delay only: before_start and after_end count from the event")
        return self


DEFAULT_EXIT_STAGES: tuple[Stage, ...] = ("sql", "opportunity", "customer", "disqualified")


class SequenceEntry(_Strict):
    """Events that enrol a lead (forms enrol through their own ``sequence``)."""

    events: list[Identifier] = Field(default_factory=list)


class SequenceExit(_Strict):
    """What takes a lead out early (unsubscribes and suppressions always do)."""

    stages: list[Stage] = Field(default_factory=lambda: list(DEFAULT_EXIT_STAGES))
    events: list[Identifier] = Field(default_factory=list)


class Sequence(_Strict):
    steps: list[Step] = Field(min_length=1)
    # The event its before_start / after_end steps and invites are about.
    event: Optional[Identifier] = None
    # The topic its emails are about: a lead who turns it off leaves the sequence.
    topic: Optional[Identifier] = None
    # Factories, not instances: an instance here would build its model's validator at import.
    entry: SequenceEntry = Field(default_factory=SequenceEntry)
    exit: SequenceExit = Field(default_factory=SequenceExit)

    @field_validator("steps")
    @classmethod
    def _unique_step_ids(cls, steps: list[Step]) -> list[Step]:
        seen: set[str] = set()
        for step in steps:
            if step.id in seen:
                raise ValueError(f"step id {step.id!r} is used twice")
            seen.add(step.id)
        return steps


class SendWindow(_Strict):
    """When scheduled steps may go out, in the lead's time zone (else the campaign's)."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS[:5]), min_length=1)
    start: time = time(9, 0)
    end: time = time(17, 0)

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.start >= self.end:
            raise ValueError("start must be before end (windows do not span midnight)")
        return self


class FrequencyCap(_Strict):
    """At most ``max_emails`` scheduled emails per lead in any rolling ``per``."""

    max_emails: int = Field(ge=1)
    per: Duration


class Confirmation(_Strict):
    """The double opt-in email, and how long an unconfirmed lead is kept."""

    subject: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    template: Annotated[str, StringConstraints(min_length=1)]
    expires_after: Duration = timedelta(days=7)


class Sender(_Strict):
    from_address: str
    from_name: str = ""
    reply_to: Optional[str] = None
    # The mailto: target of List-Unsubscribe (RFC 2369); mail to it is handled outside Trellis.
    unsubscribe_mailbox: str
    postal_address: Annotated[str, StringConstraints(min_length=1)]

    @field_validator("from_address", "reply_to", "unsubscribe_mailbox")
    @classmethod
    def _valid_address(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else normalise_email(value).address


class BotDefence(_Strict):
    honeypot_field: Identifier = "website"
    min_fill_seconds: float = Field(default=3.0, ge=0, le=600)


class RateLimits(_Strict):
    """How many ``POST /events`` one lead (whatever its token) and one source address may send
    per minute; beyond them the answer is 429 and nothing is stored."""

    events_per_lead_per_minute: int = Field(default=30, ge=1, le=10_000)
    events_per_address_per_minute: int = Field(default=120, ge=1, le=100_000)


class EngagementRules(_Strict):
    """How a person's opens and clicks are told from machines' (``chalicelib.engagement``)."""

    # A click sooner than this after SES accepted the message is a machine's: nobody reads that fast.
    # 0 turns the rule off. Strict: ``true`` is no number of seconds.
    min_seconds_to_click: float = Field(default=10.0, ge=0, le=3600, strict=True, allow_inf_nan=False)
    # More than ``burst_share`` of a message's links hit within ``burst_seconds``: a scanner's sweep.
    burst_seconds: float = Field(default=5.0, ge=0, le=600, strict=True, allow_inf_nan=False)
    burst_share: float = Field(default=0.5, ge=0, lt=1, strict=True, allow_inf_nan=False)


# Every event type is capped, also where the campaign file says nothing: a rule without caps
# would let one repeated event carry a lead to SQL.
DEFAULT_EVENT_MAX_PER_DAY = 5
DEFAULT_EVENT_MAX_TOTAL = 20


class EventRule(_Strict):
    """Points for one kind of behavioural event; the first rule of a type whose ``url`` matches wins."""

    points: float = Field(ge=-1000, le=1000, allow_inf_nan=False)
    url: Optional[str] = None  # a glob (fnmatch) on the event's URL, e.g. "*/pricing*"
    max_per_day: int = Field(default=DEFAULT_EVENT_MAX_PER_DAY, ge=1, le=1000)
    max_total: int = Field(default=DEFAULT_EVENT_MAX_TOTAL, ge=1, le=100_000)


class FitRule(_Strict):
    """Points for who the lead is. Matches case-insensitively; ``contains_any`` finds whole words."""

    field: str
    points: float
    equals: Optional[str] = None
    in_: Optional[list[str]] = Field(default=None, alias="in")
    contains_any: Optional[list[str]] = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_test(self) -> FitRule:
        if sum(x is not None for x in (self.equals, self.in_, self.contains_any)) != 1:
            raise ValueError("a fit rule needs exactly one of equals, in, contains_any")
        return self


class Scoring(_Strict):
    mql_threshold: int = Field(gt=0)
    sql_threshold: int = Field(gt=0)
    # Engagement points halve every half_life; fit points do not decay.
    half_life: Duration = timedelta(days=30)
    events: dict[Identifier, list[EventRule]] = Field(default_factory=dict)
    fit: list[FitRule] = Field(default_factory=list)
    # Events that make a lead sales-ready whatever its score (someone asking to talk to sales).
    hand_raisers: list[Identifier] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ordered(self) -> Scoring:
        if self.sql_threshold <= self.mql_threshold:
            raise ValueError("sql_threshold must be above mql_threshold")
        if self.half_life < timedelta(hours=1):
            raise ValueError("half_life must be at least 1h")
        for event_type, rules in self.events.items():
            if event_type in self.hand_raisers:
                continue
            for index, rule in enumerate(rules):
                if rule.points * rule.max_total >= self.sql_threshold:
                    raise ValueError(
                        f"events.{event_type}[{index}]: {rule.max_total} x {rule.points:g} points reaches "
                        f"sql_threshold {self.sql_threshold} by one event repeated; lower max_total "
                        f"(default {DEFAULT_EVENT_MAX_TOTAL}) or name the event in hand_raisers"
                    )
        return self


class SalesRep(_Strict):
    name: Annotated[str, StringConstraints(min_length=1)]
    email: str

    @field_validator("email")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        return normalise_email(value).address


class Sales(_Strict):
    team: list[SalesRep] = Field(min_length=1)
    # Optional HTTP POST for each new SQL (Slack, a CRM), signed with TRELLIS_WEBHOOK_SECRET.
    webhook_url: Optional[HttpUrl] = None
    # Leads sales sends back to nurture ("recycled") are enrolled here, when set.
    recycle_sequence: Optional[Identifier] = None


_Channel = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
# Money to the cent: also keeps magnitudes DynamoDB cannot store (below 1e-130) out.
Money = Annotated[
    float, Field(strict=True, ge=0, le=1_000_000_000, allow_inf_nan=False), AfterValidator(lambda v: round(v, 2))
]


class AdSpend(_Strict):
    """Money spent on one channel so far (its ``utm_source``/``utm_medium``), for cost per lead."""

    utm_source: _Channel
    utm_medium: _Channel
    amount: Money


class BroadcastSettings(_Strict):
    # Whether a broadcast is held to the frequency cap (a recipient at the cap is skipped) and
    # counts toward it for the drips after it.
    count_toward_frequency_cap: bool = False


class Campaign(_Strict):
    name: Identifier
    title: str = ""
    timezone: str = "UTC"
    sender: Sender
    bot_defence: BotDefence = Field(default_factory=BotDefence)  # a factory: see Sequence.entry
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    engagement: EngagementRules = Field(default_factory=EngagementRules)
    magnets: dict[Identifier, Magnet] = Field(default_factory=dict)
    topics: dict[Identifier, Topic] = Field(default_factory=dict)
    events: dict[Identifier, CalendarEvent] = Field(default_factory=dict)
    segments: dict[Identifier, Segment] = Field(default_factory=dict)
    forms: dict[Identifier, Form] = Field(min_length=1)
    sequences: dict[Identifier, Sequence] = Field(default_factory=dict)
    send_window: SendWindow = Field(default_factory=SendWindow)
    frequency_cap: Optional[FrequencyCap] = None
    broadcasts: BroadcastSettings = Field(default_factory=BroadcastSettings)
    confirmation: Optional[Confirmation] = None
    scoring: Scoring
    sales: Sales
    # ISO 4217 code the ad spend is in; required once there is any.
    currency: Optional[Currency] = None
    ad_spend: list[AdSpend] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _check_timezone(value)

    @model_validator(mode="after")
    def _references_resolve(self) -> Campaign:
        problems = []
        for form_id, form in self.forms.items():
            if form.magnet is not None and form.magnet not in self.magnets:
                problems.append(f"forms.{form_id}.magnet: no magnet named {form.magnet!r}")
            if form.sequence is not None and form.sequence not in self.sequences:
                problems.append(f"forms.{form_id}.sequence: no sequence named {form.sequence!r}")
            if form.custom_fields.keys() & {self.bot_defence.honeypot_field}:
                problems.append(f"forms.{form_id}.custom_fields: clashes with the honeypot field")
            if form.double_opt_in and self.confirmation is None:
                problems.append(f"forms.{form_id}.double_opt_in: the campaign needs a 'confirmation' email")
            for topic in form.topics:
                if topic not in self.topics:
                    problems.append(f"forms.{form_id}.topics: no topic named {topic!r}")
            if form.event is not None:
                problems += _event_form_problems(self, form_id, form)
        now = datetime.now(UTC)
        for event_id, event in self.events.items():
            problems += event_problems(event_id, event, now)
        for segment_id, segment in self.segments.items():
            problems += [f"segments.{segment_id}.{p}" for p in segment_problems(segment, self)]
        if self.ad_spend and self.currency is None:
            problems.append("currency: needed for ad_spend (an ISO 4217 code such as EUR)")
        channels = [(spend.utm_source, spend.utm_medium) for spend in self.ad_spend]
        if len(set(channels)) != len(channels):
            problems.append("ad_spend: each utm_source/utm_medium pair once")
        if self.sales.recycle_sequence is not None and self.sales.recycle_sequence not in self.sequences:
            problems.append(f"sales.recycle_sequence: no sequence named {self.sales.recycle_sequence!r}")
        for sequence_id, sequence in self.sequences.items():
            if sequence.topic is not None and sequence.topic not in self.topics:
                problems.append(f"sequences.{sequence_id}.topic: no topic named {sequence.topic!r}")
            problems += _event_sequence_problems(self, sequence_id, sequence)
            step_ids = {step.id for step in sequence.steps}
            for step in sequence.steps:
                for condition in (*step.only_if, *step.skip_if):
                    for ref in (condition.clicked, condition.opened):
                        if ref is None:
                            continue
                        seq, _, ref_step = ref.rpartition(".")
                        known = step_ids if not seq else {s.id for s in getattr(self.sequences.get(seq), "steps", [])}
                        if ref_step not in known:
                            problems.append(
                                f"sequences.{sequence_id}.steps.{step.id}: no step {ref!r} to have clicked or opened"
                            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _event_form_problems(campaign: Campaign, form_id: str, form: Form) -> list[str]:
    if form.event not in campaign.events:
        return [f"forms.{form_id}.event: no event named {form.event!r}"]
    sequence = campaign.sequences.get(form.sequence or "")
    if sequence is not None and sequence.event not in (None, form.event):
        return [f"forms.{form_id}.sequence: its event is {sequence.event!r}, not this form's {form.event!r}"]
    return []


def _event_sequence_problems(campaign: Campaign, sequence_id: str, sequence: Sequence) -> list[str]:
    """The sequence's event exists, and its timed steps fall in time order, before the start or
    after the end as they say."""
    place = f"sequences.{sequence_id}"
    timed = [s for s in sequence.steps if s.before_start is not None or s.after_end is not None or s.attach_invite]
    if sequence.event is None:
        return [
            f"{place}.steps.{step.id}: needs the sequence's 'event' (before_start, after_end, attach_invite)"
            for step in timed
        ]
    event = campaign.events.get(sequence.event)
    if event is None:
        return [f"{place}.event: no event named {sequence.event!r}"]
    problems = []
    offsets: list[tuple[timedelta, str]] = []  # from the start
    for step in sequence.steps:
        if step.before_start is not None:
            if step.before_start > timedelta(days=60):
                problems.append(f"{place}.steps.{step.id}.before_start: more than 60d before the event")
            offsets.append((-step.before_start, step.id))
        elif step.after_end is not None:
            offsets.append((event.duration + step.after_end, step.id))
    for (earlier, earlier_id), (later, later_id) in itertools.pairwise(offsets):
        if later < earlier:
            problems.append(f"{place}.steps.{later_id}: falls before {earlier_id}; timed steps go in time order")
    return problems


# ---------------------------------------------------------------------------------------------
# Form submissions

_Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_no_control_characters)
]
_Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(_no_control_characters)
]
_Phone = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9][0-9 ()./-]{3,39}$"),
]
_Email = Annotated[NormalisedEmail, BeforeValidator(email_text)]

_STANDARD_TYPES: dict[str, Any] = {
    "email": _Email,
    "first_name": _Name,
    "last_name": _Name,
    "phone": _Phone,
    "company": _Text,
    "job_title": _Text,
}


class Tracking(BaseModel):
    """Attribution fields any form accepts."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    utm_source: Optional[_Text] = None
    utm_medium: Optional[_Text] = None
    utm_campaign: Optional[_Text] = None
    utm_term: Optional[_Text] = None
    utm_content: Optional[_Text] = None
    referrer: Optional[HttpUrl] = None
    page_url: Optional[HttpUrl] = None
    # The visitor's IANA time zone (the landing-page script sends it): send windows use it.
    timezone: Optional[Annotated[str, StringConstraints(max_length=64)]] = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else _check_timezone(value)

    def attribution(self) -> dict[str, str]:
        return self.model_dump(exclude={"timezone"}, exclude_none=True)


def _storable(value: float) -> float:
    if abs(value) >= 1e15:
        raise ValueError("must be below 1e15 in magnitude")
    return round(value, 6)  # DynamoDB stores 38 digits and nothing below 1e-130


def _bounded_before_float(value: Any) -> Any:
    # Checked before float(): a 4,000-digit integer overflows the conversion, a long string of
    # digits costs time to parse, and neither is a number a form field means.
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        raise ValueError("must be below 1e15 in magnitude")
    if isinstance(value, str) and len(value.strip()) > 32:
        raise ValueError("must be a number of at most 32 characters")
    return value


StorableNumber = Annotated[
    float, BeforeValidator(_bounded_before_float), Field(allow_inf_nan=False), AfterValidator(_storable)
]


def _custom_type(spec: CustomField | campaign_types.CustomField) -> Any:
    if spec.type == "number":
        return StorableNumber
    if spec.type == "checkbox":
        return bool
    if spec.type == "choice":
        assert spec.choices is not None
        return Literal[tuple(spec.choices)]
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=spec.max_length),
        AfterValidator(_no_control_characters),
    ]


def submission_model(form: Form | campaign_types.Form) -> type[BaseModel]:
    """Build the pydantic model of one form's fields: what it declares, and nothing else.

    Undeclared fields are ignored (never stored): landing-page builders add submit buttons and
    tracking fields of their own, and rejecting a real person's signup for those would lose a lead.
    """
    definitions: dict[str, Any] = {}
    for standard_name, requirement in form.fields.items():
        field_type = _STANDARD_TYPES[standard_name]
        definitions[standard_name] = (field_type, ...) if requirement == "required" else (Optional[field_type], None)
    for name, spec in form.custom_fields.items():
        field_type = _custom_type(spec)
        definitions[name] = (field_type, ...) if spec.required else (Optional[field_type], None)
    model: type[BaseModel] = create_model(
        "FormSubmission",
        __config__=ConfigDict(extra="ignore", frozen=True),
        **definitions,
    )
    return model


class BehaviourEventIn(BaseModel):
    """``POST /events``: something a known lead did on a landing page."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    token: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=4096),
        Field(description="the `lead_token` a form submission answered with"),
    ]
    type: Annotated[Identifier, Field(description="an event type the campaign scores, enrols or exits on")]
    url: Optional[HttpUrl] = None


# Scores are kept to two decimals; finer bounds (1e-200) would not even fit a DynamoDB number.
Score = Annotated[float, Field(ge=-1000, le=1000, allow_inf_nan=False), AfterValidator(lambda v: round(v, 2))]


class LeadListParams(BaseModel):
    """``GET /admin/leads`` query parameters."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    stage: Optional[Stage] = Field(default=None, description="only leads in this stage (highest score first)")
    min_score: Optional[Score] = Field(default=None, description="only leads scoring at least this")
    max_score: Optional[Score] = Field(default=None, description="only leads scoring at most this")
    form: Optional[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default=None, description="only leads first captured through this form"
    )
    utm_source: Optional[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default=None, description="only leads whose first touch had this utm_source"
    )
    created_from: Optional[datetime] = Field(
        default=None, description="only leads created at or after this moment (with a time zone)"
    )
    created_to: Optional[datetime] = Field(
        default=None, description="only leads created at or before this moment (with a time zone)"
    )
    limit: int = Field(default=50, ge=1, le=200, description="page size")
    cursor: Optional[Annotated[str, Field(max_length=2000)]] = Field(
        default=None,
        description="the `next_cursor` of the previous page (valid for one day, with the same filters)",
    )

    @field_validator("created_from", "created_to")
    @classmethod
    def _a_utc_moment(cls, moment: Optional[datetime]) -> Optional[datetime]:
        # Keys hold UTC; a moment that has none (year 1 at +14:00 is before 0001-01-01 UTC)
        # would overflow in the conversion, and in any comparison with another moment.
        if moment is None:
            return None
        offset = moment.utcoffset()
        if offset is None:
            raise ValueError("needs a time zone, e.g. 2026-11-23T00:00:00Z")
        try:
            moment.replace(tzinfo=None) - offset
        except OverflowError:
            raise ValueError("is outside the dates UTC can hold (0001-01-01 to 9999-12-31 UTC)") from None
        return moment

    @model_validator(mode="after")
    def _ranges_in_order(self) -> Self:
        if self.min_score is not None and self.max_score is not None and self.min_score > self.max_score:
            raise ValueError("min_score must not be above max_score")
        if self.created_from and self.created_to and self.created_from > self.created_to:
            raise ValueError("created_from must not be after created_to")
        return self


class SpendUpdate(AdSpend):
    """``PUT /admin/reports/spend``: the spend to date on one channel (replaces the file's)."""


class StageChange(BaseModel):
    """``PATCH /admin/leads/{lead_id}``: sales feedback on a lead (which stages it may set is the
    feedback's rule: ``vocabulary.FEEDBACK_STAGES``)."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    stage: Annotated[str, Field(json_schema_extra={"enum": list(FEEDBACK_STAGES)}, description="the new stage")]
    note: Optional[Annotated[str, Field(max_length=500)]] = None


class LeadExportParams(LeadListParams):
    """``GET /admin/export/leads.csv``: the list's filters, in bigger pages."""

    limit: int = Field(default=1000, ge=1, le=5000, description="page size")


# ---------------------------------------------------------------------------------------------
# Broadcasts


class BroadcastVariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    template: Annotated[str, StringConstraints(pattern=r"^email/[A-Za-z0-9_-]+\.html$")]


class BroadcastIn(BaseModel):
    """``POST /admin/broadcasts``: one email to a segment who wants its topic."""

    model_config = ConfigDict(extra="forbid")

    name: _Text
    topic: Identifier
    segment: Annotated[
        Union[Annotated[Identifier, Tag("name")], Annotated[Segment, Tag("rules")]],
        Discriminator(lambda value: "rules" if isinstance(value, (dict, Segment)) else "name"),
        Field(description="a segment of the campaign file by name, or inline rules"),
    ]
    variants: list[BroadcastVariantIn] = Field(min_length=1, max_length=4)
    send_at: Optional[AwareDatetime] = Field(default=None, description="absent: now")
    local_time: Optional[Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]] = Field(
        default=None, description='"10:00": each lead gets it at that hour in its own time zone, from send_at on'
    )
    # A/B: this share of the segment gets the variants first, split evenly; after winner_after
    # the variant with the best rate of people's clicks (or opens) goes to the rest.
    test_fraction: Optional[float] = Field(default=None, gt=0, lt=1)
    winner_after: Optional[Duration] = None
    winner_metric: Literal["human_clicks", "human_opens"] = "human_clicks"


def ab_test_problems(body: BroadcastIn) -> dict[str, str]:
    """What is wrong with a broadcast's A/B settings, by field."""
    problems = {}
    if body.test_fraction is not None:
        if len(body.variants) < 2:
            problems["test_fraction"] = "an A/B test needs two variants or more"
        if body.winner_after is None:
            problems["winner_after"] = "an A/B test needs it (e.g. 4h)"
    elif body.winner_after is not None:
        problems["winner_after"] = "only with a test_fraction"
    if body.winner_after is not None and not timedelta(minutes=10) <= body.winner_after <= timedelta(days=7):
        problems["winner_after"] = "between 10m and 7d"
    return problems


class BroadcastTestIn(BaseModel):
    """``POST /admin/broadcasts/{id}/test``: where the test copies go."""

    model_config = ConfigDict(extra="forbid")

    to: Annotated[NormalisedEmail, BeforeValidator(email_text)]


# ---------------------------------------------------------------------------------------------
# Attendance uploads (``POST /admin/events/{id}/attendance``): rows as webinar platforms export them

MAX_ATTENDANCE_ROWS = 10_000


class AttendanceRowIn(BaseModel):
    """One person's attendance. Other columns of a platform's export are ignored."""

    model_config = ConfigDict(extra="ignore")

    email: Annotated[NormalisedEmail, BeforeValidator(email_text)]
    # true/false, yes/no, 1/0, on/off (as exports write them)
    attended: bool
    minutes: Optional[int] = Field(default=None, ge=0, le=100_000)

    @field_validator("minutes", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class AttendanceIn(BaseModel):
    """The JSON form of an upload; ``text/csv`` with the header ``email,attended,minutes`` is the other."""

    model_config = ConfigDict(extra="forbid")

    attendance: list[AttendanceRowIn] = Field(max_length=MAX_ATTENDANCE_ROWS)
