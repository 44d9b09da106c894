"""Trellis: Chalice routes and event sources. Bodies stay thin: the work is in chalicelib.

Each route is declared once with what its OpenAPI operation says (``chalicelib.http``): the
document at ``/openapi.json`` is generated from these declarations and the models they name.
"""

# No `from __future__ import annotations`: chalice's policy analyzer reads this file's symbol
# tables, where postponed annotations leave names it looks up; type-only names are quoted instead.
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalice.app import AuthRequest, AuthResponse, Chalice, CloudWatchEvent, DynamoDBEvent, Rate, Response, SNSEvent

# Only what every function needs: the five Lambda functions share this file, and modules only some
# routes or handlers use (dashboard, reports, scoring, the dispatcher, pydantic...) load on first use.
from chalicelib import observability, runtime, web
from chalicelib.config import EventSources
from chalicelib.errors import Conflict, NotFound, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from chalicelib.http import JSON, Api, Reply, page_errors
from chalicelib.http.auth import authorize_admin

if TYPE_CHECKING:
    from chalicelib.http import bodies
    from chalicelib.models import (
        BroadcastIn,
        BroadcastTestIn,
        LeadExportParams,
        LeadListParams,
        SpendUpdate,
        StageChange,
    )

# configure_logs=False: app.log propagates to the root logger, whose lines are JSON (observability).
app = Chalice(app_name="trellis", configure_logs=False)
# The open pixel (image/gif) for mail clients whose Accept names only image/*: Chalice sends a binary
# body only to an Accept part in this list (or */*). The deployed API also lists */*, since API
# Gateway matches only the FIRST Accept type (infra/settings.py); not here: Chalice would then
# base64 every response, fail on text bodies and 400 requests without Accept (aws/chalice#1523).
app.api.binary_types.append("image/*")
api = Api(app)
sources = EventSources.from_env()


# Every invocation, HTTP or event: its correlation id on each log line, its metrics flushed once.
@app.middleware("all")
def observe(event: Any, get_response: Callable[[Any], Any]) -> Any:
    return observability.observe(event, get_response, runtime.pending_metrics)


@api.route("/health", "GET", summary="Liveness", tag="ops", ok=(200, Reply("alive", "Health")))
def health() -> "bodies.Health":
    return web.health()


@api.route(
    "/openapi.json",
    "GET",
    summary="This document",
    tag="integrators",
    ok=(200, Reply("the OpenAPI document", media=(JSON,))),
)
def openapi_document() -> Response:
    return web.openapi(runtime.current())


# -- landing pages ---------------------------------------------------------------------------------


@api.route("/forms/{form_id}", "POST", any_content=True, errors_as=web.form_errors, **web.FORM_POST)
def submit_form(form_id: str) -> Response:
    return web.submit_form(runtime.current(), form_id, api.request)


@api.route("/forms/{form_id}", "OPTIONS", errors=(NotFound,), **web.PREFLIGHT, summary="CORS preflight of a form post")
def form_preflight(form_id: str) -> Response:
    return web.preflight(runtime.current(), form_id, api.request)


@api.route("/events", "POST", any_content=True, errors_as=web.event_errors, **web.EVENT_POST)
def record_event() -> Response:
    return web.record_event(runtime.current(), api.request)


@api.route("/events", "OPTIONS", **web.PREFLIGHT, summary="CORS preflight of an event post")
def events_preflight() -> Response:
    return web.events_preflight(runtime.current(), api.request)


# -- email links: HEAD too, as link scanners ask it first (their hits are recorded as a machine's) --


@api.route("/t/c/{token}", ("GET", "HEAD"), errors_as=page_errors, **web.CLICK)
def tracked_click(token: str) -> Response:
    return web.click(runtime.current(), token, api.request)


@api.route("/t/o/{token}", ("GET", "HEAD"), **web.PIXEL)
def tracked_open(token: str) -> Response:
    return web.open_pixel(runtime.current(), token, api.request)


