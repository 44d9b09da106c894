"""The OpenAPI 3.1 document of Trellis's HTTP API, served at ``GET /openapi.json``.

Generated: the operations from the routes as app.py declares them (``chalicelib.http.Api``),
the schemas from the pydantic models the routes read (``chalicelib.models``) and answer
(``chalicelib.http.bodies``), the error answers from the one error table. Nothing here is a
second description of what the code does; ``tests/integration/test_openapi.py`` checks real
answers against it and that every route Chalice serves is documented, and only those.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from functools import cache
from typing import Any, get_args

from pydantic import BaseModel

from chalicelib.credentials import CredentialsUnavailable
from chalicelib.http import FORM, GIF, JSON, Operation, Reply
from chalicelib.http.endpoint import ANSWER_MODELS, REQUEST_MODELS, model
from chalicelib.http.errors import Unauthorized, documented_statuses, status_of
from chalicelib.models import (
    CONSENT_FIELD,
    LEAD_TOKEN_FIELD,
    RENDERED_AT_FIELD,
    TRACKING_FIELDS,
    BotDefence,
    Form,
    StandardField,
    Tracking,
    submission_model,
)
from chalicelib.web import ADMIN_COOKIE

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
Schema = dict[str, Any]
STRING: Schema = {"type": "string"}
_INTEGER_HEADERS = {"Retry-After", "Access-Control-Max-Age"}
_PATH_HELP = {
    "form_id": "a form of the campaign file, e.g. `newsletter`",
    "token": "the signed token from the email's link",
    "lead_id": "the lead's id",
}
_BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
_ADMIN_ERRORS = (Unauthorized, CredentialsUnavailable)  # every admin route: the verdict's answers
_SESSION: list[dict[str, list[str]]] = [{"cookieAuth": []}, {"bearerAuth": []}]


def ref(name: str, kind: str = "schemas") -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


class _Components:
    """The schemas the operations refer to, each model's (and its nested models') once."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def model(self, cls: type[BaseModel], *, answer: bool = False) -> Schema:
        schema = cls.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, nested in schema.pop("$defs", {}).items():
            self.schemas[name] = _opened(nested) if answer else nested
        return _opened(schema) if answer else schema

    def named(self, module: str, name: str) -> Schema:
        if name not in self.schemas:
            self.schemas[name] = self.model(model(module, name), answer=module == ANSWER_MODELS)
        return ref(name)


def _without_null(schema: Schema) -> Schema:
    """An ``Optional[X]`` that is absent rather than null (a query parameter, an answer's
    field left out when it has no value) is X."""
    variants = schema.get("anyOf")
    if variants is None:
        return schema
    rest = [v for v in variants if v != {"type": "null"}]
    stripped = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**rest[0], **stripped} if len(rest) == 1 else {**stripped, "anyOf": rest}


def _opened(schema: Schema) -> Schema:
    """An answer's object stays open for clients (adding a field is not a breaking change), and
    a field that may be left out is never null."""
    properties = schema.get("properties")
    if properties is None:
        return schema
    required = set(schema.get("required", ()))
    opened = {k: v for k, v in schema.items() if k != "additionalProperties"}
    opened["properties"] = {
        name: prop if name in required else _without_null(prop) for name, prop in properties.items()
    }
    return opened


def _query_parameters(cls: type[BaseModel]) -> list[Schema]:
    schema = cls.model_json_schema()
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        plain = {k: v for k, v in _without_null(prop).items() if k not in ("title", "description")}
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "description": prop.get("description", ""),
                "schema": plain,
            }
        )
    return parameters


