"""SES bounces and complaints, as SNS delivers them to the Lambda: suppress the address for good.

The notifications follow the shapes in the SES developer guide: identity notifications
(``notificationType``) and configuration-set events (``eventType``), each with its ``mail`` object.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from chalicelib.entities import iso, lead_id_for
from chalicelib.errors import ValidationFailed
from testkit import items as testkit_items
from tests.conftest import LambdaContext
from tests.helpers import body, post_json

ANN = {"email": "Ann.Lee@Example.com", "first_name": "Ann", "consent": True}
BOB = {"email": "bob@example.org", "first_name": "Bob", "consent": True}
ANN_ID = lead_id_for("ann.lee@example.com")
BOB_ID = lead_id_for("bob@example.org")
SES_MESSAGE_ID = "0100018c5e2a7a8b-1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9-000000"
FEEDBACK_ID = "0100018c5e2a9c1d-7e6f5a4b-3c2d-4e1f-a0b9-c8d7e6f5a4b3-000000"
SUBJECT = "Amazon SES Email Event Notification"


# -- notifications ------------------------------------------------------------------------------


def mail(destination: str, reference: str | None) -> dict[str, Any]:
    headers = [
        {"name": "From", "value": "Trellis Demo <hello@demo.trellis.example>"},
        {"name": "To", "value": destination},
        {"name": "Subject", "value": "Welcome to the Trellis newsletter, Ann"},
        {"name": "MIME-Version", "value": "1.0"},
        {"name": "Content-Type", "value": 'multipart/alternative; boundary="===============1=="'},
    ]
    if reference is not None:
        headers.append({"name": "X-Trellis-Reference", "value": reference})
    return {
        "timestamp": "2026-11-23T09:30:01.000Z",
        "source": "hello@demo.trellis.example",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/hello@demo.trellis.example",
        "sourceIp": "203.0.113.10",
        "sendingAccountId": "123456789012",
        "callerIdentity": "trellis-dev",
        "messageId": SES_MESSAGE_ID,
        "destination": [destination],
        "headersTruncated": False,
        "headers": headers,
        "commonHeaders": {
            "from": ["Trellis Demo <hello@demo.trellis.example>"],
            "to": [destination],
            "messageId": SES_MESSAGE_ID,
            "subject": "Welcome to the Trellis newsletter, Ann",
        },
    }


def bounce(
    *addresses: str, bounce_type: str = "Permanent", sub_type: str = "General", reference: str | None = None, key: str
) -> dict[str, Any]:
    """An SES bounce: ``key`` is "notificationType" (identity) or "eventType" (configuration set)."""
    return {
        key: "Bounce",
        "bounce": {
            "feedbackId": FEEDBACK_ID,
            "bounceType": bounce_type,
            "bounceSubType": sub_type,
            "bouncedRecipients": [
                {
                    "emailAddress": address,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
                for address in addresses
            ],
            "timestamp": "2026-11-23T09:30:02.000Z",
            "remoteMtaIp": "198.51.100.7",
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        },
        "mail": mail(addresses[0], reference),
    }


def complaint(*addresses: str, reference: str | None = None, key: str) -> dict[str, Any]:
    return {
        key: "Complaint",
        "complaint": {
            "feedbackId": FEEDBACK_ID,
            "complaintSubType": None,
            "complainedRecipients": [{"emailAddress": address} for address in addresses],
            "timestamp": "2026-11-23T10:15:00.000Z",
            "userAgent": "Mozilla/5.0 (compatible; Yahoo Mail)",
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2026-11-23T10:14:58.000Z",
        },
        "mail": mail(addresses[0], reference),
    }


KEYS = pytest.mark.parametrize("key", ["notificationType", "eventType"])


# -- plumbing -----------------------------------------------------------------------------------


@pytest.fixture
def feed(client: Any) -> Any:
    """Deliver one SES notification through SNS into the real handler, as Lambda would."""
    from app import on_ses_feedback

    def send(notification: dict[str, Any] | str) -> dict[str, Any]:
        message = notification if isinstance(notification, str) else json.dumps(notification)
        event = client.events.generate_sns_event(message=message, subject=SUBJECT)
        result: dict[str, Any] = on_ses_feedback(event, LambdaContext())
        return result

    return send


@pytest.fixture
def nurtured(client: Any, deliver: Any, outbox: Any) -> str:
    """Ann and Bob signed up; both got the welcome. Returns Ann's X-Trellis-Reference."""
    for data in (ANN, BOB):
        response = post_json(client, "/forms/newsletter", data)
        assert response.status_code == 200, response.body
    deliver()
    assert len(mail_to(outbox, ANN["email"])) == len(mail_to(outbox, BOB["email"])) == 1
    [welcome] = mail_to(outbox, ANN["email"])
    reference = str(welcome["X-Trellis-Reference"])
    assert reference == f"{ANN_ID}/welcome.welcome"
    return reference


