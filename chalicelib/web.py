"""The HTTP edge: parse Chalice requests, call the domain, shape responses.

Every domain error becomes an HTTP status here and nowhere else (``error_response``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Optional, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from chalice.app import AuthRequest, AuthResponse, Request, Response
from pydantic import ValidationError

from chalicelib.capture import CaptureResult, RequestMeta, field_errors
from chalicelib.config import MAX_BODY_BYTES
from chalicelib.credentials import CredentialsUnavailable
from chalicelib.engagement import HUMAN, MACHINE
from chalicelib.entities import Lead, iso
from chalicelib.errors import (
    ConfigError,
    InvalidToken,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StoreError,
    TrellisError,
    UnsupportedMediaType,
    ValidationFailed,
)
from chalicelib.models import EngagementRules, LeadExportParams, LeadListParams, SpendUpdate
from chalicelib.rendering import render_page
from chalicelib.store import LeadQuery, LeadRecord
from chalicelib.tracking import EMAIL_CLICKED, EMAIL_OPENED, engagement_verdicts

if TYPE_CHECKING:  # annotations only: the runtime's services are imported where first built
    from chalicelib.runtime import Runtime

logger = logging.getLogger(__name__)

Headers = dict[str, str | list[str]]
_Params = TypeVar("_Params", bound=LeadListParams)

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
ACCEPTED_TYPES = (JSON, FORM)
_MAX_FORM_FIELDS = 100


@dataclass(frozen=True)
class _Status:
    code: int
    error: str
    heading: str
    headers: tuple[tuple[str, str], ...] = ()


_STATUS: list[tuple[type[TrellisError], _Status]] = [
    (ValidationFailed, _Status(400, "validation_error", "Please check the form")),
    (InvalidToken, _Status(400, "invalid_token", "This link is not valid")),
    (NotFound, _Status(404, "not_found", "Not found")),
    (PayloadTooLarge, _Status(413, "payload_too_large", "Too much data")),
    (UnsupportedMediaType, _Status(415, "unsupported_media_type", "Unsupported form encoding")),
    (RateLimited, _Status(429, "rate_limited", "Too many requests")),
    (StoreError, _Status(503, "unavailable", "Please try again in a moment")),
    (CredentialsUnavailable, _Status(503, "unavailable", "Please try again in a moment")),
    (ConfigError, _Status(500, "misconfigured", "Something is wrong on our side")),
]


def _status_for(error: TrellisError) -> _Status:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return _Status(500, "internal_error", "Something is wrong on our side")


def error_response(
    error: TrellisError, *, html: bool = False, headers: Optional[Headers] = None, back_url: Optional[str] = None
) -> Response:
    status = _status_for(error)
    headers = {**dict(status.headers), **(headers or {})}
    body: dict[str, Any] = {"error": status.error}
    if isinstance(error, ValidationFailed):
        body["fields"] = error.fields
    elif isinstance(error, UnsupportedMediaType):
        body["message"] = str(error)
        body["accepted"] = list(error.accepted)
    elif isinstance(error, PayloadTooLarge):
        body["message"] = str(error)
        body["limit_bytes"] = error.limit
    elif isinstance(error, NotFound):
        body["message"] = str(error)
    elif isinstance(error, RateLimited):
        body["message"] = str(error)
        body["retry_after"] = error.retry_after
        headers["Retry-After"] = str(error.retry_after)
    if status.code >= 500:
        logger.error("request failed: %s", type(error).__name__, exc_info=error)
        headers.setdefault("Retry-After", "30")
    if html:
        page = render_page(
            "error.html",
            heading=status.heading,
            message=_html_message(error),
            fields=body.get("fields", {}),
            back_url=back_url,
        )
        return Response(page, status_code=status.code, headers={**headers, "Content-Type": "text/html; charset=utf-8"})
    return Response(body, status_code=status.code, headers={**headers, "Content-Type": JSON})


def _html_message(error: TrellisError) -> str:
    if isinstance(error, ValidationFailed):
        return "Some of what you entered could not be accepted:"
    if isinstance(error, NotFound):
        return "This form does not exist (any more). Please check the page you came from."
    if isinstance(error, PayloadTooLarge):
        return "The form sent more data than we accept."
    if isinstance(error, StoreError):
        return "We could not save your details just now; nothing was stored. Please try again."
    return "Something went wrong; nothing was stored."


# -- forms ------------------------------------------------------------------------------------


def _media_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def _read_fields(request: Request) -> dict[str, Any]:
    media_type = _media_type(request)
    if media_type not in ACCEPTED_TYPES:
        raise UnsupportedMediaType(media_type or "(none)", ACCEPTED_TYPES)
    raw = request.raw_body or b""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(MAX_BODY_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValidationFailed({"body": "must be UTF-8 encoded"}) from e
    if media_type == FORM:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS)
        except ValueError as e:
            raise ValidationFailed({"body": f"more than {_MAX_FORM_FIELDS} fields"}) from e
        return dict(pairs)  # a repeated name keeps its last value, as most form handlers do
    try:
        data = json.loads(text) if text.strip() else None
    except RecursionError as e:  # nesting deeper than the parser goes, well inside the size limit
        raise ValidationFailed({"body": "JSON nested too deeply"}) from e
    except ValueError as e:
        raise ValidationFailed({"body": f"not valid JSON: {e}"}) from e
    if not isinstance(data, dict):
        raise ValidationFailed({"body": "must be a JSON object of field names to values"})
    return data


def _all_origins_cors(runtime: Runtime, request: Request) -> Headers:
    allowed = {o for form in runtime.campaign.forms.values() for o in form.allowed_origins}
    return _cors_for(allowed, request)


def _cors_for(allowed_origins: Iterable[str], request: Request) -> Headers:
    """Grant the request's origin only when it is one of ``allowed_origins``."""
    origin = (request.headers.get("origin") or "").lower()
    if origin and origin in allowed_origins:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {"Vary": "Origin"}


