"""Scoring from the stream under Lambda's at-least-once delivery, with real-shaped records.

The records are read once from the table's stream and fed to ``app.on_lead_change`` the ways
Lambda can deliver them: once, twice, in part and then whole, shuffled, after a crash mid-batch.
Every way ends in the same place: the same score, stage and ``score_events`` on each lead, one
handoff, one email to the owner, one message on the sales topic, and a handler whose own writes
(and any redelivery) cost nothing more.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3
import pytest

from chalicelib import aws
from chalicelib.entities import Event, iso, lead_id_for
from chalicelib.streams import StreamBatchFailed
from testkit import items as table_of
from tests.conftest import LambdaContext
from tests.helpers import SalesInbox, body, post_json

ADA = "ada@sales.demo.trellis.example"
GRACE = "grace@sales.demo.trellis.example"
# Fit 30 (CTO +15, 51-200 +10, DE +5) + form 5 + pricing page 10 + pricing_view 15 + 2 clicks 10 = 70: an MQL.
HOT = {
    "email": "hal@acme.example",
    "first_name": "Hal",
    "company": "Acme",
    "job_title": "CTO",
    "company_size": "51-200",
    "country": "DE",
    "consent": True,
}
# Fit 0 + form 5 + demo_request 40 = 45, and demo_request is a hand-raiser: an SQL.
RAISER = {"email": "rae@beta.example", "first_name": "Rae", "company": "Beta", "consent": True}
HOT_ID, RAISER_ID = lead_id_for(HOT["email"]), lead_id_for(RAISER["email"])
# What a clean single delivery leaves: (score, stage, score_events); score_events counts the
# events the score was computed from (the submission and the behaviour, not the stage change).
EXPECTED = {HOT_ID: (70, "mql", 5), RAISER_ID: (45, "sql", 2)}
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}


# -- helpers ----------------------------------------------------------------------------------


class DynamoCalls:
    """Every call the app's DynamoDB client makes: operation, the item keys it touches, success."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        events = aws.dynamodb().meta.events
        events.register("before-parameter-build.dynamodb.*", self._before)
        events.register("after-call.dynamodb.*", self._after)

    def _before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        keys = []
        if "Key" in params:
            keys.append(params["Key"])
        if "Item" in params:
            keys.append(params["Item"])
        for op in params.get("TransactItems", []):
            for inner in op.values():
                keys.append(inner.get("Key") or inner.get("Item"))
        named = [(k["pk"]["S"], k["sk"]["S"]) for k in keys if k and "pk" in k]
        self.calls.append({"op": model.name, "keys": named, "ok": None})

    def _after(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if self.calls and self.calls[-1]["op"] == model.name and self.calls[-1]["ok"] is None:
            self.calls[-1]["ok"] = "Error" not in parsed

    def mark(self) -> int:
        return len(self.calls)

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.calls[mark:]

    @staticmethod
    def writes(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [c for c in calls if c["op"] in WRITES]

    @staticmethod
    def ops(calls: list[dict[str, Any]], name: str) -> int:
        return sum(1 for c in calls if c["op"] == name)


@dataclass
class World:
    client: Any
    rt: Any
    stream: Any
    outbox: Callable[[], list[Any]]
    table_items: Callable[[], list[dict[str, Any]]]
    calls: DynamoCalls
    sales: SalesInbox

    def handle(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        from app import on_lead_change

        result: dict[str, Any] = on_lead_change({"Records": records}, LambdaContext())
        return result

    def settle(self) -> int:
        """Feed the handler's own writes back to it, as the stream would, until nothing new comes.

        No round may rescore (the stage events and profile updates are the handler's own); the
        loop ends only when a round writes nothing. Returns the number of rounds that had records.
        """
        rounds = 0
        while records := self.stream.read():
            rounds += 1
            assert rounds < 5, "the handler keeps feeding itself"
            mark = self.calls.mark()
            self.handle(records)
            new = self.calls.since(mark)
            scoring = [
                c
                for c in DynamoCalls.writes(new)
                if any(sk == "PROFILE" for _, sk in c["keys"]) and not is_report_count(c)
            ]
            assert scoring == [], f"feeding back the handler's own records rescored: {scoring}"
        return rounds


@pytest.fixture
def world(client, rt, stream, outbox, table_items, stack_outputs) -> World:
    sales = SalesInbox(stack_outputs["SalesTopicArn"])  # subscribed before anything happens
    hot, raiser = (body(post_json(client, "/forms/ebook", form))["lead_token"] for form in (HOT, RAISER))
    for token, kind, url in (
        (hot, "page_view", "https://trellis.example/pricing"),
        (hot, "pricing_view", "https://trellis.example/pricing/teams"),
        (raiser, "demo_request", "https://trellis.example/demo"),
    ):
        assert post_json(client, "/events", {"token": token, "type": kind, "url": url}).status_code == 202
    # A person clicks a minute after the send (a click within seconds is a machine's; a minute
    # decays the earlier points by less than the score's rounding).
    read_at = iso(rt.clock.now() + timedelta(minutes=1))
    for n in range(2):
        click = Event(HOT_ID, f"click{n}", "email_clicked", read_at, {"message_id": "ebook-nurture.ebook-delivery"})
        assert rt.store.record_event(click, note_type=False)
    return World(client, rt, stream, outbox, table_items, DynamoCalls(), sales)


def lead(world: World, lead_id: str) -> dict[str, Any]:
    [item] = table_of.profiles(world.table_items(), lead_id)
    return item


def assert_final_state(world: World) -> None:
    """What a clean single delivery ends in, whatever the delivery was."""
    items = world.table_items()
    handoffs = table_of.handoffs(items)
    assert [(h["pk"], h["owner_email"], h["status"]) for h in handoffs] == [(f"LEAD#{RAISER_ID}", ADA, "notified")]
    owner_mail = [m for m in world.outbox() if m["To"] in (ADA, GRACE)]
    assert [m["To"] for m in owner_mail] == [ADA]
    assert [m["lead_id"] for m in world.sales.messages()] == [RAISER_ID]
    # The hot lead's ebook went once; the raiser had asked for a demo before it was due: none.
    assert [m["To"] for m in world.outbox() if m["To"] not in (ADA, GRACE)] == [HOT["email"]]
    changes = sorted((i["pk"], i["data"]["from"], i["data"]["to"]) for i in items if i.get("type") == "stage_changed")
    assert changes == sorted([(f"LEAD#{HOT_ID}", "lead", "mql"), (f"LEAD#{RAISER_ID}", "lead", "sql")])
    assert lead(world, RAISER_ID)["owner"] == {"name": "Ada Sales", "email": ADA}
    assert "owner" not in lead(world, HOT_ID)
    actual = {
        lead_id: (float(item["score"]), item["stage"], int(item["score_events"]))
        for lead_id, item in ((lead_id, lead(world, lead_id)) for lead_id in EXPECTED)
    }
    assert actual == EXPECTED


def is_report_count(write: dict[str, Any]) -> bool:
    """A report counter transaction (its marker, a check that the lead exists, the counters):
    not scoring. test_reports tests that counting is idempotent."""
    return any(sk.startswith("COUNTED#") for _, sk in write["keys"])


def redeliver(world: World, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deliver ``records`` again; what it wrote, or tried to write about scores and handoffs.

    Must be nothing: the stored score already counts every event. (Claims of nurture steps the
    records name are conditional writes that fail; they are the dispatcher's, not scoring's.
    Report counters are left out: records not delivered before are counted now, once; that
    counting is idempotent is tested in test_reports.)
    """
    mark = world.calls.mark()
    world.handle(records)
    return [
        w
        for w in DynamoCalls.writes(world.calls.since(mark))
        if not is_report_count(w)
        and (w["ok"] or any(sk == "PROFILE" or sk.startswith(("EVENT#", "HANDOFF#")) for _, sk in w["keys"]))
    ]


# -- the scenarios ----------------------------------------------------------------------------


def test_clean_single_delivery_scores_hands_off_once_and_then_is_quiet(world):
    records = world.stream.read()
    leads = {r["dynamodb"]["Keys"]["pk"]["S"] for r in records}  # and the rate-limit windows of the events
    assert len({pk for pk in leads if pk.startswith("LEAD#")}) == 2

    report = world.handle(records)

    assert report["rescored"] == 2 and report["stage_changes"] == 2
    assert world.settle() >= 1  # the handoff's INSERT comes back and notifies
    assert_final_state(world)
    assert redeliver(world, records) == []
    assert world.settle() == 0
    assert_final_state(world)


def test_the_whole_batch_delivered_twice(world):
    records = world.stream.read()

    world.handle(records)
    again = redeliver(world, records)  # Lambda's retry, before anything else ran
    world.settle()

    assert_final_state(world)
    assert again == [], "the redelivered batch wrote"


def test_first_half_then_the_whole_batch(world):
    records = world.stream.read()

    world.handle(records[: len(records) // 2])  # rescoring reads the whole history: done already
    again = redeliver(world, records)
    world.settle()

    assert_final_state(world)
    assert again == [], "the redelivered batch wrote"


def test_records_shuffled(world):
    records = world.stream.read()
    shuffled = list(records)
    random.Random(7).shuffle(shuffled)  # noqa: S311 - a reproducible order, not a secret
    assert shuffled != records

    world.handle(shuffled)
    world.settle()

    assert_final_state(world)
    assert redeliver(world, list(reversed(records))) == []
    assert_final_state(world)


def crash_on_the_second_rescore_once(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The second lead rescored in the next delivery fails (a timeout); the leads tried, in order."""
    real_rescore = world.rt.qualifier.rescore_record
    rescored: list[str] = []

    def crash(record: Any, verdicts: Any) -> Any:
        rescored.append(record.lead.lead_id)
        if len(rescored) == 2:
            raise RuntimeError("timed out")
        return real_rescore(record, verdicts)

    monkeypatch.setattr(world.rt.qualifier, "rescore_record", crash)
    return rescored


def test_a_crash_mid_batch_then_lambda_retries_the_whole_batch(world, monkeypatch):
    records = world.stream.read()
    rescored = crash_on_the_second_rescore_once(world, monkeypatch)
    # The default (a mapping without ReportBatchItemFailures): raise, so Lambda retries it all.
    with pytest.raises(StreamBatchFailed):
        world.handle(records)
    scored, unscored = rescored
    assert {scored, unscored} == {HOT_ID, RAISER_ID}
    assert "score_events" not in lead(world, unscored)

    retry = redeliver(world, records)  # Lambda retries the whole batch
    world.settle()

    assert_final_state(world)
    # The retry wrote only what the crash left undone: the unscored lead (and the round robin).
    touched = {pk for w in retry for pk, _ in w["keys"]}
    assert touched <= {f"LEAD#{unscored}", "STATS"}, "the retry rewrote a lead already scored"
    assert redeliver(world, records) == []


def _report_failures(world: World) -> None:
    """As deployed from the single-stack template: the mapping has ReportBatchItemFailures."""
    world.rt.settings = dataclasses.replace(world.rt.settings, stream_report_failures=True)


def _sequence(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


def _is_event_of(record: dict[str, Any], lead_id: str) -> bool:
    keys = record["dynamodb"]["Keys"]
    return keys["pk"]["S"] == f"LEAD#{lead_id}" and keys["sk"]["S"].startswith("EVENT#")


def test_a_failed_rescore_reports_the_leads_first_record_and_lambda_resumes_there(world, monkeypatch):
    _report_failures(world)
    records = world.stream.read()
    real_rescore = world.rt.qualifier.rescore_record
    rescored = crash_on_the_second_rescore_once(world, monkeypatch)
    answer = world.handle(records)

    scored, unscored = rescored
    assert "score_events" in lead(world, scored)
    [failure] = answer["batchItemFailures"]
    resume_at = next(i for i, r in enumerate(records) if _sequence(r) == failure["itemIdentifier"])
    # Resumed from the unscored lead's first event: everything it needs comes again.
    assert resume_at == min(i for i, r in enumerate(records) if _is_event_of(r, unscored))
    assert "score_events" not in lead(world, unscored)

    monkeypatch.setattr(world.rt.qualifier, "rescore_record", real_rescore)
    assert world.handle(records[resume_at:])["batchItemFailures"] == []  # Lambda resumes from it
    world.settle()

    assert_final_state(world)
    assert redeliver(world, records) == []


def test_a_record_that_fails_stops_the_batch_there_and_the_leads_before_it_are_done(world, monkeypatch):
    _report_failures(world)
    records = world.stream.read()
    raiser_events = [i for i, r in enumerate(records) if _is_event_of(r, RAISER_ID)]
    poison = records[raiser_events[0]]
    real_count = world.rt.tally.observe
    seen: list[Any] = []

    def fail_on_the_poison_record(image: Any) -> int:
        seen.append(image)
        if getattr(image, "lead_id", None) == RAISER_ID:
            raise RuntimeError("this record cannot be processed yet")
        return real_count(image)

    monkeypatch.setattr(world.rt.tally, "observe", fail_on_the_poison_record)
    answer = world.handle(records)

    assert answer["batchItemFailures"] == [{"itemIdentifier": _sequence(poison)}]
    assert answer["records"] == raiser_events[0] + 1  # nothing after the failed record was touched
    assert raiser_events[0] > 0  # the hot lead's events came first: it is fully scored already
    assert lead(world, HOT_ID)["stage"] == "mql"
    assert "score_events" not in lead(world, RAISER_ID)

    monkeypatch.setattr(world.rt.tally, "observe", real_count)
    assert world.handle(records[raiser_events[0] :])["batchItemFailures"] == []
    world.settle()

    assert_final_state(world)


def test_a_clean_batch_answers_no_failures(world):
    _report_failures(world)
    answer = world.handle(world.stream.read())
    assert answer["batchItemFailures"] == []
    assert answer["rescored"] == 2


# -- cost -------------------------------------------------------------------------------------


def test_a_batch_of_100_events_for_one_lead_costs_one_query_and_one_write(client, rt, stream, settings):
    # Gmail (-10) + form 5 + page views capped at 5 a day (10): 5, under every threshold.
    assert post_json(client, "/forms/ebook", {"email": "many@gmail.com", "first_name": "M", "consent": True})
    lead_id = lead_id_for("many@gmail.com")
    table = boto3.resource("dynamodb").Table(settings.table_name)
    now = iso(rt.clock.now())
    with table.batch_writer() as batch:  # the event items exactly as Store.record_event writes them
        for n in range(100):
            event = Event(lead_id, f"pv{n:03d}", "page_view", now, {"url": f"https://trellis.example/blog/{n}"})
            batch.put_item(Item={"pk": f"LEAD#{lead_id}", "sk": f"EVENT#{now}#{event.event_id}", **event.to_item()})
    records = [r for r in stream.read() if "#pv" in r["dynamodb"]["Keys"]["sk"]["S"]]
    assert len(records) == 100
    calls = DynamoCalls()

    from app import on_lead_change

    report = on_lead_change({"Records": records}, LambdaContext())

    assert report["rescored"] == 1
    assert DynamoCalls.ops(calls.calls, "Query") == 1
    assert len(DynamoCalls.writes(calls.calls)) <= 1
    [profile] = [
        i
        for i in table.query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": f"LEAD#{lead_id}"})[
            "Items"
        ]
        if i["sk"] == "PROFILE"
    ]
    assert (float(profile["score"]), profile["stage"], int(profile["score_events"])) == (5, "lead", 101)

    calls.calls.clear()
    on_lead_change({"Records": records}, LambdaContext())  # redelivered: nothing to write
    assert DynamoCalls.writes(calls.calls) == []
