"""Trellis: Chalice routes and event sources. Bodies stay thin: the work is in chalicelib."""

from collections.abc import Callable
from typing import Any

from chalice.app import (
    AuthRequest,
    AuthResponse,
    Chalice,
    CloudWatchEvent,
    DynamoDBEvent,
    Rate,
    Request,
    Response,
    SNSEvent,
)

# Only what every function needs: the five Lambda functions share this file, and modules only some
# routes or handlers use (dashboard, reports, scoring, the dispatcher...) load on first use.
from chalicelib import observability, runtime, web
from chalicelib.config import EventSources

# configure_logs=False: app.log propagates to the root logger, whose lines are JSON (observability).
app = Chalice(app_name="trellis", configure_logs=False)
# The open pixel (image/gif) for mail clients whose Accept names only image/*: Chalice sends a binary
# body only to an Accept part in this list (or */*). The deployed API also lists */*, since API
# Gateway matches only the FIRST Accept type (infra/settings.py); not here: Chalice would then
# base64 every response, fail on text bodies and 400 requests without Accept (aws/chalice#1523).
app.api.binary_types.append("image/*")
sources = EventSources.from_env()


# Every invocation, HTTP or event: its correlation id on each log line, its metrics flushed once.
@app.middleware("all")
def observe(event: Any, get_response: Callable[[Any], Any]) -> Any:
    return observability.observe(event, get_response, runtime.pending_metrics)


def _request() -> Request:
    request = app.current_request
    assert request is not None, "only called while Chalice handles a request"
    return request


@app.route("/health", methods=["GET"])
def health() -> dict[str, str]:
    return {"status": "ok"}


# content_types="*/*" lets Trellis answer unsupported encodings itself (415 with its JSON error
# body or an HTML page) instead of Chalice's generic reply.
@app.route("/forms/{form_id}", methods=["POST"], content_types=["*/*"])
def submit_form(form_id: str) -> Response:
    return web.submit_form(runtime.current(), form_id, _request())


@app.route("/forms/{form_id}", methods=["OPTIONS"])
def form_preflight(form_id: str) -> Response:
    return web.preflight(runtime.current(), form_id, _request())


@app.route("/events", methods=["POST"], content_types=["*/*"])
def record_event() -> Response:
    return web.record_event(runtime.current(), _request())


@app.route("/events", methods=["OPTIONS"])
def events_preflight() -> Response:
    return web.events_preflight(runtime.current(), _request())


# HEAD too: link scanners ask it first, and their hits are recorded as a machine's.
@app.route("/t/c/{token}", methods=["GET", "HEAD"])
def tracked_click(token: str) -> Response:
    return web.click(runtime.current(), token, _request())


@app.route("/t/o/{token}", methods=["GET", "HEAD"])
def tracked_open(token: str) -> Response:
    return web.open_pixel(runtime.current(), token, _request())


@app.route("/u/{token}", methods=["GET"])
def unsubscribe_page(token: str) -> Response:
    return web.unsubscribe_page(runtime.current(), token)


# RFC 8058 one-click posts come as form data (urlencoded or multipart); the body is not needed.
@app.route("/u/{token}", methods=["POST"], content_types=["*/*"])
def unsubscribe(token: str) -> Response:
    return web.unsubscribe(runtime.current(), token)


@app.route("/confirm/{token}", methods=["GET"])
def confirm_page(token: str) -> Response:
    return web.confirm_page(runtime.current(), token)


# The confirm page's button: a plain form post with an empty body; the token is what counts.
@app.route("/confirm/{token}", methods=["POST"], content_types=["*/*"])
def confirm_subscription(token: str) -> Response:
    return web.confirm(runtime.current(), token)


# Cached by API Gateway per token for a minute: a rotated admin token stops working within it.
@app.authorizer(ttl_seconds=60)
def admin_auth(auth_request: AuthRequest) -> AuthResponse:
    return web.authorize_admin(runtime.current(), auth_request)


@app.route("/admin/leads", methods=["GET"], authorizer=admin_auth)
def admin_list_leads() -> Response:
    return web.admin_list_leads(runtime.current(), _request())


@app.route("/admin/leads/{lead_id}", methods=["GET"], authorizer=admin_auth)
def admin_get_lead(lead_id: str) -> Response:
    return web.admin_get_lead(runtime.current(), lead_id, _request())


@app.route("/admin/leads/{lead_id}", methods=["PATCH"], content_types=["*/*"], authorizer=admin_auth)
def admin_set_stage(lead_id: str) -> Response:
    return web.admin_set_stage(runtime.current(), lead_id, _request())


@app.route("/admin/leads/{lead_id}", methods=["DELETE"], authorizer=admin_auth)
def admin_erase_lead(lead_id: str) -> Response:
    return web.admin_erase_lead(runtime.current(), lead_id, _request())


@app.route("/admin/leads/{lead_id}/export", methods=["GET"], authorizer=admin_auth)
def admin_export_lead(lead_id: str) -> Response:
    return web.admin_export_lead(runtime.current(), lead_id, _request())


@app.route("/admin/export/leads.csv", methods=["GET"], authorizer=admin_auth)
def admin_export_csv() -> Response:
    return web.admin_export_csv(runtime.current(), _request())


@app.route("/admin/reports/funnel", methods=["GET"], authorizer=admin_auth)
def admin_funnel_report() -> Response:
    return web.admin_funnel_report(runtime.current(), _request())


@app.route("/admin/reports/sequences", methods=["GET"], authorizer=admin_auth)
def admin_sequence_report() -> Response:
    return web.admin_sequence_report(runtime.current(), _request())


@app.route("/admin/reports/spend", methods=["PUT"], content_types=["*/*"], authorizer=admin_auth)
def admin_set_spend() -> Response:
    return web.admin_set_spend(runtime.current(), _request())


# The dashboard's pages check the session cookie themselves: an API Gateway authorizer would
# answer a browser without the Authorization header with 401 before the login form could show.
@app.route("/admin/dashboard", methods=["GET"])
def admin_dashboard() -> Response:
    from chalicelib import dashboard

    return dashboard.page(runtime.current(), _request())


# Any content type: what is not a form is a wrong token, answered with the login page.
@app.route("/admin/login", methods=["POST"], content_types=["*/*"])
def admin_login() -> Response:
    from chalicelib import dashboard

    return dashboard.login(runtime.current(), _request())


@app.route("/admin/logout", methods=["POST"], content_types=["*/*"])
def admin_logout() -> Response:
    from chalicelib import dashboard

    return dashboard.logout(runtime.current(), _request())


@app.route("/openapi.json", methods=["GET"])
def openapi_document() -> Response:
    return web.openapi(runtime.current())


@app.schedule(Rate(1, unit=Rate.MINUTES))
def dispatch(event: CloudWatchEvent) -> dict[str, Any]:
    lambda_context: Any = event.context  # Lambda's context object (Chalice types it loosely)
    report = runtime.current().dispatcher.tick(lambda_context.get_remaining_time_in_millis)
    return vars(report)


@app.on_dynamodb_record(stream_arn=sources.stream_arn, batch_size=100)
def on_lead_change(event: DynamoDBEvent) -> dict[str, Any]:
    from chalicelib import streams

    current = runtime.current()
    report = current.streams.handle(event.to_dict()["Records"])
    return streams.lambda_response(report, current.settings.stream_report_failures)


@app.on_sns_message(topic=sources.ses_events_topic)
def on_ses_feedback(event: SNSEvent) -> dict[str, Any]:
    return vars(runtime.current().feedback.handle(event.message))