def _preflight_response(headers: Headers, request: Request) -> Response:
    """A CORS preflight answer: POST with a Content-Type, for an origin already granted."""
    requested = (request.headers.get("access-control-request-method") or "").upper()
    if "Access-Control-Allow-Origin" in headers and requested == "POST":
        headers.update(
            {
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "600",
            }
        )
    return Response("", status_code=204, headers=headers)


def record_event(runtime: Runtime, request: Request) -> Response:
    """``POST /events``: a landing page reports what a known lead did. 202, or a clear 4xx."""
    cors = _all_origins_cors(runtime, request)
    try:
        if _media_type(request) != JSON:
            raise UnsupportedMediaType(_media_type(request) or "(none)", (JSON,))
        runtime.tracker.record_behaviour(_read_fields(request), _request_meta(request).source_ip)
    except TrellisError as e:
        return error_response(e, headers=cors)
    return Response({"accepted": True}, status_code=202, headers={**cors, "Content-Type": JSON})


def events_preflight(runtime: Runtime, request: Request) -> Response:
    return _preflight_response(_all_origins_cors(runtime, request), request)


def _request_meta(request: Request) -> RequestMeta:
    identity = (request.context or {}).get("identity") or {}
    return RequestMeta(
        user_agent=request.headers.get("user-agent"),
        source_ip=identity.get("sourceIp"),
        scripted=_media_type(request) == JSON,
    )


def _cors_headers(runtime: Runtime, form_id: str, request: Request) -> Headers:
    form = runtime.campaign.forms.get(form_id)
    return _cors_for(form.allowed_origins if form is not None else (), request)


def _safe_back_url(request: Request) -> Optional[str]:
    referer = str(request.headers.get("referer") or "")
    if referer and urlsplit(referer).scheme in ("http", "https"):
        return referer
    return None


