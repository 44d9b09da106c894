"""SES adapter: send raw MIME through SESv2 with the stage's configuration set."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import SendFailed, SendRejected, SendThrottled

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

# SES answers "slow down" under several names across its two APIs.
_THROTTLE_CODES = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "MaxSendingRateExceeded",
    "LimitExceededException",
    "SendingPausedException",
}
# Only MessageRejected is about this message or recipient. A sender-side problem (an unverified
# MAIL FROM domain, a paused account) is ours to fix: the step waits and retries, and no lead is
# suppressed for it.
_REJECT_CODES = {"MessageRejected"}


class Mailer(Protocol):
    def send(self, source: str, to: str, raw: bytes) -> str: ...

    def max_send_rate(self) -> float: ...


class SesMailer:
    """``sesv2`` and ``ses_v1`` make (or return the cached) clients when first needed: a dispatcher
    tick with nothing due, or a stream batch that sends nothing, never loads SES's service models."""

    def __init__(
        self,
        sesv2: Callable[[], SESV2Client],
        ses_v1: Callable[[], Any],
        configuration_set: str,
        max_send_rate: Optional[float] = None,
    ) -> None:
        self._make_sesv2 = sesv2
        self._make_ses_v1 = ses_v1
        self._configuration_set = configuration_set
        self._max_send_rate = max_send_rate

    @property
    def _sesv2(self) -> SESV2Client:
        return self._make_sesv2()

    @property
    def _ses_v1(self) -> Any:
        return self._make_ses_v1()

    def send(self, source: str, to: str, raw: bytes) -> str:
        try:
            response = self._sesv2.send_email(
                FromEmailAddress=source,
                Destination={"ToAddresses": [to]},
                Content={"Raw": {"Data": raw}},
                ConfigurationSetName=self._configuration_set,
            )
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in _THROTTLE_CODES:
                raise SendThrottled(code) from e
            if code in _REJECT_CODES:
                raise SendRejected(code) from e
            raise SendFailed(code or "unknown") from e
        except BotoCoreError as e:
            raise SendFailed(type(e).__name__) from e
        return response["MessageId"]

    def max_send_rate(self) -> float:
        """Emails per second the account allows (GetSendQuota; SESv2 has no moto support for it)."""
        if self._max_send_rate is None:
            try:
                self._max_send_rate = float(self._ses_v1.get_send_quota()["MaxSendRate"])
            except (ClientError, BotoCoreError) as e:
                raise SendFailed("GetSendQuota") from e
        return self._max_send_rate
