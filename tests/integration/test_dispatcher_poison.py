"""No item can stop the dispatcher (issue 14, attack 4).

A lead whose stored data breaks its email, an address no email can be built for, a damaged item
in the due index, a handoff whose owner email cannot be built or whose SNS publish fails: each
is that item's problem. The tick sends to everyone else -- also when the poisoned items sit in
shard 0, which is walked first -- the item backs off out of "due now", and after
``MAX_ATTEMPTS`` it exits ``undeliverable``, which the sequence report counts. Nothing of the
item's data reaches the logs. On the old code each of these raised out of ``Dispatcher.tick``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest

from chalicelib import aws
from chalicelib.entities import iso, lead_id_for
from chalicelib.errors import InvalidRequest, Unsendable
from chalicelib.handoff import HANDOFF_LEASE, Notifier
from chalicelib.nurture import dispatcher as dispatcher_module
from chalicelib.nurture.dispatcher import LEASE, MAX_ATTEMPTS, backoff
from chalicelib.nurture.render import Renderer
from chalicelib.nurture.rules import INVALID_ADDRESS, UNDELIVERABLE
from chalicelib.store import DUE_SHARDS, due_shard
from chalicelib.streams import StreamBatchFailed
from tests.conftest import ADMIN_TOKEN, START, LambdaContext
from tests.helpers import SalesInbox, body, post_json
from tests.integration.test_dispatcher_guarantees import message_items, recipients
from tests.integration.test_handoff import (
    ADA,
    GRACE,
    RAISER,
    SECRET,
    WebhookServer,
    capture,
    event,
    handoffs,
    owner_mail,
    settle,
)

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# What a poisoned lead's error message quotes: it must never reach a log line. Held in a
# constant so that the traceback's source lines (which are logged) do not carry it either.
NAME = "Zebedee Quux"


# -- helpers ----------------------------------------------------------------------------------


def addresses_in_shard(shard: int, count: int, prefix: str) -> list[str]:
    """``count`` addresses whose leads' due items land in ``shard`` (the walk's order)."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        email = f"{prefix}{n}@example.com"
        if due_shard(lead_id_for(email)) == f"DUE#{shard}":
            found.append(email)
        n += 1
    return found


def sign_up(client: Any, emails: list[str]) -> None:
    """Newsletter signups; each leaves its welcome step due now (no tick, no stream)."""
    for email in emails:
        response = post_json(client, "/forms/newsletter", {"email": email, "consent": True, "first_name": NAME})
        assert response.status_code == 200  # the same for new and known leads


def poison_rendering(monkeypatch: pytest.MonkeyPatch, emails: list[str]) -> None:
    """These leads' emails cannot be rendered (a template that breaks on their data)."""
    poisoned = {lead_id_for(e) for e in emails}
    render = Renderer.render

    def render_or_fail(self: Renderer, step: Any, context: Any, lead_id: str, message_id: str, now: Any) -> Any:
        if lead_id in poisoned:
            raise RuntimeError(f"template failed for {NAME} <{context.get('email')}>")
        return render(self, step, context, lead_id, message_id, now)

    monkeypatch.setattr(Renderer, "render", render_or_fail)


def log_lines(captured: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith('{"timestamp"')]


def sequence_exits(client: Any) -> dict[str, Any]:
    response = client.http.get("/admin/reports/sequences", headers=AUTH)
    assert response.status_code == 200
    exits: dict[str, Any] = body(response)["exits"]
    return exits


# -- one bad enrolment among good ones --------------------------------------------------------


