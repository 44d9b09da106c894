from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import aws, compiler, runtime
from chalicelib.clock import FixedClock
from chalicelib.config import CAMPAIGNS_DIR, Settings
from chalicelib.entities import lead_id_for
from chalicelib.nurture.dispatcher import Pacer
from testkit import items, moto_patches, shared_loader
from testkit.outbox import Outbox
from testkit.world import ADMIN_TOKEN as ADMIN_TOKEN  # re-exported: tests import these from here
from testkit.world import PUBLIC_URL as PUBLIC_URL
from testkit.world import (
    SENDER,
    START,
    FakeSleep,
    LambdaContext,
    SharedStage,
    stage_environment,
)
from testkit.world import TEST_TOKEN_KEY as TEST_TOKEN_KEY

# Service models parsed once per test process, not once per session (testkit/shared_loader.py).
shared_loader.install()
# Before any test module is collected (some load the demo campaign at import): the compiled form
# a cold start loads, from this checkout's campaign files, as make validate writes it.
compiler.compile_all(CAMPAIGNS_DIR)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test can reach real AWS or a running twin: fake credentials, no endpoint override."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "TRELLIS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # botocore's account-based endpoints (<account>.streams-ddb...) are unknown to moto's mock.
    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    # The cached clients are kept from test to test while the AWS environment they were made
    # under stays the same (a client costs ~10 ms to make; the suite makes thousands).
    made_under = _aws_environment()
    if _CLIENTS_MADE_UNDER.get("env") != made_under:
        aws.reset()
        _CLIENTS_MADE_UNDER["env"] = made_under
    runtime.install(None)
    yield
    runtime.install(None)
    if _aws_environment() != made_under:  # the test moved to another endpoint or credentials
        aws.reset()
        _CLIENTS_MADE_UNDER.clear()


_CLIENTS_MADE_UNDER: dict[str, tuple[tuple[str, str], ...]] = {}


def _aws_environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


@pytest.fixture(autouse=True)
def _atomic_moto() -> Iterator[None]:
    """moto applies each request atomically, as DynamoDB does (testkit.moto_patches.atomic_requests)."""
    with moto_patches.atomic_requests():
        yield


@pytest.fixture(autouse=True)
def _moto_as_the_twin_runs_it() -> Iterator[None]:
    """moto copying and keeping only what a request touches (testkit.moto_patches), as in the twin."""
    with moto_patches.patched():
        yield


@pytest.fixture(scope="session")
def shared_stage() -> SharedStage:
    """The "test" stage, deployed through CloudFormation once per test process (lazily: the first
    test that asks deploys it, inside its isolated environment)."""
    return SharedStage("test", SENDER)


@pytest.fixture
def stack_outputs(shared_stage: SharedStage) -> Iterator[dict[str, str]]:
    """moto active and the "test" stage in it exactly as deployed, whatever earlier tests did."""
    with shared_stage.use() as outputs:
        yield outputs


@pytest.fixture
def settings(stack_outputs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = stage_environment(stack_outputs, "test")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env(env)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def rt(settings: Settings, clock: FixedClock, fake_sleep: FakeSleep) -> runtime.Runtime:
    pacer = Pacer(14.0, monotonic=fake_sleep.monotonic, sleep=fake_sleep.sleep)
    built = runtime.Runtime.build(settings, clock=clock, pacer=pacer)
    runtime.install(built)
    return built


@pytest.fixture
def client(rt: runtime.Runtime) -> Iterator[Client]:
    from app import app

    with Client(app, stage_name="dev") as test_client:
        yield test_client


@pytest.fixture
def table_items(settings: Settings) -> Any:
    """A function returning every item in the table (tests only: a Scan is fine here)."""

    def scan() -> list[dict[str, Any]]:
        table = boto3.resource("dynamodb").Table(settings.table_name)
        return sorted(table.scan(ConsistentRead=True)["Items"], key=lambda i: (i["pk"], i["sk"]))

    return scan


@pytest.fixture
def stream(settings: Settings) -> Any:
    """Reads the table's stream since the last call, Lambda-shaped (twin.pump.StreamReader)."""
    from twin.pump import StreamReader

    return StreamReader(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), settings.table_name)


@pytest.fixture
def outbox() -> Outbox:
    """Every email moto's SES accepted, parsed (newest last)."""
    return Outbox()


@pytest.fixture
def deliver(stream: Any) -> Any:
    """Pump the stream into the app's stream handler, exactly as Lambda would (batches of 100)."""
    from app import on_lead_change
    from twin.pump import batches

    def pump() -> int:
        delivered = 0
        for batch in batches(stream.read()):
            on_lead_change({"Records": batch}, LambdaContext())
            delivered += len(batch)
        return delivered

    return pump


@pytest.fixture
def tick() -> Any:
    """Run the scheduled dispatcher as EventBridge would."""
    from app import dispatch
    from twin.pump import scheduled_event

    def run(remaining_ms: int = 60_000) -> dict[str, Any]:
        result: dict[str, Any] = dispatch(scheduled_event(), LambdaContext(remaining_ms))
        return result

    return run


@pytest.fixture
def enrolment(settings: Any) -> Callable[[str], dict[str, Any]]:
    """The lead's welcome enrolment item as stored (one consistent read)."""
    table = boto3.resource("dynamodb").Table(settings.table_name)

    def get(email: str) -> dict[str, Any]:
        key = items.enrolment_key(lead_id_for(email), "welcome")
        item: dict[str, Any] = table.get_item(Key=key, ConsistentRead=True)["Item"]
        return item

    return get
