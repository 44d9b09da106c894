"""What the tests, the bench and the twin share of a stage: its fixed test values, the stage
environment from the stack's outputs, one Lambda context and a sleep that does not wait."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

TEST_TOKEN_KEY = "test-token-key-0123456789abcdef0123456789"
PUBLIC_URL = "https://trellis.test/api"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef0123456789"
START = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
SENDER = "hello@demo.trellis.example"

# The app's variables that name the stack's resources, and the stack output each one is: the
# subset of infra.bootstrap.OUTPUT_VARIABLES the functions read in-process (the stream and the
# SES events topic are wired by Lambda and SNS, not read by the app).
RESOURCE_OUTPUTS = {
    "TRELLIS_TABLE": "LeadsTableName",
    "TRELLIS_ASSETS_BUCKET": "AssetsBucketName",
    "TRELLIS_SES_CONFIGURATION_SET": "ConfigurationSetName",
    "TRELLIS_SALES_TOPIC_ARN": "SalesTopicArn",
}


def resource_environment(outputs: Mapping[str, str]) -> dict[str, str]:
    """The TRELLIS_* variables naming the stage's resources, from the stack's outputs."""
    return {variable: outputs[output] for variable, output in RESOURCE_OUTPUTS.items()}


def stage_environment(outputs: Mapping[str, str], stage: str, campaign: str = "demo") -> dict[str, str]:
    """The whole environment of a test stage: its resources, campaign and the fixed test secrets."""
    return {
        "TRELLIS_CAMPAIGN": campaign,
        "TRELLIS_STAGE": stage,
        **resource_environment(outputs),
        "TRELLIS_TOKEN_KEY": TEST_TOKEN_KEY,
        "TRELLIS_PUBLIC_URL": PUBLIC_URL,
        "TRELLIS_ADMIN_TOKEN": ADMIN_TOKEN,
    }


class LambdaContext:
    """What the handlers read of Lambda's context object (a fixed remaining time)."""

    def __init__(self, remaining_ms: int = 60_000) -> None:
        self.remaining_ms = remaining_ms
        self.function_name = "trellis-test"
        self.aws_request_id = "test-request"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


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
