"""`make bench`: run every benchmark, print the tables, write bench/RESULTS.md.

``BENCH_QUICK=1`` (or ``--quick``) runs small sizes, for development.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import broadcast, coldstart, cost, operations, scaling, soak, throughput
from chalicelib.nurture.dispatcher import send_workers

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass(frozen=True)
class Sizes:
    idle: tuple[int, ...]
    dispatch_seconds: float
    captures: int
    import_runs: int
    cost_leads: int
    soak_captures: int
    soak_events: int
    broadcast_sizes: tuple[int, int]
    rate_seconds: float


FULL = Sizes(
    idle=(1_000, 10_000, 100_000),
    dispatch_seconds=10.0,
    captures=300,
    import_runs=9,
    cost_leads=100,
    soak_captures=5_000,
    soak_events=20_000,
    broadcast_sizes=(1_000, 10_000),
    rate_seconds=30.0,
)
QUICK = Sizes(
    idle=(1_000, 3_000),
    dispatch_seconds=3.0,
    captures=50,
    import_runs=3,
    cost_leads=20,
    soak_captures=200,
    soak_events=800,
    broadcast_sizes=(200, 1_000),
    rate_seconds=8.0,
)
# Time runs this many times slower in the broadcast throughput model (bench/broadcast.py).
DILATION = 20.0
RATE_RUNS = ((50.0, (1, 2)), (200.0, (1, 2, 4, 8)))


def machine() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: `{platform.machine()}`, CPU {cpu}, {os.cpu_count()} cores (load average at start {load})",
        f"- Python {platform.python_version()}, moto in-process (`mock_aws`) for 1.-6., the twin's moto server for 7.",
    ]


def mark(met: bool) -> str:
    return "**met**" if met else "**missed**"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (also BENCH_QUICK=1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    sizes = QUICK if quick else FULL
    started = time.perf_counter()
    out: list[str] = ["# Trellis benchmarks (`make bench`)", ""]
    out += machine()
    out.append(f"- sizes: {'quick (BENCH_QUICK=1)' if quick else 'full'}: {sizes}")
    out.append("")
    goals: list[tuple[str, bool, str]] = []

    def section(title: str, lines: list[str]) -> None:
        out.extend([f"## {title}", "", *lines, ""])
        print(f"\n## {title}\n", *lines, sep="\n", flush=True)

    # The throughput runs first, in a fresh heap: after 2.'s 100k-lead table, the garbage collector
    # walking moto's leftovers halved the achieved rate (0.32 then, 0.65 alone).
    t = time.perf_counter()
    d = throughput.dispatch(sizes.dispatch_seconds)
    dispatch_seconds = time.perf_counter() - t
    gc.collect()

    # 8 (first too: its throughput runs want a fresh heap as 3.'s) ------------------------------
    t = time.perf_counter()
    rates = [
        broadcast.throughput(limit, parts, sizes.rate_seconds, DILATION)
        for limit, counts in RATE_RUNS
        for parts in counts
    ]
    gc.collect()
    small, large = (broadcast.send_to(n) for n in sizes.broadcast_sizes)
    gc.collect()
    broadcast_section = _broadcast_section(small, large, rates, goals, time.perf_counter() - t)

    # 1 ----------------------------------------------------------------------------------------
    t = time.perf_counter()
    rows = operations.measure()
    floors = operations.floor_checks(rows)
    goals += [(name, ok, detail) for name, ok, detail in floors]
    section(
        "1. Requests per operation",
        [
            *operations.table(rows),
            "",
            "Counted with botocore's `before-parameter-build` / `after-call` hooks on the app's clients; "
            "`ReturnConsumedCapacity=TOTAL` is injected into every DynamoDB request, but moto answers it with "
            "constants (0.5 or 1 per request, not by size), so WCU and RCU are **computed** from the items "
            "by DynamoDB's rules (see `bench/meter.py`): writes 1 unit per started KB of the larger of the "
            "before and after image, transactional x2, plus one write per global secondary index copy "
            "(two when its key changes); reads in 4 KB blocks, eventually consistent x0.5. Request counts "
            "are exact; capacity units are as exact as the rules (index writes inside transactions are "
            "taken as standard writes). "
            + "; ".join(f"floor {name}: {mark(ok)} ({detail})" for name, ok, detail in floors)
            + f". ({time.perf_counter() - t:.0f} s)",
        ],
    )

    # 2 ----------------------------------------------------------------------------------------
    t = time.perf_counter()
    points = scaling.measure(sizes.idle)
    r = scaling.ratios(points)
    goals.append(
        (
            f"dispatcher read units {points[-1].idle:,} / {points[0].idle:,} idle leads <= 1.1",
            r["read_units"] <= 1.1,
            f"{r['read_units']:.2f}",
        )
    )
    section(
        "2. Dispatcher scaling: a tick with 100 due among idle leads",
        [
            *scaling.table(points),
            "",
            f"Largest / smallest: read units **{r['read_units']:.2f}** (goal <= 1.1: {mark(r['read_units'] <= 1.1)}), "
            f"requests {r['requests']:.2f}, tick wall time {r['wall']:.2f}, wall time outside AWS calls "
            f"(our code) {r['our_code']:.2f}. Half the idle leads finished their sequence (not in the due "
            "index), half wait a week (in it, not due). The wall time that grows is moto's: it answers a "
            "Query on a global secondary index by sorting and filtering the whole table, so its "
            "`Query` time grows with the table; DynamoDB's does not. Seeding writes items with "
            "`BatchWriteItem` in the exact shape capture writes (tests/integration/test_dispatch_scaling.py's helpers)."
            f" ({time.perf_counter() - t:.0f} s)",
        ],
    )

    # 3 ----------------------------------------------------------------------------------------
    ratio = d.rate / throughput.MAX_RATE
    goals.append(("dispatch throughput >= 0.9 of the send-rate limit", ratio >= 0.9, f"{ratio:.2f}"))
    section(
        "3. Dispatch throughput against the send-rate limit",
        [
            *throughput.dispatch_table(d),
            "",
            f"Goal achieved/limit >= 0.9: {mark(ratio >= 0.9)}. SES is a stub that sleeps 50 ms per send (this "
            "measures our pacing, not SES); the Pacer runs on the real monotonic clock at 50/s; the tick gets a "
            f"{d.budget_seconds:.0f} s Lambda deadline, so it works {d.work_seconds:.0f} s and stops at the 10 s "
            "safety margin. The tick keeps `send_workers(50)` = "
            f"{send_workers(throughput.MAX_RATE)} enrolments in flight (each: claim, read the lead, "
            "render, send, commit), with the send slots handed out by the pacer 1/rate apart. What keeps it "
            "under the limit here is in-process moto, not the pacing: moto answers each DynamoDB request in "
            "Python under one lock (its backend is not thread-safe; DynamoDB applies each request atomically), "
            "so the three requests of every email (claim, read, commit) are served one at a time, and a "
            "profile of this tick shows the workers spending most of it waiting for that lock (the DynamoDB "
            "column sums the workers' time, hence over 100%). Against DynamoDB those are network round trips "
            "that the workers overlap. A serial dispatcher (before this was fixed) reached 0.23 here.",
            f"({dispatch_seconds:.0f} s; run first, before the other sections fill the heap)",
        ],
    )

    # 4 ----------------------------------------------------------------------------------------
    t = time.perf_counter()
    c = throughput.capture(sizes.captures)
    section(
        "4. Capture throughput and latency (Chalice app in-process)",
        [
            *throughput.capture_table(c),
            "",
            "New leads through `POST /forms/newsletter` via `chalice.test.Client`, one after another. "
            "The AWS share is the time between botocore's `before-parameter-build` and `after-call` "
            "(serialisation, moto's work, parsing): in-process moto stands in for the network round trip, "
            f"so the split says where our own code stands, not what DynamoDB takes. ({time.perf_counter() - t:.0f} s)",
        ],
    )

    # 5 ----------------------------------------------------------------------------------------
    t = time.perf_counter()
    times = coldstart.import_times(sizes.import_runs)
    zip_bytes = coldstart.package_zip()
    deps = coldstart.site_packages_bytes()
    heavy = coldstart.heavy_after_import()
    cold = times["app + campaign"].median / times["bare"].median
    goals.append(
        (
            "cold start `import app` + loading the campaign <= 1.3x a bare Chalice app with boto3",
            cold <= 1.3,
            f"{cold:.2f}x",
        )
    )
    section(
        "5. Cold start and package size",
        [
            *coldstart.table(times, zip_bytes, deps),
            "",
            f"Goal (`import app` + the campaign) <= 1.3x: {mark(cold <= 1.3)} ({cold:.2f}x). Fresh interpreters "
            "(`python -c`), timing around the imports only, no AWS call at import; one warm-up round discarded. "
            "`python -X importtime -c 'import app'` shows where it goes: boto3 and Chalice (in both, ~170 ms), "
            "then our own modules. `app` imports only what every function needs; services, Jinja2, "
            "email-validator and the dashboard load on first use, so a function that never renders (the stream "
            "handler, the authorizer) never pays for them. The campaign is validated and compiled before it is "
            "deployed (`make validate`, packaging): a cold start loads the compiled JSON into plain records, "
            "without validating it again. Of pydantic, PyYAML, email-validator and Jinja2, loaded by `import app` "
            f"+ the campaign: {', '.join(heavy) or 'none'}"
            + (" (chalicelib.web imports pydantic at module level)" if "pydantic" in heavy else "")
            + ". "
            "The zip holds our files; "
            "a real `chalice package` adds the runtime requirements (boto3 comes with Lambda), estimated by their "
            f"installed size. ({time.perf_counter() - t:.0f} s)",
        ],
    )

    # 6 ----------------------------------------------------------------------------------------
    t = time.perf_counter()
    j = cost.journey(sizes.cost_leads)
    scale = 1000 / j.leads
    b = cost.bill(j, scale)
    _, memory_source = cost.memory_mb()
    section(
        "6. Cost per 1,000 leads",
        [
            *cost.table(j, scale),
            "",
            f"A sample of {j.leads} leads, multiplied by {scale:g}: half sign up for the newsletter, half take the "
            f"ebook; {cost.DAYS} days fast-forwarded ({cost.STEP.total_seconds() / 3600:g} h steps: a tick and the "
            "stream after each); every email to a lead is opened once, and a third of the leads click the first "
            f"link of each. Per lead: {j.emails_to_leads / j.leads:.2f} emails, {j.opens / j.leads:.2f} opens, "
            f"{j.clicks / j.leads:.2f} clicks; {j.emails_to_sales} handoff emails; final stages "
            f"{dict(j.stages)}. Every request the app made was counted (DynamoDB units computed as in 1.); Lambda "
            f"GB-seconds are the measured handler durations (on moto, billed per started ms) x the memory "
            f"({memory_source}). SES is {b.lines[0][3] / b.total:.0%} of the total. "
            f"Fixed, per month: the idle schedule ({cost.TICKS_PER_MONTH:,} empty ticks of "
            f"{len(j.empty_tick.calls)} Queries, {j.empty_tick.rcu:g} RRU each) costs "
            f"${cost.fixed_monthly(j):.2f} (Lambda + DynamoDB; alarms, PITR and log storage not included). "
            f"Prices ({cost.PRICES_AS_OF}) are in `bench/cost.py` `PRICES`. ({time.perf_counter() - t:.0f} s)",
        ],
    )

    # 7 ----------------------------------------------------------------------------------------
    t = time.perf_counter()
    k = soak.run(sizes.soak_captures, sizes.soak_events)
    goals.append(
        (
            "twin under a day of traffic: peak resident memory < 1.5 GB",
            k.peak_rss < soak.MEMORY_LIMIT_BYTES,
            f"{k.peak_rss / 2**20:,.0f} MB",
        )
    )
    goals.append(
        (
            "twin keeps answering: no errors, no failed health probe",
            k.errors == 0 and k.probe_failures == 0,
            f"{k.errors} errors, {k.probe_failures} failed probes",
        )
    )
    section(
        "7. Soak: a day of a busy campaign through the twin (`make demo`)",
        [
            *soak.table(k),
            "",
            f"`python -m twin.run` as `make demo` starts it, on free ports: {k.captures:,} visitors, "
            f"{soak.VISITORS_AT_ONCE} at a time, each submit a form (newsletter or ebook, as a browser: consent, "
            "empty honeypot, rendered seconds before) with their own address in `X-Forwarded-For`, then post their "
            f"share of {k.events:,} `POST /events` with their own lead's token (page and pricing views, webinar "
            f"registrations, a demo request from 1 in {soak.DEMO_EVERY}). Resident memory is the sum over the "
            f"twin's process tree (/proc, every {soak.SAMPLE_SECONDS:g} s), from the first request to "
            f"{soak.SETTLE_SECONDS:.0f} s after the last. "
            + (
                f"**{k.throttled:,} answers were 429**: chalice local gives every request the source address "
                "127.0.0.1 (API Gateway's `sourceIp` is the caller's), so in the twin all visitors share one "
                "per-address allowance of `POST /events`; the requests were made all the same. "
                if k.throttled
                else "No answer was 429. "
            )
            + f"{k.emails_sent:,} emails went out meanwhile: moto's SES quota is 1 email/s (the sandbox's), and the "
            "stream handler sends each new lead's immediate email, so the stream's unread records pile up behind it "
            "(a real day spreads the same traffic over 24 hours). Before `testkit.moto_patches` every DynamoDB "
            "transaction deep-copied the whole table (300 events took the twin from 490 MB to 3 GB in 75 s). "
            f"({time.perf_counter() - t:.0f} s)",
        ],
    )

    section("8. Broadcasts: per recipient, our CPU, throughput with fan-out, cost", broadcast_section)

    # goals ------------------------------------------------------------------------------------
    section(
        "Goals",
        [
            "| goal | result | |",
            "|---|---|---:|",
            *(f"| {name} | {mark(ok)} | {detail} |" for name, ok, detail in goals),
        ],
    )
    elapsed = time.perf_counter() - started
    out.append(f"Total run time: {elapsed:.0f} s.")
    print(f"\nTotal run time: {elapsed:.0f} s; written to {args.out}")
    args.out.write_text("\n".join(out) + "\n", encoding="utf-8")
    return 0


def _broadcast_section(
    small: broadcast.Sending,
    large: broadcast.Sending,
    rates: list[broadcast.Rate],
    goals: list[tuple[str, bool, str]],
    seconds: float,
) -> list[str]:
    r = broadcast.ratios(small, large)
    worst = max(r.values())
    ses_ok = small.ses_calls == small.recipients and large.ses_calls == large.recipients
    goals.append(
        (
            f"broadcast: requests and units per recipient, {large.recipients:,} / {small.recipients:,} <= 1.1",
            worst <= 1.1,
            f"requests {r['requests']:.2f}, read units {r['read_units']:.2f}, write units {r['write_units']:.2f}",
        )
    )
    goals.append(
        ("broadcast: SES calls per recipient exactly 1", ses_ok, f"{large.ses_calls:,} / {large.recipients:,}")
    )
    best = {limit: max(p.share for p in rates if p.limit == limit) for limit, _ in RATE_RUNS}
    planned = {
        limit: next(p.share for p in rates if p.limit == limit and p.parts == p.planned) for limit, _ in RATE_RUNS
    }
    for limit, share in planned.items():
        goals.append(
            (
                f"broadcast throughput at {limit:g}/s, as the tick fans out, >= 0.9 of the limit",
                share >= 0.9,
                f"{share:.2f}",
            )
        )
    b = broadcast.bill(large)
    cost_ratio = b.total / 0.10  # the bill is per 1,000 recipients
    goals.append(
        ("broadcast: AWS cost per 1,000 recipients <= 1.1x SES's $0.10", cost_ratio <= 1.1, f"{cost_ratio:.3f}x")
    )
    cpu = large.our_cpu_per_email + large.sdk_cpu_per_email
    return [
        "**Per recipient.** A broadcast to the demo's `newsletter-readers`, every recipient a newsletter reader "
        "(cloned from one captured through the form, bulk-written), ticked and its stream pumped until every one "
        "was sent; every request the app made meanwhile (enrolment, sends, the stream's counting), units computed "
        "as in 1.",
        "",
        *broadcast.per_recipient_table([small, large]),
        "",
        f"Largest / smallest per recipient: requests **{r['requests']:.2f}**, read units **{r['read_units']:.2f}**, "
        f"write units **{r['write_units']:.2f}** (goal <= 1.1: {mark(worst <= 1.1)}); SES calls per recipient "
        f"exactly 1: {mark(ses_ok)}. Per recipient: the claim (an UpdateItem), the lead and its suppression (one "
        "BatchGetItem), the commit (a transaction: enrolment and message); a hundredth of the enrolment "
        "transaction and of the segment's index Query pages; the stream counts a batch's sends in one transaction "
        "(each message flagged as counted). The issue asks for 100,000 against 1,000: in-process moto answers "
        "each global-index Query by sorting the whole table and spends ~25 ms of CPU per email, so 100,000 would "
        "take hours here; every cost above is per recipient or per page of 100, which is what the ratio checks.",
        "",
        "**Our CPU per email** (the largest run; thread CPU time during its ticks, split by where it was spent):",
        "",
        *broadcast.cpu_table(large),
        "",
        f"Ours and botocore's together, {cpu * 1000:.0f} ms of a vCPU per email, bound what one invocation sends "
        f"whatever its workers: ~{1 / cpu:.0f}/s on a whole vCPU. `CPU_PER_EMAIL` "
        "(chalicelib/nurture/dispatcher.py, 30 ms) is what fan-out plans with: the tick (1,024 MB, 0.58 vCPU) "
        "sends alone up to ~19/s, each part (1,769 MB, one vCPU) ~33/s.",
        "",
        f"**Throughput with fan-out.** The recipients enrolled first, then {len(rates)} runs of one or more "
        "dispatchers at once (the tick's fan-out orders: each its shards and rate/parts) for "
        "a fixed time, with latency simulated outside moto's lock: "
        f"{broadcast.DDB_LATENCY * 1000:.0f} ms per DynamoDB request, {broadcast.SES_LATENCY * 1000:.0f} ms per "
        f"SES send. **Time is dilated {DILATION:g}x** (latencies and the send-time allowance {DILATION:g} times "
        f"longer, rates {DILATION:g} times lower, figures scaled back): in-process moto does DynamoDB's and SES's "
        "work on this machine's two cores under one lock, and 200 emails' worth a second of that (with ours) "
        "would need several cores; dilated, that CPU is a small share of each email's time, as the servers' "
        "work is of a real round trip, while the pacing, the workers and the fan-out run as they do at full "
        "speed. What our own CPU allows is the figure above, not this one.",
        "",
        *broadcast.throughput_table(rates),
        "",
        "The steady pace is measured (emails between the first and the last, over that time, scaled back), and "
        "so is the time to the first email; a scheduled minute is derived from both: the parts take new work for "
        "58 s of each minute (`fanout.PART_WORK_SECONDS`), ramping up first, and the next minute's parts start "
        "at 60 s, so a minute sends the steady pace x (58 s - the ramp) / 60 s. Goals, with the parts the tick "
        "would start: "
        + "; ".join(f"{limit:g}/s **{share:.2f}** ({mark(share >= 0.9)})" for limit, share in planned.items())
        + ". One dispatcher keeps 8 emails in flight, ~80 ms each in this model: ~90/s at most, whatever the "
        "limit; each part brings its own 8 and its share of the rate. Best of each limit: "
        + ", ".join(f"{limit:g}/s {share:.2f}" for limit, share in best.items())
        + ".",
        "",
        f"**Cost per 1,000 recipients** (the {large.recipients:,} run, scaled):",
        "",
        *broadcast.bill_table(b),
        "",
        f"Against SES's own $0.10: **{cost_ratio:.3f}x** (goal <= 1.1x: {mark(cost_ratio <= 1.1)}). Lambda is the "
        "handlers' measured time on moto x their memory (infra/settings.py), so it includes moto's CPU, which in "
        "AWS is DynamoDB's; a tick paced below its capacity is billed for its waits too (at SES's default 14/s: "
        "1,000 emails keep a 1,024 MB tick 71 s, $0.0012).",
        f"({seconds:.0f} s)",
    ]


if __name__ == "__main__":
    sys.exit(main())
