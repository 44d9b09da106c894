"""Every JSON answer of the API, as pydantic models: the routes return them, the dashboard reads
them and ``chalicelib.openapi`` documents them (``model_json_schema``), so a shape is written once.

Imported on first use (a route answering JSON, the document), never on a cold start's import.
A field whose default is None is *absent* when None (``download_url``, an error's ``message``);
a field without a default is always there, ``null`` included (``next_cursor``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.engagement import HUMAN, MACHINE
from chalicelib.vocabulary import ConsentStatus, Stage

LeadId = Annotated[str, Field(pattern="^[0-9a-f]{32}$", description="derived from the normalised email")]
Timestamp = Annotated[
    str, Field(json_schema_extra={"format": "date-time"}, description="UTC, e.g. 2026-11-23T09:30:00.000000Z")
]
Rate = Optional[float]
Currency = Annotated[Optional[str], Field(pattern="^[A-Z]{3}$")]


def _is_none(value: object) -> bool:
    return value is None


def absent(description: str = "") -> Any:
    """A field left out of the answer when it has no value."""
    return Field(default=None, exclude_if=_is_none, description=description or None)


class Body(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        defer_build=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    def to_json(self) -> str:
        return self.model_dump_json()


# -- everyone's --------------------------------------------------------------------------------


class Error(Body):
    error: str = Field(description="machine-readable, e.g. validation_error, not_found")
    fields: Optional[dict[str, str]] = absent("each rejected field (or `body`, `query`) and why")
    message: Optional[str] = absent()
    accepted: Optional[list[str]] = absent()
    limit_bytes: Optional[int] = absent()
    retry_after: Optional[int] = absent()


class Health(Body):
    status: Literal["ok"] = "ok"


class FormAccepted(Body):
    lead_id: LeadId
    lead_token: str = Field(description="identifies the lead to POST /events")
    download_url: Optional[str] = absent("the lead magnet (magnet forms only)")


class EventAccepted(Body):
    accepted: Literal[True] = True


class ChaliceError(Body):
    """Chalice's own answer."""

    Code: str
    Message: str


class GatewayError(Body):
    """API Gateway's own answer, e.g. a missing token."""

    message: str


# -- leads ---------------------------------------------------------------------------------------


class Touch(Body):
    at: Timestamp
    form_id: str
    magnet: Optional[str] = absent()
    utm_source: Optional[str] = absent()
    utm_medium: Optional[str] = absent()
    utm_campaign: Optional[str] = absent()
    utm_term: Optional[str] = absent()
    utm_content: Optional[str] = absent()
    referrer: Optional[str] = absent()
    page_url: Optional[str] = absent()


class LeadSummary(Body):
    lead_id: LeadId
    email: str
    stage: Stage
    score: int
    created_at: Timestamp
    form: str = Field(description="first-touch form")
    utm_source: Optional[str]
    owner: Optional[str] = Field(description="the assigned sales rep's name")
    unsubscribed: bool


class LeadList(Body):
    leads: list[LeadSummary]
    next_cursor: Optional[str]


class Owner(Body):
    name: str
    email: str


class LeadProfile(Body):
    lead_id: LeadId
    email: str
    stage: Stage
    score: int
    created_at: Timestamp
    form: str = Field(description="first-touch form")
    utm_source: Optional[str]
    owner: Optional[Owner]
    unsubscribed: bool
    updated_at: Timestamp
    profile: dict[str, str]
    custom: dict[str, Any]
    timezone: Optional[str]
    unsubscribed_at: Optional[Timestamp]
    stage_reason: Optional[str]


class Consent(Body):
    status: ConsentStatus
    version: str
    text: str
    form_id: str
    at: Timestamp


class Attribution(Body):
    first_touch: Touch
    last_touch: Touch


class Score(Body):
    total: int
    engagement: float
    fit: float
    events_counted: int
    reset_at: Optional[Timestamp]


class Engaged(Body):
    opened: int = 0
    clicked: int = 0


class EmailEngagement(Body):
    """The timeline's opens and clicks, a person's and a machine's apart (``engagement.HUMAN``, ``MACHINE``)."""

    human: Engaged
    machine: Engaged


class EnrolmentState(Body):
    sequence: str
    status: str
    step_index: int
    due_at: Optional[Timestamp]
    exit_reason: Optional[str]


