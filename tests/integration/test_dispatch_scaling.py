"""Read units per tick grow with due work, not with leads.

The dispatcher finds its work in the sparse, sharded ``due`` index, so a tick that sends 100 emails
must read the same whatever the number of idle leads around them: leads that finished their
sequences (not in the index at all) and leads whose next step is days away (in the index, but
outside the key condition ``due_at <= now``). One tick is measured among 1,000 idle leads, then
the same 100 due enrolments are put back and the tick is measured again among 10,000 (ten times as many: the 100,000-lead run is `make bench`'s).

moto reports no size-based ConsumedCapacity, so the read units are computed here from what each
response returned, by DynamoDB's rules (``item_size``, ``read_units``; developer guide, "DynamoDB
item sizes and formats" and "Read consistency").
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config

from chalicelib import aws
from chalicelib.entities import iso, lead_id_for
from chalicelib.store import DUE_SHARDS, due_shard
from tests.conftest import START
from tests.helpers import post_json

DUE = 100
IDLE_SIZES = (1_000, 10_000)


# -- DynamoDB's item size and read-unit rules -------------------------------------------------


def _number_size(text: str) -> int:
    """About one byte per two significant digits, plus one (leading and trailing zeros trimmed)."""
    mantissa = text.lstrip("+-").lower().partition("e")[0]
    digits = mantissa.replace(".", "").strip("0") or "0"
    return (len(digits) + 1) // 2 + 1 + (1 if text.startswith("-") else 0)


def value_size(value: dict[str, Any]) -> int:
    """Bytes of one attribute value in DynamoDB JSON (the attribute name is counted by the caller)."""
    [(kind, data)] = value.items()
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        return _number_size(data)
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in data)
    if kind == "NS":
        return sum(_number_size(n) for n in data)
    if kind == "BS":
        return sum(len(b) for b in data)
    if kind == "L":  # 3 bytes of overhead, 1 per element
        return 3 + sum(1 + value_size(v) for v in data)
    if kind == "M":  # 3 bytes of overhead, 1 per element, plus the keys
        return 3 + sum(len(k.encode()) + 1 + value_size(v) for k, v in data.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB bills it: attribute name bytes plus value bytes."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def _units(size: int, consistent: bool) -> float:
    """Read units for ``size`` bytes: 4 KB blocks (at least one), half price when eventually consistent."""
    blocks = max(1, math.ceil(size / 4096))
    return blocks * (1.0 if consistent else 0.5)


def read_units(operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> float:
    """Read units one successful response consumed, from what it returned."""
    if operation in ("Query", "Scan"):
        # One page: the sizes of the items read, summed, then rounded up to 4 KB (GSIs are
        # eventually consistent only).
        size = sum(item_size(i) for i in parsed.get("Items", []))
        return _units(size, bool(params.get("ConsistentRead")))
    if operation == "GetItem":
        item = parsed.get("Item")
        return _units(item_size(item) if item else 0, bool(params.get("ConsistentRead")))
    if operation == "BatchGetItem":
        # Each key separately rounded up; a key that found nothing costs the minimum.
        units = 0.0
        for table, request in params["RequestItems"].items():
            found = parsed.get("Responses", {}).get(table, [])
            consistent = bool(request.get("ConsistentRead"))
            units += sum(_units(item_size(i), consistent) for i in found)
            units += (len(request["Keys"]) - len(found)) * _units(0, consistent)
        return units
    if operation == "TransactGetItems":
        return sum(2 * _units(item_size(r.get("Item", {})), True) for r in parsed.get("Responses", []))
    return 0.0


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


class _NoTableSnapshot:
    """moto deep-copies the whole table before each operation of a transaction, to roll a failed
    one back: with 40,000 items that is seconds per commit. No transaction in this test may fail
    (asserted), so the snapshot would never be used: skip it."""

    def __init__(self) -> None:
        from moto.dynamodb.models.table import Table

        self._table = Table

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        return value if isinstance(value, self._table) else copy.deepcopy(value, memo)


def _all_items_sorted_by_plain_keys(self: Any) -> list[Any]:
    """moto's Table.all_items, sorting on the keys' plain values (our keys are strings, so the order
    is the same) instead of comparing its DynamoType wrappers: seconds faster per query at 40k items."""
    items = [item for by_range in self.items.values() for item in by_range.values()]
    return sorted(items, key=lambda i: (i.hash_key.value, i.range_key.value if i.range_key else ""))


@pytest.fixture
def fast_moto(monkeypatch):
    """Only moto's bookkeeping gets faster; what requests return is unchanged."""
    import moto.dynamodb.models
    from moto.dynamodb.models.table import Table

    monkeypatch.setattr(moto.dynamodb.models, "copy", _NoTableSnapshot())
    monkeypatch.setattr(Table, "all_items", _all_items_sorted_by_plain_keys)


