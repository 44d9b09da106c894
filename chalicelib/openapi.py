"""The OpenAPI 3.1 document of Trellis's HTTP API, served at ``GET /openapi.json``.

Built in code: request schemas come from the pydantic models that validate the requests
(``model_json_schema``), constants (stages, report metrics, limits) from the modules that use
them, so the document cannot quietly drift from what the code accepts. Response shapes are
written out here (the routes build them as plain dicts); ``tests/integration/test_openapi.py`` checks them
against real responses and checks that every route Chalice serves is documented, and only those.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, Optional, get_args

from pydantic import BaseModel

from chalicelib import engagement
from chalicelib.config import MAX_BODY_BYTES
from chalicelib.handoff import FEEDBACK_STAGES
from chalicelib.models import (
    CONSENT_FIELD,
    LEAD_TOKEN_FIELD,
    RENDERED_AT_FIELD,
    TRACKING_FIELDS,
    BehaviourEventIn,
    BotDefence,
    Form,
    LeadExportParams,
    LeadListParams,
    SpendUpdate,
    Stage,
    StandardField,
    Tracking,
    submission_model,
)
from chalicelib.reports import (
    EMAIL_METRICS,
    FUNNEL_STAGES,
    MACHINE_METRICS,
    OFF_FUNNEL_STAGES,
    SES_BOUNCE_LIMIT,
    SES_COMPLAINT_LIMIT,
    VELOCITY_STAGES,
)

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
ADMIN_COOKIE = "trellis_admin"

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
HTML = "text/html"
CSV = "text/csv"
GIF = "image/gif"

Schema = dict[str, Any]

# -- schema helpers -----------------------------------------------------------------------------

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
TIMESTAMP: Schema = {"type": "string", "format": "date-time", "description": "UTC, e.g. 2026-11-23T09:30:00.000000Z"}
LEAD_ID: Schema = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "derived from the normalised email"}
ANY_OBJECT: Schema = {"type": "object"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    if set(schema) == {"type"} and isinstance(schema["type"], str):
        return {"type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: Mapping[str, Schema], required: Optional[Iterable[str]] = None, **extra: Any) -> Schema:
    """An object schema; every property is required unless ``required`` says otherwise.

    Response objects stay open (no ``additionalProperties: false``): clients must ignore fields
    they do not know, so adding one is not a breaking change.
    """
    names = list(properties) if required is None else list(required)
    schema: Schema = {"type": "object", "properties": dict(properties), **extra}
    if names:
        schema["required"] = names
    return schema


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def counts(keys: Iterable[str]) -> Schema:
    return obj({key: INTEGER for key in keys})


def rates(keys: Iterable[str]) -> Schema:
    return obj({key: nullable(NUMBER) for key in keys})


# -- request schemas from the pydantic models ---------------------------------------------------


def model_schema(model: type[BaseModel], hoisted: dict[str, Schema]) -> Schema:
    """The model's JSON Schema, with nested definitions moved into ``components/schemas``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    hoisted.update(schema.pop("$defs", {}))
    return schema


def _without_null(schema: Schema) -> Schema:
    """An ``Optional[X]`` query parameter is X or absent: a query string has no null."""
    variants = schema.get("anyOf")
    if variants is None:
        return schema
    rest = [v for v in variants if v != {"type": "null"}]
    stripped = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    if len(rest) == 1:
        return {**rest[0], **stripped}
    return {**stripped, "anyOf": rest}


def query_parameters(model: type[BaseModel], descriptions: Mapping[str, str]) -> list[Schema]:
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "description": descriptions.get(name, ""),
            "schema": {k: v for k, v in _without_null(prop).items() if k != "title"},
        }
        for name, prop in schema["properties"].items()
    ]


_LIST_PARAMETER_HELP = {
    "stage": "only leads in this stage (highest score first)",
    "min_score": "only leads scoring at least this",
    "max_score": "only leads scoring at most this",
    "form": "only leads first captured through this form",
    "utm_source": "only leads whose first touch had this utm_source",
    "created_from": "only leads created at or after this moment (with a time zone)",
    "created_to": "only leads created at or before this moment (with a time zone)",
    "limit": "page size",
    "cursor": "the `next_cursor` of the previous page (valid for one day, with the same filters)",
}


