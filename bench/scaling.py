"""Item 2: a dispatcher tick with the same 100 due enrolments among more and more idle leads.

The setup is tests/integration/test_dispatch_scaling.py's, at larger sizes: 100 leads captured through the
form, idle leads bulk-written in the exact shape capture writes (half finished their sequence and
are out of the due index, half wait a week for their next step), and, before each measurement,
the 100 due leads put back exactly as captured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import boto3
from botocore.config import Config

from bench.meter import Usage
from bench.world import bulk_load, world
from chalicelib import aws
from chalicelib.entities import lead_id_for
from testkit.items import batch_get, batch_write, idle_items, item_key, lead_items, put_all

DUE = 100


@dataclass
class Point:
    idle: int
    usage: Usage
    seconds: float
    sent: int
    seed_seconds: float


def measure(sizes: tuple[int, ...]) -> list[Point]:
    points: list[Point] = []
    with world() as w:
        ddb, table = aws.dynamodb(), w.settings.table_name
        due_leads = [lead_id_for(f"lead{i}@example.com") for i in range(DUE)]
        for i in range(DUE):
            answer = w.post_json("/forms/newsletter", {"email": f"lead{i}@example.com", "consent": True})
            assert answer.status_code == 200, answer.body
        as_captured = [item for lead_id in due_leads for item in lead_items(ddb, table, lead_id)]
        captured = {item_key(i): i for i in as_captured}
        profile = captured[(f"LEAD#{due_leads[0]}", "PROFILE")]
        enrolment = captured[(f"LEAD#{due_leads[0]}", "ENROL#welcome")]
        loader = boto3.client("dynamodb", config=Config(parameter_validation=False))
        written = 0
        for idle in sizes:
            start = time.perf_counter()
            with bulk_load(table):
                put_all(loader, table, idle_items(profile, enrolment, written, idle - written))
            if points:  # the same due work again: the 100 leads as captured, their messages gone
                # The welcome's message keys, known from the enrolments (a Query per lead would be
                # O(table) in moto).
                messages = [
                    {"pk": i["pk"], "sk": {"S": f"MSG#welcome.welcome#{i['enrolled_at']['S']}"}}
                    for i in as_captured
                    if i["sk"]["S"] == "ENROL#welcome"
                ]
                assert len(batch_get(loader, table, messages)) == DUE
                with bulk_load(table):
                    batch_write(loader, table, [{"DeleteRequest": {"Key": key}} for key in messages])
                    put_all(loader, table, as_captured)
                keys = [{"pk": i["pk"], "sk": i["sk"]} for i in as_captured]
                restored = batch_get(loader, table, keys + messages)
                assert sorted(restored, key=item_key) == sorted(as_captured, key=item_key)
            seed_seconds = time.perf_counter() - start
            written = idle
            sent_before = w.sent_count()
            with w.meter.window() as usage:
                tick_start = time.perf_counter()
                report = w.tick()
                seconds = time.perf_counter() - tick_start
            assert usage.errors == 0, usage.by_operation
            points.append(Point(idle, usage, seconds, w.sent_count() - sent_before, seed_seconds))
            assert report["sent"] == DUE, report
    return points


def table(points: list[Point]) -> list[str]:
    lines = [
        "| idle leads | emails sent | DynamoDB requests | read units | write units | tick wall time (s) "
        "| of it in AWS calls (s) | seeding (s) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        ops = ", ".join(f"{k.split(':')[1]} {n}" for k, n in sorted(p.usage.by_operation.items()))
        lines.append(
            f"| {p.idle:,} | {p.sent} | {ops} | {p.usage.rcu:g} | {p.usage.wcu:g} | {p.seconds:.2f} | "
            f"{p.usage.aws_seconds:.2f} | {p.seed_seconds:.1f} |"
        )
    return lines


def ratios(points: list[Point]) -> dict[str, float]:
    small, large = points[0], points[-1]
    return {
        "read_units": large.usage.rcu / small.usage.rcu,
        "requests": len(large.usage.calls) / len(small.usage.calls),
        "wall": large.seconds / small.seconds,
        "our_code": (large.seconds - large.usage.aws_seconds) / (small.seconds - small.usage.aws_seconds),
    }
