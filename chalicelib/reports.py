"""Funnel and email statistics: counted as things happen, read in one Query.

The stream handler (and the SES feedback handler, for deliveries) counts through ``Tally``;
each count is idempotent (``Store.count_once``), so redelivered records change nothing. The
reports are pure functions of the counters (``funnel_report``, ``sequence_report``): a request
reads the stats partition and never scans leads.

What is counted:
- funnel: each lead once per stage it reaches, per campaign total, per channel
  (first-touch ``utm_source``/``utm_medium``) and per ``utm_campaign``; reaching a stage implies
  the funnel stages below it (a demo request may jump a lead straight to SQL);
- lead velocity: time from capture to MQL and to SQL, as a histogram (``VELOCITY_BUCKETS``),
  from which the median is interpolated;
- per sequence step: sent; delivered (SES delivery notifications); and once per lead and email:
  opened, clicked, unsubscribed, bounced, complained;
- per sequence: enrolments that exited, by reason (a stage or goal reached, suppressed,
  ``undeliverable``, ...), once per enrolment.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Optional

from chalicelib.campaign_types import Campaign
from chalicelib.capture import SUBMISSION_EVENT
from chalicelib.clock import Clock
from chalicelib.engagement import Verdict
from chalicelib.entities import Broadcast, Enrolment, Event, Lead, Message, iso, parse_iso
from chalicelib.http import bodies
from chalicelib.nurture import rules
from chalicelib.nurture.rules import CONFIRM_SEQUENCE, CONFIRM_STEP
from chalicelib.store import Counter, LeadRecord, Store
from chalicelib.tracking import (
    CONFIRMED,
    EMAIL_BOUNCED,
    EMAIL_CLICKED,
    EMAIL_COMPLAINED,
    EMAIL_OPENED,
    STAGE_CHANGED,
    UNSUBSCRIBED,
)
from chalicelib.vocabulary import BROADCAST_SEQUENCE_PREFIX as BROADCAST_PREFIX
from chalicelib.vocabulary import (
    CAPTURED,
    FUNNEL_STAGES,
    OFF_FUNNEL_STAGES,
    VELOCITY_STAGES,
    BroadcastStatus,
    ConsentStatus,
    EnrolmentStatus,
    Stage,
)

if TYPE_CHECKING:  # a request body's model: pydantic loads with the request that brings one
    from chalicelib.models import SpendUpdate
EMAIL_METRICS = ("sent", "delivered", "opened", "clicked", "unsubscribed", "bounced", "complained")
# Opens and clicks judged a machine's (chalicelib.engagement), counted apart: rates use people's.
MACHINE_METRICS = ("machine_opened", "machine_clicked")
# SES reviews an account whose bounce rate passes 5 % or complaint rate passes 0.1 %.
SES_BOUNCE_LIMIT = 0.05
SES_COMPLAINT_LIMIT = 0.001

_MINUTE, _HOUR, _DAY = 60, 3600, 86400
# Upper bounds (seconds) of the velocity histogram's buckets; the last bucket is open-ended.
VELOCITY_BUCKETS = (
    *(m * _MINUTE for m in (1, 5, 15, 30)),
    *(h * _HOUR for h in (1, 2, 4, 8, 12)),
    *(d * _DAY for d in (1, 2, 3, 5, 7, 10, 14, 21, 30, 45, 60, 90)),
)

# Counted as their events arrive; opens and clicks are counted from their verdicts instead
# (``Tally.sync_engagement``), as a later signal can show an earlier one was a machine's.
_EVENT_METRICS: dict[str, str] = {
    UNSUBSCRIBED: "unsubscribed",
    EMAIL_BOUNCED: "bounced",
    EMAIL_COMPLAINED: "complained",
}
_ENGAGEMENT_METRICS: dict[str, str] = {EMAIL_OPENED: "opened", EMAIL_CLICKED: "clicked"}
_ENGAGEMENT_MARKERS = frozenset({"opened", "clicked", *MACHINE_METRICS})
# Markers of things that happen once anyway (a send, a delivery) only guard against records
# delivered again, which happens within hours: they expire, the counts stay.
REDELIVERY_GUARD = timedelta(days=7)
NO_SOURCE, NO_MEDIUM, NO_CAMPAIGN = "(direct)", "(none)", "(none)"


# -- pure rules -------------------------------------------------------------------------------


def stages_reached(stage: str) -> tuple[str, ...]:
    """The report stages a lead has reached when it is in ``stage``: the funnel up to it."""
    if stage in OFF_FUNNEL_STAGES:
        return (stage,)
    if stage in FUNNEL_STAGES:
        return FUNNEL_STAGES[: FUNNEL_STAGES.index(stage) + 1]
    return (CAPTURED,)  # subscriber: captured, not yet a lead


def velocity_bucket(seconds: float) -> int:
    for index, upper in enumerate(VELOCITY_BUCKETS):
        if seconds < upper:
            return index
    return len(VELOCITY_BUCKETS)


def median_seconds(histogram: Mapping[int, int]) -> Optional[float]:
    """The median of a velocity histogram, interpolated linearly inside its bucket."""
    total = sum(histogram.values())
    if total == 0:
        return None
    half, seen = total / 2, 0
    for index in range(len(VELOCITY_BUCKETS) + 1):
        count = histogram.get(index, 0)
        if count and seen + count >= half:
            low = VELOCITY_BUCKETS[index - 1] if index > 0 else 0
            if index == len(VELOCITY_BUCKETS):
                return float(low)  # open-ended: "at least"
            return low + (half - seen) / count * (VELOCITY_BUCKETS[index] - low)
        seen += count
    return None  # unreachable: the counts sum to total


def _rate(part: int, whole: int) -> Optional[float]:
    return round(part / whole, 4) if whole else None


def _money(amount: Optional[float], count: int) -> Optional[float]:
    return round(amount / count, 2) if amount is not None and count else None


def channel_of(lead: Lead) -> tuple[str, str]:
    return lead.first_touch.utm_source or NO_SOURCE, lead.first_touch.utm_medium or NO_MEDIUM


def funnel_counters(lead: Lead) -> list[Counter]:
    source, medium = channel_of(lead)
    return [
        Counter("funnel", ("all",)),
        Counter("funnel", ("channel", source, medium)),
        Counter("funnel", ("utm_campaign", lead.first_touch.utm_campaign or NO_CAMPAIGN)),
    ]


def funnel_row(counts: Mapping[str, Any], spend: Optional[float]) -> dict[str, Any]:
    """The fields of a funnel row (``bodies.FunnelRow``) from a counter's counts."""
    reached = {stage: int(counts.get(f"reached_{stage}", 0)) for stage in FUNNEL_STAGES}
    velocity = {}
    for stage in VELOCITY_STAGES:
        histogram = {i: int(counts.get(f"to_{stage}_{i}", 0)) for i in range(len(VELOCITY_BUCKETS) + 1)}
        median = median_seconds(histogram)
        velocity[stage] = bodies.Speed(
            leads=sum(histogram.values()), median_seconds=round(median) if median is not None else None
        )
    return {
        "reached": bodies.FunnelCounts(**reached),
        "off_funnel": bodies.OffFunnelCounts(
            **{stage: int(counts.get(f"reached_{stage}", 0)) for stage in OFF_FUNNEL_STAGES}
        ),
        "conversion": [
            bodies.Conversion(low=low, high=high, rate=_rate(reached[high], reached[low]))
            for low, high in itertools.pairwise(FUNNEL_STAGES)
        ],
        "velocity": bodies.Velocity(**velocity),
        "spend": spend,
        "cost_per_lead": _money(spend, reached[CAPTURED]),
        "cost_per_sql": _money(spend, reached[Stage.SQL]),
    }


