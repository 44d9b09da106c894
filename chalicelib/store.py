"""DynamoDB access patterns: the only module that knows keys, index names and item layout.

One table per campaign stage (see docs/data-model.md):

    item              pk                 sk                                  indexes
    lead profile      LEAD#<lead_id>     PROFILE                             by_stage, by_created
    event             LEAD#<lead_id>     EVENT#<iso time>#<event_id>         -
    enrolment         LEAD#<lead_id>     ENROL#<sequence_id>                 due (sparse, sharded)
    counters          STATS              BOTS                                -
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.entities import ConsentRecord, Enrolment, Event, Lead, Touch, to_dynamo_value
from chalicelib.errors import StoreError, WriteConflict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DUE_INDEX = "due"
STAGE_INDEX = "by_stage"
CREATED_INDEX = "by_created"
# The due index is written by every enrolment and read every minute; spreading it over shards
# keeps one hot partition from capping the dispatcher. Shard = stable hash of the lead id.
DUE_SHARDS = 8
# Every lead profile carries this constant partition key for the by_created index.
LEAD_LIST = "LEADS"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _lead_pk(lead_id: str) -> str:
    return f"LEAD#{lead_id}"


def due_shard(lead_id: str) -> str:
    shard = int(hashlib.sha256(lead_id.encode()).hexdigest(), 16) % DUE_SHARDS
    return f"DUE#{shard}"


def _serialize(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(to_dynamo_value(v)) for k, v in attributes.items()}


def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


@dataclass
class CaptureWrite:
    """Everything one accepted submission changes, written as one transaction.

    ``known_stage`` is the stage read before the write (None for a new lead): the write is
    conditional on it, so a concurrent change makes it fail cleanly rather than clobber.
    """

    lead_id: str
    now: str
    email: str
    email_identity: str
    touch: Touch
    event: Event
    known_stage: Optional[str]
    stage: Optional[str] = None  # set for a new lead, or to promote subscriber -> lead
    profile: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    consent: Optional[ConsentRecord] = None
    magnet: Optional[str] = None
    enrolment: Optional[Enrolment] = None


class Store:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self.table_name = table_name

    # -- leads --------------------------------------------------------------------------------

    def get_lead(self, lead_id: str) -> Optional[Lead]:
        item = self._get({"pk": _lead_pk(lead_id), "sk": "PROFILE"})
        return Lead.from_item(item) if item else None

    def save_capture(self, write: CaptureWrite) -> None:
        """Upsert the lead, record the submission event and enrol, in one write request."""
        lead_key = {"pk": _lead_pk(write.lead_id), "sk": "PROFILE"}
        sets = {
            "lead_id": write.lead_id,
            "email": write.email,
            "email_identity": write.email_identity,
            "updated_at": write.now,
            "last_touch": write.touch.to_item(),
            **write.profile,
            **{f"cf_{name}": value for name, value in write.custom.items()},
        }
        if_absent = {
            "first_touch": write.touch.to_item(),
            "created_at": write.now,
            "score": 0,
            "lead_list": LEAD_LIST,
        }
        adds: dict[str, Any] = {"submissions": 1}
        if write.stage is not None:
            sets["stage"] = write.stage
        if write.consent is not None:
            sets["consent"] = write.consent.to_item()
        if write.magnet is not None:
            adds["magnets"] = {write.magnet}
        if write.enrolment is not None:
            adds["sequences"] = {write.enrolment.sequence_id}

        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        set_parts = []
        for i, (attr, value) in enumerate(sets.items()):
            names[f"#s{i}"], values[f":s{i}"] = attr, value
            set_parts.append(f"#s{i} = :s{i}")
        for i, (attr, value) in enumerate(if_absent.items()):
            names[f"#n{i}"], values[f":n{i}"] = attr, value
            set_parts.append(f"#n{i} = if_not_exists(#n{i}, :n{i})")
        add_parts = []
        for i, (attr, value) in enumerate(adds.items()):
            names[f"#a{i}"], values[f":a{i}"] = attr, value
            add_parts.append(f"#a{i} :a{i}")
        if write.known_stage is None:
            condition = "attribute_not_exists(pk)"
        else:
            names["#stage"], values[":known_stage"] = "stage", write.known_stage
            condition = "attribute_exists(pk) AND #stage = :known_stage"

        operations: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": _serialize(lead_key),
                    "UpdateExpression": f"SET {', '.join(set_parts)} ADD {', '.join(add_parts)}",
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": _serialize(values),
                }
            },
            {"Put": self._new_item(self._event_item(write.event))},
        ]
        if write.enrolment is not None:
            operations.append({"Put": self._new_item(self._enrolment_item(write.enrolment))})
        self._transact(operations)

    # -- events and enrolments ----------------------------------------------------------------

    def _event_item(self, event: Event) -> dict[str, Any]:
        return {"pk": _lead_pk(event.lead_id), "sk": f"EVENT#{event.at}#{event.event_id}", **event.to_item()}

    def _enrolment_item(self, enrolment: Enrolment) -> dict[str, Any]:
        item = {"pk": _lead_pk(enrolment.lead_id), "sk": f"ENROL#{enrolment.sequence_id}", **enrolment.to_item()}
        if enrolment.due_at is not None:
            item["due_shard"] = due_shard(enrolment.lead_id)
        return item

    def list_events(self, lead_id: str) -> list[Event]:
        return [Event.from_item(i) for i in self._query_lead(lead_id, "EVENT#")]

    def list_enrolments(self, lead_id: str) -> list[Enrolment]:
        return [Enrolment.from_item(i) for i in self._query_lead(lead_id, "ENROL#")]

    # -- counters -----------------------------------------------------------------------------

    def count_bot(self, form_id: str, reason: str) -> None:
        """Bots are counted, never stored: one counter update, no lead, no event."""
        self._call(
            "update_item",
            TableName=self.table_name,
            Key=_serialize({"pk": "STATS", "sk": "BOTS"}),
            UpdateExpression="ADD #total :one, #by_form :one",
            ExpressionAttributeNames={"#total": "blocked", "#by_form": f"{form_id}:{reason}"},
            ExpressionAttributeValues=_serialize({":one": 1}),
        )

    def bot_counts(self) -> dict[str, int]:
        item = self._get({"pk": "STATS", "sk": "BOTS"}) or {}
        return {k: int(v) for k, v in item.items() if k not in ("pk", "sk")}

    # -- plumbing -----------------------------------------------------------------------------

    def _new_item(self, item: dict[str, Any]) -> dict[str, Any]:
        return {
            "TableName": self.table_name,
            "Item": _serialize(item),
            "ConditionExpression": "attribute_not_exists(pk)",
        }

    def _get(self, key: dict[str, str]) -> Optional[dict[str, Any]]:
        response = self._call("get_item", TableName=self.table_name, Key=_serialize(key), ConsistentRead=True)
        item = response.get("Item")
        return _deserialize(item) if item else None

    def _query_lead(self, lead_id: str, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": _serialize({":pk": _lead_pk(lead_id), ":prefix": prefix}),
        }
        while True:
            page = self._call("query", **kwargs)
            items.extend(_deserialize(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _transact(self, operations: list[dict[str, Any]]) -> None:
        try:
            self._client.transact_write_items(TransactItems=operations)  # type: ignore[arg-type]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                reasons = {r.get("Code") for r in e.response.get("CancellationReasons", [])}
                if reasons & {"ConditionalCheckFailed", "TransactionConflict"}:
                    raise WriteConflict("a concurrent write changed the lead; retry") from e
            raise StoreError(f"transaction failed: {e}") from e
        except BotoCoreError as e:
            raise StoreError(f"transaction failed: {e}") from e

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as e:
            raise StoreError(f"{operation} failed: {e}") from e
