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
2. A table's stream keeps every record for ever, each about 8 KB of Python objects. Here each is
   kept pickled and compressed (``_PackedRecord``), and records that a reader has been handed are
   dropped once more than ``READ_RECORDS_KEPT`` of them have piled up; records nobody has read yet
   are never dropped. (DynamoDB keeps 24 hours; the twin has one reader, its pump.) Reading behind
   the trimmed part answers ``TrimmedDataAccessException``, as DynamoDB does (moto: a 500).
3. The streams backend keeps every shard iterator it issues (a few per pump read, every half
   second). Here each expires ``ITERATOR_LIFETIME_SECONDS`` after it was issued, as DynamoDB's do;
   using one answers ``ExpiredIteratorException`` (moto: a 500).
4. Every Query and Scan starts from ``Table.all_items``, which sorts the whole table comparing
   moto's ``DynamoType`` wrappers pair by pair: a Query for one lead's items sorted the 20,000 items
   of every lead. Here a Query on the table reads the partition it names, a Query on an index skips
   that first sort (moto sorts its candidates afterwards), and what is sorted is sorted on each
   key's plain value (the very comparison moto makes), computed once.
5. Every moto model object (``BaseModel``) is also appended to a list on its class, for the moto
   server's ``/moto-api/data.json`` dashboard, and only a mock's reset empties it: every DynamoDB
   item ever written or copied into a Query's answer, every stream record and shard iterator, kept
   for the life of the twin. Those three classes keep no such list here (S3's, which moto's reset
   uses to close files, is left alone); the dashboard then lists none of them.
6. moto 5.2 serialises every DynamoDB answer through botocore's shape model, attribute value by
   attribute value: each ``{"S": "x"}`` looks up all ten members of ``AttributeValue`` through an
   attribute picker, recursively into maps and lists, so an answer of a few profiles cost tens of
   milliseconds (a third of the suite's DynamoDB time). An attribute value is already in its wire
   form there, and the model would copy it unchanged, so here a value made only of strings,
   numbers, booleans, nulls, sets of those, maps and lists is written as it is; any other value
   (binary, which the model base64-encodes) still goes through the model.
7. Every update expression (an ``UpdateItem``, each update of a transaction) is parsed into a
   fresh syntax tree, which moto's validator then ``deepcopy``s before it works on it: a generic
   deep copy of a few hundred small objects, 4 ms of an update's 20. Here a tree of plain nodes
   (children that are nodes or immutable values, no other mutable attribute) is copied node by
   node, with the same parent links; anything else goes to ``copy.deepcopy`` as before.
8. The validator then walks the tree ten times (one ``DepthFirstTraverser`` per check), asking of
   every node ``isinstance`` against the traverser's node classes, which are ABCs (a slow check),
   several times a node. Here each traverser answers once per node type which of its processors
   applies (the first, in its own map's order, whose class the type is a subclass of: what the
   ``isinstance`` checks answer for these classes, none of which has virtual subclasses), and walks
   as moto walks.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import inspect
import pickle
import time
import zlib
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
            record = shard.items[position].record
            record["dynamodb"]["SequenceNumber"] = str(shard.starting_sequence_number + position)
            shard.items[position].record = record  # set back: a packed record hands out copies

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


class _PackedRecord:
    """A stream record as moto's ``StreamRecord`` holds it, pickled and compressed: with both images
    a record is about 8 KB of Python objects, ten times less so; and while the stream handler waits
    on SES's 1 email/s for each new lead, unread records pile up by the tens of thousands."""

    __slots__ = ("_packed",)

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    @property
    def record(self) -> dict[str, Any]:
        # Only ever what this process pickled itself, just above.
        value: dict[str, Any] = pickle.loads(zlib.decompress(self._packed))  # noqa: S301
        return value

    @record.setter
    def record(self, value: dict[str, Any]) -> None:
        self._packed = zlib.compress(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), 1)

    def to_json(self) -> dict[str, Any]:
        return self.record