def submit_form(runtime: Runtime, form_id: str, request: Request) -> Response:
    html = _media_type(request) == FORM
    cors = _cors_headers(runtime, form_id, request)
    try:
        runtime.capture.form(form_id)  # unknown form: 404 before reading the body
        fields = _read_fields(request)
        result = runtime.capture.submit(form_id, fields, _request_meta(request))
    except TrellisError as e:
        return error_response(e, html=html, headers=cors, back_url=_safe_back_url(request))
    return _capture_response(result, html, cors)


def _capture_response(result: CaptureResult, html: bool, headers: Headers) -> Response:
    if html:
        location = result.thank_you_url
        if result.download_url:
            location = _with_query(location, download_url=result.download_url)
        page = render_page("redirect.html", location=location)
        return Response(
            page, status_code=303, headers={**headers, "Location": location, "Content-Type": "text/html; charset=utf-8"}
        )
    body = {"lead_id": result.lead_id, "lead_token": result.lead_token}
    if result.download_url:
        body["download_url"] = result.download_url
    # One status for a new lead, a known one and a bot: the answer must not tell who is a lead.
    return Response(body, status_code=200, headers={**headers, "Content-Type": JSON})


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def preflight(runtime: Runtime, form_id: str, request: Request) -> Response:
    """CORS preflight: grant only the form's allowed origins, only for POST."""
    if form_id not in runtime.campaign.forms:
        return error_response(NotFound("form", form_id))
    return _preflight_response(_cors_headers(runtime, form_id, request), request)


# -- email links ------------------------------------------------------------------------------

# The smallest transparent GIF: what an open pixel returns.
PIXEL_GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
_NO_STORE = {"Cache-Control": "no-store, max-age=0"}


def _page(name: str, status: int = 200, **context: Any) -> Response:
    return Response(
        render_page(name, **context),
        status_code=status,
        headers={**_NO_STORE, "Content-Type": "text/html; charset=utf-8"},
    )


def click(runtime: Runtime, token: str, request: Request) -> Response:
    """A tracked link, GET or HEAD (link scanners ask both): recorded with what the request shows
    of who made it (chalicelib.engagement), and redirected either way."""
    meta = _request_meta(request)
    try:
        destination = runtime.tracker.click(token, request.method, meta.user_agent, meta.source_ip)
    except TrellisError as e:
        return error_response(e, html=True, headers=dict(_NO_STORE))
    return Response("", status_code=302, headers={**_NO_STORE, "Location": destination})


def open_pixel(runtime: Runtime, token: str, request: Request) -> Response:
    meta = _request_meta(request)
    try:
        runtime.tracker.open(token, request.method, meta.user_agent, meta.source_ip)
    except (InvalidToken, NotFound):
        return Response(b"", status_code=404, headers={**_NO_STORE, "Content-Type": "image/gif"})
    body = b"" if request.method == "HEAD" else PIXEL_GIF  # HEAD: the headers a GET would get
    return Response(body, status_code=200, headers={**_NO_STORE, "Content-Type": "image/gif"})


def _link_page(runtime: Runtime, action: Callable[[str], object], token: str, page: str) -> Response:
    """The pages email links open: act on the token, then say what happened (or why not)."""
    try:
        action(token)
    except TrellisError as e:
        return error_response(e, html=True, headers=dict(_NO_STORE))
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
    try:
        confirmed = runtime.tracker.check_confirm(token)
    except TrellisError as e:
        return error_response(e, html=True, headers=dict(_NO_STORE))
    page = "confirmed.html" if confirmed else "confirm.html"
    return _page(page, campaign_title=runtime.campaign.title or runtime.campaign.name)


def confirm(runtime: Runtime, token: str) -> Response:
    """POST: the page's button. Confirms once; a second post shows the same page."""
    return _link_page(runtime, runtime.tracker.confirm, token, "confirmed.html")


# -- admin ------------------------------------------------------------------------------------


class Unauthorized(TrellisError):
    """Missing or wrong admin credentials. Says nothing more."""


_STATUS.insert(0, (Unauthorized, _Status(401, "unauthorized", "Unauthorized", (("WWW-Authenticate", "Bearer"),))))