@api.route("/u/{token}", "GET", errors_as=page_errors, **web.link_page("Unsubscribe page", "the page"))
def unsubscribe_page(token: str) -> Response:
    return web.unsubscribe_page(runtime.current(), token)


# RFC 8058 one-click posts come as form data (urlencoded or multipart); the body is not needed.
@api.route("/u/{token}", "POST", any_content=True, errors_as=page_errors, **web.UNSUBSCRIBE)
def unsubscribe(token: str) -> Response:
    return web.unsubscribe(runtime.current(), token)


@api.route("/p/{token}", "GET", errors_as=page_errors, **web.PREFERENCES_PAGE)
def preferences_page(token: str) -> Response:
    return web.preferences_page(runtime.current(), token)


@api.route("/p/{token}", "POST", any_content=True, errors_as=page_errors, **web.PREFERENCES)
def save_preferences(token: str) -> Response:
    return web.save_preferences(runtime.current(), token, api.request)


@api.route("/p/t/{token}", "GET", errors_as=page_errors, **web.link_page("Unsubscribe-from-a-topic page", "the page"))
def topic_unsubscribe_page(token: str) -> Response:
    return web.topic_unsubscribe_page(runtime.current(), token)


@api.route("/p/t/{token}", "POST", any_content=True, errors_as=page_errors, **web.TOPIC_UNSUBSCRIBE)
def topic_unsubscribe(token: str) -> Response:
    return web.topic_unsubscribe(runtime.current(), token)


@api.route("/confirm/{token}", "GET", errors_as=page_errors, **web.link_page("Double opt-in page", web.CONFIRM_PAGE))
def confirm_page(token: str) -> Response:
    return web.confirm_page(runtime.current(), token)


# The confirm page's button: a plain form post with an empty body; the token is what counts.
@api.route("/confirm/{token}", "POST", any_content=True, errors_as=page_errors, **web.CONFIRM)
def confirm_subscription(token: str) -> Response:
    return web.confirm(runtime.current(), token)


# -- the team's API: every route behind the admin authorizer and its verdict -----------------------


# Cached by API Gateway per token for a minute: a rotated admin token stops working within it.
@api.admin_authorizer
@app.authorizer(ttl_seconds=60)
def admin_auth(auth_request: AuthRequest) -> AuthResponse:
    return authorize_admin(runtime.current().admin_token, auth_request)


@api.route(
    "/admin/leads",
    "GET",
    admin=True,
    query_model="LeadListParams",
    summary="List leads: filters and cursor pagination",
    ok=(200, Reply("one page, newest first", "LeadList")),
    errors=(ValidationFailed,),
)
def admin_list_leads(query: "LeadListParams") -> "bodies.LeadList":
    return runtime.current().directory.leads(query)


@api.route(
    "/admin/broadcasts",
    "POST",
    admin=True,
    any_content=True,
    body="BroadcastIn",
    summary="Schedule a broadcast: one email (1-4 variants) to a segment who wants its topic",
    ok=(201, Reply("scheduled: its id and status", "Broadcast")),
    errors=(ValidationFailed, PayloadTooLarge, UnsupportedMediaType),
)
def admin_create_broadcast(body: "BroadcastIn") -> "bodies.Broadcast":
    desk = runtime.current().broadcasts
    return desk.detail(desk.create(body).broadcast_id)


@api.route(
    "/admin/events/{event_id}/attendance",
    "POST",
    admin=True,
    any_content=True,
    request="attendance_upload",
    summary="Upload a webinar's attendance (CSV or JSON): each registrant attended or missed, once",
    ok=(200, Reply("what was applied, what was unchanged, and the rows not applied with why", "AttendanceResult")),
    errors=(ValidationFailed, NotFound, PayloadTooLarge, UnsupportedMediaType),
)
def admin_event_attendance(event_id: str) -> "bodies.AttendanceResult":
    return web.record_attendance(runtime.current(), event_id, api.request)