class EventEntry(Body):
    at: Timestamp
    kind: Literal["event"] = "event"
    type: str
    data: dict[str, Any]
    verdict: Optional[str] = Field(
        default=None,
        exclude_if=_is_none,
        json_schema_extra={"enum": [HUMAN, MACHINE]},
        description="opens and clicks only: a person's or a machine's; only a person's count for score, stage, "
        "handoff and nurture",
    )
    reasons: Optional[list[str]] = absent(
        "opens and clicks only: why a machine's (empty for a person's), each `<reason>` or `<reason>:<detail>`"
    )


class MessageEntry(Body):
    at: Timestamp
    kind: Literal["message"] = "message"
    message_id: str
    subject: str


TimelineEntry = Annotated[Union[EventEntry, MessageEntry], Field(discriminator="kind")]


class LeadDetail(Body):
    lead: LeadProfile
    consent: Optional[Consent]
    attribution: Attribution
    score: Score
    email_engagement: EmailEngagement
    enrolments: list[EnrolmentState]
    timeline: list[TimelineEntry] = Field(description="events and emails sent, newest first")


class StageChanged(Body):
    lead_id: LeadId
    stage: Stage
    stage_reason: Optional[str]
    score: int


class LeadExport(Body):
    """Everything stored about the person (GDPR art. 15)."""

    lead_id: LeadId
    exported_at: Timestamp
    profile: dict[str, Any] = Field(description="the lead's stored profile")
    events: list[dict[str, Any]]
    enrolments: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    handoffs: list[dict[str, Any]]
    report_markers: list[str] = Field(description="which report counters counted this lead")
    suppression: Optional[dict[str, Any]]
    registrations: list[dict[str, Any]] = Field(
        default_factory=list, description="the lead's registrations for the campaign's events"
    )


class LeadErased(Body):
    lead_id: LeadId
    erased: Literal[True] = True
    items_deleted: int
    suppressed: Literal[True] = True


# -- reports (built by chalicelib.reports) ------------------------------------------------------


class FunnelCounts(Body):
    """Leads that reached each funnel stage (each counted once): ``vocabulary.FUNNEL_STAGES``."""

    captured: int
    lead: int
    mql: int
    sql: int
    opportunity: int
    customer: int


class OffFunnelCounts(Body):
    recycled: int
    disqualified: int


class Conversion(Body):
    low: str = Field(alias="from")
    high: str = Field(alias="to")
    rate: Rate


class Speed(Body):
    leads: int
    median_seconds: Optional[float]


class Velocity(Body):
    mql: Speed = Field(description="capture to mql")
    sql: Speed = Field(description="capture to sql")


class FunnelRow(Body):
    reached: FunnelCounts
    off_funnel: OffFunnelCounts
    conversion: list[Conversion]
    velocity: Velocity
    spend: Optional[float]
    cost_per_lead: Optional[float]
    cost_per_sql: Optional[float]


class ChannelRow(FunnelRow):
    utm_source: str
    utm_medium: str


class CampaignRow(FunnelRow):
    utm_campaign: str


class BotsBlocked(Body):
    total: int
    by_form: dict[str, dict[str, int]] = Field(description="form id to blocking reason to count")


class FunnelReport(Body):
    campaign: str
    currency: Currency
    stages: list[str]
    total: FunnelRow
    channels: list[ChannelRow]
    utm_campaigns: list[CampaignRow]
    bots_blocked: BotsBlocked


class EmailRates(Body):
    """Relative to emails sent (as SES computes them); opens and clicks are people's."""

    delivered: Rate
    opened: Rate
    clicked: Rate
    unsubscribed: Rate
    bounced: Rate
    complained: Rate


class EmailRow(Body):
    sent: int
    delivered: int
    opened: int = Field(description="leads a person opened the email of (each once)")
    clicked: int = Field(description="leads a person clicked in the email of (each once)")
    unsubscribed: int
    bounced: int
    complained: int
    machine_opened: int = Field(
        description="leads whose email a machine opened (Apple's proxy, a scanner; each once): not in the rates"
    )
    machine_clicked: int = Field(
        description="leads whose email a machine clicked (a link scanner; each once): not in the rates; a lead "
        "whose email a scanner and then its person clicked is counted in both"
    )
    rates: EmailRates


