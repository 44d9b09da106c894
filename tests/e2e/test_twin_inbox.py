"""The twin's inbox (twin/inbox.py): SES's mailbox simulator, delivery events, link scanners and
Apple's privacy proxy. Unit tests without servers first; then one running twin for the module,
driven as a person drives `make demo` (form posts, the console's clock and tick)."""

from __future__ import annotations

import functools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from chalice.app import SNSEvent
from moto import mock_aws

from chalicelib.clock import FixedClock
from chalicelib.config import load_campaign
from chalicelib.entities import Event, Suppression
from chalicelib.nurture import mime, preview
from chalicelib.nurture.feedback import Feedback
from chalicelib.tracking import CLICK_PURPOSE, LinkBuilder, TokenSigner
from tests.conftest import ADMIN_TOKEN, TEST_TOKEN_KEY
from tests.twin_process import OPENER, TwinProcess, running_twin
from twin import inbox, stack
from twin.inbox import (
    APPLE_PROXY,
    APPLE_PROXY_AGENT,
    BOUNCED,
    COMPLAINED,
    DELIVERED,
    SCANNED,
    SCANNER_AGENTS,
    SUPPRESSED,
    FeedbackPump,
    Fetch,
    Inbox,
    Sender,
    SentMail,
    SentWatcher,
    http_fetch,
    inbox_of,
    parse_mail,
    ses_events,
)

API = "http://127.0.0.1:8000"
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
SENDER = Sender("123456789012", "us-east-1", "trellis-dev")
REFERENCE = "0123456789abcdef0123456789abcdef/welcome.welcome"
MESSAGE_ID = "0100018c5e2a7a8b-1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9-000000"


def rendered_welcome(to: str) -> str:
    """The demo campaign's welcome email as the dispatcher builds it: tracked links, pixel, MIME."""
    campaign = load_campaign("demo")
    links = LinkBuilder(TokenSigner(TEST_TOKEN_KEY.encode()), API)
    step = preview.find_step(campaign, "welcome", "welcome")
    lead = preview.sample_lead(campaign, "welcome", NOW)
    rendered = preview.render_step(campaign, links, "welcome", step, lead, NOW)
    raw = mime.build_message(sender=campaign.sender, to=to, rendered=rendered, reference=REFERENCE, now=NOW)
    return raw.decode("ascii")


def sent(to: str, raw: str | None = None) -> SentMail:
    # moto lists the envelope recipient and, again, the To header's.
    return SentMail(MESSAGE_ID, "hello@demo.trellis.example", (to, f"<{to}>"), raw or rendered_welcome(to))


HANDMADE = """\
From: Trellis Demo <hello@demo.trellis.example>
To: ann@scanned.example
Subject: Links
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8

<html><body>
<p><a href="http://127.0.0.1:8000/t/c/seen">Read</a> <a href="mailto:team@demo.trellis.example">Mail us</a></p>
<p><a href="https://trellis.example/untracked">Off the twin</a> <a href="http://127.0.0.1:8000/t/c/seen">Again</a></p>
<div hidden style="display:none"><a href="http://127.0.0.1:8000/t/c/hidden" tabindex="-1"></a></div>
<img src="https://cdn.example/logo.png"><img src="http://127.0.0.1:8000/t/o/pixel" width="1" height="1">
</body></html>
"""


# -- parsing --------------------------------------------------------------------------------------


def test_a_rendered_email_parses_into_its_links_pixel_and_headers() -> None:
    mail = parse_mail(rendered_welcome("ann@example.org"))

    tracked = [link for link in mail.links if link.startswith(f"{API}/t/c/")]
    assert tracked, mail.links  # the guide link (and, when rendered, the trap link)
    assert any(link.startswith(f"{API}/u/") for link in mail.links)  # the unsubscribe link
    assert len(mail.links) == len(set(mail.links))
    [pixel] = mail.pixels
    assert pixel.startswith(f"{API}/t/o/")
    assert mail.header("X-Trellis-Reference") == REFERENCE
    assert mail.header("to") == "ann@example.org"


