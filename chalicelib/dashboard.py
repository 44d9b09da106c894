"""The team's dashboard: ``GET /admin/dashboard``, with its own login (``/admin/login``, ``/admin/logout``).

These routes have no Chalice authorizer: API Gateway's token authorizer answers 401 before the
route runs when the Authorization header is missing, so a browser could never reach a login form.
They check credentials here instead: ``Authorization: Bearer <admin token>`` (as the authorizer
does) or a session cookie the login form sets.

The session cookie is a ``TokenSigner`` token (purpose ``admin-session``) whose claims hold a
random session id and a keyed hash of the admin token. The id names an item in the table (opened
at login, deleted at logout), so a logged-out cookie opens nothing even before it expires;
rotating the admin token ends every session at its next request.

Login and logout are refused (403) unless the browser says the post came from the dashboard's own
origin (``Sec-Fetch-Site``, ``Origin``, else ``Referer``): no other site can sign a browser in or
out. Failed logins are counted per source address and in total, in fixed windows; once either
count is used up the form answers 429, without looking at the token, until the window ends.

The page is server-rendered HTML with an inline SVG chart and no JavaScript. Rendering is pure
(``render_dashboard``, ``render_login``): report dicts in, HTML out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Optional, Protocol
from urllib.parse import parse_qs, urlsplit

from chalice.app import Request, Response

from chalicelib.clock import Clock
from chalicelib.config import MAX_BODY_BYTES, Settings
from chalicelib.credentials import AdminToken, CredentialsUnavailable
from chalicelib.entities import iso
from chalicelib.errors import InvalidToken, TrellisError
from chalicelib.http import bodies, error_response
from chalicelib.http.auth import bearer_token, token_matches
from chalicelib.http.bodies import Broadcast, BroadcastList, FunnelReport, SequenceReport
from chalicelib.http.requests import FORM, media_type
from chalicelib.rendering import environment, render_page
from chalicelib.runtime import Runtime
from chalicelib.store import Store
from chalicelib.tracking import TokenSigner
from chalicelib.vocabulary import Stage

logger = logging.getLogger(__name__)

SESSION_COOKIE = "trellis_admin"
SESSION_PURPOSE = "admin-session"
SESSION_LIFETIME = timedelta(hours=8)
_BINDING_CONTEXT = b"trellis/admin-session"
LOGIN_ERROR = "That token is not right."

# Failed sign-ins (wrong token at the form, a wrong bearer on the page) allowed per window: per
# source address, and in total so that spreading guesses over many addresses does not help.
# Successful sign-ins are not counted.
LOGIN_WINDOW = timedelta(minutes=15)
LOGIN_FAILURES_PER_ADDRESS = 10
LOGIN_FAILURES_TOTAL = 100
LOGIN_SCOPE_ADDRESS = "login-ip"
LOGIN_SCOPE_TOTAL = "login-all"
_ALL_ADDRESSES = "all"
# chalice.test.Client and some proxies give no source address: those requests share one key.
_UNKNOWN_ADDRESS = "unknown"
THROTTLED_ERROR = "Too many failed sign-ins. Please try again in {minutes} min."
CROSS_SITE_MESSAGE = "This request did not come from the dashboard's own page, so it was not carried out."

# Relative on purpose: deployed, the API sits under a stage prefix (/api/...), which only the
# browser's resolution against the current URL gets right.
DASHBOARD_LOCATION = "dashboard"

_HTML = "text/html; charset=utf-8"
# The page has no script at all; the policy makes sure an injection could not add one either.
_SECURITY_HEADERS = {
    "Cache-Control": "no-store, max-age=0",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    # Not no-referrer: under that policy a browser sends "Origin: null" even with our own form's
    # posts, and the origin check below needs the real one. Other sites still get no referrer.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
_MAX_LOGIN_FIELDS = 10


class SessionContext(Protocol):
    """What the session helpers need of a ``Runtime`` (tests pass a small stand-in)."""

    @property
    def signer(self) -> TokenSigner: ...

    @property
    def admin_token(self) -> AdminToken: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...


# -- session ----------------------------------------------------------------------------------


def token_binding(admin_token: bytes) -> str:
    """Names the admin token a session was opened with, without revealing it."""
    return hmac.new(admin_token, _BINDING_CONTEXT, hashlib.sha256).hexdigest()[:32]


def _cookie_attributes(context: SessionContext, max_age: int) -> str:
    attributes = f"HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
    # Not over plain http: the local twin serves http://127.0.0.1, where a Secure cookie is dropped.
    if context.settings.public_url.startswith("https://"):
        attributes += "; Secure"
    return attributes


def session_cookie(context: SessionContext, session_id: str) -> str:
    """The ``Set-Cookie`` value naming session ``session_id``. Raises ``CredentialsUnavailable``."""
    claims = {"t": token_binding(context.admin_token.value()), "s": session_id}
    token = context.signer.sign(SESSION_PURPOSE, claims, context.clock.now() + SESSION_LIFETIME)
    return f"{SESSION_COOKIE}={token}; {_cookie_attributes(context, int(SESSION_LIFETIME.total_seconds()))}"


def open_session(context: SessionContext) -> str:
    """Record a new session in the table; its ``Set-Cookie`` value. Raises ``CredentialsUnavailable``."""
    session_id = secrets.token_urlsafe(16)
    cookie = session_cookie(context, session_id)
    now = context.clock.now()
    context.store.open_admin_session(session_id, iso(now), int((now + SESSION_LIFETIME).timestamp()))
    return cookie


def cleared_cookie(context: SessionContext) -> str:
    return f"{SESSION_COOKIE}=; {_cookie_attributes(context, 0)}"


def _session_claims(context: SessionContext, token: str) -> Optional[tuple[str, object]]:
    """(session id, admin-token binding) of a cookie this stage signed and that has not expired."""
    try:
        claims = context.signer.verify(SESSION_PURPOSE, token, context.clock.now())
    except InvalidToken:
        return None
    session_id = claims.get("s")
    return (session_id, claims.get("t")) if isinstance(session_id, str) and session_id else None


def session_id_of(context: SessionContext, token: str) -> Optional[str]:
    """The session a cookie names, if this stage signed it, it has not expired and it was opened
    with the current admin token (the cookie alone: ``authenticated`` also asks the table).

    Raises ``CredentialsUnavailable`` when the admin token cannot be read.
    """
    expected = token_binding(context.admin_token.value())
    claims = _session_claims(context, token)
    if claims is None:
        return None
    session_id, binding = claims
    if not isinstance(binding, str) or not hmac.compare_digest(binding.encode(), expected.encode()):
        return None
    return session_id


def session_valid(context: SessionContext, token: str) -> bool:
    """``session_id_of`` as a yes or no: the cookie is sound (whether still open is the table's)."""
    return session_id_of(context, token) is not None


def cookies_from_headers(headers: Mapping[str, Any], name: str = SESSION_COOKIE) -> list[str]:
    """Every value of cookie ``name`` in the ``Cookie`` header, in order.

    All of them, not the first: a browser may hold two of one name (set under different paths or
    by a sibling stage on the same host) and sends both; any valid one should do.
    """
    header = headers.get("cookie") or headers.get("Cookie") or ""
    values = []
    for pair in str(header).split(";"):
        key, sep, value = pair.strip().partition("=")
        if sep and key.strip() == name and value.strip():
            values.append(value.strip().strip('"'))
    return values


def bearer_valid(context: SessionContext, headers: Mapping[str, Any]) -> bool:
    """``Authorization: Bearer <admin token>``, checked as the authorizer checks it."""
    header = headers.get("authorization") or headers.get("Authorization")
    return token_matches(bearer_token(header), context.admin_token)


def session_open(context: SessionContext, headers: Mapping[str, Any]) -> bool:
    """Any session cookie that is sound and whose session logout has not closed.

    Raises ``CredentialsUnavailable``; ``StoreError`` when the table cannot be read.
    """
    now = context.clock.now().timestamp()
    for token in cookies_from_headers(headers):
        session_id = session_id_of(context, token)
        if session_id is not None and context.store.admin_session_open(session_id, now):
            return True
    return False


def authenticated(context: SessionContext, headers: Mapping[str, Any]) -> bool:
    """Bearer header or an open session. Raises ``CredentialsUnavailable`` (and ``StoreError``)."""
    return bearer_valid(context, headers) or session_open(context, headers)


# -- origin check and sign-in throttle ---------------------------------------------------------


def _header(headers: Mapping[str, Any], name: str) -> Optional[str]:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return None if value is None else str(value).strip()


def _origin_of(url: str) -> Optional[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def _our_origins(context: SessionContext, headers: Mapping[str, Any]) -> set[str]:
    """The configured public URL's origin, and the host the browser addressed (the same site
    under another name, e.g. a custom domain); a cross-site page cannot choose the ``Host``."""
    origins = {origin for origin in (_origin_of(context.settings.public_url),) if origin}
    host = _header(headers, "host")
    if host:
        origins |= {f"http://{host}".lower(), f"https://{host}".lower()}
    return origins


def same_origin(context: SessionContext, headers: Mapping[str, Any]) -> bool:
    """Whether a state-changing post came from the dashboard's own pages.

    Browsers set ``Sec-Fetch-Site`` and ``Origin`` and no page can change them. Without both
    (older browsers), a ``Referer`` from another site refuses; a request with none of the three
    is no browser's cross-site post (a page cannot strip all of them) and passes.
    """
    site = _header(headers, "sec-fetch-site")
    if site is not None and site.lower() != "same-origin":
        return False
    origin = _header(headers, "origin")
    if origin is not None:
        if origin == "null":  # privacy settings can hide our own origin; the browser vouches
            return site is not None
        return origin.lower() in _our_origins(context, headers)
    referer = _header(headers, "referer")
    if referer:
        return _origin_of(referer) in _our_origins(context, headers)
    return True


def _source_key(context: SessionContext, request: Request) -> str:
    identity = (request.context or {}).get("identity") or {}
    address = identity.get("sourceIp")
    # A keyed hash: the table never holds an address.
    return context.signer.pseudonym(str(address) if address else _UNKNOWN_ADDRESS)


def _login_windows(context: SessionContext, request: Request) -> tuple[tuple[str, str, int], ...]:
    return (
        (LOGIN_SCOPE_ADDRESS, _source_key(context, request), LOGIN_FAILURES_PER_ADDRESS),
        (LOGIN_SCOPE_TOTAL, _ALL_ADDRESSES, LOGIN_FAILURES_TOTAL),
    )


def _window_seconds() -> int:
    return int(LOGIN_WINDOW.total_seconds())


def _throttled(context: SessionContext, request: Request) -> bool:
    """Failures used up, per address or in total: checked before the token is compared."""
    now = context.clock.now().timestamp()
    return not all(
        context.store.allowance_left(scope, key, _window_seconds(), limit, now)
        for scope, key, limit in _login_windows(context, request)
    )


def _count_failure(context: SessionContext, request: Request) -> bool:
    """Count one failed sign-in; False when it was over a limit (concurrent failures race here)."""
    now = context.clock.now().timestamp()
    return all(
        [
            context.store.take_allowance(scope, key, _window_seconds(), limit, now)
            for scope, key, limit in _login_windows(context, request)
        ]
    )


# -- HTTP -------------------------------------------------------------------------------------


def _html(body: str, status: int, **headers: str) -> Response:
    return Response(body, status_code=status, headers={**_SECURITY_HEADERS, "Content-Type": _HTML, **headers})


def _login_page(error: Optional[str] = None) -> Response:
    return _html(render_login(error), 401, **{"WWW-Authenticate": "Bearer"})


def _throttled_page(context: SessionContext) -> Response:
    """429 until the current window ends; the same page whatever token was sent."""
    window = _window_seconds()
    retry_after = max(1, window - int(context.clock.now().timestamp()) % window)
    message = THROTTLED_ERROR.format(minutes=math.ceil(retry_after / 60))
    return _html(render_login(message), 429, **{"Retry-After": str(retry_after)})


def _cross_site() -> Response:
    logger.warning("admin session post refused: not from the dashboard's origin")
    page = render_page("error.html", heading="Request refused", message=CROSS_SITE_MESSAGE, fields={}, back_url=None)
    return _html(page, 403)


def _unavailable(error: CredentialsUnavailable) -> Response:
    # Fail closed: without the admin token nobody can be checked, so nobody is let in.
    logger.error("admin token unavailable: %s", type(error).__name__, exc_info=error)
    page = render_page(
        "error.html",
        heading="Please try again in a moment",
        message="The dashboard cannot check credentials just now.",
        fields={},
        back_url=None,
    )
    return _html(page, 503, **{"Retry-After": "30"})


def page(runtime: Runtime, request: Request) -> Response:
    """``GET /admin/dashboard``: the dashboard (200), or the login form (401)."""
    try:
        if _header(request.headers, "authorization") is not None:
            # A bearer on the page is a sign-in attempt too: throttled like the form.
            if _throttled(runtime, request):
                return _throttled_page(runtime)
            if not bearer_valid(runtime, request.headers) and not _count_failure(runtime, request):
                return _throttled_page(runtime)
        if not authenticated(runtime, request.headers):
            return _login_page()
        title = runtime.campaign.title or runtime.campaign.name
        body = render_dashboard(
            *runtime.reports.both(),
            campaign_title=title,
            now=runtime.clock.now(),
            broadcasts=runtime.broadcasts.list(),
        )
    except CredentialsUnavailable as e:
        return _unavailable(e)
    except TrellisError as e:
        return error_response(e, html=True, headers=dict(_SECURITY_HEADERS))
    return _html(body, 200)


def _submitted_token(raw: object) -> Optional[str]:
    """The form's ``token`` field; None for a missing, oversized or unreadable body."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, bytes) or len(raw) > MAX_BODY_BYTES:
        return None
    try:
        fields = parse_qs(raw.decode("utf-8"), max_num_fields=_MAX_LOGIN_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return None
    values = fields.get("token") or []
    return values[0] if values else None


def login(runtime: Runtime, request: Request) -> Response:
    """``POST /admin/login`` (form field ``token``): 303 to the dashboard with a session cookie.

    403 from another site; 429 once failures are used up (the token is then not even compared).
    """
    if not same_origin(runtime, request.headers):
        return _cross_site()
    token = _submitted_token(request.raw_body) if media_type(request.headers) == FORM else None
    try:
        if _throttled(runtime, request):
            logger.warning("admin login throttled")
            return _throttled_page(runtime)
        if token is None or not token_matches(token.strip(), runtime.admin_token):
            logger.warning("admin login rejected")
            if not _count_failure(runtime, request):
                return _throttled_page(runtime)
            return _login_page(LOGIN_ERROR)
        cookie = open_session(runtime)
    except CredentialsUnavailable as e:
        return _unavailable(e)
    except TrellisError as e:
        return error_response(e, html=True, headers=dict(_SECURITY_HEADERS))
    return _html("", 303, Location=DASHBOARD_LOCATION, **{"Set-Cookie": cookie})


def logout(runtime: Runtime, request: Request) -> Response:
    """``POST /admin/logout``: close the sessions the cookies name, clear the cookie, back to the
    (login) page. 403 from another site, and then nothing is closed."""
    if not same_origin(runtime, request.headers):
        return _cross_site()
    try:
        # Every sound cookie, whichever admin token opened it: closing needs no credentials.
        for token in cookies_from_headers(request.headers):
            claims = _session_claims(runtime, token)
            if claims is not None:
                runtime.store.close_admin_session(claims[0])
    except TrellisError as e:
        return error_response(e, html=True, headers=dict(_SECURITY_HEADERS))
    return _html("", 303, Location=DASHBOARD_LOCATION, **{"Set-Cookie": cleared_cookie(runtime)})


# -- formatting -------------------------------------------------------------------------------

DASH = "\u2014"
_UNITS = (("d", 86400), ("h", 3600), ("min", 60))
_STAGE_LABELS: dict[str, str] = {Stage.MQL: "MQL", Stage.SQL: "SQL"}


def stage_label(stage: str) -> str:
    return _STAGE_LABELS.get(stage, stage.replace("_", " ").capitalize())


def format_count(value: Optional[int]) -> str:
    return DASH if value is None else f"{value:,}"


def format_percent(rate: Optional[float], digits: int = 1) -> str:
    return DASH if rate is None else f"{rate * 100:.{digits}f}%"


def format_money(amount: Optional[float], currency: Optional[str]) -> str:
    if amount is None:
        return DASH
    text = f"{amount:,.2f}"
    return f"{text} {currency}" if currency else text


def format_duration(seconds: Optional[float]) -> str:
    """A human span: "45 s", "12 min", "5 h", "3.2 d"; a dash when unknown."""
    if seconds is None:
        return DASH
    unit, size = next(((unit, size) for unit, size in _UNITS if seconds >= size), ("s", 1))
    value = seconds / size
    # One decimal while it matters (3.2 d vs 3 d); none once the number is large.
    text = f"{value:.1f}" if value < 10 else f"{value:.0f}"
    return f"{text.removesuffix('.0')} {unit}"


# -- view model -------------------------------------------------------------------------------

CHART_WIDTH = 720
_LABEL_WIDTH = 120
_BAR_MAX = 430
_ROW_HEIGHT = 34
_BAR_HEIGHT = 22
_CHART_TOP = 26


@dataclass(frozen=True)
class Bar:
    stage: str
    label: str
    reached: int
    count_text: str
    conversion_text: str  # from the previous stage; "" on the first bar
    y: int
    width: float
    text_y: int


def funnel_bars(funnel: FunnelReport) -> list[Bar]:
    """One bar per funnel stage, widths proportional to the largest count (all zero: no width)."""
    reached = funnel.total.reached.model_dump()
    rates = {(c.low, c.high): c.rate for c in funnel.total.conversion}
    stages = list(funnel.stages)
    largest = max((int(reached.get(stage, 0)) for stage in stages), default=0)
    bars = []
    for index, stage in enumerate(stages):
        value = int(reached.get(stage, 0))
        conversion = ""
        if index > 0:
            conversion = format_percent(rates.get((stages[index - 1], stage)))
        y = _CHART_TOP + index * _ROW_HEIGHT
        bars.append(
            Bar(
                stage=stage,
                label=stage_label(stage),
                reached=value,
                count_text=format_count(value),
                conversion_text=conversion,
                y=y,
                width=round(_BAR_MAX * value / largest, 1) if largest else 0.0,
                text_y=y + _BAR_HEIGHT // 2 + 5,
            )
        )
    return bars


@dataclass(frozen=True)
class FunnelRow:
    label: str
    captured: str
    sqls: str
    spend: str
    cost_per_lead: str
    cost_per_sql: str
    to_mql: str
    to_sql: str
    to_mql_leads: int
    to_sql_leads: int


def funnel_row(label: str, row: bodies.FunnelRow, currency: Optional[str]) -> FunnelRow:
    velocity = row.velocity
    return FunnelRow(
        label=label,
        captured=format_count(row.reached.captured),
        sqls=format_count(row.reached.sql),
        spend=format_money(row.spend, currency),
        cost_per_lead=format_money(row.cost_per_lead, currency),
        cost_per_sql=format_money(row.cost_per_sql, currency),
        to_mql=format_duration(velocity.mql.median_seconds),
        to_sql=format_duration(velocity.sql.median_seconds),
        to_mql_leads=velocity.mql.leads,
        to_sql_leads=velocity.sql.leads,
    )


@dataclass(frozen=True)
class StepRow:
    """A step's (or the campaign's) email counts as the table shows them. Opens and clicks are
    people's, with their rates; machines' (link scanners, Apple's proxy) are counts beside them,
    in no rate: they say how much of the raw engagement was never a person."""

    sequence_id: str
    step_id: str
    subject: str
    sent: str
    delivered: str
    opened: str  # people's count, "" when there is no rate (nothing sent)
    opened_rate: str
    clicked: str
    clicked_rate: str
    machine_opened: str
    machine_clicked: str
    unsubscribed: str
    bounced: str
    complained: str


def step_row(step: bodies.EmailRow, *, subject: str = "") -> StepRow:
    rates = step.rates

    def beside(metric: str) -> str:
        # The count beside its rate; nothing beside the dash of a step not sent yet.
        return "" if getattr(rates, metric) is None else format_count(getattr(step, metric))

    named = step if isinstance(step, bodies.StepRow) else None
    return StepRow(
        sequence_id=named.sequence_id if named else "",
        step_id=named.step_id if named else "",
        subject=named.subject if named else subject,
        sent=format_count(step.sent),
        delivered=format_count(step.delivered),
        opened=beside("opened"),
        opened_rate=format_percent(rates.opened),
        clicked=beside("clicked"),
        clicked_rate=format_percent(rates.clicked),
        machine_opened=format_count(step.machine_opened),
        machine_clicked=format_count(step.machine_clicked),
        unsubscribed=format_count(step.unsubscribed),
        bounced=format_count(step.bounced),
        complained=format_count(step.complained),
    )


@dataclass(frozen=True)
class Gauge:
    label: str
    rate: str
    limit: str
    over: bool


def _gauge(label: str, rate: Optional[float], limit: float, digits: int) -> Gauge:
    return Gauge(label, format_percent(rate, digits), format_percent(limit, digits), rate is not None and rate > limit)


def _bots(funnel: FunnelReport) -> list[tuple[str, str]]:
    return [
        (form_id, ", ".join(f"{reason} {format_count(n)}" for reason, n in sorted(reasons.items())))
        for form_id, reasons in sorted(funnel.bots_blocked.by_form.items())
    ]


def broadcast_row(broadcast: Broadcast) -> dict[str, Any]:
    """A broadcast's line: its status and totals, people's rates of what was sent."""
    sent = sum(v.sent for v in broadcast.variants)
    opens = sum(v.human_opens for v in broadcast.variants)
    clicks = sum(v.human_clicks for v in broadcast.variants)
    return {
        "name": broadcast.name,
        "topic": broadcast.topic,
        "status": broadcast.status,
        "send_at": broadcast.send_at[:16].replace("T", " "),
        "recipients": format_count(broadcast.recipients),
        "sent": format_count(sent),
        "skipped": format_count(sum(broadcast.skipped.values())),
        "opened_rate": format_percent(opens / sent if sent else None),
        "clicked_rate": format_percent(clicks / sent if sent else None),
        "winner": broadcast.winner or "",
    }


def render_dashboard(
    funnel: FunnelReport,
    sequences: SequenceReport,
    *,
    campaign_title: str,
    now: datetime,
    broadcasts: Optional[BroadcastList] = None,
) -> str:
    """The dashboard page from the reports (``Reports.funnel()``, ``Reports.sequences()``, the
    broadcasts with theirs)."""
    currency = funnel.currency
    total = funnel.total
    bars = funnel_bars(funnel)
    deliverability = sequences.deliverability
    context = {
        "campaign_title": campaign_title,
        "generated_at": now.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "tiles": [
            ("Captured", format_count(total.reached.captured)),
            ("SQLs", format_count(total.reached.sql)),
            ("Customers", format_count(total.reached.customer)),
            ("Spend", format_money(total.spend, currency)),
            ("Cost per lead", format_money(total.cost_per_lead, currency)),
            ("Cost per SQL", format_money(total.cost_per_sql, currency)),
        ],
        "bars": bars,
        "chart": {
            "width": CHART_WIDTH,
            "height": _CHART_TOP + len(bars) * _ROW_HEIGHT,
            "bar_x": _LABEL_WIDTH,
            "bar_max": _BAR_MAX,
            "bar_height": _BAR_HEIGHT,
        },
        "off_funnel": [(stage_label(stage), format_count(n)) for stage, n in total.off_funnel.model_dump().items()],
        "channels": [funnel_row(f"{c.utm_source} / {c.utm_medium}", c, currency) for c in funnel.channels],
        "utm_campaigns": [funnel_row(c.utm_campaign, c, currency) for c in funnel.utm_campaigns],
        "total_row": funnel_row("All channels", total, currency),
        "steps": [step_row(step) for step in sequences.steps],
        "step_totals": step_row(sequences.totals, subject="All emails"),
        "gauges": [
            _gauge("Bounce rate", deliverability.bounce_rate, deliverability.bounce_limit, 1),
            _gauge("Complaint rate", deliverability.complaint_rate, deliverability.complaint_limit, 2),
        ],
        "warnings": list(deliverability.warnings),
        "bots_total": format_count(funnel.bots_blocked.total),
        "bots_by_form": _bots(funnel),
        "broadcasts": [broadcast_row(b) for b in (broadcasts.broadcasts if broadcasts else [])],
    }
    return environment().get_template("admin/dashboard.html").render(**context)


def render_login(error: Optional[str]) -> str:
    return environment().get_template("admin/login.html").render(error=error)
