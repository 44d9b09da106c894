"""The routes that answer pages, redirects, pixels and CSV: landing pages' forms and events, the
links in emails, the CSV export and the dashboard's documentation. Each handler reads the
request, calls the domain and shapes the answer; ``chalicelib.http`` maps the errors.

The ``*_POST``-style dicts are the operations' documentation, given to ``Api.route`` in app.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from chalice.app import Request, Response

from chalicelib.config import MAX_BODY_BYTES
from chalicelib.errors import (
    Conflict,
    InvalidToken,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StoreError,
    TrellisError,
    UnsupportedMediaType,
    ValidationFailed,
)
from chalicelib.http import CSV, FORM, GIF, HTML, JSON, NO_STORE, Headers, Reply, error_response
from chalicelib.http.requests import cors_for, media_type, preflight_response, read_fields, read_text
from chalicelib.rendering import render_page

if TYPE_CHECKING:
    from chalicelib.capture import CaptureResult, RequestMeta
    from chalicelib.http.bodies import AttendanceResult, Health
    from chalicelib.models import LeadExportParams
    from chalicelib.preferences import Preferences
    from chalicelib.runtime import Runtime

HTML_TYPE = "text/html; charset=utf-8"
LEAD_ID_OR_EMAIL = "the lead's id, or the email address it was captured with"
CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "the request's Origin, when it is one of the form's allowed origins"),
    ("Vary", "always `Origin`"),
)
LOCATION = (("Location", "where the browser goes next"),)


def health() -> Health:
    from chalicelib.http.bodies import Health

    return Health()


def openapi(runtime: Runtime) -> Response:
    # Imported here: building the document is for integrators, not for every cold start.
    from chalicelib.openapi import document

    return Response(document(runtime.settings.public_url), status_code=200, headers={"Content-Type": JSON})


# -- forms and events -------------------------------------------------------------------------


def _request_meta(request: Request) -> RequestMeta:
    from chalicelib.capture import RequestMeta

    identity = (request.context or {}).get("identity") or {}
    return RequestMeta(
        user_agent=request.headers.get("user-agent"),
        source_ip=identity.get("sourceIp"),
        scripted=media_type(request.headers) == JSON,
    )


def _form_cors(runtime: Runtime, form_id: str, request: Request) -> Headers:
    form = runtime.campaign.forms.get(form_id)
    return cors_for(form.allowed_origins if form is not None else (), request)


def _any_form_cors(runtime: Runtime, request: Request) -> Headers:
    return cors_for({o for form in runtime.campaign.forms.values() for o in form.allowed_origins}, request)


def _safe_back_url(request: Request) -> Optional[str]:
    referer = str(request.headers.get("referer") or "")
    if referer and urlsplit(referer).scheme in ("http", "https"):
        return referer
    return None


def form_errors(request: Request, error: TrellisError, params: Mapping[str, str]) -> Response:
    """A form's errors carry its CORS grant; an HTML form post gets a page with a way back."""
    from chalicelib import runtime

    cors = _form_cors(runtime.current(), params["form_id"], request)
    html = media_type(request.headers) == FORM
    return error_response(error, html=html, headers=cors, back_url=_safe_back_url(request))


def event_errors(request: Request, error: TrellisError, params: Mapping[str, str]) -> Response:
    from chalicelib import runtime

    return error_response(error, headers=_any_form_cors(runtime.current(), request))


def submit_form(runtime: Runtime, form_id: str, request: Request) -> Response:
    runtime.capture.form(form_id)  # unknown form: 404 before reading the body
    result = runtime.capture.submit(form_id, read_fields(request), _request_meta(request))
    return _capture_response(result, media_type(request.headers) == FORM, _form_cors(runtime, form_id, request))


