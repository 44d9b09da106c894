"""The only test code that knows the table's raw keys and DynamoDB's size rules: items by their
``pk``/``sk`` strings, bulk loads and reads, and the read units a response consumed.

Shared by the tests (tests/integration/test_dispatch_scaling.py) and the bench (bench/scaling.py,
bench/throughput.py, bench/meter.py). moto reports no size-based ConsumedCapacity, so the read units
are computed from what each response returned, by DynamoDB's rules (developer guide, "DynamoDB item
sizes and formats" and "Read consistency").
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from chalicelib.entities import iso, lead_id_for
from chalicelib.store import due_shard, keys
from testkit.world import START


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


@contextlib.contextmanager
def stream_paused(table_name: str) -> Iterator[None]:
    """Bulk-load without moto recording a stream record per item (nothing here reads the stream)."""
    from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_table(table_name)
    shard, table.stream_shard = table.stream_shard, None
    try:
        yield
    finally:
        table.stream_shard = shard


@contextlib.contextmanager
def bulk_load(table_name: str) -> Iterator[None]:
    """For seeding only: no stream record per item (``stream_paused``) and no 400 KB item-size
    check on every attribute set (moto recomputes the whole item's size per attribute, quadratic;
    these items are about 1 KB). What is stored is the same."""
    from unittest import mock

    from moto.dynamodb.models.dynamo_type import LimitedSizeDict

    with stream_paused(table_name), mock.patch.object(LimitedSizeDict, "__setitem__", dict.__setitem__):
        yield


def seed(table_name: str, items: list[dict[str, Any]]) -> None:
    """Put items (DynamoDB JSON) straight into moto's table, inside ``bulk_load``: the item moto
    stores is the one a BatchWriteItem would, without a request (botocore's serialising and moto's
    parsing) per 25 items, which is most of the time it takes to seed thousands of idle leads."""
    from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    for item in items:
        backend.put_item(table_name, item)


def idle_items(profile: dict[str, Any], enrolment: dict[str, Any], first: int, count: int) -> list[dict[str, Any]]:
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


def batch_write(ddb: Any, table: str, requests: list[dict[str, Any]]) -> None:
    for start in range(0, len(requests), 25):
        pending = {table: requests[start : start + 25]}
        while pending:
            pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def put_all(ddb: Any, table: str, items: list[dict[str, Any]]) -> None:
    batch_write(ddb, table, [{"PutRequest": {"Item": i}} for i in items])


def lead_items(ddb: Any, table: str, lead_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ddb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"LEAD#{lead_id}"}},
        ConsistentRead=True,
    )["Items"]
    return items


def batch_get(ddb: Any, table: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), 100):
        request = {table: {"Keys": keys[start : start + 100], "ConsistentRead": True}}
        while request:
            response = ddb.batch_get_item(RequestItems=request)
            found.extend(response["Responses"][table])
            request = response.get("UnprocessedKeys") or {}
    return found


def item_key(item: dict[str, Any]) -> tuple[str, str]:
    return item["pk"]["S"], item["sk"]["S"]


# -- plain items (as table_items() returns them): which is whose, by the store's own key formats --


def lead_key(lead_id: str) -> dict[str, str]:
    """The key of a lead's profile item, for a GetItem."""
    return dict(keys.profile(lead_id))


def enrolment_key(lead_id: str, sequence_id: str) -> dict[str, str]:
    return {"pk": keys.lead_pk(lead_id), "sk": f"{keys.ENROL_PREFIX}{sequence_id}"}


def is_leads(item: dict[str, Any], lead_id: str | None = None) -> bool:
    """Any lead's item (or ``lead_id``'s): in a lead's partition."""
    partition = str(item["pk"])
    return partition == keys.lead_pk(lead_id) if lead_id is not None else partition.startswith(keys.lead_pk(""))


def profiles(items: list[dict[str, Any]], lead_id: str | None = None) -> list[dict[str, Any]]:
    return [i for i in items if i["sk"] == keys.PROFILE_SK and (lead_id is None or is_leads(i, lead_id))]


def events(
    items: list[dict[str, Any]], lead_id: str | None = None, event_type: str | None = None
) -> list[dict[str, Any]]:
    return [
        i
        for i in items
        if i["sk"].startswith(keys.EVENT_PREFIX)
        and (lead_id is None or is_leads(i, lead_id))
        and (event_type is None or i["type"] == event_type)
    ]


def enrolments(
    items: list[dict[str, Any]], sequence_id: str | None = None, lead_id: str | None = None
) -> list[dict[str, Any]]:
    prefix = keys.ENROL_PREFIX + (sequence_id or "")
    return [
        i
        for i in items
        if (i["sk"] == prefix if sequence_id else i["sk"].startswith(prefix))
        and (lead_id is None or is_leads(i, lead_id))
    ]


def handoffs(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if i["sk"].startswith(keys.HANDOFF_PREFIX)]


def messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sent-message records."""
    return [i for i in items if i["sk"].startswith(keys.MESSAGE_PREFIX)]


def fill_event(table_name: str, event_id: str, registrations: int) -> None:
    """Make a campaign event look as if ``registrations`` people had registered (its count only)."""
    import boto3

    from chalicelib.store.registrations import REGISTERED

    boto3.resource("dynamodb").Table(table_name).put_item(
        Item={**keys.calendar_state(event_id), REGISTERED: registrations}
    )


def registrations(items: list[dict[str, Any]], lead_id: str | None = None) -> list[dict[str, Any]]:
    """Registrations for the campaign's events (in each event's partition, not the lead's)."""
    return [
        i
        for i in items
        if i["pk"].startswith(keys.CALENDAR_PREFIX)
        and i["sk"].startswith(keys.REGISTRATION_PREFIX)
        and (lead_id is None or i["lead_id"] == lead_id)
    ]