def _submission_schema(hoisted: dict[str, Schema]) -> Schema:
    """Every field a form may declare, from the model a form with all standard fields builds.

    Which fields a form requires, which custom fields it takes and whether consent is required
    are per form, in the campaign file; unknown fields are ignored, never stored.
    """
    every_field = Form(
        kind="signup",
        thank_you_url="https://example.com/thanks",
        fields={"email": "required", **dict.fromkeys(get_args(StandardField)[1:], "optional")},
    )
    schema = model_schema(submission_model(every_field), hoisted)
    hoisted.pop("NormalisedEmail", None)  # the parsed form of the address, not what is sent
    tracking = model_schema(Tracking, hoisted)
    honeypot = BotDefence().honeypot_field
    properties: dict[str, Schema] = {
        **schema["properties"],
        "email": {
            "type": "string",
            "format": "email",
            "maxLength": 254,
            "description": "one address as text, validated (no DNS lookup); an ASCII part before the @",
        },
        **{name: tracking["properties"][name] for name in TRACKING_FIELDS},
        CONSENT_FIELD: {
            "anyOf": [BOOLEAN, STRING],
            "description": 'marketing consent: true, or "on", "true", "1", "yes" as HTML checkboxes send it; '
            "required by forms that ask for consent",
        },
        RENDERED_AT_FIELD: {
            "anyOf": [NUMBER, STRING],
            "description": "when the page rendered the form, in milliseconds since the epoch (bot defence): "
            "a JSON post without it, or with one in the future or not a number, is answered as a success and "
            "nothing is stored",
        },
        LEAD_TOKEN_FIELD: {
            "type": "string",
            "maxLength": 4096,
            "description": "the lead token the page holds; one that came through a link in the lead's own "
            "email lets this submission change the lead's existing profile fields",
        },
        honeypot: {
            "type": "string",
            "maxLength": 0,
            "description": f"honeypot (the campaign's bot_defence.honeypot_field, {honeypot!r} by default): "
            "must stay empty; a filled one is answered as a success and nothing is stored",
        },
    }
    return {
        "title": "FormSubmission",
        "type": "object",
        "description": "A form's fields. Fields the form does not declare (custom fields excepted) are ignored; "
        "an empty string means not given.",
        "properties": properties,
        "required": ["email"],
        "additionalProperties": {"description": "the form's custom fields (text, number, choice, checkbox)"},
    }


def _urlencoded(schema: Schema) -> Schema:
    """The same fields as an HTML form posts them: every value a string."""
    properties = {
        name: {"type": "string", **{k: v for k, v in _without_null(prop).items() if k in ("maxLength", "pattern")}}
        for name, prop in schema["properties"].items()
    }
    properties["email"] = dict(schema["properties"]["email"])
    return {**schema, "title": "FormSubmissionFields", "properties": properties}


# -- response schemas --------------------------------------------------------------------------


# Why an open or click was a machine's (chalicelib.engagement), as the lead detail lists them.
_VERDICT_REASONS = (
    engagement.METHOD,
    engagement.AGENT,
    engagement.APPLE_PROXY,
    engagement.TOO_SOON,
    engagement.BURST,
    engagement.TRAP,
)


