"""Item 8: a broadcast to a segment: requests, units and SES calls per recipient at two sizes;
the CPU our own code spends per email; throughput against the send rate with parallel
dispatchers (fan-out); the AWS cost per 1,000 recipients against SES's own price.

The recipients are newsletter readers cloned from one captured through the form (its profile
exactly as capture wrote it), bulk-written, so the segment's index reads what it would read.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from moto.core.botocore_stubber import BotocoreStubber

from bench.cost import PRICES, memory_mb
from bench.meter import Usage
from bench.throughput import SlowSes
from bench.world import World, bulk_load, world
from chalicelib import aws
from chalicelib.entities import lead_id_for
from chalicelib.nurture import dispatcher as dispatching
from chalicelib.nurture import fanout
from chalicelib.nurture.dispatcher import SAFETY_MARGIN_MS, Dispatcher, TickReport
from chalicelib.nurture.render import Renderer
from testkit.fanout import BroadcastsOnly
from testkit.items import item_key, lead_items, put_all
from twin.pump import LambdaContext

SEGMENT = "newsletter-readers"
ISSUE = {"subject": "The Trellis letter, {{ first_name or 'friend' }}", "template": "email/broadcast.html"}
# What the throughput model simulates per request, outside moto's lock (DynamoDB's and SES's
# typical latency inside a region).
DDB_LATENCY = 0.010
SES_LATENCY = 0.050


def seed_readers(w: World, count: int) -> None:
    """``count`` newsletter readers: one signed up through the form, the rest its clones."""
    first = "reader0@example.com"
    assert w.post_json("/forms/newsletter", {"email": first, "first_name": "Sam", "consent": True}).status_code == 200
    ddb, table = aws.dynamodb(), w.settings.table_name
    profile = {item_key(i)[1]: i for i in lead_items(ddb, table, lead_id_for(first))}["PROFILE"]
    clones = []
    for n in range(1, count):
        email = f"reader{n}@example.com"
        lead_id = lead_id_for(email)
        clones.append(
            {
                **profile,
                "pk": {"S": f"LEAD#{lead_id}"},
                "lead_id": {"S": lead_id},
                "email": {"S": email},
                "email_identity": {"S": email},
            }
        )
    loader = boto3.client("dynamodb", config=Config(parameter_validation=False))
    with bulk_load(table):
        put_all(loader, table, clones)
    w.pump()  # the first reader's welcome and its stream: not the broadcast's
    w.tick()
    w.pump()


def schedule(w: World) -> str:
    from chalicelib.models import BroadcastIn

    body = BroadcastIn.model_validate(
        {"name": "December issue", "topic": "newsletter", "segment": SEGMENT, "variants": [ISSUE]}
    )
    return w.rt.broadcasts.create(body).broadcast_id


class CpuSplit:
    """CPU seconds spent inside moto (standing in for DynamoDB's and SES's servers) and inside
    botocore's client calls (serialising, signing, parsing: what a Lambda pays), per thread."""

    def __init__(self) -> None:
        self.moto = 0.0
        self.sdk = 0.0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        process, call = BotocoreStubber.process_request, BaseClient._make_api_call
        split = self

        def in_moto(stub: Any, request: Any) -> Any:
            start = time.thread_time()
            try:
                return process(stub, request)
            finally:
                split._add("moto", time.thread_time() - start)

        def in_sdk(client: Any, operation: str, params: Any) -> Any:
            start = time.thread_time()
            try:
                return call(client, operation, params)
            finally:
                split._add("sdk", time.thread_time() - start)

        BotocoreStubber.process_request = in_moto  # type: ignore[method-assign]
        BaseClient._make_api_call = in_sdk  # type: ignore[method-assign]
        try:
            yield
        finally:
            BotocoreStubber.process_request = process  # type: ignore[method-assign]
            BaseClient._make_api_call = call  # type: ignore[method-assign]

    def _add(self, bucket: str, seconds: float) -> None:
        with self._lock:
            setattr(self, bucket, getattr(self, bucket) + seconds)


