"""Domain errors to HTTP answers: the one table, used by every route and by the OpenAPI document."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from chalice.app import Response

from chalicelib.config import MAX_BODY_BYTES
from chalicelib.credentials import CredentialsUnavailable
from chalicelib.errors import (
    ConfigError,
    Conflict,
    InvalidToken,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StoreError,
    TrellisError,
    UnsupportedMediaType,
    ValidationFailed,
)
from chalicelib.rendering import render_page

logger = logging.getLogger(__name__)

Headers = dict[str, str | list[str]]
JSON = "application/json"
HTML_TYPE = "text/html; charset=utf-8"


class Unauthorized(TrellisError):
    """Missing or wrong admin credentials. Says nothing more."""


@dataclass(frozen=True)
class Status:
    code: int
    error: str
    heading: str  # an HTML error page's
    name: str = ""  # its shared response in the OpenAPI document (components/responses)
    doc: str = ""
    headers: tuple[tuple[str, str], ...] = ()


_UNAVAILABLE = Status(
    503,
    "unavailable",
    "Please try again in a moment",
    "Unavailable",
    "`unavailable`: storage or credentials could not be reached; retry",
)
_TABLE: tuple[tuple[type[TrellisError], Status], ...] = (
    (
        Unauthorized,
        Status(401, "unauthorized", "Unauthorized", "Unauthorized", headers=(("WWW-Authenticate", "Bearer"),)),
    ),
    (
        ValidationFailed,
        Status(
            400,
            "validation_error",
            "Please check the form",
            "ValidationFailed",
            "`validation_error`: `fields` names each bad field and why",
        ),
    ),
    (InvalidToken, Status(400, "invalid_token", "This link is not valid")),
    (NotFound, Status(404, "not_found", "Not found", "NotFound", "`not_found`, with a `message`")),
    (Conflict, Status(409, "conflict", "Not now", "Conflict", "`conflict`, with a `message` saying why")),
    (
        PayloadTooLarge,
        Status(
            413,
            "payload_too_large",
            "Too much data",
            "PayloadTooLarge",
            f"`payload_too_large`: more than {MAX_BODY_BYTES} bytes",
        ),
    ),
    (
        UnsupportedMediaType,
        Status(
            415,
            "unsupported_media_type",
            "Unsupported form encoding",
            "UnsupportedMediaType",
            "`unsupported_media_type`: `accepted` lists the types",
        ),
    ),
    (
        RateLimited,
        Status(
            429,
            "rate_limited",
            "Too many requests",
            "RateLimited",
            "`rate_limited`: too many requests; `retry_after` seconds",
        ),
    ),
    (StoreError, _UNAVAILABLE),
    (CredentialsUnavailable, _UNAVAILABLE),
    (ConfigError, Status(500, "misconfigured", "Something is wrong on our side")),
)
_INTERNAL = Status(500, "internal_error", "Something is wrong on our side")


def status_of(kind: type[TrellisError]) -> Status:
    for known, status in _TABLE:
        if issubclass(kind, known):
            return status
    return _INTERNAL


def documented_statuses() -> list[Status]:
    """The statuses with a shared response in the document, each once."""
    return list({status.name: status for _, status in _TABLE if status.name}.values())


def error_response(
    error: TrellisError, *, html: bool = False, headers: Optional[Headers] = None, back_url: Optional[str] = None
) -> Response:
    from chalicelib.http.bodies import Error

    status = status_of(type(error))
    headers = {**dict(status.headers), **(headers or {})}
    detail: dict[str, Any] = {}
    if isinstance(error, ValidationFailed):
        detail = {"fields": error.fields}
    elif isinstance(error, UnsupportedMediaType):
        detail = {"message": str(error), "accepted": list(error.accepted)}
    elif isinstance(error, PayloadTooLarge):
        detail = {"message": str(error), "limit_bytes": error.limit}
    elif isinstance(error, (NotFound, Conflict)):
        detail = {"message": str(error)}
    elif isinstance(error, RateLimited):
        detail = {"message": str(error), "retry_after": error.retry_after}
        headers["Retry-After"] = str(error.retry_after)
    body = Error(error=status.error, **detail)
    if status.code >= 500:
        logger.error("request failed: %s", type(error).__name__, exc_info=error)
        headers.setdefault("Retry-After", "30")
    if html:
        page = render_page(
            "error.html",
            heading=status.heading,
            message=_html_message(error),
            fields=body.fields or {},
            back_url=back_url,
        )
        return Response(page, status_code=status.code, headers={**headers, "Content-Type": HTML_TYPE})
    return Response(body.to_json(), status_code=status.code, headers={**headers, "Content-Type": JSON})


def _html_message(error: TrellisError) -> str:
    if isinstance(error, ValidationFailed):
        return "Some of what you entered could not be accepted:"
    if isinstance(error, NotFound):
        return "This form does not exist (any more). Please check the page you came from."
    if isinstance(error, PayloadTooLarge):
        return "The form sent more data than we accept."
    if isinstance(error, StoreError):
        return "We could not save your details just now; nothing was stored. Please try again."
    return "Something went wrong; nothing was stored."
