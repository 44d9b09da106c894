"""SES gets exactly one attempt per call: a retried SendEmail whose first answer was lost sends twice.

moto cannot answer a 500 (its SES always succeeds or refuses for good), so these tests point the
real ``aws.sesv2()`` client at a TEST STUB: a tiny HTTP server on 127.0.0.1 that answers every
request with a retryable 500 and counts the requests it saw.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.errors import SendFailed
from chalicelib.nurture.mailer import SesMailer


class _AlwaysFailing(BaseHTTPRequestHandler):
    """Test stub, not an SES fake: every request is an InternalFailure, which standard retry
    mode would retry."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests += 1  # type: ignore[attr-defined]
        body = b'{"__type":"InternalFailure","message":"stub failure"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-ErrorType", "InternalFailure")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


class FailingStub:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysFailing)
        self.server.requests = 0  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def requests(self) -> int:
        return int(self.server.requests)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def failing_ses(monkeypatch: pytest.MonkeyPatch) -> Iterator[FailingStub]:
    stub = FailingStub()
    monkeypatch.setenv("AWS_ENDPOINT_URL", stub.url)  # boto3 reads it, as in the twin
    aws.reset()
    try:
        yield stub
    finally:
        aws.reset()
        stub.close()


def test_send_email_is_attempted_exactly_once_when_ses_answers_500(failing_ses: FailingStub) -> None:
    mailer = SesMailer(aws.sesv2, aws.ses_v1, "trellis-test", max_send_rate=1.0)

    with pytest.raises(SendFailed):
        mailer.send("hello@demo.trellis.example", "lead@example.com", b"Subject: hi\r\n\r\nhi\r\n")

    assert failing_ses.requests == 1  # standard mode with max_attempts=1 made 2: one retry


def test_an_environment_max_attempts_does_not_bring_retries_back(
    failing_ses: FailingStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "5")  # the client's own setting wins over the environment
    aws.reset()

    with pytest.raises(ClientError):
        aws.sesv2().send_email(
            FromEmailAddress="hello@demo.trellis.example",
            Destination={"ToAddresses": ["lead@example.com"]},
            Content={"Raw": {"Data": b"Subject: hi\r\n\r\nhi\r\n"}},
        )

    assert failing_ses.requests == 1
