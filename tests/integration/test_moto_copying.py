"""moto as the suite, the bench and the twin run it (testkit.moto_patches): a transaction copies what
it names, not the table; a failed one changes nothing, however other requests interleave; a stream's
read records and its shard iterators do not pile up. moto 5.2 as shipped fails each of these: it
deep-copies every table a transaction names (the twin went from 490 MB to 3 GB in 300 events), puts
the copy back on failure (undoing other requests' writes) and keeps every record and iterator."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from testkit import moto_patches
from twin.pump import StreamReader

TABLE = "copying"
SEEDED = 3_000


def _create_table(dynamodb: Any) -> None:
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


def _backend() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]


def _item(pk: str, sk: str = "PROFILE", **attributes: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}, **{k: {"S": v} for k, v in attributes.items()}}


def _seed(count: int) -> None:
    """Straight into moto's table (no request per item), so the test stays fast."""
    table = _backend().get_table(TABLE)
    for i in range(count):
        table.put_item(_item(f"LEAD#{i}", name=f"lead {i}"))


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb")
        _create_table(client)
        yield client


@contextlib.contextmanager
def _counting_item_copies() -> Iterator[list[int]]:
    from moto.dynamodb.models.dynamo_type import Item

    copies = [0]
    original = Item.__deepcopy__

    def counted(self: Any, memo: dict[int, Any]) -> Any:
        copies[0] += 1
        return original(self, memo)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Item, "__deepcopy__", counted)
        yield copies


def _transaction(n: int) -> list[dict[str, Any]]:
    """Three items named: an update of a seeded lead, a new event, a condition on another lead."""
    return [
        {
            "Update": {
                "TableName": TABLE,
                "Key": {"pk": {"S": f"LEAD#{n}"}, "sk": {"S": "PROFILE"}},
                "UpdateExpression": "SET score = :s",
                "ExpressionAttributeValues": {":s": {"N": str(n)}},
            }
        },
        {"Put": {"TableName": TABLE, "Item": _item(f"LEAD#{n}", f"EVENT#{n}", type="page_view")}},
        {
            "ConditionCheck": {
                "TableName": TABLE,
                "Key": {"pk": {"S": f"LEAD#{n + 1}"}, "sk": {"S": "PROFILE"}},
                "ConditionExpression": "attribute_exists(pk)",
            }
        },
    ]


def test_a_transaction_copies_the_items_it_names_not_the_table(dynamodb):
    _seed(SEEDED)
    transactions = 5
    with _counting_item_copies() as copies:
        for n in range(transactions):
            dynamodb.transact_write_items(TransactItems=_transaction(n))
    # moto as shipped copies all 3,000 items (and their stream records) per transaction; moto's
    # update_item copies the item it updates once more.
    assert copies[0] <= transactions * (len(_transaction(0)) + 1)
    assert dynamodb.get_item(TableName=TABLE, Key=_item("LEAD#4"))["Item"]["score"] == {"N": "4"}


def _scan() -> dict[tuple[str, str], dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=TABLE, ConsistentRead=True)["Items"]
    return {(i["pk"]["S"], i["sk"]["S"]): i for i in items}