def test_hidden_links_are_found_and_nothing_off_127_0_0_1_is_fetched() -> None:
    mail = parse_mail(HANDMADE)

    assert mail.links == (
        "http://127.0.0.1:8000/t/c/seen",
        "mailto:team@demo.trellis.example",
        "https://trellis.example/untracked",
        "http://127.0.0.1:8000/t/c/hidden",
    )
    assert mail.pixels == ("http://127.0.0.1:8000/t/o/pixel",)
    planned = inbox.fetches(SCANNED, mail, iter(SCANNER_AGENTS))
    assert [(f.method, f.url) for f in planned] == [
        ("HEAD", "http://127.0.0.1:8000/t/c/seen"),
        ("GET", "http://127.0.0.1:8000/t/c/seen"),
        ("HEAD", "http://127.0.0.1:8000/t/c/hidden"),
        ("GET", "http://127.0.0.1:8000/t/c/hidden"),
        ("HEAD", "http://127.0.0.1:8000/t/o/pixel"),
        ("GET", "http://127.0.0.1:8000/t/o/pixel"),
    ]
    assert planned[-1].accept.startswith("image/")  # the API answers image/gif only to who accepts it
    apple = inbox.fetches(APPLE_PROXY, mail, iter(SCANNER_AGENTS))
    assert apple == [Fetch("GET", "http://127.0.0.1:8000/t/o/pixel", APPLE_PROXY_AGENT, inbox.IMAGE_ACCEPT)]
    assert inbox.fetches(DELIVERED, mail, iter(SCANNER_AGENTS)) == []


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("bounce@simulator.amazonses.com", BOUNCED),
        ("Bounce+step2@Simulator.AmazonSES.com", BOUNCED),
        ("complaint@simulator.amazonses.com", COMPLAINED),
        ("suppressionlist@simulator.amazonses.com", SUPPRESSED),
        ("success@simulator.amazonses.com", DELIVERED),
        ("ivy@scanned.example", SCANNED),
        ("IVY@SCANNED.EXAMPLE", SCANNED),
        ("ivy@mail.scanned.example", DELIVERED),
        ("max@mpp.example", APPLE_PROXY),
        ("bounce@example.org", DELIVERED),
        ("ann@example.org", DELIVERED),
    ],
)
def test_what_happens_to_mail_by_recipient(address: str, kind: str) -> None:
    assert inbox_of(address) == kind


def test_is_local_admits_the_twins_servers_only() -> None:
    assert inbox.is_local("http://127.0.0.1:8000/t/c/x")
    for url in (
        "https://trellis.example/",
        "http://127.0.0.1.nip.io/x",
        "http://localhost:8000/x",
        "http://user@127.0.0.1:8000/x",
        "file:///etc/passwd",
        "http://127.0.0.1:99999999/",
    ):
        assert not inbox.is_local(url), url


# -- SES events -----------------------------------------------------------------------------------


def test_ses_events_have_the_configuration_set_event_shape() -> None:
    mail = parse_mail(rendered_welcome("bounce@simulator.amazonses.com"))
    envelope = sent("bounce@simulator.amazonses.com")

    [bounce] = ses_events(envelope, mail, "bounce@simulator.amazonses.com", SENDER, NOW)
    assert bounce["eventType"] == "Bounce"
    assert bounce["bounce"]["bounceType"] == "Permanent"
    assert bounce["bounce"]["bounceSubType"] == "General"
    assert bounce["bounce"]["bouncedRecipients"][0]["emailAddress"] == "bounce@simulator.amazonses.com"
    assert bounce["bounce"]["bouncedRecipients"][0]["status"] == "5.1.1"
    sent_mail = bounce["mail"]
    assert sent_mail["messageId"] == MESSAGE_ID
    assert sent_mail["destination"] == ["bounce@simulator.amazonses.com"]
    assert sent_mail["source"] == "hello@demo.trellis.example"
    assert sent_mail["sourceArn"] == "arn:aws:ses:us-east-1:123456789012:identity/demo.trellis.example"
    assert {"name": "X-Trellis-Reference", "value": REFERENCE} in sent_mail["headers"]
    assert sent_mail["commonHeaders"]["subject"] == "Welcome to the Trellis newsletter, Ada"
    assert sent_mail["tags"]["ses:configuration-set"] == ["trellis-dev"]
    assert sent_mail["timestamp"] == "2026-11-23T09:30:00.000Z"

    delivered, complaint = ses_events(envelope, mail, "complaint@simulator.amazonses.com", SENDER, NOW)
    assert (delivered["eventType"], complaint["eventType"]) == ("Delivery", "Complaint")
    assert delivered["delivery"]["recipients"] == ["complaint@simulator.amazonses.com"]
    assert complaint["complaint"]["complainedRecipients"] == [{"emailAddress": "complaint@simulator.amazonses.com"}]
    assert complaint["complaint"]["complaintFeedbackType"] == "abuse"
    assert complaint["complaint"]["timestamp"] > delivered["delivery"]["timestamp"]

    [suppressed] = ses_events(envelope, mail, "suppressionlist@simulator.amazonses.com", SENDER, NOW)
    assert (suppressed["bounce"]["bounceType"], suppressed["bounce"]["bounceSubType"]) == ("Permanent", "Suppressed")

    for address in ("ann@example.org", "ivy@scanned.example", "max@mpp.example"):
        [event] = ses_events(envelope, mail, address, SENDER, NOW)
        assert event["eventType"] == "Delivery"
        assert event["delivery"]["smtpResponse"].startswith("250 ")


