"""Item 1: the AWS requests behind each operation, on a fresh stage each."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.meter import Usage
from bench.world import World, world

NEWSLETTER = {"email": "ann@example.com", "first_name": "Ann", "consent": True}
RAISER = {"email": "rae@beta.example", "first_name": "Rae", "company": "Beta", "consent": True}


@dataclass
class Row:
    operation: str
    usage: Usage
    per: int = 1  # the usage covers this many operations; the row shows it divided
    note: str = ""


def _drain(w: World) -> None:
    """Deliver everything pending on the stream (its own feedback too), outside any measurement."""
    w.pump()


def _ops(usage: Usage, per: int = 1) -> str:
    counts: Counter[str] = usage.by_operation
    return ", ".join(f"{name.split(':')[1]} {n / per:g}" for name, n in sorted(counts.items()))


def measure() -> list[Row]:
    rows: list[Row] = []
    with world() as w:
        with w.meter.window() as u:
            answer = w.post_json("/forms/newsletter", NEWSLETTER)
        assert answer.status_code == 200, answer.body
        rows.append(Row("accepted form submission (`POST /forms/newsletter`)", u))
        with w.meter.window() as u:
            answer = w.post_json("/forms/newsletter", NEWSLETTER)
        assert answer.status_code == 200, answer.body
        rows.append(Row("resubmission of a known lead", u))
        with w.meter.window() as u:
            answer = w.post_json("/forms/newsletter", {**NEWSLETTER, "email": "bot@example.com", "website": "x"})
        assert answer.status_code == 200, answer.body
        rows.append(Row("bot submission (honeypot filled)", u, note="nothing stored, one counter"))
        with w.meter.window() as u:
            report = w.tick()
        assert report["sent"] == 1, report
        rows.append(Row("one dispatched email (a tick with 1 due step)", u))
        with w.meter.window() as u:
            w.tick()
        rows.append(Row("empty tick (every minute, nothing due)", u, note="the fixed cost of the schedule"))
        _drain(w)

    with world() as w:
        leads = 100
        for i in range(leads):
            assert w.post_json("/forms/newsletter", {**NEWSLETTER, "email": f"l{i}@example.com"}).status_code == 200
        with w.meter.window() as u:
            report = w.tick()
        assert report["sent"] == leads, report
        rows.append(Row("per email in a tick of 100", u, per=leads, note="includes the tick's 8 shard queries / 100"))
        # The real path of a first step: the stream handler sends it at once (capture -> INSERT).
        w.stream.read()  # skip what the tick already did
        with w.meter.window() as u:
            w.post_json("/forms/newsletter", {**NEWSLETTER, "email": "fresh@example.com"})
            w.pump()
        rows.append(
            Row(
                "capture + its stream records (welcome sent at once, scored, counted)",
                u,
                note="what one newsletter lead costs up to its first email",
            )
        )

    with world() as w:
        tokens: list[str] = []
        leads = 100
        for i in range(leads):
            answer = w.post_json("/forms/newsletter", {**NEWSLETTER, "email": f"s{i}@example.com"})
            tokens.append(answer.json_body["lead_token"])
        _drain(w)
        event = {"type": "page_view", "url": "https://trellis.example/blog"}
        with w.meter.window() as u:
            assert w.post_json("/events", {**event, "token": tokens[0]}).status_code == 202
        rows.append(Row("behavioural event (`POST /events`)", u))
        with w.meter.window() as u:
            w.pump()
        rows.append(Row("one scored event (its stream records, all rounds)", u))
        for token in tokens[1:]:
            w.post_json("/events", {**event, "token": token})
        w.post_json("/events", {**event, "token": tokens[0], "url": "https://trellis.example/docs"})
        records = w.stream.read()
        batch = records[:100]
        kinds = Counter(r["eventName"] for r in batch)
        with w.meter.window() as u:
            w.handle(batch)
        rows.append(
            Row(
                f"a 100-record stream batch ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), per record",
                u,
                per=len(batch),
                note=f"whole batch: {u.ddb_writes} writes, {u.ddb_reads} reads",
            )
        )
        if records[100:]:
            w.handle(records[100:])
        _drain(w)

    with world() as w:
        token = w.post_json("/forms/ebook", RAISER).json_body["lead_token"]
        _drain(w)
        assert w.post_json("/events", {"token": token, "type": "demo_request", "url": "https://x.example/demo"})
        with w.meter.window() as u:
            delivered = w.pump()
        handoffs = [m for m in w.outbox() if "sales.demo" in str(m["To"])]
        assert len(handoffs) == 1, [m["To"] for m in w.outbox()]
        rows.append(
            Row(
                "sales handoff (demo_request -> SQL -> owner, email, SNS; all stream rounds)",
                u,
                note=f"{delivered} stream records, rescoring included",
            )
        )
    return rows


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| operation | DynamoDB write req | WCU | DynamoDB read req | RCU | SES calls | SNS calls | requests |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        u, per = r.usage, r.per
        lines.append(
            f"| {r.operation} | {u.ddb_writes / per:g} | {u.wcu / per:g} | {u.ddb_reads / per:g} | "
            f"{u.rcu / per:g} | {u.ses_calls / per:g} | {u.sns_calls / per:g} | {_ops(u, per)}"
            + (f" ({r.note})" if r.note else "")
            + " |"
        )
    return lines


def floor_checks(rows: list[Row]) -> list[tuple[str, bool, str]]:
    """The floors the issue names: 1 write request per capture, 1 SES call per email."""
    by_name: dict[str, Any] = {r.operation.split(" (")[0]: r for r in rows}
    capture = by_name["accepted form submission"].usage
    email = by_name["one dispatched email"].usage
    per_email = next(r for r in rows if r.operation.startswith("per email"))
    return [
        (
            "1 DynamoDB write request per capture",
            capture.ddb_writes == 1,
            f"{capture.ddb_writes} ({_ops(capture)})",
        ),
        (
            "1 SES call per email",
            email.ses_calls == 1 and per_email.usage.ses_calls == per_email.per,
            f"{email.ses_calls} in a 1-email tick, "
            f"{per_email.usage.ses_calls / per_email.per:g} per email in a tick of 100",
        ),
    ]
