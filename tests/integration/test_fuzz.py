"""Fuzzing every documented operation in-process, from the OpenAPI document.

Schemathesis turns each operation of ``GET /openapi.json``'s document into Hypothesis
strategies of requests, valid ones and schema-violating ones (wrong types, missing fields,
out-of-range values, odd unicode). A layer on top makes them realistic and hostile: real form
ids and leads most of the time, signed tokens minted for the test lead and then tampered with,
broken bodies and content types, wrong admin credentials. Each request goes through
``chalice.test.Client`` (authorizer included), against moto.

Every response must: not be a 5xx; be documented (status, content type, JSON schema); as a 4xx
with a JSON body, carry ``error`` (or API Gateway's ``message`` for a missing token); as a 4xx of
an HTML form post, be an HTML page; store nothing when it rejects (the table is compared before
and after); and under ``/admin/`` without valid credentials, be a 401 that shows no lead data.

Deterministic (``derandomize``), so CI sees the same requests every run. The number of requests
sent is written to ``test-artifacts/fuzz-count.txt``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from chalicelib import runtime
from chalicelib.openapi import document
from chalicelib.store import LIMIT_PREFIX
from chalicelib.tracking import CLICK_PURPOSE, CONFIRM_PURPOSE, LEAD_TOKEN_PURPOSE, OPEN_PURPOSE, UNSUBSCRIBE_PURPOSE
from tests.conftest import ADMIN_TOKEN, PUBLIC_URL, START
from tests.helpers import post_json
from tests.integration.test_openapi import ResponseChecker, header, media_type

DOC = document(PUBLIC_URL)
SCHEMA = schemathesis.openapi.from_dict(DOC)
CHECKER = ResponseChecker(DOC)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BASE = "http://trellis.test"  # requests builds the URL; only its path and query reach the app

FORMS = ("newsletter", "ebook")
SEEDED = {"email": "Seed.Lead+fuzz@Example.com", "first_name": "Seed", "consent": True, "utm_source": "seedsrc"}
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)

# Requests per operation and credentials: the input-heavy operations get the most.
EXAMPLES = {
    "POST /forms/{form_id}": 260,
    "POST /events": 160,
    "GET /admin/leads": 150,
    "PATCH /admin/leads/{lead_id}": 120,
    "PUT /admin/reports/spend": 120,
    "GET /admin/export/leads.csv": 120,
}
DEFAULT_EXAMPLES = 70
BODYLESS_EXAMPLES = 30  # operations whose only input is the credentials (or nothing)
# Operations whose one input is a path segment (a signed token, an id): one string to vary.
PATH_ONLY_EXAMPLES = 40
# Without valid credentials the authorizer answers before the route reads its input, so what
# varies is the credentials themselves (missing, wrong, tampered, expired): a third is plenty.
UNAUTHENTICATED_SHARE = 3


def _operations() -> dict[str, Any]:
    found = {}
    for result in SCHEMA.get_all_operations():
        operation = result.ok()
        found[f"{operation.method.upper()} {operation.path}"] = operation
    return found


OPERATIONS = _operations()


def _served(name: str) -> bool:
    from app import app

    method, path = name.split(" ", 1)
    return method in app.routes.get(path, {})


def _is_admin(name: str) -> bool:
    return name.split(" ", 1)[1].startswith("/admin/")


def _cases() -> Iterator[Any]:
    for name in OPERATIONS:
        credentials = ("admin", "none") if _is_admin(name) else ("none",)
        for creds in credentials:
            yield pytest.param(name, creds, id=f"{name} [{creds}]")


# -- hostile material ----------------------------------------------------------------------------

HOSTILE_STRINGS = [
    "",
    " ",
    "x" * 20_000,
    "ü" * 3000,
    "\u202eevil\u202c",
    "😀" * 50,
    "a\x00b",
    "<script>alert(1)</script>",
    "' OR '1'='1",
    '=HYPERLINK("http://evil.example")',
    "../../etc/passwd",
    "%00%2e%2e%2f",
    "null",
    "NaN",
    "-1",
    "1e309",
    "@@",
    "a@b",
    "ann@example..com",
    "ann@localhost",
    '"quoted"@example.com',
    "ann@exa mple.com",
    "x" * 250 + "@example.com",
    "ann@" + "x" * 300 + ".com",
    "ann@例え.jp",
]
HOSTILE_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1e308,
    [],
    {},
    ["a@b.com"],
    {"$gt": ""},
    *HOSTILE_STRINGS,
]
HOSTILE_BODIES: list[bytes] = [
    b"",
    b"{",
    b"[]",
    b"null",
    b'"just a string"',
    b"\xff\xfe\x00{",
    b'{"email": "a@b.com", "email": 1}',
    b"[" * 900 + b"]" * 900,
    b'{"a":' * 600 + b"1" + b"}" * 600,
    b"[" * 3000 + b"]" * 3000,
    b"email=a%40b.com&" * 120,
    b"email=%ZZ&first_name=%",
    b"x" * 40_000,
    json.dumps({"email": "a@b.com", "first_name": "x" * 17_000}).encode(),
]
HOSTILE_CONTENT_TYPES = [
    None,
    "",
    "text/plain",
    "application/xml",
    "APPLICATION/JSON",
    "application/json; charset=utf-16",
    "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data; boundary=x",
    "application/json, text/html",
    "*/*",
]


def tamper(token: str, rnd: random.Random) -> str:
    """A near miss of a real token: one character changed, cut, extended, or re-spelled."""
    choice = rnd.randrange(6)
    if choice == 0 and token:
        i = rnd.randrange(len(token))
        replacement = "A" if token[i] != "A" else "B"
        return token[:i] + replacement + token[i + 1 :]
    if choice == 1:
        return token[:-1]
    if choice == 2:
        return token + "0"
    if choice == 3:
        body, _, mac = token.partition(".")
        return f"{body}=.{mac}"
    if choice == 4:
        return token.replace(".", "..", 1)
    return token.upper()


def _forged_claims(claims: dict[str, Any]) -> str:
    """Claims re-encoded without a valid MAC (an attacker's edit)."""
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{body}.{'A' * 22}"


@dataclass(frozen=True)
class World:
    """What the fuzzer knows of the app's state: a real lead and tokens minted for it."""

    lead_id: str
    email: str
    lead_token: str
    tokens: dict[str, list[str]]  # purpose -> valid and nearly-valid tokens

    def secrets(self) -> list[str]:
        return [self.lead_id, self.email.lower(), "seedsrc", "Seed"]


def _world(client: Any) -> World:
    rt = runtime.current()
    answer = json.loads(post_json(client, "/forms/ebook", SEEDED).body)
    lead_id, lead_token = answer["lead_id"], answer["lead_token"]
    later, past = START + timedelta(days=30), START - timedelta(days=1)
    sign = rt.signer.sign
    message = {"lead": lead_id, "msg": "ebook-nurture.ebook-delivery"}
    valid = {
        CLICK_PURPOSE: sign(CLICK_PURPOSE, {**message, "url": "http://127.0.0.1:8001/pricing"}, later),
        OPEN_PURPOSE: sign(OPEN_PURPOSE, message, later),
        UNSUBSCRIBE_PURPOSE: sign(UNSUBSCRIBE_PURPOSE, message, later),
        CONFIRM_PURPOSE: sign(CONFIRM_PURPOSE, {"lead": lead_id}, later),
        LEAD_TOKEN_PURPOSE: lead_token,
    }
    rnd = random.Random(7)  # noqa: S311 - test data, seeded for determinism
    tokens: dict[str, list[str]] = {}
    for purpose, token in valid.items():
        others = [t for p, t in valid.items() if p != purpose]
        tokens[purpose] = [
            token,
            *(tamper(token, rnd) for _ in range(6)),
            *others,  # a real token, minted for another use
            sign(purpose, {**message, "url": "javascript:alert(1)"}, later),
            sign(purpose, {"lead": "0" * 32, "msg": "x.y", "url": "https://example.com/"}, later),
            sign(purpose, {"lead": 7, "msg": ["x"]}, later),
            sign(purpose, message | {"url": "https://example.com/"}, past),  # expired
            sign(purpose, {}, later),
            _forged_claims({"lead": lead_id, "exp": 4_000_000_000}),
            "a.b.c",
            "." * 5,
            "%2e%2e",
            "x" * 5000,
        ]
    return World(lead_id, SEEDED["email"], lead_token, tokens)


_PATH_TOKEN_PURPOSE = {
    "/t/c/{token}": CLICK_PURPOSE,
    "/t/o/{token}": OPEN_PURPOSE,
    "/u/{token}": UNSUBSCRIBE_PURPOSE,
    "/confirm/{token}": CONFIRM_PURPOSE,
}


# -- requests ------------------------------------------------------------------------------------


@dataclass
class Sent:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def describe(self) -> str:
        shown = self.body[:300] + (b"..." if len(self.body) > 300 else b"")
        return f"{self.method} {self.path[:300]}\nheaders: {self.headers}\nbody ({len(self.body)} bytes): {shown!r}"


def _to_request(case: Any) -> Sent:
    kwargs = case.as_transport_kwargs(base_url=BASE)
    if "json" in kwargs and kwargs["json"] is None:  # requests would send no body at all for JSON null
        kwargs["data"] = b"null"
        kwargs["headers"] = {**kwargs.get("headers", {}), "Content-Type": str(case.media_type)}
        del kwargs["json"]
    wanted = ("method", "url", "headers", "params", "json", "data", "files", "cookies")
    prepared = requests.Request(**{k: v for k, v in kwargs.items() if k in wanted}).prepare()
    body = prepared.body or b""
    # chalice.test computes what it needs; a stale Content-Length would outlive a body swapped below.
    dropped = ("content-length", "connection", "accept-encoding")
    headers = {k: v for k, v in prepared.headers.items() if k.lower() not in dropped and not k.lower().startswith("x-")}
    return Sent(
        method=str(prepared.method),
        path=str(prepared.path_url),
        headers=headers,
        body=body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body,
    )


def _realistic(case: Any, world: World, data: st.DataObject) -> None:
    """Point most cases at things that exist, so the fuzzer gets past the first check."""
    params = case.path_parameters or {}
    if "form_id" in params and data.draw(st.integers(0, 9), label="real form?") < 8:
        params["form_id"] = data.draw(st.sampled_from(FORMS), label="form")
    if "lead_id" in params and data.draw(st.integers(0, 9), label="real lead?") < 5:
        params["lead_id"] = data.draw(
            st.sampled_from([world.lead_id, world.email, world.email.upper(), world.lead_id.upper()]), label="lead"
        )
    purpose = _PATH_TOKEN_PURPOSE.get(case.path)
    if purpose and data.draw(st.integers(0, 9), label="minted token?") < 8:
        params["token"] = data.draw(st.sampled_from(world.tokens[purpose]), label="token")
    body = case.body
    if isinstance(body, dict) and case.path == "/events" and data.draw(st.booleans(), label="lead token?"):
        body["token"] = data.draw(st.sampled_from(world.tokens[LEAD_TOKEN_PURPOSE]), label="event token")
        types = ["page_view", "pricing_view", "demo_request", "webinar_registered", "email_opened", "form_submitted"]
        body["type"] = data.draw(st.sampled_from(types), label="event type")
    if isinstance(body, dict) and case.path == "/forms/{form_id}":
        if data.draw(st.integers(0, 3), label="consent?") < 3:
            body["consent"] = data.draw(st.sampled_from([True, "on", "yes", "1"]), label="consent value")
        if data.draw(st.integers(0, 3), label="hostile field?") == 0:
            name = data.draw(st.sampled_from(["email", "first_name", "phone", "company_size", "page_url"]))
            value = data.draw(st.sampled_from(HOSTILE_VALUES), label="hostile value")
            body[name] = value if case.media_type == "application/json" else str(value)


def _hostile(sent: Sent, operation: Any, data: st.DataObject) -> None:
    """Sometimes: a broken body, a wrong or missing content type."""
    if "requestBody" not in operation.definition.raw:
        return
    # Hypothesis favours small integers (0 is the "simplest"): the rare branch goes at the top.
    roll = data.draw(st.integers(0, 9), label="hostile body?")
    if roll == 9:
        sent.body = data.draw(st.sampled_from(HOSTILE_BODIES), label="hostile body")
    if roll >= 8:
        content_type = data.draw(st.sampled_from(HOSTILE_CONTENT_TYPES), label="content type")
        sent.headers = {k: v for k, v in sent.headers.items() if k.lower() != "content-type"}
        if content_type is not None:
            sent.headers["Content-Type"] = content_type


WRONG_AUTHORIZATION: list[Optional[str]] = [
    None,
    "",
    "Bearer",
    "Bearer ",
    f"Bearer {ADMIN_TOKEN[:-1]}",
    f"Bearer {ADMIN_TOKEN}0",
    f"Bearer {ADMIN_TOKEN.upper()}",
    f"Bearer {ADMIN_TOKEN[::-1]}",
    ADMIN_TOKEN,
    f"Basic {base64.b64encode(f'admin:{ADMIN_TOKEN}'.encode()).decode()}",
    f"Token {ADMIN_TOKEN}",
    f"Bearer {'x' * 5000}",
    "Bearer \u00e9\u00e9",
]


def _login_token(case: Any, creds: str, data: st.DataObject) -> None:
    """The login form's token: the admin token with credentials, near misses without."""
    if case.path != "/admin/login" or not isinstance(case.body, dict):
        return
    if creds == "admin":
        case.body["token"] = data.draw(st.sampled_from([ADMIN_TOKEN, f" {ADMIN_TOKEN} "]), label="login token")
    elif data.draw(st.booleans(), label="near miss?"):
        wrong = [ADMIN_TOKEN[:-1], ADMIN_TOKEN + "0", ADMIN_TOKEN.upper(), "", "x" * 5000, f"{ADMIN_TOKEN}\x00"]
        case.body["token"] = data.draw(st.sampled_from(wrong), label="login token")


def _credentials(sent: Sent, creds: str, data: st.DataObject) -> None:
    headers = {k: v for k, v in sent.headers.items() if k.lower() not in ("authorization", "cookie")}
    if creds == "admin":
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    else:
        original = sent.headers.get("Authorization")
        wrong = data.draw(st.sampled_from([original, *WRONG_AUTHORIZATION]), label="authorization")
        if wrong is not None:
            headers["Authorization"] = wrong
        cookie = data.draw(
            st.sampled_from([None, "trellis_admin=", "trellis_admin=x.y", f"trellis_admin={ADMIN_TOKEN}"])
        )
        if cookie is not None:
            headers["Cookie"] = cookie
    sent.headers = headers


# -- checks --------------------------------------------------------------------------------------


def _json_body(response: Any) -> Any:
    try:
        return json.loads(response.body)
    except ValueError:
        return None


def check_response(
    name: str, creds: str, sent: Sent, response: Any, before: list[Any], after: Any, world: World
) -> None:
    method, path = name.split(" ", 1)
    status = response.status_code
    where = f"{name} [{creds}] answered {status}\n{sent.describe()}\nresponse: {response.body[:500]!r}"
    assert status < 500, where
    CHECKER.check(path, method, response)
    media = media_type(response)
    if 400 <= status < 500 and media == "application/json":
        answer = _json_body(response)
        assert isinstance(answer, dict), where
        gateway_401 = (
            status == 401 and set(answer) == {"message"} and "authorization" not in {k.lower() for k in sent.headers}
        )
        assert isinstance(answer.get("error"), str) or gateway_401, where
    if 400 <= status < 500 and path == "/forms/{form_id}" and status != 415:
        sent_type = next((v for k, v in sent.headers.items() if k.lower() == "content-type"), "")
        if sent_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            assert media == "text/html", where
    if 400 <= status < 500:
        assert after() == before, f"a rejected request changed the table\n{where}"
    if _is_admin(name) and creds == "none":
        security = CHECKER.operation(path, method).get("security")
        if security == [{"bearerAuth": []}]:
            assert status == 401, where
        if path == "/admin/dashboard":
            # Failed sign-ins (a wrong bearer too) are throttled: after a few, 429 instead of the form.
            assert status in (401, 429), where
        session = [c for c in header(response, "set-cookie").split(",") if c.strip().startswith("trellis_admin=")]
        assert all(c.strip().startswith("trellis_admin=;") for c in session), f"a session without credentials\n{where}"
        shown = (response.body.decode("utf-8", "replace") + json.dumps(response.headers)).lower()
        leaked = [secret for secret in world.secrets() if secret.lower() in shown]
        assert not leaked, f"lead data {leaked} without credentials\n{where}"


# -- the fuzz test -------------------------------------------------------------------------------


def _examples(name: str, creds: str) -> int:
    definition = OPERATIONS[name].definition.raw
    has_input = "requestBody" in definition or "parameters" in definition or "{" in name
    path_only = "requestBody" not in definition and all(p.get("in") == "path" for p in definition.get("parameters", []))
    default = (PATH_ONLY_EXAMPLES if path_only else DEFAULT_EXAMPLES) if has_input else BODYLESS_EXAMPLES
    examples = EXAMPLES.get(name, default)
    if _is_admin(name) and creds == "none":
        return max(BODYLESS_EXAMPLES, examples // UNAUTHENTICATED_SHARE)
    return examples


def _record(test_id: str, statuses: Counter[int]) -> int:
    """Write this test's request count (and its answers by status) and the total over every
    test so far (under a lock: pytest-xdist runs tests in several processes)."""
    count = statuses.total()
    ARTIFACTS.mkdir(exist_ok=True)
    counts = ARTIFACTS / "fuzz-counts"
    counts.mkdir(exist_ok=True)
    with (ARTIFACTS / "fuzz-count.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        safe = "".join(c if c.isalnum() else "_" for c in test_id)
        (counts / f"{safe}.txt").write_text(f"{count} {test_id} {dict(sorted(statuses.items()))}\n")
        lines = sorted(p.read_text() for p in counts.glob("*.txt"))
        total = sum(int(line.split(" ", 1)[0]) for line in lines)
        (ARTIFACTS / "fuzz-count.txt").write_text(f"{total} requests in {len(lines)} fuzz tests\n" + "".join(lines))
    return total


def table_snapshot(table_name: str) -> Any:
    """Every item of the table, straight from moto's in-memory backend: what the ``table_items``
    fixture's Scan returns, at a fraction of its cost (two per request add up)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]

    def snapshot() -> list[str]:
        # Looked up each time: moto rolls a failed transaction back by replacing its tables.
        table = backend.get_table(table_name)
        # Rate-limit windows count requests, rejected ones too (failed sign-ins): that is the
        # defence, not data stored for the request.
        return sorted(
            json.dumps(item.to_json()["Attributes"], sort_keys=True)
            for item in table.all_items()
            if not item.hash_key.value.startswith(LIMIT_PREFIX)
        )

    return snapshot


def _same_items(snapshot: list[str], scanned: list[dict[str, Any]]) -> bool:
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    as_json = sorted(
        json.dumps({k: serializer.serialize(v) for k, v in item.items()}, sort_keys=True)
        for item in scanned
        if not str(item["pk"]).startswith(LIMIT_PREFIX)
    )
    return snapshot == as_json


@pytest.mark.parametrize(("name", "creds"), list(_cases()))
def test_fuzz(name: str, creds: str, client: Any, table_items: Any, settings: Any) -> None:
    if not _served(name):
        pytest.fail(f"{name} is documented but not served (test_openapi's route sync test fails for it too)")
    world = _world(client)
    items = table_snapshot(settings.table_name)
    assert items() and _same_items(items(), table_items()), "the snapshot must see what a Scan sees"
    operation = OPERATIONS[name]
    strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in MODES))
    statuses: Counter[int] = Counter()

    @hypothesis_settings(
        max_examples=_examples(name, creds),
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        case = data.draw(strategy, label="case")
        _realistic(case, world, data)
        _login_token(case, creds, data)
        sent = _to_request(case)
        _hostile(sent, operation, data)
        _credentials(sent, creds, data)
        before = items()
        response = client.http.request(sent.method, sent.path, headers=sent.headers, body=sent.body)
        statuses[response.status_code] += 1
        check_response(name, creds, sent, response, before, items, world)

    try:
        fuzz()
    finally:
        _record(f"{name} [{creds}]", statuses)


# -- every hostile body, deterministically -------------------------------------------------------

BODY_OPERATIONS = [name for name, operation in OPERATIONS.items() if "requestBody" in operation.definition.raw]


def _concrete_path(name: str, world: World) -> str:
    path = name.split(" ", 1)[1]
    return (
        path.replace("{form_id}", "ebook")
        .replace("{lead_id}", world.lead_id)
        .replace("{token}", world.tokens[UNSUBSCRIBE_PURPOSE][0])
    )


@pytest.mark.parametrize("name", BODY_OPERATIONS)
def test_every_hostile_body(name: str, client: Any, settings: Any) -> None:
    """Each hostile body under each documented content type, plain text and none, with
    credentials where the route takes them: the same checks as the fuzzer's."""
    if not _served(name):
        pytest.fail(f"{name} is documented but not served (test_openapi's route sync test fails for it too)")
    world = _world(client)
    items = table_snapshot(settings.table_name)
    method, _ = name.split(" ", 1)
    content_types = [*OPERATIONS[name].definition.raw["requestBody"]["content"], "text/plain", None]
    creds = "admin" if _is_admin(name) else "none"
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    try:
        for raw in HOSTILE_BODIES:
            for content_type in content_types:
                headers = {"Accept": "*/*"}
                if creds == "admin":
                    headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
                if content_type is not None:
                    headers["Content-Type"] = content_type
                sent = Sent(method, _concrete_path(name, world), headers, raw)
                before = items()
                response = client.http.request(sent.method, sent.path, headers=sent.headers, body=sent.body)
                statuses[response.status_code] += 1
                try:
                    check_response(name, creds, sent, response, before, items, world)
                except AssertionError as e:
                    failures.append(str(e).split("\nassert ")[0])
    finally:
        _record(f"{name} [hostile bodies]", statuses)
    assert not failures, f"{len(failures)} of {statuses.total()} requests failed:\n\n" + "\n\n".join(failures)
