"""Sales handoff end to end on moto: qualification, owners, notifications, webhooks, feedback.

Leads cross into SQL by score and by raising a hand; each gets an owner round-robin, and sales
hears about it once: an email to the owner, a message on the sales topic, a signed webhook
(retried by the dispatcher's tick when it fails, without repeating the rest). An SQL leaves
nurture. Sales then moves the lead on, out, or back (recycled: the score starts again from fit).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import html
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from chalicelib import aws, runtime
from chalicelib.entities import Event, iso
from chalicelib.handoff import HANDOFF_LEASE
from chalicelib.models import Sales
from chalicelib.nurture.dispatcher import Pacer
from chalicelib.streams import StreamBatchFailed
from testkit import items as table_of
from tests.conftest import ADMIN_TOKEN, LambdaContext
from tests.helpers import SalesInbox, body, post_json

ADA = "ada@sales.demo.trellis.example"
GRACE = "grace@sales.demo.trellis.example"
SECRET = b"s" * 32
# Fit 30: CTO (+15), 51-200 (+10), DE (+5); with the ebook form (+5) it starts at 35.
HOT = {
    "email": "hal@acme.example",
    "first_name": "Hal",
    "last_name": "Hopper",
    "company": "Acme",
    "job_title": "CTO",
    "company_size": "51-200",
    "country": "DE",
    "consent": True,
}
RAISER = {"email": "rae@beta.example", "first_name": "Rae", "consent": True}  # no company: fit 0
COLD = {"email": "cole@cold.example", "first_name": "Cole", "consent": True}
PRICING = "https://trellis.example/pricing"
SCANNED = "https://trellis.example/guides/scanned"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# -- helpers ----------------------------------------------------------------------------------


def capture(client: Any, form: dict[str, Any]) -> tuple[str, str]:
    response = post_json(client, "/forms/ebook", form)
    assert response.status_code == 200
    return body(response)["lead_id"], body(response)["lead_token"]


def event(client: Any, token: str, kind: str, url: str | None = None) -> None:
    data = {"token": token, "type": kind, **({"url": url} if url else {})}
    assert post_json(client, "/events", data).status_code == 202


def clicks(rt: Any, lead_id: str, count: int) -> None:
    """Tracked clicks (internal events: the click redirect records them, not POST /events)."""
    for n in range(count):
        click = Event(lead_id, f"click{n}", "email_clicked", iso(rt.clock.now()), {"url": "https://trellis.example/x"})
        assert rt.store.record_event(click, profile_adds={"clicked": "ebook-nurture.ebook-delivery"})


def settle(deliver: Any) -> None:
    """Pump the stream until the handler's own writes stop producing records."""
    for _ in range(6):
        if not deliver():
            return
    raise AssertionError("the stream never went quiet")


def profile(table_items: Any, lead_id: str) -> dict[str, Any]:
    [item] = table_of.profiles(table_items(), lead_id)
    return item


def handoffs(table_items: Any) -> list[dict[str, Any]]:
    return table_of.handoffs(table_items())


def stage_changes(rt: Any, lead_id: str) -> list[tuple[str, str, str]]:
    record = rt.store.lead_record(lead_id)
    assert record is not None
    events = sorted((e for e in record.events if e.type == "stage_changed"), key=lambda e: e.at)
    return [(e.data["from"], e.data["to"], e.data["reason"]) for e in events]


def owner_mail(outbox: Any) -> list[Any]:
    return [m for m in outbox() if m["To"] in (ADA, GRACE)]


def text_of(message: Any) -> str:
    return str(message.get_body(("plain",)).get_content())


def html_of(message: Any) -> str:
    return str(message.get_body(("html",)).get_content())


def to_sql_by_score(client: Any, rt: Any, lead_id: str, token: str) -> None:
    """35 + pricing page 10 + pricing_view 15 + 3 clicks 15 + 3 page views 6 = 81."""
    event(client, token, "page_view", PRICING)
    event(client, token, "pricing_view", PRICING + "/teams")
    clicks(rt, lead_id, 3)
    for n in range(3):
        event(client, token, "page_view", f"https://trellis.example/blog/{n}")


@pytest.fixture
def sales_inbox(stack_outputs: dict[str, str]) -> SalesInbox:
    return SalesInbox(stack_outputs["SalesTopicArn"])


