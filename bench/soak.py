"""Item 7: a day of a busy campaign through the twin `make demo` runs, and the memory it takes.

``python -m twin.run`` is started as `make demo` starts it (moto server, chalice local, stream
pump, dispatcher tick, console), on free ports of its own. Simulated visitors, a few at a time, each
submit a form (newsletter or ebook, a browser's fields: consent, an empty honeypot, a render time
seconds ago) from their own address, then report what they do next with their own lead's token
(``POST /events``: page views, pricing views, a webinar registration, now and then a demo request).
Meanwhile the resident memory of the twin's whole process tree is sampled from /proc, and a health
probe asks ``GET /health`` every second: the twin must keep answering while it fills up.

``python -m bench.soak [--captures N --events M]`` runs it alone and prints its table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

from twin.run import EVENTS_PER_ADDRESS_ENV

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
VISITORS_AT_ONCE = 4
SAMPLE_SECONDS = 0.5
PROBE_SECONDS = 1.0
SETTLE_SECONDS = 20.0  # after the last request: the pump and the dispatcher catch up
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
MEMORY_LIMIT_BYTES = 1.5 * 2**30
SOAK_EVENTS_PER_ADDRESS = 100_000  # per minute: above anything the soak sends
TWIN_COMMAND = (sys.executable, "-m", "twin.run")  # what `make demo` runs
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
# What a visitor does after signing up, in turn (one lead's events, in order); 1 in DEMO_EVERY asks for a demo.
BEHAVIOUR: tuple[dict[str, str], ...] = (
    {"type": "page_view", "url": "https://demo.trellis.example/blog/nurture-basics"},
    {"type": "page_view", "url": "https://demo.trellis.example/pricing"},
    {"type": "pricing_view"},
    {"type": "page_view", "url": "https://demo.trellis.example/customers"},
    {"type": "webinar_registered"},
)
DEMO_EVERY = 50

# No proxies: the twin is on 127.0.0.1 whatever HTTP_PROXY says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- the twin's processes and their memory ---------------------------------------------------------


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tree_rss(root: int) -> dict[int, int]:
    """Resident bytes of ``root`` and of each of its descendants, by process id (from /proc)."""
    page = os.sysconf("SC_PAGE_SIZE")
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])  # after "pid (comm) state"
        children.setdefault(ppid, []).append(int(entry))
    found: dict[int, int] = {}
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            found[pid] = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        pending.extend(children.get(pid, []))
    return found


def process_name(pid: int) -> str:
    """What a process of the twin is: the twin itself (moto, pump, tick, console) or chalice local."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return str(pid)
    if "twin.run" in command:
        return "twin (moto server, pump, tick, console)"
    if "chalice" in command:
        return "API (chalice local)"
    return command[:60]


@dataclass
class RunningTwin:
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: IO[bytes]

    @property
    def api(self) -> str:
        return f"http://{HOST}:{self.ports['api']}"

    @property
    def console(self) -> str:
        return f"http://{HOST}:{self.ports['console']}"

    @property
    def moto(self) -> str:
        return f"http://{HOST}:{self.ports['moto']}"

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]


@contextmanager
def running_twin() -> Iterator[RunningTwin]:
    """``python -m twin.run`` as `make demo` runs it, on free ports; stopped (SIGTERM, its session) after."""
    moto, api, console = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRELLIS_", "AWS_"))}
    env.update(
        {
            "TRELLIS_MOTO_PORT": str(moto),
            "TRELLIS_API_PORT": str(api),
            "TRELLIS_CONSOLE_PORT": str(console),
            "TRELLIS_TOKEN_KEY": "bench-soak-token-key-0123456789abcdefghij",
            "TRELLIS_ADMIN_TOKEN": "bench-soak-admin-token-0123456789abcdefgh",
            # Every visitor reaches chalice local from 127.0.0.1: lift the per-address limit so the
            # day's 20,000 events are stored (the per-lead limit stays), as distinct addresses would be.
            EVENTS_PER_ADDRESS_ENV: str(SOAK_EVENTS_PER_ADDRESS),
        }
    )
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [*TWIN_COMMAND],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        twin = RunningTwin(process, {"moto": moto, "api": api, "console": console}, log)
        try:
            _wait_until_up(twin)
            yield twin
        finally:
            _stop(process)


def _wait_until_up(twin: RunningTwin) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if twin.process.poll() is not None:
            raise RuntimeError(f"the twin exited with {twin.process.returncode}:\n{twin.output()}")
        try:
            with _OPENER.open(f"{twin.console}/", timeout=2) as page, _OPENER.open(f"{twin.api}/health", timeout=2):
                if page.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the twin did not come up within {START_TIMEOUT:.0f} s:\n{twin.output()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)  # the twin's own session: the twin and chalice local
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)
    except ProcessLookupError:
        pass


