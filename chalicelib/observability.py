"""Structured logs and CloudWatch metrics, with the standard library only.

Logs: one JSON object per line (``JsonFormatter``), carrying the correlation id of the request,
invocation or stream record being handled (``correlated``), and with anything that looks like an
email address replaced by ``<email:sha256[:12]>`` as a last line of defence (the log calls
themselves never pass personal data; this catches what arrives inside exception messages).

Metrics: CloudWatch Embedded Metric Format. ``Metrics`` buffers counts during one Lambda
invocation and ``observe`` (the app's Chalice middleware) flushes them once at its end, as one
EMF line on stdout, which CloudWatch Logs turns into metrics in the ``Trellis`` namespace with the
one dimension ``Stage``.

aws-lambda-powertools does all of this and more, but costs ~7.6 MB in the package and ~14 ms
of cold-start import for the little of it used here (docs/operations.md, "Logs and metrics").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, Literal, Optional, Protocol, TextIO, get_args

from chalice.app import Request, Response

logger = logging.getLogger(__name__)

CORRELATION_HEADER: Final = "X-Correlation-Id"
NAMESPACE: Final = "Trellis"
STAGE_DIMENSION: Final = "Stage"

# The infra template's alarms use these names: change them together.
MetricName = Literal[
    "LeadsCaptured",  # a new lead accepted by a form
    "BotsBlocked",  # a submission the bot defence refused (answered as a success, stored nowhere)
    "EmailsSent",  # one nurture or handoff email accepted by SES
    "SendFailures",  # one send SES did not accept (throttled, rejected or failed)
    "Bounces",  # one permanently bounced recipient
    "Complaints",  # one complaining recipient
    "SqlHandoffs",  # a lead newly handed to sales (the handoff's creating write succeeded)
    "ItemErrors",  # one due item (enrolment, handoff) that failed with an error; the tick went on
]
METRIC_NAMES: Final[tuple[str, ...]] = get_args(MetricName)

# -- correlation ids ------------------------------------------------------------------------

_correlation_id: ContextVar[str] = ContextVar("trellis_correlation_id", default="")
_function_name: ContextVar[str] = ContextVar("trellis_function_name", default="")


def correlation_id() -> str:
    """The id of what is being handled now ("" outside any ``correlated`` block)."""
    return _correlation_id.get()


def new_correlation_id() -> str:
    return secrets.token_hex(8)


@contextmanager
def correlated(correlation_id: str, function_name: Optional[str] = None) -> Iterator[str]:
    """Tag every log line written inside the block with ``correlation_id`` (a fresh id if empty).

    Blocks nest: a stream record's id replaces the invocation's for the record's lines and the
    invocation's is back after the block, also when it ends with an exception.
    """
    cid = correlation_id or new_correlation_id()
    token = _correlation_id.set(cid)
    function_token = _function_name.set(function_name) if function_name else None
    try:
        yield cid
    finally:
        if function_token is not None:
            _function_name.reset(function_token)
        _correlation_id.reset(token)


def function_name() -> str:
    """The Lambda function being run: from its context, else the runtime's environment."""
    return _function_name.get() or os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")


# -- redaction ------------------------------------------------------------------------------