@api.route(
    "/admin/broadcasts",
    "GET",
    admin=True,
    summary="Every broadcast with its report, newest first",
    ok=(200, Reply("the broadcasts", "BroadcastList")),
)
def admin_list_broadcasts() -> "bodies.BroadcastList":
    return runtime.current().broadcasts.list()


@api.route(
    "/admin/broadcasts/{broadcast_id}",
    "GET",
    admin=True,
    summary="A broadcast's status and report: recipients, sent, skipped by reason, each variant",
    ok=(200, Reply("the broadcast", "Broadcast")),
    errors=(NotFound,),
)
def admin_get_broadcast(broadcast_id: str) -> "bodies.Broadcast":
    return runtime.current().broadcasts.detail(broadcast_id)


@api.route(
    "/admin/broadcasts/{broadcast_id}/cancel",
    "POST",
    admin=True,
    any_content=True,
    summary="Cancel a broadcast: what has not been sent is not sent",
    ok=(200, Reply("the broadcast, cancelled", "Broadcast")),
    errors=(NotFound, Conflict),
)
def admin_cancel_broadcast(broadcast_id: str) -> "bodies.Broadcast":
    desk = runtime.current().broadcasts
    return desk.detail(desk.cancel(broadcast_id).broadcast_id)


@api.route(
    "/admin/broadcasts/{broadcast_id}/test",
    "POST",
    admin=True,
    any_content=True,
    body="BroadcastTestIn",
    summary="Send one test copy of each variant to an address, counted nowhere",
    ok=(200, Reply("sent", "BroadcastTestSent")),
    errors=(ValidationFailed, NotFound, PayloadTooLarge, UnsupportedMediaType),
)
def admin_test_broadcast(broadcast_id: str, body: "BroadcastTestIn") -> "bodies.BroadcastTestSent":
    return runtime.current().broadcasts.send_test(broadcast_id, body.to.address)


@api.route(
    "/admin/segments/{name}/count",
    "GET",
    admin=True,
    summary="How many leads a segment of the campaign file matches now",
    ok=(200, Reply("the count, and how many profiles were read for it", "SegmentCount")),
    errors=(NotFound,),
)
def admin_segment_count(name: str) -> "bodies.SegmentCount":
    return runtime.current().directory.segment_count(name)


@api.route(
    "/admin/leads/{lead_id}",
    "GET",
    admin=True,
    summary="A lead: profile, consent, attribution, score and timeline",
    ok=(200, Reply("the lead", "LeadDetail")),
    errors=(NotFound,),
)
def admin_get_lead(lead_id: str) -> "bodies.LeadDetail":
    return runtime.current().directory.lead(lead_id)


@api.route(
    "/admin/leads/{lead_id}",
    "PATCH",
    admin=True,
    any_content=True,
    body="StageChange",
    summary="Change a lead's stage (sales feedback)",
    ok=(200, Reply("the changed lead", "StageChanged")),
    errors=(ValidationFailed, NotFound, PayloadTooLarge, UnsupportedMediaType),
)
def admin_set_stage(lead_id: str, body: "StageChange") -> "bodies.StageChanged":
    return runtime.current().sales_feedback.change_stage(lead_id, body)


@api.route(
    "/admin/leads/{lead_id}",
    "DELETE",
    admin=True,
    summary="Erase a lead (GDPR art. 17) and suppress the address for good",
    ok=(200, Reply("erased", "LeadErased")),
    errors=(ValidationFailed, NotFound),
    path_help={"lead_id": web.LEAD_ID_OR_EMAIL},
)
def admin_erase_lead(lead_id: str) -> "bodies.LeadErased":
    return runtime.current().privacy.erase(lead_id)


