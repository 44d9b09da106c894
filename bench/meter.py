"""Count every AWS request the app makes, with botocore's event hooks, and price it in capacity units.

Hooks on the app's own cached clients (``chalicelib.aws``): ``before-parameter-build`` keeps the
parameters, asks DynamoDB for ``ReturnConsumedCapacity=TOTAL`` and starts a timer; ``after-call``
stops it and records the call. The stream reader (Lambda's event source mapping, not billed per
request) uses its own client and is not counted.

moto answers ``ReturnConsumedCapacity`` with constants (0.5 or 1.0 per request, whatever the item
sizes), so the capacity units here are computed by DynamoDB's rules and moto's figure is only kept
for comparison:

- reads: ``testkit.items.read_units`` (4 KB blocks per item for GetItem and
  BatchGetItem, the page's summed size for Query; eventually consistent half price; transactional
  double);
- writes: per item written, 1 unit per started KB of the larger of its before and after images
  (read from moto's backend around the call), at least 1; each global secondary index the item is
  in (before or after) adds a write of its size, two when the index key changed (delete + put), none
  when the item did not change; inside ``TransactWriteItems`` the table's units count double
  (``ConditionCheck`` too); index writes are taken as standard writes. A failed conditional write
  still pays the table's units.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Optional

from testkit.items import item_size, read_units

READS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})


@dataclass
class Call:
    service: str
    operation: str
    seconds: float
    ok: bool
    read_units: float = 0.0
    write_units: float = 0.0
    moto_units: Optional[float] = None


@dataclass
class Usage:
    """What a set of calls cost: requests by service and operation, capacity units, time in AWS calls."""

    calls: list[Call] = field(default_factory=list)

    @property
    def by_operation(self) -> Counter[str]:
        return Counter(f"{c.service}:{c.operation}" for c in self.calls)

    def count(self, service: str, operations: Optional[frozenset[str]] = None) -> int:
        return sum(1 for c in self.calls if c.service == service and (operations is None or c.operation in operations))

    @property
    def ddb_reads(self) -> int:
        return self.count("dynamodb", READS)

    @property
    def ddb_writes(self) -> int:
        return self.count("dynamodb", WRITES)

    @property
    def rcu(self) -> float:
        return sum(c.read_units for c in self.calls)

    @property
    def wcu(self) -> float:
        return sum(c.write_units for c in self.calls)

    @property
    def moto_units(self) -> float:
        return sum(c.moto_units or 0.0 for c in self.calls)

    @property
    def ses_sends(self) -> int:
        return sum(1 for c in self.calls if c.service in ("ses", "sesv2") and c.operation.startswith("Send"))

    @property
    def ses_calls(self) -> int:
        return self.count("ses") + self.count("sesv2")

    @property
    def sns_calls(self) -> int:
        return self.count("sns")

    @property
    def errors(self) -> int:
        return sum(1 for c in self.calls if not c.ok)

    @property
    def aws_seconds(self) -> float:
        return sum(c.seconds for c in self.calls)

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.calls + other.calls)


def _units_of(size: int, block: int) -> int:
    return max(1, math.ceil(size / block))


class _Backend:
    """Peeks at moto's DynamoDB tables (no request, nothing counted) for before and after images."""

    def __init__(self) -> None:
        from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
        from moto.dynamodb.models import dynamodb_backends

        self._backend = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]

    def table(self, name: str) -> Any:
        return self._backend.get_table(name)

    def image(self, table_name: str, key: dict[str, Any]) -> Optional[dict[str, Any]]:
        from moto.dynamodb.models.dynamo_type import DynamoType

        table = self.table(table_name)
        hash_value = key.get(table.hash_key_attr)
        if hash_value is None:
            return None
        range_value = key.get(table.range_key_attr) if table.range_key_attr else None
        item = table.get_item(DynamoType(hash_value), DynamoType(range_value) if range_value else None)
        if item is None:
            return None
        attributes: dict[str, Any] = item.to_json()["Attributes"]
        return attributes

    def index_keys(self, table_name: str) -> list[list[str]]:
        return [[k["AttributeName"] for k in index.schema] for index in self.table(table_name).global_indexes]


