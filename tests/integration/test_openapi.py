"""GET /openapi.json: a valid OpenAPI 3.1 document of exactly the routes Chalice serves, whose
response schemas real responses conform to."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import jsonschema
import pytest
from openapi_spec_validator import validate

from chalicelib.openapi import document
from tests.conftest import ADMIN_TOKEN, PUBLIC_URL
from tests.helpers import body, post_form, post_json

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def needs_bearer_only(operation: dict[str, Any]) -> bool:
    """What a Chalice authorizer means: the bearer token is the one way in."""
    return operation.get("security") == [{"bearerAuth": []}]


def _strict(schema: Any) -> Any:
    """Documented objects with listed properties, closed: a field the code adds or renames
    without documenting it fails the check (the published document stays open for clients)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _strict(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        closed["additionalProperties"] = False
    return closed


def header(response: Any, name: str) -> str:
    """A response header by name, whatever its case (chalice.test keeps the case it was given)."""
    return next((str(value) for key, value in response.headers.items() if key.lower() == name.lower()), "")


def media_type(response: Any) -> str:
    """The response's media type as API Gateway sends it: a proxy response without a
    Content-Type (a view returning a dict, API Gateway's own 401 as chalice.test emulates it)
    goes out as ``application/json``."""
    declared = header(response, "content-type").split(";")[0].strip().lower()
    return declared or ("application/json" if response.body else "")


class ResponseChecker:
    """Checks a chalice.test response against the document's operation for it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self._components = {"schemas": _strict(doc["components"]["schemas"])}

    def operation(self, path: str, method: str) -> dict[str, Any]:
        operation: dict[str, Any] = self.doc["paths"][path][method.lower()]
        return operation

    def _resolve(self, item: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in item:
            _, _, kind, name = item["$ref"].split("/")
            item = self.doc["components"][kind][name]
        return item

    def documented(self, path: str, method: str, status: int) -> dict[str, Any]:
        responses = self.operation(path, method)["responses"]
        assert str(status) in responses, f"{method.upper()} {path}: status {status} is not documented"
        return self._resolve(responses[str(status)])

    def check(self, path: str, method: str, response: Any) -> None:
        documented = self.documented(path, method, response.status_code)
        content = documented.get("content", {})
        media = media_type(response)
        if not content:
            assert not response.body, f"{method.upper()} {path} {response.status_code}: undocumented body"
            return
        assert media in content, f"{method.upper()} {path} {response.status_code}: {media!r} not in {sorted(content)}"
        if media != "application/json":
            return
        schema = {**_strict(content[media]["schema"]), "components": self._components}
        jsonschema.Draft202012Validator(schema).validate(json.loads(response.body))


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document(PUBLIC_URL)


@pytest.fixture(scope="module")
def checker(doc: dict[str, Any]) -> ResponseChecker:
    return ResponseChecker(doc)


def test_the_document_is_valid_openapi_3_1(doc):
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    assert doc["servers"] == [{"url": PUBLIC_URL}]


def test_the_document_is_a_fresh_copy_each_time(doc):
    changed = document(PUBLIC_URL)
    changed["paths"].clear()
    assert document(PUBLIC_URL)["paths"] == doc["paths"]


def test_the_validator_can_fail():
    broken = copy.deepcopy(document(PUBLIC_URL))
    broken["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/NoSuchSchema"
    }
    with pytest.raises(Exception, match="NoSuchSchema"):
        validate(broken)


def test_every_route_is_documented_and_nothing_else(doc):
    """Every (path, method) Chalice serves, CORS preflights included (they are part of what
    landing pages call), and no documented operation that the app does not serve."""
    from app import app

    served = {(path, method.lower()) for path, methods in app.routes.items() for method in methods}
    documented = {(path, method) for path, method, _ in operations(doc)}
    assert sorted(served - documented) == [], "served but not documented"
    assert sorted(documented - served) == [], "documented but not served"


def test_bearer_auth_is_documented_exactly_where_the_authorizer_guards(doc):
    from app import app

    for path, method, operation in operations(doc):
        entry = app.routes.get(path, {}).get(method.upper())
        if entry is None:
            continue  # reported by test_every_route_is_documented_and_nothing_else
        assert (entry.authorizer is not None) == needs_bearer_only(operation), f"{method.upper()} {path}"
    cookie_routes = {path for path, _, op in operations(doc) if {"cookieAuth": []} in op.get("security", [])}
    assert cookie_routes == {"/admin/dashboard"}
    assert all(path.startswith("/admin/") == ("admin" in op["tags"]) for path, _, op in operations(doc))


def test_request_schemas_come_from_the_models(doc):
    from chalicelib.models import LeadListParams, SpendUpdate

    schemas = doc["components"]["schemas"]
    spend = doc["paths"]["/admin/reports/spend"]["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert spend == {"$ref": "#/components/schemas/SpendUpdate"}
    assert schemas["SpendUpdate"] == SpendUpdate.model_json_schema()
    assert schemas["Stage"]["enum"][:2] == ["subscriber", "lead"]
    names = [p["name"] for p in doc["paths"]["/admin/leads"]["get"]["parameters"]]
    assert names == list(LeadListParams.model_fields)
    csv_limit = next(p for p in doc["paths"]["/admin/export/leads.csv"]["get"]["parameters"] if p["name"] == "limit")
    assert csv_limit["schema"] == {"default": 1000, "maximum": 5000, "minimum": 1, "type": "integer"}
    assert not any("$defs" in json.dumps(value) for value in doc["paths"].values())


def test_served_at_openapi_json(client):
    response = client.http.get("/openapi.json")

    assert response.status_code == 200
    assert media_type(response) == "application/json"
    assert body(response) == document(PUBLIC_URL)


# -- real responses against the documented schemas ---------------------------------------------


def _check(checker: ResponseChecker, path: str, method: str, response: Any, status: int) -> Any:
    assert response.status_code == status, response.body
    checker.check(path, method, response)
    return response


def test_the_checker_rejects_an_undocumented_field(checker):
    class Fake:
        status_code = 200
        headers = {"content-type": "application/json"}
        body = json.dumps({"status": "ok", "extra": 1}).encode()

    with pytest.raises(jsonschema.ValidationError, match="extra"):
        checker.check("/health", "get", Fake())
    Fake.status_code = 418
    with pytest.raises(AssertionError, match="not documented"):
        checker.check("/health", "get", Fake())


def test_public_responses_match_the_document(client, checker):
    form = "/forms/{form_id}"
    created = _check(checker, form, "post", post_json(client, "/forms/ebook", EBOOK), 200)
    _check(checker, form, "post", post_json(client, "/forms/ebook", EBOOK), 200)
    _check(checker, form, "post", post_json(client, "/forms/newsletter", {"email": "nope"}), 400)
    _check(checker, form, "post", post_form(client, "/forms/newsletter", {"email": "nope"}), 400)
    _check(checker, form, "post", post_form(client, "/forms/newsletter", NEWSLETTER), 303)
    _check(checker, form, "post", post_json(client, "/forms/nope", NEWSLETTER), 404)
    plain = client.http.post("/forms/newsletter", headers={"Content-Type": "text/plain"}, body="x")
    _check(checker, form, "post", plain, 415)
    big = post_json(client, "/forms/newsletter", {**NEWSLETTER, "first_name": "x" * 20_000})
    _check(checker, form, "post", big, 413)
    origin = {"Origin": "http://127.0.0.1:8001", "Access-Control-Request-Method": "POST"}
    _check(checker, form, "options", client.http.request("OPTIONS", "/forms/ebook", headers=origin), 204)
    _check(checker, "/events", "options", client.http.request("OPTIONS", "/events", headers=origin), 204)

    token = body(created)["lead_token"]
    event = {"token": token, "type": "pricing_view", "url": "https://example.com/pricing"}
    _check(checker, "/events", "post", post_json(client, "/events", event), 202)
    _check(checker, "/events", "post", post_json(client, "/events", {**event, "type": "email_opened"}), 400)
    _check(checker, "/health", "get", client.http.get("/health"), 200)
    _check(checker, "/t/c/{token}", "get", client.http.get("/t/c/x.y"), 400)
    _check(checker, "/t/c/{token}", "head", client.http.head("/t/c/x.y"), 400)
    _check(checker, "/t/o/{token}", "head", client.http.head("/t/o/x.y", headers={"Accept": "image/gif"}), 404)
    _check(checker, "/t/o/{token}", "get", client.http.get("/t/o/x.y", headers={"Accept": "image/gif"}), 404)
    _check(checker, "/t/o/{token}", "get", client.http.get("/t/o/x.y"), 400)  # chalice: binary needs Accept
    _check(checker, "/u/{token}", "get", client.http.get("/u/x.y"), 400)
    _check(checker, "/u/{token}", "post", client.http.post("/u/x.y"), 400)
    _check(checker, "/confirm/{token}", "get", client.http.get("/confirm/x.y"), 400)
    _check(checker, "/confirm/{token}", "post", client.http.post("/confirm/x.y"), 400)


EBOOK = {"email": "Dee@Example.com", "first_name": "Dee", "consent": True, "utm_source": "google", "utm_medium": "cpc"}
NEWSLETTER = {"email": "ann@example.com", "consent": "on"}


def test_admin_responses_match_the_document(client, checker, rt):
    lead_id = body(post_json(client, "/forms/ebook", EBOOK))["lead_id"]
    lead = "/admin/leads/{lead_id}"
    # Engagement with a verdict on the timeline: a scanner's HEAD of a link and of the pixel.
    message_id, now = "ebook-nurture.ebook-delivery", rt.clock.now()
    click = rt.links.click(lead_id, message_id, "https://example.com/guide", now).removeprefix(PUBLIC_URL)
    pixel = rt.links.open_pixel(lead_id, message_id, now).removeprefix(PUBLIC_URL)
    _check(checker, "/t/c/{token}", "head", client.http.head(click), 302)
    _check(checker, "/t/o/{token}", "head", client.http.head(pixel, headers={"Accept": "image/gif"}), 200)

    def admin(method: str, path: str, payload: Any = None) -> Any:
        headers = dict(AUTH)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        return client.http.request(method, path, headers=headers, body=json.dumps(payload) if payload else b"")

    _check(checker, "/admin/leads", "get", admin("GET", "/admin/leads"), 200)
    _check(checker, "/admin/leads", "get", admin("GET", "/admin/leads?" + urlencode({"limit": 0})), 400)
    _check(checker, "/admin/leads", "get", client.http.get("/admin/leads"), 401)
    _check(checker, "/admin/leads", "get", client.http.get("/admin/leads", headers={"Authorization": "Bearer x"}), 401)
    detail = _check(checker, lead, "get", admin("GET", f"/admin/leads/{lead_id}"), 200)
    verdicts = [(e["type"], e["verdict"]) for e in body(detail)["timeline"] if "verdict" in e]
    assert sorted(verdicts) == [("email_clicked", "machine"), ("email_opened", "machine")]
    _check(checker, lead, "get", admin("GET", "/admin/leads/" + "0" * 32), 404)
    _check(checker, lead, "patch", admin("PATCH", f"/admin/leads/{lead_id}", {"stage": "opportunity"}), 200)
    _check(checker, lead, "patch", admin("PATCH", f"/admin/leads/{lead_id}", {"stage": "mql"}), 400)
    _check(checker, "/admin/export/leads.csv", "get", admin("GET", "/admin/export/leads.csv"), 200)
    _check(checker, "/admin/reports/funnel", "get", admin("GET", "/admin/reports/funnel"), 200)
    _check(checker, "/admin/reports/sequences", "get", admin("GET", "/admin/reports/sequences"), 200)
    spend = {"utm_source": "google", "utm_medium": "cpc", "amount": 99.5}
    _check(checker, "/admin/reports/spend", "put", admin("PUT", "/admin/reports/spend", spend), 200)
    _check(checker, "/admin/reports/spend", "put", admin("PUT", "/admin/reports/spend", {**spend, "amount": -1}), 400)
    export = "/admin/leads/{lead_id}/export"
    _check(checker, export, "get", admin("GET", f"/admin/leads/{EBOOK['email']}/export"), 200)
    _check(checker, export, "get", admin("GET", "/admin/leads/not@an@address/export"), 400)
    _check(checker, lead, "delete", admin("DELETE", f"/admin/leads/{lead_id}"), 200)
    _check(checker, lead, "delete", admin("DELETE", f"/admin/leads/{lead_id}"), 404)