def test_a_failed_transaction_changes_nothing_and_keeps_what_others_wrote_meanwhile(dynamodb, monkeypatch):
    """The second operation's condition fails after the first (a new item) was applied; while the
    transaction runs, another thread writes two items it does not name, straight into moto's backend
    (which is unguarded). moto as shipped put its whole-table copy back, losing those writes (the
    twin's fresh-clone browser run lost a subscriber's enrolment so)."""
    from moto.dynamodb.models import DynamoDBBackend

    _seed(20)
    before = _scan()
    stream = StreamReader(dynamodb, boto3.client("dynamodbstreams"), TABLE)
    stream.read()
    backend = _backend()
    get_item = DynamoDBBackend.get_item
    interleaved = threading.Event()

    def other_request() -> None:
        backend.put_item(TABLE, _item("LEAD#other", name="written meanwhile"))
        backend.update_item(
            TABLE,
            {"pk": {"S": "LEAD#7"}, "sk": {"S": "PROFILE"}},
            update_expression="SET city = :c",
            expression_attribute_names={},
            expression_attribute_values={":c": {"S": "Lyon"}},
        )

    def get_item_then_interleave(self: Any, table_name: str, keys: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if keys.get("pk") == {"S": "LEAD#3"} and not interleaved.is_set():
            interleaved.set()
            writer = threading.Thread(target=other_request)
            writer.start()
            writer.join()
        return get_item(self, table_name, keys, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "get_item", get_item_then_interleave)
    failing = [
        {"Put": {"TableName": TABLE, "Item": _item("LEAD#new", name="never")}},
        {
            "Update": {
                "TableName": TABLE,
                "Key": {"pk": {"S": "LEAD#3"}, "sk": {"S": "PROFILE"}},
                "UpdateExpression": "SET score = :s",
                "ConditionExpression": "attribute_not_exists(pk)",
                "ExpressionAttributeValues": {":s": {"N": "99"}},
            }
        },
    ]
    with pytest.raises(ClientError) as refused:
        dynamodb.transact_write_items(TransactItems=failing)
    assert refused.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert interleaved.is_set()

    after = _scan()
    assert ("LEAD#new", "PROFILE") not in after
    assert after[("LEAD#3", "PROFILE")] == before[("LEAD#3", "PROFILE")]
    assert after[("LEAD#other", "PROFILE")]["name"] == {"S": "written meanwhile"}
    assert after[("LEAD#7", "PROFILE")]["city"] == {"S": "Lyon"}
    assert set(after) == set(before) | {("LEAD#other", "PROFILE")}
    # The stream holds the other request's two records and nothing of the transaction's.
    records = stream.read()
    assert [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records] == [
        ("INSERT", "LEAD#other"),
        ("MODIFY", "LEAD#7"),
    ]
    numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert numbers == sorted(set(numbers))
    # And the next write continues the sequence where the stream stands.
    dynamodb.put_item(TableName=TABLE, Item=_item("LEAD#next"))
    assert [int(r["dynamodb"]["SequenceNumber"]) for r in stream.read()] == [numbers[-1] + 1]


def test_read_stream_records_are_trimmed_unread_ones_kept(dynamodb, monkeypatch):
    monkeypatch.setattr(moto_patches, "READ_RECORDS_KEPT", 10)
    shard = _backend().get_table(TABLE).stream_shard
    reader = StreamReader(dynamodb, boto3.client("dynamodbstreams"), TABLE)
    _seed(50)
    assert len(shard.items) == 50  # nobody has read them: all kept
    assert len(reader.read()) == 50
    assert len(shard.items) == 10  # read: the last 10 kept (a reader may go back that far)
    _seed(5)
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in reader.read()] == [f"LEAD#{i}" for i in range(5)]
    late = StreamReader(dynamodb, boto3.client("dynamodbstreams"), TABLE)
    assert len(late.read()) == 15  # from the trim horizon on
    streams = boto3.client("dynamodbstreams")
    shard_id = streams.describe_stream(StreamArn=reader.stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    behind = streams.get_shard_iterator(
        StreamArn=reader.stream_arn,
        ShardId=shard_id,
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        SequenceNumber=str(shard.starting_sequence_number - 1),
    )["ShardIterator"]
    with pytest.raises(ClientError) as trimmed:
        streams.get_records(ShardIterator=behind)
    assert trimmed.value.response["Error"]["Code"] == "TrimmedDataAccessException"


def test_shard_iterators_expire_after_15_minutes(dynamodb, monkeypatch):
    now = [1_000.0]
    monkeypatch.setattr(moto_patches, "_monotonic", lambda: now[0])
    streams = boto3.client("dynamodbstreams")
    reader = StreamReader(dynamodb, streams, TABLE)
    shard_id = streams.describe_stream(StreamArn=reader.stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]

    def iterator() -> str:
        arn = streams.get_shard_iterator(StreamArn=reader.stream_arn, ShardId=shard_id, ShardIteratorType="LATEST")
        return str(arn["ShardIterator"])

    first = iterator()
    for _ in range(200):  # a pump reading every half second issues a few per read
        streams.get_records(ShardIterator=iterator())
        now[0] += 10
    with pytest.raises(ClientError) as expired:
        streams.get_records(ShardIterator=first)
    assert expired.value.response["Error"]["Code"] == "ExpiredIteratorException"
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    kept = dynamodbstreams_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].shard_iterators
    assert len(kept) <= 2 * (moto_patches.ITERATOR_LIFETIME_SECONDS / 10 + 1)  # 400 issued


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_twins_moto_server_copies_what_a_transaction_names(monkeypatch):
    """The twin's own moto server (twin.run.MotoServer, in this process as in the twin's)."""
    from twin.run import MotoServer

    server = MotoServer(_free_port())
    server.start()
    try:
        client = boto3.client("dynamodb", endpoint_url=server.url)
        _create_table(client)
        for first in range(0, 300, 25):
            requests = [{"PutRequest": {"Item": _item(f"LEAD#{i}")}} for i in range(first, first + 25)]
            client.batch_write_item(RequestItems={TABLE: requests})
        with _counting_item_copies() as copies:
            for n in range(3):
                client.transact_write_items(TransactItems=_transaction(n))
        assert copies[0] <= 3 * (len(_transaction(0)) + 1)  # moto as shipped: 300 per transaction
    finally:
        server.stop()