def test_leads_that_cannot_be_rendered_in_shard_0_back_off_and_the_tick_sends_everyone_else(
    client, rt, tick, outbox, enrolment, monkeypatch, capsys
):
    poisoned = addresses_in_shard(0, 3, "victim")
    healthy = [f"lead{i}@example.com" for i in range(12)]
    assert {due_shard(lead_id_for(e)) for e in healthy} - {"DUE#0"}, "healthy leads in later shards too"
    sign_up(client, poisoned + healthy)
    poison_rendering(monkeypatch, poisoned)
    capsys.readouterr()

    report = tick()

    assert (report["sent"], report["errors"], report["stopped_early"]) == (12, 3, False)
    assert recipients(outbox) == Counter(healthy)
    for email in poisoned:
        item = enrolment(email)
        assert item["due_at"] == iso(START + backoff(1))  # out of "due now": not first in line again
        assert (item["status"], item["attempts"], item["step_index"]) == ("active", 1, 0)
        assert "claim_id" not in item
    assert tick()["claimed"] == 0  # the same moment: nothing is due, the poisoned ones included

    captured = capsys.readouterr().out
    assert NAME not in captured and "victim" not in captured
    errors = [line for line in log_lines(captured) if line["level"] == "ERROR"]
    assert sorted(line["message"].split()[2].split("/")[0] for line in errors) == sorted(
        lead_id_for(e) for e in poisoned
    )
    assert {line["error_type"] for line in errors} == {"RuntimeError"}
    assert not any("<email:" in json.dumps(line) for line in errors)  # not even a redacted address
    assert all("render_or_fail" in line["error_frames"] for line in errors)  # where it broke


def test_an_enrolment_that_keeps_failing_exits_undeliverable_and_the_sequence_report_counts_it(
    client, rt, clock, tick, deliver, outbox, enrolment, monkeypatch
):
    [poisoned] = addresses_in_shard(0, 1, "poison")
    healthy = ["lead0@example.com", "lead1@example.com"]
    sign_up(client, [poisoned, *healthy])
    poison_rendering(monkeypatch, [poisoned])

    for attempt in range(1, MAX_ATTEMPTS):
        report = tick()
        assert (report["errors"], report["exits"]) == (1, {})
        item = enrolment(poisoned)
        assert (item["attempts"], item["due_at"]) == (attempt, iso(clock.now() + backoff(attempt)))
        clock.advance(backoff(attempt).total_seconds())
    last = tick()

    assert (last["errors"], last["exited"], last["exits"]) == (1, 1, {UNDELIVERABLE: 1})
    item = enrolment(poisoned)
    assert (item["status"], item["exit_reason"]) == ("exited", UNDELIVERABLE)
    assert "due_at" not in item and "due_shard" not in item  # out of the due index for good
    clock.advance(timedelta(days=1).total_seconds())
    assert tick()["errors"] == 0
    assert poisoned not in recipients(outbox)
    assert recipients(outbox) == Counter(healthy)

    settle(deliver)
    assert sequence_exits(client) == {"total": {UNDELIVERABLE: 1}, "by_sequence": {"welcome": {UNDELIVERABLE: 1}}}
    settle(deliver)  # a redelivered exit is not counted again
    assert sequence_exits(client)["total"] == {UNDELIVERABLE: 1}


def test_an_unsendable_address_is_suppressed_and_exits_at_once_never_retried(
    client, rt, clock, tick, outbox, enrolment, table_items, monkeypatch
):
    [bad] = addresses_in_shard(0, 1, "bad")
    healthy = ["lead0@example.com", "lead1@example.com"]
    sign_up(client, [bad, *healthy])
    build = dispatcher_module.build_message
    builds: list[str] = []

    def build_or_refuse(*, to: str, **kwargs: Any) -> bytes:
        # mime.mailbox raises this for an address with a line break, a list, a non-ASCII local
        # part (tested with mime); here, for one lead, to test what the dispatcher does with it.
        builds.append(to)
        if to == bad:
            raise Unsendable("line break or control character in the address")
        return build(to=to, **kwargs)

    monkeypatch.setattr(dispatcher_module, "build_message", build_or_refuse)

    report = tick()

    assert (report["sent"], report["exits"], report["errors"]) == (2, {INVALID_ADDRESS: 1}, 0)
    item = enrolment(bad)
    assert (item["status"], item["exit_reason"]) == ("exited", INVALID_ADDRESS)
    assert "due_at" not in item
    [suppression] = [i for i in table_items() if i["pk"] == f"SUPPRESS#{lead_id_for(bad)}"]
    assert (suppression["reason"], suppression["detail"]) == (
        INVALID_ADDRESS,
        "line break or control character in the address",
    )
    clock.advance(timedelta(days=3).total_seconds())  # the welcome sequence's later steps are due
    tick()
    assert builds.count(bad) == 1  # never tried again
    assert bad not in recipients(outbox)