class _Store:
    def __init__(self) -> None:
        self.suppressed: list[Suppression] = []
        self.events: list[Event] = []

    def suppress(self, suppression: Suppression) -> bool:
        self.suppressed.append(suppression)
        return True

    def record_event(self, event: Event) -> bool:
        self.events.append(event)
        return True


class _Tally:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def delivered(self, reference: str, at: str) -> int:
        self.calls.append(("delivered", reference))
        return 1

    def feedback(self, reference: str, event_type: str, at: str) -> None:
        self.calls.append((event_type, reference))


def test_the_apps_feedback_parser_reads_the_events_as_published() -> None:
    """chalicelib.nurture.feedback, given the JSON the inbox publishes: the reference traced, the
    address suppressed with SES's bounce type, the delivery counted."""
    store, tally = _Store(), _Tally()
    feedback = Feedback(store, tally, FixedClock(NOW))  # type: ignore[arg-type]
    mail = parse_mail(rendered_welcome("x@example.org"))
    results = []
    for address in ("ann@example.org", "suppressionlist@simulator.amazonses.com", "complaint@simulator.amazonses.com"):
        for event in ses_events(sent(address), mail, address, SENDER, NOW):
            results.append(feedback.handle(json.dumps(event)))

    assert [(r.kind, r.suppressed, r.counted) for r in results] == [
        ("Delivery", 0, 1),
        ("Bounce", 1, 0),
        ("Delivery", 0, 1),
        ("Complaint", 1, 0),
    ]
    assert [s.detail for s in store.suppressed] == ["Permanent/Suppressed", "abuse"]
    assert [e.type for e in store.events] == ["email_bounced", "email_complained"]
    assert all(e.data["message_id"] == "welcome.welcome" for e in store.events)
    assert tally.calls == [
        ("delivered", REFERENCE),
        ("email_bounced", REFERENCE),
        ("delivered", REFERENCE),
        ("email_complained", REFERENCE),
    ]


def test_only_the_event_types_the_configuration_set_publishes() -> None:
    assert inbox.destination_event_types(stack.TEMPLATE) == {"Bounce", "Complaint", "Delivery", "Reject"}
    published: list[str] = []
    only_bounces = Inbox(published.append, lambda f: None, lambda: NOW, SENDER, event_types={"Bounce"})
    only_bounces.receive(sent("complaint@simulator.amazonses.com"))
    only_bounces.receive(sent("bounce@simulator.amazonses.com"))
    assert [json.loads(m)["eventType"] for m in published] == ["Bounce"]


# -- the runner -----------------------------------------------------------------------------------


def make_inbox() -> tuple[Inbox, list[dict[str, Any]], list[Fetch]]:
    published: list[dict[str, Any]] = []
    fetched: list[Fetch] = []

    def fetch(planned: Fetch) -> int:
        fetched.append(planned)
        return 302

    runner = Inbox(lambda m: published.append(json.loads(m)), fetch, lambda: NOW, SENDER)
    return runner, published, fetched