class MemorySampler:
    """The twin's resident memory every SAMPLE_SECONDS, with how many requests had been made."""

    def __init__(self, root: int, progress: Any) -> None:
        self._root = root
        self._progress = progress
        self.samples: list[tuple[float, int, int]] = []  # (seconds since start, bytes, requests done)
        self.peaks: dict[int, int] = {}  # each process's own peak
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            by_process = tree_rss(self._root)
            for pid, rss in by_process.items():
                self.peaks[pid] = max(self.peaks.get(pid, 0), rss)
            self.samples.append((time.monotonic() - self._start, sum(by_process.values()), self._progress()))
            self._stop.wait(SAMPLE_SECONDS)

    @property
    def peak(self) -> int:
        return max(rss for _, rss, _ in self.samples)

    def at(self, done: int) -> int:
        """The resident memory at the first sample once ``done`` requests had been made."""
        return next((rss for _, rss, n in self.samples if n >= done), self.samples[-1][1])


class HealthProbe:
    """``GET /health`` every PROBE_SECONDS: how long the twin takes to answer while it works."""

    def __init__(self, api: str) -> None:
        self._url = f"{api}/health"
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                with _OPENER.open(self._url, timeout=30) as answer:
                    answer.read()
                    ok = answer.status == 200
            except (urllib.error.URLError, OSError):
                ok = False
            if ok:
                self.latencies.append(time.perf_counter() - start)
            else:
                self.failures += 1
            self._stop.wait(PROBE_SECONDS)


# -- the visitors -----------------------------------------------------------------------------------


@dataclass
class Traffic:
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: {"capture": Counter(), "event": Counter()})
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"capture": [], "event": []})
    errors: list[str] = field(default_factory=list)  # what went wrong, the first few
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, status: int, seconds: float, problem: Optional[str] = None) -> None:
        with self.lock:
            self.statuses[kind][status] += 1
            self.latencies[kind].append(seconds)
            self.done += 1
            if problem is not None and len(self.errors) < 10:
                self.errors.append(problem)


def _post(url: str, data: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any, float]:
    request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1
        url, data=json.dumps(data).encode(), method="POST", headers={"Content-Type": "application/json", **headers}
    )
    start = time.perf_counter()
    try:
        with _OPENER.open(request, timeout=60) as answer:
            status, text = answer.status, answer.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e), time.perf_counter() - start
    seconds = time.perf_counter() - start
    try:
        return status, json.loads(text or b"null"), seconds
    except ValueError:
        return status, text[:200], seconds


def _address(visitor: int) -> str:
    return f"10.{(visitor >> 16) & 255}.{(visitor >> 8) & 255}.{visitor & 255}"


def _events_for(visitor: int, per_visitor: int, extra: int) -> list[dict[str, str]]:
    count = per_visitor + (1 if visitor < extra else 0)
    events = [dict(BEHAVIOUR[(visitor + n) % len(BEHAVIOUR)]) for n in range(count)]
    if events and visitor % DEMO_EVERY == DEMO_EVERY - 1:
        events[-1] = {"type": "demo_request"}
    return events


def visit(twin: RunningTwin, visitor: int, events: list[dict[str, str]], traffic: Traffic) -> None:
    """One visitor: a form from their own address and browser, then their events with their own token."""
    headers = {"Origin": twin.console, "User-Agent": USER_AGENT, "X-Forwarded-For": _address(visitor)}
    form = "newsletter" if visitor % 2 == 0 else "ebook"
    fields: dict[str, Any] = {
        "email": f"soak{visitor}@example.com",
        "first_name": "Visitor",
        "consent": True,
        "website": "",
        "rendered_at": str(int((time.time() - 12) * 1000)),
    }
    status, answer, seconds = _post(f"{twin.api}/forms/{form}", fields, headers)
    ok = status in (200, 201) and isinstance(answer, dict) and "lead_token" in answer
    traffic.record("capture", status, seconds, None if ok or status == 429 else f"capture {status}: {answer}")
    if not ok:
        return
    token = answer["lead_token"]
    for event in events:
        status, answer, seconds = _post(f"{twin.api}/events", {"token": token, **event}, headers)
        accepted = status == 202
        # A refused report (a 429 included) does not stop the visitor: each is another page.
        traffic.record("event", status, seconds, None if accepted or status == 429 else f"event {status}: {answer}")


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class Soak:
    captures: int
    events: int
    seconds: float  # the traffic, first request to last answer
    idle_rss: int  # the twin up, before the first request
    peak_rss: int  # from the first request to the end of the settling time
    rss_by_progress: list[tuple[float, int]]  # (share of requests made, bytes)
    final_rss: int
    traffic: Traffic
    probe: list[float]
    probe_failures: int
    emails_sent: int
    table_items: int
    process_peaks: dict[str, int]

    @property
    def throttled(self) -> int:
        return sum(counter[429] for counter in self.traffic.statuses.values())

    @property
    def errors(self) -> int:
        ok = {"capture": (200, 201, 429), "event": (202, 429)}
        return sum(
            n for kind, counter in self.traffic.statuses.items() for s, n in counter.items() if s not in ok[kind]
        )

    @property
    def met(self) -> bool:
        return self.peak_rss < MEMORY_LIMIT_BYTES and self.errors == 0 and self.probe_failures == 0


