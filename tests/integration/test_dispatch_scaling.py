"""Read units per tick grow with due work, not with leads.

The dispatcher finds its work in the sparse, sharded ``due`` index, so a tick that sends 50 emails
must read the same whatever the number of idle leads around them: leads that finished their
sequences (not in the index at all) and leads whose next step is days away (in the index, but
outside the key condition ``due_at <= now``). One tick is measured among 1,000 idle leads, then
the same 50 due enrolments are put back and the tick is measured again among 10,000 (ten times as
many: the 100,000-lead run is `make bench`'s). 50 due leads are under a page of each due shard; the
idle ones outnumber them 20 and 200 to 1, and half of those sit in the due index itself, so a tick
reading anything but its due work would read several times more in the larger table.

moto reports no size-based ConsumedCapacity, so the read units are computed here from what each
response returned, by DynamoDB's rules (``item_size``, ``read_units``; developer guide, "DynamoDB
item sizes and formats" and "Read consistency").
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from chalicelib import aws
from chalicelib.entities import lead_id_for
from chalicelib.store import DUE_SHARDS
from testkit.items import (
    batch_get,
    batch_write,
    bulk_load,
    idle_items,
    item_key,
    item_size,
    lead_items,
    put_all,
    read_units,
    seed,
)
from tests.helpers import post_json

DUE = 50
IDLE_SIZES = (1_000, 10_000)


# -- DynamoDB's item size and read-unit rules -------------------------------------------------


class DynamoMeter:
    """Counts requests per operation and the read units they consumed, with botocore's hooks."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.read_units = 0.0
        self._events = client.meta.events
        self._events.register("before-parameter-build.dynamodb.*", self._keep_params)
        self._events.register("after-call.dynamodb.*", self._after_call)

    def unregister(self) -> None:
        self._events.unregister("before-parameter-build.dynamodb.*", self._keep_params)
        self._events.unregister("after-call.dynamodb.*", self._after_call)

    def _keep_params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["meter_params"] = params

    def _after_call(self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        self.calls[model.name] += 1
        if "Error" in parsed:
            self.errors[f"{model.name}:{parsed['Error'].get('Code')}"] += 1
            return
        self.read_units += read_units(model.name, context.get("meter_params", {}), parsed)


def test_item_size_follows_dynamodbs_rules():
    assert item_size({"pk": {"S": "abc"}}) == 2 + 3
    assert item_size({"n": {"N": "12345"}}) == 1 + 3 + 1  # 5 digits: 3 bytes, +1
    assert item_size({"n": {"N": "-0.00100"}}) == 1 + 1 + 1 + 1  # "1": 1 byte, +1, +1 negative
    assert item_size({"ok": {"BOOL": True}, "no": {"NULL": True}}) == 3 + 3
    assert item_size({"m": {"M": {"a": {"S": "xy"}}}}) == 1 + 3 + (1 + 1 + 2)
    assert item_size({"l": {"L": [{"S": "xy"}, {"N": "1"}]}}) == 1 + 3 + (1 + 2) + (1 + 2)
    assert item_size({"s": {"SS": ["a", "bc"]}}) == 1 + 3
    assert item_size({"é": {"S": "€"}}) == 2 + 3  # UTF-8 bytes, names and values
    assert read_units("GetItem", {"ConsistentRead": True}, {}) == 1.0  # nothing found: the minimum
    big = {"Items": [{"x": {"S": "a" * 3000}}, {"x": {"S": "a" * 3000}}]}
    assert read_units("Query", {}, big) == 1.0  # 6 KB in one page: 2 blocks, eventually consistent


# -- building the table -----------------------------------------------------------------------


def _measure_tick(ddb: Any, outbox: Any, tick: Any) -> dict[str, Any]:
    meter = DynamoMeter(ddb)
    sent_before = len(outbox())
    report = tick()
    meter.unregister()
    return {
        "report": report,
        "emails": len(outbox()) - sent_before,
        "calls": dict(meter.calls),
        "read_units": meter.read_units,
    }


def test_tick_reads_grow_with_due_work_not_with_leads(client, rt, settings, outbox, tick):
    """One table, measured twice: among 1,000 idle leads, then -- the 50 due leads put back
    exactly as the form wrote them -- among 10,000."""
    ddb, table = aws.dynamodb(), settings.table_name
    everything = DynamoMeter(ddb)
    due_leads = [lead_id_for(f"lead{i}@example.com") for i in range(DUE)]
    for i in range(DUE):
        response = post_json(client, "/forms/newsletter", {"email": f"lead{i}@example.com", "consent": True})
        assert response.status_code == 200
    as_captured = [item for lead_id in due_leads for item in lead_items(ddb, table, lead_id)]
    captured = {item_key(i): i for i in as_captured}
    profile = captured[(f"LEAD#{due_leads[0]}", "PROFILE")]  # the shapes capture writes
    enrolment = captured[(f"LEAD#{due_leads[0]}", "ENROL#welcome")]

    results = {}
    written = 0
    for idle in IDLE_SIZES:
        with bulk_load(table):
            seed(table, idle_items(profile, enrolment, written, idle - written))
        written = idle
        if results:  # put the due leads back as captured: the same due work among more idle leads
            messages = [
                {"pk": i["pk"], "sk": i["sk"]}
                for lead_id in due_leads
                for i in lead_items(ddb, table, lead_id)
                if i["sk"]["S"].startswith("MSG#")
            ]
            assert len(messages) == DUE
            batch_write(ddb, table, [{"DeleteRequest": {"Key": key}} for key in messages])
            put_all(ddb, table, as_captured)
            restored = batch_get(ddb, table, [{"pk": i["pk"], "sk": i["sk"]} for i in as_captured] + messages)
            assert sorted(restored, key=item_key) == sorted(as_captured, key=item_key)
        results[idle] = _measure_tick(ddb, outbox, tick)

    assert everything.errors == {}  # every request succeeded: no transaction needed moto's rollback
    small, large = (results[idle] for idle in IDLE_SIZES)
    for result in (small, large):
        assert result["emails"] == DUE
        assert result["report"]["sent"] == DUE
        assert "Scan" not in result["calls"]
        # One batch read (lead + suppression) per due enrolment, a page or so of the due index per shard.
        assert result["calls"]["BatchGetItem"] == DUE
        assert result["calls"]["Query"] <= DUE_SHARDS + DUE // 50
    # The same requests, operation by operation, whatever the number of idle leads...
    assert small["calls"] == large["calls"]
    # ...and the same read units.
    assert large["read_units"] == pytest.approx(small["read_units"], rel=0.05)
