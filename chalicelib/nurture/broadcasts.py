"""Broadcasts: one email to a segment, sent with every drip guarantee.

A broadcast's recipients are enrolments of its own one-step sequence (``_b-<broadcast id>``,
which no campaign sequence id can be): the dispatcher claims, sends and commits each like a drip
step, so two dispatchers at once, retried ticks, crashes and SES throttling send each recipient
at most one copy (the one documented window, docs/nurture.md). The variant a recipient gets is
its enrolment's step: fixed by a hash of the lead and the broadcast, and counted per variant by
the step counters the reports already keep.

The rules here are pure; ``BroadcastDesk`` is the team's API over the store.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Optional
from zoneinfo import ZoneInfo

from chalicelib.campaign_types import Campaign, Segment, Sequence, SequenceExit, Step
from chalicelib.entities import Broadcast, Enrolment, Lead, Suppression, Variant, iso, parse_iso
from chalicelib.nurture import rules
from chalicelib.vocabulary import (
    BROADCAST_SEQUENCE_PREFIX,
    BroadcastStatus,
    ConsentStatus,
    DeferReason,
    ExitReason,
)

if TYPE_CHECKING:
    from chalicelib.clock import Clock
    from chalicelib.http.bodies import Broadcast as BroadcastBody
    from chalicelib.http.bodies import BroadcastList, BroadcastTestSent
    from chalicelib.models import BroadcastIn
    from chalicelib.nurture.mailer import Mailer
    from chalicelib.store import Store
    from chalicelib.tracking import LinkBuilder

SEQUENCE_PREFIX = BROADCAST_SEQUENCE_PREFIX
VARIANT_IDS = ("a", "b", "c", "d")
TEST_MARK = "[TEST]"
# The rest of an A/B test whose winner is not chosen yet (the dispatcher chooses it first): soon again.
WINNER_WAIT = timedelta(minutes=1)
# The statuses in which recipients may still be sent to.
LIVE = (BroadcastStatus.SCHEDULED, BroadcastStatus.SENDING, BroadcastStatus.TESTING)


def sequence_id_of(broadcast_id: str) -> str:
    return f"{SEQUENCE_PREFIX}{broadcast_id}"


def broadcast_id_of(sequence_id: str) -> Optional[str]:
    return sequence_id[len(SEQUENCE_PREFIX) :] if sequence_id.startswith(SEQUENCE_PREFIX) else None


def new_broadcast_id(now: datetime) -> str:
    """Time-ordered (the list is newest first by id), with no dot (message ids are
    ``<sequence>.<step>``)."""
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def sequence_of(broadcast: Broadcast) -> Sequence:
    """The broadcast as a sequence whose steps are its variants: a recipient gets one of them."""
    steps = [
        Step(id=v.variant_id, delay=timedelta(0), subject=v.subject, template=v.template, timing="scheduled")
        for v in broadcast.variants
    ]
    return Sequence(steps=steps, exit=SequenceExit(stages=[]))


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256(":".join(("trellis-variant", *parts)).encode()).digest()[:8], "big")


def variant_index(lead_id: str, broadcast_id: str, variants: int, test_fraction: Optional[float] = None) -> int:
    """The recipient's variant, fixed by a hash of the lead and the broadcast: with an A/B test,
    the test fraction gets the variants split evenly and the rest ``variants`` (the winner, when
    chosen); without, everyone the variants split evenly."""
    if test_fraction is not None and _hash("test", broadcast_id, lead_id) / 2**64 >= test_fraction:
        return variants
    return _hash(broadcast_id, lead_id) % variants


def local_due(send_at: datetime, local_time: str, zone: ZoneInfo) -> datetime:
    """The first moment at or after ``send_at`` when the clock in ``zone`` shows ``local_time``:
    a broadcast rolls across the time zones, east first."""
    hour, minute = (int(part) for part in local_time.split(":"))
    local = send_at.astimezone(zone)
    for days in range(3):
        day = (local + timedelta(days=days)).date()
        candidate = datetime.combine(day, time(hour, minute), tzinfo=zone)
        if candidate >= local:
            return candidate.astimezone(send_at.tzinfo)
    raise AssertionError("a local time comes round within two days")


def recipient_enrolment(campaign: Campaign, broadcast: Broadcast, lead: Lead, now: datetime) -> Enrolment:
    index = variant_index(lead.lead_id, broadcast.broadcast_id, len(broadcast.variants), broadcast.test_fraction)
    send_at = parse_iso(broadcast.send_at)
    due = send_at
    if broadcast.local_time is not None:
        due = local_due(send_at, broadcast.local_time, rules.lead_zone(campaign, lead))
    if index == len(broadcast.variants):  # the rest of an A/B test: after the winner is known
        due = max(due, send_at + timedelta(seconds=broadcast.winner_after or 0))
    return Enrolment(
        lead_id=lead.lead_id,
        sequence_id=sequence_id_of(broadcast.broadcast_id),
        status="active",
        step_index=index,
        enrolled_at=iso(now),
        due_at=iso(max(due, now)),
    )


def winner_of(broadcast: Broadcast, counts: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The variant with the best rate of the broadcast's metric (people's clicks or opens per
    email sent), and why, in words. A tie goes to the earlier variant."""
    metric = "clicked" if broadcast.winner_metric == "human_clicks" else "opened"
    words = "people's clicks" if metric == "clicked" else "people's opens"
    rows = []
    for variant in broadcast.variants:
        row = counts.get(variant.variant_id, {})
        sent, hits = int(row.get("sent", 0)), int(row.get(metric, 0))
        rows.append((hits / sent if sent else 0.0, variant.variant_id, hits, sent))
    best = max(rows, key=lambda r: r[0])  # max keeps the first of equals
    told = ", ".join(f"{v}: {h} of {s} sent ({r:.1%})" for r, v, h, s in rows)
    return best[1], f"best rate of {words}: {told}"


