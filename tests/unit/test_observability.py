"""Structured logs, correlation ids, redaction and EMF metrics (chalicelib.observability).

Unit tests of the formatter, the correlation context, the logging set-up (in Lambda and under
pytest) and the EMF document; then one whole loop through the app on moto (forms, a bot, the
stream, a dispatcher tick, an SQL handoff, an SES bounce) whose every printed line is checked.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib import observability
from chalicelib.entities import lead_id_for
from chalicelib.observability import JsonFormatter, Metrics, correlated, correlation_id, redact
from tests.conftest import LambdaContext
from tests.helpers import body, post_form, post_json

ADDRESS = "Zenobia.Quist@Example.com"
HASHED = re.compile(r"<email:[0-9a-f]{12}>")


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """A logger of its own, formatted by JsonFormatter into a buffer; returns the parsed lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("tests.observability")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False

    def parsed() -> list[dict[str, Any]]:
        text = stream.getvalue()
        assert text.endswith("\n") or text == ""
        return [json.loads(line) for line in text.splitlines()]

    yield parsed
    log.removeHandler(handler)
    log.propagate = True


LOG = logging.getLogger("tests.observability")


# -- the formatter ----------------------------------------------------------------------------


def test_each_record_is_one_json_line_with_the_standard_fields(lines):
    with correlated("req-1", "trellis-dev-api_handler"):
        LOG.info("line one\nand its second line")
    LOG.warning("outside")

    first, second = lines()
    assert set(first) == {"timestamp", "level", "logger", "message", "correlation_id", "function"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["timestamp"])
    assert (first["level"], first["logger"]) == ("INFO", "tests.observability")
    assert first["message"] == "line one\nand its second line"
    assert (first["correlation_id"], first["function"]) == ("req-1", "trellis-dev-api_handler")
    assert (second["level"], second["correlation_id"], second["function"]) == ("WARNING", "", "")


def test_extra_fields_are_kept_when_json_and_dropped_when_not(lines):
    LOG.info(
        "dispatch tick", extra={"tick": {"sent": 2, "exits": {"stage:sql": 1}}, "lead_id": "ab12", "obj": object()}
    )

    [line] = lines()
    assert line["tick"] == {"sent": 2, "exits": {"stage:sql": 1}}
    assert line["lead_id"] == "ab12"
    assert "obj" not in line


def test_exceptions_are_formatted_into_the_same_line(lines):
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        LOG.exception("send failed")

    [line] = lines()
    assert line["level"] == "ERROR" and line["message"] == "send failed"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("RuntimeError: boom")


def test_email_addresses_are_hashed_in_message_args_exception_and_extra(lines):
    try:
        raise ValueError(f"MessageRejected: Email address is not verified: {ADDRESS}")
    except ValueError:
        LOG.exception("could not send to %s", ADDRESS.upper(), extra={"to": [ADDRESS], "by": {ADDRESS: 1}})
    LOG.info("path /u/%s?to=%s", ADDRESS.replace("@", "%40"), ADDRESS)

    first, second = lines()
    text = json.dumps([first, second])
    assert "zenobia" not in text.lower() and "example.com" not in text.lower()
    # Same address, same hash, whatever its case or encoding: lines about one lead still match.
    [tag] = set(HASHED.findall(text))
    assert first["message"] == f"could not send to {tag}"
    assert first["exception"].endswith(f"Email address is not verified: {tag}")
    assert first["to"] == [tag] and first["by"] == {tag: 1}
    assert second["message"] == f"path /u/{tag}?to={tag}"


def test_redact_leaves_text_without_an_address_alone():
    for text in ("lead 3f2a9c/welcome.welcome sent", "score 45 @ 09:30", "a@b", "user@localhost"):
        assert redact(text) == text
    assert HASHED.fullmatch(redact("rae+news@beta.example"))
    assert redact("ADA@x.example and ada@X.example") == " and ".join([redact("ada@x.example")] * 2)


def test_lambda_request_id_is_the_fallback_correlation_id(lines):
    """Outside the middleware (the authorizer, an import-time line) the Lambda runtime's filter
    has put aws_request_id on the record; inside, the middleware's id wins."""
    LOG.info("authorizer", extra={"aws_request_id": "lambda-req-9"})
    with correlated("api-req-1"):
        LOG.info("in a route", extra={"aws_request_id": "lambda-req-10"})

    first, second = lines()
    assert first["correlation_id"] == "lambda-req-9" and "aws_request_id" not in first
    assert second["correlation_id"] == "api-req-1"


# -- correlation ids --------------------------------------------------------------------------


