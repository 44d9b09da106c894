from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

from chalicelib import aws, runtime
from chalicelib.clock import FixedClock
from chalicelib.config import Settings
from chalicelib.nurture.dispatcher import Pacer
from twin import stack

TEST_TOKEN_KEY = "test-token-key-0123456789abcdef0123456789"
PUBLIC_URL = "https://trellis.test/api"
START = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test can reach real AWS or a running twin: fake credentials, no endpoint override."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "TRELLIS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws.reset()
    runtime.install(None)
    yield
    runtime.install(None)
    aws.reset()


@pytest.fixture
def stack_outputs() -> Iterator[dict[str, str]]:
    with mock_aws():
        outputs = stack.deploy("test")
        stack.verify_sender(boto3.session.Session(), "hello@demo.trellis.example")
        yield outputs


@pytest.fixture
def settings(stack_outputs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = {
        "TRELLIS_CAMPAIGN": "demo",
        "TRELLIS_TABLE": stack_outputs["LeadsTableName"],
        "TRELLIS_ASSETS_BUCKET": stack_outputs["AssetsBucketName"],
        "TRELLIS_TOKEN_KEY": TEST_TOKEN_KEY,
        "TRELLIS_PUBLIC_URL": PUBLIC_URL,
        "TRELLIS_SES_CONFIGURATION_SET": stack_outputs["ConfigurationSetName"],
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env(env)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


class FakeSleep:
    """Pacing without waiting: records the sleeps the pacer asked for and moves a fake monotonic time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


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
