"""Reading requests: media types, bodies within their limits, models from bodies and query strings."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

from chalice.app import Request, Response

from chalicelib.config import MAX_BODY_BYTES
from chalicelib.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed, field_errors

if TYPE_CHECKING:
    from pydantic import BaseModel

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
ACCEPTED_TYPES = (JSON, FORM)
MAX_FORM_FIELDS = 100

Headers = dict[str, str | list[str]]
_Model = TypeVar("_Model", bound="BaseModel")


def media_type(headers: Any) -> str:
    """The request's media type without parameters, lower case ("" when none)."""
    return str(headers.get("content-type") or "").split(";")[0].strip().lower()


def header(headers: Any, name: str) -> str:
    return str(headers.get(name) or "")


def read_fields(request: Request, accepted: tuple[str, ...] = ACCEPTED_TYPES) -> dict[str, Any]:
    """The body's fields, from JSON (an object) or an HTML form post, within ``MAX_BODY_BYTES``."""
    kind, text = read_text(request, accepted, MAX_BODY_BYTES)
    if kind == FORM:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except ValueError as e:
            raise ValidationFailed({"body": f"more than {MAX_FORM_FIELDS} fields"}) from e
        return dict(pairs)  # a repeated name keeps its last value, as most form handlers do
    try:
        data = json.loads(text) if text.strip() else None
    except RecursionError as e:  # nesting deeper than the parser goes, well inside the size limit
        raise ValidationFailed({"body": "JSON nested too deeply"}) from e
    except ValueError as e:
        raise ValidationFailed({"body": f"not valid JSON: {e}"}) from e
    if not isinstance(data, dict):
        raise ValidationFailed({"body": "must be a JSON object of field names to values"})
    return data


def read_text(request: Request, accepted: tuple[str, ...], limit: int) -> tuple[str, str]:
    """The body as text and its media type, for uploads larger than a form (``limit`` bytes)."""
    kind = media_type(request.headers)
    if kind not in accepted:
        raise UnsupportedMediaType(kind or "(none)", accepted)
    raw = request.raw_body or b""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > limit:
        raise PayloadTooLarge(limit)
    try:
        return kind, raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValidationFailed({"body": "must be UTF-8 encoded"}) from e


def parse(model: type[_Model], data: dict[str, Any], whole: str) -> _Model:
    """``data`` as ``model``, or ValidationFailed naming each bad field (``whole``: the input itself)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ValidationFailed(field_errors(e, whole=whole)) from e


def json_body(request: Request, model: type[_Model]) -> _Model:
    return parse(model, read_fields(request, (JSON,)), "body")


def query(request: Request, model: type[_Model]) -> _Model:
    return parse(model, dict(request.query_params or {}), "query")


# -- CORS ---------------------------------------------------------------------------------------


def cors_for(allowed_origins: Iterable[str], request: Request) -> Headers:
    """Grant the request's origin only when it is one of ``allowed_origins``."""
    origin = header(request.headers, "origin").lower()
    if origin and origin in allowed_origins:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {"Vary": "Origin"}


def preflight_response(headers: Headers, request: Request) -> Response:
    """A CORS preflight answer: POST with a Content-Type, for an origin already granted."""
    requested = header(request.headers, "access-control-request-method").upper()
    if "Access-Control-Allow-Origin" in headers and requested == "POST":
        headers.update(
            {
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "600",
            }
        )
    return Response("", status_code=204, headers=headers)
