"""Pure nurture rules: which step is next for a lead, and when it may go. No AWS in here."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from collections.abc import Sequence as Sequence_
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Optional, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chalicelib.campaign_types import Campaign, Condition, FrequencyCap, SendWindow, Sequence, SequenceExit, Step
from chalicelib.entities import Enrolment, Lead, Suppression, iso, parse_iso
from chalicelib.nurture import schedule
from chalicelib.vocabulary import (
    EXIT_GOAL,
    EXIT_STAGE,
    EXIT_SUPPRESSED,
    WEEKDAYS,
    ConsentStatus,
    DeferReason,
    ExitReason,
    exit_reason,
)

# The double opt-in email travels as a one-step sequence of its own, so it gets every delivery
# guarantee the nurture steps get. Campaign sequence ids cannot start with "_".
CONFIRM_SEQUENCE = "_confirm"
CONFIRM_STEP = "confirm"

# Exit reasons the dispatcher gives (the rules below give theirs: lead_gone, stage:..., goal:...).
REJECTED = ExitReason.REJECTED
INVALID_ADDRESS = ExitReason.INVALID_ADDRESS
UNDELIVERABLE = ExitReason.UNDELIVERABLE


@dataclass(frozen=True)
class Send:
    step_index: int
    next_index: int
    next_due: Optional[datetime]  # None: this was the last step


@dataclass(frozen=True)
class Advance:
    """Steps were skipped by their conditions; nothing is sent now."""

    next_index: int
    next_due: Optional[datetime]  # None: no steps left, the enrolment is complete


@dataclass(frozen=True)
class Defer:
    until: datetime
    reason: str  # a DeferReason


@dataclass(frozen=True)
class Exit:
    reason: str


Decision = Union[Send, Advance, Defer, Exit]


def sequence_for(campaign: Campaign, sequence_id: str) -> Optional[Sequence]:
    if sequence_id == CONFIRM_SEQUENCE:
        if campaign.confirmation is None:
            return None
        step = Step(
            id=CONFIRM_STEP,
            delay=timedelta(0),
            subject=campaign.confirmation.subject,
            template=campaign.confirmation.template,
            timing="immediate",
        )
        return Sequence(steps=[step], exit=SequenceExit(stages=[]))
    notice = schedule.notice_of(sequence_id)
    if notice is not None:
        kind, event_id, _ = notice
        if event_id not in campaign.events:
            return None
        cancelled = kind == "cancel"
        step = Step(
            id=kind,
            delay=timedelta(0),
            subject="Cancelled: {{ event.title }}" if cancelled else "New time: {{ event.title }}, {{ event.when }}",
            template="email/event_cancelled.html" if cancelled else "email/event_update.html",
            timing="immediate",
            attach_invite=True,
        )
        return Sequence(steps=[step], exit=SequenceExit(stages=[]))
    return campaign.sequences.get(sequence_id)


def decide(
    campaign: Campaign,
    enrolment: Enrolment,
    lead: Optional[Lead],
    suppression: Optional[Suppression],
    now: datetime,
    event: Optional[EventTimes] = None,
) -> Decision:
    """What to do with a due enrolment now. Exits win over everything; then conditions, then timing.

    ``event``: the sequence's event as it stands (moved or cancelled since the campaign file);
    by default the file's."""
    gone = left(lead, suppression)
    if gone is not None:
        return gone
    assert lead is not None  # left() exits a lead that is gone
    sequence = sequence_for(campaign, enrolment.sequence_id)
    if sequence is None:
        return Exit(ExitReason.SEQUENCE_REMOVED)
    if (
        enrolment.sequence_id == CONFIRM_SEQUENCE
        and lead.consent is not None
        and lead.consent.status == ConsentStatus.GRANTED
    ):
        return Exit(ExitReason.ALREADY_CONFIRMED)
    if sequence.topic is not None and sequence.topic in lead.topics_off:
        return Exit(ExitReason.TOPIC_OFF)
    if lead.stage in sequence.exit.stages:
        return Exit(exit_reason(EXIT_STAGE, lead.stage))
    for goal in sequence.exit.events:
        if goal in lead.event_types:
            return Exit(exit_reason(EXIT_GOAL, goal))

    steps = sequence.steps
    enrolled_at = parse_iso(enrolment.enrolled_at)
    event = event or event_times(campaign, sequence)
    if event is not None and event.cancelled:
        return Exit(ExitReason.CANCELLED)
    index = enrolment.step_index
    while index < len(steps):
        step = steps[index]
        if is_skipped(step, lead, enrolment.sequence_id) or is_stale(steps, index, now, event):
            # The lead reached the next step when this one fell due (a reminder's time), or now.
            reached = min(now, step_due(step, previous_at=now, enrolled_at=enrolled_at, event=event))
            index, due = next_step(steps, index + 1, reached, enrolled_at, event, previous_at=now)
            if index == len(steps):
                return Advance(index, None)
            assert due is not None
            if due > now:
                return Advance(index, due)
            continue
        if is_event_timed(step):
            due = step_due(step, previous_at=now, enrolled_at=enrolled_at, event=event)
            if due > now:  # the event moved later since this was scheduled
                return Defer(due, DeferReason.EVENT_MOVED)
        if step.timing == "scheduled" and not is_event_timed(step):
            # A pause holds what is scheduled; an immediate step answers what the lead just did
            # (the ebook it asked for), and a reminder is for an event the lead registered for,
            # at its time: they go.
            if lead.paused_until is not None and parse_iso(lead.paused_until) > now:
                return Defer(parse_iso(lead.paused_until), DeferReason.PAUSED)
            when, reason = earliest_send_time(now, campaign, lead)
            if when > now:
                return Defer(when, reason)
        reached = step_due(step, previous_at=now, enrolled_at=enrolled_at, event=event) if is_event_timed(step) else now
        next_index, next_due = next_step(steps, index + 1, min(reached, now), enrolled_at, event, previous_at=now)
        return Send(index, next_index, next_due)
    return Advance(index, None)