def funnel_report(
    campaign: Campaign, counters: Mapping[Counter, Mapping[str, Any]], bots: Mapping[str, int]
) -> bodies.FunnelReport:
    spend: dict[tuple[str, str], float] = {(s.utm_source, s.utm_medium): s.amount for s in campaign.ad_spend}
    for counter, fields in counters.items():
        if counter.kind == "spend" and len(counter.parts) == 2:
            spend[(counter.parts[0], counter.parts[1])] = float(fields["amount"])  # the API's value wins
    channels: dict[tuple[str, str], Mapping[str, Any]] = {channel: {} for channel in spend}
    utm_campaigns: dict[str, Mapping[str, Any]] = {}
    for counter, fields in counters.items():
        if counter.kind == "funnel" and counter.parts[0] == "channel" and len(counter.parts) == 3:
            channels[(counter.parts[1], counter.parts[2])] = fields
        elif counter.kind == "funnel" and counter.parts[0] == "utm_campaign" and len(counter.parts) == 2:
            utm_campaigns[counter.parts[1]] = fields
    by_form: dict[str, dict[str, int]] = {}
    for name, count in bots.items():
        form_id, _, reason = name.partition(":")
        if reason:
            by_form.setdefault(form_id, {})[reason] = int(count)
    total_spend = round(sum(spend.values()), 2) if spend else None
    return bodies.FunnelReport(
        campaign=campaign.name,
        currency=campaign.currency,
        stages=list(FUNNEL_STAGES),
        total=bodies.FunnelRow(**funnel_row(counters.get(Counter("funnel", ("all",)), {}), total_spend)),
        channels=[
            bodies.ChannelRow(utm_source=source, utm_medium=medium, **funnel_row(fields, spend.get((source, medium))))
            for (source, medium), fields in sorted(channels.items())
        ],
        utm_campaigns=[
            bodies.CampaignRow(utm_campaign=name, **funnel_row(fields, None))
            for name, fields in sorted(utm_campaigns.items())
        ],
        bots_blocked=bodies.BotsBlocked(total=int(bots.get("blocked", 0)), by_form=by_form),
    )


