from __future__ import annotations

import html as html_module
import json
import re
from typing import Any
from urllib.parse import urlencode

import boto3

from testkit.requests import JSON_HEADERS, with_rendered_at
from testkit.requests import RENDERED_LONG_AGO as RENDERED_LONG_AGO  # re-exported

FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


def post_json(client: Any, path: str, data: Any, headers: dict[str, str] | None = None) -> Any:
    body = json.dumps(with_rendered_at(path, data))
    return client.http.post(path, headers={**JSON_HEADERS, **(headers or {})}, body=body)


def post_form(client: Any, path: str, data: dict[str, str], headers: dict[str, str] | None = None) -> Any:
    return client.http.post(path, headers={**FORM_HEADERS, **(headers or {})}, body=urlencode(data))


def body(response: Any) -> Any:
    return json.loads(response.body)


class RequestCounter:
    """Counts AWS API calls by operation name with botocore's event hooks."""

    def __init__(self, client: Any) -> None:
        self.calls: list[str] = []
        client.meta.events.register("before-call.*.*", self._record)

    def _record(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)

    def reset(self) -> None:
        self.calls.clear()


class SalesInbox:
    """An SQS queue subscribed to the sales topic: what SNS delivered, accumulated.

    moto delivers SNS to SQS in-process, so this reads exactly what subscribers would get.
    """

    def __init__(self, topic_arn: str) -> None:
        self._sqs = boto3.client("sqs")
        self._url = self._sqs.create_queue(QueueName="sales-inbox")["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=self._url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        boto3.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
        self.received: list[dict[str, Any]] = []

    def messages(self) -> list[dict[str, Any]]:
        while True:
            page = self._sqs.receive_message(QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not page.get("Messages"):
                return self.received
            for message in page["Messages"]:
                self.received.append(json.loads(json.loads(message["Body"])["Message"]))
                self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=message["ReceiptHandle"])


# The trap link every HTML email carries for machines (chalicelib.nurture.render): hidden from people.
_TRAP_BLOCK = re.compile(r"<div hidden[^>]*>.*?</div>", re.DOTALL)


def visible_html(html: str) -> str:
    """An email's HTML as a person can see and follow it: without the hidden trap link."""
    return _TRAP_BLOCK.sub("", html)


def trap_href(html: str) -> str:
    """The trap link's URL (unescaped); fails unless there is exactly one."""
    [block] = _TRAP_BLOCK.findall(html)
    [href] = re.findall(r'href="([^"]+)"', block)
    return html_module.unescape(href)


# A person's browser, as Chrome on Windows sends it: clicks and opens with it count (no machine signal).
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
BROWSER = {"User-Agent": BROWSER_UA}