def _capture_response(result: CaptureResult, html: bool, headers: Headers) -> Response:
    if html:
        location = result.thank_you_url
        if result.download_url:
            location = _with_query(location, download_url=result.download_url)
        page = render_page("redirect.html", location=location)
        return Response(page, status_code=303, headers={**headers, "Location": location, "Content-Type": HTML_TYPE})
    from chalicelib.http.bodies import FormAccepted

    body = FormAccepted(lead_id=result.lead_id, lead_token=result.lead_token, download_url=result.download_url)
    # One status for a new lead, a known one and a bot: the answer must not tell who is a lead.
    return Response(body.to_json(), status_code=200, headers={**headers, "Content-Type": JSON})


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def preflight(runtime: Runtime, form_id: str, request: Request) -> Response:
    """CORS preflight: grant only the form's allowed origins, only for POST."""
    if form_id not in runtime.campaign.forms:
        raise NotFound("form", form_id)
    return preflight_response(_form_cors(runtime, form_id, request), request)


def record_event(runtime: Runtime, request: Request) -> Response:
    """``POST /events``: a landing page reports what a known lead did. 202, or a clear 4xx."""
    from chalicelib.http.bodies import EventAccepted

    runtime.tracker.record_behaviour(read_fields(request, (JSON,)), _request_meta(request).source_ip)
    headers = {**_any_form_cors(runtime, request), "Content-Type": JSON}
    return Response(EventAccepted().to_json(), status_code=202, headers=headers)


def events_preflight(runtime: Runtime, request: Request) -> Response:
    return preflight_response(_any_form_cors(runtime, request), request)


# -- email links ------------------------------------------------------------------------------

# The smallest transparent GIF: what an open pixel returns.
PIXEL_GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


def _page(name: str, status: int = 200, **context: Any) -> Response:
    return Response(render_page(name, **context), status_code=status, headers={**NO_STORE, "Content-Type": HTML_TYPE})


def click(runtime: Runtime, token: str, request: Request) -> Response:
    """A tracked link, GET or HEAD (link scanners ask both): recorded with what the request shows
    of who made it (chalicelib.engagement), and redirected either way."""
    meta = _request_meta(request)
    destination = runtime.tracker.click(token, request.method, meta.user_agent, meta.source_ip)
    return Response("", status_code=302, headers={**NO_STORE, "Location": destination})


def open_pixel(runtime: Runtime, token: str, request: Request) -> Response:
    meta = _request_meta(request)
    try:
        runtime.tracker.open(token, request.method, meta.user_agent, meta.source_ip)
    except (InvalidToken, NotFound):  # a pixel answers as an image, never an error page
        return Response(b"", status_code=404, headers={**NO_STORE, "Content-Type": GIF})
    body = b"" if request.method == "HEAD" else PIXEL_GIF  # HEAD: the headers a GET would get
    return Response(body, status_code=200, headers={**NO_STORE, "Content-Type": GIF})


def _link_page(runtime: Runtime, action: Callable[[str], object], token: str, page: str) -> Response:
    """The pages email links open: act on the token, then say what happened."""
    action(token)
    return _page(page, campaign_title=runtime.campaign.title or runtime.campaign.name)


def unsubscribe_page(runtime: Runtime, token: str) -> Response:
    """GET: a page with a button. Link scanners follow links; they must not unsubscribe people."""
    return _link_page(runtime, runtime.tracker.check_unsubscribe, token, "unsubscribe.html")


def unsubscribe(runtime: Runtime, token: str) -> Response:
    """POST: RFC 8058 one-click (``List-Unsubscribe=One-Click``) or the page's button."""
    return _link_page(runtime, runtime.tracker.unsubscribe, token, "unsubscribed.html")


def confirm_page(runtime: Runtime, token: str) -> Response:
    """GET: a page with a button (or, once confirmed, the confirmed page). Link scanners fetch
    every link of a message: they must not grant consent for whoever owns the address."""
    confirmed = runtime.tracker.check_confirm(token)
    page = "confirmed.html" if confirmed else "confirm.html"
    return _page(page, campaign_title=runtime.campaign.title or runtime.campaign.name)


def confirm(runtime: Runtime, token: str) -> Response:
    """POST: the page's button. Confirms once; a second post shows the same page."""
    return _link_page(runtime, runtime.tracker.confirm, token, "confirmed.html")


