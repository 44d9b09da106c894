"""Items 3 and 4: dispatch throughput against a send-rate limit; capture throughput and latency.

Dispatch: SES is a stub (a benchmark of our pacing, not of SES) that takes 50 ms per send, the
Pacer runs on the real monotonic clock at 50 emails/s, and the tick gets a real Lambda deadline.
"""

from __future__ import annotations

import secrets
import statistics
import threading
import time
from dataclasses import dataclass

import boto3
from botocore.config import Config

from bench.meter import Usage
from bench.world import bulk_load, world
from chalicelib import aws
from chalicelib.entities import iso, lead_id_for
from chalicelib.nurture.dispatcher import SAFETY_MARGIN_MS, Pacer
from chalicelib.store import due_shard
from testkit.items import item_key, lead_items, put_all
from twin.pump import LambdaContext

SEND_LATENCY = 0.050
MAX_RATE = 50.0


class SlowSes:
    """A Mailer that takes SES's typical 50 ms per SendEmail and accepts everything."""

    def __init__(self, latency: float = SEND_LATENCY, rate: float = MAX_RATE) -> None:
        self.latency = latency
        self.rate = rate
        self.sent = 0
        self._lock = threading.Lock()

    def send(self, source: str, to: str, raw: bytes) -> str:
        time.sleep(self.latency)
        with self._lock:  # the dispatcher's send workers call at once
            self.sent += 1
        return secrets.token_hex(16)

    def max_send_rate(self) -> float:
        return self.rate


@dataclass
class Dispatch:
    sent: int
    seconds: float
    work_seconds: float
    budget_seconds: float
    usage: Usage

    @property
    def rate(self) -> float:
        return self.sent / self.seconds


def dispatch(work_seconds: float) -> Dispatch:
    """One tick with more due welcomes than the budget allows; emails per second achieved."""
    mailer = SlowSes()
    due = int(MAX_RATE * work_seconds * 1.5)
    with world(pacer=Pacer(MAX_RATE), mailer=mailer) as w:
        ddb, table = aws.dynamodb(), w.settings.table_name
        template_email = "due0@example.com"
        assert w.post_json("/forms/newsletter", {"email": template_email, "consent": True}).status_code == 200
        items = {item_key(i)[1]: i for i in lead_items(ddb, table, lead_id_for(template_email))}
        profile, enrolment = items["PROFILE"], items["ENROL#welcome"]
        now = iso(w.clock.now())
        clones = []
        for i in range(1, due):
            address = f"due{i}@example.com"
            lead_id = lead_id_for(address)
            pk = {"S": f"LEAD#{lead_id}"}
            clones.append(
                {
                    **profile,
                    "pk": pk,
                    "lead_id": {"S": lead_id},
                    "email": {"S": address},
                    "email_identity": {"S": address},
                }
            )
            clones.append(
                {
                    **enrolment,
                    "pk": pk,
                    "lead_id": {"S": lead_id},
                    "due_at": {"S": now},
                    "due_shard": {"S": due_shard(lead_id)},
                }
            )
        loader = boto3.client("dynamodb", config=Config(parameter_validation=False))
        with bulk_load(table):
            put_all(loader, table, clones)
        w.stream.read()  # what the seeding wrote is not this benchmark's
        budget = work_seconds + SAFETY_MARGIN_MS / 1000
        with w.meter.window() as usage:
            start = time.perf_counter()
            report = w.tick(LambdaContext("dispatch", timeout_seconds=budget))
            seconds = time.perf_counter() - start
        assert report["sent"] == mailer.sent, report
        return Dispatch(mailer.sent, seconds, work_seconds, budget, usage)


@dataclass
class Captures:
    latencies: list[float]
    seconds: float
    usage: Usage

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def capture(requests: int) -> Captures:
    """Form submissions through the Chalice app in-process, one after another, each a new lead."""
    with world() as w:
        w.post_json("/forms/newsletter", {"email": "warm@example.com", "consent": True})  # warm-up
        latencies = []
        with w.meter.window() as usage:
            start = time.perf_counter()
            for i in range(requests):
                t = time.perf_counter()
                answer = w.post_json("/forms/newsletter", {"email": f"c{i}@example.com", "consent": True})
                latencies.append(time.perf_counter() - t)
                assert answer.status_code == 200, answer.body
            seconds = time.perf_counter() - start
        return Captures(latencies, seconds, usage)


def dispatch_table(d: Dispatch) -> list[str]:
    ses_share = d.sent * SEND_LATENCY / d.seconds
    return [
        "| limit (emails/s) | SES latency (stub) | emails sent | tick time (s) | achieved (emails/s) "
        "| achieved / limit | time in SES sends | time in DynamoDB calls |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {MAX_RATE:g} | {SEND_LATENCY * 1000:.0f} ms | {d.sent} | {d.seconds:.2f} | {d.rate:.1f} | "
        f"{d.rate / MAX_RATE:.2f} | {ses_share:.0%} | {d.usage.aws_seconds / d.seconds:.0%} |",
    ]


def capture_table(c: Captures) -> list[str]:
    aws_share = c.usage.aws_seconds / c.seconds
    return [
        "| requests | throughput (req/s, one thread) | p50 (ms) | p99 (ms) | min / max (ms) "
        "| in our code + Chalice | in AWS calls (botocore + moto) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(c.latencies)} | {len(c.latencies) / c.seconds:.1f} | {statistics.median(c.latencies) * 1000:.1f} | "
        f"{c.percentile(0.99) * 1000:.1f} | {min(c.latencies) * 1000:.1f} / {max(c.latencies) * 1000:.1f} | "
        f"{1 - aws_share:.0%} | {aws_share:.0%} |",
    ]