@dataclass
class Sending:
    recipients: int
    usage: Usage
    ses_calls: int
    ticks: int
    seconds: float
    cpu_total: float
    cpu_moto: float
    cpu_sdk: float
    lambda_seconds: dict[str, float] = field(default_factory=dict)
    lambda_invocations: dict[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return self.usage.count("dynamodb")

    @property
    def our_cpu_per_email(self) -> float:
        """Ours: rendering, MIME, the dispatcher's bookkeeping (the SDK's share apart)."""
        return (self.cpu_total - self.cpu_sdk) / self.recipients

    @property
    def sdk_cpu_per_email(self) -> float:
        return (self.cpu_sdk - self.cpu_moto) / self.recipients


def send_to(count: int) -> Sending:
    """A broadcast to ``count`` readers, ticked (and the stream pumped) until every one is sent;
    everything the app asked of AWS meanwhile, and the CPU it took."""
    with world() as w:
        seed_readers(w, count)
        broadcast_id = schedule(w)
        first_invocation = len(w.invocations)
        split = CpuSplit()
        ticks = 0
        cpu = 0.0
        start = time.perf_counter()
        with w.meter.window() as usage:
            while True:
                with split.measuring():
                    before = time.process_time()
                    report = w.tick(LambdaContext("dispatch", timeout_seconds=3600))
                    cpu += time.process_time() - before
                ticks += 1
                w.pump()
                if report["claimed"] == 0 and report["enrolled"] == 0:
                    break
                assert ticks < 1000, report
        seconds = time.perf_counter() - start
        assert usage.errors == 0, usage.by_operation
        sent = w.rt.broadcasts.detail(broadcast_id)
        assert sent.sent == count and sent.recipients == count, (sent.sent, sent.recipients)
        lambda_seconds: dict[str, float] = {}
        lambda_invocations: dict[str, int] = {}
        for invocation in w.invocations[first_invocation:]:
            lambda_seconds[invocation.function] = lambda_seconds.get(invocation.function, 0.0) + invocation.seconds
            lambda_invocations[invocation.function] = lambda_invocations.get(invocation.function, 0) + 1
        return Sending(
            count,
            usage,
            usage.ses_sends,
            ticks,
            seconds,
            cpu,
            split.moto,
            split.sdk,
            lambda_seconds,
            lambda_invocations,
        )


# -- throughput with fan-out -------------------------------------------------------------------


@contextlib.contextmanager
def dynamodb_latency(seconds: float) -> Iterator[None]:
    """Every DynamoDB request waits ``seconds`` before moto takes it (outside moto's one-at-a-time
    lock, so requests of different workers overlap their waits, as round trips do)."""
    process = BotocoreStubber.process_request

    def slow(stub: Any, request: Any) -> Any:
        if "dynamodb" in request.url:
            time.sleep(seconds)
        return process(stub, request)

    BotocoreStubber.process_request = slow  # type: ignore[method-assign]
    try:
        yield
    finally:
        BotocoreStubber.process_request = process  # type: ignore[method-assign]


class TimedSes(SlowSes):
    """SlowSes that notes when each send was accepted (the steady rate between first and last)."""

    def __init__(self, latency: float, rate: float) -> None:
        super().__init__(latency, rate)
        self.times: list[float] = []

    def send(self, source: str, to: str, raw: bytes) -> str:
        answer = super().send(source, to, raw)
        with self._lock:
            self.times.append(time.perf_counter())
        return answer


@dataclass
class Rate:
    limit: float
    parts: int
    planned: int
    dilation: float
    sent: int
    seconds: float
    steady_seconds: float
    ramp_seconds: float  # from the parts' start to the first email (dilated)

    @property
    def achieved(self) -> float:
        """Emails a second (undilated) over the whole run, from the parts' start to their end."""
        return self.sent / self.seconds * self.dilation

    @property
    def steady(self) -> float:
        """The pace once the workers are going: the emails over the time from the first to the
        last, plus one pacing interval of a part (each part's first email goes at once, so the
        span alone would overstate the pace by a slot per part)."""
        interval = self.parts * self.dilation / self.limit
        return self.sent / (self.steady_seconds + interval) * self.dilation

    @property
    def share(self) -> float:
        return self.achieved / self.limit

    @property
    def per_minute(self) -> float:
        """A minute of sending as the schedule runs it: the parts start, ramp up, go at the steady
        pace until they stop taking work (fanout.PART_WORK_SECONDS), and the next minute's begin."""
        working = fanout.PART_WORK_SECONDS - self.ramp_seconds / self.dilation
        return self.steady * working / 60.0

    @property
    def minute_share(self) -> float:
        return self.per_minute / self.limit


def throughput(limit: float, parts: int, work_seconds: float, dilation: float) -> Rate:
    """A broadcast's recipients sent by ``parts`` dispatchers at once (the tick's fan-out orders),
    the account's rate ``limit``, for ``work_seconds``.

    Time is dilated: latencies and the send-time allowance ``dilation`` times longer, rates that
    many times lower. In-process moto does DynamoDB's and SES's work on this machine's CPU under
    one lock (a full email costs ~30 ms of it, see the CPU figure), and two cores cannot do 200
    emails' worth of that a second; dilated, that CPU is a small share of each email's time, as
    the servers' work is of a real round trip, while the pacing, the workers and the fan-out
    run exactly as they do at full speed.
    """
    rate = limit / dilation
    recipients = int(rate * work_seconds * 1.3) + 20
    mailer = TimedSes(latency=SES_LATENCY * dilation, rate=rate)
    with world(mailer=mailer) as w:
        seed_readers(w, recipients)
        schedule(w)
        rt = w.rt

        def dispatcher(store: Any = None) -> Dispatcher:
            return Dispatcher(
                rt.campaign,
                store or rt.store,
                mailer,
                Renderer(rt.campaign, rt.links),
                rt.links,
                rt.assets,
                rt.clock,
                None,  # each tick paces at the account's rate, or at its part's share
            )

        with contextlib.redirect_stdout(w.sink):  # the ticks' log lines, as in World's invocations
            return _measure(w, dispatcher, mailer, limit, rate, parts, work_seconds, dilation, recipients)


def _measure(
    w: World,
    dispatcher: Callable[..., Dispatcher],
    mailer: TimedSes,
    limit: float,
    rate: float,
    parts: int,
    work_seconds: float,
    dilation: float,
    recipients: int,
) -> Rate:
    enrolled = dispatcher(BroadcastsOnly(w.rt.store)).tick(lambda: 3_600_000)
    assert enrolled.enrolled == recipients, enrolled
    before = mailer.sent
    original = dispatching.SEND_TIME_ALLOWANCE
    dispatching.SEND_TIME_ALLOWANCE = original * dilation
    try:
        planned = fanout.invocations_for(
            rate,
            fanout.capacity_per_invocation(
                dispatching.MAX_SEND_WORKERS,
                dispatching.SEND_TIME_ALLOWANCE,
                dispatching.CPU_PER_EMAIL * dilation,
                dispatching.PART_MEMORY_MB,
            ),
        )
        with dynamodb_latency(DDB_LATENCY * dilation):
            started = time.perf_counter()
            seconds = _run_parts(dispatcher, rate, parts, work_seconds)
    finally:
        dispatching.SEND_TIME_ALLOWANCE = original
    times = mailer.times[before:]
    return Rate(
        limit, parts, planned, dilation, mailer.sent - before, seconds, times[-1] - times[0], times[0] - started
    )


def _run_parts(dispatcher: Callable[[], Dispatcher], rate: float, parts: int, work_seconds: float) -> float:
    budget_ms = int((work_seconds + SAFETY_MARGIN_MS / 1000) * 1000)
    deadline = int(time.time() * 1000) + int(work_seconds * 1000)
    reports: list[TickReport] = []
    lock = threading.Lock()

    def run(order: fanout.ShardOrder) -> None:
        context = LambdaContext("dispatch_shard", timeout_seconds=budget_ms / 1000)
        report = dispatcher().tick(
            order.remaining_ms(context.get_remaining_time_in_millis, _now_ms, SAFETY_MARGIN_MS), order
        )
        with lock:
            reports.append(report)

    threads = [threading.Thread(target=run, args=(o,)) for o in fanout.orders(rate, parts, deadline)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    assert all(r.errors == 0 and r.throttled == 0 for r in reports), reports
    return seconds


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- tables --------------------------------------------------------------------------------------


def per_recipient_table(runs: list[Sending]) -> list[str]:
    lines = [
        "| recipients | DynamoDB requests / recipient | read units / recipient | write units / recipient "
        "| SES calls / recipient | ticks | requests by operation |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        n = r.recipients
        ops = ", ".join(f"{k.split(':')[1]} {v}" for k, v in sorted(r.usage.by_operation.items()))
        lines.append(
            f"| {n:,} | {r.requests / n:.3f} | {r.usage.rcu / n:.3f} | {r.usage.wcu / n:.3f} | "
            f"{r.ses_calls / n:.3f} | {r.ticks} | {ops} |"
        )
    return lines


def ratios(small: Sending, large: Sending) -> dict[str, float]:
    def per(r: Sending, value: float) -> float:
        return value / r.recipients

    return {
        "requests": per(large, large.requests) / per(small, small.requests),
        "read_units": per(large, large.usage.rcu) / per(small, small.usage.rcu),
        "write_units": per(large, large.usage.wcu) / per(small, small.usage.wcu),
    }


def cpu_table(r: Sending) -> list[str]:
    ours, sdk = r.our_cpu_per_email * 1000, r.sdk_cpu_per_email * 1000
    moto = r.cpu_moto / r.recipients * 1000
    return [
        "| recipients | our code (render, MIME, bookkeeping) | botocore (serialise, sign, parse) "
        "| moto (DynamoDB's and SES's work, not ours) | one vCPU's emails/s, ours + botocore |",
        "|---:|---:|---:|---:|---:|",
        f"| {r.recipients:,} | {ours:.1f} ms | {sdk:.1f} ms | {moto:.1f} ms | {1000 / (ours + sdk):.0f} |",
    ]


def throughput_table(points: list[Rate]) -> list[str]:
    lines = [
        "| send-rate limit | dispatchers at once | the tick would start | emails sent | steady pace "
        "| first email after | a scheduled minute (emails/s) | minute / limit |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p.limit:g}/s | {p.parts} | {p.planned} | {p.sent} | {p.steady:.1f}/s "
            f"| {p.ramp_seconds / p.dilation * 1000:.0f} ms | {p.per_minute:.1f} | {p.minute_share:.2f} |"
        )
    return lines


@dataclass
class Bill:
    lines: list[tuple[str, float, str, float]]  # what, quantity per 1,000 recipients, unit, dollars

    @property
    def total(self) -> float:
        return sum(line[3] for line in self.lines)


def bill(r: Sending) -> Bill:
    scale = 1000 / r.recipients
    memory, _ = memory_mb()
    gb_seconds = sum(
        seconds * memory.get(function, 256) / 1024 * scale for function, seconds in r.lambda_seconds.items()
    )
    invocations = sum(r.lambda_invocations.values()) * scale
    rows = [
        ("SES emails", r.ses_calls * scale, "emails", r.ses_calls * scale * PRICES["ses_email"]["usd"]),
        ("DynamoDB writes", r.usage.wcu * scale, "WRU", r.usage.wcu * scale * PRICES["dynamodb_wru"]["usd"]),
        ("DynamoDB reads", r.usage.rcu * scale, "RRU", r.usage.rcu * scale * PRICES["dynamodb_rru"]["usd"]),
        ("Lambda compute", gb_seconds, "GB-s", gb_seconds * PRICES["lambda_gb_second"]["usd"]),
        ("Lambda requests", invocations, "invocations", invocations * PRICES["lambda_request"]["usd"]),
    ]
    return Bill(rows)


def bill_table(b: Bill) -> list[str]:
    lines = ["| per 1,000 recipients | quantity | dollars |", "|---|---:|---:|"]
    for what, quantity, unit, dollars in b.lines:
        lines.append(f"| {what} | {quantity:,.1f} {unit} | ${dollars:.5f} |")
    lines.append(f"| **total** | | **${b.total:.4f}** |")
    return lines