@contextlib.contextmanager
def _stream_paused(table_name: str) -> Iterator[None]:
    """Bulk-load without moto recording a stream record per item (nothing here reads the stream)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_table(table_name)
    shard, table.stream_shard = table.stream_shard, None
    try:
        yield
    finally:
        table.stream_shard = shard


def _idle_items(profile: dict[str, Any], enrolment: dict[str, Any], first: int, count: int) -> list[dict[str, Any]]:
    """Idle leads shaped exactly like a captured one: half finished their sequence (out of the due
    index), half wait a week for their next step (in the due index, but not due)."""
    week_later = iso(START + timedelta(days=7))
    items = []
    for i in range(first, first + count):
        email = f"idle{i}@example.com"
        lead_id = lead_id_for(email)
        pk = {"S": f"LEAD#{lead_id}"}
        items.append(
            {**profile, "pk": pk, "lead_id": {"S": lead_id}, "email": {"S": email}, "email_identity": {"S": email}}
        )
        enrol = {**enrolment, "pk": pk, "lead_id": {"S": lead_id}}
        if i % 2:
            enrol.update(step_index={"N": "1"}, due_at={"S": week_later}, due_shard={"S": due_shard(lead_id)})
        else:
            del enrol["due_at"], enrol["due_shard"]
            enrol.update(step_index={"N": "3"}, status={"S": "completed"})
        items.append(enrol)
    return items


def _batch_write(ddb: Any, table: str, requests: list[dict[str, Any]]) -> None:
    for start in range(0, len(requests), 25):
        pending = {table: requests[start : start + 25]}
        while pending:
            pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def _put_all(ddb: Any, table: str, items: list[dict[str, Any]]) -> None:
    _batch_write(ddb, table, [{"PutRequest": {"Item": i}} for i in items])


def _lead_items(ddb: Any, table: str, lead_id: str) -> list[dict[str, Any]]:
    return ddb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"LEAD#{lead_id}"}},
        ConsistentRead=True,
    )["Items"]


def _batch_get(ddb: Any, table: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), 100):
        request = {table: {"Keys": keys[start : start + 100], "ConsistentRead": True}}
        while request:
            response = ddb.batch_get_item(RequestItems=request)
            found.extend(response["Responses"][table])
            request = response.get("UnprocessedKeys") or {}
    return found


def _key(item: dict[str, Any]) -> tuple[str, str]:
    return item["pk"]["S"], item["sk"]["S"]


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


def test_tick_reads_grow_with_due_work_not_with_leads(client, rt, settings, outbox, tick, fast_moto):
    """One table, measured twice: among 1,000 idle leads, then -- the 100 due leads put back
    exactly as the form wrote them -- among 10,000."""
    ddb, table = aws.dynamodb(), settings.table_name
    everything = DynamoMeter(ddb)
    due_leads = [lead_id_for(f"lead{i}@example.com") for i in range(DUE)]
    for i in range(DUE):
        response = post_json(client, "/forms/newsletter", {"email": f"lead{i}@example.com", "consent": True})
        assert response.status_code == 200
    as_captured = [item for lead_id in due_leads for item in _lead_items(ddb, table, lead_id)]
    captured = {_key(i): i for i in as_captured}
    profile = captured[(f"LEAD#{due_leads[0]}", "PROFILE")]  # the shapes capture writes
    enrolment = captured[(f"LEAD#{due_leads[0]}", "ENROL#welcome")]

    results = {}
    # The bulk load skips botocore's client-side parameter validation (its own client): a third
    # of a second per thousand items.
    loader = boto3.client("dynamodb", config=Config(parameter_validation=False))
    written = 0
    for idle in IDLE_SIZES:
        with _stream_paused(table):
            _put_all(loader, table, _idle_items(profile, enrolment, written, idle - written))
        written = idle
        if results:  # put the due leads back as captured: the same due work among more idle leads
            messages = [
                {"pk": i["pk"], "sk": i["sk"]}
                for lead_id in due_leads
                for i in _lead_items(ddb, table, lead_id)
                if i["sk"]["S"].startswith("MSG#")
            ]
            assert len(messages) == DUE
            _batch_write(ddb, table, [{"DeleteRequest": {"Key": key}} for key in messages])
            _put_all(ddb, table, as_captured)
            restored = _batch_get(ddb, table, [{"pk": i["pk"], "sk": i["sk"]} for i in as_captured] + messages)
            assert sorted(restored, key=_key) == sorted(as_captured, key=_key)
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
