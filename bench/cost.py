"""Item 6: AWS dollars per 1,000 leads captured and taken through the demo campaign's sequences.

Every price lives in ``PRICES``, here and nowhere else.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bench.meter import Usage
from bench.world import Invocation, World, world
from chalicelib.store import LeadQuery
from testkit.world import PUBLIC_URL

# us-east-1, on-demand, list prices as published by AWS (pricing pages of each service), read 2026.
PRICES: dict[str, dict[str, Any]] = {
    "ses_email": {"usd": 0.10 / 1_000, "per": "email sent", "source": "aws.amazon.com/ses/pricing"},
    "dynamodb_wru": {
        "usd": 0.625 / 1_000_000,
        "per": "write request unit",
        "source": "aws.amazon.com/dynamodb/pricing/on-demand",
    },
    "dynamodb_rru": {
        "usd": 0.125 / 1_000_000,
        "per": "read request unit",
        "source": "aws.amazon.com/dynamodb/pricing/on-demand",
    },
    "lambda_request": {"usd": 0.20 / 1_000_000, "per": "invocation", "source": "aws.amazon.com/lambda/pricing"},
    "lambda_gb_second": {"usd": 0.0000166667, "per": "GB-second (x86)", "source": "aws.amazon.com/lambda/pricing"},
    "api_gateway_request": {
        "usd": 3.50 / 1_000_000,
        "per": "REST API request",
        "source": "aws.amazon.com/api-gateway/pricing",
    },
    "sns_publish": {"usd": 0.50 / 1_000_000, "per": "publish", "source": "aws.amazon.com/sns/pricing"},
    "logs_ingested_gb": {
        "usd": 0.50,
        "per": "GB of logs ingested (CloudWatch Logs, standard)",
        "source": "aws.amazon.com/cloudwatch/pricing",
    },
}
PRICES_AS_OF = "2026, us-east-1, on-demand"
DEFAULT_MEMORY_MB = 256
TICKS_PER_MONTH = 30 * 24 * 60
STEP = timedelta(hours=3)  # fast-forward between ticks (the schedule runs every minute; see docs/nurture.md)
DAYS = 12
SALES = "@sales.demo.trellis.example"


def memory_mb() -> tuple[dict[str, int], str]:
    """Each function's memory from infra/settings.py when it exists, else 256 MB."""
    try:
        from infra.settings import LAMBDA_FUNCTIONS
    except ImportError:
        return {}, f"infra/settings.py not found: {DEFAULT_MEMORY_MB} MB assumed"
    memory = {
        name: int(values.get("lambda_memory_size", DEFAULT_MEMORY_MB)) for name, values in LAMBDA_FUNCTIONS.items()
    }
    return memory, "from infra/settings.py LAMBDA_FUNCTIONS"


@dataclass
class Journey:
    leads: int
    usage: Usage
    invocations: list[Invocation]
    emails_to_leads: int
    emails_to_sales: int
    opens: int
    clicks: int
    empty_tick: Usage
    empty_tick_invocation: Invocation
    stages: Counter[str] = field(default_factory=Counter)


def _lead_number(address: str) -> int:
    return int(re.sub(r"\D", "", address.split("@")[0]) or 0)


def _engage(w: World, message: Any) -> tuple[int, int]:
    """Open every email once; leads whose number is a multiple of 3 click its first tracked link."""
    html = message.get_body(("html",)).get_content()
    opens = clicks = 0
    pixel = re.search(r'<img src="([^"]+/t/o/[^"]+)"', html)
    if pixel:
        w.get(pixel.group(1).removeprefix(PUBLIC_URL))
        opens += 1
    if _lead_number(str(message["To"])) % 3 == 0:
        link = re.search(r'href="([^"]+/t/c/[^"]+)"', html)
        if link:
            w.get(link.group(1).removeprefix(PUBLIC_URL))
            clicks += 1
    return opens, clicks