def test_a_scanner_fetches_every_link_and_the_pixel_head_then_get_in_turn_of_agents() -> None:
    runner, published, fetched = make_inbox()
    raw = rendered_welcome("ivy@scanned.example")
    mail = parse_mail(raw)

    receipt = runner.receive(sent("ivy@scanned.example", raw))

    assert [e["eventType"] for e in published] == ["Delivery"]
    urls = [*mail.links, *mail.pixels]
    assert [(f.method, f.url) for f in fetched] == [(m, url) for url in urls for m in ("HEAD", "GET")]
    agents = [f.user_agent for f in fetched]
    assert agents[0::2] == agents[1::2]  # a URL's HEAD and GET come from one scanner
    assert len(set(agents)) == min(len(urls), len(SCANNER_AGENTS)) and set(agents) <= set(SCANNER_AGENTS)
    assert receipt.kinds == [SCANNED] and len(receipt.fetched) == len(fetched)


def test_apple_fetches_the_pixel_plain_and_simulator_mail_nothing() -> None:
    runner, published, fetched = make_inbox()
    runner.receive(sent("max@mpp.example"))
    [pixel] = parse_mail(rendered_welcome("max@mpp.example")).pixels
    assert fetched == [Fetch("GET", pixel, "Mozilla/5.0", inbox.IMAGE_ACCEPT)]

    fetched.clear()
    for address in ("ann@example.org", "bounce@simulator.amazonses.com", "complaint@simulator.amazonses.com"):
        runner.receive(sent(address))
    assert fetched == []
    assert [e["eventType"] for e in published] == ["Delivery", "Delivery", "Bounce", "Delivery", "Complaint"]


def test_no_address_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    runner, _, _ = make_inbox()
    with caplog.at_level("DEBUG", logger="twin.inbox"):
        for address in ("ivy@scanned.example", "bounce@simulator.amazonses.com", "ann@example.org"):
            runner.receive(sent(address))
    lines = [r.getMessage() for r in caplog.records if r.name == "twin.inbox"]
    assert len(lines) == 3
    assert all(MESSAGE_ID in line and "@" not in line and "/t/" not in line for line in lines), lines


def test_the_watcher_hands_out_each_sent_email_once() -> None:
    class Raw:
        def __init__(self, n: int) -> None:
            self.id, self.source, self.destinations, self.raw_data = f"m{n}", "s@x.example", [f"r{n}@x.example"], "x"

    outbox: list[Any] = [Raw(1)]
    watcher = SentWatcher(lambda: outbox)
    assert [m.message_id for m in watcher.new()] == ["m1"]
    assert watcher.new() == []
    outbox += [Raw(2), Raw(3)]
    assert [m.message_id for m in watcher.new()] == ["m2", "m3"]


# -- fetching -------------------------------------------------------------------------------------