def _queries(client: Any) -> list[list[dict[str, Any]]]:
    """Each query's every page, on the table and on its index, forwards and backwards."""
    asked = [
        {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "LEAD#3"}}},
        {
            "KeyConditionExpression": "pk = :p AND begins_with(sk, :e)",
            "ExpressionAttributeValues": {":p": {"S": "LEAD#3"}, ":e": {"S": "EVENT#"}},
            "ScanIndexForward": False,
        },
        {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "LEAD#none"}}},
        {
            "IndexName": "due",
            "KeyConditionExpression": "shard = :s AND due_at <= :t",
            "ExpressionAttributeValues": {":s": {"S": "1"}, ":t": {"S": "2026-12-05"}},
        },
        {
            "IndexName": "due",
            "KeyConditionExpression": "shard = :s",
            "ExpressionAttributeValues": {":s": {"S": "0"}},
            "ScanIndexForward": False,
        },
    ]
    answers = []
    for query in asked:
        pages, start = [], None
        while True:
            page = client.query(
                TableName="indexed", Limit=3, **query, **({"ExclusiveStartKey": start} if start else {})
            )
            pages.append({"Items": page["Items"], "LastEvaluatedKey": page.get("LastEvaluatedKey")})
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        answers.append(pages)
    scan = client.scan(TableName="indexed")
    answers.append([{"Items": scan["Items"], "LastEvaluatedKey": scan.get("LastEvaluatedKey")}])
    return answers