def _written_items(operation: str, params: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], bool]]:
    """(table, kind, key-or-item, transactional) for every item a write request touches."""
    if operation == "PutItem":
        return [(params["TableName"], "Put", params["Item"], False)]
    if operation in ("UpdateItem", "DeleteItem"):
        return [(params["TableName"], operation[:-4], params["Key"], False)]
    if operation == "BatchWriteItem":
        out = []
        for table, requests in params.get("RequestItems", {}).items():
            for request in requests:
                if "PutRequest" in request:
                    out.append((table, "Put", request["PutRequest"]["Item"], False))
                else:
                    out.append((table, "Delete", request["DeleteRequest"]["Key"], False))
        return out
    if operation == "TransactWriteItems":
        out = []
        for entry in params.get("TransactItems", []):
            [(kind, body)] = entry.items()
            out.append((body["TableName"], kind, body.get("Item") or body["Key"], True))
        return out
    return []


class AwsMeter:
    """Records every call of the given clients; ``window()`` yields the Usage of what ran inside it."""

    def __init__(self, clients: dict[str, Any]) -> None:
        self.calls: list[Call] = []
        self._backend = _Backend()
        self._clients = clients
        for client in clients.values():
            client.meta.events.register("before-parameter-build", self._before)
            client.meta.events.register("after-call", self._after)

    def close(self) -> None:
        for client in self._clients.values():
            client.meta.events.unregister("before-parameter-build", self._before)
            client.meta.events.unregister("after-call", self._after)

    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        if service == "dynamodb":
            if "ReturnConsumedCapacity" in model.input_shape.members and "ReturnConsumedCapacity" not in params:
                params["ReturnConsumedCapacity"] = "TOTAL"
            items = _written_items(model.name, params)
            context["bench_written"] = [
                (table, kind, self._key(table, body), transactional) for table, kind, body, transactional in items
            ]
            context["bench_before"] = [self._backend.image(t, k) for t, _, k, _ in context["bench_written"]]
        context["bench_params"] = params
        context["bench_start"] = time.perf_counter()

    def _key(self, table_name: str, body: dict[str, Any]) -> dict[str, Any]:
        table = self._backend.table(table_name)
        names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
        return {n: body[n] for n in names if n in body}

    def _after(self, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        seconds = time.perf_counter() - context.get("bench_start", time.perf_counter())
        service = model.service_model.service_name
        ok = "Error" not in parsed
        call = Call(service, model.name, seconds, ok)
        if service == "dynamodb":
            params = context.get("bench_params", {})
            if ok:
                call.read_units = read_units(model.name, params, parsed)
            written = context.get("bench_written", [])
            if written:
                call.write_units = self._write_units(written, context.get("bench_before", []), ok)
            consumed = parsed.get("ConsumedCapacity")
            if isinstance(consumed, dict):
                consumed = [consumed]
            if consumed:
                call.moto_units = sum(float(c.get("CapacityUnits", 0)) for c in consumed)
        self.calls.append(call)

    def _write_units(
        self, written: list[tuple[str, str, dict[str, Any], bool]], before: list[Optional[dict[str, Any]]], ok: bool
    ) -> float:
        units = 0.0
        for (table, kind, key, transactional), old in zip(written, before, strict=True):
            new = self._backend.image(table, key)
            if kind == "ConditionCheck":
                units += 2 * _units_of(item_size(old or {}), 1024)
                continue
            size = max(item_size(old or {}), item_size(new or {}))
            units += _units_of(size, 1024) * (2 if transactional else 1)
            if not ok or old == new:
                continue
            for index_key in self._backend.index_keys(table):
                units += _index_writes(index_key, old, new)
        return units

    @contextmanager
    def window(self) -> Iterator[Usage]:
        usage = Usage()
        start = len(self.calls)
        try:
            yield usage
        finally:
            usage.calls.extend(self.calls[start:])


def _index_writes(index_key: list[str], old: Optional[dict[str, Any]], new: Optional[dict[str, Any]]) -> int:
    """Write units one global secondary index (projection ALL) pays for an item going from old to new."""
    was = old is not None and all(k in old for k in index_key)
    now = new is not None and all(k in new for k in index_key)
    if was and now:
        assert old is not None and new is not None
        changed = any(old[k] != new[k] for k in index_key)
        return _units_of(item_size(new), 1024) + (_units_of(item_size(old), 1024) if changed else 0)
    if now:
        assert new is not None
        return _units_of(item_size(new), 1024)
    if was:
        assert old is not None
        return _units_of(item_size(old), 1024)
    return 0