def test_correlated_blocks_nest_and_restore_even_on_errors():
    assert correlation_id() == ""
    with correlated("invocation-1"):
        with correlated("record-1"):
            assert correlation_id() == "record-1"
        assert correlation_id() == "invocation-1"
        with pytest.raises(KeyError), correlated("record-2"):
            raise KeyError("x")
        assert correlation_id() == "invocation-1"
        with correlated("") as fresh:
            assert re.fullmatch(r"[0-9a-f]{16}", fresh) and correlation_id() == fresh
    assert correlation_id() == ""


# -- logging set-up ---------------------------------------------------------------------------


class LambdaLoggerHandler(logging.Handler):
    """Named like the Lambda Python runtime's root handler (awslambdaric.bootstrap)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("[%(levelname)s]\t%(asctime)s\t%(message)s\n"))
        self.written: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.written.append(self.format(record))


def ours(root: logging.Logger) -> list[logging.Handler]:
    """The root logger's handlers but pytest's (caplog adds its own around each test)."""
    return [h for h in root.handlers if not type(h).__module__.startswith("_pytest")]


@pytest.fixture
def bare_root() -> Iterator[logging.Logger]:
    """The root logger with no handlers, restored afterwards (with the levels we touch)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    levels = {name: logging.getLogger(name).level for name in observability.OWN_LOGGERS}
    root.handlers = []
    yield root
    root.handlers = saved
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_in_lambda_the_runtime_handler_gets_the_json_formatter_once(bare_root):
    lambda_handler = LambdaLoggerHandler()
    bare_root.addHandler(lambda_handler)

    observability.configure_logging("WARNING")
    observability.configure_logging("INFO")  # a second cold-start path: nothing added twice
    logging.getLogger("chalicelib.test").info("hello %s", ADDRESS)

    assert ours(bare_root) == [lambda_handler]
    assert isinstance(lambda_handler.formatter, JsonFormatter)
    [written] = lambda_handler.written
    assert written.endswith("}\n")  # the runtime's sink writes what it is given: one line each
    assert json.loads(written)["message"] == f"hello {redact(ADDRESS)}"


def test_elsewhere_one_stdout_handler_is_added_and_levels_follow_the_setting(bare_root, capsys):
    observability.configure_logging("ERROR")
    observability.configure_logging("ERROR")
    logging.getLogger("chalicelib.test").warning("below the level")
    logging.getLogger("chalicelib.test").error("at the level")
    logging.getLogger("botocore.test").info("a library's info")

    assert len(ours(bare_root)) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["message"] == "at the level"
    observability.configure_logging("DEBUG")
    logging.getLogger("trellis").debug("app.log debug")
    assert json.loads(capsys.readouterr().out)["logger"] == "trellis"


def test_caplog_still_sees_records_after_configuring(caplog):
    observability.configure_logging("INFO")
    logging.getLogger("chalicelib.test").info("seen by caplog")
    assert [r.getMessage() for r in caplog.records if r.name == "chalicelib.test"] == ["seen by caplog"]


# -- EMF --------------------------------------------------------------------------------------

# The units the EMF specification (and PutMetricData) accept.
UNITS = {
    *(f"{p}{u}{per}" for p in ("Kilo", "Mega", "Giga", "Tera") for u in ("bytes", "bits") for per in ("", "/Second")),
    *(f"{u}{per}" for u in ("Bytes", "Bits") for per in ("", "/Second")),
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Percent",
    "Count",
    "Count/Second",
    "None",
}