def _email_counts(counts: Mapping[str, Any]) -> dict[str, Any]:
    """A step's (or the campaign's) counts; ``opened`` and ``clicked`` are people's, and only
    they make the rates. A lead whose email a scanner and then its person clicked is in both."""
    row: dict[str, Any] = {metric: int(counts.get(metric, 0)) for metric in (*EMAIL_METRICS, *MACHINE_METRICS)}
    row["rates"] = bodies.EmailRates(**{metric: _rate(row[metric], row["sent"]) for metric in EMAIL_METRICS[1:]})
    return row


def sequence_report(
    campaign: Campaign, counters: Mapping[Counter, Mapping[str, Any]], bots: Mapping[str, int]
) -> bodies.SequenceReport:
    """Per step, in campaign order, then any step counted that the campaign no longer has.

    Rates are relative to emails sent, as SES computes bounce and complaint rates.
    """
    # Broadcasts have their own report (their sequences start with "_b-"; campaign ids cannot),
    # but SES reviews the account's rates: the deliverability below takes their emails in too.
    everything = counters
    counters = {c: f for c, f in counters.items() if not (c.parts and c.parts[0].startswith(BROADCAST_PREFIX))}
    step_counts: dict[tuple[str, ...], Mapping[str, Any]] = {
        c.parts: fields for c, fields in counters.items() if c.kind == "step" and len(c.parts) == 2
    }
    subjects: dict[tuple[str, ...], str] = {}
    for sequence_id, sequence in campaign.sequences.items():
        for step in sequence.steps:
            subjects[(sequence_id, step.id)] = step.subject
    if campaign.confirmation is not None:
        subjects[(CONFIRM_SEQUENCE, CONFIRM_STEP)] = campaign.confirmation.subject
    variant_counts: dict[tuple[str, ...], Mapping[str, Any]] = {
        c.parts: fields for c, fields in counters.items() if c.kind == "variant" and len(c.parts) == 3
    }
    variants: dict[tuple[str, ...], list[tuple[str, str]]] = {}  # step -> (variant id, subject)
    for sequence_id, sequence in campaign.sequences.items():
        for step in sequence.steps:
            if step.variants:
                versions = [step.subject, *(v.subject for v in step.variants)]
                variants[(sequence_id, step.id)] = list(zip(rules.STEP_VARIANT_IDS, versions, strict=False))
    steps = []
    for key in [*subjects, *sorted(step_counts.keys() - subjects.keys())]:
        if key[0] == CONFIRM_SEQUENCE and key not in step_counts:
            continue  # no double opt-in form in use: no confirmation row
        row = _email_counts(step_counts.get(key, {}))
        by_variant = [
            bodies.StepVariantRow(variant_id=v, subject=subject, **_email_counts(variant_counts.get((*key, v), {})))
            for v, subject in variants.get(key, [])
        ]
        steps.append(
            bodies.StepRow(
                sequence_id=key[0], step_id=key[1], subject=subjects.get(key, ""), variants=by_variant, **row
            )
        )
    metrics = (*EMAIL_METRICS, *MACHINE_METRICS)
    totals = bodies.EmailRow(**_email_counts({m: sum(int(getattr(s, m)) for s in steps) for m in metrics}))
    exits: dict[str, dict[str, int]] = {
        c.parts[0]: {reason: int(n) for reason, n in sorted(fields.items())}
        for c, fields in sorted(counters.items(), key=lambda item: item[0].parts)
        if c.kind == "exit" and len(c.parts) == 1
    }
    exits_total: dict[str, int] = {}
    for by_reason in exits.values():
        for reason, count in by_reason.items():
            exits_total[reason] = exits_total.get(reason, 0) + count
    account = {
        m: sum(int(fields.get(m, 0)) for c, fields in everything.items() if c.kind == "step" and len(c.parts) == 2)
        for m in metrics
    }
    account_rates = bodies.EmailRow(**_email_counts(account)).rates
    bounce_rate, complaint_rate = account_rates.bounced, account_rates.complained
    warnings = []
    if bounce_rate is not None and bounce_rate > SES_BOUNCE_LIMIT:
        warnings.append(
            f"Bounce rate {bounce_rate:.1%} is above SES's {SES_BOUNCE_LIMIT:.0%}: SES may put the account "
            "under review and pause sending. Clean the list and check how addresses are collected."
        )
    if complaint_rate is not None and complaint_rate > SES_COMPLAINT_LIMIT:
        warnings.append(
            f"Complaint rate {complaint_rate:.2%} is above SES's {SES_COMPLAINT_LIMIT:.1%}: SES may pause "
            "sending. Check consent wording, frequency and the unsubscribe link."
        )
    return bodies.SequenceReport(
        steps=steps,
        totals=totals,
        deliverability=bodies.Deliverability(
            bounce_rate=bounce_rate,
            complaint_rate=complaint_rate,
            bounce_limit=SES_BOUNCE_LIMIT,
            complaint_limit=SES_COMPLAINT_LIMIT,
            warnings=warnings,
        ),
        exits=bodies.Exits(total=dict(sorted(exits_total.items())), by_sequence=exits),
        bots_blocked=int(bots.get("blocked", 0)),
    )