def _submission(components: _Components) -> Schema:
    """Every field a form may declare, from the model a form with all standard fields builds.

    Which fields a form requires, which custom fields it takes and whether consent is required
    are per form, in the campaign file; unknown fields are ignored, never stored.
    """
    every_field = Form(
        kind="signup",
        thank_you_url="https://example.com/thanks",
        fields={"email": "required", **dict.fromkeys(get_args(StandardField)[1:], "optional")},
    )
    schema = components.model(submission_model(every_field))
    components.schemas.pop("NormalisedEmail", None)  # the parsed form of the address, not what is sent
    tracking = components.model(Tracking)
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
            "anyOf": [{"type": "boolean"}, STRING],
            "description": 'marketing consent: true, or "on", "true", "1", "yes" as HTML checkboxes send it; '
            "required by forms that ask for consent",
        },
        RENDERED_AT_FIELD: {
            "anyOf": [{"type": "number"}, STRING],
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


def _form_body(fields: Schema, description: str = "", required: bool = False, *media: str) -> Schema:
    body: Schema = {"required": required, "content": {m: {"schema": fields} for m in media or (FORM,)}}
    return {**body, "description": description} if description else body


def _request_body(name: str, components: _Components) -> Schema:
    if name == "form_submission":
        submission = _submission(components)
        content = {JSON: {"schema": submission}, FORM: {"schema": _urlencoded(submission)}}
        return {"required": True, "content": content}
    if name == "one_click":
        one_click = {"type": "object", "properties": {"List-Unsubscribe": {"const": "One-Click"}}}
        ignored = "ignored; one-click clients send `List-Unsubscribe=One-Click`"
        return _form_body(one_click, ignored, False, FORM, "multipart/form-data")
    if name == "empty_form":
        return _form_body({"type": "object", "properties": {}}, "ignored; the page's form posts no fields")
    if name == "login_form":
        token = {"type": "object", "properties": {"token": {"type": "string", "maxLength": 4096}}}
        return _form_body({**token, "required": ["token"]}, "", True)
    return {"required": True, "content": {JSON: {"schema": components.named(REQUEST_MODELS, name)}}}


def _reply(reply: Reply, components: _Components) -> Schema:
    answer: Schema = {"description": reply.description}
    content = {}
    for media in reply.media_types:
        if media == JSON and reply.body:
            content[media] = {"schema": components.named(ANSWER_MODELS, reply.body)}
        elif media == JSON:
            content[media] = {"schema": ref("Error") if reply.error else {"type": "object"}}
        else:
            content[media] = {"schema": {} if media == GIF else STRING}
    if content:
        answer["content"] = content
    if reply.headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "integer"} if name in _INTEGER_HEADERS else STRING}
            for name, text in reply.headers
        }
    return answer


def _operation(op: Operation, components: _Components) -> Schema:
    security = _BEARER if op.admin else _SESSION if op.security else []
    out: Schema = {"tags": [op.tag], "summary": op.summary, "security": security}
    if op.description:
        out["description"] = op.description
    parameters = [
        {"name": n, "in": "path", "required": True, "description": op.path_help.get(n, _PATH_HELP[n]), "schema": STRING}
        for n in op.path_parameters
    ]
    parameters += [{"name": h, "in": "header", "required": False, "schema": STRING} for h in op.headers]
    if op.query is not None:
        parameters += _query_parameters(model(REQUEST_MODELS, op.query))
    if parameters:
        out["parameters"] = parameters
    request = op.body or op.request
    if request is not None:
        out["requestBody"] = _request_body(request, components)
    responses: Schema = {}
    for kind in (*op.errors, *_ADMIN_ERRORS) if op.admin else op.errors:
        status = status_of(kind)
        responses[str(status.code)] = ref(status.name, "responses")
    responses.update({str(code): _reply(reply, components) for code, reply in op.replies.items()})
    out["responses"] = dict(sorted(responses.items()))
    return out


def _with_head(get: Schema, who: str) -> Schema:
    head = copy.deepcopy(get)
    head["summary"] = f"{get['summary']} (HEAD)"
    head["description"] = (
        f"Answered as the GET, without a body. Recorded like it, as a machine's ({who}: "
        "people's mail apps and browsers GET)."
    )
    return head


def _shared_responses(components: _Components) -> Schema:
    shared: Schema = {}
    for status in documented_statuses():
        answer: Schema = {"description": status.doc, "content": {JSON: {"schema": ref("Error")}}}
        if status.code in (429, 503):
            answer["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
        shared[status.name] = answer
    shared["Unauthorized"] = {
        "description": 'Missing or wrong bearer token: `{"error": "unauthorized"}` (deployed stages answer a '
        "missing header so too, through their gateway responses; `chalice local` answers it with API "
        'Gateway\'s default `{"message": "Unauthorized"}`).',
        "headers": {"WWW-Authenticate": {"description": "`Bearer`", "schema": STRING}},
        "content": {JSON: {"schema": {"anyOf": [ref("Error"), components.named(ANSWER_MODELS, "GatewayError")]}}},
    }
    return shared


def _paths(operations: Iterable[Operation], components: _Components) -> Schema:
    paths: dict[str, Schema] = {}
    for op in operations:
        item = paths.setdefault(op.path, {})
        item[op.method] = _operation(op, components)
        if op.head_of is not None:
            item["head"] = _with_head(item[op.method], op.head_of)
    return paths


@cache
def _static_document() -> Schema:
    from app import api

    components = _Components()
    components.named(ANSWER_MODELS, "Error")
    paths = _paths(api.operations, components)
    shared = _shared_responses(components)
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
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "responses": shared,
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


def document(server_url: str) -> Schema:
    """The OpenAPI document for the API served at ``server_url``: a fresh copy each call."""
    built = copy.deepcopy(_static_document())
    return {**built, "servers": [{"url": server_url.rstrip("/") or "/"}]}