def _response_schemas() -> dict[str, Schema]:
    touch = obj(
        {
            "at": TIMESTAMP,
            "form_id": STRING,
            "magnet": STRING,
            **{name: STRING for name in TRACKING_FIELDS if name != "timezone"},
        },
        required=["at", "form_id"],
    )
    lead_summary = {
        "lead_id": LEAD_ID,
        "email": STRING,
        "stage": ref("Stage"),
        "score": NUMBER,
        "created_at": TIMESTAMP,
        "form": {"type": "string", "description": "first-touch form"},
        "utm_source": nullable(STRING),
        "owner": {"type": ["string", "null"], "description": "the assigned sales rep's name"},
        "unsubscribed": BOOLEAN,
    }
    email_row = {
        **{metric: INTEGER for metric in EMAIL_METRICS},
        "opened": {**INTEGER, "description": "leads a person opened the email of (each once)"},
        "clicked": {**INTEGER, "description": "leads a person clicked in the email of (each once)"},
        **{
            metric: {
                **INTEGER,
                "description": f"leads whose email a machine {metric.removeprefix('machine_')} (a link scanner, "
                "Apple's proxy; each once): not in the rates; a lead whose email a scanner and then its person "
                "clicked is counted in both",
            }
            for metric in MACHINE_METRICS
        },
        "rates": {
            **rates(EMAIL_METRICS[1:]),
            "description": "relative to emails sent (as SES computes them); opens and clicks are people's",
        },
    }
    funnel_row = {
        "reached": {**counts(FUNNEL_STAGES), "description": "leads that reached each stage (each counted once)"},
        "off_funnel": counts(OFF_FUNNEL_STAGES),
        "conversion": array(obj({"from": STRING, "to": STRING, "rate": nullable(NUMBER)})),
        "velocity": obj(
            {
                stage: obj({"leads": INTEGER, "median_seconds": nullable(NUMBER)}, description="capture to " + stage)
                for stage in VELOCITY_STAGES
            }
        ),
        "spend": nullable(NUMBER),
        "cost_per_lead": nullable(NUMBER),
        "cost_per_sql": nullable(NUMBER),
    }
    return {
        "Stage": {"type": "string", "enum": list(get_args(Stage))},
        "Error": obj(
            {
                "error": {"type": "string", "description": "machine-readable, e.g. validation_error, not_found"},
                "fields": {
                    "type": "object",
                    "additionalProperties": STRING,
                    "description": "each rejected field (or `body`, `query`) and why",
                },
                "message": STRING,
                "accepted": array(STRING),
                "limit_bytes": INTEGER,
                "retry_after": INTEGER,
            },
            required=["error"],
        ),
        "ChaliceError": obj({"Code": STRING, "Message": STRING}, description="Chalice's own answer"),
        "GatewayError": obj({"message": STRING}, description="API Gateway's own answer, e.g. a missing token"),
        "Health": obj({"status": {"const": "ok"}}),
        "FormAccepted": obj(
            {
                "lead_id": LEAD_ID,
                "lead_token": {"type": "string", "description": "identifies the lead to POST /events"},
                "download_url": {"type": "string", "description": "the lead magnet (magnet forms only)"},
            },
            required=["lead_id", "lead_token"],
        ),
        "EventAccepted": obj({"accepted": {"const": True}}),
        "Touch": touch,
        "LeadSummary": obj(lead_summary),
        "LeadList": obj({"leads": array(ref("LeadSummary")), "next_cursor": nullable(STRING)}),
        "LeadDetail": obj(
            {
                "lead": obj(
                    {
                        **lead_summary,
                        "updated_at": TIMESTAMP,
                        "profile": {"type": "object", "additionalProperties": STRING},
                        "custom": ANY_OBJECT,
                        "timezone": nullable(STRING),
                        "unsubscribed_at": nullable(TIMESTAMP),
                        "stage_reason": nullable(STRING),
                        "owner": nullable(obj({"name": STRING, "email": STRING})),
                    }
                ),
                "consent": nullable(
                    obj(
                        {
                            "status": {"type": "string", "enum": ["granted", "pending_confirmation"]},
                            "version": STRING,
                            "text": STRING,
                            "form_id": STRING,
                            "at": TIMESTAMP,
                        }
                    )
                ),
                "attribution": obj({"first_touch": ref("Touch"), "last_touch": ref("Touch")}),
                "score": obj(
                    {
                        "total": NUMBER,
                        "engagement": NUMBER,
                        "fit": NUMBER,
                        "events_counted": INTEGER,
                        "reset_at": nullable(TIMESTAMP),
                    }
                ),
                "email_engagement": {
                    **obj({label: counts(("opened", "clicked")) for label in (engagement.HUMAN, engagement.MACHINE)}),
                    "description": "the timeline's opens and clicks, a person's and a machine's apart",
                },
                "enrolments": array(
                    obj(
                        {
                            "sequence": STRING,
                            "status": STRING,
                            "step_index": INTEGER,
                            "due_at": nullable(TIMESTAMP),
                            "exit_reason": nullable(STRING),
                        }
                    )
                ),
                "timeline": {
                    **array(
                        {
                            "oneOf": [
                                obj(
                                    {
                                        "at": TIMESTAMP,
                                        "kind": {"const": "event"},
                                        "type": STRING,
                                        "data": ANY_OBJECT,
                                        "verdict": {
                                            "type": "string",
                                            "enum": [engagement.HUMAN, engagement.MACHINE],
                                            "description": "opens and clicks only: a person's or a machine's; "
                                            "only a person's count for score, stage, handoff and nurture",
                                        },
                                        "reasons": {
                                            **array(STRING),
                                            "description": "opens and clicks only: why a machine's (empty for a "
                                            "person's), each `<reason>` or `<reason>:<detail>`, reasons: "
                                            + ", ".join(f"`{r}`" for r in _VERDICT_REASONS),
                                        },
                                    },
                                    required=["at", "kind", "type", "data"],
                                ),
                                obj(
                                    {
                                        "at": TIMESTAMP,
                                        "kind": {"const": "message"},
                                        "message_id": STRING,
                                        "subject": STRING,
                                    }
                                ),
                            ]
                        }
                    ),
                    "description": "events and emails sent, newest first",
                },
            }
        ),
        "StageChange": {
            **obj(
                {
                    "stage": {"type": "string", "enum": list(FEEDBACK_STAGES)},
                    "note": {"type": ["string", "null"], "maxLength": 500},
                },
                required=["stage"],
            ),
            "description": "sales feedback on a lead",
        },
        "StageChanged": obj(
            {"lead_id": LEAD_ID, "stage": ref("Stage"), "stage_reason": nullable(STRING), "score": NUMBER}
        ),
        "LeadExport": obj(
            {
                "lead_id": LEAD_ID,
                "exported_at": TIMESTAMP,
                "profile": {**ANY_OBJECT, "description": "the lead's stored profile"},
                "events": array(ANY_OBJECT),
                "enrolments": array(ANY_OBJECT),
                "messages": array(ANY_OBJECT),
                "handoffs": array(ANY_OBJECT),
                "report_markers": {**array(STRING), "description": "which report counters counted this lead"},
                "suppression": nullable(ANY_OBJECT),
            },
            description="everything stored about the person (GDPR art. 15)",
        ),
        "LeadErased": obj(
            {"lead_id": LEAD_ID, "erased": {"const": True}, "items_deleted": INTEGER, "suppressed": {"const": True}}
        ),
        "FunnelReport": obj(
            {
                "campaign": STRING,
                "currency": {"type": ["string", "null"], "pattern": "^[A-Z]{3}$"},
                "stages": array(STRING),
                "total": obj(funnel_row),
                "channels": array(obj({"utm_source": STRING, "utm_medium": STRING, **funnel_row})),
                "utm_campaigns": array(obj({"utm_campaign": STRING, **funnel_row})),
                "bots_blocked": obj(
                    {
                        "total": INTEGER,
                        "by_form": {
                            "type": "object",
                            "additionalProperties": {"type": "object", "additionalProperties": INTEGER},
                            "description": "form id to blocking reason to count",
                        },
                    }
                ),
            }
        ),
        "SequenceReport": obj(
            {
                "steps": array(obj({"sequence_id": STRING, "step_id": STRING, "subject": STRING, **email_row})),
                "totals": obj(email_row),
                "deliverability": obj(
                    {
                        "bounce_rate": nullable(NUMBER),
                        "complaint_rate": nullable(NUMBER),
                        "bounce_limit": {"const": SES_BOUNCE_LIMIT},
                        "complaint_limit": {"const": SES_COMPLAINT_LIMIT},
                        "warnings": array(STRING),
                    }
                ),
                "exits": obj(
                    {
                        "total": {"type": "object", "additionalProperties": INTEGER, "description": "reason to count"},
                        "by_sequence": {
                            "type": "object",
                            "additionalProperties": {"type": "object", "additionalProperties": INTEGER},
                            "description": "sequence id to exit reason (e.g. `stage:sql`, `undeliverable`) to count",
                        },
                    }
                ),
                "bots_blocked": INTEGER,
            }
        ),
        "SpendSet": obj(
            {
                "utm_source": STRING,
                "utm_medium": STRING,
                "amount": NUMBER,
                "currency": {"type": ["string", "null"], "pattern": "^[A-Z]{3}$"},
            }
        ),
    }