@api.route(
    "/admin/leads/{lead_id}/export",
    "GET",
    admin=True,
    summary="Export everything stored about a lead (GDPR art. 15)",
    ok=(200, Reply("the lead's data", "LeadExport")),
    errors=(ValidationFailed, NotFound),
    path_help={"lead_id": web.LEAD_ID_OR_EMAIL},
)
def admin_export_lead(lead_id: str) -> "bodies.LeadExport":
    return runtime.current().privacy.export(lead_id)


@api.route("/admin/export/leads.csv", "GET", admin=True, query_model="LeadExportParams", **web.CSV_EXPORT)
def admin_export_csv(query: "LeadExportParams") -> Response:
    return web.admin_export_csv(runtime.current(), query, api.request)


@api.route(
    "/admin/reports/funnel",
    "GET",
    admin=True,
    summary="Funnel by stage, channel and utm_campaign: conversion, velocity, cost per lead",
    ok=(200, Reply("the report", "FunnelReport")),
)
def admin_funnel_report() -> "bodies.FunnelReport":
    return runtime.current().reports.funnel()


@api.route(
    "/admin/reports/sequences",
    "GET",
    admin=True,
    summary="Email statistics per sequence step, and deliverability against SES's limits",
    ok=(200, Reply("the report", "SequenceReport")),
)
def admin_sequence_report() -> "bodies.SequenceReport":
    return runtime.current().reports.sequences()


@api.route(
    "/admin/reports/spend",
    "PUT",
    admin=True,
    any_content=True,
    body="SpendUpdate",
    summary="Set the spend to date on one channel (replaces the campaign file's)",
    ok=(200, Reply("the spend now counted", "SpendSet")),
    errors=(ValidationFailed, PayloadTooLarge, UnsupportedMediaType),
)
def admin_set_spend(body: "SpendUpdate") -> "bodies.SpendSet":
    return runtime.current().reports.set_spend(body)


# The dashboard's pages check the session cookie themselves: an API Gateway authorizer would
# answer a browser without the Authorization header with 401 before the login form could show.
@api.route("/admin/dashboard", "GET", **web.DASHBOARD)
def admin_dashboard() -> Response:
    from chalicelib import dashboard

    return dashboard.page(runtime.current(), api.request)


# Any content type: what is not a form is a wrong token, answered with the login page.
@api.route("/admin/login", "POST", any_content=True, **web.LOGIN)
def admin_login() -> Response:
    from chalicelib import dashboard

    return dashboard.login(runtime.current(), api.request)


@api.route("/admin/logout", "POST", any_content=True, **web.LOGOUT)
def admin_logout() -> Response:
    from chalicelib import dashboard

    return dashboard.logout(runtime.current(), api.request)


# -- event sources -------------------------------------------------------------------------------


@app.schedule(Rate(1, unit=Rate.MINUTES))
def dispatch(event: CloudWatchEvent) -> dict[str, Any]:
    lambda_context: Any = event.context  # Lambda's context object (Chalice types it loosely)
    current = runtime.current()
    report = current.dispatcher.scheduled_tick(lambda_context.get_remaining_time_in_millis, current.shard_starter)
    return vars(report)


@app.lambda_function(name="dispatch_shard")
def dispatch_shard(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One part of a fanned-out tick (chalicelib/nurture/fanout.py), started by ``dispatch``."""
    return vars(runtime.current().dispatcher.shard_tick(event, context.get_remaining_time_in_millis))


@app.on_dynamodb_record(stream_arn=sources.stream_arn, batch_size=100)
def on_lead_change(event: DynamoDBEvent) -> dict[str, Any]:
    from chalicelib import streams

    current = runtime.current()
    report = current.streams.handle(event.to_dict()["Records"])
    return streams.lambda_response(report, current.settings.stream_report_failures)


@app.on_sns_message(topic=sources.ses_events_topic)
def on_ses_feedback(event: SNSEvent) -> dict[str, Any]:
    return vars(runtime.current().feedback.handle(event.message))
