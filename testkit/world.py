"""What the tests, the bench and the twin share of a stage: its fixed test values, the stage
environment from the stack's outputs, one Lambda context, a sleep that does not wait and one
stage deployed once into in-process moto, reset between users (``SharedStage``)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

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


def made_up_environment(stage: str = "x", **variables: str) -> dict[str, str]:
    """A stage's environment naming resources that need not exist, for reading settings without
    AWS: the campaign, the stage, its resources (from made-up outputs) and a public URL; no secret
    nor secret parameter (``variables`` adds them, and anything else)."""
    outputs = {
        "LeadsTableName": "t",
        "AssetsBucketName": "b",
        "ConfigurationSetName": f"trellis-{stage}",
        "SalesTopicArn": f"arn:aws:sns:us-east-1:123456789012:trellis-{stage}-sales",
    }
    return {
        "TRELLIS_CAMPAIGN": "demo",
        "TRELLIS_STAGE": stage,
        **resource_environment(outputs),
        "TRELLIS_PUBLIC_URL": "https://x.example/api",
        **variables,
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


# -- one stage deployed once, handed out as it was right after the deploy ----------------------------


def _live_backends() -> dict[tuple[str, str, str], Any]:
    """Every moto backend in use, by (service, account, region)."""
    from moto.core.base_backend import BackendDict

    services: list[Any] = list(BackendDict._instances)  # type: ignore[misc]  # a class-level list
    return {
        (service.service_name, account, region): backend
        for service in services
        for account, by_region in list(service.items())
        for region, backend in list(by_region.items())
    }


def _sqs_queues(backends: Mapping[tuple[str, str, str], Any]) -> list[Any]:
    return [
        queue for (service, _, _), backend in backends.items() if service == "sqs" for queue in backend.queues.values()
    ]


class SharedStage:
    """One stage deployed through CloudFormation into in-process moto, once, then handed to one user
    after another exactly as it was right after that deploy: the ~0.5 s deploy is paid once per
    process instead of once per test.

    After the deploy every moto backend's state is snapshotted (a deep copy); each ``use()`` puts
    that copy back, so whatever the previous user wrote anywhere (items, stream records and shard
    iterators, sent emails and their counters, identities, SNS subscriptions, SQS messages and
    queues, S3 objects and buckets, SSM parameters, metrics, alarms, log groups, roles, ...) is
    gone, and services the stage never touched are reset to empty. Two things keep their identity
    instead of being copied: the backends themselves (SESv2 holds SES v1's, and the app's boto3
    clients find them by account and region) and SQS queues (they hold a lock; their messages are
    purged instead). When something else reset moto meanwhile (a test's own ``mock_aws()``), the
    stage is deployed again."""

    def __init__(self, stage: str = "test", sender: str = SENDER) -> None:
        self.stage = stage
        self.sender = sender
        self.deploys = 0
        self._outputs: dict[str, str] = {}
        self._backends: dict[tuple[str, str, str], Any] = {}
        self._snapshot: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._bucket_accounts: dict[str, Any] = {}

    @contextlib.contextmanager
    def use(self) -> Iterator[dict[str, str]]:
        """moto active, the stage as deployed; yields the stack's outputs."""
        from moto import mock_aws
        from moto.core.custom_responses_mock import reset_responses_mock
        from moto.core.models import MockAWS, responses_mock

        # Lambda functions are never run in moto (no Docker here): an invoke is only recorded.
        mock = mock_aws(config={"lambda": {"use_docker": False}})
        mock.start(reset=False)  # keep the deployed stage
        try:
            if self._intact():
                self.reset()
            else:
                mock.reset()
                self._deploy()
            yield dict(self._outputs)
        finally:
            mock.stop(remove_data=False)
            if MockAWS._nested_count == 0:
                # Each start registers moto's URL callbacks again; only a reset forgets them.
                reset_responses_mock(responses_mock)

    def _intact(self) -> bool:
        if not self._backends:
            return False
        live = _live_backends()
        return all(live.get(key) is backend for key, backend in self._backends.items())

    def _deploy(self) -> None:
        import boto3
        from moto.s3.models import s3_backends

        from twin import stack

        session = boto3.session.Session(region_name="us-east-1")
        self._outputs = stack.deploy(self.stage, session)
        stack.verify_sender(session, self.sender)
        self.deploys += 1
        self._backends = _live_backends()
        self._snapshot = copy.deepcopy({key: vars(b) for key, b in self._backends.items()}, self._kept())
        self._bucket_accounts = dict(s3_backends.bucket_accounts)

    def _kept(self) -> dict[int, Any]:
        """The deep copy's memo: what keeps its identity rather than being copied."""
        kept = [*self._backends.values(), *_sqs_queues(self._backends)]
        return {id(value): value for value in kept}

    def reset(self) -> None:
        """Everything as right after the deploy (moto active, the stage intact)."""
        from moto.s3.models import FakeKey, s3_backends

        live = _live_backends()
        for queue in _sqs_queues(self._backends):
            queue._messages = []
            queue._pending_messages = set()
            queue.deleted_messages = set()
        for (service, _, _), backend in live.items():
            if service == "s3":  # moto keeps each object in a temporary file: close them
                for bucket in backend.buckets.values():
                    for key in bucket.keys.values():
                        if isinstance(key, FakeKey):
                            key.dispose()
        state = copy.deepcopy(self._snapshot, self._kept())
        for key, backend in live.items():
            if key in state:
                vars(backend).clear()
                vars(backend).update(state[key])
            else:
                backend.reset()
        s3_backends.bucket_accounts.clear()
        s3_backends.bucket_accounts.update(self._bucket_accounts)