def left(lead: Optional[Lead], suppression: Optional[Suppression]) -> Optional[Exit]:
    """The exit of someone no email may reach any more (gone, suppressed, unsubscribed), else None:
    the first check of every send, drip or broadcast."""
    if lead is None:
        return Exit(ExitReason.LEAD_GONE)
    if suppression is not None:
        return Exit(exit_reason(EXIT_SUPPRESSED, suppression.reason))
    if lead.unsubscribed_at is not None:
        return Exit(ExitReason.UNSUBSCRIBED)
    return None


@dataclass(frozen=True)
class EventTimes:
    """When a sequence's event starts and ends (its before_start / after_end steps count from them)."""

    starts_at: datetime
    ends_at: datetime
    cancelled: bool = False


def event_times(campaign: Campaign, sequence: Sequence) -> Optional[EventTimes]:
    event = campaign.events.get(sequence.event) if sequence.event else None
    if event is None:
        return None
    starts_at = parse_iso(event.starts_at)
    return EventTimes(starts_at, starts_at + event.duration)


def is_event_timed(step: Step) -> bool:
    return step.before_start is not None or step.after_end is not None


def step_due(
    step: Step, *, previous_at: datetime, enrolled_at: datetime, event: Optional[EventTimes] = None
) -> datetime:
    if event is not None and step.before_start is not None:
        return event.starts_at - step.before_start
    if event is not None and step.after_end is not None:
        return event.ends_at + step.after_end
    base = enrolled_at if step.after == "enrolment" else previous_at
    return base + step.delay


def next_step(
    steps: Sequence_[Step],
    index: int,
    reached_at: datetime,
    enrolled_at: datetime,
    event: Optional[EventTimes],
    *,
    previous_at: datetime,
) -> tuple[int, Optional[datetime]]:
    """The step an enrolment waits for from ``index`` on, and when it falls due: a step timed by
    the event whose time had passed when the lead reached it (``reached_at``: a late
    registration, the step before it) is skipped, never sent late. ``(len(steps), None)``: none left."""
    while index < len(steps):
        step = steps[index]
        due = step_due(step, previous_at=previous_at, enrolled_at=enrolled_at, event=event)
        if not (is_event_timed(step) and event is not None and due < reached_at):
            return index, due
        index += 1
    return index, None


def is_stale(steps: Sequence_[Step], index: int, now: datetime, event: Optional[EventTimes]) -> bool:
    """Whether a due step timed by the event is too late to send: a reminder once the event has
    started, or any such step when a later one is due as well (a dispatcher that was held up
    sends only the nearest, never several in a burst). Steps due at the same time are not a burst
    (an attendee's and a no-show's follow-up)."""
    step = steps[index]
    if event is None or not is_event_timed(step):
        return False
    if step.before_start is not None and now >= event.starts_at:
        return True
    due = step_due(step, previous_at=now, enrolled_at=now, event=event)
    for later in steps[index + 1 :]:
        if is_event_timed(later):
            later_due = step_due(later, previous_at=now, enrolled_at=now, event=event)
            if due < later_due <= now:
                return True
    return False


def first_step(
    campaign: Campaign, sequence: Sequence, starts_at: datetime, event: Optional[EventTimes] = None
) -> tuple[int, Optional[datetime]]:
    """Where an enrolment starting at ``starts_at`` begins, and when: its first step's delay after
    the start (when the lead enters, or confirms a double opt-in it entered waiting), or its
    event's time; a registration after a reminder's time starts past that reminder."""
    return next_step(sequence.steps, 0, starts_at, starts_at, event_times(campaign, sequence), previous_at=starts_at)


def first_step_due(sequence: Sequence, starts_at: datetime) -> datetime:
    """When an enrolment's first step falls due: its delay after the enrolment starts, which is
    when the lead enters the sequence, or when it confirms a double opt-in it entered waiting."""
    return step_due(sequence.steps[0], previous_at=starts_at, enrolled_at=starts_at)


def magnet_for(campaign: Campaign, sequence_id: str, lead: Lead) -> Optional[str]:
    """The asset a sequence's emails are about: the magnet of a magnet form enrolling into the
    sequence, else what first caught the lead, else any magnet it took."""
    for form in campaign.forms.values():
        if form.sequence == sequence_id and form.magnet is not None:
            return form.magnet
    if lead.first_touch.magnet in campaign.magnets:
        return lead.first_touch.magnet
    return next((m for m in lead.magnets if m in campaign.magnets), None)