def decide(
    campaign: Campaign,
    broadcast: Optional[Broadcast],
    enrolment: Enrolment,
    lead: Optional[Lead],
    suppression: Optional[Suppression],
    now: datetime,
) -> rules.Decision:
    """What to do with a due recipient now: the drip's exits, then what a broadcast asks more
    (consent granted, its topic on, no pause, the cap when broadcasts count toward it), then the
    send window. Whoever is skipped exits with the reason, counted in the broadcast's report."""
    gone = rules.left(lead, suppression)
    if gone is not None:
        return gone
    assert lead is not None  # left() exits a lead that is gone
    if broadcast is None or broadcast.status not in LIVE:
        return rules.Exit(ExitReason.CANCELLED)
    if lead.consent is None or lead.consent.status != ConsentStatus.GRANTED:
        return rules.Exit(ExitReason.NO_CONSENT)
    if not lead.subscribed_to(broadcast.topic):
        return rules.Exit(ExitReason.TOPIC_OFF)
    if lead.paused_until is not None and parse_iso(lead.paused_until) > now:
        return rules.Exit(ExitReason.PAUSED)
    if campaign.broadcasts.count_toward_frequency_cap:
        sends = [parse_iso(s) for s in lead.recent_sends]
        if rules.cap_free_at(now, campaign.frequency_cap, sends) > now:
            return rules.Exit(ExitReason.FREQUENCY_CAP)
    opening = rules.window_opening(now, campaign.send_window, rules.lead_zone(campaign, lead))
    if opening > now:
        return rules.Defer(opening, DeferReason.WINDOW)
    index = enrolment.step_index
    if index >= len(broadcast.variants):  # the rest of an A/B test: the winner
        if broadcast.winner is None:
            return rules.Defer(now + WINNER_WAIT, DeferReason.WINNER)
        index = [v.variant_id for v in broadcast.variants].index(broadcast.winner)
    return rules.Send(index, index, None)


def segment_of(campaign: Campaign, broadcast: Broadcast) -> Segment:
    """The broadcast's segment as it stands: a named one from the campaign (as deployed now), or
    its inline rules."""
    from chalicelib import compiled

    named = broadcast.segment.get("name")
    if named is not None:
        return campaign.segments[str(named)]
    return compiled.record_from_data(Segment, dict(broadcast.segment.get("rules") or {}))


