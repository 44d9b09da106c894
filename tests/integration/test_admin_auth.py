"""Admin credentials: from the environment locally, from an SSM SecureString parameter deployed,
checked by the admin authorizer; rotation without a redeploy."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import boto3
import pytest

from chalicelib import aws, runtime
from chalicelib.config import Settings
from chalicelib.credentials import SSM_CACHE_SECONDS
from chalicelib.errors import ConfigError
from testkit.world import made_up_environment
from tests.helpers import RequestCounter, body

PARAMETER = "/trellis/dev/admin-token"
OLD, NEW = "o" * 40, "n" * 40
UNKNOWN_LEAD = "0" * 32


def patch(client: Any, token: str) -> Any:
    return client.http.request(
        "PATCH",
        f"/admin/leads/{UNKNOWN_LEAD}",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        body=json.dumps({"stage": "customer"}),
    )


@pytest.fixture
def ssm_client(rt: runtime.Runtime, clock: Any) -> Any:
    """The app's runtime, reading the admin token from SSM instead of the environment."""
    from chalice.test import Client

    from app import app

    settings = dataclasses.replace(rt.settings, admin_token=b"", admin_token_parameter=PARAMETER)
    runtime.install(runtime.Runtime.build(settings, clock=clock, campaign=rt.campaign))
    with Client(app, stage_name="dev") as client:
        yield client


def put_token(value: str) -> None:
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name=PARAMETER, Value=value, Type="SecureString", Overwrite=True
    )


def test_token_from_ssm_is_checked_and_read_once_per_cache_period(ssm_client):
    put_token(OLD)
    calls = RequestCounter(aws.ssm())
    right, again, wrong = patch(ssm_client, OLD), patch(ssm_client, OLD), patch(ssm_client, NEW)

    assert (right.status_code, again.status_code) == (404, 404)  # past the authorizer: no such lead
    assert (wrong.status_code, body(wrong)) == (401, {"error": "unauthorized"})
    assert calls.calls == ["GetParameter"]


def test_rotated_token_takes_over_within_the_cache_period(ssm_client, clock):
    put_token(OLD)
    assert patch(ssm_client, OLD).status_code == 404
    put_token(NEW)

    clock.advance(SSM_CACHE_SECONDS - 1)
    still_old = patch(ssm_client, OLD).status_code
    clock.advance(1)

    assert still_old == 404
    assert patch(ssm_client, OLD).status_code == 401
    assert patch(ssm_client, NEW).status_code == 404


def test_unreadable_parameter_is_503_and_lets_nobody_in(ssm_client, table_items):
    before = table_items()
    answer = patch(ssm_client, OLD)  # no parameter stored

    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "30"
    assert body(answer)["error"] == "unavailable"
    assert PARAMETER not in json.dumps(body(answer))
    assert table_items() == before


BASE = made_up_environment(TRELLIS_TOKEN_KEY="k" * 40)


def test_settings_need_exactly_one_admin_token_source():
    with pytest.raises(ConfigError) as neither:
        Settings.from_env(BASE)
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env({**BASE, "TRELLIS_ADMIN_TOKEN": OLD, "TRELLIS_ADMIN_TOKEN_PARAMETER": PARAMETER})

    assert "TRELLIS_ADMIN_TOKEN" in str(neither.value) and "TRELLIS_ADMIN_TOKEN_PARAMETER" in str(neither.value)
    from_ssm = Settings.from_env({**BASE, "TRELLIS_ADMIN_TOKEN_PARAMETER": PARAMETER})
    assert (from_ssm.admin_token, from_ssm.admin_token_parameter) == (b"", PARAMETER)
