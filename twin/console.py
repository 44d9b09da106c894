"""The twin's dev console (127.0.0.1:8001): the outbox, run the dispatcher now, fast-forward time.

    GET  /, /digest.html, /ebook.html the example landing pages (plain HTML forms, enhanced by a
                                      script); /digest.html's form is double opt-in
    GET  /pricing.html, /thanks.html, /digest-thanks.html, /ebook-thanks.html
                                      pages that report page views (the thank-you pages link a
                                      ``download_url`` only when it is a presigned link into the
                                      twin's assets bucket)
    GET  /leads, /leads.json          the newest leads with score, stage and timeline, each open and
                                      click with its verdict (human or machine) and the reasons
    GET  /outbox.json                 every email SES accepted in the twin, newest first
    GET  /outbox                      the same as a page, each email's HTML with working links,
                                      and buttons for the two POSTs below
    POST /tick                        run the scheduled dispatcher now
    POST /clock/advance?seconds=N     move the shared clock forward (0 < N <= 1 year)

The POSTs answer JSON, or a redirect back to the outbox when a browser's form sent them.

Never deployed: it exists only inside ``make demo``.
"""

from __future__ import annotations

import email
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape

from chalicelib.clock import OffsetFileClock
from chalicelib.engagement import TRAP_KEY, Verdict
from chalicelib.entities import Event
from chalicelib.tracking import EMAIL_CLICKED
from twin.gate import ClockGate

MAX_ADVANCE_SECONDS = 366 * 24 * 3600
PAGES_DIR = Path(__file__).resolve().parent / "pages"

_PAGES = Environment(loader=FileSystemLoader(str(PAGES_DIR)), autoescape=select_autoescape(default=True))

_FIELDS = {
    "newsletter": [
        {"name": "email", "label": "Email", "type": "email", "required": True},
        {"name": "first_name", "label": "First name", "type": "text", "required": False},
    ],
    "digest": [
        {"name": "email", "label": "Email", "type": "email", "required": True},
        {"name": "first_name", "label": "First name", "type": "text", "required": False},
    ],
    "ebook": [
        {"name": "email", "label": "Work email", "type": "email", "required": True},
        {"name": "first_name", "label": "First name", "type": "text", "required": True},
        {"name": "company", "label": "Company", "type": "text", "required": False},
        {"name": "job_title", "label": "Job title", "type": "text", "required": False},
    ],
}
_LANDING = {
    "/": (
        "newsletter",
        "The Trellis newsletter",
        "One useful email a week about turning signups into customers.",
        "Subscribe",
    ),
    "/digest.html": (
        "digest",
        "The weekly Trellis digest",
        "The week's best on lead nurture in one email. We ask you to confirm your address first.",
        "Subscribe",
    ),
    "/ebook.html": (
        "ebook",
        "Free ebook: The Lead Nurture Playbook",
        "48 pages on nurture that sells.",
        "Send me the ebook",
    ),
}
_PLAIN = {
    "/pricing.html": ("Pricing", "Cents per thousand leads. (Visiting this page counts as a pricing view.)"),
    "/thanks.html": ("Thank you!", "You are subscribed. The welcome email is on its way: see the outbox."),
    "/ebook-thanks.html": ("Your ebook is on its way", "We also emailed you the link."),
    "/digest-thanks.html": (
        "Please confirm your address",
        "We emailed you a link (see the outbox): open it and press the button to start the digest.",
    ),
}


def parse_outbox(raw_messages: list[str]) -> list[dict[str, Any]]:
    """Raw MIME as SES received it, newest first, parsed for people and for tests."""
    emails = []
    for raw in reversed(raw_messages):
        message = email.message_from_string(raw, policy=policy.default)
        html = message.get_body(("html",))
        text = message.get_body(("plain",))
        emails.append(
            {
                "to": str(message["To"]),
                "from": str(message["From"]),
                "subject": str(message["Subject"]),
                "date": str(message["Date"]),
                "reference": str(message["X-Trellis-Reference"] or ""),
                # What a mail client's one-click unsubscribe POSTs to (RFC 8058).
                "list_unsubscribe": str(message["List-Unsubscribe"] or ""),
                "html": html.get_content() if html is not None else "",
                "text": text.get_content() if text is not None else "",
            }
        )
    return emails


