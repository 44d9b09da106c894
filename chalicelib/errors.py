"""Domain errors. HTTP status codes are mapped from these in one place (``chalicelib.http``)."""

from __future__ import annotations

from typing import Any


class TrellisError(Exception):
    """Base of every error Trellis raises on purpose."""


class ConfigError(TrellisError):
    """Settings or a campaign file are missing or invalid; raised at cold start."""


class NotFound(TrellisError):
    def __init__(self, what: str, identifier: str) -> None:
        super().__init__(f"{what} {identifier!r} not found")
        self.what = what
        self.identifier = identifier


class Conflict(TrellisError):
    """The request is well formed but the thing it names is in a state that refuses it."""


class ValidationFailed(TrellisError):
    """Input was rejected; ``fields`` maps each bad field to the reason."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("validation failed: " + ", ".join(sorted(fields)))
        self.fields = fields


class PayloadTooLarge(TrellisError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


class UnsupportedMediaType(TrellisError):
    def __init__(self, content_type: str, accepted: tuple[str, ...]) -> None:
        super().__init__(f"unsupported content type {content_type!r}")
        self.content_type = content_type
        self.accepted = accepted


class InvalidToken(TrellisError):
    """A token failed its signature, purpose or expiry check. Callers act on nothing."""


class StoreError(TrellisError):
    """DynamoDB refused or failed a request after retries."""


class InvalidRequest(StoreError):
    """DynamoDB refused the request as malformed (ValidationException): retrying cannot help."""


class WriteConflict(StoreError):
    """A conditional write lost a race; the caller re-reads and tries again."""


class ConditionFailed(WriteConflict):
    """A conditional write found the item not as expected (missing, or already changed)."""


class SendThrottled(TrellisError):
    """SES asked us to slow down (throttling, max send rate); the email was not sent."""


class SendRejected(TrellisError):
    """SES refused this message for good (e.g. the address is on its suppression list)."""

    def __init__(self, code: str) -> None:
        super().__init__(f"SES rejected the message: {code}")
        self.code = code


class SendFailed(TrellisError):
    """SES could not be reached or failed; the email was not sent and may be retried."""


class Unsendable(TrellisError):
    """This item's own data cannot make a valid email (an address SES cannot take, such as one
    with a non-ASCII local part or a line break). Retrying cannot help: the address is suppressed
    and the item exits; other items are not affected."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot build an email: {reason}")
        self.reason = reason


class RateLimited(TrellisError):
    """Too many requests from one source or for one lead in the current window."""

    def __init__(self, what: str, retry_after_seconds: int) -> None:
        super().__init__(f"too many {what}; try again in {retry_after_seconds} s")
        self.what = what
        self.retry_after = retry_after_seconds


# Request fields that hold models of their own: an error inside names the inner field too.
_NESTED_DEPTH = {"segment": 2, "variants": 3}
_TAGGED_UNIONS = {"segment": ("name", "rules")}


def field_errors(error: Any, whole: str = "body") -> dict[str, str]:
    """Each bad field's first reason, from a pydantic ``ValidationError`` (read by its
    ``errors()``, so this module needs no pydantic); ``whole`` names errors about the input as a whole."""
    fields: dict[str, str] = {}
    for item in error.errors():
        # A nested model's field is named by its path (segment.score_min, variants.0.template),
        # without the tag of the union it was read as.
        loc = [str(part) for part in item["loc"]]
        if len(loc) > 1 and loc[0] in _TAGGED_UNIONS and loc[1] in _TAGGED_UNIONS[loc[0]]:
            del loc[1]
        name = ".".join(loc[: _NESTED_DEPTH.get(loc[0], 1)]) if loc else whole
        message = item["msg"].removeprefix("Value error, ")
        fields.setdefault(name, message)
    return fields