def test_an_address_with_a_line_break_in_its_stored_item_stops_nothing(client, rt, tick, outbox, enrolment, settings):
    """The attack as it was made: a CR/LF written into a lead's stored address."""
    [bad] = addresses_in_shard(0, 1, "crlf")
    healthy = [f"lead{i}@example.com" for i in range(6)]
    sign_up(client, [bad, *healthy])
    boto3.client("dynamodb").update_item(
        TableName=settings.table_name,
        Key={"pk": {"S": f"LEAD#{lead_id_for(bad)}"}, "sk": {"S": "PROFILE"}},
        UpdateExpression="SET email = :e",
        ExpressionAttributeValues={":e": {"S": "crlf@example.com\r\nBcc: attacker@evil.example"}},
    )

    report = tick()

    assert report["sent"] == 6 and not report["stopped_early"]
    assert recipients(outbox) == Counter(healthy)
    assert not any("evil.example" in str(m.get("Bcc", "")) + str(m["To"]) for m in outbox())
    item = enrolment(bad)  # exited as unsendable, or backing off: either way not due now
    assert item["status"] == "exited" or item["due_at"] > iso(START)
    assert tick()["claimed"] == 0


def test_a_damaged_item_in_the_due_index_is_skipped_and_the_walk_goes_on(client, rt, tick, outbox, settings):
    healthy = [f"lead{i}@example.com" for i in range(6)]
    sign_up(client, healthy)
    boto3.client("dynamodb").put_item(
        TableName=settings.table_name,
        Item={  # no lead_id, no sequence_id, a step index that is no number
            "pk": {"S": "LEAD#" + "0" * 32},
            "sk": {"S": "ENROL#welcome"},
            "due_shard": {"S": "DUE#0"},
            "due_at": {"S": iso(START - timedelta(hours=1))},
            "status": {"S": "active"},
            "step_index": {"S": "first"},
        },
    )

    report = tick()

    assert report["sent"] == 6 and not report["stopped_early"]
    assert recipients(outbox) == Counter(healthy)


def test_a_send_that_can_never_be_recorded_exits_instead_of_sending_again_at_each_lease(
    client, rt, clock, tick, outbox, enrolment, table_items, monkeypatch
):
    [email] = addresses_in_shard(0, 1, "heavy")
    healthy = ["lead0@example.com"]
    sign_up(client, [email, *healthy])
    commit_send = rt.store.commit_send

    def refused_for_one(enrolled: Any, *args: Any, **kwargs: Any) -> None:
        if enrolled.lead_id == lead_id_for(email):  # e.g. an item DynamoDB finds too large
            raise InvalidRequest("transact_write_items failed: ValidationException")
        commit_send(enrolled, *args, **kwargs)

    monkeypatch.setattr(rt.store, "commit_send", refused_for_one)

    report = tick()
    assert (report["sent"], report["failed"], report["exits"]) == (1, 1, {UNDELIVERABLE: 1})
    for _ in range(3):
        clock.advance(LEASE.total_seconds() + 1)
        tick()

    assert recipients(outbox) == Counter({email: 1, healthy[0]: 1})  # once: no copy per lease
    assert enrolment(email)["exit_reason"] == UNDELIVERABLE
    assert [m["lead_id"] for m in message_items(table_items)] == [lead_id_for(healthy[0])]


# -- handoffs ---------------------------------------------------------------------------------


@pytest.fixture
def sales_inbox(stack_outputs: dict[str, str]) -> SalesInbox:
    return SalesInbox(stack_outputs["SalesTopicArn"])


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        yield server