class StepVariantRow(EmailRow):
    variant_id: str = Field(description="`a` is the step's own email; `b`-`d` its variants")
    subject: str


class StepRow(EmailRow):
    sequence_id: str
    step_id: str
    subject: str
    variants: list[StepVariantRow] = Field(
        default_factory=list,
        description="a step with variants (an even, fixed split by lead): each variant's counts",
    )


class Deliverability(Body):
    """The account's rates, as SES reviews them: every email sent, the broadcasts' too."""

    bounce_rate: Rate
    complaint_rate: Rate
    bounce_limit: float = Field(description="SES reviews an account whose bounce rate passes it")
    complaint_limit: float = Field(description="SES reviews an account whose complaint rate passes it")
    warnings: list[str]


class Exits(Body):
    total: dict[str, int] = Field(description="reason to count")
    by_sequence: dict[str, dict[str, int]] = Field(
        description="sequence id to exit reason (e.g. `stage:sql`, `undeliverable`) to count"
    )


class SequenceReport(Body):
    steps: list[StepRow]
    totals: EmailRow
    deliverability: Deliverability
    exits: Exits
    bots_blocked: int


class SpendSet(Body):
    utm_source: str
    utm_medium: str
    amount: float
    currency: Currency


class SegmentCount(Body):
    segment: str
    count: int = Field(description="leads in the segment now")
    read: int = Field(description="profiles read to count them: what the index narrowed the segment to")
    as_of: Timestamp


BroadcastState = Literal["scheduled", "sending", "testing", "sent", "cancelled"]


class VariantReport(Body):
    variant_id: str
    subject: str
    template: str
    sent: int
    delivered: int
    human_opens: int = Field(description="recipients a person opened it for (each once)")
    human_clicks: int = Field(description="recipients a person clicked in it for (each once)")
    machine_opens: int = Field(description="recipients whose copy a machine opened (Apple's proxy, a scanner)")
    machine_clicks: int = Field(description="recipients whose copy a machine clicked (a link scanner)")
    unsubscribes: int
    bounces: int
    complaints: int


class Broadcast(Body):
    broadcast_id: str
    name: str
    topic: str
    segment: dict[str, Any] = Field(description='{"name": <campaign segment>} or {"rules": {...}}')
    status: BroadcastState
    send_at: Timestamp
    created_at: Timestamp
    cancelled_at: Optional[Timestamp] = absent()
    recipients: int = Field(description="leads of the segment enrolled so far")
    sent: int
    skipped: dict[str, int] = Field(
        description="recipients who got nothing, by reason: suppressed:<why>, no_consent, topic_off, paused, "
        "frequency_cap, unsubscribed, cancelled, lead_gone"
    )
    variants: list[VariantReport]
    test_fraction: Optional[float] = absent("A/B: the share of the segment that got the variants first")
    winner_after: Optional[int] = absent("A/B: seconds after send_at when the winner is chosen")
    winner_metric: Optional[str] = absent("A/B: human_clicks or human_opens")
    winner: Optional[str] = absent("the variant chosen for the rest of the segment")
    winner_reason: Optional[str] = absent("why it won: each variant's rate")


class BroadcastList(Body):
    broadcasts: list[Broadcast]


class BroadcastTestSent(Body):
    to: str
    subjects: list[str] = Field(description="one copy per variant, each marked [TEST]")
    counted: bool = Field(description="always false: a test copy is counted nowhere")


class AttendanceProblem(Body):
    row: int = Field(description="1 = the first row after the CSV header, or the list's first item")
    field: str
    reason: str


class AttendanceResult(Body):
    """What an attendance upload did: each registrant's attendance is noted once."""

    event_id: str
    rows: int
    attended: int = Field(description="registrants newly noted as attended (event_attended)")
    missed: int = Field(description="registrants newly noted as missed (event_missed)")
    unchanged: int = Field(description="rows for registrants noted before: a re-upload changes nothing")
    unknown: list[str] = Field(description="addresses of no lead: reported, never created")
    not_registered: list[str] = Field(description="addresses of leads who did not register for this event")
    invalid: list[AttendanceProblem] = Field(description="rows not applied, with the field and the reason")