# The authorizer's verdicts, as principal ids.
ADMIN = "admin"
ANONYMOUS = "anonymous"
UNKNOWN = "unknown"  # the token could not be read: 503, never a guess either way


def authorize_admin(runtime: Runtime, auth: AuthRequest) -> AuthResponse:
    """The authorizer of every ``/admin/`` route: ``Authorization: Bearer <admin token>``,
    compared in constant time.

    It lets every caller through with a verdict instead of denying the wrong ones: API Gateway
    answers a denial with 403 (and chalice local a raised error with 500), while Trellis answers
    wrong credentials as API Gateway answers missing ones, 401, the same deployed and local.
    Each admin route turns the "anonymous" verdict into that 401 (``_require_admin``).
    """
    scheme, _, token = (auth.token or "").partition(" ")
    try:
        expected = runtime.admin_token.value()
    except CredentialsUnavailable:
        logger.exception("admin token unavailable")
        return AuthResponse(routes=["*"], principal_id=UNKNOWN)
    granted = scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)
    return AuthResponse(routes=["*"], principal_id=ADMIN if granted else ANONYMOUS)


def _require_admin(request: Request) -> None:
    verdict = (request.context.get("authorizer") or {}).get("principalId")
    if verdict == UNKNOWN:
        raise CredentialsUnavailable("the admin token could not be read")
    if verdict != ADMIN:
        raise Unauthorized("bad credentials")


def admin_set_stage(runtime: Runtime, lead_id: str, request: Request) -> Response:
    """``PATCH /admin/leads/{lead_id}`` ``{"stage": ..., "note": ...}``: sales feedback."""
    try:
        _require_admin(request)
        if _media_type(request) != JSON:
            raise UnsupportedMediaType(_media_type(request) or "(none)", (JSON,))
        fields = _read_fields(request)
        stage, note = fields.get("stage"), fields.get("note")
        if not isinstance(stage, str):
            raise ValidationFailed({"stage": "required: the new stage"})
        if note is not None and (not isinstance(note, str) or len(note) > 500):
            raise ValidationFailed({"note": "optional text of at most 500 characters"})
        lead = runtime.sales_feedback.set_stage(lead_id, stage, note)
    except TrellisError as e:
        return error_response(e)
    body = {"lead_id": lead.lead_id, "stage": lead.stage, "stage_reason": lead.stage_reason, "score": lead.score}
    return Response(body, status_code=200, headers={"Content-Type": JSON})


LEADS_CURSOR = "leads-cursor"
CURSOR_LIFETIME = timedelta(days=1)
# Well under Lambda's 6 MB response limit, JSON envelope and escaping included.
CSV_PAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class _LeadPage:
    query: LeadQuery
    filters: str  # a digest of the query: a cursor is only good for the filters it came from
    leads: list[Lead]
    next_key: Optional[dict[str, Any]]


def _find_leads(runtime: Runtime, params: LeadListParams) -> _LeadPage:
    """One page of the filtered lead list and the key of the next (None at the end)."""
    query = LeadQuery(
        stage=params.stage,
        min_score=params.min_score,
        max_score=params.max_score,
        form_id=params.form,
        utm_source=params.utm_source,
        created_from=iso(params.created_from) if params.created_from else None,
        created_to=iso(params.created_to) if params.created_to else None,
    )
    # A cursor belongs to its filters: resuming another query's position would skip or repeat.
    filters = hashlib.sha256(repr(query).encode()).hexdigest()[:16]
    start = None
    if params.cursor is not None:
        try:
            claims = runtime.signer.verify(LEADS_CURSOR, params.cursor, runtime.clock.now())
        except InvalidToken as e:
            raise ValidationFailed({"cursor": "not a cursor this list gave out, or expired"}) from e
        if claims.get("f") != filters or not isinstance(claims.get("k"), dict):
            raise ValidationFailed({"cursor": "belongs to other filters"})
        start = claims["k"]
    leads, next_key = runtime.store.find_leads(query, params.limit, start)
    return _LeadPage(query, filters, leads, next_key)


