"""The admin token, from the environment (local) or SSM Parameter Store (deployed).

Deployed, the token is a SecureString parameter read with decryption and kept for
``SSM_CACHE_SECONDS``: a rotated value (``aws ssm put-parameter --overwrite``) is picked up by
every warm function within that time, with no redeploy.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Optional, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.clock import Clock
from chalicelib.errors import TrellisError

SSM_CACHE_SECONDS = 300


class CredentialsUnavailable(TrellisError):
    """The admin token could not be read (SSM failed or the parameter is missing)."""


class AdminToken(Protocol):
    def value(self) -> bytes: ...


class StaticAdminToken:
    def __init__(self, token: bytes) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticAdminToken(<redacted>)"

    def value(self) -> bytes:
        return self._token


class SsmAdminToken:
    def __init__(self, ssm: Any, parameter_name: str, clock: Clock, cache_seconds: float = SSM_CACHE_SECONDS) -> None:
        self._ssm = ssm
        self._name = parameter_name
        self._clock = clock
        self._cache_for = timedelta(seconds=cache_seconds)
        self._cached: Optional[bytes] = None
        self._fetched_at: Optional[datetime] = None

    def __repr__(self) -> str:
        return f"SsmAdminToken({self._name!r})"

    def value(self) -> bytes:
        now = self._clock.now()
        if self._cached is None or self._fetched_at is None or now - self._fetched_at >= self._cache_for:
            self._cached, self._fetched_at = self._fetch(), now
        return self._cached

    def _fetch(self) -> bytes:
        try:
            answer = self._ssm.get_parameter(Name=self._name, WithDecryption=True)
        except (ClientError, BotoCoreError) as e:
            raise CredentialsUnavailable(f"cannot read SSM parameter {self._name}") from e
        token = str(answer["Parameter"]["Value"]).encode()
        if not token:
            raise CredentialsUnavailable(f"SSM parameter {self._name} is empty")
        return token
