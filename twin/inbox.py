"""The twin's inboxes: what SES and the mailboxes behind it do with each email the twin sends.

Deployed, SES tells the stage what became of every email through the configuration set's event
destination (the ``SesEventsTopic`` of infra/trellis.yaml), and real inboxes touch the links: mail
security gateways fetch every link of a message within seconds of delivery, Apple Mail Privacy
Protection fetches its images. moto accepts an email and does nothing more, so "Delivered" would
mean nothing locally and no scanner would ever be met before production. Here, by the recipient:

- SES's mailbox simulator (``@simulator.amazonses.com``): ``bounce@`` bounces for good,
  ``complaint@`` is delivered and then marked as spam, ``suppressionlist@`` bounces as an address
  on SES's suppression list; a ``+label`` is allowed, as SES allows it;
- ``@scanned.example``: a link scanner (Safe Links and the like) fetches every link of the HTML
  part, hidden ones included, and the open pixel, each with a HEAD and then a GET;
- ``@mpp.example``: an Apple Mail Privacy Protection proxy fetches the images, the pixel with them;
- anyone else: delivered.

Every one of them gets the SES event JSON published to the SES events topic, as SES publishes it
(``eventType``, ``mail`` with every header, ``delivery``/``bounce``/``complaint``), and only the
event types the configuration set's destination matches. The stage's handler reads them from
there: ``FeedbackPump`` is the twin standing in for SNS->Lambda (moto's SNS cannot invoke a Lambda
without docker): an SQS queue subscribed to the topic receives SNS's envelope, and the pump calls
``app.on_ses_feedback`` with the event Lambda would get.

Nothing here fetches a URL that is not on 127.0.0.1, and no redirect is followed: a tracked link
redirects to its destination on the internet, and nothing of the twin may talk to it.

``parse_mail``, ``inbox_of``, ``ses_events`` and ``fetches`` decide; ``Inbox`` carries a decision
out through the functions it is given (publish, fetch), so all of it is tested without servers.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_string, policy
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import yaml

logger = logging.getLogger("twin.inbox")

LOCAL_HOST = "127.0.0.1"
SIMULATOR_DOMAIN = "simulator.amazonses.com"
SCANNED_DOMAIN = "scanned.example"
APPLE_DOMAIN = "mpp.example"
PIXEL_PATH = "/t/o/"  # the open pixel's path on the API (chalicelib.tracking.LinkBuilder.open_pixel)

# What happens to an email, by recipient.
DELIVERED = "delivered"
BOUNCED = "simulator bounce"
COMPLAINED = "simulator complaint"
SUPPRESSED = "simulator suppression list"
SCANNED = "link scanner"
APPLE_PROXY = "Apple privacy proxy"

# The simulator's local parts (before any +label) that do something other than deliver.
_SIMULATED = {"bounce": BOUNCED, "complaint": COMPLAINED, "suppressionlist": SUPPRESSED}
_READERS = {SCANNED_DOMAIN: SCANNED, APPLE_DOMAIN: APPLE_PROXY}

# SES's event types as the event JSON names them, and as an event destination matches them.
DELIVERY, BOUNCE, COMPLAINT = "Delivery", "Bounce", "Complaint"
EVENTS_OF = {
    DELIVERED: (DELIVERY,),
    SCANNED: (DELIVERY,),
    APPLE_PROXY: (DELIVERY,),
    BOUNCED: (BOUNCE,),
    SUPPRESSED: (BOUNCE,),
    COMPLAINED: (DELIVERY, COMPLAINT),  # delivered, then the recipient marks it as spam
}
EVENT_SUBJECT = "Amazon SES Email Event Notification"  # the SNS subject SES publishes events with

# Apple's proxy sends this and nothing else as its user agent.
APPLE_PROXY_AGENT = "Mozilla/5.0"
# Link scanners as they present themselves; rotated, one per URL (its HEAD and its GET).
SCANNER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Safari/537.36 Edg/124.0.0.0 Microsoft Defender for Office 365 Safe Links",
    "Mozilla/5.0 (compatible; Mimecast URL Protect)",
    "Mozilla/5.0 (compatible; Barracuda Link Protection)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.6367.60 Safari/537.36",
    "python-requests/2.31.0",
)

FETCH_TIMEOUT_SECONDS = 5.0
MAX_BODY_BYTES = 64 * 1024  # a scanner reads the page; nothing here needs more of it


# -- what was sent ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SentMail:
    """One email SES accepted: its message id, envelope and raw MIME."""

    message_id: str
    source: str
    destinations: tuple[str, ...]
    raw: str


@dataclass(frozen=True)
class ParsedMail:
    headers: tuple[tuple[str, str], ...]
    links: tuple[str, ...]  # every href of the HTML part, in order, each once
    images: tuple[str, ...]  # every img src of the HTML part, in order, each once

    @property
    def pixels(self) -> tuple[str, ...]:
        return tuple(src for src in self.images if PIXEL_PATH in src)

    def header(self, name: str) -> str:
        return next((value for key, value in self.headers if key.lower() == name.lower()), "")


class _References(HTMLParser):
    """Every href and img src, as a scanner reads them: markup that hides a link hides nothing."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: dict[str, None] = {}
        self.images: dict[str, None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        for name, value in attrs:
            if not value or not value.strip():
                continue
            if name == "href":
                self.links[value.strip()] = None
            elif name == "src" and tag == "img":
                self.images[value.strip()] = None


def parse_mail(raw: str) -> ParsedMail:
    message = message_from_string(raw, policy=policy.default)
    headers = tuple((name, str(value)) for name, value in message.items())
    html = message.get_body(("html",))
    references = _References()
    if html is not None:
        references.feed(str(html.get_content()))
        references.close()
    return ParsedMail(headers, tuple(references.links), tuple(references.images))


def envelope_recipients(destinations: Iterable[str]) -> list[str]:
    """Each address once (moto lists the envelope's and the To header's)."""
    seen: dict[str, str] = {}
    for _, address in getaddresses(list(destinations)):
        if address and address.casefold() not in seen:
            seen[address.casefold()] = address
    return list(seen.values())


def inbox_of(address: str) -> str:
    """What happens to email sent to ``address``."""
    local, _, domain = address.rpartition("@")
    domain = domain.lower().rstrip(".")
    if domain == SIMULATOR_DOMAIN:
        return _SIMULATED.get(local.partition("+")[0].lower(), DELIVERED)
    return _READERS.get(domain, DELIVERED)


# -- what SES publishes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sender:
    """Where the events say the email came from: the account, region and configuration set."""

    account_id: str
    region: str
    configuration_set: str


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _feedback_id(moment: datetime) -> str:
    return f"{int(moment.timestamp() * 1000):016x}-{uuid.uuid4()}-000000"


def mail_object(sent: SentMail, mail: ParsedMail, sender: Sender, sent_at: datetime) -> dict[str, Any]:
    """The ``mail`` object of an SES event: every header (the trace header among them)."""
    source = parseaddr(sent.source)[1] or parseaddr(mail.header("From"))[1]
    domain = source.rpartition("@")[2]
    return {
        "timestamp": _timestamp(sent_at),
        "source": source,
        "sourceArn": f"arn:aws:ses:{sender.region}:{sender.account_id}:identity/{domain}",
        "sendingAccountId": sender.account_id,
        "messageId": sent.message_id,
        "destination": envelope_recipients(sent.destinations),
        "headersTruncated": False,
        "headers": [{"name": name, "value": value} for name, value in mail.headers],
        "commonHeaders": {
            "from": [mail.header("From")],
            "to": [mail.header("To")],
            "messageId": sent.message_id,
            "subject": mail.header("Subject"),
        },
        "tags": {
            "ses:configuration-set": [sender.configuration_set],
            "ses:source-ip": [LOCAL_HOST],
            "ses:from-domain": [domain],
            "ses:caller-identity": ["twin"],
        },
    }


def ses_events(
    sent: SentMail, mail: ParsedMail, recipient: str, sender: Sender, sent_at: datetime
) -> list[dict[str, Any]]:
    """The events SES publishes for ``recipient`` of this email, in the order it publishes them."""
    kind = inbox_of(recipient)
    base = mail_object(sent, mail, sender, sent_at)
    delivered_at = sent_at + timedelta(milliseconds=420)
    events: list[dict[str, Any]] = []
    for event_type in EVENTS_OF[kind]:
        event: dict[str, Any] = {"eventType": event_type, "mail": base}
        if event_type == DELIVERY:
            event["delivery"] = {
                "timestamp": _timestamp(delivered_at),
                "processingTimeMillis": 420,
                "recipients": [recipient],
                "smtpResponse": "250 2.6.0 Message received",
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
                "remoteMtaIp": LOCAL_HOST,
            }
        elif event_type == BOUNCE and kind == SUPPRESSED:
            # SES's own suppression list: it accepted the email and never tried to deliver it.
            event["bounce"] = {
                "feedbackId": _feedback_id(delivered_at),
                "bounceType": "Permanent",
                "bounceSubType": "Suppressed",
                "bouncedRecipients": [
                    {
                        "emailAddress": recipient,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "Amazon SES has suppressed sending to this address because it has a "
                        "recent history of bouncing as an invalid address.",
                    }
                ],
                "timestamp": _timestamp(delivered_at),
                "reportingMTA": "dns; amazonses.com",
            }
        elif event_type == BOUNCE:
            event["bounce"] = {
                "feedbackId": _feedback_id(delivered_at),
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {
                        "emailAddress": recipient,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
                "timestamp": _timestamp(delivered_at),
                "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
                "remoteMtaIp": LOCAL_HOST,
            }
        elif event_type == COMPLAINT:
            complained_at = delivered_at + timedelta(seconds=2)
            event["complaint"] = {
                "feedbackId": _feedback_id(complained_at),
                "complaintSubType": None,
                "complainedRecipients": [{"emailAddress": recipient}],
                "timestamp": _timestamp(complained_at),
                "userAgent": "Amazon SES Mailbox Simulator",
                "complaintFeedbackType": "abuse",
                "arrivalDate": _timestamp(delivered_at),
            }
        events.append(event)
    return events


def destination_event_types(template: Path) -> frozenset[str]:
    """The event types (``Delivery``...) the stage's configuration set publishes to SNS, as
    infra/trellis.yaml declares them (``MatchingEventTypes`` of its SNS event destination)."""

    class _CfnLoader(yaml.SafeLoader):
        pass

    # CloudFormation's short forms (!Ref, !Sub) as plain values: only literal lists are read here.
    _CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)
    document = yaml.load(template.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    found: set[str] = set()
    for resource in document["Resources"].values():
        if resource.get("Type") != "AWS::SES::ConfigurationSetEventDestination":
            continue
        destination = resource["Properties"]["EventDestination"]
        if destination.get("Enabled", True) and "SnsDestination" in destination:
            found.update(str(t).capitalize() for t in destination.get("MatchingEventTypes", []))
    return frozenset(found)


# -- what readers fetch -----------------------------------------------------------------------


# What browsers (and the readers built on them) accept for a page and for an image. The API, as
# API Gateway does, answers the pixel's image/gif only to a request that accepts an image.
PAGE_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
IMAGE_ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"


@dataclass(frozen=True)
class Fetch:
    method: str
    url: str
    user_agent: str
    accept: str = PAGE_ACCEPT


def is_local(url: str) -> bool:
    """Only the twin's own servers may be fetched: everything else is the internet."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
        return parts.scheme in ("http", "https") and parts.hostname == LOCAL_HOST and not parts.username
    except ValueError:  # a malformed port or address
        return False


def fetches(kind: str, mail: ParsedMail, agents: Iterator[str]) -> list[Fetch]:
    """What the recipient's mailbox fetches of this email, in order; never a URL off 127.0.0.1."""
    if kind == SCANNED:
        planned = []
        targets = dict.fromkeys(mail.links, PAGE_ACCEPT)
        for pixel in mail.pixels:
            targets.setdefault(pixel, IMAGE_ACCEPT)
        for url, accept in targets.items():
            if is_local(url):
                agent = next(agents)
                planned += [Fetch("HEAD", url, agent, accept), Fetch("GET", url, agent, accept)]
        return planned
    if kind == APPLE_PROXY:
        # The proxy loads every image of the message as it arrives, read or not.
        return [Fetch("GET", url, APPLE_PROXY_AGENT, IMAGE_ACCEPT) for url in mail.images if is_local(url)]
    return []


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a scanner that gets a redirect is done: its target is on the internet


# No proxy: a corporate HTTP_PROXY must not receive (or forward) a fetch of 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)


def http_fetch(fetch: Fetch, timeout: float = FETCH_TIMEOUT_SECONDS) -> Optional[int]:
    """Make the request; its status, or None when there was no answer (or it was not local).

    Whatever the answer (a redirect, 403, 405), it is not followed: the reader is done.
    """
    if not is_local(fetch.url):
        return None
    # is_local admitted http(s) on 127.0.0.1 only: no file: or other scheme reaches urllib.
    headers = {"User-Agent": fetch.user_agent, "Accept": fetch.accept}
    request = urllib.request.Request(fetch.url, method=fetch.method, headers=headers)  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            if fetch.method == "GET":
                response.read(MAX_BODY_BYTES)
            return int(response.status)
    except urllib.error.HTTPError as e:  # 3xx (not followed), 4xx, 5xx
        e.close()
        return int(e.code)
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return None


# -- the runner -------------------------------------------------------------------------------


@dataclass
class Receipt:
    """What one email led to: the SES events published and the fetches made (with answers)."""

    message_id: str
    kinds: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    fetched: list[tuple[Fetch, Optional[int]]] = field(default_factory=list)


class Inbox:
    """Receives each email SES accepted: publishes its SES events, then lets its readers fetch."""

    def __init__(
        self,
        publish: Callable[[str], Any],
        fetch: Callable[[Fetch], Optional[int]],
        now: Callable[[], datetime],
        sender: Sender,
        event_types: Iterable[str] = (DELIVERY, BOUNCE, COMPLAINT),
    ) -> None:
        self._publish = publish
        self._fetch = fetch
        self._now = now
        self._sender = sender
        self._event_types = frozenset(event_types)
        self._agents = itertools.cycle(SCANNER_AGENTS)

    def receive(self, sent: SentMail) -> Receipt:
        mail = parse_mail(sent.raw)
        at = self._now()
        receipt = Receipt(sent.message_id)
        for recipient in envelope_recipients(sent.destinations):
            kind = inbox_of(recipient)
            receipt.kinds.append(kind)
            for event in ses_events(sent, mail, recipient, self._sender, at):
                if event["eventType"] in self._event_types:
                    self._publish(json.dumps(event))
                    receipt.events.append(event["eventType"])
            for planned in fetches(kind, mail, self._agents):
                receipt.fetched.append((planned, self._fetch(planned)))
        # The message id and what happened; never the address (nor the URLs, which carry tokens).
        level = logging.DEBUG if set(receipt.kinds) == {DELIVERED} else logging.INFO
        logger.log(
            level,
            "inbox: SES message %s to %s: published %s; %d fetches, answered %s",
            sent.message_id,
            ", ".join(receipt.kinds) or "nobody",
            ", ".join(receipt.events) or "nothing",
            len(receipt.fetched),
            ", ".join(str(status) for _, status in receipt.fetched) or "-",
        )
        return receipt


class SentWatcher:
    """New emails in moto's SES outbox (``sent_messages``, a list that only grows), by a cursor
    of its own: each email is handed out once."""

    def __init__(self, read: Callable[[], Sequence[Any]]) -> None:
        self._read = read
        self._cursor = 0

    def new(self) -> list[SentMail]:
        messages = list(self._read())
        fresh, self._cursor = messages[self._cursor :], len(messages)
        found = []
        for message in fresh:
            raw = getattr(message, "raw_data", None)
            if raw is None:
                continue  # a Simple (non-raw) send: Trellis sends none
            found.append(SentMail(str(message.id), str(message.source or ""), tuple(message.destinations), str(raw)))
        return found


def watch(watcher: SentWatcher, inbox: Inbox) -> int:
    """One look at the outbox: every new email received. Returns how many."""
    sent = watcher.new()
    for mail in sent:
        inbox.receive(mail)
    return len(sent)


# -- SNS -> Lambda ----------------------------------------------------------------------------


def lambda_sns_event(envelope: dict[str, Any], subscription_arn: str) -> dict[str, Any]:
    """The event Lambda invokes an SNS-subscribed function with, from the envelope SNS delivers
    to an SQS subscriber (raw delivery off). One record: SNS invokes once per message."""
    if envelope.get("Type") != "Notification" or not isinstance(envelope.get("Message"), str):
        raise ValueError("not an SNS notification")
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": {
                    "Type": "Notification",
                    "MessageId": envelope.get("MessageId", ""),
                    "TopicArn": envelope.get("TopicArn", ""),
                    "Subject": envelope.get("Subject"),
                    "Message": envelope["Message"],
                    "Timestamp": envelope.get("Timestamp", ""),
                    "SignatureVersion": envelope.get("SignatureVersion", "1"),
                    "Signature": envelope.get("Signature", ""),
                    # Lambda spells these two "Url"; the SQS envelope "URL".
                    "SigningCertUrl": envelope.get("SigningCertURL", ""),
                    "UnsubscribeUrl": envelope.get("UnsubscribeURL", ""),
                    "MessageAttributes": envelope.get("MessageAttributes") or {},
                },
            }
        ]
    }