def _cursor(runtime: Runtime, page: _LeadPage, key: Optional[dict[str, Any]]) -> Optional[str]:
    if key is None:
        return None
    return runtime.signer.sign(LEADS_CURSOR, {"f": page.filters, "k": key}, runtime.clock.now() + CURSOR_LIFETIME)


def admin_list_leads(runtime: Runtime, request: Request) -> Response:
    """``GET /admin/leads``: filtered, cursor-paginated, from the indexes (never a Scan)."""
    try:
        _require_admin(request)
        page = _find_leads(runtime, _query_params(request, LeadListParams))
    except TrellisError as e:
        return error_response(e)
    body = {"leads": [_lead_summary(lead) for lead in page.leads], "next_cursor": _cursor(runtime, page, page.next_key)}
    return Response(body, status_code=200, headers={"Content-Type": JSON})


def admin_export_csv(runtime: Runtime, request: Request) -> Response:
    """``GET /admin/export/leads.csv``: the list's filters, up to ``limit`` rows per response.

    A Lambda response is held in memory (6 MB at most), so a big export comes in pages: the
    ``Link: <...>; rel="next"`` header names the next one, as GitHub's API does. A page also
    ends early when its CSV reaches ``CSV_PAGE_BYTES`` (rows hold free text).
    """
    from chalicelib.exports import leads_csv

    try:
        _require_admin(request)
        page = _find_leads(runtime, _query_params(request, LeadExportParams))
        text, written = leads_csv(runtime.campaign, page.leads, CSV_PAGE_BYTES)
        next_key = page.next_key
        if written < len(page.leads):
            next_key = runtime.store.resume_key(page.query, page.leads[written - 1].lead_id)
    except TrellisError as e:
        return error_response(e)
    headers: Headers = {
        **_NO_STORE,
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": 'attachment; filename="leads.csv"',
    }
    cursor = _cursor(runtime, page, next_key)
    if cursor is not None:
        query = {k: v for k, v in (request.query_params or {}).items() if k != "cursor"}
        next_url = f"{runtime.settings.public_url}/admin/export/leads.csv?{urlencode({**query, 'cursor': cursor})}"
        headers["Link"] = f'<{next_url}>; rel="next"'
    return Response(text, status_code=200, headers=headers)


def _query_params(request: Request, model: type[_Params]) -> _Params:
    try:
        return model.model_validate(dict(request.query_params or {}))
    except ValidationError as e:
        raise ValidationFailed(field_errors(e, whole="query")) from e


def _lead_summary(lead: Lead) -> dict[str, Any]:
    return {
        "lead_id": lead.lead_id,
        "email": lead.email,
        "stage": lead.stage,
        "score": lead.score,
        "created_at": lead.created_at,
        "form": lead.first_touch.form_id,
        "utm_source": lead.first_touch.utm_source,
        "owner": (lead.owner or {}).get("name"),
        "unsubscribed": lead.unsubscribed_at is not None,
    }


def admin_get_lead(runtime: Runtime, lead_id: str, request: Request) -> Response:
    """``GET /admin/leads/{lead_id}``: profile, consent, attribution, score and the timeline."""
    try:
        _require_admin(request)
        record = runtime.store.lead_record(lead_id)
        if record is None:
            raise NotFound("lead", lead_id)
    except TrellisError as e:
        return error_response(e)
    body = lead_detail(record, runtime.campaign.engagement)
    return Response(json.dumps(body, default=str), status_code=200, headers={"Content-Type": JSON})


# What the lead detail counts of a lead's engagement with its emails, people's and machines' apart.
_ENGAGEMENT_COUNTED = {EMAIL_OPENED: "opened", EMAIL_CLICKED: "clicked"}