def mail_to(outbox: Any, address: str) -> list[Any]:
    return [m for m in outbox() if str(m["To"]).casefold() == address.casefold()]


def suppressions(table_items: Any) -> list[dict[str, Any]]:
    return [i for i in table_items() if i["pk"].startswith("SUPPRESS#")]


def events(table_items: Any, lead_id: str, event_type: str) -> list[dict[str, Any]]:
    return testkit_items.events(table_items(), lead_id, event_type)


def profile(table_items: Any, lead_id: str) -> dict[str, Any]:
    [item] = testkit_items.profiles(table_items(), lead_id)
    return item


def run_week(clock: Any, tick: Any, deliver: Any) -> None:
    """A week of daily ticks: Bob gets best-of (Wednesday) and the pricing nudge (Monday)."""
    for _ in range(7):
        clock.advance(24 * 3600)
        tick()
        deliver()


# -- bounces ------------------------------------------------------------------------------------


@KEYS
def test_permanent_bounce_suppresses_the_address_for_good(
    feed, nurtured, clock, tick, deliver, outbox, table_items, key
):
    clock.advance(60)

    result = feed(bounce("ANN.LEE@EXAMPLE.COM", reference=nurtured, key=key))

    assert result["kind"] == "Bounce"
    assert result["suppressed"] == 1
    [suppression] = suppressions(table_items)
    assert (suppression["pk"], suppression["sk"]) == (f"SUPPRESS#{ANN_ID}", "SUPPRESS")
    assert suppression["reason"] == "bounced"
    assert suppression["detail"] == "Permanent/General"
    assert suppression["at"] == iso(clock.now())
    [event] = events(table_items, ANN_ID, "email_bounced")
    assert event["data"]["message_id"] == "welcome.welcome"  # traced back to the send
    assert "email_bounced" in profile(table_items, ANN_ID)["event_types"]

    run_week(clock, tick, deliver)

    assert len(mail_to(outbox, ANN["email"])) == 1  # the welcome, nothing after the bounce
    assert len(mail_to(outbox, BOB["email"])) == 3  # Bob keeps receiving
    [enrolment] = testkit_items.enrolments(table_items(), "welcome", ANN_ID)
    assert enrolment["status"] == "exited"
    assert enrolment["exit_reason"] == "suppressed:bounced"


def test_transient_bounce_suppresses_nothing_and_mail_continues(
    feed, nurtured, clock, tick, deliver, outbox, table_items
):
    before = table_items()

    for sub_type in ("General", "MailboxFull", "MessageTooLarge", "ContentRejected"):
        result = feed(bounce("ann.lee@example.com", bounce_type="Transient", sub_type=sub_type, key="notificationType"))

        assert result["suppressed"] == 0, sub_type
        assert table_items() == before, sub_type  # nothing stored, not even an event

    run_week(clock, tick, deliver)
    assert len(mail_to(outbox, ANN["email"])) == 3
    assert len(mail_to(outbox, BOB["email"])) == 3


def test_undetermined_bounce_suppresses_nothing(feed, nurtured, table_items):
    before = table_items()

    result = feed(bounce("ann.lee@example.com", bounce_type="Undetermined", key="eventType"))

    assert result["suppressed"] == 0
    assert table_items() == before


def test_bounce_of_several_recipients_suppresses_each(feed, nurtured, table_items):
    result = feed(bounce("ann.lee@example.com", "BOB@example.org", key="eventType"))

    assert result["suppressed"] == 2
    assert {s["lead_id"] for s in suppressions(table_items)} == {ANN_ID, BOB_ID}


# -- complaints ---------------------------------------------------------------------------------