# -- responses ---------------------------------------------------------------------------------


def _content(schema: Schema, *media_types: str) -> dict[str, Any]:
    return {media_type: {"schema": schema} for media_type in media_types or (JSON,)}


def _html_page(description: str) -> dict[str, Any]:
    return {"description": description, "content": _content(STRING, HTML)}


def _json(description: str, schema: Schema, headers: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _content(schema)}
    if headers:
        response["headers"] = dict(headers)
    return response


def _header(description: str, schema: Schema = STRING) -> dict[str, Any]:
    return {"description": description, "schema": schema}


_CORS_HEADERS = {
    "Access-Control-Allow-Origin": _header("the request's Origin, when it is one of the form's allowed origins"),
    "Vary": _header("always `Origin`"),
}
_LOCATION = {"Location": _header("where the browser goes next")}
_RETRY_AFTER = {"Retry-After": _header("seconds", INTEGER)}


def _error(name: str, description: str, *media_types: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {}}
    for media_type in media_types or (JSON,):
        response["content"][media_type] = {"schema": ref("Error") if media_type == JSON else STRING}
    if name in ("Unavailable", "RateLimited"):
        response["headers"] = dict(_RETRY_AFTER)
    return response


def _shared_responses() -> dict[str, Any]:
    return {
        "ValidationFailed": _error("ValidationFailed", "`validation_error`: `fields` names each bad field and why"),
        "NotFound": _error("NotFound", "`not_found`, with a `message`"),
        "PayloadTooLarge": _error("PayloadTooLarge", f"`payload_too_large`: more than {MAX_BODY_BYTES} bytes"),
        "UnsupportedMediaType": _error("UnsupportedMediaType", "`unsupported_media_type`: `accepted` lists the types"),
        "Unavailable": _error("Unavailable", "`unavailable`: storage or credentials could not be reached; retry"),
        "RateLimited": _error("RateLimited", "`rate_limited`: too many requests; `retry_after` seconds"),
        "Unauthorized": {
            "description": 'Missing or wrong bearer token: `{"error": "unauthorized"}` (deployed stages '
            "answer a missing header so too, through their gateway responses; `chalice local` answers it "
            'with API Gateway\'s default `{"message": "Unauthorized"}`).',
            "headers": {"WWW-Authenticate": _header("`Bearer`")},
            "content": _content({"anyOf": [ref("Error"), ref("GatewayError")]}),
        },
    }


