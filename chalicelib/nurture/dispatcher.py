"""The dispatcher: send the due steps of every sequence, at most once each, within a time budget.

Per due enrolment: claim it (a conditional write that also sets a lease), read the lead and its
suppression record (one request), decide with the pure rules, then send and commit, or release,
advance or exit. The claim is what makes two dispatchers at once safe; the lease is what makes a
crash safe: a step claimed but never committed falls due again when the lease ends.

The one window: SES accepted the email but the dispatcher never learned it or could not record
it (the Lambda died before the commit, or SES's answer was lost on the way back). The step is then
sent again, after the lease (``LEASE``) or the backoff. Everything else is at most once.

No item can stop a tick: an error while handling one (its data cannot be rendered, a bug, a
surprise from DynamoDB or SES) is logged without its data, counted (``ItemErrors``), and that
item backs off; after ``MAX_ATTEMPTS`` it exits ``undeliverable``. An address no email can be
built for (``Unsendable``) is suppressed and exits at once. Only throttling, the time budget and
the Lambda itself dying (a ``BaseException``, which is never caught here) end a tick early.
"""

from __future__ import annotations

import contextvars
import logging
import math
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Optional

from chalicelib.campaign_types import Campaign, Step
from chalicelib.capture import AssetLinks
from chalicelib.clock import Clock
from chalicelib.entities import (
    Broadcast,
    Enrolment,
    Handoff,
    Lead,
    Message,
    Suppression,
    iso,
    message_id_for,
    parse_iso,
)
from chalicelib.errors import (
    ConditionFailed,
    InvalidRequest,
    SendFailed,
    SendRejected,
    SendThrottled,
    StoreError,
    Unsendable,
)
from chalicelib.nurture import broadcasts, fanout, rules
from chalicelib.nurture.invite import calendar_attachment
from chalicelib.nurture.mailer import Mailer
from chalicelib.nurture.mime import Attachment, build_message, recipient
from chalicelib.nurture.render import Renderer
from chalicelib.nurture.schedule import EventSchedule
from chalicelib.observability import NO_METRICS, MetricsSink
from chalicelib.store import Store
from chalicelib.tracking import LinkBuilder
from chalicelib.vocabulary import BroadcastStatus, EnrolmentStatus

logger = logging.getLogger(__name__)

# Longer than the dispatcher Lambda's timeout, so a claim never expires under a live dispatcher.
LEASE = timedelta(minutes=5)
# Stop taking new work when less than this is left of the invocation.
SAFETY_MARGIN_MS = 10_000
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=6)
# Attempts of one step (claims without progress) after which an error ends the enrolment: with
# the backoff, about 15 minutes of failing. A transient send failure alone never ends it.
MAX_ATTEMPTS = 5
# What one email takes end to end, generously (SES answers in 30-100 ms, DynamoDB in ~10 ms a
# request, three requests): sizes the tick's pool of send workers (``send_workers``).
SEND_TIME_ALLOWANCE = 0.15
# Below botocore's connection pool (10 per client), so no worker waits for a connection.
MAX_SEND_WORKERS = 8
# Our code's and botocore's CPU per email on one vCPU (rendering, MIME, signing, bookkeeping;
# make bench, bench/RESULTS.md: ~28 ms), rounded up: it bounds one invocation's rate whatever
# its workers. The functions' memory gives their share of a vCPU (infra/settings.py, which a
# test holds to these): the tick alone up to ~19 emails/s, each part of a fanned-out tick ~33/s.
CPU_PER_EMAIL = 0.030
TICK_MEMORY_MB = 1024
PART_MEMORY_MB = 1769
# Profiles of a segment read per page while a broadcast's recipients are enrolled.
RECIPIENT_PAGE = 100
# How long a tick trusts the broadcast item it read (a cancel reaches its sends within this).
BROADCAST_READ_SECONDS = 10.0