def journey(leads: int) -> Journey:
    """Half the leads sign up for the newsletter, half take the ebook; then 12 days fast-forwarded."""
    with world() as w:
        with w.meter.window() as empty:
            w.tick()
        empty_invocation = w.invocations[-1]
        start_invocation = len(w.invocations)
        seen = opens = clicks = 0
        with w.meter.window() as usage:
            for i in range(leads):
                if i % 2:
                    form = {"email": f"n{i}@example.com", "first_name": "Nia", "consent": True}
                    answer = w.post_json("/forms/newsletter", form)
                else:
                    form = {"email": f"e{i}@example.com", "first_name": "Eve", "company": "Acme", "consent": True}
                    answer = w.post_json("/forms/ebook", form)
                assert answer.status_code == 200, answer.body
            w.pump()
            for _ in range(int(timedelta(days=DAYS) / STEP)):
                outbox = w.outbox()
                for message in outbox[seen:]:
                    if SALES not in str(message["To"]):
                        o, c = _engage(w, message)
                        opens, clicks = opens + o, clicks + c
                seen = len(outbox)
                w.pump()
                w.clock.advance(STEP.total_seconds())
                w.tick()
                w.pump()
        outbox = w.outbox()
        to_sales = sum(1 for m in outbox if SALES in str(m["To"]))
        stages: Counter[str] = Counter()
        for item in w.rt.store.find_leads(LeadQuery(), leads + 10)[0]:
            stages[str(item.stage)] += 1
        return Journey(
            leads,
            usage,
            w.invocations[start_invocation:],
            len(outbox) - to_sales,
            to_sales,
            opens,
            clicks,
            empty,
            empty_invocation,
            stages,
        )


def _gb_seconds(invocations: list[Invocation], memory: dict[str, int]) -> float:
    """Billed per started millisecond."""
    return sum(
        math.ceil(i.seconds * 1000) / 1000 * memory.get(i.function, DEFAULT_MEMORY_MB) / 1024 for i in invocations
    )


@dataclass
class Bill:
    lines: list[tuple[str, float, str, float]]  # item, quantity, unit, dollars
    total: float
    floor: float


def bill(j: Journey, scale: float) -> Bill:
    memory, _ = memory_mb()
    u = j.usage
    emails = u.ses_sends * scale
    api = sum(1 for i in j.invocations if i.function == "api_handler") * scale
    log_gb = sum(i.log_bytes for i in j.invocations) * scale / 1024**3
    quantities = [
        ("SES emails", emails, "emails", "ses_email"),
        ("DynamoDB writes", u.wcu * scale, "WRU", "dynamodb_wru"),
        ("DynamoDB reads", u.rcu * scale, "RRU", "dynamodb_rru"),
        ("Lambda invocations", len(j.invocations) * scale, "requests", "lambda_request"),
        ("Lambda duration", _gb_seconds(j.invocations, memory) * scale, "GB-s", "lambda_gb_second"),
        ("API Gateway (REST)", api, "requests", "api_gateway_request"),
        ("SNS publishes", u.sns_calls * scale, "publishes", "sns_publish"),
        ("CloudWatch Logs ingestion (not in the issue's list)", log_gb, "GB", "logs_ingested_gb"),
    ]
    lines = [(name, q, unit, q * PRICES[key]["usd"]) for name, q, unit, key in quantities]
    total = sum(d for *_, d in lines)
    floor = emails * PRICES["ses_email"]["usd"]
    return Bill(lines, total, floor)


def fixed_monthly(j: Journey) -> float:
    memory, _ = memory_mb()
    per_tick = (
        j.empty_tick.rcu * PRICES["dynamodb_rru"]["usd"]
        + PRICES["lambda_request"]["usd"]
        + _gb_seconds([j.empty_tick_invocation], memory) * PRICES["lambda_gb_second"]["usd"]
    )
    return float(per_tick * TICKS_PER_MONTH)


def table(j: Journey, scale: float) -> list[str]:
    b = bill(j, scale)
    lines = [
        "| item | quantity per 1,000 leads | unit price (USD) | USD per 1,000 leads |",
        "|---|---:|---:|---:|",
    ]
    keys = list(PRICES)
    for (name, quantity, unit, dollars), key in zip(b.lines, keys, strict=True):
        amount = f"{quantity:,.1f}" if quantity >= 1 or quantity == 0 else f"{quantity:.2g}"  # 0.0006 GB, not 0.0
        lines.append(f"| {name} | {amount} {unit} | {PRICES[key]['usd']:.10g} | {dollars:.4f} |")
    lines += [
        f"| **total** | | | **{b.total:.4f}** |",
        f"| SES-only floor (emails x $0.0001) | | | {b.floor:.4f} |",
        f"| total / floor | | | {b.total / b.floor:.2f}x |",
    ]
    return lines
