"""Trellis's domain words, named once: stages (in lifecycle order, from which every stage set
derives), statuses, consent, exit and suppression reasons, event types.

Each is a ``StrEnum``: a member *is* its string (``Stage.SQL == "sql"``, ``json.dumps`` and
boto3 write ``"sql"``), so stored items, the API and the campaign file keep the words they had.
Only the standard library here: every function imports this on its cold start.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

# -- lifecycle stages ---------------------------------------------------------------------------


class Stage(StrEnum):
    """Where a lead is. The members run in lifecycle order, then the two stages off it."""

    SUBSCRIBER = "subscriber"
    LEAD = "lead"
    MQL = "mql"
    SQL = "sql"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"
    RECYCLED = "recycled"  # sales sent it back to nurture
    DISQUALIFIED = "disqualified"  # sales ruled it out


# The path a lead walks, in order; the stages after it are where sales puts a lead off that path.
OFF_FUNNEL_STAGES: Final[tuple[Stage, ...]] = (Stage.RECYCLED, Stage.DISQUALIFIED)
LIFECYCLE: Final[tuple[Stage, ...]] = tuple(s for s in Stage if s not in OFF_FUNNEL_STAGES)

# What a form may make of a new lead.
CAPTURE_STAGES: Final[tuple[Stage, ...]] = LIFECYCLE[: LIFECYCLE.index(Stage.LEAD) + 1]
# Scoring moves a lead along the lifecycle up to SQL; from SQL on, and out of it, sales decides
# (scoring never moves a lead out of these, and by default they end a nurture sequence).
SALES_STAGES: Final[tuple[Stage, ...]] = (*LIFECYCLE[LIFECYCLE.index(Stage.SQL) :], Stage.DISQUALIFIED)
SCORED_STAGES: Final[tuple[Stage, ...]] = LIFECYCLE[: LIFECYCLE.index(Stage.SQL) + 1]
# What sales may set through the feedback endpoint: the stages after SQL, and back to nurture.
FEEDBACK_STAGES: Final[tuple[Stage, ...]] = (
    *LIFECYCLE[LIFECYCLE.index(Stage.SQL) + 1 :],
    Stage.DISQUALIFIED,
    Stage.RECYCLED,
)
# How far along the scored part of the lifecycle each stage is; a recycled lead starts over as a
# lead. Stages outside (sales's) rank 0, but scoring never moves those.
SCORING_RANKS: Final[dict[str, int]] = {
    **{stage: rank for rank, stage in enumerate(SCORED_STAGES)},
    Stage.RECYCLED: SCORED_STAGES.index(Stage.LEAD),
}


# -- the reports' funnel ------------------------------------------------------------------------

# Every lead's first funnel step, whichever stage its form gave it.
CAPTURED: Final = "captured"
# The funnel report's steps: captured, then the lifecycle from lead on.
FUNNEL_STAGES: Final[tuple[str, ...]] = (CAPTURED, *LIFECYCLE[LIFECYCLE.index(Stage.LEAD) :])
# The stages whose time-to-reach the reports measure (lead velocity).
VELOCITY_STAGES: Final[tuple[Stage, ...]] = (Stage.MQL, Stage.SQL)


def stages_reached(stage: str) -> tuple[str, ...]:
    """The report stages a lead has reached when it is in ``stage``: the funnel up to it."""
    if stage in OFF_FUNNEL_STAGES:
        return (stage,)
    if stage in FUNNEL_STAGES:
        return FUNNEL_STAGES[: FUNNEL_STAGES.index(stage) + 1]
    return (CAPTURED,)  # subscriber: captured, not yet a lead


# -- statuses -----------------------------------------------------------------------------------


class EnrolmentStatus(StrEnum):
    ACTIVE = "active"  # a step waits (due_at set) or is being sent
    AWAITING_CONFIRMATION = "awaiting_confirmation"  # double opt-in: starts when the lead confirms
    COMPLETED = "completed"
    EXITED = "exited"  # with an exit reason


class HandoffStatus(StrEnum):
    """A handoff's notifications: pending -> notifying (claimed) -> notified."""

    PENDING = "pending"
    NOTIFYING = "notifying"
    NOTIFIED = "notified"