class BroadcastDesk:
    """The team's broadcasts: create (validated against the campaign), list, report, test, cancel."""

    def __init__(
        self, campaign: Campaign, store: Store, clock: Clock, links: LinkBuilder, mailer: Callable[[], Mailer]
    ) -> None:
        self._campaign = campaign
        self._store = store
        self._clock = clock
        self._links = links
        self._mailer = mailer

    def create(self, body: BroadcastIn) -> Broadcast:
        from chalicelib import compiled
        from chalicelib.errors import ValidationFailed
        from chalicelib.models import ab_test_problems, segment_problems
        from chalicelib.nurture.render import template_exists

        now = self._clock.now()
        errors: dict[str, str] = ab_test_problems(body)
        if body.topic not in self._campaign.topics:
            errors["topic"] = f"no topic named {body.topic!r}"
        segment: dict[str, Any]
        if isinstance(body.segment, str):
            if body.segment not in self._campaign.segments:
                errors["segment"] = f"no segment named {body.segment!r}"
            segment = {"name": body.segment}
        else:
            for problem in segment_problems(body.segment, self._campaign):
                key, _, reason = problem.partition(": ")
                errors[f"segment.{key}"] = reason
            segment = {"rules": compiled.to_data(body.segment)}
        for n, variant in enumerate(body.variants):
            if not template_exists(variant.template):
                errors[f"variants.{n}.template"] = f"no template {variant.template!r} under templates/"
        send_at = body.send_at.astimezone(now.tzinfo) if body.send_at is not None else now
        if send_at < now - timedelta(seconds=1):
            errors["send_at"] = "is in the past"
        if errors:
            raise ValidationFailed(errors)
        broadcast = Broadcast(
            broadcast_id=new_broadcast_id(now),
            name=body.name,
            topic=body.topic,
            segment=segment,
            variants=tuple(Variant(VARIANT_IDS[n], v.subject, v.template) for n, v in enumerate(body.variants)),
            send_at=iso(send_at),
            status=BroadcastStatus.SCHEDULED,
            created_at=iso(now),
            due_at=iso(send_at),
            test_fraction=body.test_fraction,
            winner_after=int(body.winner_after.total_seconds()) if body.winner_after else None,
            winner_metric=body.winner_metric,
            local_time=body.local_time,
        )
        self._store.create_broadcast(broadcast)
        return broadcast

    def get(self, broadcast_id: str) -> Broadcast:
        from chalicelib.errors import NotFound

        broadcast = self._store.get_broadcast(broadcast_id)
        if broadcast is None:
            raise NotFound("broadcast", broadcast_id)
        return broadcast

    def cancel(self, broadcast_id: str) -> Broadcast:
        """Stop what has not been sent: its unsent recipients exit ``cancelled`` when their turn
        comes. Cancelling a cancelled broadcast changes nothing; a sent one cannot be."""
        from chalicelib.errors import Conflict

        broadcast = self.get(broadcast_id)
        if broadcast.status == BroadcastStatus.CANCELLED:
            return broadcast
        if not self._store.set_broadcast_status(broadcast_id, BroadcastStatus.CANCELLED, LIVE, iso(self._clock.now())):
            raise Conflict(f"broadcast {broadcast_id} is {broadcast.status}: it cannot be cancelled")
        return self.get(broadcast_id)

    def send_test(self, broadcast_id: str, to: str) -> BroadcastTestSent:
        """One copy of each variant to ``to``, rendered for a sample lead, "[TEST]" in its
        subject. Counted nowhere: no message record, no counter, no enrolment."""
        from chalicelib.http.bodies import BroadcastTestSent
        from chalicelib.nurture.mime import build_message, recipient
        from chalicelib.nurture.preview import render_step, sample_lead

        broadcast = self.get(broadcast_id)
        now = self._clock.now()
        sequence_id = sequence_id_of(broadcast_id)
        lead = sample_lead(self._campaign, sequence_id, now)
        subjects = []
        for step in sequence_of(broadcast).steps:
            rendered = render_step(self._campaign, self._links, sequence_id, step, lead, now, topic=broadcast.topic)
            rendered = replace(rendered, subject=f"{TEST_MARK} {rendered.subject}")
            raw = build_message(
                sender=self._campaign.sender, to=to, rendered=rendered, reference=f"test/{broadcast_id}", now=now
            )
            self._mailer().send(self._campaign.sender.from_address, recipient(to), raw)
            subjects.append(rendered.subject)
        return BroadcastTestSent(to=to, subjects=subjects, counted=False)

    def detail(self, broadcast_id: str) -> BroadcastBody:
        from chalicelib.reports import broadcast_report

        broadcast = self.get(broadcast_id)
        return broadcast_report(broadcast, self._store.report_counters())

    def list(self) -> BroadcastList:
        """Every broadcast with its report: two Queries (the broadcasts, the counters)."""
        from chalicelib.http.bodies import BroadcastList
        from chalicelib.reports import broadcast_report

        counters = self._store.report_counters()
        return BroadcastList(broadcasts=[broadcast_report(b, counters) for b in self._store.list_broadcasts()])