def assert_emf(document: dict[str, Any]) -> dict[str, int]:
    """Check one document against the EMF specification; returns its metric values."""
    meta = document["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000  # ms since the epoch
    directives = meta["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    values: dict[str, int] = {}
    for directive in directives:
        assert set(directive) <= {"Namespace", "Dimensions", "Metrics"}
        assert isinstance(directive["Namespace"], str) and 0 < len(directive["Namespace"].strip()) <= 255
        for dimension_set in directive["Dimensions"]:
            assert isinstance(dimension_set, list) and len(dimension_set) <= 30
            for dimension in dimension_set:
                assert isinstance(document[dimension], str) and 0 < len(document[dimension]) <= 1024
        assert 0 < len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"}
            assert metric["Unit"] in UNITS
            value = document[metric["Name"]]
            assert isinstance(value, (int, float)) and not isinstance(value, bool)
            values[metric["Name"]] = int(value)
    return values


def test_one_emf_line_per_flush_with_the_stage_dimension_and_the_counts():
    written: list[str] = []
    metrics = Metrics("spring-2026", write=written.append, now=lambda: 1_790_000_000.1234)

    assert metrics.flush() is None and written == []  # nothing counted, nothing written
    metrics.add("LeadsCaptured")
    metrics.add("EmailsSent", 3)
    metrics.add("LeadsCaptured")
    with correlated("req-7", "trellis-spring-2026-dispatch"):
        line = metrics.flush()

    assert [line] == written and "\n" not in written[0]
    document = json.loads(written[0])
    assert assert_emf(document) == {"LeadsCaptured": 2, "EmailsSent": 3}
    [directive] = document["_aws"]["CloudWatchMetrics"]
    assert directive == {
        "Namespace": "Trellis",
        "Dimensions": [["Stage"]],
        "Metrics": [{"Name": "LeadsCaptured", "Unit": "Count"}, {"Name": "EmailsSent", "Unit": "Count"}],
    }
    assert document["_aws"]["Timestamp"] == 1_790_000_000_123
    assert document["Stage"] == "spring-2026"
    assert (document["correlation_id"], document["function"]) == ("req-7", "trellis-spring-2026-dispatch")
    assert metrics.flush() is None and len(written) == 1  # the buffer emptied with the flush


def test_only_the_known_metric_names_and_positive_counts():
    metrics = Metrics("dev", write=lambda line: None)
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.add("LeadCaptured")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        metrics.add("Bounces", -1)
    assert observability.METRIC_NAMES == (
        "LeadsCaptured",
        "BotsBlocked",
        "EmailsSent",
        "SendFailures",
        "Bounces",
        "Complaints",
        "SqlHandoffs",
        "ItemErrors",
    )


class Event:
    def __init__(self, request_id: str) -> None:
        self.context = LambdaContext()
        self.context.aws_request_id = request_id


def test_an_invocation_that_fails_still_flushes_its_metrics_once():
    written: list[str] = []
    metrics = Metrics("dev", write=written.append)
    seen: list[str] = []

    def handler(event: Any) -> Any:
        seen.append(correlation_id())
        metrics.add("SqlHandoffs")
        raise RuntimeError("SNS down")

    with pytest.raises(RuntimeError):
        observability.observe(Event("lambda-1"), handler, lambda: metrics)

    assert seen == ["lambda-1"] and correlation_id() == ""
    [line] = written
    assert json.loads(line)["SqlHandoffs"] == 1 and json.loads(line)["correlation_id"] == "lambda-1"
    observability.observe(Event("lambda-2"), lambda event: "ok", lambda: metrics)
    assert len(written) == 1  # nothing counted: no line


def test_api_gateway_request_id_is_the_correlation_id_and_echoed():
    from app import app

    def api_event(request_id: str | None) -> dict[str, Any]:
        context: dict[str, Any] = {"httpMethod": "GET", "resourcePath": "/health", "path": "/health"}
        if request_id is not None:
            context["requestId"] = request_id
        return {
            "requestContext": context,
            "headers": {},
            "multiValueQueryStringParameters": None,
            "pathParameters": {},
            "stageVariables": None,
            "body": None,
        }

    answer = app(api_event("c0ffee-42"), LambdaContext())
    fresh = app(api_event(None), LambdaContext())

    assert answer["statusCode"] == 200
    assert answer["headers"][observability.CORRELATION_HEADER] == "c0ffee-42"
    assert re.fullmatch(r"[0-9a-f]{16}", fresh["headers"][observability.CORRELATION_HEADER])


# -- the whole loop ---------------------------------------------------------------------------

ZENOBIA = {"email": "Zenobia.Quist@Newsletter.example", "first_name": "Zenobia", "consent": True}
# A hand-raiser: demo_request makes it an SQL (see tests/integration/test_handoff.py).
QUILLON = {"email": "quillon.vasquez@hotlead.example", "first_name": "Quillon", "company": "Xylofirm", "consent": True}
BOT = {"email": "ottoline.bot@spam.example", "first_name": "Ottoline", "consent": "on", "website": "http://spam"}
SECRETS = ("zenobia", "quist", "quillon", "vasquez", "xylofirm", "ottoline", "newsletter.example", "hotlead.example")


class Context(LambdaContext):
    def __init__(self, request_id: str) -> None:
        super().__init__()
        self.aws_request_id = request_id
        self.function_name = "trellis-test-handler"


def test_a_whole_loop_logs_json_with_correlation_ids_no_pii_and_adds_up_in_emf(
    client, rt, clock, stream, outbox, caplog, capsys
):
    from app import dispatch, on_lead_change, on_ses_feedback
    from twin.pump import batches, scheduled_event

    caplog.set_level(logging.DEBUG, logger="chalicelib")
    capsys.readouterr()  # what fixtures printed is not part of the loop
    steps: list[dict[str, Any]] = []  # per invocation: the id it must carry, the ids it may, its lines

    def step(name: str, expected_id: str | None, allowed: set[str] | None = None) -> None:
        captured = capsys.readouterr()
        assert captured.err == "", captured.err
        parsed = [json.loads(line) for line in captured.out.splitlines()]
        steps.append({"name": name, "id": expected_id, "allowed": allowed or set(), "lines": parsed})

    def http(name: str, response: Any, status: int) -> Any:
        assert response.status_code == status, response.body
        step(name, response.headers[observability.CORRELATION_HEADER])
        return response

    invocations = 0

    def pump(redeliver: bool = False) -> int:
        nonlocal invocations
        records = stream.read()
        for batch in batches(records):
            for _ in range(2 if redeliver else 1):
                invocations += 1
                context = Context(f"stream-{invocations}")
                on_lead_change({"Records": batch}, context)
                step("stream", context.aws_request_id, {r["eventID"] for r in batch})
        return len(records)

    # Two new leads, one known one (not counted again), one bot.
    http("zenobia", post_json(client, "/forms/newsletter", ZENOBIA), 200)
    http("zenobia again", post_json(client, "/forms/newsletter", ZENOBIA), 200)
    http("bot", post_form(client, "/forms/newsletter", BOT), 303)
    quillon = http("quillon", post_json(client, "/forms/ebook", QUILLON), 200)
    pump()  # the immediate first steps: Zenobia's welcome, Quillon's ebook
    http(
        "demo request",
        post_json(client, "/events", {"token": body(quillon)["lead_token"], "type": "demo_request"}),
        202,
    )
    for _ in range(6):  # rescore -> SQL and the handoff -> the owner's email: each batch twice
        if not pump(redeliver=True):
            break
    clock.advance(2 * 24 * 3600)  # Wednesday: Zenobia's best-of is due
    report = dispatch(scheduled_event(), Context("tick-1"))
    step("tick", "tick-1")
    assert report["sent"] == 1
    pump()
    notification = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": ZENOBIA["email"], "diagnosticCode": "smtp; 550 user unknown"}],
        },
        "mail": {"destination": [ZENOBIA["email"]], "headers": [{"name": "To", "value": ZENOBIA["email"]}]},
    }
    sns = client.events.generate_sns_event(message=json.dumps(notification), subject="SES")
    assert on_ses_feedback(sns, Context("ses-1"))["suppressed"] == 1
    step("bounce", "ses-1")
    pump()

    # Every line printed is JSON: a log line with the invocation's correlation id, or EMF.
    totals: dict[str, int] = {}
    logged_ids: set[str] = set()
    for s in steps:
        logs = [line for line in s["lines"] if "_aws" not in line]
        emf = [line for line in s["lines"] if "_aws" in line]
        for line in logs:
            assert {"timestamp", "level", "logger", "message", "function"} <= set(line)
            assert line["correlation_id"] in {s["id"]} | s["allowed"], (s["name"], line)
            logged_ids.add(line["correlation_id"])
        assert len(emf) <= 1, f"{s['name']}: one EMF line per invocation at most"
        for document in emf:
            assert document["Stage"] == "test" and document["correlation_id"] == s["id"]
            for name, value in assert_emf(document).items():
                totals[name] = totals.get(name, 0) + value
    # The form submissions logged, under the id their response carried.
    for name in ("zenobia", "zenobia again", "bot", "quillon"):
        [s] = [s for s in steps if s["name"] == name]
        assert s["id"] and [line["message"] for line in s["lines"] if "_aws" not in line], name
    assert {s["id"] for s in steps if s["name"] in ("tick", "bounce")} <= logged_ids

    # Welcome + ebook (stream), the owner's handoff email, best-of (tick): every one SES took.
    assert totals == {"LeadsCaptured": 2, "BotsBlocked": 1, "EmailsSent": 4, "SqlHandoffs": 1, "Bounces": 1}
    assert totals["EmailsSent"] == len(outbox())

    # No address, name or field value in clear: not in what was printed ...
    printed = "\n".join(json.dumps(line) for s in steps for line in s["lines"]).lower()
    for secret in SECRETS:
        assert secret not in printed, secret
    # ... and not in what the code logged either (the redaction is a safety net, not the plan).
    assert caplog.records
    for record in caplog.records:
        raw = (record.getMessage() + json.dumps(vars(record), default=str)).lower()
        for secret in SECRETS:
            assert secret not in raw, (secret, record.getMessage())
    assert lead_id_for("quillon.vasquez@hotlead.example") in printed  # lead ids (hashes) may appear