class WebhookStatus(StrEnum):
    """A handoff's sales webhook (none at all when the campaign has no webhook)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class BroadcastStatus(StrEnum):
    """scheduled -> sending (its recipients enrolled) -> sent; testing while an A/B test runs;
    cancelled stops what has not gone."""

    SCHEDULED = "scheduled"
    SENDING = "sending"
    TESTING = "testing"
    SENT = "sent"
    CANCELLED = "cancelled"


# A broadcast's recipients are enrolments of its own sequence "_b-<broadcast id>" (campaign
# sequence ids cannot start with "_").
BROADCAST_SEQUENCE_PREFIX: Final = "_b-"


class ConsentStatus(StrEnum):
    GRANTED = "granted"
    PENDING_CONFIRMATION = "pending_confirmation"  # double opt-in: the confirm link not yet followed


# -- reasons ------------------------------------------------------------------------------------


class SuppressionReason(StrEnum):
    """Why an address may never be mailed again."""

    BOUNCED = "bounced"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    ERASED = "erased"


class ExitReason(StrEnum):
    """Why an enrolment exited; the sequence report counts exits by reason. Three more are
    written with a detail (``exit_reason``): see the prefixes below."""

    LEAD_GONE = "lead_gone"
    UNSUBSCRIBED = "unsubscribed"
    TOPIC_OFF = "topic_off"  # the lead turned the sequence's topic off (the preference centre)
    SEQUENCE_REMOVED = "sequence_removed"
    ALREADY_CONFIRMED = "already_confirmed"
    REJECTED = "rejected"  # SES refused the message for good (MessageRejected); the address is suppressed
    INVALID_ADDRESS = "invalid_address"  # no valid email can be built for the address; suppressed, with this reason
    UNDELIVERABLE = "undeliverable"  # errors up to the dispatcher's MAX_ATTEMPTS, or a send that cannot be recorded
    # A broadcast's recipients who get nothing, and why (its report's "skipped by reason").
    NO_CONSENT = "no_consent"
    PAUSED = "paused"
    FREQUENCY_CAP = "frequency_cap"
    CANCELLED = "cancelled"


# "<prefix>:<detail>" exit reasons: the suppression's reason, the exit stage, the goal event.
EXIT_SUPPRESSED: Final = "suppressed"
EXIT_STAGE: Final = "stage"
EXIT_GOAL: Final = "goal"


def exit_reason(prefix: str, detail: str) -> str:
    return f"{prefix}:{detail}"


class DeferReason(StrEnum):
    """Why a due step waits."""

    WINDOW = "window"  # outside the send window
    FREQUENCY_CAP = "frequency_cap"
    PAUSED = "paused"  # the lead paused all mail for a while (the preference centre)
    WINNER = "winner"  # the rest of an A/B test waits for its winner
    EVENT_MOVED = "event_moved"  # a reminder of an event moved later waits for its new time


# -- event types --------------------------------------------------------------------------------


class EventType(StrEnum):
    """The timeline's own event types. A campaign names others (landing-page events, goals);
    these it may not take as public events (``INTERNAL_EVENT_TYPES``)."""

    FORM_SUBMITTED = "form_submitted"
    SUBSCRIPTION_CONFIRMED = "subscription_confirmed"
    EMAIL_OPENED = "email_opened"
    EMAIL_CLICKED = "email_clicked"
    EMAIL_BOUNCED = "email_bounced"
    EMAIL_COMPLAINED = "email_complained"
    UNSUBSCRIBED = "unsubscribed"
    PREFERENCES_CHANGED = "preferences_changed"  # topics on/off or a pause, with the consent text's version
    STAGE_CHANGED = "stage_changed"
    # The campaign's events (webinars): registration, then attendance (docs/events.md).
    EVENT_REGISTERED = "event_registered"
    EVENT_JOINED = "event_joined"  # a person followed their join link
    EVENT_ATTENDED = "event_attended"
    EVENT_MISSED = "event_missed"


INTERNAL_EVENT_TYPES: Final[frozenset[str]] = frozenset(EventType)
# The one landing-page event every campaign takes, whatever else it names.
PAGE_VIEW: Final = "page_view"


# -- form fields and send days ------------------------------------------------------------------
# Here rather than in chalicelib.models (which re-exports them), so that code running a campaign
# needs no pydantic: the schema validates with them, the capture path reads them.

# Attribution fields any form accepts.
TRACKING_FIELDS: Final[tuple[str, ...]] = (
    "timezone",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "referrer",
    "page_url",
)
CONSENT_FIELD: Final = "consent"
RENDERED_AT_FIELD: Final = "rendered_at"
# A form may carry the lead token the page holds; one from the lead's own email proves the mailbox.
LEAD_TOKEN_FIELD: Final = "lead_token"

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# In date.weekday() order.
WEEKDAYS: Final[tuple[Weekday, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
