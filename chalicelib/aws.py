"""Lazily created, cached boto3 clients.

boto3 reads ``AWS_ENDPOINT_URL`` itself, so the same code talks to AWS when deployed and to the
moto server in the local twin. Clients are created on first use (not at import) to keep cold
starts short and so that tests can swap the environment before anything connects.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sesv2 import SESV2Client

# Standard retry mode backs off on throttling and transient 5xx; AWS SDKs' recommended default.
RETRY_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"})


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


def _client(service: str, **kwargs: Any) -> Any:
    return _session().client(service, config=RETRY_CONFIG, **kwargs)  # type: ignore[call-overload]


@functools.cache
def dynamodb() -> DynamoDBClient:
    client: DynamoDBClient = _client("dynamodb")
    return client


@functools.cache
def s3() -> S3Client:
    # Presigned URLs must use SigV4 (the only scheme newer regions accept) and the regional host.
    client: S3Client = _session().client(
        "s3", config=RETRY_CONFIG.merge(Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    )
    return client


# No SDK-level retries for SES: a retried SendEmail whose first answer was lost sends twice, and
# the dispatcher already retries failed steps itself, with backoff, under its claim. botocore's
# ``max_attempts`` counts retries (1 = one retry); ``total_max_attempts`` counts attempts, and an
# explicit one also wins over AWS_MAX_ATTEMPTS and the config file.
SES_RETRY_CONFIG = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@functools.cache
def sesv2() -> SESV2Client:
    client: SESV2Client = _session().client("sesv2", config=SES_RETRY_CONFIG)
    return client


@functools.cache
def ses_v1() -> Any:
    """Only for GetSendQuota (the account's max send rate), which moto serves on SES v1."""
    return _session().client("ses", config=SES_RETRY_CONFIG)


@functools.cache
def lambda_() -> Any:
    """Starts the parts of a fanned-out tick (asynchronous invocations). One attempt, as for
    SES: an order that could not be started is worked by the tick itself, and a retried one
    whose first answer was lost would run twice."""
    return _session().client("lambda", config=SES_RETRY_CONFIG)


@functools.cache
def sns() -> Any:
    return _session().client("sns", config=RETRY_CONFIG)


@functools.cache
def ssm() -> Any:
    return _client("ssm")


def reset() -> None:
    """Forget cached clients (tests that switch endpoints or credentials call this)."""
    for getter in (dynamodb, s3, sesv2, ses_v1, lambda_, sns, ssm, _session):
        getter.cache_clear()