# What addresses are made of in practice (letters of any script, digits, . _ + ' - and the %
# of URL encoding), "@" or its URL encoding, and a dotted domain. Not RFC 5322's whole local part:
# its / = ? & # would swallow the path or query an address sits in. Broad otherwise: a false
# positive costs a hash in a log line.
_EMAIL = re.compile(r"[\w.+'%-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)


def _email_hash(match: re.Match[str]) -> str:
    address = match.group(0).replace("%40", "@").lower()
    return f"<email:{hashlib.sha256(address.encode()).hexdigest()[:12]}>"


def redact(text: str) -> str:
    """``text`` with every email address replaced by ``<email:`` + 12 hex of its SHA-256 + ``>``."""
    return _EMAIL.sub(_email_hash, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value


# -- logs -----------------------------------------------------------------------------------

# What every LogRecord has, and what the Lambda runtime's filter adds: not "extra" fields.
_RECORD_ATTRIBUTES: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "aws_request_id",
    "tenant_id",
}
_MARK: Final = "_trellis_json"
_LAMBDA_HANDLERS: Final = frozenset({"LambdaLoggerHandler", "LambdaLoggerHandlerWithFrameType"})
# Trellis's own loggers, which TRELLIS_LOG_LEVEL sets: chalicelib.* and Chalice's app.log (the
# app's name). Third-party libraries keep the root logger's level (WARNING unless set otherwise).
OWN_LOGGERS: Final = ("chalicelib", "trellis")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, correlation_id, function,
    exception (when there is one) and the record's JSON-serialisable ``extra=`` fields."""

    def __init__(self, line_end: str = "") -> None:
        super().__init__()
        self._line_end = line_end

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            # Outside the middleware (the authorizer, a cold start) the Lambda runtime's own
            # request id, which its handler's filter puts on every record.
            "correlation_id": correlation_id() or str(getattr(record, "aws_request_id", "") or ""),
            "function": function_name(),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        for key, value in vars(record).items():
            if key in _RECORD_ATTRIBUTES or key in entry or key.startswith("_"):
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue  # not JSON: left out rather than guessed at
            entry[key] = _redact_value(value)
        return json.dumps(entry, ensure_ascii=False) + self._line_end


class _StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stdout`` is at the time (pytest swaps it per test)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


_configure_lock = threading.Lock()


def configure_logging(level: Optional[str | int] = None) -> None:
    """Make every log record a JSON line; idempotent. ``level`` sets Trellis's own loggers
    (INFO on the first call when not given).

    In Lambda the runtime has put its handler on the root logger (it frames each record for
    CloudWatch Logs and adds ``aws_request_id``): only its formatter is replaced. Anywhere else
    (chalice local, the twin, pytest) one handler writing to stdout is added; other handlers on
    the root logger (pytest's caplog) are left alone.
    """
    root = logging.getLogger()
    with _configure_lock:
        installed = any(getattr(h, _MARK, False) for h in root.handlers)
        if not installed:
            lambda_handlers = [h for h in root.handlers if type(h).__name__ in _LAMBDA_HANDLERS]
            for handler in lambda_handlers:
                # The runtime's own text format ends in a newline, which its log sink expects.
                handler.setFormatter(JsonFormatter(line_end="\n"))
                setattr(handler, _MARK, True)
            if not lambda_handlers:
                stdout = _StdoutHandler()
                stdout.setFormatter(JsonFormatter())
                setattr(stdout, _MARK, True)
                root.addHandler(stdout)
        if level is not None or not installed:
            for name in OWN_LOGGERS:
                logging.getLogger(name).setLevel(level if level is not None else logging.INFO)


# -- metrics --------------------------------------------------------------------------------


class MetricsSink(Protocol):
    """What domain code counts with (injected: tests pass their own or none)."""

    def add(self, name: MetricName, count: int = 1) -> None: ...


class NoMetrics:
    def add(self, name: MetricName, count: int = 1) -> None:
        pass


NO_METRICS: Final = NoMetrics()


def _print_line(line: str) -> None:
    print(line, flush=True)


class Metrics:
    """Counts buffered until ``flush``, which writes them as one EMF document (one line)."""

    def __init__(
        self,
        stage: str,
        namespace: str = NAMESPACE,
        write: Callable[[str], None] = _print_line,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.stage = stage
        self.namespace = namespace
        self._write = write
        self._now = now
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: MetricName, count: int = 1) -> None:
        if name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {name!r}: one of {', '.join(METRIC_NAMES)}")
        if count < 0:
            raise ValueError("metric counts only go up")
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + count

    def pending(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def document(self, counts: dict[str, int]) -> dict[str, Any]:
        names = [name for name in METRIC_NAMES if name in counts]
        return {
            "_aws": {
                "Timestamp": int(self._now() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [[STAGE_DIMENSION]],
                        "Metrics": [{"Name": name, "Unit": "Count"} for name in names],
                    }
                ],
            },
            STAGE_DIMENSION: self.stage,
            **{name: counts[name] for name in names},
            # Not metrics (no directive names them): they link the line to the invocation's logs.
            "correlation_id": correlation_id(),
            "function": function_name(),
        }

    def flush(self) -> Optional[str]:
        """Write what was counted since the last flush as one line; nothing when nothing was."""
        with self._lock:
            counts, self._counts = self._counts, {}
        if not counts:
            return None
        line = json.dumps(self.document(counts), separators=(",", ":"))
        self._write(line)
        return line


# -- one invocation -------------------------------------------------------------------------


def _invocation(event: Any) -> tuple[str, str]:
    """(correlation id, function name) of a Chalice middleware event: the API Gateway request id
    for HTTP, the Lambda request id for event sources; a fresh id when there is none."""
    if isinstance(event, Request):
        context = event.context if isinstance(event.context, dict) else {}
        lambda_context = getattr(event, "lambda_context", None)
        return str(context.get("requestId") or ""), str(getattr(lambda_context, "function_name", "") or "")
    lambda_context = getattr(event, "context", None)
    return (
        str(getattr(lambda_context, "aws_request_id", "") or ""),
        str(getattr(lambda_context, "function_name", "") or ""),
    )


def observe(event: Any, get_response: Callable[[Any], Any], metrics: Callable[[], Optional[Metrics]]) -> Any:
    """Chalice middleware body for every kind of event: correlate the invocation's log lines,
    flush its metrics once at its end (also when it fails), and answer HTTP requests with the
    ``X-Correlation-Id`` header. ``metrics`` returns the buffer to flush, or None (none built)."""
    configure_logging()
    cid, function = _invocation(event)
    with correlated(cid, function) as cid:
        try:
            response = get_response(event)
        finally:
            buffer = metrics()
            if buffer is not None:
                try:
                    buffer.flush()
                except Exception:  # a lost metrics line must not fail the work it counted
                    logger.exception("metrics flush failed")
    if isinstance(response, Response):
        response.headers[CORRELATION_HEADER] = cid
    return response