def _shard_add(original: Any) -> Any:
    def add(shard: Any, old: Any, new: Any) -> None:
        before = len(shard.items)
        original(shard, old, new)
        if len(shard.items) == before + 1:  # moto empties the list when it hands records to a Lambda
            shard.items[-1] = _PackedRecord(shard.items[-1].record)

    return add


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


def _plain(value: Any) -> Any:
    # cast_value is what DynamoType.__lt__ compares; for a string (most keys) that is the string.
    return value.value if value.type == "S" else value.cast_value


def _table_order(item: Any) -> Any:
    # moto's own sort key, (hash, range) or hash, on plain values.
    if item.range_key:
        return (_plain(item.hash_key), _plain(item.range_key))
    return _plain(item.hash_key)


# What the Query running in this thread asks for: (table, hash key, index name).
_query: contextvars.ContextVar[Optional[tuple[Any, Any, Optional[str]]]] = contextvars.ContextVar(
    "moto_query", default=None
)


def _all_items(table: Any) -> list[Any]:
    """``Table.all_items``: every item, in key order. Within a Query (``_query``), only what that
    Query looks at: on the table, the one partition its hash key names (moto filters all items on
    it); on an index, every item unsorted (moto sorts the candidates on the index key then the
    table key, a total order, whatever order they came in)."""
    asked = _query.get()
    if asked is not None and asked[0] is table:
        _, hash_key, index_name = asked
        if index_name is not None:
            return _every_item(table)
        if hash_key is not None:
            partition = table.items.get(hash_key)
            if partition is None:
                return []
            return sorted(partition.values(), key=_table_order) if table.range_key_attr else [partition]
    return sorted(_every_item(table), key=_table_order)


def _every_item(table: Any) -> list[Any]:
    if table.range_key_attr:
        return [item for partition in table.items.values() for item in partition.values()]
    return list(table.items.values())


# -- 5. no registry of every item ever made -----------------------------------------------------


class _NotKept(list[Any]):
    """Stands in for a moto model class's ``instances_tracked``: keeps nothing."""

    def append(self, instance: Any) -> None:
        pass


def _untracked() -> tuple[Any, ...]:
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import StreamRecord
    from moto.dynamodbstreams.models import ShardIterator

    return (Item, StreamRecord, ShardIterator)


# -- 6. attribute values written as they are ------------------------------------------------------

_STRINGS = frozenset({"S", "N"})
_BOOLEANS = frozenset({"BOOL", "NULL"})
_STRING_SETS = frozenset({"SS", "NS"})


def _as_on_the_wire(value: Any) -> bool:
    """Whether the model would write ``value`` (an ``AttributeValue``, as moto's
    ``dynamo_to_dict`` left it) unchanged: one member, of a type the model copies as it is."""
    if type(value) is not dict or len(value) != 1:
        return False
    ((kind, inner),) = value.items()
    if kind in _STRINGS:
        return type(inner) is str
    if kind in _BOOLEANS:
        return type(inner) is bool
    if kind in _STRING_SETS:
        return type(inner) is list and all(type(member) is str for member in inner)
    if kind == "M":
        return type(inner) is dict and all(type(k) is str and _as_on_the_wire(v) for k, v in inner.items())
    if kind == "L":
        return type(inner) is list and all(_as_on_the_wire(member) for member in inner)
    return False