@dataclass
class TickReport:
    claimed: int = 0
    sent: int = 0
    skipped: int = 0
    deferred: int = 0
    exited: int = 0
    completed: int = 0
    throttled: int = 0
    rejected: int = 0
    failed: int = 0
    lost_claims: int = 0
    enrolled: int = 0  # broadcast recipients enrolled
    fanned_out: int = 0  # other dispatchers started for this tick (fan-out), each with its shards
    errors: int = 0  # items that failed with an error (ItemErrors): backed off or exited, never fatal
    stopped_early: bool = False
    exits: dict[str, int] = field(default_factory=dict)


class Pacer:
    """Spaces sends to the account's max send rate (a token bucket of one).

    Shared by the tick's send workers: a worker holds the lock while it waits for its slot, so
    slots are handed out one at a time, exactly 1/rate apart, while the sends themselves overlap.
    """

    def __init__(
        self,
        rate_per_second: float,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = max(rate_per_second, 0.01)
        self._monotonic = monotonic
        self._sleep = sleep
        self._next_slot = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._monotonic()
            if now < self._next_slot:
                self._sleep(self._next_slot - now)
                now = self._next_slot
            self._next_slot = now + 1.0 / self.rate

    def slow_down(self) -> None:
        with self._lock:
            self.rate = max(self.rate / 2, 0.01)

    def share(self, rate_per_second: float) -> Pacer:
        """A pacer of its own for one part of a fanned-out tick, on the same clock."""
        return Pacer(rate_per_second, self._monotonic, self._sleep)


def send_workers(rate_per_second: float) -> int:
    """How many sends a tick keeps in flight to reach the send rate: each email takes about
    ``SEND_TIME_ALLOWANCE`` (claim, read, render, SES, commit), so a rate of r needs about
    r x that many at once. One at SES's sandbox rate (1/s) and its default (14/s: 3)."""
    return max(1, min(MAX_SEND_WORKERS, math.ceil(rate_per_second * SEND_TIME_ALLOWANCE)))


def _unix_ms() -> int:
    return int(time.time() * 1000)


def backoff(attempts: int) -> timedelta:
    """Delay before retrying a step whose send failed ``attempts`` times (1 = first failure)."""
    delay: timedelta = BACKOFF_BASE * (2 ** max(attempts - 1, 0))
    return min(delay, BACKOFF_MAX)


class Dispatcher:
    def __init__(
        self,
        campaign: Campaign,
        store: Store,
        mailer: Mailer,
        renderer: Renderer,
        links: LinkBuilder,
        assets: AssetLinks,
        clock: Clock,
        pacer: Optional[Pacer] = None,
        on_due_handoff: Optional[Callable[[Handoff], object]] = None,
        metrics: MetricsSink = NO_METRICS,
        schedule: Optional[EventSchedule] = None,
    ) -> None:
        self._metrics = metrics
        self._schedule = schedule or EventSchedule(campaign, store)
        self._fresh_pacer_per_tick = pacer is None
        self._on_due_handoff = on_due_handoff
        self._campaign = campaign
        self._store = store
        self._mailer = mailer
        self._renderer = renderer
        self._links = links
        self._assets = assets
        self._clock = clock
        self._pacer = pacer
        self._broadcasts: dict[str, tuple[float, Optional[Broadcast]]] = {}
        self._broadcasts_lock = threading.Lock()

    @property
    def pacer(self) -> Pacer:
        # Without an injected pacer, each tick starts at the account's rate again: a throttle
        # slows only the tick it happened in (which then stops), not the warm container forever.
        if self._pacer is None:
            self._pacer = Pacer(self._mailer.max_send_rate())
        return self._pacer

    def scheduled_tick(
        self,
        remaining_ms: Callable[[], int],
        starter: Optional[fanout.ShardStarter] = None,
        now_ms: Callable[[], int] = _unix_ms,
    ) -> TickReport:
        """The minute's tick: alone when it can send at the account's rate itself (or nothing can
        start parts), else fanned out (``fanout``): parts started, each with its shards and share
        of the rate. A part that cannot be started is worked here, rate share and all."""
        rate = self.pacer.rate if not self._fresh_pacer_per_tick else self._mailer.max_send_rate()
        alone = fanout.capacity_per_invocation(MAX_SEND_WORKERS, SEND_TIME_ALLOWANCE, CPU_PER_EMAIL, TICK_MEMORY_MB)
        if starter is None or rate <= alone:
            return self.tick(remaining_ms)
        part = fanout.capacity_per_invocation(MAX_SEND_WORKERS, SEND_TIME_ALLOWANCE, CPU_PER_EMAIL, PART_MEMORY_MB)
        count = fanout.invocations_for(rate, part)
        deadline = now_ms() + fanout.PART_WORK_SECONDS * 1000
        shards: list[int] = []
        share, started, unstarted = 0.0, 0, TickReport()
        for order in fanout.orders(rate, count, deadline):
            try:
                starter.start(order)
                started += 1
            except Exception as e:
                # Not started: its shards are this tick's, and so is its share of the rate.
                shards += order.shards
                share += order.rate
                self._count_error(unstarted, e, "starting dispatcher part %d of %d failed", order.part, count)
        report = TickReport()
        if shards:
            kept = fanout.ShardOrder(tuple(shards), share, deadline, 0, count)
            report = self.tick(kept.remaining_ms(remaining_ms, now_ms, SAFETY_MARGIN_MS), kept)
        report.fanned_out = started
        report.errors += unstarted.errors
        return report

    def shard_tick(
        self, event: Any, remaining_ms: Callable[[], int], now_ms: Callable[[], int] = _unix_ms
    ) -> TickReport:
        """One part of a fanned-out tick, from the order it was started with (``InvalidRequest``
        if malformed). Past the tick's deadline (a late or repeated start) it takes no work."""
        order = fanout.ShardOrder.from_event(event)
        return self.tick(order.remaining_ms(remaining_ms, now_ms, SAFETY_MARGIN_MS), order)

    def tick(self, remaining_ms: Callable[[], int], order: Optional[fanout.ShardOrder] = None) -> TickReport:
        """Work through everything due now (in ``order``'s shards, at its rate, when given)
        until done, throttled, or out of time.

        Up to ``send_workers(rate)`` enrolments are in flight at once, each in its own claim, so
        SES's latency does not cap the tick below the send rate. A lead's enrolments go one after
        another (its frequency cap reads what the one before sent). Throttling or the time budget
        stops new work; what is in flight finishes (a throttled send backs off). An item's error
        stops nothing but that item.
        """
        report = TickReport()
        if self._fresh_pacer_per_tick:
            self._pacer = None  # the stream's first sends start again at the account's rate too
        pacer = self._tick_pacer(order)
        workers = send_workers(pacer.rate)
        run = _TickRun(workers, pacer)
        shards = None if order is None else order.shards
        # The tick's stop signal and pacer, for its send workers (each task runs in a copy of this context).
        signal = _TICK.set(run)
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="send") as pool:
                for enrolment in self._store.due_enrolments(iso(self._clock.now()), shards=shards):
                    run.free_slot()  # at most `workers` in flight: the loop waits for one to finish
                    if run.stopping() or remaining_ms() < SAFETY_MARGIN_MS:
                        run.slot_unused()
                        report.stopped_early = True
                        break
                    if isinstance(enrolment, Broadcast):
                        run.slot_unused()
                        if not self._enrol_recipients(enrolment, remaining_ms, report):
                            report.stopped_early = True
                            break
                        continue
                    if isinstance(enrolment, Handoff):
                        run.slot_unused()
                        # A sales webhook waiting for its retry shares the due index with the steps.
                        if not self._handoff(enrolment, report):
                            report.stopped_early = True
                            break
                        continue
                    run.submit(pool, enrolment.lead_id, self.dispatch, enrolment)
        finally:
            _TICK.reset(signal)
        report = run.merged_into(report)
        # Quiet when the tick found nothing to do (once a minute, every minute).
        idle = report == TickReport()
        logger.log(logging.DEBUG if idle else logging.INFO, "dispatch tick", extra={"tick": asdict(report)})
        return report

    def _tick_pacer(self, order: Optional[fanout.ShardOrder]) -> Pacer:
        """A tick's own pacer: a part of a fanned-out tick paces its share of the rate; a tick
        without an injected pacer starts at the account's rate (a throttle slows only the tick
        it happened in, which then stops, not the warm container forever)."""
        if not self._fresh_pacer_per_tick:
            return self.pacer if order is None else self.pacer.share(order.rate)
        return Pacer(self._mailer.max_send_rate() if order is None else order.rate)

    def dispatch(self, enrolment: Enrolment, report: TickReport) -> bool:
        """Handle one due enrolment. Returns False when the tick should stop (SES throttling).

        Never raises an ``Exception``: the tick and the stream handler both go on with the rest.
        """
        now = self._clock.now()
        if enrolment.due_at is None or enrolment.status != EnrolmentStatus.ACTIVE or enrolment.due_at > iso(now):
            return True
        if _new_work_stopped():
            return False  # the tick was throttled since this was handed out: take nothing new
        claim_id = secrets.token_hex(8)
        try:
            claimed = self._store.claim(enrolment, claim_id, iso(now + LEASE))
        except Exception as e:
            # Not claimed, so nothing of ours to give back: still due, the next tick tries again.
            self._count_error(report, e, "claim of %s/%s failed", enrolment.lead_id, enrolment.sequence_id)
            return True
        if not claimed:
            report.lost_claims += 1  # another dispatcher has it
            return True
        report.claimed += 1
        attempts = enrolment.attempts + 1
        try:
            return self._dispatch_claimed(enrolment, claim_id, attempts, now, report)
        except Unsendable as e:
            self._unsendable(enrolment, claim_id, attempts, now, report, e)
        except Exception as e:
            self._failed(enrolment, claim_id, attempts, now, report, e)
        return True

    def _dispatch_claimed(
        self, enrolment: Enrolment, claim_id: str, attempts: int, now: datetime, report: TickReport
    ) -> bool:
        lead, suppression = self._store.load_for_dispatch(enrolment.lead_id)
        broadcast_id = broadcasts.broadcast_id_of(enrolment.sequence_id)
        if broadcast_id is not None:
            broadcast = self._broadcast(broadcast_id)
            if broadcast is not None and enrolment.step_index >= len(broadcast.variants) and broadcast.winner is None:
                broadcast = self._choose_winner(broadcast, now)
            decision = broadcasts.decide(self._campaign, broadcast, enrolment, lead, suppression, now)
        else:
            decision = rules.decide(self._campaign, enrolment, lead, suppression, now, self._event(enrolment))
        if isinstance(decision, rules.Exit):
            self._exit(enrolment, claim_id, decision.reason, report)
        elif isinstance(decision, rules.Advance):
            self._store.advance(enrolment, claim_id, decision.next_index, _iso_or_none(decision.next_due))
            report.skipped += 1
            if decision.next_due is None:
                report.completed += 1
        elif isinstance(decision, rules.Defer):
            self._store.release(enrolment, claim_id, iso(decision.until), reset_attempts=True)
            report.deferred += 1
        else:
            assert lead is not None
            return self._send(enrolment, claim_id, attempts, lead, decision, now, report)
        return True

    def _send(
        self,
        enrolment: Enrolment,
        claim_id: str,
        attempts: int,
        lead: Lead,
        decision: rules.Send,
        now: datetime,
        report: TickReport,
    ) -> bool:
        step = self._step(enrolment, decision.step_index)
        message_id = message_id_for(enrolment.sequence_id, step.id)
        variant: Optional[str] = None
        if step.variants:  # an A/B test of a drip step: this lead's version of the email
            variant, step = rules.step_variant(lead.lead_id, enrolment.sequence_id, step)
        magnet_id = rules.magnet_for(self._campaign, enrolment.sequence_id, lead)
        download_url = None
        if magnet_id is not None:
            magnet = self._campaign.magnets[magnet_id]
            download_url = self._assets.download_url(magnet.asset_key, int(magnet.link_lifetime.total_seconds()))
        confirm_url = None
        if enrolment.sequence_id == rules.CONFIRM_SEQUENCE and self._campaign.confirmation is not None:
            confirm_url = self._links.confirm(lead.lead_id, now, self._campaign.confirmation.expires_after)
        context = self._renderer.context(
            lead,
            enrolment.sequence_id,
            step,
            message_id,
            now,
            magnet_id=magnet_id,
            download_url=download_url,
            confirm_url=confirm_url,
            topic=self._broadcast_topic(enrolment),
        )
        rendered = self._renderer.render(step, context, lead.lead_id, message_id, now)
        raw = build_message(
            sender=self._campaign.sender,
            to=lead.email,
            rendered=rendered,
            reference=f"{lead.lead_id}/{message_id}",
            now=now,
            attachments=self._attachments(enrolment, step, lead, message_id, now),
        )
        pacer = _tick_pacer() or self.pacer
        pacer.wait()
        try:
            # The envelope as To carries it: an international domain in punycode.
            ses_message_id = self._mailer.send(self._campaign.sender.from_address, recipient(lead.email), raw)
        except SendThrottled:
            _stop_new_work()  # first: the other send workers take nothing new while this backs off
            self._metrics.add("SendFailures")
            self._store.release(enrolment, claim_id, iso(now + backoff(attempts)), reset_attempts=False)
            pacer.slow_down()
            report.throttled += 1
            return False
        except SendRejected as e:
            self._metrics.add("SendFailures")
            self._store.suppress(Suppression(lead.lead_id, rules.REJECTED, iso(now), e.code))
            self._store.finish(enrolment, claim_id, EnrolmentStatus.EXITED, rules.REJECTED)
            report.rejected += 1
            return True
        except SendFailed:
            self._metrics.add("SendFailures")
            logger.warning("send failed for %s/%s; retrying later", lead.lead_id, message_id, exc_info=True)
            self._store.release(enrolment, claim_id, iso(now + backoff(attempts)), reset_attempts=False)
            report.failed += 1
            return True
        self._metrics.add("EmailsSent")
        # When SES accepted it (after the pacer's wait): what a click is timed from (engagement).
        accepted_at = self._clock.now()
        # From here on an error must not be retried soon: the email went.
        try:
            message = Message(
                lead_id=lead.lead_id,
                message_id=message_id,
                sequence_id=enrolment.sequence_id,
                step_id=step.id,
                subject=rendered.subject,
                sent_at=iso(accepted_at),
                ses_message_id=ses_message_id,
                enrolled_at=enrolment.enrolled_at,
                links=rendered.links,
                variant=variant,
            )
            self._store.commit_send(
                enrolment,
                claim_id,
                message,
                decision.next_index,
                _iso_or_none(decision.next_due),
                self._send_log(enrolment, lead, now),
            )
        except InvalidRequest as e:  # DynamoDB refuses this commit as malformed: it always will
            self._sent_unrecordable(enrolment, claim_id, message_id, report, e)
            return True
        except (ConditionFailed, StoreError):
            # Sent but not recorded: the one window. The lease makes the step due again later.
            logger.error("sent %s/%s but could not record it", lead.lead_id, message_id, exc_info=True)
            report.failed += 1
            return True
        except Exception as e:
            self._sent_unrecordable(enrolment, claim_id, message_id, report, e)
            return True
        report.sent += 1
        if decision.next_due is None:
            report.completed += 1
        return True

    def _event(self, enrolment: Enrolment) -> Optional[rules.EventTimes]:
        """The enrolment's event as it stands (moved or cancelled since the campaign file)."""
        sequence = self._campaign.sequences.get(enrolment.sequence_id)
        scheduled = self._schedule.get(sequence.event) if sequence is not None and sequence.event else None
        if scheduled is None:
            return None
        return rules.EventTimes(scheduled.starts_at, scheduled.ends_at, scheduled.cancelled)

    def _attachments(
        self, enrolment: Enrolment, step: Step, lead: Lead, message_id: str, now: datetime
    ) -> tuple[Attachment, ...]:
        """The step's calendar invite, if it attaches one."""
        if not step.attach_invite:
            return ()
        found = self._renderer.invite(lead, enrolment.sequence_id, message_id, now, to=recipient(lead.email))
        if found is None:
            return ()
        return (calendar_attachment(found, now),)

    def _step(self, enrolment: Enrolment, index: int) -> Step:
        broadcast_id = broadcasts.broadcast_id_of(enrolment.sequence_id)
        if broadcast_id is not None:
            broadcast = self._broadcast(broadcast_id)
            assert broadcast is not None  # decide() exits a recipient whose broadcast is gone
            return broadcasts.sequence_of(broadcast).steps[index]
        sequence = rules.sequence_for(self._campaign, enrolment.sequence_id)
        assert sequence is not None
        return sequence.steps[index]

    def _broadcast_topic(self, enrolment: Enrolment) -> Optional[str]:
        broadcast_id = broadcasts.broadcast_id_of(enrolment.sequence_id)
        broadcast = self._broadcast(broadcast_id) if broadcast_id is not None else None
        return broadcast.topic if broadcast is not None else None

    def _send_log(self, enrolment: Enrolment, lead: Lead, now: datetime) -> Optional[list[str]]:
        """The lead's send log after this email, or None where it stays as it is: a broadcast
        counts toward the cap only when the campaign says so."""
        counted = broadcasts.broadcast_id_of(enrolment.sequence_id) is None
        if counted or self._campaign.broadcasts.count_toward_frequency_cap:
            return rules.recent_sends_after(lead.recent_sends, now, self._campaign.frequency_cap)
        return None

    def _broadcast(self, broadcast_id: str) -> Optional[Broadcast]:
        """The broadcast, read at most every BROADCAST_READ_SECONDS by this container's ticks."""
        now = time.monotonic()
        with self._broadcasts_lock:
            cached = self._broadcasts.get(broadcast_id)
            if cached is not None and now - cached[0] < BROADCAST_READ_SECONDS:
                return cached[1]
        broadcast = self._store.get_broadcast(broadcast_id)
        with self._broadcasts_lock:
            self._broadcasts[broadcast_id] = (now, broadcast)
        return broadcast

    def _choose_winner(self, broadcast: Broadcast, now: datetime) -> Broadcast:
        """The A/B test's winner, from people's clicks (or opens) per variant so far; chosen once
        (a conditional write: a racing dispatcher reads the one that landed)."""
        assert broadcast.winner_after is not None
        if now < parse_iso(broadcast.send_at) + timedelta(seconds=broadcast.winner_after):
            return broadcast
        sequence_id = broadcasts.sequence_id_of(broadcast.broadcast_id)
        counts = {
            counter.parts[1]: dict(fields)
            for counter, fields in self._store.report_counters().items()
            if counter.kind == "step" and counter.parts[:1] == (sequence_id,)
        }
        winner, reason = broadcasts.winner_of(broadcast, counts)
        self._store.set_broadcast_winner(broadcast.broadcast_id, winner, reason, iso(now))
        with self._broadcasts_lock:
            self._broadcasts.pop(broadcast.broadcast_id, None)
        return self._broadcast(broadcast.broadcast_id) or broadcast

    def _enrol_recipients(self, broadcast: Broadcast, remaining_ms: Callable[[], int], report: TickReport) -> bool:
        """Enrol a due broadcast's segment, page by page, under a claim; each recipient once
        (a conditional put), the cursor saved after each page. Out of time: released, and the
        next tick goes on from the cursor. False when the tick should stop."""
        from chalicelib.segments import matches, plan

        now = self._clock.now()
        claim_id = secrets.token_hex(8)
        try:
            if not self._store.claim_broadcast(broadcast, claim_id, iso(now + LEASE)):
                report.lost_claims += 1
                return True
            segment = broadcasts.segment_of(self._campaign, broadcast)
            cursor = broadcast.cursor
            status = BroadcastStatus.TESTING if broadcast.test_fraction else BroadcastStatus.SENDING
            for leads, after in self._store.segment_pages(plan(segment), cursor, page_size=RECIPIENT_PAGE):
                enrolled = self._store.enrol_recipients(
                    [
                        broadcasts.recipient_enrolment(self._campaign, broadcast, lead, now)
                        for lead in leads
                        if matches(segment, lead, now)
                    ]
                )
                self._store.save_enrolment_progress(broadcast.broadcast_id, claim_id, after, enrolled, status)
                report.enrolled += enrolled
                cursor = after
                if after is None:
                    return True
                if remaining_ms() < SAFETY_MARGIN_MS:
                    self._store.release_broadcast(broadcast.broadcast_id, claim_id, iso(now))
                    return False
            # An index read with no page at all: nobody to enrol.
            self._store.save_enrolment_progress(broadcast.broadcast_id, claim_id, None, 0, status)
        except Exception as e:
            # The lease brings it back; what was enrolled stays enrolled, once.
            self._count_error(report, e, "enrolling the recipients of broadcast %s failed", broadcast.broadcast_id)
        return True

    def _exit(self, enrolment: Enrolment, claim_id: str, reason: str, report: TickReport) -> None:
        self._store.finish(enrolment, claim_id, EnrolmentStatus.EXITED, reason)
        report.exited += 1
        report.exits[reason] = report.exits.get(reason, 0) + 1

    def _unsendable(
        self, enrolment: Enrolment, claim_id: str, attempts: int, now: datetime, report: TickReport, e: Unsendable
    ) -> None:
        """The lead's own address cannot make an email: retrying cannot help. Suppressed, so its
        other enrolments exit too, and this one exits now."""
        logger.warning(
            "no email can be built for %s/%s; address suppressed",
            enrolment.lead_id,
            enrolment.sequence_id,
            extra={"reason": e.reason},  # fixed texts (mime.mailbox's), never part of the address
        )
        try:
            self._store.suppress(Suppression(enrolment.lead_id, rules.INVALID_ADDRESS, iso(now), e.reason))
            self._exit(enrolment, claim_id, rules.INVALID_ADDRESS, report)
        except Exception as error:
            self._failed(enrolment, claim_id, attempts, now, report, error)

    def _failed(
        self, enrolment: Enrolment, claim_id: str, attempts: int, now: datetime, report: TickReport, e: Exception
    ) -> None:
        """An error before anything was sent: this item backs off, or exits after MAX_ATTEMPTS."""
        given_up = attempts >= MAX_ATTEMPTS
        self._count_error(
            report,
            e,
            "dispatch of %s/%s failed (attempt %d); %s",
            enrolment.lead_id,
            enrolment.sequence_id,
            attempts,
            "giving up" if given_up else "backing off",
        )
        try:
            if given_up:
                self._exit(enrolment, claim_id, rules.UNDELIVERABLE, report)
            else:
                self._store.release(enrolment, claim_id, iso(now + backoff(attempts)), reset_attempts=False)
        except Exception as error:
            # Still claimed: the lease's end brings the step back, and counts as the next attempt.
            self._count_error(report, error, "could not release %s/%s", enrolment.lead_id, enrolment.sequence_id)

    def _sent_unrecordable(
        self, enrolment: Enrolment, claim_id: str, message_id: str, report: TickReport, e: Exception
    ) -> None:
        """SES took the email but this commit is refused for good: every retry would send it once
        more, so the enrolment exits instead (best effort: else the lease brings it back)."""
        report.failed += 1
        self._count_error(report, e, "sent %s/%s but cannot record it; exiting", enrolment.lead_id, message_id)
        try:
            self._exit(enrolment, claim_id, rules.UNDELIVERABLE, report)
        except Exception as error:
            self._count_error(report, error, "could not exit %s/%s", enrolment.lead_id, enrolment.sequence_id)

    def _handoff(self, handoff: Handoff, report: TickReport) -> bool:
        """A due handoff (a webhook retry, or one whose notifier died). False: throttled, stop.

        On an error the handoff stays claimed: its lease's end (``HANDOFF_LEASE``) brings it back.
        """
        if self._on_due_handoff is None:
            return True
        try:
            self._on_due_handoff(handoff)
        except SendThrottled:
            report.throttled += 1
            return False
        except Exception as e:
            self._count_error(report, e, "handoff of %s failed; retried after its lease", handoff.lead_id)
        return True

    def _count_error(self, report: TickReport, e: BaseException, message: str, *args: Any) -> None:
        """Log an item's error by its references only, and count it.

        Not the exception's message: it may quote the item's data (a name, a company) and the log
        formatter can only recognise addresses. The type and the frames say where it broke.
        """
        report.errors += 1
        self._metrics.add("ItemErrors")
        logger.error(
            message,
            *args,
            extra={"error_type": type(e).__name__, "error_frames": "".join(traceback.format_tb(e.__traceback__))},
        )