def _step_of(message_id: object) -> Optional[tuple[str, str]]:
    """``<sequence>.<step>`` (sequence ids have no dots) to its parts; None when not one."""
    if not isinstance(message_id, str):
        return None
    sequence_id, dot, step_id = message_id.partition(".")
    return (sequence_id, step_id) if dot and sequence_id and step_id else None


# -- counting -----------------------------------------------------------------------------------


class Tally:
    """Counts what the stream (and SES feedback) reports, each thing once."""

    def __init__(self, campaign: Campaign, store: Store) -> None:
        self._campaign = campaign
        self._store = store

    def observe(self, image: Event | Message | Enrolment) -> int:
        """Count one newly written event, message or exited enrolment; returns how many counters moved."""
        if isinstance(image, Enrolment):
            return self._count_exit(image)
        if isinstance(image, Message):
            return self.sent([image])
        if image.type in _EVENT_METRICS:
            return self._count_reaction(image.lead_id, image.data.get("message_id"), image.type, image.at)
        if image.type == SUBMISSION_EVENT:
            form = self._campaign.forms.get(str(image.data.get("form_id")))
            return self._count_stages(image, (CAPTURED, *stages_reached(form.stage if form else Stage.SUBSCRIBER)))
        if image.type == CONFIRMED:  # a double opt-in sign-up counts from its confirmation
            return self._count_stages(image, None)
        if image.type == STAGE_CHANGED:
            return self._count_stages(image, stages_reached(str(image.data.get("to"))))
        return 0

    def sent(self, messages: Sequence[Message]) -> int:
        """Count sent emails (a stream batch's at once), each once; how many were counted now."""
        return self._store.count_sent([(m, self._counters(m.lead_id, (m.sequence_id, m.step_id))) for m in messages])

    def _counters(self, lead_id: str, step: tuple[str, str]) -> tuple[Counter, ...]:
        """The counters an email's metric adds to: its step's, and, for a drip step with
        variants, the variant's this lead got (the same hash that chose it)."""
        found = rules.sequence_for(self._campaign, step[0])
        campaign_step = next((s for s in found.steps if s.id == step[1]), None) if found is not None else None
        if campaign_step is None or not campaign_step.variants:
            return (Counter("step", step),)
        variant, _ = rules.step_variant(lead_id, step[0], campaign_step)
        return Counter("step", step), Counter("variant", (*step, variant))

    def sync_engagement(self, record: LeadRecord, verdicts: Mapping[str, Verdict]) -> int:
        """Make the lead's open and click counts say what the verdicts say: per step, once
        opened and once clicked by a person, and once each by a machine. A count a later
        signal showed wrong (a trap hit after a "person's" click) is taken back. Only the
        differences are written, so a redelivery writes nothing. Returns the counters moved."""
        wanted: dict[str, tuple[tuple[str, str], str, str]] = {}  # marker -> (step, metric, at)
        for event in record.events:
            verdict = verdicts.get(event.event_id)
            step = _step_of(event.data.get("message_id"))
            metric = _ENGAGEMENT_METRICS.get(event.type)
            if verdict is None or step is None or metric is None:
                continue
            metric = metric if verdict.human else f"machine_{metric}"
            marker = f"{metric}#{step[0]}.{step[1]}"
            if marker not in wanted or event.at < wanted[marker][2]:
                wanted[marker] = (step, metric, event.at)
        moved = 0
        for marker, (step, metric, at) in sorted(wanted.items()):
            if marker not in record.markers:
                adds = {c: {metric: 1} for c in self._counters(record.lead.lead_id, step)}
                moved += int(self._store.count_once(record.lead.lead_id, marker, adds, at))
        for marker in sorted(record.markers):
            metric, _, message_id = marker.partition("#")
            step = _step_of(message_id)
            if metric in _ENGAGEMENT_MARKERS and step is not None and marker not in wanted:
                subtracts = {c: {metric: 1} for c in self._counters(record.lead.lead_id, step)}
                moved += int(self._store.uncount(record.lead.lead_id, marker, subtracts))
        return moved

    def feedback(self, reference: str, event_type: str, at: str) -> int:
        """An open, click, unsubscribe, bounce or complaint of the email ``<lead_id>/<seq>.<step>``:
        counted once per lead and step."""
        lead_id, _, message_id = reference.partition("/")
        return self._count_reaction(lead_id, message_id, event_type, at)

    def _count_exit(self, enrolment: Enrolment) -> int:
        if enrolment.status != EnrolmentStatus.EXITED or not enrolment.exit_reason:
            return 0
        # Per enrolment (a re-enrolment has a new enrolled_at), kept: a later write to the exited
        # enrolment's item comes down the stream again and must not count it twice.
        marker = f"exit#{enrolment.sequence_id}#{enrolment.enrolled_at}"
        adds = {Counter("exit", (enrolment.sequence_id,)): {enrolment.exit_reason: 1}}
        return int(self._store.count_once(enrolment.lead_id, marker, adds, enrolment.enrolled_at, probe=True))

    def _count_reaction(self, lead_id: str, message_id: object, event_type: str, at: str) -> int:
        step, metric = _step_of(message_id), _EVENT_METRICS.get(event_type)
        if not lead_id or step is None or metric is None:
            return 0
        return self._count_step(lead_id, f"{metric}#{step[0]}.{step[1]}", step, metric, at)

    def delivered(self, reference: str, at: str) -> int:
        """An SES delivery notification for the email ``<lead_id>/<sequence>.<step>``."""
        lead_id, _, message_id = reference.partition("/")
        step = _step_of(message_id)
        if not lead_id or step is None:
            return 0
        return self._count_step(lead_id, f"delivered#{message_id}", step, "delivered", at, once_anyway=True)

    def _count_step(
        self, lead_id: str, marker: str, step: tuple[str, str], metric: str, at: str, once_anyway: bool = False
    ) -> int:
        adds = {c: {metric: 1} for c in self._counters(lead_id, step)}
        if once_anyway:
            expires_at = int((parse_iso(at) + REDELIVERY_GUARD).timestamp())
            return int(self._store.count_once(lead_id, marker, adds, at, expires_at=expires_at))
        return int(self._store.count_once(lead_id, marker, adds, at, probe=True))

    def _count_stages(self, event: Event, stages: Optional[Iterable[str]]) -> int:
        """Count the stages reached; None: those of the form that captured the lead."""
        lead = self._store.get_lead(event.lead_id)
        if lead is None:
            return 0  # erased (or expired unconfirmed) since: nothing to attribute
        if lead.consent is not None and lead.consent.status == ConsentStatus.PENDING_CONFIRMATION:
            return 0  # not a lead until confirmed (and gone by TTL if never)
        if stages is None:
            form = self._campaign.forms.get(lead.first_touch.form_id)
            stages = (CAPTURED, *stages_reached(form.stage if form else Stage.SUBSCRIBER))
        counted = 0
        for stage in dict.fromkeys(stages):
            increments = {f"reached_{stage}": 1}
            if stage in VELOCITY_STAGES:
                elapsed = (parse_iso(event.at) - parse_iso(lead.created_at)).total_seconds()
                increments[f"to_{stage}_{velocity_bucket(max(elapsed, 0.0))}"] = 1
            adds = {counter: increments for counter in funnel_counters(lead)}
            counted += self._store.count_once(lead.lead_id, f"reached#{stage}", adds, event.at, probe=True)
        return counted