FEEDBACK_QUEUE = "trellis-twin-ses-events"
VISIBILITY_TIMEOUT_SECONDS = 10  # a failed invocation is retried after this (Lambda: about a minute)
MAX_INVOCATIONS = 3  # Lambda invokes asynchronously once and retries twice, then drops the event


class FeedbackPump:
    """The twin standing in for SNS->Lambda: moto's SNS cannot invoke a Lambda without docker.

    An SQS queue subscribed to the SES events topic receives what SNS delivers; each message
    becomes one invocation of the handler with the event Lambda would pass, and is deleted only
    after the handler returned. A handler that raises gets the message again after the queue's
    visibility timeout, up to ``MAX_INVOCATIONS`` in all, as Lambda retries an asynchronous
    invocation; then it is dropped and logged.
    """

    def __init__(
        self, sqs: Any, queue_url: str, subscription_arn: str, handler: Callable[[dict[str, Any]], Any]
    ) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self.subscription_arn = subscription_arn
        self._handler = handler
        self.invoked = 0
        self.failed = 0

    @classmethod
    def subscribe(
        cls,
        sns: Any,
        sqs: Any,
        topic_arn: str,
        handler: Callable[[dict[str, Any]], Any],
        queue: str = FEEDBACK_QUEUE,
        visibility_timeout: int = VISIBILITY_TIMEOUT_SECONDS,
    ) -> FeedbackPump:
        queue_url = sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": str(visibility_timeout)})[
            "QueueUrl"
        ]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        # Raw delivery off (the default): the queue gets SNS's envelope, what Lambda's event is made of.
        subscription = sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, ReturnSubscriptionArn=True)
        return cls(sqs, queue_url, subscription["SubscriptionArn"], handler)

    def pump_once(self) -> int:
        """Invoke the handler for every message waiting; returns how many it handled."""
        handled = 0
        while True:
            page = self._sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                AttributeNames=["ApproximateReceiveCount"],
            )
            messages = page.get("Messages") or []
            if not messages:
                return handled
            for message in messages:
                if self._invoke(message):
                    handled += 1

    def _invoke(self, message: dict[str, Any]) -> bool:
        try:
            event = lambda_sns_event(json.loads(message["Body"]), self.subscription_arn)
        except (ValueError, KeyError, TypeError):
            logger.warning("ses events queue: a message that is no SNS notification, dropped")
            self._delete(message)
            return False
        try:
            self._handler(event)
        except Exception as e:
            self.failed += 1
            invocations = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
            if invocations >= MAX_INVOCATIONS:
                logger.error("on_ses_feedback failed %d times (%s): event dropped", invocations, type(e).__name__)
                self._delete(message)
            else:
                logger.warning(
                    "on_ses_feedback failed (%s): retried in %ds", type(e).__name__, VISIBILITY_TIMEOUT_SECONDS
                )
            return False
        self.invoked += 1
        self._delete(message)
        return True

    def _delete(self, message: dict[str, Any]) -> None:
        self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