def preferences_page(runtime: Runtime, token: str) -> Response:
    """GET: the lead's choices in a plain HTML form (no JavaScript); changes nothing."""
    return _preferences_answer(runtime, runtime.preferences.show(token))


def save_preferences(runtime: Runtime, token: str, request: Request) -> Response:
    """POST: the page's form (urlencoded): topics, a pause, or leaving everything."""
    fields = read_fields(request, (FORM,))
    return _preferences_answer(runtime, runtime.preferences.save(token, fields), saved=True)


def topic_unsubscribe_page(runtime: Runtime, token: str) -> Response:
    """GET: a page with a button (link scanners change nothing)."""
    return _topic_page(runtime, "topic_unsubscribe.html", runtime.preferences.topic_of(token))


def topic_unsubscribe(runtime: Runtime, token: str) -> Response:
    """POST: the button; that topic off, the rest as they were."""
    return _topic_page(runtime, "topic_unsubscribed.html", runtime.preferences.leave_topic(token))


def _topic_page(runtime: Runtime, page: str, topic_title: str) -> Response:
    return _page(page, topic_title=topic_title, campaign_title=runtime.campaign.title or runtime.campaign.name)


def _preferences_answer(runtime: Runtime, preferences: Preferences, saved: bool = False) -> Response:
    from chalicelib.preferences import PAUSE_DAYS

    return _page(
        "preferences.html",
        campaign_title=runtime.campaign.title or runtime.campaign.name,
        topics=preferences.topics,
        paused_until=preferences.paused_until,
        left=preferences.left,
        pause_days=PAUSE_DAYS,
        saved=saved and not preferences.left,
    )


# -- attendance uploads -------------------------------------------------------------------------

# A webinar platform's export of 10,000 rows, well inside API Gateway's and Lambda's limits.
ATTENDANCE_MAX_BYTES = 1024 * 1024


def record_attendance(runtime: Runtime, event_id: str, request: Request) -> AttendanceResult:
    runtime.events.known(event_id)  # unknown event: 404 before reading the body
    kind, text = read_text(request, (CSV, JSON), ATTENDANCE_MAX_BYTES)
    return runtime.events.record_attendance(event_id, kind, text)


# -- the CSV export -----------------------------------------------------------------------------


def admin_export_csv(runtime: Runtime, query: LeadExportParams, request: Request) -> Response:
    """``GET /admin/export/leads.csv``: the list's filters, up to ``limit`` rows per response.

    A Lambda response is held in memory (6 MB at most), so a big export comes in pages: the
    ``Link: <...>; rel="next"`` header names the next one, as GitHub's API does.
    """
    page = runtime.directory.csv(query)
    headers: Headers = {
        **NO_STORE,
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": 'attachment; filename="leads.csv"',
    }
    if page.next_cursor is not None:
        params = {k: v for k, v in (request.query_params or {}).items() if k != "cursor"}
        next_url = (
            f"{runtime.settings.public_url}/admin/export/leads.csv?{urlencode({**params, 'cursor': page.next_cursor})}"
        )
        headers["Link"] = f'<{next_url}>; rel="next"'
    return Response(page.text, status_code=200, headers=headers)


# -- the operations' documentation --------------------------------------------------------------


def _html(description: str) -> Reply:
    return Reply(description, media=(HTML,))


def _errors_or_pages(description: str) -> Reply:
    return Reply(description, media=(JSON, HTML), error=True)