def _use(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


# -- operations ---------------------------------------------------------------------------------


def _path_parameter(name: str, description: str, schema: Schema = STRING) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


_FORM_ID = _path_parameter("form_id", "a form of the campaign file, e.g. `newsletter`")
_TOKEN = _path_parameter("token", "the signed token from the email's link")
_LEAD_ID = _path_parameter("lead_id", "the lead's id")
_LEAD_ID_OR_EMAIL = _path_parameter("lead_id", "the lead's id, or the email address it was captured with")
_ORIGIN = {"name": "Origin", "in": "header", "required": False, "schema": STRING}

BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def _admin(
    summary: str,
    responses: dict[str, Any],
    *,
    parameters: Optional[list[Schema]] = None,
    request_body: Optional[dict[str, Any]] = None,
    description: str = "",
) -> dict[str, Any]:
    """An operation behind the admin authorizer."""
    operation: dict[str, Any] = {
        "tags": ["admin"],
        "summary": summary,
        "security": BEARER,
        "responses": {**responses, "401": _use("Unauthorized"), "503": _use("Unavailable")},
    }
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if request_body:
        operation["requestBody"] = request_body
    return operation


def _public(summary: str, responses: dict[str, Any], tag: str, **fields: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"tags": [tag], "summary": summary, "security": [], "responses": responses}
    operation.update({k: v for k, v in fields.items() if v is not None})
    return operation


def _with_head(item: dict[str, Any], who: str) -> dict[str, Any]:
    """A path item whose GET is answered to HEAD too: the same statuses and headers, no body."""
    get = item["get"]
    head = {
        **copy.deepcopy(get),
        "summary": f"{get['summary']} (HEAD)",
        "description": f"Answered as the GET, without a body. Recorded like it, as a machine's ({who}: "
        "people's mail apps and browsers GET).",
    }
    return {**item, "head": head}


def _json_body(schema: Schema, description: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"required": True, "content": _content(schema)}
    if description:
        body["description"] = description
    return body


def _paths(submission: Schema, event: Schema, spend: Schema) -> dict[str, Any]:
    list_parameters = query_parameters(LeadListParams, _LIST_PARAMETER_HELP)
    export_parameters = query_parameters(LeadExportParams, _LIST_PARAMETER_HELP)
    preflight_request_method = {
        "name": "Access-Control-Request-Method",
        "in": "header",
        "required": False,
        "schema": STRING,
    }
    preflight_granted = {
        "description": "CORS preflight answer; the allow headers only for an allowed origin asking for POST",
        "headers": {
            **_CORS_HEADERS,
            "Access-Control-Allow-Methods": _header("`POST`"),
            "Access-Control-Allow-Headers": _header("`Content-Type`"),
            "Access-Control-Max-Age": _header("seconds", INTEGER),
        },
    }
    one_click = obj({"List-Unsubscribe": {"const": "One-Click"}}, required=[])
    html_errors = {
        "400": _html_page("the link's token is not valid (tampered, expired, or for another use)"),
        "404": _html_page("the link's lead no longer exists"),
        "503": _html_page("try again in a moment"),
    }
    return {
        "/health": {"get": _public("Liveness", {"200": _json("alive", ref("Health"))}, "ops")},
        "/openapi.json": {
            "get": _public("This document", {"200": _json("the OpenAPI document", ANY_OBJECT)}, "integrators")
        },
        "/forms/{form_id}": {
            "parameters": [_FORM_ID],
            "post": _public(
                "Submit a form (or a lead-magnet form)",
                {
                    "200": _json(
                        "accepted: the same answer for a new lead, a known one and a suspected bot",
                        ref("FormAccepted"),
                        _CORS_HEADERS,
                    ),
                    "303": {
                        "description": "an HTML form post: on to the form's thank-you URL "
                        "(with `download_url` in its query for a lead-magnet form)",
                        "headers": _LOCATION,
                        "content": _content(STRING, HTML),
                    },
                    "400": _error(
                        "ValidationFailed", "`validation_error`; an HTML post gets an error page", JSON, HTML
                    ),
                    "404": _error("NotFound", "no such form; an HTML post gets an error page", JSON, HTML),
                    "413": _error("PayloadTooLarge", f"more than {MAX_BODY_BYTES} bytes", JSON, HTML),
                    "415": _use("UnsupportedMediaType"),
                    "503": _error("Unavailable", "nothing was stored; retry", JSON, HTML),
                },
                "landing pages",
                description="JSON answers with the lead's id and token; a plain HTML form post "
                "(`application/x-www-form-urlencoded`) is redirected. Rejected input stores nothing.",
                parameters=[_ORIGIN],
                requestBody={
                    "required": True,
                    "content": {JSON: {"schema": submission}, FORM: {"schema": _urlencoded(submission)}},
                },
            ),
            "options": _public(
                "CORS preflight of a form post",
                {"204": preflight_granted, "404": _use("NotFound")},
                "landing pages",
                parameters=[_ORIGIN, preflight_request_method],
            ),
        },
        "/events": {
            "post": _public(
                "Report a behavioural event of a known lead",
                {
                    "202": _json(
                        "accepted (what it changes depends on what the token proves; the same answer "
                        "whether or not the lead exists)",
                        ref("EventAccepted"),
                        _CORS_HEADERS,
                    ),
                    "400": _use("ValidationFailed"),
                    "429": _use("RateLimited"),
                    "413": _use("PayloadTooLarge"),
                    "415": _use("UnsupportedMediaType"),
                    "503": _use("Unavailable"),
                },
                "landing pages",
                description="`type` must be one the campaign scores, enrols or exits on (e.g. `page_view`, "
                "`pricing_view`, `demo_request`); events Trellis records itself are refused.",
                parameters=[_ORIGIN],
                requestBody=_json_body(event),
            ),
            "options": _public(
                "CORS preflight of an event post",
                {"204": preflight_granted},
                "landing pages",
                parameters=[_ORIGIN, preflight_request_method],
            ),
        },
        "/t/c/{token}": _with_head(
            {
                "parameters": [_TOKEN],
                "get": _public(
                    "Tracked click: record it, redirect to the signed destination",
                    {"302": {"description": "to the destination", "headers": _LOCATION}, **html_errors},
                    "email",
                    description="Recorded with its verdict's signals (method, user agent): a machine's click "
                    "(a link scanner's, a headless browser's, one sooner after the send than anyone reads) is "
                    "redirected too and counts for nothing. The destination gets a lead token only for a "
                    "person's click.",
                ),
            },
            "a link scanner's HEAD",
        ),
        "/t/o/{token}": _with_head(
            {
                "parameters": [_TOKEN],
                "get": _public(
                    "Open pixel: record the open",
                    {
                        "200": {"description": "a 1x1 transparent GIF", "content": _content({}, GIF)},
                        "404": {"description": "not a valid pixel (empty body)", "content": _content({}, GIF)},
                        "400": _json(
                            "the request's Accept header names neither `image/gif` nor `*/*` (Chalice answers "
                            "binary responses only to requests that accept them)",
                            ref("ChaliceError"),
                        ),
                        "503": _use("Unavailable"),
                    },
                    "email",
                    description="Recorded with its verdict's signals: Apple's Mail Privacy Protection "
                    "(user agent `Mozilla/5.0`, or from 17.0.0.0/8) and machines' fetches count for nothing.",
                ),
            },
            "a scanner's HEAD of the pixel",
        ),
        "/u/{token}": {
            "parameters": [_TOKEN],
            "get": _public(
                "Unsubscribe page (a confirm button; link scanners change nothing)",
                {"200": _html_page("the page"), **html_errors},
                "email",
            ),
            "post": _public(
                "Unsubscribe: RFC 8058 one-click, or the page's button",
                {"200": _html_page("unsubscribed (idempotent)"), **html_errors},
                "email",
                requestBody={
                    "required": False,
                    "description": "ignored; one-click clients send `List-Unsubscribe=One-Click`",
                    "content": {
                        FORM: {"schema": one_click},
                        "multipart/form-data": {"schema": one_click},
                    },
                },
            ),
        },
        "/confirm/{token}": {
            "parameters": [_TOKEN],
            "get": _public(
                "Double opt-in page (a confirm button; link scanners change nothing)",
                {"200": _html_page("the page, or the confirmed page when already confirmed"), **html_errors},
                "email",
            ),
            "post": _public(
                "Confirm the subscription: the page's button",
                {"200": _html_page("confirmed (idempotent)"), **html_errors},
                "email",
                requestBody={
                    "required": False,
                    "description": "ignored; the page's form posts no fields",
                    "content": {FORM: {"schema": obj({}, required=[])}},
                },
            ),
        },
        "/admin/leads": {
            "get": _admin(
                "List leads: filters and cursor pagination",
                {"200": _json("one page, newest first", ref("LeadList")), "400": _use("ValidationFailed")},
                parameters=list_parameters,
            )
        },
        "/admin/leads/{lead_id}": {
            "get": _admin(
                "A lead: profile, consent, attribution, score and timeline",
                {"200": _json("the lead", ref("LeadDetail")), "404": _use("NotFound")},
                parameters=[_LEAD_ID],
            ),
            "patch": _admin(
                "Change a lead's stage (sales feedback)",
                {
                    "200": _json("the changed lead", ref("StageChanged")),
                    "400": _use("ValidationFailed"),
                    "404": _use("NotFound"),
                    "413": _use("PayloadTooLarge"),
                    "415": _use("UnsupportedMediaType"),
                },
                parameters=[_LEAD_ID],
                request_body=_json_body(ref("StageChange")),
            ),
            "delete": _admin(
                "Erase a lead (GDPR art. 17) and suppress the address for good",
                {
                    "200": _json("erased", ref("LeadErased")),
                    "400": _use("ValidationFailed"),
                    "404": _use("NotFound"),
                },
                parameters=[_LEAD_ID_OR_EMAIL],
            ),
        },
        "/admin/leads/{lead_id}/export": {
            "get": _admin(
                "Export everything stored about a lead (GDPR art. 15)",
                {
                    "200": _json("the lead's data", ref("LeadExport")),
                    "400": _use("ValidationFailed"),
                    "404": _use("NotFound"),
                },
                parameters=[_LEAD_ID_OR_EMAIL],
            )
        },
        "/admin/export/leads.csv": {
            "get": _admin(
                "Export the filtered lead list as CSV",
                {
                    "200": {
                        "description": "a header row and one row per lead (first-touch attribution)",
                        "headers": {
                            "Link": _header('`<url>; rel="next"` when there are more rows'),
                            "Content-Disposition": _header('`attachment; filename="leads.csv"`'),
                        },
                        "content": _content(STRING, CSV),
                    },
                    "400": _use("ValidationFailed"),
                },
                parameters=export_parameters,
                description="The filters of `GET /admin/leads`, in bigger pages; follow the `Link` header.",
            )
        },
        "/admin/reports/funnel": {
            "get": _admin(
                "Funnel by stage, channel and utm_campaign: conversion, velocity, cost per lead",
                {"200": _json("the report", ref("FunnelReport"))},
            )
        },
        "/admin/reports/sequences": {
            "get": _admin(
                "Email statistics per sequence step, and deliverability against SES's limits",
                {"200": _json("the report", ref("SequenceReport"))},
            )
        },
        "/admin/reports/spend": {
            "put": _admin(
                "Set the spend to date on one channel (replaces the campaign file's)",
                {
                    "200": _json("the spend now counted", ref("SpendSet")),
                    "400": _use("ValidationFailed"),
                    "413": _use("PayloadTooLarge"),
                    "415": _use("UnsupportedMediaType"),
                },
                request_body=_json_body(spend),
            )
        },
        "/admin/dashboard": {
            "get": {
                "tags": ["admin"],
                "summary": "The funnel and step table as a page",
                "description": f"With the `{ADMIN_COOKIE}` cookie (from `POST /admin/login`) or the bearer token; "
                "without either, the login form.",
                "security": [{"cookieAuth": []}, {"bearerAuth": []}],
                "responses": {
                    "200": _html_page("the dashboard"),
                    "401": _html_page("the login form"),
                    "429": _html_page("too many failed sign-ins from this address (or in all): wait `Retry-After`"),
                    "503": _html_page("try again in a moment"),
                },
            }
        },
        "/admin/login": {
            "post": {
                "tags": ["admin"],
                "summary": "Log in to the dashboard with the admin token",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {FORM: {"schema": obj({"token": {"type": "string", "maxLength": 4096}})}},
                },
                "responses": {
                    "303": {
                        "description": f"to the dashboard, with the signed `{ADMIN_COOKIE}` session cookie",
                        "headers": {**_LOCATION, "Set-Cookie": _header(f"`{ADMIN_COOKIE}=...; HttpOnly; Secure`")},
                    },
                    "401": _html_page("the login form again"),
                    "403": _html_page("a post from another site (Sec-Fetch-Site, Origin or Referer): nothing done"),
                    "429": _html_page(
                        "too many failed sign-ins from this address or in all in the window: the token is not "
                        "even compared until it ends (`Retry-After`)"
                    ),
                    "415": _json(
                        "not a form post: Chalice's own answer (the route takes only "
                        "`application/x-www-form-urlencoded`)",
                        ref("ChaliceError"),
                    ),
                    "503": _html_page("try again in a moment"),
                },
            }
        },
        "/admin/logout": {
            "post": {
                "tags": ["admin"],
                "summary": "Log out of the dashboard",
                "security": [],
                "responses": {
                    "303": {
                        "description": "to the login form, the session closed in the table and the cookie cleared",
                        "headers": {**_LOCATION, "Set-Cookie": _header("expires the cookie")},
                    },
                    "403": _html_page("a post from another site: the session stays open"),
                },
            }
        },
    }