def lead_detail(record: LeadRecord, rules: EngagementRules) -> dict[str, Any]:
    """The lead detail's body. Each open and click on the timeline carries its verdict and
    reasons (``chalicelib.engagement``), judged from the whole record as scoring judges it, so
    the team sees why a scanner's clicks earned no points."""
    lead = record.lead
    verdicts = engagement_verdicts(record.events, record.messages, rules)
    engaged = {label: dict.fromkeys(_ENGAGEMENT_COUNTED.values(), 0) for label in (HUMAN, MACHINE)}
    timeline: list[dict[str, Any]] = []
    for e in record.events:
        entry: dict[str, Any] = {"at": e.at, "kind": "event", "type": e.type, "data": e.data}
        verdict = verdicts.get(e.event_id)
        if verdict is not None:
            entry.update(verdict.to_json())
            engaged[verdict.label][_ENGAGEMENT_COUNTED[e.type]] += 1
        timeline.append(entry)
    timeline += [
        {"at": m.sent_at, "kind": "message", "message_id": m.message_id, "subject": m.subject} for m in record.messages
    ]
    return {
        "lead": {
            **_lead_summary(lead),
            "updated_at": lead.updated_at,
            "profile": lead.profile,
            "custom": lead.custom,
            "timezone": lead.timezone,
            "unsubscribed_at": lead.unsubscribed_at,
            "stage_reason": lead.stage_reason,
            "owner": lead.owner,
        },
        "consent": lead.consent.to_item() if lead.consent else None,
        "attribution": {"first_touch": lead.first_touch.to_item(), "last_touch": lead.last_touch.to_item()},
        "score": {
            "total": lead.score,
            "engagement": lead.score_engagement,
            "fit": lead.score_fit,
            "events_counted": lead.score_events,
            "reset_at": lead.score_reset_at,
        },
        "email_engagement": engaged,
        "enrolments": [
            {
                "sequence": e.sequence_id,
                "status": e.status,
                "step_index": e.step_index,
                "due_at": e.due_at,
                "exit_reason": e.exit_reason,
            }
            for e in record.enrolments
        ],
        "timeline": sorted(timeline, key=lambda entry: str(entry["at"]), reverse=True),
    }


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body, default=str), status_code=status, headers={**_NO_STORE, "Content-Type": JSON})


def _admin_json(request: Request, produce: Callable[[], dict[str, Any]]) -> Response:
    """An admin route's answer: the verdict checked first, domain errors mapped, JSON out."""
    try:
        _require_admin(request)
        return _json(produce())
    except TrellisError as e:
        return error_response(e)


def admin_export_lead(runtime: Runtime, lead_id: str, request: Request) -> Response:
    """``GET /admin/leads/{lead_id}/export``: everything stored about the person (GDPR art. 15)."""
    return _admin_json(request, lambda: runtime.privacy.export(lead_id))


def admin_erase_lead(runtime: Runtime, lead_id: str, request: Request) -> Response:
    """``DELETE /admin/leads/{lead_id}``: erase the person, suppress the address (GDPR art. 17)."""
    return _admin_json(request, lambda: runtime.privacy.erase(lead_id))


def admin_funnel_report(runtime: Runtime, request: Request) -> Response:
    return _admin_json(request, runtime.reports.funnel)


def admin_sequence_report(runtime: Runtime, request: Request) -> Response:
    return _admin_json(request, runtime.reports.sequences)


def admin_set_spend(runtime: Runtime, request: Request) -> Response:
    """``PUT /admin/reports/spend``: the spend to date on one channel (replaces the campaign file's)."""

    def set_spend() -> dict[str, Any]:
        if _media_type(request) != JSON:
            raise UnsupportedMediaType(_media_type(request) or "(none)", (JSON,))
        try:
            update = SpendUpdate.model_validate(_read_fields(request))
        except ValidationError as e:
            raise ValidationFailed(field_errors(e, whole="body")) from e
        return runtime.reports.set_spend(update)

    return _admin_json(request, set_spend)


def openapi(runtime: Runtime) -> Response:
    # Imported here: building the document is for integrators, not for every cold start.
    from chalicelib.openapi import document

    return Response(document(runtime.settings.public_url), status_code=200, headers={"Content-Type": JSON})