_LINK_ERRORS = {
    400: _html("the link's token is not valid (tampered, expired, or for another use)"),
    404: _html("the link's lead no longer exists"),
    503: _html("try again in a moment"),
}
FORM_POST: dict[str, Any] = {
    "summary": "Submit a form (or a lead-magnet form)",
    "tag": "landing pages",
    "description": "JSON answers with the lead's id and token; a plain HTML form post "
    "(`application/x-www-form-urlencoded`) is redirected. Rejected input stores nothing.",
    "request": "form_submission",
    "headers": ("Origin",),
    "ok": (
        200,
        Reply(
            "accepted: the same answer for a new lead, a known one and a suspected bot",
            "FormAccepted",
            headers=CORS_HEADERS,
        ),
    ),
    # Conflict: an event registration when the event is full or over (nothing is stored).
    "errors": (UnsupportedMediaType, Conflict),
    "replies": {
        303: Reply(
            "an HTML form post: on to the form's thank-you URL "
            "(with `download_url` in its query for a lead-magnet form)",
            media=(HTML,),
            headers=LOCATION,
        ),
        400: _errors_or_pages("`validation_error`; an HTML post gets an error page"),
        404: _errors_or_pages("no such form; an HTML post gets an error page"),
        413: _errors_or_pages(f"more than {MAX_BODY_BYTES} bytes"),
        503: Reply("nothing was stored; retry", media=(JSON, HTML), headers=(("Retry-After", "seconds"),), error=True),
    },
}
PREFLIGHT: dict[str, Any] = {
    "tag": "landing pages",
    "headers": ("Origin", "Access-Control-Request-Method"),
    "replies": {
        204: Reply(
            "CORS preflight answer; the allow headers only for an allowed origin asking for POST",
            headers=(
                *CORS_HEADERS,
                ("Access-Control-Allow-Methods", "`POST`"),
                ("Access-Control-Allow-Headers", "`Content-Type`"),
                ("Access-Control-Max-Age", "seconds"),
            ),
        )
    },
}
EVENT_POST: dict[str, Any] = {
    "summary": "Report a behavioural event of a known lead",
    "tag": "landing pages",
    "description": "`type` must be one the campaign scores, enrols or exits on (e.g. `page_view`, "
    "`pricing_view`, `demo_request`); events Trellis records itself are refused.",
    "request": "BehaviourEventIn",
    "headers": ("Origin",),
    "ok": (
        202,
        Reply(
            "accepted (what it changes depends on what the token proves; "
            "the same answer whether or not the lead exists)",
            "EventAccepted",
            headers=CORS_HEADERS,
        ),
    ),
    "errors": (ValidationFailed, RateLimited, PayloadTooLarge, UnsupportedMediaType, StoreError),
}
CLICK: dict[str, Any] = {
    "summary": "Tracked click: record it, redirect to the signed destination",
    "tag": "email",
    "description": "Recorded with its verdict's signals (method, user agent): a machine's click (a link "
    "scanner's, a headless browser's, one sooner after the send than anyone reads) is redirected too and "
    "counts for nothing. The destination gets a lead token only for a person's click.",
    "replies": {302: Reply("to the destination", headers=LOCATION), **_LINK_ERRORS},
    "head_of": "a link scanner's HEAD",
}
PIXEL: dict[str, Any] = {
    "summary": "Open pixel: record the open",
    "tag": "email",
    "description": "Recorded with its verdict's signals: Apple's Mail Privacy Protection (user agent "
    "`Mozilla/5.0`, or from 17.0.0.0/8) and machines' fetches count for nothing.",
    "replies": {
        200: Reply("a 1x1 transparent GIF", media=(GIF,)),
        404: Reply("not a valid pixel (empty body)", media=(GIF,)),
        400: Reply(
            "the request's Accept header names neither `image/gif` nor `*/*` (Chalice answers binary "
            "responses only to requests that accept them)",
            "ChaliceError",
        ),
    },
    "errors": (StoreError,),
    "head_of": "a scanner's HEAD of the pixel",
}
CONFIRM_PAGE = "the page, or the confirmed page when already confirmed"


def link_page(summary: str, page: str) -> dict[str, Any]:
    """A page an email link opens with a button: link scanners fetching it change nothing."""
    return {
        "summary": f"{summary} (a confirm button; link scanners change nothing)",
        "tag": "email",
        "replies": {200: _html(page), **_LINK_ERRORS},
    }