def test_queries_answer_as_moto_as_shipped(dynamodb):
    """A Query reads only its partition, or skips the first sort on an index: same pages, same order."""
    dynamodb.create_table(
        TableName="indexed",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "shard", "due_at")
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "due",
                "KeySchema": [
                    {"AttributeName": "shard", "KeyType": "HASH"},
                    {"AttributeName": "due_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for lead in range(8):
        dynamodb.put_item(
            TableName="indexed", Item=_item(f"LEAD#{lead}", shard=str(lead % 2), due_at=f"2026-12-0{lead % 4 + 1}")
        )
        for event in range(5):
            dynamodb.put_item(TableName="indexed", Item=_item(f"LEAD#{lead}", f"EVENT#{event}"))
    patched = _queries(dynamodb)
    with moto_patches.shipped():
        shipped = _queries(dynamodb)
    assert patched == shipped
    assert [len(pages) for pages in patched] == [2, 2, 1, 2, 2, 1]  # the pagination was exercised


def test_unread_stream_records_are_kept_small(dynamodb):
    """Records nobody has read yet stay (the twin's pump waits on SES for every new lead meanwhile),
    but small: moto keeps each as Python dicts (about 8 KB with both images), and keeps every record,
    item and shard iterator it ever made in a list on its class besides (for its dashboard)."""
    import tracemalloc

    profile = {f"field{i}": f"value number {i} of a lead's profile" for i in range(30)}
    dynamodb.put_item(TableName=TABLE, Item=_item("LEAD#1", **profile))
    shard = _backend().get_table(TABLE).stream_shard
    updates = 200
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(updates):
            dynamodb.put_item(TableName=TABLE, Item=_item("LEAD#1", **profile, visits=str(n)))
        kept = (tracemalloc.get_traced_memory()[0] - before) / updates
    finally:
        tracemalloc.stop()
    assert len(shard.items) == updates + 1
    assert kept < 4_000, f"{kept:.0f} bytes kept per stream record"  # moto as shipped: 25 KB
    last = StreamReader(dynamodb, boto3.client("dynamodbstreams"), TABLE).read()[-1]
    assert last["eventName"] == "MODIFY"
    assert last["dynamodb"]["NewImage"]["visits"] == {"S": str(updates - 1)}
    assert last["dynamodb"]["OldImage"]["visits"] == {"S": str(updates - 2)}


EVERY_KIND = {
    "pk": {"S": "LEAD#kinds"},
    "sk": {"S": "PROFILE"},
    "score": {"N": "42"},
    "confirmed": {"BOOL": True},
    "phone": {"NULL": True},
    "topics": {"SS": ["events", "newsletter"]},
    "steps": {"NS": ["1", "2"]},
    "fields": {"M": {"company": {"S": "Acme"}, "seats": {"N": "5"}, "tags": {"L": [{"S": "a"}, {"BOOL": False}]}}},
    "touches": {"L": [{"M": {"source": {"S": "ads"}}}, {"L": [{"N": "1"}]}]},
    "blob": {"B": b"\x00\x01binary"},
    "blobs": {"BS": [b"one", b"two"]},
    "mixed": {"M": {"plain": {"S": "x"}, "raw": {"B": b"\xff"}}},
}


def _answers(client: Any) -> list[Any]:
    key = {"pk": EVERY_KIND["pk"], "sk": EVERY_KIND["sk"]}
    stream_arn = client.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    streams = boto3.client("dynamodbstreams")
    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    return [
        client.get_item(TableName=TABLE, Key=key)["Item"],
        client.query(
            TableName=TABLE, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": EVERY_KIND["pk"]}
        )["Items"],
        client.scan(TableName=TABLE)["Items"],
        [record["dynamodb"] for record in records],
    ]


def test_attribute_values_answer_as_moto_as_shipped(dynamodb):
    """Patch 6 writes plain attribute values as they are and leaves binary ones to the model: every
    kind of value reads back the same through boto3, from items, queries, scans and streams."""
    dynamodb.put_item(TableName=TABLE, Item=EVERY_KIND)
    patched = _answers(dynamodb)
    with moto_patches.shipped():
        shipped = _answers(dynamodb)
    assert patched == shipped
    assert patched[0] == EVERY_KIND  # and both are what was written
    assert patched[3][0]["NewImage"] == EVERY_KIND


def test_only_plain_attribute_values_skip_the_model():
    on_the_wire = moto_patches._as_on_the_wire
    assert all(on_the_wire(value) for name, value in EVERY_KIND.items() if name not in {"blob", "blobs", "mixed"})
    assert not any(on_the_wire(EVERY_KIND[name]) for name in ("blob", "blobs", "mixed"))
    assert not on_the_wire({"S": "x", "N": "1"})  # not one member
    assert not on_the_wire({"N": 1})  # a number the model would have to write as a string


UPDATES = [
    ("SET #a = :s, #b = if_not_exists(#b, :n) + :n REMOVE #c ADD #d :ss, #e :n", {}),
    ("SET #a.#b = :s, #c = list_append(if_not_exists(#c, :l), :l) DELETE #d :ss", {"#a": "m"}),
    ("SET #a = :m, #b = :n - :n ADD #e :n", {}),
]


def test_update_expressions_write_what_moto_as_shipped_writes(dynamodb):
    """Patch 7 copies the validator's syntax tree node by node and patch 8 looks up each node
    type's processor once: every kind of clause (SET with functions and paths, REMOVE, ADD,
    DELETE) leaves the same item as moto as shipped does."""
    values = {
        ":s": {"S": "x"},
        ":n": {"N": "2"},
        ":ss": {"SS": ["a", "b"]},
        ":l": {"L": [{"S": "y"}]},
        ":m": {"M": {"k": {"S": "v"}}},
    }
    results = []
    for copying in (contextlib.nullcontext, moto_patches.shipped):
        written = []
        for n, (expression, fixed) in enumerate(UPDATES):
            key = {"pk": {"S": f"U#{n}"}, "sk": {"S": copying.__name__}}
            start = {**key, "m": {"M": {}}, "c": {"L": []}, "d": {"SS": ["a", "z"]}}
            dynamodb.put_item(TableName=TABLE, Item=start)
            names = {p: p[1:] for p in ("#a", "#b", "#c", "#d", "#e") if p in expression} | fixed
            used = {k: v for k, v in values.items() if k in expression}
            with copying():
                dynamodb.update_item(
                    TableName=TABLE,
                    Key=key,
                    UpdateExpression=expression,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=used,
                )
            item = dynamodb.get_item(TableName=TABLE, Key=key)["Item"]
            written.append({k: v for k, v in item.items() if k not in ("pk", "sk")})
        results.append(written)
    patched, shipped = results
    assert patched == shipped
    assert patched[0]["b"] == {"N": "4"} and "c" not in patched[0] and patched[1]["m"] == {"M": {"b": {"S": "x"}}}


@pytest.mark.parametrize(
    ("expression", "values"),
    [
        ("ADD #c :n", {":n": {"N": "1"}}),  # a number added to a list
        ("SET #a = #nothing + :n", {":n": {"N": "1"}}),  # an attribute the item lacks
        ("SET #a = :s, #a = :s", {":s": {"S": "x"}}),  # one path twice
        ("SET #pk = :s", {":s": {"S": "x"}}),  # a key attribute
    ],
)
def test_update_expressions_moto_refuses_are_refused_the_same(dynamodb, expression, values):
    """Patches 7 and 8 change how the validator copies and walks the tree, not what it checks."""
    key = {"pk": {"S": "REFUSED"}, "sk": {"S": "1"}}
    dynamodb.put_item(TableName=TABLE, Item={**key, "c": {"L": []}})
    names = {p: p[1:] for p in ("#a", "#c", "#nothing", "#pk") if p in expression}
    answers = []
    for copying in (contextlib.nullcontext, moto_patches.shipped):
        with copying(), pytest.raises(ClientError) as refused:
            dynamodb.update_item(
                TableName=TABLE,
                Key=key,
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        answers.append(refused.value.response["Error"])
    assert answers[0] == answers[1]
    assert answers[0]["Code"] == "ValidationException"


def test_only_plain_syntax_trees_are_copied_node_by_node():
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    tree = UpdateExpressionParser.make("SET #a = :s REMOVE #b")
    twin = moto_patches._tree_copy(tree)
    assert twin is not tree and type(twin) is type(tree) and twin.parent is None

    def walk(node: Any) -> Iterator[Any]:
        yield node
        for child in node.children or []:
            if hasattr(child, "children"):
                yield from walk(child)

    pairs = list(zip(walk(tree), walk(twin), strict=True))
    assert all(a is not b and type(a) is type(b) for a, b in pairs)
    assert all(b.parent is None or any(b.parent is c for _, c in pairs) for _, b in pairs)  # links to copies
    subtree = tree.children[0]
    assert subtree.parent is tree
    copied = moto_patches._tree_copy(subtree)  # not a root: copy.deepcopy, parents and all
    assert copied.parent is not None and copied.parent is not tree