def _serialize_structure(original: Any) -> Any:
    def serialize(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if key and shape.name == "AttributeValue" and _as_on_the_wire(value):
            serialized[self.get_serialized_name(shape, key)] = value
            return
        original(self, serialized, value, shape, key)

    return serialize


# -- 7. the validator's copy of a syntax tree --------------------------------------------------

_IMMUTABLE = (str, int, float, bool, type(None))


def _plain_tree(node: Any, node_type: Any) -> bool:
    for name, value in vars(node).items():
        if name == "children":
            if value is None:
                continue
            if not isinstance(value, list):
                return False
            for child in value:
                if isinstance(child, node_type):
                    if child.parent is not node or not _plain_tree(child, node_type):
                        return False
                elif not isinstance(child, _IMMUTABLE):
                    return False
        elif name != "parent" and not isinstance(value, _IMMUTABLE):
            return False
    return True


def _copy_node(node: Any, parent: Any, node_type: Any) -> Any:
    twin = object.__new__(type(node))
    twin.__dict__.update(vars(node))
    twin.parent = parent
    if node.children is not None:
        twin.children = [_copy_node(c, twin, node_type) if isinstance(c, node_type) else c for c in node.children]
    return twin


def _tree_copy(value: Any, memo: Optional[dict[int, Any]] = None) -> Any:
    """``copy.deepcopy``'s answer for the validator's syntax trees, made node by node."""
    import moto.dynamodb.parsing.ast_nodes

    node_type = moto.dynamodb.parsing.ast_nodes.Node  # type: ignore[attr-defined]
    if isinstance(value, node_type) and value.parent is None and _plain_tree(value, node_type):
        return _copy_node(value, None, node_type)
    return copy.deepcopy(value, memo)


# -- 8. the validator's walks: each node type's processor looked up once ---------------------------

_NODE_TYPES: dict[type, bool] = {}
_PROCESSORS = "_trellis_processors"


def _is_node(value: Any, node_type: Any) -> bool:
    kind = type(value)
    known = _NODE_TYPES.get(kind)
    if known is None:
        known = _NODE_TYPES[kind] = issubclass(kind, node_type)
    return known


def _processor(traverser: Any, kind: type) -> Any:
    """The traverser's processor for nodes of this type (None: it leaves them alone), as its
    ``nodes_to_be_processed`` and ``process`` would pick it."""
    found: dict[type, Any] = traverser.__dict__.setdefault(_PROCESSORS, {})
    if kind not in found:
        wanted = issubclass(kind, traverser.nodes_to_be_processed())
        chosen = (p for k, p in traverser._processing_map().items() if issubclass(kind, k)) if wanted else iter(())
        found[kind] = next(chosen, None)
    return found[kind]


def _walk(original: Any) -> Any:
    import moto.dynamodb.parsing.ast_nodes

    node_type = moto.dynamodb.parsing.ast_nodes.Node  # type: ignore[attr-defined]

    def traverse_node_recursively(self: Any, node: Any, child_id: int = -1) -> Any:
        if _is_node(node, node_type):
            parent_node = node.parent
            if node.children is not None:
                for i, child_node in enumerate(node.children):
                    self.pre_processing_of_child(node, i)
                    self.traverse_node_recursively(child_node, i)
            processor = _processor(self, type(node))
            if processor is not None:
                node = processor(node)
                node.parent = parent_node
                if parent_node:
                    parent_node.children[child_id] = node
        return node

    traverse_node_recursively.__doc__ = original.__doc__
    return traverse_node_recursively


# -- applying them ---------------------------------------------------------------------------------


@functools.cache
def _originals() -> tuple[tuple[Any, str, Any], ...]:
    """moto's own (owner, attribute, value) for each patched attribute, captured before any patch."""
    import moto.dynamodb.models
    import moto.dynamodb.parsing.validators
    from moto.core.serialize import BaseJSONSerializer
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard, Table
    from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser  # type: ignore[attr-defined]
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

    return (
        (BaseJSONSerializer, "_serialize_type_structure", BaseJSONSerializer._serialize_type_structure),
        (moto.dynamodb.parsing.validators, "deepcopy", copy.deepcopy),
        (DepthFirstTraverser, "traverse_node_recursively", DepthFirstTraverser.traverse_node_recursively),
        (moto.dynamodb.models, "copy", copy),
        (DynamoDBBackend, "transact_write_items", DynamoDBBackend.transact_write_items),
        (StreamShard, "get", StreamShard.get),
        (StreamShard, "add", StreamShard.add),
        (DynamoDBStreamsBackend, "get_shard_iterator", DynamoDBStreamsBackend.get_shard_iterator),
        (DynamoDBStreamsBackend, "get_records", DynamoDBStreamsBackend.get_records),
        (Table, "all_items", Table.all_items),
        (Table, "query", Table.query),
        *((model, "instances_tracked", model.instances_tracked) for model in _untracked()),
    )


@functools.cache
def _replacements() -> tuple[tuple[Any, str, Any], ...]:
    """(owner, attribute, replacement) for each patch; moto's originals captured once, so applying
    twice (the twin's ``install`` then a test's ``patched``) never wraps a wrapper."""
    import moto.dynamodb.models
    import moto.dynamodb.parsing.validators
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard, Table
    from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser  # type: ignore[attr-defined]
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

    original = {name: value for _, name, value in _originals()}
    transact = original["transact_write_items"]
    table_query = original["query"]
    query_signature = inspect.signature(table_query)
    get_shard_iterator = original["get_shard_iterator"]
    get_records = original["get_records"]

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

    def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        asked = query_signature.bind_partial(self, *args, **kwargs).arguments
        token = _query.set((self, asked.get("hash_key"), asked.get("index_name")))
        try:
            return table_query(self, *args, **kwargs)
        finally:
            _query.reset(token)

    from moto.core.serialize import BaseJSONSerializer

    return (
        (BaseJSONSerializer, "_serialize_type_structure", _serialize_structure(original["_serialize_type_structure"])),
        (moto.dynamodb.parsing.validators, "deepcopy", _tree_copy),
        (DepthFirstTraverser, "traverse_node_recursively", _walk(original["traverse_node_recursively"])),
        (moto.dynamodb.models, "copy", _TablesAreNotCopied()),
        (DynamoDBBackend, "transact_write_items", transact_write_items),
        (StreamShard, "get", _shard_get),
        (StreamShard, "add", _shard_add(original["add"])),
        (DynamoDBStreamsBackend, "get_shard_iterator", shard_iterator),
        (DynamoDBStreamsBackend, "get_records", records),
        (Table, "all_items", _all_items),
        (Table, "query", query),
        *((model, "instances_tracked", _NotKept()) for model in _untracked()),
    )


def install() -> None:
    """For the life of this process (the twin's moto server)."""
    for owner, name, replacement in _replacements():
        setattr(owner, name, replacement)


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """For a test or a bench run; moto is as it was afterwards."""
    with _applied(_replacements()):
        yield


@contextlib.contextmanager
def shipped() -> Iterator[None]:
    """moto as shipped, for a while (the tests compare answers with and without the patches)."""
    with _applied(_originals()):
        yield


@contextlib.contextmanager
def _applied(values: tuple[tuple[Any, str, Any], ...]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for owner, name, value in values:
            stack.enter_context(mock.patch.object(owner, name, value))
        yield


@contextlib.contextmanager
def atomic_requests() -> Iterator[None]:
    """In-process moto handling one request at a time, for a test or a bench run.

    DynamoDB applies each request atomically, whoever else is calling; moto's in-memory backend
    checks and sets in Python, unguarded (and copies a table while another thread writes it).
    Serialising moto's handling of each request, as the twin's moto server does, makes a request
    atomic as on AWS while concurrent callers (the dispatcher's send workers, two dispatchers at
    once) still interleave freely between requests."""
    import threading

    from moto.core.botocore_stubber import BotocoreStubber

    lock = threading.RLock()
    process = BotocoreStubber.process_request

    def atomically(self: Any, request: Any) -> Any:
        with lock:
            return process(self, request)

    with mock.patch.object(BotocoreStubber, "process_request", atomically):
        yield