class WebhookServer:
    """A local HTTP endpoint on 127.0.0.1 that records what it is sent and answers as told."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []  # answers for the next requests; then 200
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                recorder.requests.append(({k.lower(): v for k, v in self.headers.items()}, payload))
                status = recorder.statuses.pop(0) if recorder.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/trellis"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for _, raw in self.requests]


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        yield server


@pytest.fixture
def hooked(client, rt, settings, clock, fake_sleep, webhook) -> runtime.Runtime:
    """The demo campaign with ``sales.webhook_url`` pointing at the local server, and a secret."""
    sales = Sales.model_validate({**rt.campaign.sales.model_dump(mode="json"), "webhook_url": webhook.url})
    campaign = rt.campaign.model_copy(update={"sales": sales})
    built = runtime.Runtime.build(
        dataclasses.replace(settings, webhook_secret=SECRET),
        clock=clock,
        campaign=campaign,
        pacer=Pacer(14.0, monotonic=fake_sleep.monotonic, sleep=fake_sleep.sleep),
    )
    runtime.install(built)
    return built


def assert_signed(headers: dict[str, str], raw: bytes) -> None:
    timestamp = headers["x-trellis-timestamp"]
    assert timestamp.isdigit()
    expected = hmac.new(SECRET, timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-trellis-signature"], f"sha256={expected}")
    assert headers["content-type"] == "application/json"


# -- qualification and handoff ----------------------------------------------------------------


def test_two_sqls_get_owners_round_robin_and_sales_hears_once_each_way(
    client, hooked, deliver, outbox, table_items, sales_inbox, webhook
):
    rt = hooked
    hot_id, hot_token = capture(client, HOT)
    raiser_id, raiser_token = capture(client, RAISER)
    settle(deliver)  # the ebooks go out; 35 and 5 points: both still leads
    assert [profile(table_items, i)["stage"] for i in (hot_id, raiser_id)] == ["lead", "lead"]

    event(client, hot_token, "page_view", PRICING)
    settle(deliver)  # 45: an MQL
    assert profile(table_items, hot_id)["stage"] == "mql"
    assert handoffs(table_items) == []

    event(client, hot_token, "pricing_view", PRICING + "/teams")
    clicks(rt, hot_id, 3)
    # A link scanner's click on the ebook email, the moment it was sent: no points, and not news
    # for sales (judged with the lead's sends, which the notifier reads with the events).
    scan = {"message_id": "ebook-nurture.ebook-delivery", "url": SCANNED}
    assert rt.store.record_event(Event(hot_id, "scan", "email_clicked", iso(rt.clock.now()), scan))
    for n in range(3):
        event(client, hot_token, "page_view", f"https://trellis.example/blog/{n}")
    settle(deliver)  # 81: an SQL by score -- the first, so Ada's
    event(client, raiser_token, "demo_request", "https://trellis.example/demo")
    settle(deliver)  # a hand-raiser: an SQL at 45 -- the second, so Grace's

    # Stages, reasons and owners on the leads; the changes are on their timelines.
    hot, raiser = profile(table_items, hot_id), profile(table_items, raiser_id)
    assert (hot["stage"], float(hot["score"]), hot["owner"]) == ("sql", 81, {"name": "Ada Sales", "email": ADA})
    assert (raiser["stage"], float(raiser["score"]), raiser["owner"]) == (
        "sql",
        45,
        {"name": "Grace Sales", "email": GRACE},
    )
    assert stage_changes(rt, hot_id) == [
        ("lead", "mql", "score 45 reached mql_threshold 40"),
        ("mql", "sql", "score 81 reached sql_threshold 80"),
    ]
    assert stage_changes(rt, raiser_id) == [("lead", "sql", "hand-raiser event demo_request")]
    assert hot["stage_reason"] == "score 81 reached sql_threshold 80"

    # One handoff each, fully notified.
    items = {h["lead_id"]: h for h in handoffs(table_items)}
    assert set(items) == {hot_id, raiser_id}
    assert (items[hot_id]["owner_email"], items[raiser_id]["owner_email"]) == (ADA, GRACE)
    assert items[raiser_id]["reason"] == "hand-raiser event demo_request"
    for item in items.values():
        assert (item["status"], item["webhook_status"], int(item["webhook_attempts"])) == ("notified", "delivered", 1)
        assert item["email_sent_at"] and item["sns_sent_at"]
        assert "due_at" not in item and "due_shard" not in item

    # One email to each owner, about their lead: profile and timeline.
    to_ada, to_grace = owner_mail(outbox)
    assert (to_ada["To"], to_grace["To"]) == (ADA, GRACE)
    assert "Acme" in to_ada["Subject"]
    assert "rae@beta.example" in to_grace["Subject"]  # no company: the address
    text = text_of(to_ada)
    for expected in ("Hal Hopper <hal@acme.example>", "Acme", "CTO", "score 81 reached sql_threshold 80"):
        assert expected in text
    for line in (f"pricing_view {PRICING}/teams", f"page_view {PRICING}", "email_clicked", "form_submitted"):
        assert line in text, line
    assert "company_size" in html_of(to_ada) and "51-200" in html_of(to_ada)
    assert SCANNED not in text and SCANNED not in html_of(to_ada)
    machines = "Not shown: 1 open or click by machines (link scanners, Apple's privacy proxy), not by the person"
    assert machines in text and machines in html.unescape(html_of(to_ada))
    assert "Not shown" not in text_of(to_grace)
    assert "demo_request https://trellis.example/demo" in text_of(to_grace)

    # One message each on the sales topic.
    messages = sorted(sales_inbox.messages(), key=lambda m: m["owner"]["email"])
    assert [(m["lead_id"], m["owner"]["email"], m["score"]) for m in messages] == [
        (hot_id, ADA, 81),
        (raiser_id, GRACE, 45),
    ]
    assert messages[0]["reason"] == "score 81 reached sql_threshold 80"
    assert messages[1]["reason"] == "hand-raiser event demo_request"
    assert messages[0]["email"] == "hal@acme.example" and messages[0]["profile"]["company"] == "Acme"

    # One signed webhook each, carrying the same payload.
    assert len(webhook.requests) == 2
    for headers, raw in webhook.requests:
        assert_signed(headers, raw)
    assert sorted(webhook.payloads(), key=lambda m: m["owner"]["email"]) == messages

    # Nothing more comes of any of it.
    settle(deliver)
    assert len(owner_mail(outbox)) == 2 and len(sales_inbox.messages()) == 2 and len(webhook.requests) == 2


def test_a_failing_webhook_does_not_block_the_stream_and_the_tick_retries_it_once(
    client, hooked, clock, deliver, tick, outbox, table_items, sales_inbox, webhook
):
    webhook.statuses = [500]
    lead_id, token = capture(client, RAISER)
    event(client, token, "demo_request")

    settle(deliver)  # returns: the webhook's failure is not the stream's

    [item] = handoffs(table_items)
    assert (item["status"], item["webhook_status"], int(item["webhook_attempts"])) == ("pending", "pending", 1)
    assert item["due_at"] == iso(clock.now() + timedelta(seconds=30))
    assert len(webhook.requests) == 1
    assert len(owner_mail(outbox)) == 1 and len(sales_inbox.messages()) == 1

    clock.advance(29)
    tick()
    assert len(webhook.requests) == 1  # not before the backoff

    clock.advance(2)
    tick()

    assert len(webhook.requests) == 2
    [item] = handoffs(table_items)
    assert (item["status"], item["webhook_status"], int(item["webhook_attempts"])) == ("notified", "delivered", 2)
    assert "due_at" not in item and "due_shard" not in item
    first, second = webhook.requests
    assert_signed(*second)
    assert json.loads(first[1]) == json.loads(second[1])
    # The email and the SNS message went once, with the first attempt; later ticks do nothing.
    clock.advance(3600)
    tick()
    settle(deliver)
    assert len(webhook.requests) == 2
    assert [m["To"] for m in owner_mail(outbox)] == [ADA]
    assert [m["lead_id"] for m in sales_inbox.messages()] == [lead_id]


def test_an_sql_leaves_nurture_while_other_leads_keep_receiving_it(
    client, rt, clock, deliver, tick, outbox, table_items
):
    hot_id, hot_token = capture(client, HOT)
    cold_id, _ = capture(client, COLD)
    settle(deliver)  # both get the ebook
    to_sql_by_score(client, rt, hot_id, hot_token)
    settle(deliver)
    assert profile(table_items, hot_id)["stage"] == "sql"

    for _ in range(8):  # through the whole schedule: tip (day 1), case study (day 3), offer (day 6)
        clock.advance(timedelta(days=1).total_seconds())
        tick()

    nurture = [m for m in outbox() if m["To"] not in (ADA, GRACE)]
    assert [m["Subject"] for m in nurture if m["To"] == HOT["email"]] == ["Your copy of The Lead Nurture Playbook"]
    assert [m["Subject"] for m in nurture if m["To"] == COLD["email"]] == [
        "Your copy of The Lead Nurture Playbook",
        "The one chapter of The Lead Nurture Playbook to read first",
        "How a 5-person team doubled their SQLs",
    ]
    [enrolment] = table_of.enrolments(table_items(), "ebook-nurture", hot_id)
    assert (enrolment["status"], enrolment["exit_reason"]) == ("exited", "stage:sql")
    assert "due_at" not in enrolment
    [cold] = table_of.enrolments(table_items(), "ebook-nurture", cold_id)
    assert cold["status"] == "completed" and "exit_reason" not in cold
    assert len(owner_mail(outbox)) == 1  # the handoff went once, not again with the ticks


def test_a_crash_while_notifying_is_finished_later_without_repeating_what_went(
    client, rt, clock, stream, tick, outbox, table_items, sales_inbox
):
    from app import on_lead_change

    lead_id, token = capture(client, RAISER)
    event(client, token, "demo_request")
    on_lead_change({"Records": stream.read()}, LambdaContext())  # the crossing writes the handoff
    records = stream.read()
    assert any(r["eventName"] == "INSERT" and "HANDOFF#" in r["dynamodb"]["Keys"]["sk"]["S"] for r in records)
    outage = [EndpointConnectionError(endpoint_url="https://sns.us-east-1.amazonaws.com")]

    def sns_down_once(**_: Any) -> None:
        if outage:
            raise outage.pop()

    aws.sns().meta.events.register("before-call.sns.Publish", sns_down_once)
    with pytest.raises(StreamBatchFailed):  # the outage stops the batch; Lambda retries it
        on_lead_change({"Records": records}, LambdaContext())  # the email went, then SNS failed
    assert [m["To"] for m in owner_mail(outbox)] == [ADA] and sales_inbox.messages() == []

    on_lead_change({"Records": records}, LambdaContext())  # Lambda retries the batch at once
    clock.advance((HANDOFF_LEASE + timedelta(minutes=1)).total_seconds())
    tick()  # and, whatever the retry could not do, the lease's expiry must bring back
    while more := stream.read():
        on_lead_change({"Records": more}, LambdaContext())

    assert [m["lead_id"] for m in sales_inbox.messages()] == [lead_id], "the SNS message was lost"
    assert [m["To"] for m in owner_mail(outbox)] == [ADA]
    [item] = handoffs(table_items)
    assert item["status"] == "notified"


# -- sales feedback ---------------------------------------------------------------------------


def patch(client: Any, lead_id: str, data: Any, headers: dict[str, str] | None = None) -> Any:
    return client.http.request(
        "PATCH",
        f"/admin/leads/{lead_id}",
        headers={"Content-Type": "application/json", **(headers or {})},
        body=json.dumps(data),
    )


def test_sales_feedback_needs_the_admin_token_and_a_known_stage_and_lead(client, table_items):
    lead_id, _ = capture(client, HOT)
    before = table_items()

    missing = patch(client, lead_id, {"stage": "customer"})
    wrong = patch(client, lead_id, {"stage": "customer"}, {"Authorization": "Bearer " + "x" * len(ADMIN_TOKEN)})
    not_bearer = patch(client, lead_id, {"stage": "customer"}, {"Authorization": f"Basic {ADMIN_TOKEN}"})
    invalid = patch(client, lead_id, {"stage": "won"}, AUTH)
    not_by_hand = patch(client, lead_id, {"stage": "sql"}, AUTH)  # scoring's, not sales'
    no_stage = patch(client, lead_id, {"note": "hi"}, AUTH)
    unknown = patch(client, "0" * 32, {"stage": "customer"}, AUTH)

    # No Authorization header: API Gateway (and chalice local) answer before the authorizer runs.
    assert (missing.status_code, body(missing)) == (401, {"message": "Unauthorized"})
    # Wrong credentials: the authorizer's verdict, answered by Trellis with the same status.
    for response in (wrong, not_bearer):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert body(response) == {"error": "unauthorized"}
    for response in (invalid, not_by_hand, no_stage):
        assert response.status_code == 400
        assert "stage" in body(response)["fields"]
    assert unknown.status_code == 404
    assert table_items() == before


def test_sales_moves_a_lead_on_or_out_with_a_recorded_reason(client, rt, clock, deliver, table_items):
    sql_id, sql_token = capture(client, HOT)
    other_id, _ = capture(client, COLD)
    event(client, sql_token, "demo_request")
    settle(deliver)

    clock.advance(60)
    opportunity = patch(client, sql_id, {"stage": "opportunity", "note": "call booked"}, AUTH)
    clock.advance(60)
    customer = patch(client, sql_id, {"stage": "customer"}, AUTH)
    disqualified = patch(client, other_id, {"stage": "disqualified", "note": "student"}, AUTH)

    assert opportunity.status_code == 200
    assert body(opportunity)["stage"] == "opportunity"
    assert body(opportunity)["stage_reason"] == "sales feedback: call booked"
    assert (customer.status_code, body(customer)["stage"]) == (200, "customer")
    assert (disqualified.status_code, body(disqualified)["lead_id"]) == (200, other_id)
    assert profile(table_items, sql_id)["stage"] == "customer"
    assert profile(table_items, other_id)["stage"] == "disqualified"
    assert stage_changes(rt, sql_id)[1:] == [
        ("sql", "opportunity", "sales feedback: call booked"),
        ("opportunity", "customer", "sales feedback"),
    ]
    assert stage_changes(rt, other_id) == [("lead", "disqualified", "sales feedback: student")]

    # Scoring never moves a lead out of the stages sales owns, and hands nobody off again.
    event(client, sql_token, "pricing_view")
    settle(deliver)
    assert profile(table_items, sql_id)["stage"] == "customer"
    assert len(handoffs(table_items)) == 1


def test_a_recycled_lead_keeps_its_fit_and_scores_again_from_there(client, rt, clock, deliver, table_items):
    lead_id, token = capture(client, HOT)
    to_sql_by_score(client, rt, lead_id, token)
    settle(deliver)
    assert float(profile(table_items, lead_id)["score"]) == 81

    clock.advance(3600)
    response = patch(client, lead_id, {"stage": "recycled", "note": "not this quarter"}, AUTH)

    assert response.status_code == 200
    assert (body(response)["stage"], body(response)["score"]) == ("recycled", 30)  # fit only
    item = profile(table_items, lead_id)
    assert (item["stage"], float(item["score"]), item["score_reset_at"]) == ("recycled", 30, iso(clock.now()))
    assert stage_changes(rt, lead_id)[-1] == ("sql", "recycled", "sales feedback: not this quarter")
    settle(deliver)  # the feedback's own writes rescore nothing
    assert float(profile(table_items, lead_id)["score"]) == 30

    clock.advance(60)
    event(client, token, "page_view", PRICING)  # +10 on top of fit: 40, an MQL again
    settle(deliver)

    item = profile(table_items, lead_id)
    assert (item["stage"], float(item["score"])) == ("mql", 40)
    assert stage_changes(rt, lead_id)[-1] == ("recycled", "mql", "score 40 reached mql_threshold 40")
    assert len(handoffs(table_items)) == 1


def test_every_admin_route_is_behind_the_admin_authorizer():
    import app as application

    admin_routes = {
        (path, method): entry
        for path, methods in application.app.routes.items()
        if path.startswith("/admin/")
        for method, entry in methods.items()
    }
    # The dashboard's three pages check the session cookie themselves (a token authorizer would
    # refuse a browser before the login form shows); tests/integration/test_dashboard_http.py covers them.
    cookie_pages = {("/admin/dashboard", "GET"), ("/admin/login", "POST"), ("/admin/logout", "POST")}
    assert admin_routes.keys() >= cookie_pages
    for key, entry in admin_routes.items():
        assert entry.authorizer is (None if key in cookie_pages else application.admin_auth), key


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        (f"Bearer {ADMIN_TOKEN}", "admin"),
        (f"bearer  {ADMIN_TOKEN} ", "admin"),
        (f"Bearer {ADMIN_TOKEN}x", "anonymous"),
        (f"Bearer {ADMIN_TOKEN[:-1]}", "anonymous"),
        (f"Basic {ADMIN_TOKEN}", "anonymous"),
        (ADMIN_TOKEN, "anonymous"),
        ("", "anonymous"),
    ],
)
def test_admin_authorizer_verdicts(rt, header, verdict):
    from chalice.app import AuthRequest

    from chalicelib.http.auth import authorize_admin

    answer = authorize_admin(
        rt.admin_token, AuthRequest("TOKEN", header, "arn:aws:execute-api:us-east-1:1:api/api/GET/admin")
    )

    assert answer.principal_id == verdict