def run(captures: int, events: int) -> Soak:
    per_visitor, extra = divmod(events, captures)
    traffic = Traffic()
    with running_twin() as twin:
        time.sleep(2 * SAMPLE_SECONDS)  # the first tick and pump rounds
        idle = sum(tree_rss(twin.process.pid).values())
        with MemorySampler(twin.process.pid, lambda: traffic.done) as memory, HealthProbe(twin.api) as probe:
            next_visitor = iter(range(captures))
            claim = threading.Lock()

            def worker() -> None:
                while True:
                    with claim:
                        visitor = next(next_visitor, None)
                    if visitor is None:
                        return
                    visit(twin, visitor, _events_for(visitor, per_visitor, extra), traffic)

            start = time.perf_counter()
            workers = [threading.Thread(target=worker, name=f"visitor-{n}") for n in range(VISITORS_AT_ONCE)]
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join()
            seconds = time.perf_counter() - start
            time.sleep(SETTLE_SECONDS)
        if twin.process.poll() is not None:
            raise RuntimeError(f"the twin stopped during the soak:\n{twin.output()}")
        emails, items = _moto_counts(twin)
        total = traffic.done or 1
        shares = (0.25, 0.5, 0.75, 1.0)
        return Soak(
            captures=captures,
            events=events,
            seconds=seconds,
            idle_rss=idle,
            peak_rss=memory.peak,
            rss_by_progress=[(share, memory.at(round(share * total))) for share in shares],
            final_rss=memory.samples[-1][1],
            traffic=traffic,
            probe=probe.latencies,
            probe_failures=probe.failures,
            emails_sent=emails,
            table_items=items,
            process_peaks={process_name(pid): rss for pid, rss in memory.peaks.items()},
        )


def _moto_counts(twin: RunningTwin) -> tuple[int, int]:
    """Emails moto's SES accepted and items in the leads table, asked of the twin's moto server."""
    import boto3

    from twin.run import FAKE_CREDENTIAL, REGION

    session = boto3.session.Session(
        aws_access_key_id=FAKE_CREDENTIAL, aws_secret_access_key=FAKE_CREDENTIAL, region_name=REGION
    )
    quota = session.client("ses", endpoint_url=twin.moto).get_send_quota()
    dynamodb = session.client("dynamodb", endpoint_url=twin.moto)
    table = next(name for name in dynamodb.list_tables()["TableNames"] if "dev" in name)
    described = dynamodb.describe_table(TableName=table)["Table"]
    return int(quota["SentLast24Hours"]), int(described["ItemCount"])


# -- the table ----------------------------------------------------------------------------------------


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000:.0f}"


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def table(s: Soak) -> list[str]:
    t = s.traffic
    made = sum(len(v) for v in t.latencies.values())
    lines = [
        "| captures | events | requests made | time (s) | requests/s | twin RSS idle (MB) | peak (MB) "
        "| at 25 / 50 / 75 / 100% of the requests (MB) | after settling (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        f"| {s.captures:,} | {s.events:,} | {made:,} | {s.seconds:.0f} | {made / s.seconds:.1f} | {_mb(s.idle_rss)} "
        f"| **{_mb(s.peak_rss)}** | {' / '.join(_mb(b) for _, b in s.rss_by_progress)} | {_mb(s.final_rss)} |",
        "",
        "| requests | answers | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for kind, label in (("capture", "POST /forms/{form}"), ("event", "POST /events")):
        answers = ", ".join(f"{status or 'no answer'}: {n:,}" for status, n in sorted(t.statuses[kind].items()))
        values = t.latencies[kind]
        lines.append(
            f"| {label} | {answers or '-'} | {_ms(values, 0.5)} | {_ms(values, 0.95)} | {_ms(values, 0.99)} "
            f"| {_ms(values, 1.0)} |"
        )
    lines.append(
        f"| GET /health (probe, every {PROBE_SECONDS:g} s) | 200: {len(s.probe):,}, failed: {s.probe_failures} "
        f"| {_ms(s.probe, 0.5)} | {_ms(s.probe, 0.95)} | {_ms(s.probe, 0.99)} | {_ms(s.probe, 1.0)} |"
    )
    lines += [
        "",
        "Each process's own peak: "
        + "; ".join(f"{name} {_mb(rss)} MB" for name, rss in sorted(s.process_peaks.items()))
        + ".",
    ]
    return lines


def summary(s: Soak) -> str:
    made = sum(len(v) for v in s.traffic.latencies.values())
    return (
        f"peak {_mb(s.peak_rss)} MB (limit {_mb(int(MEMORY_LIMIT_BYTES))}), {made:,} requests in {s.seconds:.0f} s, "
        f"errors {s.errors}, 429s {s.throttled}, health probe p99 {_ms(s.probe, 0.99)} ms, "
        f"{s.emails_sent:,} emails sent, {s.table_items:,} items in the table"
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--captures", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args(argv)
    result = run(args.captures, args.events)
    print("\n".join(table(result)))
    print(summary(result))
    for problem in result.traffic.errors:
        print("error:", problem)
    return 0 if result.met else 1


if __name__ == "__main__":
    sys.exit(main())