def _iso_or_none(moment: Optional[datetime]) -> Optional[str]:
    return None if moment is None else iso(moment)


# The running tick, seen by its send workers through their copied context: its pacer, and its
# stop signal, which a throttled send raises the moment SES answers, before its own bookkeeping,
# so that no other worker claims new work in between. Outside a tick (the stream's first sends)
# there is none. Several ticks at once in one process (the twin's fan-out) each see their own.
_TICK: contextvars.ContextVar[Optional[_TickRun]] = contextvars.ContextVar("tick", default=None)


def _new_work_stopped() -> bool:
    run = _TICK.get()
    return run is not None and run.stopping()


def _stop_new_work() -> None:
    run = _TICK.get()
    if run is not None:
        run.stop_signal.set()


def _tick_pacer() -> Optional[Pacer]:
    run = _TICK.get()
    return None if run is None else run.pacer


class _TickRun:
    """The bookkeeping of one concurrent tick: slots, per-lead order, reports, the stop signal."""

    def __init__(self, workers: int, pacer: Pacer) -> None:
        self.pacer = pacer
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reports: list[TickReport] = []
        self._errors: list[BaseException] = []
        self._last_of_lead: dict[str, Future[None]] = {}

    def free_slot(self) -> None:
        self._slots.acquire()

    def slot_unused(self) -> None:
        self._slots.release()

    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def stop_signal(self) -> threading.Event:
        return self._stop

    def submit(
        self, pool: ThreadPoolExecutor, lead_id: str, dispatch: Callable[[Enrolment, TickReport], bool], item: Enrolment
    ) -> None:
        before = self._last_of_lead.get(lead_id)
        # Each task runs in a copy of this context: its log lines keep the tick's correlation id.
        context = contextvars.copy_context()
        self._last_of_lead[lead_id] = pool.submit(context.run, self._run, before, dispatch, item)

    def _run(
        self, before: Optional[Future[None]], dispatch: Callable[[Enrolment, TickReport], bool], item: Enrolment
    ) -> None:
        report = TickReport()
        try:
            if before is not None:
                # Submitted earlier, so already started by the FIFO pool: waiting cannot deadlock.
                futures_wait([before])
            if not self._stop.is_set() and not dispatch(item, report):
                self._stop.set()  # throttled: take no new work
        except BaseException as e:
            self._stop.set()
            with self._lock:
                self._errors.append(e)
        finally:
            with self._lock:
                self._reports.append(report)
            self._slots.release()

    def merged_into(self, total: TickReport) -> TickReport:
        """The tick's report (after the pool has finished); re-raises a task's error."""
        if self._errors:
            raise self._errors[0]
        counts = [f.name for f in fields(TickReport) if f.type in (int, "int")]
        for part in self._reports:
            for name in counts:
                setattr(total, name, getattr(total, name) + getattr(part, name))
            for reason, count in part.exits.items():
                total.exits[reason] = total.exits.get(reason, 0) + count
        total.stopped_early = total.stopped_early or self._stop.is_set()
        return total
