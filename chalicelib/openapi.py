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
from typing import Any

from pydantic import BaseModel

from chalicelib.credentials import CredentialsUnavailable
from chalicelib.http import CSV, FORM, GIF, JSON, Operation, Reply
from chalicelib.http.endpoint import ANSWER_MODELS, REQUEST_MODELS, model
from chalicelib.http.errors import Unauthorized, documented_statuses, status_of
from chalicelib.http.form_schema import form_submission, urlencoded, without_null
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
    "name": "a segment of the campaign file, e.g. `newsletter-readers`",
    "broadcast_id": "the broadcast's id, as its creation answered",
    "event_id": "an event of the campaign file (its `events`), e.g. `demo-webinar`",
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


def _opened(schema: Schema) -> Schema:
    """An answer's object stays open for clients (adding a field is not a breaking change), and
    a field that may be left out is never null."""
    properties = schema.get("properties")
    if properties is None:
        return schema
    required = set(schema.get("required", ()))
    opened = {k: v for k, v in schema.items() if k != "additionalProperties"}
    opened["properties"] = {name: prop if name in required else without_null(prop) for name, prop in properties.items()}
    return opened


def _query_parameters(cls: type[BaseModel]) -> list[Schema]:
    schema = cls.model_json_schema()
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        plain = {k: v for k, v in without_null(prop).items() if k not in ("title", "description")}
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


def _form_body(fields: Schema, description: str = "", required: bool = False, *media: str) -> Schema:
    body: Schema = {"required": required, "content": {m: {"schema": fields} for m in media or (FORM,)}}
    return {**body, "description": description} if description else body


def _request_body(name: str, components: _Components) -> Schema:
    if name == "form_submission":
        submission = form_submission(components.model)
        components.schemas.pop("NormalisedEmail", None)  # the parsed form of the address, not what is sent
        content = {JSON: {"schema": submission}, FORM: {"schema": urlencoded(submission)}}
        return {"required": True, "content": content}
    if name == "one_click":
        one_click = {"type": "object", "properties": {"List-Unsubscribe": {"const": "One-Click"}}}
        ignored = "ignored; one-click clients send `List-Unsubscribe=One-Click`"
        return _form_body(one_click, ignored, False, FORM, "multipart/form-data")
    if name == "empty_form":
        return _form_body({"type": "object", "properties": {}}, "ignored; the page's form posts no fields")
    if name == "preferences_form":
        choice = {
            "type": "object",
            "properties": {
                "action": {"enum": ["save", "leave"]},
                "pause": {"enum": ["", "keep", "30", "90"]},
            },
            "patternProperties": {"^topic_[a-z0-9][a-z0-9_-]*$": {"const": "on"}},
            "additionalProperties": False,
        }
        return _form_body(choice, "", True)
    if name == "login_form":
        token = {"type": "object", "properties": {"token": {"type": "string", "maxLength": 4096}}}
        return _form_body({**token, "required": ["token"]}, "", True)
    if name == "attendance_upload":
        rows = {"type": "string", "description": "CSV with the header `email,attended,minutes`"}
        content = {JSON: {"schema": components.named(REQUEST_MODELS, "AttendanceIn")}, CSV: {"schema": rows}}
        return {"required": True, "content": content}
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