# -- conditions -------------------------------------------------------------------------------


def is_skipped(step: Step, lead: Lead, sequence_id: str) -> bool:
    if step.only_if and not all(holds(c, lead, sequence_id) for c in step.only_if):
        return True
    return any(holds(c, lead, sequence_id) for c in step.skip_if)


def holds(condition: Condition, lead: Lead, sequence_id: str) -> bool:
    if condition.field:
        value = lead.field_value(condition.field)
        if condition.exists is not None:
            return (value not in (None, "")) == condition.exists
        if condition.in_ is not None:
            return value is not None and _norm(value) in {_norm(v) for v in condition.in_}
        return value is not None and _equal(value, condition.equals)
    if condition.stage:
        return lead.stage in condition.stage
    if condition.score:
        low, high = condition.score.min, condition.score.max
        return (low is None or lead.score >= low) and (high is None or lead.score <= high)
    if condition.clicked:
        return _step_key(condition.clicked, sequence_id) in lead.clicked
    if condition.opened:
        return _step_key(condition.opened, sequence_id) in lead.opened
    if condition.event:
        return condition.event in lead.event_types
    return False  # unreachable: the model requires exactly one test


def _equal(value: object, expected: object) -> bool:
    """Numbers compare as numbers (YAML's 50 is the float 50.0; DynamoDB gives back the int 50),
    everything else as case-insensitive text."""
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        try:
            return float(str(value)) == float(expected)
        except ValueError:
            return False
    return _norm(value) == _norm(expected)


def _norm(value: object) -> str:
    return str(value).strip().casefold()


def _step_key(reference: str, sequence_id: str) -> str:
    return reference if "." in reference else f"{sequence_id}.{reference}"


# -- timing: send window and frequency cap ----------------------------------------------------


def lead_zone(campaign: Campaign, lead: Lead) -> ZoneInfo:
    for name in (lead.timezone, campaign.timezone):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def earliest_send_time(now: datetime, campaign: Campaign, lead: Lead) -> tuple[datetime, str]:
    """The first moment at or after ``now`` inside the send window and under the frequency cap."""
    zone = lead_zone(campaign, lead)
    sends = [parse_iso(s) for s in lead.recent_sends]
    moment, reason = now, DeferReason.WINDOW
    # The two constraints can push each other forward; a few rounds always settle them.
    for _ in range(16):
        capped = cap_free_at(moment, campaign.frequency_cap, sends)
        opened = window_opening(capped, campaign.send_window, zone)
        if opened == moment:
            break
        reason = DeferReason.FREQUENCY_CAP if capped > moment else DeferReason.WINDOW
        moment = opened
    return moment, reason


def window_opening(moment: datetime, window: SendWindow, zone: ZoneInfo) -> datetime:
    """``moment`` if it is inside the window, else the window's next opening."""
    local = moment.astimezone(zone)
    for offset in range(8):
        day: date = local.date() + timedelta(days=offset)
        if WEEKDAYS[day.weekday()] not in window.days:
            continue
        start = datetime.combine(day, window.start, tzinfo=zone)
        end = datetime.combine(day, window.end, tzinfo=zone)
        if start <= local < end:
            return moment
        if local < start:
            return start.astimezone(moment.tzinfo)
    raise AssertionError("a send window with at least one day always opens within a week")


def cap_free_at(moment: datetime, cap: Optional[FrequencyCap], sends: Iterable[datetime]) -> datetime:
    """When the lead may receive another capped email, at or after ``moment``."""
    if cap is None:
        return moment
    recent = sorted(s for s in sends if s > moment - cap.per)
    if len(recent) < cap.max_emails:
        return moment
    return recent[len(recent) - cap.max_emails] + cap.per


def recent_sends_after(sends: Iterable[str], sent_at: datetime, cap: Optional[FrequencyCap]) -> list[str]:
    """The send log to keep after one more send: only what the cap can still count."""
    keep = cap.per if cap else timedelta(days=1)
    kept = [s for s in sends if parse_iso(s) > sent_at - keep]
    return [*kept, iso(sent_at)][-50:]


STEP_VARIANT_IDS = ("a", "b", "c", "d")


def step_variant(lead_id: str, sequence_id: str, step: Step) -> tuple[str, Step]:
    """The variant of a drip step a lead gets, and the step as that variant's email: fixed by a
    hash of the lead, the sequence and the step, split evenly. "a" is the step itself."""
    if not step.variants:
        return STEP_VARIANT_IDS[0], step
    digest = hashlib.sha256(f"{sequence_id}\x00{step.id}\x00{lead_id}".encode()).digest()
    index = int.from_bytes(digest[:8], "big") % (1 + len(step.variants))
    if index == 0:
        return STEP_VARIANT_IDS[0], step
    variant = step.variants[index - 1]
    return STEP_VARIANT_IDS[index], step.model_copy(
        update={"subject": variant.subject, "template": variant.template or step.template}
    )