@pytest.fixture
def local_site() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """A server on 127.0.0.1 whose /go redirects to /landed; it records every request."""
    seen: list[tuple[str, str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append((self.command, self.path, self.headers.get("User-Agent", "")))
            if self.path == "/go":
                self.send_response(302)
                self.send_header("Location", "/landed")
            else:
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_http_fetch_never_follows_a_redirect(local_site: tuple[str, list[tuple[str, str, str]]]) -> None:
    url, seen = local_site
    assert http_fetch(Fetch("HEAD", f"{url}/go", "python-requests/2.31.0")) == 302
    assert http_fetch(Fetch("GET", f"{url}/go", "Mozilla/5.0")) == 302
    assert seen == [("HEAD", "/go", "python-requests/2.31.0"), ("GET", "/go", "Mozilla/5.0")]


def test_http_fetch_refuses_what_is_not_on_127_0_0_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("opened a connection")

    monkeypatch.setattr(inbox._OPENER, "open", no_network)
    assert http_fetch(Fetch("GET", "https://trellis.example/guides", "Mozilla/5.0")) is None
    assert http_fetch(Fetch("GET", "http://localhost:8000/t/o/x", "Mozilla/5.0")) is None


# -- SNS -> Lambda --------------------------------------------------------------------------------


def test_the_pump_invokes_the_handler_as_sns_invokes_lambda_and_deletes_after_it_returned() -> None:
    with mock_aws():
        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        topic = sns.create_topic(Name="trellis-test-ses-events")["TopicArn"]
        received: list[dict[str, Any]] = []
        waiting: list[int] = []

        def handler(event: dict[str, Any]) -> None:
            attributes = sqs.get_queue_attributes(QueueUrl=pump.queue_url, AttributeNames=["All"])["Attributes"]
            waiting.append(
                int(attributes["ApproximateNumberOfMessages"])
                + int(attributes["ApproximateNumberOfMessagesNotVisible"])
            )
            received.append(event)
            if len(received) == 1:
                raise RuntimeError("the handler failed")

        # No visibility timeout: a failed message is back at once (the twin waits 10 s).
        pump = FeedbackPump.subscribe(sns, sqs, topic, handler, visibility_timeout=0)
        sns.publish(TopicArn=topic, Message='{"eventType": "Delivery"}', Subject=inbox.EVENT_SUBJECT)

        assert pump.pump_once() == 1  # failed once, retried, handled
        assert (pump.invoked, pump.failed) == (1, 1)
        assert waiting == [1, 1]  # while the handler ran, its message was still on the queue
        assert pump.pump_once() == 0  # deleted once handled: never delivered again

        [record] = received[-1]["Records"]
        assert record["EventSource"] == "aws:sns"
        assert record["EventSubscriptionArn"] == pump.subscription_arn
        assert record["Sns"]["TopicArn"] == topic
        assert record["Sns"]["Type"] == "Notification"
        assert record["Sns"]["Subject"] == inbox.EVENT_SUBJECT
        assert record["Sns"]["Message"] == '{"eventType": "Delivery"}'
        # What the app's @on_sns_message handler is given:
        assert SNSEvent(received[-1], None).message == '{"eventType": "Delivery"}'


def test_the_pump_drops_an_event_the_handler_failed_on_every_time() -> None:
    with mock_aws():
        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        topic = sns.create_topic(Name="trellis-test-ses-events")["TopicArn"]
        calls: list[int] = []

        def handler(event: dict[str, Any]) -> None:
            calls.append(1)
            raise RuntimeError("always")

        pump = FeedbackPump.subscribe(sns, sqs, topic, handler, visibility_timeout=0)
        sns.publish(TopicArn=topic, Message="{}")
        assert pump.pump_once() == 0
        assert len(calls) == inbox.MAX_INVOCATIONS  # once and two retries, as Lambda's async invocation
        assert pump.pump_once() == 0 and len(calls) == inbox.MAX_INVOCATIONS  # dropped


# -- end to end: the twin as `make demo` runs it --------------------------------------------------

SCANNED_LEAD = "ivy@scanned.example"
APPLE_LEAD = "max@mpp.example"
PLAIN_LEAD = "ann@example.org"
BOUNCE = "bounce@simulator.amazonses.com"
COMPLAINT = "complaint@simulator.amazonses.com"
SUPPRESSION_LIST = "suppressionlist@simulator.amazonses.com"
EVERYONE = (SCANNED_LEAD, APPLE_LEAD, PLAIN_LEAD, BOUNCE, COMPLAINT, SUPPRESSION_LIST)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def wait_for(what: str, check: Callable[[], Any], twin: TwinProcess, seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {seconds:.0f}s:\n{twin.output()[-4000:]}")
        time.sleep(0.1)


def post(url: str, data: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with OPENER.open(request, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:  # the 303 of a plain form post, not followed
        return e.code, e.read()


def lead(twin: TwinProcess, address: str) -> dict[str, Any]:
    found = [entry for entry in twin.console_json("/leads.json") if entry["email"].casefold() == address.casefold()]
    return found[0] if found else {}


def timeline(twin: TwinProcess, address: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = lead(twin, address).get("timeline", [])
    return entries


def has(twin: TwinProcess, address: str, event_type: str) -> bool:
    return event_type in [e["type"] for e in timeline(twin, address)]


def mail_to(twin: TwinProcess, address: str) -> list[dict[str, Any]]:
    return [m for m in twin.console_json("/outbox.json") if m["to"].casefold() == address.casefold()]


def welcome_row(twin: TwinProcess) -> dict[str, Any]:
    request = urllib.request.Request(f"{twin.api_url}/admin/reports/sequences", headers=AUTH)
    with OPENER.open(request, timeout=10) as response:
        report = json.loads(response.read())
    [row] = [s for s in report["steps"] if (s["sequence_id"], s["step_id"]) == ("welcome", "welcome")]
    return dict(row)


@pytest.fixture
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinProcess]:
    with running_twin(
        tmp_path_factory.mktemp("inbox"),
        tick_seconds=1.0,
        # A production account's quota (SES's default 14/s), not moto's sandbox 1/s: the inbox is
        # what is tried here, not the pacing.
        extra_env={"TRELLIS_ADMIN_TOKEN": ADMIN_TOKEN, "TRELLIS_MAX_SEND_RATE": "14"},
    ) as running:
        running.wait_for_health()
        # Signed up as the landing page's plain HTML form posts (no rendered_at needed).
        for address in EVERYONE:
            fields = {"email": address, "first_name": "Sam", "consent": "on"}
            status, _ = post(
                f"{running.api_url}/forms/newsletter",
                urllib.parse.urlencode(fields).encode(),
                {"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert status == 303, running.output()
        wait_for("six welcome emails", lambda: len(running.console_json("/outbox.json")) == 6, running, 20)
        yield running


def live_scanner_clicks_every_link_and_opens(twin: TwinProcess) -> None:
    [welcome] = mail_to(twin, SCANNED_LEAD)
    mail = parse_mail_html(welcome["html"])
    signer = TokenSigner(TEST_TOKEN_KEY.encode())
    tracked = [link for link in mail.links if "/t/c/" in link]
    destinations = {signer.verify(CLICK_PURPOSE, link.rpartition("/")[2], datetime.now(UTC))["url"] for link in tracked}

    def clicked() -> bool:
        entries = timeline(twin, SCANNED_LEAD)
        clicks = [e for e in entries if e["type"] == "email_clicked"]
        opened = any(e["type"] == "email_opened" for e in entries)
        return opened and len(clicks) >= len(tracked) and {c.get("url") for c in clicks} >= destinations

    wait_for("click on every link and an open", clicked, twin, 5)


def parse_mail_html(html: str) -> inbox.ParsedMail:
    return parse_mail(f"Content-Type: text/html; charset=utf-8\nMIME-Version: 1.0\n\n{html}")


def live_apple_proxy_opens_and_clicks_nothing(twin: TwinProcess) -> None:
    wait_for("the proxy's open", lambda: "email_opened" in [e["type"] for e in timeline(twin, APPLE_LEAD)], twin, 5)
    assert "email_clicked" not in [e["type"] for e in timeline(twin, APPLE_LEAD)]
    assert not any(e["type"] in ("email_opened", "email_clicked") for e in timeline(twin, PLAIN_LEAD))


def admin_lead(twin: TwinProcess, address: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{twin.api_url}/admin/leads/{lead(twin, address)['lead_id']}", headers=AUTH)
    with OPENER.open(request, timeout=10) as response:
        found: dict[str, Any] = json.loads(response.read())
    return found


def live_scanner_and_apple_move_no_score_and_a_person_then_does(twin: TwinProcess) -> None:
    def all_hits_in() -> bool:  # the scanner's clicks and opens, and Apple's open, judged by the stream
        scanned = [e for e in timeline(twin, SCANNED_LEAD) if e["type"] in ("email_clicked", "email_opened")]
        return len(scanned) >= 4 and "email_opened" in [e["type"] for e in timeline(twin, APPLE_LEAD)]

    wait_for("the machines' hits", all_hits_in, twin, 5)
    time.sleep(1.5)  # the stream pump's next rounds rescore them
    untouched = lead(twin, PLAIN_LEAD)["score"]  # signed up alike, no email touched
    assert lead(twin, SCANNED_LEAD)["score"] == untouched and lead(twin, APPLE_LEAD)["score"] == untouched
    detail = admin_lead(twin, SCANNED_LEAD)
    hits = [e for e in detail["timeline"] if e.get("type") in ("email_clicked", "email_opened")]
    assert hits and all(e["verdict"] == "machine" and e["reasons"] for e in hits), hits
    row = welcome_row(twin)
    assert row["clicked"] == 0 and row["opened"] == 0 and row["machine_clicked"] == 1 and row["machine_opened"] == 2

    # A quarter of an hour later on the twin's clock, the person clicks with a browser: it counts.
    assert post(f"{twin.console_url}/clock/advance?seconds=900")[0] == 200
    [welcome] = mail_to(twin, SCANNED_LEAD)
    [link] = [u for u in parse_mail_html(welcome["html"]).links if "/t/c/" in u and u not in hidden_links(welcome)]
    browser = {
        "User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"
    }
    try:
        OPENER.open(urllib.request.Request(link, headers=browser), timeout=10)
    except urllib.error.HTTPError as e:
        assert e.code == 302  # the redirect, not followed
    wait_for("the person's click scored", lambda: lead(twin, SCANNED_LEAD)["score"] > untouched, twin, 5)
    assert wait_for("the person's click counted", lambda: welcome_row(twin)["clicked"] == 1, twin, 5)


def hidden_links(message: dict[str, Any]) -> list[str]:
    from tests.helpers import trap_href

    return [trap_href(message["html"])]


def live_counts_deliveries_bounces_and_complaints_in_the_sequence_report(twin: TwinProcess) -> None:
    # Delivered: the plain, scanned and Apple leads and the complainer (SES delivered, then the
    # complaint). Sends are counted from the stream, the feedback as SES reports it: both settle.
    expected = {"sent": 6, "delivered": 4, "bounced": 2, "complained": 1}

    def counted() -> bool:
        row = welcome_row(twin)
        return {metric: row[metric] for metric in expected} == expected

    wait_for(f"the welcome step counted as {expected}", counted, twin, 10)


def live_simulator_bounce_and_complaint_suppress_for_good(twin: TwinProcess) -> None:
    expected = {BOUNCE: "email_bounced", SUPPRESSION_LIST: "email_bounced", COMPLAINT: "email_complained"}
    for address, event_type in expected.items():
        wait_for(f"{event_type} on a simulator lead", functools.partial(has, twin, address, event_type), twin, 5)
    assert not any(e["type"] in ("email_bounced", "email_complained") for e in timeline(twin, PLAIN_LEAD))

    # Days later the plain lead has the next step (inside the campaign's send window); nobody
    # who bounced or complained got anything after the welcome.
    status, _ = post(f"{twin.console_url}/clock/advance?seconds={2 * 86400}")
    assert status == 200
    for _ in range(24):
        post(f"{twin.console_url}/tick")
        if len(mail_to(twin, PLAIN_LEAD)) >= 2:
            break
        post(f"{twin.console_url}/clock/advance?seconds={4 * 3600}")
    assert len(mail_to(twin, PLAIN_LEAD)) == 2, twin.output()[-4000:]
    for address in expected:
        assert len(mail_to(twin, address)) == 1, address


def live_inbox_logs_no_address(twin: TwinProcess) -> None:
    output = twin.output()
    lines = [line for line in output.splitlines() if '"logger": "twin.inbox"' in line]
    assert len(lines) >= 5, output[-4000:]  # every email a reader touched, and the simulator's
    assert not any("@" in line for line in lines), lines
    for address in (SCANNED_LEAD, APPLE_LEAD, PLAIN_LEAD):
        assert address not in output


def test_live_inbox(twin: TwinProcess) -> None:
    """One twin, the steps in order (each leaves the twin as the next expects: the clock moves)."""
    live_scanner_clicks_every_link_and_opens(twin)
    live_apple_proxy_opens_and_clicks_nothing(twin)
    live_scanner_and_apple_move_no_score_and_a_person_then_does(twin)
    live_counts_deliveries_bounces_and_complaints_in_the_sequence_report(twin)
    live_simulator_bounce_and_complaint_suppress_for_good(twin)
    live_inbox_logs_no_address(twin)