def lead_timeline(events: Iterable[Event], verdicts: Mapping[str, Verdict]) -> list[dict[str, Any]]:
    """A lead's events as /leads shows them, newest first: each click with its link (a scanner's
    clicks are every link at once), each open and click with its verdict and the reasons
    (``chalicelib.engagement``), so a scanned lead's zero score explains itself."""
    entries = []
    for event in sorted(events, key=lambda e: e.at, reverse=True):
        entry: dict[str, Any] = {"at": event.at, "type": event.type}
        url = event.data.get("url")
        if event.type == EMAIL_CLICKED and url:
            entry["url"] = url
        if event.data.get(TRAP_KEY):
            entry["trap"] = True  # the hidden link itself (it leads where the first link does)
        verdict = verdicts.get(event.event_id)
        if verdict is not None:
            entry.update(verdict.to_json())
        entries.append(entry)
    return entries


class Console:
    name = "dev console"

    def __init__(
        self,
        port: int,
        tick: Callable[[], dict[str, Any]],
        clock: OffsetFileClock,
        raw_outbox: Callable[[], list[str]],
        api_url: str = "http://127.0.0.1:8000",
        consent_texts: Optional[dict[str, str]] = None,
        leads: Optional[Callable[[], list[dict[str, Any]]]] = None,
        host: str = "127.0.0.1",
        gate: Optional[ClockGate] = None,
        assets_url: Optional[str] = None,
        broadcast: Optional[Callable[[str], str]] = None,
        segments: tuple[str, ...] = (),
    ) -> None:
        # Schedules the demo broadcast to a segment now (returns its id): the outbox's form.
        self._broadcast = broadcast
        self._segments = segments if broadcast is not None else ()
        self._gate = gate or ClockGate()
        # Where the API's presigned lead-magnet links point (moto's endpoint + the assets bucket):
        # the only download a thank-you page may offer. Without it the pages offer none.
        self._assets_url = assets_url
        self._leads = leads or (lambda: [])
        self._api_url = api_url
        self._consent_texts = consent_texts or {}
        console = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                console._get(self)

            def do_POST(self) -> None:
                console._post(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._tick = tick
        self._clock = clock
        self._raw_outbox = raw_outbox
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="console", daemon=True)
        self.url = f"http://{host}:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def failure(self) -> Optional[str]:
        return None if self._thread.is_alive() else "stopped"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- routes -------------------------------------------------------------------------------

    def _get(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        path = parts.path
        if path in _LANDING:
            form_id, title, pitch, button = _LANDING[path]
            page = _PAGES.get_template("landing.html").render(
                title=title,
                pitch=pitch,
                button=button,
                form_id=form_id,
                fields=_FIELDS[form_id],
                api_url=self._api_url,
                consent_text=self._consent_texts.get(form_id, "Yes, email me."),
                utm_source=parse_qs(parts.query).get("utm_source", [""])[0],
            )
            _send(request, 200, "text/html; charset=utf-8", page)
        elif path in _PLAIN:
            title, text = _PLAIN[path]
            download_url = parse_qs(parts.query).get("download_url", [""])[0]
            if not issued_download(download_url, self._assets_url):
                download_url = ""
            page = _PAGES.get_template("page.html").render(
                title=title, text=text, api_url=self._api_url, download_url=download_url
            )
            _send(request, 200, "text/html; charset=utf-8", page)
        elif path == "/outbox.json":
            _send(request, 200, "application/json", json.dumps(self._outbox()))
        elif path == "/outbox":
            notice = parse_qs(parts.query).get("broadcast", [""])[0]
            page = _PAGES.get_template("outbox.html").render(
                emails=self._outbox(),
                now=self._clock.now(),
                offset=self._clock.offset_seconds(),
                segments=self._segments,
                notice=f"Broadcast {notice} scheduled and the dispatcher run." if notice else "",
            )
            _send(request, 200, "text/html; charset=utf-8", page)
        elif path == "/leads.json":
            _send(request, 200, "application/json", json.dumps(self._leads(), default=str))
        elif path == "/leads":
            page = _PAGES.get_template("leads.html").render(leads=self._leads())
            _send(request, 200, "text/html; charset=utf-8", page)
        else:
            _send(request, 404, "application/json", json.dumps({"error": "not_found"}))

    def _outbox(self) -> list[dict[str, Any]]:
        """The emails, each with its lead's current score and stage beside it."""
        emails = parse_outbox(self._raw_outbox())
        by_id = {lead["lead_id"]: lead for lead in self._leads()}
        for message in emails:
            lead = by_id.get(message["reference"].partition("/")[0], {})
            message["lead_stage"], message["lead_score"] = lead.get("stage"), lead.get("score")
        return emails

    def _post(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        if parts.path == "/broadcast" and self._broadcast is not None:
            length = min(int(request.headers.get("Content-Length") or 0), 4096)
            segment = parse_qs(request.rfile.read(length).decode("utf-8", "replace")).get("segment", [""])[0]
            if segment not in self._segments:
                refusal = {"error": "validation_error", "fields": {"segment": "not a segment of the campaign"}}
                _send(request, 400, "application/json", json.dumps(refusal))
                return
            broadcast_id = self._broadcast(segment)
            self._tick()  # enrols the segment
            self._tick()  # and sends (recipients in the shards read before the broadcast's)
            if _from_page(request):
                _see_other(request, f"/outbox?broadcast={broadcast_id}")
                return
            _send(request, 200, "application/json", json.dumps({"broadcast_id": broadcast_id}))
        elif parts.path == "/tick":
            report = self._tick()
            if _from_page(request):
                _see_other(request, "/outbox")
                return
            _send(request, 200, "application/json", json.dumps(report, default=str))
        elif parts.path == "/clock/advance":
            values = parse_qs(parts.query).get("seconds", [])
            try:
                seconds = float(values[0]) if len(values) == 1 else float("nan")
            except ValueError:
                seconds = float("nan")
            if not 0 < seconds <= MAX_ADVANCE_SECONDS:
                reason = f"seconds must be a number above 0 and at most {MAX_ADVANCE_SECONDS}"
                refusal = {"error": "validation_error", "fields": {"seconds": reason}}
                _send(request, 400, "application/json", json.dumps(refusal))
                return
            with self._gate.advancing():
                offset = self._clock.advance(seconds)
            if _from_page(request):
                _see_other(request, "/outbox")
                return
            body = {"offset_seconds": offset, "now": self._clock.now().isoformat()}
            _send(request, 200, "application/json", json.dumps(body))
        else:
            _send(request, 404, "application/json", json.dumps({"error": "not_found"}))


def issued_download(url: str, assets_url: Optional[str]) -> bool:
    """Whether ``url`` is a link Trellis could have handed out: a presigned GET of an object in
    the assets bucket at ``assets_url`` (``http://host:port/<bucket>/``, path-style as
    ``chalicelib.aws`` presigns). Anything else (another host, ``javascript:``, a path that
    climbs out of the bucket, an unsigned link) is someone else's URL in our page."""
    if not assets_url:
        return False
    try:
        link, assets = urlsplit(url), urlsplit(assets_url)
    except ValueError:
        return False
    bucket_path = assets.path.rstrip("/") + "/"
    segments = unquote(link.path).split("/")
    return (
        link.scheme in ("http", "https")
        and (link.scheme, link.netloc) == (assets.scheme, assets.netloc)
        and link.path.startswith(bucket_path)
        and len(link.path) > len(bucket_path)
        and not {".", ".."} & set(segments)
        and "\\" not in link.path
        and "X-Amz-Signature" in parse_qs(link.query)
        and not link.fragment
    )


def _from_page(request: BaseHTTPRequestHandler) -> bool:
    """The outbox page's buttons (a browser asking for HTML) get the page back, not JSON."""
    return "text/html" in request.headers.get("Accept", "")


def _see_other(request: BaseHTTPRequestHandler, location: str) -> None:
    request.send_response(303)
    request.send_header("Location", location)
    request.send_header("Content-Length", "0")
    request.end_headers()


def _send(request: BaseHTTPRequestHandler, status: int, content_type: str, body: str) -> None:
    data = body.encode("utf-8")
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(data)))
    request.send_header("Cache-Control", "no-store")
    request.end_headers()
    request.wfile.write(data)