@dataclass(frozen=True)
class Reports:
    campaign: Campaign
    store: Store
    clock: Clock

    def funnel(self) -> bodies.FunnelReport:
        return funnel_report(self.campaign, self.store.report_counters(), self.store.bot_counts())

    def sequences(self) -> bodies.SequenceReport:
        return sequence_report(self.campaign, self.store.report_counters(), self.store.bot_counts())

    def both(self) -> tuple[bodies.FunnelReport, bodies.SequenceReport]:
        """The funnel and the sequence report from one read of the counters (the dashboard)."""
        counters, bots = self.store.report_counters(), self.store.bot_counts()
        return funnel_report(self.campaign, counters, bots), sequence_report(self.campaign, counters, bots)

    def set_spend(self, update: SpendUpdate) -> bodies.SpendSet:
        counter = Counter("spend", (update.utm_source, update.utm_medium))
        self.store.set_counter_fields(counter, {"amount": update.amount, "updated_at": iso(self.clock.now())})
        return bodies.SpendSet(
            utm_source=update.utm_source,
            utm_medium=update.utm_medium,
            amount=update.amount,
            currency=self.campaign.currency,
        )


def _broadcast_status(broadcast: Broadcast, done: int) -> Any:
    """``sent`` once every recipient is enrolled and has been sent to or skipped."""
    enrolled_all = broadcast.status == BroadcastStatus.SENDING and broadcast.due_at is None
    return BroadcastStatus.SENT if enrolled_all and done >= broadcast.recipients else broadcast.status


