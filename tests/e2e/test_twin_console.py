"""The dev console: outbox, run the dispatcher now, fast-forward the shared clock."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from chalicelib.clock import OffsetFileClock
from chalicelib.config import load_campaign
from chalicelib.engagement import Verdict
from chalicelib.entities import Event
from tests.twin_process import OPENER
from twin.console import _FIELDS, _LANDING, Console, lead_timeline

RAW = (
    "From: Trellis Demo <hello@demo.trellis.example>\r\nTo: ann@example.com\r\nSubject: Hello <Ann>\r\n"
    "X-Trellis-Reference: abc/welcome.welcome\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHi Ann\r\n'
    '--b\r\nContent-Type: text/html\r\n\r\n<p>Hi <a href="https://x.example/">Ann</a></p>\r\n--b--\r\n'
)


GUIDE = "https://trellis.example/guides/lead-nurture-basics"
MACHINE = {"verdict": "machine", "reasons": ["method:HEAD", "agent:none"]}  # a scanner's HEAD, as /leads.json has it

# Where the twin's presigned lead-magnet links point: moto's endpoint and the assets bucket.
ASSETS_URL = "http://127.0.0.1:5000/trellis-test-assets/"


@pytest.fixture
def console(tmp_path) -> Any:
    ticks: list[int] = []
    outbox = [RAW, RAW.replace("Hello", "Second")]
    timeline = [
        {"at": "2026-11-23T09:45:00Z", "type": "email_clicked", "url": GUIDE, "verdict": "human", "reasons": []},
        {"at": "2026-11-23T09:30:01Z", "type": "email_clicked", "url": GUIDE, **MACHINE},
    ]
    leads = [{"lead_id": "abc", "email": "ann@example.com", "stage": "mql", "score": 42, "timeline": timeline}]
    running = Console(
        0,
        lambda: {"sent": len(ticks.append(1) or ticks)},
        OffsetFileClock(str(tmp_path / "c")),
        lambda: outbox,
        leads=lambda: leads,
        assets_url=ASSETS_URL,
    )
    running.start()
    yield running, ticks
    running.stop()


def call(console: Console, method: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(console.url + path, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read().decode()
            return response.status, json.loads(body) if "json" in response.headers["Content-Type"] else body
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def test_outbox_json_lists_emails_newest_first(console):
    running, _ = console
    status, emails = call(running, "GET", "/outbox.json")

    assert status == 200
    assert [e["subject"] for e in emails] == ["Second <Ann>", "Hello <Ann>"]
    assert emails[0]["to"] == "ann@example.com"
    assert emails[0]["reference"] == "abc/welcome.welcome"
    assert "Hi Ann" in emails[0]["text"] and 'href="https://x.example/"' in emails[0]["html"]


def test_outbox_page_escapes_what_it_shows(console):
    running, _ = console
    status, page = call(running, "GET", "/outbox")

    assert status == 200
    assert "Hello &lt;Ann&gt;" in page and "<Ann>" not in page
    assert "srcdoc=" in page


def test_tick_runs_the_dispatcher(console):
    running, ticks = console
    assert call(running, "POST", "/tick") == (200, {"sent": 1})
    assert ticks == [1]


def test_clock_advance_moves_the_shared_clock(console, tmp_path):
    running, _ = console
    before = datetime.now(UTC)

    status, body = call(running, "POST", "/clock/advance?seconds=259200")

    assert status == 200 and body["offset_seconds"] == 259200
    assert OffsetFileClock(str(tmp_path / "c")).now() >= before + timedelta(days=3)


@pytest.mark.parametrize(
    "query", ["", "?seconds=", "?seconds=-5", "?seconds=0", "?seconds=abc", "?seconds=99999999999"]
)
def test_clock_advance_rejects_bad_seconds(console, tmp_path, query):
    running, _ = console
    status, body = call(running, "POST", f"/clock/advance{query}")

    assert status == 400
    assert "seconds" in body["fields"]
    assert OffsetFileClock(str(tmp_path / "c")).offset_seconds() == 0


def test_unknown_paths_are_404(console):
    running, _ = console
    assert call(running, "GET", "/nope")[0] == 404
    assert call(running, "POST", "/nope")[0] == 404


def test_landing_page_is_a_plain_form_that_posts_to_the_api(console):
    running, _ = console
    status, page = call(running, "GET", "/?utm_source=newsletter-test")

    assert status == 200
    assert '<form id="signup" method="post" action="http://127.0.0.1:8000/forms/newsletter"' in page
    assert 'name="email"' in page and 'name="consent"' in page
    assert 'class="hp"' in page and 'name="website"' in page  # the honeypot, hidden by CSS
    assert 'name="utm_source" value="newsletter-test"' in page
    assert "rendered_at" in page and "localStorage" in page  # the enhancement script


def test_ebook_page_and_thank_you_page(console):
    running, _ = console
    status, page = call(running, "GET", "/ebook.html")
    assert status == 200 and "/forms/ebook" in page and 'name="company"' in page

    issued = f"{ASSETS_URL}x.pdf?X-Amz-Signature=abc"
    status, thanks = call(running, "GET", "/ebook-thanks.html?" + urlencode({"download_url": issued}))
    assert status == 200 and f'href="{issued}"' in thanks

    status, unsafe = call(running, "GET", "/ebook-thanks.html?download_url=javascript%3Aalert(1)")
    assert status == 200 and "javascript:" not in unsafe


def test_digest_page_is_the_demo_campaigns_double_opt_in_form(console):
    running, _ = console
    form = load_campaign("demo").forms["digest"]

    status, page = call(running, "GET", "/digest.html")
    thanks_status, thanks = call(running, "GET", urlsplit(str(form.thank_you_url)).path)

    assert status == 200
    assert '<form id="signup" method="post" action="http://127.0.0.1:8000/forms/digest"' in page
    assert 'name="email"' in page and 'name="first_name"' in page and 'name="consent"' in page
    assert form.double_opt_in and form.sequence is not None
    assert thanks_status == 200 and "confirm" in thanks  # the plain post lands on a page that says what next


def test_every_landing_page_posts_to_a_demo_form_with_its_fields():
    forms = load_campaign("demo").forms
    for path, (form_id, *_) in _LANDING.items():
        assert form_id in forms, path
        required = {name for name, need in forms[form_id].fields.items() if need == "required"}
        offered = {field["name"] for field in _FIELDS[form_id]}
        assert required <= offered, path
        assert {f["name"] for f in _FIELDS[form_id] if f["required"]} <= set(forms[form_id].fields), path


def test_outbox_shows_each_leads_score_and_stage(console):
    running, _ = console
    _, emails = call(running, "GET", "/outbox.json")
    assert {(e["lead_stage"], e["lead_score"]) for e in emails} == {("mql", 42)}
    _, page = call(running, "GET", "/outbox")
    assert "lead: mql, score 42" in page


def test_leads_view(console):
    running, _ = console
    status, leads = call(running, "GET", "/leads.json")
    assert status == 200 and leads[0]["email"] == "ann@example.com"
    status, page = call(running, "GET", "/leads")
    assert status == 200 and "ann@example.com" in page and "<td>mql</td>" in page
    assert '<span class="verdict machine">machine: method:HEAD, agent:none</span>' in page
    assert '<span class="verdict human">human</span>' in page


def test_lead_timeline_gives_each_open_and_click_its_verdict_newest_first():
    events = [
        Event("abc", "e1", "form_submitted", "2026-11-23T09:30:00.000000Z", {"form_id": "newsletter"}),
        Event("abc", "e2", "email_clicked", "2026-11-23T09:31:00.000000Z", {"message_id": "w.w", "url": GUIDE}),
        Event("abc", "e3", "email_opened", "2026-11-23T09:32:00.000000Z", {"message_id": "w.w"}),
        Event("abc", "e4", "email_clicked", "2026-11-23T09:33:00.000000Z", {"message_id": "w.w", "trap": True}),
    ]
    verdicts = {"e2": Verdict(False, ("method:HEAD",)), "e3": Verdict(True), "e4": Verdict(False, ("trap",))}

    assert lead_timeline(events, verdicts) == [
        {
            "at": "2026-11-23T09:33:00.000000Z",
            "type": "email_clicked",
            "trap": True,
            **Verdict(False, ("trap",)).to_json(),
        },
        {"at": "2026-11-23T09:32:00.000000Z", "type": "email_opened", "verdict": "human", "reasons": []},
        {
            "at": "2026-11-23T09:31:00.000000Z",
            "type": "email_clicked",
            "url": GUIDE,
            "verdict": "machine",
            "reasons": ["method:HEAD"],
        },
        {"at": "2026-11-23T09:30:00.000000Z", "type": "form_submitted"},
    ]


def test_outbox_buttons_post_and_come_back_to_the_outbox(console, tmp_path):
    running, ticks = console
    _, page = call(running, "GET", "/outbox")
    assert '<form method="post" action="/clock/advance?seconds=86400">' in page
    assert '<form method="post" action="/tick">' in page
    assert "Twin clock:" in page and "days ahead" not in page

    answers = []
    for path in ("/clock/advance?seconds=86400", "/tick"):
        request = urllib.request.Request(running.url + path, data=b"", method="POST", headers={"Accept": "text/html"})
        with pytest.raises(urllib.error.HTTPError) as redirect:
            OPENER.open(request, timeout=5)
        answers.append((redirect.value.code, redirect.value.headers["Location"]))

    assert answers == [(303, "/outbox"), (303, "/outbox")]
    assert ticks == [1]
    assert OffsetFileClock(str(tmp_path / "c")).offset_seconds() == 86400
    _, page = call(running, "GET", "/outbox")
    assert "(1.0 days ahead of real time)" in page


def test_the_outbox_sends_a_broadcast_to_a_segment_in_two_clicks(tmp_path):
    ticks: list[int] = []
    scheduled: list[str] = []

    def broadcast(segment: str) -> str:
        scheduled.append(segment)
        return "20261123T093000-abcdef"

    running = Console(
        0,
        lambda: {"sent": len(ticks.append(1) or ticks)},
        OffsetFileClock(str(tmp_path / "c")),
        lambda: [],
        broadcast=broadcast,
        segments=("newsletter-readers", "engaged-product-leads"),
    )
    running.start()
    try:
        _, page = call(running, "GET", "/outbox")
        assert '<option value="engaged-product-leads">' in page and 'id="send-broadcast"' in page
        form = {"Accept": "text/html", "Content-Type": "application/x-www-form-urlencoded"}
        request = urllib.request.Request(
            running.url + "/broadcast", data=b"segment=newsletter-readers", method="POST", headers=form
        )
        with pytest.raises(urllib.error.HTTPError) as redirect:
            OPENER.open(request, timeout=5)
        assert (redirect.value.code, redirect.value.headers["Location"]) == (
            303,
            "/outbox?broadcast=20261123T093000-abcdef",
        )
        assert scheduled == ["newsletter-readers"] and ticks == [1, 1]
        _, shown = call(running, "GET", "/outbox?broadcast=20261123T093000-abcdef")
        assert "Broadcast 20261123T093000-abcdef scheduled" in shown

        bad = urllib.request.Request(running.url + "/broadcast", data=b"segment=everyone", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            OPENER.open(bad, timeout=5)
        assert refused.value.code == 400 and scheduled == ["newsletter-readers"]
    finally:
        running.stop()