@cache
def _static_document() -> dict[str, Any]:
    hoisted: dict[str, Schema] = {}
    submission = _submission_schema(hoisted)
    event = model_schema(BehaviourEventIn, hoisted)
    event["properties"]["type"]["description"] = "an event type the campaign scores, enrols or exits on"
    event["properties"]["token"]["description"] = "the `lead_token` a form submission answered with"
    spend = model_schema(SpendUpdate, hoisted)
    return {
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "Trellis",
            "version": API_VERSION,
            "description": "Lead capture and nurture. Landing pages post forms and events; email links are "
            "tracked; the team reads and exports leads and reports under `/admin/` with the bearer token.",
        },
        "tags": [
            {"name": "landing pages"},
            {"name": "email", "description": "the links in emails Trellis sends"},
            {"name": "admin", "description": "the team's API"},
            {"name": "integrators"},
            {"name": "ops"},
        ],
        "paths": _paths(submission, event, spend),
        "components": {
            "schemas": {**hoisted, **_response_schemas()},
            "responses": _shared_responses(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "the stage's admin token"},
                "cookieAuth": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": ADMIN_COOKIE,
                    "description": "the dashboard's signed session cookie, set by `POST /admin/login`",
                },
            },
        },
    }


def document(server_url: str) -> dict[str, Any]:
    """The OpenAPI document for the API served at ``server_url``: a fresh copy each call."""
    built = copy.deepcopy(_static_document())
    return {**built, "servers": [{"url": server_url.rstrip("/") or "/"}]}