def broadcast_report(broadcast: Broadcast, counters: Mapping[Counter, Mapping[str, Any]]) -> bodies.Broadcast:
    """A broadcast with what its counters say: per variant (the step counters of its sequence)
    and, for those who got nothing, its exits by reason."""
    from chalicelib.nurture.broadcasts import sequence_id_of

    sequence_id = sequence_id_of(broadcast.broadcast_id)
    variants = []
    for variant in broadcast.variants:
        counts = counters.get(Counter("step", (sequence_id, variant.variant_id)), {})
        number = {metric: int(counts.get(metric, 0)) for metric in (*EMAIL_METRICS, *MACHINE_METRICS)}
        variants.append(
            bodies.VariantReport(
                variant_id=variant.variant_id,
                subject=variant.subject,
                template=variant.template,
                sent=number["sent"],
                delivered=number["delivered"],
                human_opens=number["opened"],
                human_clicks=number["clicked"],
                machine_opens=number["machine_opened"],
                machine_clicks=number["machine_clicked"],
                unsubscribes=number["unsubscribed"],
                bounces=number["bounced"],
                complaints=number["complained"],
            )
        )
    skipped = {reason: int(n) for reason, n in sorted(counters.get(Counter("exit", (sequence_id,)), {}).items())}
    return bodies.Broadcast(
        broadcast_id=broadcast.broadcast_id,
        name=broadcast.name,
        topic=broadcast.topic,
        segment=broadcast.segment,
        status=_broadcast_status(broadcast, sum(v.sent for v in variants) + sum(skipped.values())),
        send_at=broadcast.send_at,
        created_at=broadcast.created_at,
        cancelled_at=broadcast.cancelled_at,
        recipients=broadcast.recipients,
        sent=sum(v.sent for v in variants),
        skipped=skipped,
        variants=variants,
        test_fraction=broadcast.test_fraction,
        winner_after=broadcast.winner_after,
        winner_metric=broadcast.winner_metric if broadcast.test_fraction else None,
        winner=broadcast.winner,
        winner_reason=broadcast.winner_reason,
    )
