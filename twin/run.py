"""`make demo`: Trellis on one machine, against an in-memory moto server (never deployed).

``python -m twin.run`` starts, on 127.0.0.1 only, and stops again in reverse order on Ctrl-C
(SIGINT) or SIGTERM:

1. a moto server (the embedded AWS), in this process, on ``TRELLIS_MOTO_PORT`` (default 5000);
2. the stage's resources from ``infra/`` (``twin.stack.deploy``), the campaign's sender as a
   verified SES identity, and its lead-magnet files from ``twin/assets/`` in the assets bucket;
3. ``chalice local`` (the API) as a child process on ``TRELLIS_API_PORT`` (default 8000);
4. what Lambda and EventBridge do and ``chalice local`` does not, in threads of this process,
   calling the very handlers Lambda calls: the stream pump (``twin.pump``) and the dispatcher's
   schedule, every ``TRELLIS_TICK_SECONDS`` (default 5);
5. what SES and real inboxes do with each email (``twin.inbox``): SES events on the stage's SES
   events topic (delivered, or bounced and complained for SES's mailbox simulator addresses),
   link scanners at ``scanned.example``, Apple's privacy proxy at ``mpp.example``; and, standing
   in for SNS->Lambda, the pump that hands the topic's messages to ``app.on_ses_feedback``;
6. the dev console (``twin.console``) on ``TRELLIS_CONSOLE_PORT`` (default 8001).

State: moto keeps everything in this process's memory, and the shared clock's offset and the
campaign copy live in a temporary directory removed at exit, so every run starts from an empty
account at the real time, and stopping discards all of it.

``TRELLIS_TOKEN_KEY`` is used when set (tests fix it); otherwise a fresh key is generated per
run and never printed, so tokens from an earlier run stop verifying, like the data they named.

The API runs without Chalice's auto-reload: its fallback file watcher re-reads every file under
the project (the .venv included) each second and restarts on any change, caches and pytest's
``__pycache__`` included. Restart the twin after editing code; it comes back in seconds.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import json
import logging
import mimetypes
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any, Optional, Protocol

import boto3
import yaml

from chalicelib.campaign_types import Campaign
from chalicelib.compiler import compile_to
from chalicelib.config import APP_ROOT, MIN_TOKEN_KEY_LENGTH, campaign_path, load_campaign
from testkit.world import resource_environment
from twin import stack
from twin.gate import ClockGate

HOST = "127.0.0.1"  # never 0.0.0.0: the twin has fake credentials and no auth in front of it
STAGE = "dev"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
CHALICE_CONFIG = APP_ROOT / ".chalice" / "config.json"
FAKE_CREDENTIAL = "testing"
REGION = "us-east-1"

HEALTH_TIMEOUT_SECONDS = 30.0
PUMP_SECONDS = 0.5  # how often the stream is read (Lambda polls its shards continuously)
DEFAULT_TICK_SECONDS = 5.0  # the dispatcher's "minute" in the twin
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.2
INBOX_SECONDS = 0.2  # how often the outbox and the SES events queue are read (scanners come within a second)


@dataclass(frozen=True)
class Port:
    env_var: str
    default: int
    what: str


# Every port the twin listens on, so all of them are checked before anything starts.
PORTS = {
    "moto": Port("TRELLIS_MOTO_PORT", 5000, "moto server"),
    "api": Port("TRELLIS_API_PORT", 8000, "API (chalice local)"),
    "console": Port("TRELLIS_CONSOLE_PORT", 8001, "dev console"),
}


EVENTS_PER_ADDRESS_ENV = "TRELLIS_TWIN_EVENTS_PER_ADDRESS"
DEMO_BROADCAST = "email/broadcast.html"  # what the console's "Send the broadcast" sends
# moto's SES answers GetSendQuota as a sandbox account does (1 email a second); this stands in
# for a production account's quota, as it does for a deployed stage.
MAX_SEND_RATE_ENV = "TRELLIS_MAX_SEND_RATE"


class TwinError(Exception):
    """A problem the person running the twin can fix; printed without a traceback."""


class _Stop(BaseException):
    """Raised by the signal handler. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` (boto3 retries, waiters) swallows it."""


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TwinConfig:
    ports: dict[str, int]
    token_key: str
    admin_token: str
    admin_token_generated: bool = False
    # Under chalice local every request comes from 127.0.0.1, so the campaign's per-address limit
    # of POST /events caps the whole machine; a load test (the bench's soak) raises it here.
    events_per_address_per_minute: Optional[int] = None
    max_send_rate: Optional[float] = None

    def __repr__(self) -> str:  # keep the key out of tracebacks
        return f"TwinConfig(ports={self.ports!r}, token_key=<redacted>, admin_token=<redacted>)"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TwinConfig:
        ports = {name: _port_from_env(env, port) for name, port in PORTS.items()}
        clashing = {p for p in ports.values() if list(ports.values()).count(p) > 1}
        if clashing:
            names = ", ".join(PORTS[n].env_var for n, p in ports.items() if p in clashing)
            raise TwinError(f"{names} must name different ports")
        token_key = env.get("TRELLIS_TOKEN_KEY") or secrets.token_urlsafe(32)
        if len(token_key) < MIN_TOKEN_KEY_LENGTH:
            # Checked here rather than by the API at its first form post, which would answer 500.
            raise TwinError(f"TRELLIS_TOKEN_KEY must be at least {MIN_TOKEN_KEY_LENGTH} characters (or unset)")
        # DESIGN: the admin token is TRELLIS_ADMIN_TOKEN when set, else generated and printed.
        admin_token = env.get("TRELLIS_ADMIN_TOKEN") or ""
        generated = not admin_token
        admin_token = admin_token or secrets.token_urlsafe(32)
        if len(admin_token) < MIN_TOKEN_KEY_LENGTH:
            raise TwinError(f"TRELLIS_ADMIN_TOKEN must be at least {MIN_TOKEN_KEY_LENGTH} characters (or unset)")
        per_address = env.get(EVENTS_PER_ADDRESS_ENV, "").strip()
        if per_address and not (per_address.isdigit() and int(per_address) > 0):
            raise TwinError(f"{EVENTS_PER_ADDRESS_ENV} must be a whole number above 0 (or unset)")
        return cls(
            ports=ports,
            token_key=token_key,
            admin_token=admin_token,
            admin_token_generated=generated,
            events_per_address_per_minute=int(per_address) if per_address else None,
            max_send_rate=_max_send_rate(env),
        )


def _max_send_rate(env: Mapping[str, str]) -> Optional[float]:
    raw = env.get(MAX_SEND_RATE_ENV, "").strip()
    if not raw:
        return None
    try:
        rate = float(raw)
    except ValueError:
        rate = 0.0
    if not 0 < rate < float("inf"):
        raise TwinError(f"{MAX_SEND_RATE_ENV} must be a number of emails per second above 0 (or unset)")
    return rate


def _port_from_env(env: Mapping[str, str], port: Port) -> int:
    raw = env.get(port.env_var, "").strip()
    if not raw:
        return port.default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise TwinError(f"{port.env_var}={raw!r} is not a port number (1-65535)")
    return value


def _bind(port: int) -> socket.socket:
    """A listening socket on HOST:port. SO_REUSEADDR as the servers themselves set it, so a
    port left in TIME_WAIT by the previous run counts as free, and a live listener does not."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _port_error(name: str, port: int, error: OSError) -> TwinError:
    spec = PORTS[name]
    reason = "already in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
    return TwinError(
        f"port {port} on {HOST} for the {spec.what} is {reason}. "
        f"Stop what is using it, or set {spec.env_var} to another port."
    )


def ensure_ports_free(ports: Mapping[str, int]) -> None:
    """Fail before starting anything, so a taken port leaves nothing half-started behind."""
    for name, port in ports.items():
        try:
            _bind(port).close()
        except OSError as e:
            raise _port_error(name, port, e) from e


def chalice_stage_env(stage: str) -> dict[str, str]:
    """The environment variables `chalice local --stage` sets (top level, then the stage's)."""
    config = json.loads(CHALICE_CONFIG.read_text(encoding="utf-8"))
    stage_config = config.get("stages", {}).get(stage)
    if stage_config is None:
        raise TwinError(f"{CHALICE_CONFIG}: no stage {stage!r}")
    return {**config.get("environment_variables", {}), **stage_config.get("environment_variables", {})}


def local_environment(base: Mapping[str, str], moto_url: str) -> dict[str, str]:
    """``base`` with every AWS setting replaced by the moto server's, so nothing started from
    here can reach a real AWS account, whatever profile or keys the shell has."""
    env = {k: v for k, v in base.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": FAKE_CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIAL,
            "AWS_DEFAULT_REGION": REGION,
            # ~/.aws/config may hold per-service endpoint_url or credential_process settings.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    # A corporate HTTP(S)_PROXY would otherwise receive the calls to 127.0.0.1 (boto3, urllib).
    for name in ("NO_PROXY", "no_proxy"):
        known = [h for h in env.get(name, "").split(",") if h.strip()]
        env[name] = ",".join([*known, *(h for h in (HOST, "localhost") if h not in known)])
    return env


# -- services ---------------------------------------------------------------------------------


class Service(Protocol):
    name: str

    def start(self) -> None:
        """Start and return once ready to serve (or raise TwinError)."""

    def failure(self) -> Optional[str]:
        """None while running; otherwise why it stopped on its own."""

    def stop(self) -> None:
        """Stop; safe to call on a service that failed to start or already stopped."""


class OneRequestAtATime:
    """moto's backends are not safe for concurrent requests: a DynamoDB transaction snapshots the
    table (a deep copy) and, when a condition fails, puts the snapshot back, undoing what other
    requests wrote meanwhile (and their stream records). The API, the pump and the dispatcher of
    the twin call concurrently, so each AWS request runs alone here, applied whole as AWS applies
    it. No moto request calls back into this server (no HTTP subscriptions), so it cannot wait
    on itself."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        with self._lock:
            return list(self._app(environ, start_response))


class MotoServer:
    """moto's server in a thread of this process, so its in-memory state dies with the twin."""

    name = "moto server"

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self._server: Any = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        # Imported here: moto's server modules are heavy and only this service needs them.
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        from testkit import moto_patches

        # Without it, every DynamoDB transaction copies the whole table (testkit.moto_patches).
        moto_patches.install()

        # One line per AWS call would drown the API's own request log.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # We bind the socket and hand werkzeug its descriptor: a bind failure then surfaces here
        # as OSError. (moto's ThreadedMotoServer binds in its thread; werkzeug's sys.exit on a
        # taken port would end that thread silently and leave start() waiting forever.)
        try:
            sock = _bind(self.port)
        except OSError as e:
            raise _port_error("moto", self.port, e) from e
        try:
            app = OneRequestAtATime(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(
                HOST, self.port, app, threaded=True, request_handler=MotoRequestHandler, fd=sock.fileno()
            )
        finally:
            sock.close()  # the server holds its own duplicate of the descriptor
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)
        self._thread.start()

    def failure(self) -> Optional[str]:
        if self._thread is not None and not self._thread.is_alive():
            return "the moto server thread stopped"
        return None

    def stop(self) -> None:
        if self._server is None:
            return
        if self._thread is not None and self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(STOP_TIMEOUT_SECONDS)
        self._server.server_close()
        self._server = None


class ChaliceLocal:
    """``chalice local`` in its own session, so a terminal's Ctrl-C reaches only the twin, which
    then stops the API in order (and the API never outlives moto by accident)."""

    name = "API (chalice local)"

    def __init__(self, port: int, stage: str, env: Mapping[str, str]) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self._stage = stage
        self._env = dict(env)
        self._process: Optional[subprocess.Popen[bytes]] = None

    def command(self) -> list[str]:
        # chalice has no ``__main__``; calling its console entry point through this very
        # interpreter avoids depending on where (or whether) the ``chalice`` script is installed.
        entry = "import sys; from chalice.cli import main; sys.exit(main())"
        options = ["--host", HOST, "--port", str(self.port), "--stage", self._stage, "--no-autoreload"]
        return [sys.executable, "-c", entry, "local", *options]

    def start(self) -> None:
        """Starts the process; ``wait_until_healthy`` says when it answers (the rest of the twin
        is wired meanwhile, on the other core)."""
        self._process = subprocess.Popen(self.command(), cwd=APP_ROOT, env=self._env, start_new_session=True)

    def wait_until_healthy(self) -> None:
        # No proxies: /health is on 127.0.0.1 whatever HTTP_PROXY says.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            problem = self.failure()
            if problem is not None:
                raise TwinError(f"{problem} before answering /health (its output is above)")
            try:
                with opener.open(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet
            time.sleep(POLL_SECONDS)
        raise TwinError(f"the API did not answer {self.url}/health with 200 within {HEALTH_TIMEOUT_SECONDS:.0f}s")

    def failure(self) -> Optional[str]:
        if self._process is not None and (code := self._process.poll()) is not None:
            return f"chalice local exited with code {code}"
        return None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # The whole process group: chalice may have started children of its own.
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_SECONDS)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signum)


class Background:
    """A loop in a thread of this process (the stream pump, the dispatcher tick)."""

    def __init__(self, name: str, interval_seconds: float, step: Any) -> None:
        self.name = name
        self._interval = interval_seconds
        self._step = step
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._error: Optional[str] = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as e:
                logging.getLogger("twin").exception("%s failed: %s", self.name, e)
            self._stop.wait(self._interval)

    def failure(self) -> Optional[str]:
        return self._error

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_SECONDS)


class Twin:
    """The started services, stopped in reverse order of starting."""

    def __init__(self) -> None:
        self._services: list[Service] = []

    def start(self, service: Service) -> None:
        # Registered before starting, so a service that fails half-way is still stopped.
        self._services.append(service)
        service.start()

    def wait(self) -> None:
        """Block until a signal arrives (raises _Stop) or a service stops by itself."""
        while True:
            for service in self._services:
                problem = service.failure()
                if problem is not None:
                    raise TwinError(f"{service.name}: {problem}")
            time.sleep(POLL_SECONDS * 2)

    def stop(self) -> None:
        while self._services:
            service = self._services.pop()
            try:
                service.stop()
            except Exception as e:  # stop the rest whatever happens to one
                print(f"twin: could not stop the {service.name} cleanly: {e}", file=sys.stderr)


# -- resources --------------------------------------------------------------------------------


def provision(session: boto3.session.Session, stage: str, campaign: Campaign) -> dict[str, str]:
    """The stage's stack from infra/, plus each magnet's file at its asset key."""
    outputs = stack.deploy(stage, session)
    stack.verify_sender(session, campaign.sender.from_address)
    s3 = session.client("s3")
    for magnet in campaign.magnets.values():
        source = ASSETS_DIR / PurePosixPath(magnet.asset_key).name
        if not source.is_file():
            raise TwinError(f"no file {source} for the magnet asset {magnet.asset_key!r} of campaign {campaign.name!r}")
        content_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
        s3.put_object(
            Bucket=outputs["AssetsBucketName"],
            Key=magnet.asset_key,
            Body=source.read_bytes(),
            ContentType=content_type,
        )
    return outputs


# -- main -------------------------------------------------------------------------------------


def banner(
    moto: MotoServer, api: ChaliceLocal, campaign_name: str, outputs: Mapping[str, str], console_url: str
) -> str:
    python = os.path.relpath(sys.executable)
    if python.startswith(".."):
        python = sys.executable
    table = outputs["LeadsTableName"]
    # Double quotes inside, so shlex.quote wraps it in plain single quotes a person can read.
    show_items = (
        f'import boto3, pprint; t = boto3.resource("dynamodb", endpoint_url="{moto.url}", region_name="{REGION}", '
        f'aws_access_key_id="{FAKE_CREDENTIAL}", aws_secret_access_key="{FAKE_CREDENTIAL}").Table("{table}"); '
        'pprint.pprint(t.scan()["Items"])'
    )
    console = console_url
    return "\n".join(
        [
            "",
            f"Trellis twin is up: stage {STAGE}, campaign {campaign_name}, all on {HOST} only.",
            f"  landing page  {console}/   (dev console: /outbox, /leads, POST /tick, POST /clock/advance?seconds=N)",
            f"  API           {api.url}   (team dashboard: {api.url}/admin/dashboard, sign in with the admin token)",
            f"  moto (AWS)    {moto.url}   table {table}, bucket {outputs['AssetsBucketName']}",
            "State lives in memory: Ctrl-C stops everything and forgets it.",
            "",
            "Try this:",
            f"  1. open {console}/ and subscribe, or: curl -i {api.url}/forms/newsletter "
            "--data-urlencode email=ada@example.com --data-urlencode first_name=Ada -d consent=on",
            f"  2. open {console}/outbox: the welcome email is there; click its link, then see {console}/leads",
            f"  3. three days later, now: curl -X POST '{console}/clock/advance?seconds=259200' "
            f"&& curl -X POST {console}/tick",
            "",
            "Try the inbox: mail to these addresses does what real SES and real inboxes do with it",
            f"  (sign up with: curl {api.url}/forms/newsletter --data-urlencode email=ADDRESS -d consent=on)",
            "  x@scanned.example               a link scanner fetches every link and the pixel (HEAD, GET) at once",
            "  x@mpp.example                   Apple's privacy proxy fetches the pixel",
            "  bounce@simulator.amazonses.com  SES bounces it for good (also complaint@, suppressionlist@)",
            "  anyone else                     delivered, counted as delivered",
            f"  then see {console}/leads (each lead's timeline) and the sequence report on the dashboard "
            f"({api.url}/admin/dashboard)",
            "",
            f"See what was stored: {shlex.quote(python)} -c {shlex.quote(show_items)}",
        ]
    )


def _parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m twin.run",
        description="Run Trellis locally against an in-memory moto server, on 127.0.0.1 only (make demo).",
        epilog=(
            "environment: "
            + ", ".join(f"{p.env_var} (default {p.default})" for p in PORTS.values())
            + ", TRELLIS_TOKEN_KEY (default: random per run), TRELLIS_ADMIN_TOKEN (default: random, printed)"
            + f", TRELLIS_TICK_SECONDS (default {DEFAULT_TICK_SECONDS:g})"
        ),
    )
    return parser.parse_args(argv)


def run(config: TwinConfig, twin: Twin) -> None:
    moto = MotoServer(config.ports["moto"])
    twin.start(moto)

    stage_env = chalice_stage_env(STAGE)
    campaign_name = stage_env.get("TRELLIS_CAMPAIGN")
    if not campaign_name:
        raise TwinError(f"{CHALICE_CONFIG}: stage {STAGE!r} sets no TRELLIS_CAMPAIGN")
    # This process runs with the very environment the API gets: provisioning talks to moto
    # through it now, and parts added later that run in-process (the stream pump) need both
    # the endpoint and the app's settings.
    _replace_environ(local_environment(os.environ, moto.url))
    run_dir = _run_dir()
    campaigns_dir = campaign_for_console(
        campaign_name, config.ports["console"], run_dir / "campaigns", config.events_per_address_per_minute
    )
    outputs = provision(boto3.session.Session(), STAGE, load_campaign(campaign_name, campaigns_dir))
    _replace_environ(
        {
            **{k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")},
            **stage_env,
            "TRELLIS_STAGE": STAGE,
            **resource_environment(outputs),
            "TRELLIS_TOKEN_KEY": config.token_key,
            "TRELLIS_PUBLIC_URL": f"http://{HOST}:{config.ports['api']}",
            "TRELLIS_ADMIN_TOKEN": config.admin_token,
            # The shared, fast-forwardable clock of every process of the twin.
            "TRELLIS_CLOCK_FILE": str(run_dir / "clock-offset"),
            "TRELLIS_CAMPAIGNS_DIR": str(campaigns_dir),
            # The stream pump resumes a batch from the record a handler names, as Lambda does.
            "TRELLIS_STREAM_REPORT_FAILURES": "true",
            **({MAX_SEND_RATE_ENV: str(config.max_send_rate)} if config.max_send_rate else {}),
        }
    )
    api = ChaliceLocal(config.ports["api"], STAGE, os.environ)
    twin.start(api)
    _start_event_sources(twin, outputs, config.ports["console"])
    api.wait_until_healthy()

    print(banner(moto, api, campaign_name, outputs, f"http://{HOST}:{config.ports['console']}"), flush=True)
    if config.admin_token_generated:
        # The twin's own throwaway token, for the person at this terminal (never a real secret).
        print(f"Admin API token (generated for this run): {config.admin_token}", flush=True)
    twin.wait()


def _run_dir() -> Path:
    """This run's files (the clock's offset, the campaign copy), removed when the process exits,
    so the next run starts from offset 0 like it starts from an empty moto."""
    directory = Path(tempfile.mkdtemp(prefix="trellis-twin-"))
    atexit.register(shutil.rmtree, directory, True)
    return directory


def campaign_for_console(
    name: str, console_port: int, directory: Path, events_per_address_per_minute: Optional[int] = None
) -> Path:
    """A copy of ``campaigns/<name>.yaml`` in ``directory`` whose landing-page URLs (thank-you
    pages, CORS origins) name the dev console's actual port; returns ``directory``.

    The demo campaign names the console's default origin, as a deployed campaign names its real
    site. Without this, a console on another port (``TRELLIS_CONSOLE_PORT``, the tests) would send
    visitors to a thank-you page nobody serves and have its JSON posts refused by CORS.
    """
    text = campaign_path(name).read_text(encoding="utf-8")
    default = PORTS["console"].default
    for host in ("127.0.0.1", "localhost"):
        text = re.sub(rf"http://{re.escape(host)}:{default}(?![0-9])", f"http://{host}:{console_port}", text)
    if events_per_address_per_minute is not None:
        document = yaml.safe_load(text)
        document.setdefault("rate_limits", {})["events_per_address_per_minute"] = events_per_address_per_minute
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    directory.mkdir(parents=True, exist_ok=True)
    campaign_path(name, directory).write_text(text, encoding="utf-8")
    # Validated (fail here, not at the first post) and compiled: the API loads the compiled copy.
    compile_to(campaign_path(name, directory), directory)
    return directory


def _start_event_sources(twin: Twin, outputs: Mapping[str, str], console_port: int) -> None:
    """What Lambda does and ``chalice local`` does not: the stream trigger and the schedule,
    running the very handlers Lambda runs (imported from app.py, in this process)."""
    import app  # here, not at the top: app.py reads the environment set up just above
    from twin.pump import LambdaContext, StreamPump, StreamReader, scheduled_event

    gate = ClockGate()
    session = boto3.session.Session()
    reader = StreamReader(session.client("dynamodb"), session.client("dynamodbstreams"), outputs["LeadsTableName"])

    def on_lead_change(event: dict[str, Any], context: Any) -> Any:
        with gate.handler():
            return app.on_lead_change(event, context)

    pump = StreamPump(reader, on_lead_change)
    twin.start(Background("stream pump", PUMP_SECONDS, pump.pump_once))

    from chalicelib import runtime
    from testkit.fanout import ThreadShardStarter

    # A fanned-out tick's parts (a send rate above one dispatcher's) run as threads here, through
    # the handler Lambda would invoke; the tick ends when they have (so a clock jump waits for them).
    parts = ThreadShardStarter(lambda event: app.dispatch_shard(event, LambdaContext("dispatch_shard")))

    def tick() -> dict[str, Any]:
        with gate.handler():
            runtime.current().shard_starter = parts
            report: dict[str, Any] = app.dispatch(scheduled_event(), LambdaContext("dispatch"))
            for part in parts.wait():
                for name, value in part.items():
                    if isinstance(value, int) and not isinstance(value, bool) and name != "fanned_out":
                        report[name] = report.get(name, 0) + value
        return report

    twin.start(Background("dispatcher tick", _tick_seconds(), tick))

    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    from chalicelib.clock import OffsetFileClock
    from chalicelib.tracking import engagement_verdicts
    from twin.console import Console, lead_timeline

    def raw_outbox() -> list[str]:
        # The moto server runs in this process: its SES backend holds every accepted email.
        return [str(m.raw_data) for m in ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages]

    _start_inbox(twin, gate, outputs, lambda: ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)

    campaign = load_campaign(os.environ["TRELLIS_CAMPAIGN"], Path(os.environ["TRELLIS_CAMPAIGNS_DIR"]))
    consent_texts = {form_id: form.consent.text for form_id, form in campaign.forms.items() if form.consent}
    from chalicelib.store import LeadQuery

    def leads() -> list[dict[str, Any]]:
        current = runtime.current()
        store, rules = current.store, current.campaign.engagement
        found = []
        # The newest first: the lead list's unfiltered page (one Query on the by_created index).
        for lead in store.find_leads(LeadQuery(), 100)[0]:
            # The whole record (one Query, as the events alone were): opens and clicks are judged
            # human or machine from the lead's sends too, as scoring judges them.
            record = store.lead_record(lead.lead_id)
            if record is None:
                continue  # erased since the list was read
            verdicts = engagement_verdicts(record.events, record.messages, rules)
            found.append(
                {
                    "lead_id": lead.lead_id,
                    "email": lead.email,
                    "stage": lead.stage,
                    "score": lead.score,
                    "owner": (lead.owner or {}).get("name"),
                    "first_touch": lead.first_touch.form_id,
                    "utm_source": lead.first_touch.utm_source,
                    "timeline": lead_timeline(record.events, verdicts),
                }
            )
        return found

    def broadcast(segment: str) -> str:
        from chalicelib.models import BroadcastIn

        body = BroadcastIn.model_validate(
            {
                "name": f"Demo issue to {segment}",
                "topic": "newsletter",
                "segment": segment,
                "variants": [
                    {"subject": "The Trellis letter, {{ first_name or 'friend' }}", "template": DEMO_BROADCAST}
                ],
            }
        )
        with gate.handler():
            return runtime.current().broadcasts.create(body).broadcast_id

    console = Console(
        console_port,
        tick,
        OffsetFileClock(os.environ["TRELLIS_CLOCK_FILE"]),
        raw_outbox,
        api_url=os.environ["TRELLIS_PUBLIC_URL"],
        consent_texts=consent_texts,
        leads=leads,
        gate=gate,
        # Path-style, as chalicelib.aws presigns the lead-magnet links against moto.
        assets_url=f"{os.environ['AWS_ENDPOINT_URL'].rstrip('/')}/{os.environ['TRELLIS_ASSETS_BUCKET']}/",
        broadcast=broadcast,
        segments=tuple(campaign.segments),
    )
    twin.start(console)


def _start_inbox(twin: Twin, gate: ClockGate, outputs: Mapping[str, str], sent_messages: Any) -> None:
    """What SES and the inboxes behind it do with each email (``twin.inbox``): SES events on the
    stage's SES events topic, link scanners and Apple's proxy fetching. And, standing in for
    SNS->Lambda (moto's SNS cannot invoke a Lambda without docker), the pump that hands the
    topic's messages to ``app.on_ses_feedback`` as Lambda would."""
    from moto.core.models import DEFAULT_ACCOUNT_ID

    import app
    from chalicelib.clock import OffsetFileClock
    from twin.inbox import (
        EVENT_SUBJECT,
        FeedbackPump,
        Inbox,
        Sender,
        SentWatcher,
        destination_event_types,
        http_fetch,
        watch,
    )
    from twin.pump import LambdaContext

    logging.getLogger("twin.inbox").setLevel(logging.INFO)  # one line per email a reader touched
    session = boto3.session.Session()
    topic_arn = outputs["SesEventsTopicArn"]

    def on_ses_feedback(event: dict[str, Any]) -> Any:
        with gate.handler():
            return app.on_ses_feedback(event, LambdaContext("on_ses_feedback"))

    feedback = FeedbackPump.subscribe(session.client("sns"), session.client("sqs"), topic_arn, on_ses_feedback)
    twin.start(Background("SES events (SNS->Lambda stand-in)", INBOX_SECONDS, feedback.pump_once))

    sns = session.client("sns")  # this thread's own client
    clock = OffsetFileClock(os.environ["TRELLIS_CLOCK_FILE"])
    inbox = Inbox(
        publish=lambda message: sns.publish(TopicArn=topic_arn, Message=message, Subject=EVENT_SUBJECT),
        fetch=http_fetch,
        now=clock.now,
        sender=Sender(DEFAULT_ACCOUNT_ID, REGION, outputs["ConfigurationSetName"]),
        # Only what the configuration set's SNS destination publishes, as infra/ declares it.
        event_types=destination_event_types(stack.TEMPLATE),
    )
    watcher = SentWatcher(sent_messages)
    twin.start(Background("inbox", INBOX_SECONDS, lambda: watch(watcher, inbox)))


def _tick_seconds() -> float:
    raw = os.environ.get("TRELLIS_TICK_SECONDS", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TICK_SECONDS
    except ValueError as e:
        raise TwinError("TRELLIS_TICK_SECONDS must be a number of seconds") from e
    if value <= 0:
        raise TwinError("TRELLIS_TICK_SECONDS must be above 0")
    return value


def _replace_environ(env: Mapping[str, str]) -> None:
    new = dict(env)  # copied first: ``env`` may be os.environ itself
    os.environ.clear()
    os.environ.update(new)


def main(argv: Optional[list[str]] = None) -> int:
    _parse_args(argv)
    stopping = False

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        nonlocal stopping
        if stopping:
            return  # already stopping; a second Ctrl-C must not interrupt the clean-up
        stopping = True
        raise _Stop

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    twin = Twin()
    code = 0
    try:
        config = TwinConfig.from_env(os.environ)
        ensure_ports_free(config.ports)
        run(config, twin)
    except _Stop:
        print("\ntwin: stopping", file=sys.stderr, flush=True)
    except TwinError as e:
        print(f"twin: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        stopping = True
        twin.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