@KEYS
def test_complaint_suppresses_the_address(feed, nurtured, clock, tick, deliver, outbox, table_items, key):
    result = feed(complaint("Ann.Lee@example.com", reference=nurtured, key=key))

    assert result["kind"] == "Complaint"
    assert result["suppressed"] == 1
    [suppression] = suppressions(table_items)
    assert suppression["lead_id"] == ANN_ID
    assert suppression["reason"] == "complained"
    assert suppression["detail"] == "abuse"
    [event] = events(table_items, ANN_ID, "email_complained")
    assert event["data"]["message_id"] == "welcome.welcome"

    run_week(clock, tick, deliver)

    assert len(mail_to(outbox, ANN["email"])) == 1
    assert len(mail_to(outbox, BOB["email"])) == 3


def test_complaint_without_feedback_type_still_suppresses(feed, nurtured, table_items):
    notification = complaint("ann.lee@example.com", key="notificationType")
    del notification["complaint"]["complaintFeedbackType"]  # feedback loops need not say why

    feed(notification)

    [suppression] = suppressions(table_items)
    assert suppression["reason"] == "complained"


# -- unknown addresses --------------------------------------------------------------------------


def test_bounce_for_unknown_address_suppresses_it_before_capture(
    feed, client, clock, tick, deliver, outbox, table_items
):
    carol_id = lead_id_for("carol@example.net")

    result = feed(bounce("Carol@Example.NET", key="eventType"))

    assert result["suppressed"] == 1
    items = table_items()
    assert [(i["pk"], i["reason"]) for i in items] == [(f"SUPPRESS#{carol_id}", "bounced")]
    assert not [i for i in items if testkit_items.is_leads(i)]  # no lead, no orphan event

    response = post_json(client, "/forms/newsletter", {"email": "carol@example.net", "consent": True})
    assert response.status_code == 200
    assert body(response)["lead_id"] == carol_id
    deliver()
    run_week(clock, tick, deliver)

    assert outbox() == []  # captured, but never mailed


# -- bad and repeated messages ------------------------------------------------------------------


@pytest.mark.parametrize("message", ["not json at all", "", "[1, 2, 3]", '"Bounce"', "null"])
def test_malformed_message_raises_validation_failed_and_stores_nothing(feed, nurtured, table_items, message):
    before = table_items()

    with pytest.raises(ValidationFailed):
        feed(message)

    assert table_items() == before


@pytest.mark.parametrize(
    "notification",
    [
        {"notificationType": "Delivery", "delivery": {"recipients": ["ann.lee@example.com"]}},
        {"eventType": "Open", "open": {"ipAddress": "203.0.113.9"}},
        {"eventType": "Bounce"},  # no bounce object: nothing to act on
        {"notificationType": "Bounce", "bounce": {"bounceType": "Permanent", "bouncedRecipients": "nope"}},
        {"notificationType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": "not an address"}]}},
        {},
    ],
)
def test_other_or_empty_notifications_are_acknowledged_and_change_nothing(feed, nurtured, table_items, notification):
    before = table_items()

    result = feed(notification)

    assert result["suppressed"] == 0
    assert table_items() == before


def test_redelivered_bounce_keeps_one_suppression(feed, nurtured, clock, table_items):
    notification = bounce("ann.lee@example.com", reference=nurtured, key="notificationType")
    feed(notification)
    [first] = suppressions(table_items)
    clock.advance(30)  # SNS retries a little later

    feed(copy.deepcopy(notification))

    assert suppressions(table_items) == [first]  # the first record (and its time) stays


def test_redelivered_bounce_is_recorded_once(feed, nurtured, clock, table_items):
    # SNS delivers at least once, and Lambda retries a failed async invocation: the same SES
    # feedback (same feedbackId) must not put a second bounce on the lead's timeline for scoring.
    notification = bounce("ann.lee@example.com", reference=nurtured, key="notificationType")
    feed(notification)
    after_first = table_items()
    clock.advance(30)

    feed(copy.deepcopy(notification))

    assert len(events(table_items, ANN_ID, "email_bounced")) == 1
    assert table_items() == after_first


def test_complaint_after_bounce_keeps_the_first_reason(feed, nurtured, table_items):
    feed(bounce("ann.lee@example.com", key="eventType"))
    feed(complaint("ann.lee@example.com", key="eventType"))

    [suppression] = suppressions(table_items)
    assert suppression["reason"] == "bounced"
