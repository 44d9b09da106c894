"""moto's DynamoDB made to hold a day of traffic: what it copies and keeps per request is bounded by
what the request touches, not by the size of the table or how long it has been running. Every answer
is the one moto gives (same items, same order, same errors), except where moto would fail with a
500 and DynamoDB answers an error of its own (noted below).

The twin's moto server applies this for the life of its process (``install()``); the tests and the
bench apply it around a test or a run (``patched()``). What moto 5.2 does, and what this does:

1. ``transact_write_items`` deep-copies every table a transaction names before it starts, to put
   the copy back if the transaction fails: O(table) per transaction, and in the twin O(table) of
   garbage per event (300 events took it from 490 MB to 3 GB in 75 s; a fuzz run was OOM-killed at
   24 GB). Putting the copy back also replaced the table object, undoing whatever other requests had
   written meanwhile, and left shard iterators on the old object (keeping that copy alive). Here a
   transaction keeps an undo log instead: a copy of each item it names and where each table's
   stream ended. A failed transaction puts those items back in place and drops the stream records
   it wrote; no other item is touched and the table stays the same object.
2. A table's stream keeps every record for ever. Here records that a reader has been handed are
   dropped once more than ``READ_RECORDS_KEPT`` of them have piled up; records nobody has read yet
   are never dropped. (DynamoDB keeps 24 hours; the twin has one reader, its pump.) Reading behind
   the trimmed part answers ``TrimmedDataAccessException``, as DynamoDB does (moto: a 500).
3. The streams backend keeps every shard iterator it issues (a few per pump read, every half
   second). Here each expires ``ITERATOR_LIFETIME_SECONDS`` after it was issued, as DynamoDB's do;
   using one answers ``ExpiredIteratorException`` (moto: a 500).
4. Every Query and Scan starts from ``Table.all_items``, which sorts the whole table comparing
   moto's ``DynamoType`` wrappers pair by pair; here it sorts on each key's value computed once (the
   very comparison moto makes), several times faster at tens of thousands of items.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional
from unittest import mock

READ_RECORDS_KEPT = 1_000
ITERATOR_LIFETIME_SECONDS = 15 * 60  # DynamoDB Streams: a shard iterator expires after 15 minutes


# -- 1. transactions: an undo log of what they touch ---------------------------------------------


class _TablesAreNotCopied:
    """Stands in for the ``copy`` module inside ``moto.dynamodb.models``: its ``transact_write_items``
    deep-copies each table it names (to put it back on failure); here the table is the table, and
    ``_UndoLog`` does the putting back. Every other copy there (an item's, before an update) is real."""

    def __init__(self) -> None:
        from moto.dynamodb.models.table import Table

        self._table = Table

    def deepcopy(self, value: Any, memo: Optional[dict[int, Any]] = None) -> Any:
        return value if isinstance(value, self._table) else copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


@dataclass
class _Saved:
    table: Any
    hash_key: Any
    range_key: Any
    partition_existed: bool
    item: Any  # a deep copy of the item before the transaction, or None when there was none


class _UndoLog:
    """What a transaction can change, saved before it runs: the items it names, each table's stream end."""

    def __init__(self, backend: Any, transact_items: Any) -> None:
        self.saved: list[_Saved] = []
        self.stream_ends: dict[int, tuple[Any, int]] = {}
        if not isinstance(transact_items, list):
            return
        for entry in transact_items:
            if not isinstance(entry, dict) or len(entry) != 1:
                continue  # moto refuses it before writing anything for it
            operation, request = next(iter(entry.items()))
            if not isinstance(request, dict):
                continue
            table = backend.tables.get(request.get("TableName"))
            if table is None:
                continue
            self._save(table, request.get("Item") if operation == "Put" else request.get("Key"))
            shard = table.stream_shard
            if shard is not None and id(table) not in self.stream_ends:
                self.stream_ends[id(table)] = (table, shard.starting_sequence_number + len(shard.items))

    def _save(self, table: Any, attributes: Any) -> None:
        from moto.dynamodb.models.dynamo_type import DynamoType

        try:
            hash_key = DynamoType(attributes[table.hash_key_attr])
            range_key = DynamoType(attributes[table.range_key_attr]) if table.range_key_attr else None
            # .get, never [...]: table.items is a defaultdict, and looking would create a partition.
            partition = table.items.get(hash_key)
            current = partition.get(range_key) if range_key is not None and partition is not None else partition
        except Exception:  # a key moto cannot read is one it cannot write either
            return
        self.saved.append(_Saved(table, hash_key, range_key, partition is not None, copy.deepcopy(current)))

    def undo(self) -> None:
        for saved in reversed(self.saved):
            items = saved.table.items
            if saved.range_key is None:
                if saved.item is None:
                    items.pop(saved.hash_key, None)
                else:
                    items[saved.hash_key] = saved.item
                continue
            partition = items.get(saved.hash_key)
            if saved.item is not None:
                items[saved.hash_key][saved.range_key] = saved.item
            elif partition is not None:
                partition.pop(saved.range_key, None)
                if not partition and not saved.partition_existed:
                    del items[saved.hash_key]
        for table, end in self.stream_ends.values():
            self._drop_stream_records(table, end)

    def _drop_stream_records(self, table: Any, end: int) -> None:
        """Drop the records this transaction wrote since ``end``: those of the keys it names. A
        record another request wrote meanwhile stays, renumbered to close the gap (a shard's records
        sit at sequence number minus its start)."""
        shard = table.stream_shard
        if shard is None:
            return
        first = max(0, end - shard.starting_sequence_number)
        keys = [self._record_keys(table, saved) for saved in self.saved if saved.table is table]
        kept = [record for record in shard.items[first:] if record.record["dynamodb"]["Keys"] not in keys]
        if len(kept) == len(shard.items) - first:
            return
        shard.items[first:] = kept
        for position in range(first, len(shard.items)):
            number = str(shard.starting_sequence_number + position)
            shard.items[position].record["dynamodb"]["SequenceNumber"] = number

    @staticmethod
    def _record_keys(table: Any, saved: _Saved) -> dict[str, Any]:
        keys = {table.hash_key_attr: saved.hash_key.to_json()}
        if saved.range_key is not None:
            keys[table.range_key_attr] = saved.range_key.to_json()
        return keys


# -- 2. streams: read records do not pile up -------------------------------------------------------


def _trimmed_data_access() -> Exception:
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError(
        "TrimmedDataAccessException", "The operation attempted to read past the oldest stream record in a shard."
    )


def _expired_iterator() -> Exception:
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError("ExpiredIteratorException", "The shard iterator has expired.")


def _shard_get(shard: Any, start: int, quantity: int) -> list[dict[str, Any]]:
    """``StreamShard.get``: the records from sequence number ``start``; then trims what was read."""
    offset = start - shard.starting_sequence_number
    if offset < 0:
        raise _trimmed_data_access()
    handed = shard.items[offset : offset + quantity]
    records = [record.to_json() for record in handed]
    read = offset + len(handed)
    # In chunks: deleting from the front of a list moves everything after it.
    if read > 2 * READ_RECORDS_KEPT:
        dropped = read - READ_RECORDS_KEPT
        del shard.items[:dropped]
        shard.starting_sequence_number += dropped
    return records


# -- 3. shard iterators expire ---------------------------------------------------------------------


def _monotonic() -> float:
    return time.monotonic()


class _ExpiringIterators(dict[str, Any]):
    """The streams backend's shard iterators by ARN, each forgotten a lifetime after it was issued
    (ARNs are random, so each is set once)."""

    def __init__(self, existing: dict[str, Any]) -> None:
        super().__init__(existing)
        now = _monotonic()
        self._issued: deque[tuple[float, str]] = deque((now, arn) for arn in existing)

    def __setitem__(self, arn: str, iterator: Any) -> None:
        now = _monotonic()
        super().__setitem__(arn, iterator)
        self._issued.append((now, arn))
        while self._issued and self._issued[0][0] <= now - ITERATOR_LIFETIME_SECONDS:
            self.pop(self._issued.popleft()[1], None)


def _expiring(backend: Any) -> None:
    if not isinstance(backend.shard_iterators, _ExpiringIterators):
        backend.shard_iterators = _ExpiringIterators(backend.shard_iterators)


# -- 4. sorting the table on plain values ----------------------------------------------------------


def _table_order(item: Any) -> Any:
    # moto's own key, (hash, range) or hash, with each DynamoType's cast_value (what its __lt__ compares).
    if item.range_key:
        return (item.hash_key.cast_value, item.range_key.cast_value)
    return item.hash_key.cast_value


def _all_items(table: Any) -> list[Any]:
    """``Table.all_items``: every item, in key order."""
    if table.range_key_attr:
        items = [item for partition in table.items.values() for item in partition.values()]
    else:
        items = list(table.items.values())
    return sorted(items, key=_table_order)


# -- applying them ---------------------------------------------------------------------------------


@functools.cache
def _replacements() -> tuple[tuple[Any, str, Any], ...]:
    """(owner, attribute, replacement) for each patch; moto's originals captured once, so applying
    twice (the twin's ``install`` then a test's ``patched``) never wraps a wrapper."""
    import moto.dynamodb.models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard, Table
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

    transact = DynamoDBBackend.transact_write_items
    get_shard_iterator = DynamoDBStreamsBackend.get_shard_iterator
    get_records = DynamoDBStreamsBackend.get_records

    def transact_write_items(self: Any, transact_items: Any) -> Any:
        log = _UndoLog(self, transact_items)
        try:
            return transact(self, transact_items)
        except BaseException:
            log.undo()
            raise

    def shard_iterator(self: Any, *args: Any, **kwargs: Any) -> Any:
        _expiring(self)
        return get_shard_iterator(self, *args, **kwargs)

    def records(self: Any, iterator_arn: str, limit: int) -> Any:
        _expiring(self)
        if iterator_arn not in self.shard_iterators:
            raise _expired_iterator()
        return get_records(self, iterator_arn, limit)

    return (
        (moto.dynamodb.models, "copy", _TablesAreNotCopied()),
        (DynamoDBBackend, "transact_write_items", transact_write_items),
        (StreamShard, "get", _shard_get),
        (DynamoDBStreamsBackend, "get_shard_iterator", shard_iterator),
        (DynamoDBStreamsBackend, "get_records", records),
        (Table, "all_items", _all_items),
    )


def install() -> None:
    """For the life of this process (the twin's moto server)."""
    for owner, name, replacement in _replacements():
        setattr(owner, name, replacement)


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """For a test or a bench run; moto is as it was afterwards."""
    with contextlib.ExitStack() as stack:
        for owner, name, replacement in _replacements():
            stack.enter_context(mock.patch.object(owner, name, replacement))
        yield