@pytest.fixture
def hooked(client, rt, settings, clock, fake_sleep, webhook) -> Any:
    """The demo campaign with its sales webhook pointed at the local server (as test_handoff's)."""
    import dataclasses

    from chalicelib import runtime
    from chalicelib.models import Sales
    from chalicelib.nurture.dispatcher import Pacer

    sales = Sales.model_validate({**rt.campaign.sales.model_dump(mode="json"), "webhook_url": webhook.url})
    built = runtime.Runtime.build(
        dataclasses.replace(settings, webhook_secret=SECRET),
        clock=clock,
        campaign=rt.campaign.model_copy(update={"sales": sales}),
        pacer=Pacer(14.0, monotonic=fake_sleep.monotonic, sleep=fake_sleep.sleep),
    )
    runtime.install(built)
    return built


def test_a_handoff_whose_email_cannot_be_built_still_reaches_sns_and_the_webhook_and_stops_no_tick(
    client, hooked, clock, deliver, tick, outbox, sales_inbox, webhook, table_items, monkeypatch
):
    def unbuildable(self: Notifier, handoff: Any, lead: Any, events: Any) -> bytes:
        raise Unsendable("the lead's company cannot be put in a Subject")

    monkeypatch.setattr(Notifier, "_email", unbuildable)
    webhook.statuses = [500]  # the first POST fails: the tick retries it
    lead_id, token = capture(client, RAISER)
    event(client, token, "demo_request")

    settle(deliver)  # the old code failed the stream batch here, again at every redelivery

    assert [m["lead_id"] for m in sales_inbox.messages()] == [lead_id]
    assert len(webhook.requests) == 1
    [item] = handoffs(table_items)
    assert (item["status"], item["webhook_status"]) == ("pending", "pending")
    assert "email_sent_at" not in item

    healthy = ["lead0@example.com", "lead1@example.com"]
    sign_up(client, healthy)  # due now, next to the handoff's webhook retry
    clock.advance(30)
    report = tick()

    assert report["errors"] == 0 and report["sent"] == 2
    assert len(webhook.requests) == 2
    [item] = handoffs(table_items)
    assert (item["status"], item["webhook_status"]) == ("notified", "delivered")
    assert owner_mail(outbox) == []
    assert Counter(healthy) <= recipients(outbox)


def test_a_handoff_that_fails_in_the_tick_is_counted_retried_after_its_lease_and_stops_nothing(
    client, rt, clock, stream, tick, outbox, sales_inbox, table_items
):
    from app import on_lead_change

    broken = [True]

    def sns_client_bug(**_: Any) -> None:
        if broken[0]:
            raise RuntimeError(f"SNS rejected the payload of {NAME}")  # not a botocore error: a surprise

    aws.sns().meta.events.register("before-call.sns.Publish", sns_client_bug)
    lead_id, token = capture(client, RAISER)
    event(client, token, "demo_request")
    on_lead_change({"Records": stream.read()}, LambdaContext())  # the crossing writes the handoff
    with pytest.raises(StreamBatchFailed):  # the stream's notifier: the email went, SNS failed
        on_lead_change({"Records": stream.read()}, LambdaContext())
    healthy = [f"lead{i}@example.com" for i in range(4)]
    sign_up(client, healthy)
    clock.advance((HANDOFF_LEASE + timedelta(minutes=1)).total_seconds())  # the handoff is due

    report = tick()

    assert report["errors"] == 1 and not report["stopped_early"]
    assert Counter(healthy) <= recipients(outbox)
    [item] = handoffs(table_items)
    assert item["due_at"] == iso(clock.now() + HANDOFF_LEASE)  # out of "due now" until its lease ends
    assert tick()["errors"] == 0

    broken[0] = False
    clock.advance((HANDOFF_LEASE + timedelta(seconds=1)).total_seconds())
    assert tick()["errors"] == 0
    assert [m["lead_id"] for m in sales_inbox.messages()] == [lead_id]
    [item] = handoffs(table_items)
    assert item["status"] == "notified"
    assert [m["To"] for m in owner_mail(outbox)] in ([ADA], [GRACE])  # once, not again per retry


def test_every_shard_is_walked(client, rt, tick, outbox):
    """What the poison tests rely on: healthy leads in every shard, one tick."""
    emails = [e for shard in range(DUE_SHARDS) for e in addresses_in_shard(shard, 1, f"s{shard}-")]
    sign_up(client, emails)
    assert tick()["sent"] == DUE_SHARDS
    assert recipients(outbox) == Counter(emails)
