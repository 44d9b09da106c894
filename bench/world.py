"""One Trellis stage on in-process moto, built the way the tests build it (testkit).

``world()`` deploys the stack from ``infra/trellis.yaml`` into moto, builds the runtime with a
``FixedClock`` (fast-forwarded by the benchmarks) and serves the Chalice app through
``chalice.test.Client``. Every Lambda invocation goes through ``World`` so that its duration
and its log output are recorded, and every AWS request the app makes is metered (``bench.meter``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import boto3
from chalice.test import Client
from moto import mock_aws

from bench.meter import AwsMeter
from chalicelib import aws, runtime
from chalicelib.clock import FixedClock
from chalicelib.config import Settings
from chalicelib.nurture.dispatcher import Pacer
from chalicelib.nurture.mailer import Mailer
from testkit import moto_patches
from testkit.items import bulk_load as bulk_load  # re-exported: the benchmarks seed with it
from testkit.outbox import Outbox
from testkit.requests import JSON_HEADERS, with_rendered_at
from testkit.world import SENDER, START, FakeSleep, LambdaContext, stage_environment
from twin import stack

STAGE = "bench"


def bench_env(outputs: dict[str, str]) -> dict[str, str]:
    """The tests' stage environment (testkit.world.stage_environment), stage "bench"."""
    env = stage_environment(outputs, STAGE)
    if os.environ.get("BENCH_LOG_LEVEL"):  # development only: the default is the tests' (INFO)
        env["TRELLIS_LOG_LEVEL"] = os.environ["BENCH_LOG_LEVEL"]
    return env


@contextlib.contextmanager
def isolated_environment() -> Iterator[None]:
    """What the tests' autouse fixture does: fake credentials, no endpoint, no TRELLIS_* leaking in."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("AWS_", "TRELLIS_")):
            del os.environ[name]
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        }
    )
    aws.reset()
    runtime.install(None)
    try:
        yield
    finally:
        runtime.install(None)
        aws.reset()
        os.environ.clear()
        os.environ.update(saved)


class LogSink(io.TextIOBase):
    """Where the handlers' stdout (JSON log lines, EMF metrics) goes: counted, not kept."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)


@dataclass
class Invocation:
    function: str
    seconds: float
    log_bytes: int


@dataclass
class World:
    client: Client
    rt: runtime.Runtime
    clock: FixedClock
    settings: Settings
    outputs: dict[str, str]
    meter: AwsMeter
    stream: Any
    invocations: list[Invocation] = field(default_factory=list)
    sink: LogSink = field(default_factory=LogSink)
    _outbox: Outbox = field(default_factory=Outbox)

    @contextlib.contextmanager
    def _invocation(self, function: str) -> Iterator[None]:
        before = self.sink.bytes
        start = time.perf_counter()
        with contextlib.redirect_stdout(self.sink):
            try:
                yield
            finally:
                self.invocations.append(Invocation(function, time.perf_counter() - start, self.sink.bytes - before))

    # -- the API (one api_handler invocation per request) --------------------------------------

    def post_json(self, path: str, data: Any, headers: Optional[dict[str, str]] = None) -> Any:
        with self._invocation("api_handler"):
            body = json.dumps(with_rendered_at(path, data))  # as a landing page's script sends it
            return self.client.http.post(path, headers={**JSON_HEADERS, **(headers or {})}, body=body)

    def get(self, path: str) -> Any:
        with self._invocation("api_handler"):
            return self.client.http.get(path)

    # -- event sources ----------------------------------------------------------------------------

    def handle(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        from app import on_lead_change

        with self._invocation("on_lead_change"):
            result: dict[str, Any] = on_lead_change({"Records": records}, LambdaContext())
        return result

    def pump(self, rounds: int = 10) -> int:
        """Feed the stream to the handler in Lambda's batches of 100 until it is quiet (its own
        writes come back too); returns the number of records delivered."""
        from twin.pump import batches

        delivered = 0
        for _ in range(rounds):
            records = self.stream.read()
            if not records:
                break
            for batch in batches(records):
                self.handle(batch)
                delivered += len(batch)
        return delivered

    def tick(self, context: Any = None) -> dict[str, Any]:
        from app import dispatch
        from twin.pump import scheduled_event

        with self._invocation("dispatch"):
            result: dict[str, Any] = dispatch(scheduled_event(), context or LambdaContext())
        return result

    def outbox(self) -> list[Any]:
        return self._outbox()

    def sent_count(self) -> int:
        return self._outbox.count()


@contextlib.contextmanager
def world(pacer: Optional[Pacer] = None, mailer: Optional[Mailer] = None) -> Iterator[World]:
    """A fresh stage on moto. Without a pacer, one that never really sleeps (as the tests')."""
    with isolated_environment(), fast_moto(), mock_aws():
        outputs = stack.deploy(STAGE)
        stack.verify_sender(boto3.session.Session(), SENDER)
        env = bench_env(outputs)
        os.environ.update(env)
        settings = Settings.from_env(env)
        clock = FixedClock(START)
        if pacer is None:
            fake = FakeSleep()
            pacer = Pacer(1000.0, monotonic=fake.monotonic, sleep=fake.sleep)
        rt = runtime.Runtime.build(settings, clock=clock, pacer=pacer, mailer=mailer)
        runtime.install(rt)
        meter = AwsMeter(
            {
                "dynamodb": aws.dynamodb(),
                "sesv2": aws.sesv2(),
                "ses": aws.ses_v1(),
                "sns": aws.sns(),
                "s3": aws.s3(),
            }
        )
        from app import app
        from twin.pump import StreamReader

        reader = StreamReader(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), settings.table_name)
        with Client(app, stage_name="dev") as client:
            yield World(client, rt, clock, settings, outputs, meter, reader)
        meter.close()


@contextlib.contextmanager
def fast_moto() -> Iterator[None]:
    """moto as the tests and the twin run it (``testkit.moto_patches``: transactions copy what they
    touch, queries sort on plain key values; every answer unchanged), one request at a time."""
    with moto_patches.atomic_requests(), moto_patches.patched():
        yield