UNSUBSCRIBE: dict[str, Any] = {
    "summary": "Unsubscribe: RFC 8058 one-click, or the page's button",
    "tag": "email",
    "request": "one_click",
    "replies": {200: _html("unsubscribed (idempotent)"), **_LINK_ERRORS},
}
PREFERENCES_PAGE: dict[str, Any] = {
    "summary": "Preference centre: topics, a pause, or leave everything (a form; link scanners change nothing)",
    "tag": "email",
    "replies": {200: _html("the page: each topic on or off, the pause"), **_LINK_ERRORS},
}
TOPIC_UNSUBSCRIBE: dict[str, Any] = {
    "summary": "Unsubscribe from one topic: the button of a broadcast footer's page",
    "tag": "email",
    "request": "empty_form",
    "replies": {200: _html("that topic off (idempotent)"), **_LINK_ERRORS},
}
PREFERENCES: dict[str, Any] = {
    "summary": "Save the preference centre's choice",
    "tag": "email",
    "description": "The page's form, urlencoded: `topic_<id>=on` for each topic wanted (a topic left out "
    "is turned off), `pause` empty, `keep` or a number of days (30, 90), `action` `save` or `leave` "
    "(unsubscribe from everything, for good). Saved with a `preferences_changed` event.",
    "request": "preferences_form",
    "replies": {
        200: _html("the page again, saved (or the unsubscribed page)"),
        **_LINK_ERRORS,
        400: _html("the token is not valid, or a field is wrong (named on the page)"),
        413: _html(f"more than {MAX_BODY_BYTES} bytes"),
        415: _html("not an urlencoded form"),
    },
}
CONFIRM: dict[str, Any] = {
    "summary": "Confirm the subscription: the page's button",
    "tag": "email",
    "request": "empty_form",
    "replies": {200: _html("confirmed (idempotent)"), **_LINK_ERRORS},
}
CSV_EXPORT: dict[str, Any] = {
    "summary": "Export the filtered lead list as CSV",
    "description": "The filters of `GET /admin/leads`, in bigger pages; follow the `Link` header.",
    "ok": (
        200,
        Reply(
            "a header row and one row per lead (first-touch attribution)",
            media=(CSV,),
            headers=(
                ("Link", '`<url>; rel="next"` when there are more rows'),
                ("Content-Disposition", '`attachment; filename="leads.csv"`'),
            ),
        ),
    ),
    "errors": (ValidationFailed,),
}
ADMIN_COOKIE = "trellis_admin"
_SIGN_IN_LIMIT = "too many failed sign-ins from this address (or in all): wait `Retry-After`"
DASHBOARD: dict[str, Any] = {
    "summary": "The funnel and step table as a page",
    "description": f"With the `{ADMIN_COOKIE}` cookie (from `POST /admin/login`) or the bearer token; "
    "without either, the login form.",
    "security": "session",
    "replies": {
        200: _html("the dashboard"),
        401: _html("the login form"),
        429: _html(_SIGN_IN_LIMIT),
        503: _html("try again in a moment"),
    },
}
LOGIN: dict[str, Any] = {
    "summary": "Log in to the dashboard with the admin token",
    "request": "login_form",
    "replies": {
        303: Reply(
            f"to the dashboard, with the signed `{ADMIN_COOKIE}` session cookie",
            headers=(*LOCATION, ("Set-Cookie", f"`{ADMIN_COOKIE}=...; HttpOnly; Secure`")),
        ),
        401: _html("the login form again"),
        403: _html("a post from another site (Sec-Fetch-Site, Origin or Referer): nothing done"),
        429: _html(
            "too many failed sign-ins from this address or in all in the window: the token is not even "
            "compared until it ends (`Retry-After`)"
        ),
        415: Reply(
            "not a form post: Chalice's own answer (the route takes only `application/x-www-form-urlencoded`)",
            "ChaliceError",
        ),
        503: _html("try again in a moment"),
    },
}
LOGOUT: dict[str, Any] = {
    "summary": "Log out of the dashboard",
    "replies": {
        303: Reply(
            "to the login form, the session closed in the table and the cookie cleared",
            headers=(*LOCATION, ("Set-Cookie", "expires the cookie")),
        ),
        403: _html("a post from another site: the session stays open"),
    },
}
