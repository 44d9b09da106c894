"""DynamoDB access patterns: the only module that knows keys, index names and item layout.

One table per campaign stage (see docs/data-model.md):

    item              pk                 sk                                  indexes
    lead profile      LEAD#<lead_id>     PROFILE                             by_stage, by_created
    event             LEAD#<lead_id>     EVENT#<iso time>#<event_id>         -
    enrolment         LEAD#<lead_id>     ENROL#<sequence_id>                 due (sparse, sharded)
    message           LEAD#<lead_id>     MSG#<sequence>.<step>#<enrolled_at> -
    handoff           LEAD#<lead_id>     HANDOFF#<iso time>                  due (only while a webhook retry waits)
    report marker     LEAD#<lead_id>     COUNTED#<what>                      -
    suppression       SUPPRESS#<lead_id> SUPPRESS                            -
    rate-limit window LIMIT#<scope>#<key> W#<window start epoch>             - (TTL)
    admin session     ADMIN_SESSION#<id> SESSION                             - (TTL)
    counters          STATS              BOTS, ROUND_ROBIN, FUNNEL#..., STEP#..., EXIT#..., SPEND#...

Report counters are kept by the stream handler: each count is a transaction of a marker put
(conditional on its absence, in the lead's partition) and the counter increments, so a
redelivered record or a lead reaching a stage twice counts once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import quote

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.entities import (
    ConsentRecord,
    Enrolment,
    Event,
    Handoff,
    Lead,
    Message,
    Suppression,
    Touch,
    from_dynamo_value,
    to_dynamo_value,
)
from chalicelib.errors import ConditionFailed, InvalidRequest, StoreError, WriteConflict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)

DUE_INDEX = "due"
STAGE_INDEX = "by_stage"
CREATED_INDEX = "by_created"
# The due index is written by every enrolment and read every minute; spreading it over shards
# keeps one hot partition from capping the dispatcher. Shard = stable hash of the lead id.
DUE_SHARDS = 8
TTL_ATTRIBUTE = "expires_at"
# Every lead profile carries this constant partition key for the by_created index.
LEAD_LIST = "LEADS"
STATS_PK = "STATS"
MARKER_PREFIX = "COUNTED#"
# Rate-limit windows (POST /events, admin login): one small item per key and window, TTL-expired.
LIMIT_PREFIX = "LIMIT#"
# One item per signed-in dashboard browser; logout deletes it, so its cookie opens nothing.
ADMIN_SESSION_PREFIX = "ADMIN_SESSION#"
ADMIN_SESSION_SK = "SESSION"
# Attributes that only serve keys and indexes: not part of what a lead export shows.
_KEY_ATTRIBUTES = frozenset({"pk", "sk", "lead_list", "due_shard"})
# A counter transaction that collides with another on the same hot STATS item is retried a few
# times; after that the stream batch fails and Lambda redelivers it (counting is idempotent).
_COUNT_ATTEMPTS = 4

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _lead_pk(lead_id: str) -> str:
    return f"LEAD#{lead_id}"


def due_shard(lead_id: str) -> str:
    shard = int(hashlib.sha256(lead_id.encode()).hexdigest(), 16) % DUE_SHARDS
    return f"DUE#{shard}"


def parse_stream_image(image: Mapping[str, Any]) -> Optional[Enrolment | Event | Handoff | Message]:
    """Turn a stream record's image (DynamoDB JSON) into the entity it holds, if we react to it."""
    if not image or "sk" not in image:
        return None
    item = _deserialize(image)
    sort_key = str(item["sk"])
    if sort_key.startswith("ENROL#"):
        return Enrolment.from_item(item)
    if sort_key.startswith("EVENT#"):
        return Event.from_item(item)
    if sort_key.startswith("HANDOFF#"):
        return Handoff.from_item(item)
    if sort_key.startswith("MSG#"):
        return Message.from_item(item)
    return None


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
    # False: the address as typed only applies to a new lead (a stranger cannot respell it).
    email_is_new: bool = True
    stage: Optional[str] = None  # set for a new lead, or to promote subscriber -> lead
    profile: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    consent: Optional[ConsentRecord] = None
    magnet: Optional[str] = None
    enrolments: list[Enrolment] = field(default_factory=list)
    # Epoch seconds after which an unconfirmed (double opt-in) new lead disappears by TTL.
    expires_at: Optional[int] = None


@dataclass(frozen=True)
class LeadRecord:
    lead: Lead
    events: list[Event]
    enrolments: list[Enrolment]
    messages: list[Message]
    markers: frozenset[str] = frozenset()  # what the reports have counted of this lead (count_once)


@dataclass(frozen=True)
class Counter:
    """One report counter item: a kind ("funnel", "step", "exit", "spend") and the parts naming it."""

    kind: str
    parts: tuple[str, ...]

    @property
    def sort_key(self) -> str:
        # Parts are free text (utm values, up to 200 characters of any script): quoted, so "#"
        # cannot split one, and hashed when long, so the key stays far below DynamoDB's 1 KB.
        # The parts themselves are stored on the item (``parts``) and read back from there.
        return "#".join((self.kind.upper(), *(_key_part(part) for part in self.parts)))


def _window_start(window_seconds: int, now_epoch: float) -> int:
    return int(now_epoch // window_seconds) * window_seconds


def _allowance_key(scope: str, key: str, window: int) -> dict[str, str]:
    return {"pk": f"{LIMIT_PREFIX}{scope}#{key}", "sk": f"W#{window}"}


def _key_part(part: str) -> str:
    quoted = quote(part, safe="")
    return quoted if len(quoted) <= 64 else "~" + hashlib.sha256(part.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class LeadExport:
    """Everything stored under one lead (GDPR export), as plain attributes without key plumbing."""

    profile: dict[str, Any]
    events: list[dict[str, Any]]
    enrolments: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    handoffs: list[dict[str, Any]]
    report_markers: list[str]
    suppression: Optional[dict[str, Any]]


@dataclass(frozen=True)
class LeadQuery:
    """Filters of the admin lead list; None means any."""

    stage: Optional[str] = None
    min_score: Optional[float] = None
    max_score: Optional[float] = None
    form_id: Optional[str] = None
    utm_source: Optional[str] = None
    created_from: Optional[str] = None  # ISO timestamps, inclusive
    created_to: Optional[str] = None


class Store:
    def __init__(self, client: Callable[[], DynamoDBClient], table_name: str) -> None:
        """``client`` makes (or returns the cached) client on first request: creating one loads
        DynamoDB's service model, which a cold start that never reaches the table (the admin
        authorizer) need not pay for."""
        self._make_client = client
        self.table_name = table_name

    @property
    def _client(self) -> DynamoDBClient:
        return self._make_client()

    # -- leads --------------------------------------------------------------------------------

    def get_lead(self, lead_id: str) -> Optional[Lead]:
        item = self._get({"pk": _lead_pk(lead_id), "sk": "PROFILE"})
        return Lead.from_item(item) if item else None

    def save_capture(self, write: CaptureWrite) -> None:
        """Upsert the lead, record the submission event and enrol, in one write request."""
        lead_key = {"pk": _lead_pk(write.lead_id), "sk": "PROFILE"}
        sets = {
            "lead_id": write.lead_id,
            "email_identity": write.email_identity,
            "updated_at": write.now,
            "last_touch": write.touch.to_item(),
            **write.profile,
            **{f"cf_{name}": value for name, value in write.custom.items()},
        }
        if_absent = {
            "email": write.email,
            "first_touch": write.touch.to_item(),
            "created_at": write.now,
            "score": 0,
            "lead_list": LEAD_LIST,
        }
        if write.email_is_new:
            sets["email"] = if_absent.pop("email")
        adds: dict[str, Any] = {"submissions": 1}
        if write.stage is not None:
            sets["stage"] = write.stage
        if write.consent is not None:
            sets["consent"] = write.consent.to_item()
        if write.magnet is not None:
            adds["magnets"] = {write.magnet}
        if write.enrolments:
            adds["sequences"] = {e.sequence_id for e in write.enrolments}
        if write.expires_at is not None:
            if_absent[TTL_ATTRIBUTE] = write.expires_at

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
            {"Put": self._new_item(self._event_item(write.event, write.expires_at))},
        ]
        for enrolment in write.enrolments:
            operations.append({"Put": self._new_item(self._enrolment_item(enrolment, write.expires_at))})
        self._transact(operations)

    # -- events and enrolments ----------------------------------------------------------------

    def _event_item(self, event: Event, expires_at: Optional[int] = None) -> dict[str, Any]:
        item = {"pk": _lead_pk(event.lead_id), "sk": f"EVENT#{event.at}#{event.event_id}", **event.to_item()}
        if expires_at is not None:
            item[TTL_ATTRIBUTE] = expires_at
        return item

    def _enrolment_item(self, enrolment: Enrolment, expires_at: Optional[int] = None) -> dict[str, Any]:
        item = {"pk": _lead_pk(enrolment.lead_id), "sk": f"ENROL#{enrolment.sequence_id}", **enrolment.to_item()}
        if enrolment.due_at is not None:
            item["due_shard"] = due_shard(enrolment.lead_id)
        if expires_at is not None:
            item[TTL_ATTRIBUTE] = expires_at
        return item

    def enrol(self, enrolment: Enrolment) -> bool:
        """Enrol a lead that exists, unless already in the sequence. One transaction."""
        try:
            self._transact(
                [
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": _serialize({"pk": _lead_pk(enrolment.lead_id), "sk": "PROFILE"}),
                            "UpdateExpression": "ADD #sequences :seq",
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeNames": {"#sequences": "sequences"},
                            "ExpressionAttributeValues": _serialize({":seq": {enrolment.sequence_id}}),
                        }
                    },
                    {"Put": self._new_item(self._enrolment_item(enrolment))},
                ]
            )
        except ConditionFailed:
            return False
        return True

    def confirm_lead(self, lead_id: str, at: str, due_by_sequence: dict[str, str], event: Event) -> None:
        """Double opt-in confirmed: consent granted, waiting enrolments start, TTL removed.

        All in one transaction, conditional on the consent still being pending.
        """
        items = self._query_lead(lead_id)
        operations: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": _serialize({"pk": _lead_pk(lead_id), "sk": "PROFILE"}),
                    "UpdateExpression": "SET consent.#status = :granted, consent.confirmed_at = :at REMOVE #ttl",
                    "ConditionExpression": "consent.#status = :pending",
                    "ExpressionAttributeNames": {"#status": "status", "#ttl": TTL_ATTRIBUTE},
                    "ExpressionAttributeValues": _serialize(
                        {":granted": "granted", ":pending": "pending_confirmation", ":at": at}
                    ),
                }
            },
            {"Put": self._new_item(self._event_item(event))},
        ]
        for item in items:
            key = _serialize({"pk": item["pk"], "sk": item["sk"]})
            sequence_id = item.get("sequence_id")
            if item["sk"].startswith("ENROL#") and item.get("status") == "awaiting_confirmation":
                operations.append(
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": key,
                            "UpdateExpression": "SET #status = :active, due_at = :due, due_shard = :shard REMOVE #ttl",
                            "ConditionExpression": "#status = :waiting",
                            "ExpressionAttributeNames": {"#status": "status", "#ttl": TTL_ATTRIBUTE},
                            "ExpressionAttributeValues": _serialize(
                                {
                                    ":active": "active",
                                    ":waiting": "awaiting_confirmation",
                                    ":due": due_by_sequence.get(str(sequence_id), at),
                                    ":shard": due_shard(lead_id),
                                }
                            ),
                        }
                    }
                )
            elif item["sk"] != "PROFILE" and TTL_ATTRIBUTE in item:
                operations.append(
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": key,
                            "UpdateExpression": "REMOVE #ttl",
                            "ExpressionAttributeNames": {"#ttl": TTL_ATTRIBUTE},
                        }
                    }
                )
        self._transact(operations[:100])  # a pending lead has a handful of items

    def find_leads(
        self, query: LeadQuery, limit: int, start: Optional[dict[str, Any]] = None
    ) -> tuple[list[Lead], Optional[dict[str, Any]]]:
        """Up to ``limit`` leads matching ``query`` and the key to go on from (None at the end).

        Never a Scan: with a stage, the by_stage index (highest score first, the score range in
        the key condition); without, the by_created index (newest first, the created range in the
        key condition). The other filters are filter expressions on that index. Each Query asks
        for no more items than are still wanted, so the returned key is exactly where to resume.
        """
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        filters: list[str] = []

        def between(attribute: str, low: Any, high: Any) -> Optional[str]:
            if low is None and high is None:
                return None
            names[f"#{attribute}"] = attribute
            values.update({f":{attribute}_low": low} if low is not None else {})
            values.update({f":{attribute}_high": high} if high is not None else {})
            if low is None:
                return f"#{attribute} <= :{attribute}_high"
            if high is None:
                return f"#{attribute} >= :{attribute}_low"
            return f"#{attribute} BETWEEN :{attribute}_low AND :{attribute}_high"

        if query.stage is not None:
            index, names["#stage"], values[":stage"] = STAGE_INDEX, "stage", query.stage
            condition = "#stage = :stage"
            score_range = between("score", query.min_score, query.max_score)
            condition += f" AND {score_range}" if score_range else ""
            created_range = between("created_at", query.created_from, query.created_to)
            filters += [created_range] if created_range else []
        else:
            index, values[":leads"] = CREATED_INDEX, LEAD_LIST
            condition = "lead_list = :leads"
            created_range = between("created_at", query.created_from, query.created_to)
            condition += f" AND {created_range}" if created_range else ""
            score_range = between("score", query.min_score, query.max_score)
            filters += [score_range] if score_range else []
        for attribute, wanted in (("form_id", query.form_id), ("utm_source", query.utm_source)):
            if wanted is not None:
                names.update({"#first_touch": "first_touch", f"#{attribute}": attribute})
                values[f":{attribute}"] = wanted
                filters.append(f"#first_touch.#{attribute} = :{attribute}")

        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": _serialize(values),
            "ScanIndexForward": False,
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        found: list[Lead] = []
        key = start
        while len(found) < limit:
            if key is not None:
                kwargs["ExclusiveStartKey"] = key
            response = self._call("query", Limit=limit - len(found), **kwargs)
            found += [Lead.from_item(_deserialize(i)) for i in response.get("Items", [])]
            key = response.get("LastEvaluatedKey")
            if key is None:
                break
        return found, key

    def resume_key(self, query: LeadQuery, lead_id: str) -> dict[str, Any]:
        """Where ``find_leads(query)`` goes on right after this lead: its key in the index used."""
        profile = self._get({"pk": _lead_pk(lead_id), "sk": "PROFILE"}) or {}
        key: dict[str, Any] = {"pk": _lead_pk(lead_id), "sk": "PROFILE"}
        if query.stage is not None:
            key.update({"stage": profile.get("stage"), "score": profile.get("score")})
        else:
            key.update({"lead_list": LEAD_LIST, "created_at": profile.get("created_at")})
        return _serialize(key)

    # -- nurture: due work, claims, commits ---------------------------------------------------

    def due_enrolments(self, now: str, page_size: int = 50) -> Iterator[Enrolment | Handoff]:
        """Enrolments with a step due at or before ``now``, shard by shard, read page by page.

        Reads only the sparse due index: their cost grows with the due work, not with the leads.
        """
        for shard in range(DUE_SHARDS):
            kwargs: dict[str, Any] = {
                "TableName": self.table_name,
                "IndexName": DUE_INDEX,
                "KeyConditionExpression": "due_shard = :shard AND due_at <= :now",
                "ExpressionAttributeValues": _serialize({":shard": f"DUE#{shard}", ":now": now}),
                "Limit": page_size,
            }
            while True:
                page = self._call("query", **kwargs)
                for item in page.get("Items", []):
                    plain = _deserialize(item)
                    try:
                        handoff = str(plain["sk"]).startswith("HANDOFF#")
                        due = Handoff.from_item(plain) if handoff else Enrolment.from_item(plain)
                    except (KeyError, TypeError, ValueError):
                        # A damaged item must not end the walk for everything due after it.
                        logger.error("unreadable due item %s %s skipped", plain.get("pk"), plain.get("sk"))
                        continue
                    yield due
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def claim(self, enrolment: Enrolment, claim_id: str, lease_until: str) -> bool:
        """Take a due step for this dispatcher, or learn that another one has it.

        The claim moves ``due_at`` to the lease's end: if this dispatcher dies before it
        commits, the step falls due again then, and another tick retries it.
        """
        return self._conditional_update(
            enrolment,
            "SET due_at = :lease, claim_id = :claim, attempts = if_not_exists(attempts, :zero) + :one",
            "due_at = :seen AND #status = :active",
            {
                ":lease": lease_until,
                ":claim": claim_id,
                ":zero": 0,
                ":one": 1,
                ":seen": enrolment.due_at,
                ":active": "active",
            },
        )

    def release(self, enrolment: Enrolment, claim_id: str, due_at: str, *, reset_attempts: bool) -> bool:
        """Give a claimed step back, due again at ``due_at`` (window, cap, or backoff)."""
        update = "SET due_at = :due REMOVE claim_id"
        if reset_attempts:
            update = "SET due_at = :due, attempts = :zero REMOVE claim_id"
        values: dict[str, Any] = {":due": due_at, ":claim": claim_id}
        if reset_attempts:
            values[":zero"] = 0
        return self._conditional_update(enrolment, update, "claim_id = :claim", values)

    def advance(self, enrolment: Enrolment, claim_id: str, next_index: int, next_due: Optional[str]) -> bool:
        """Move past skipped steps without sending (or finish the sequence)."""
        if next_due is None:
            return self.finish(enrolment, claim_id, "completed", None, step_index=next_index)
        return self._conditional_update(
            enrolment,
            "SET step_index = :next, due_at = :due, attempts = :zero REMOVE claim_id",
            "claim_id = :claim",
            {":next": next_index, ":due": next_due, ":zero": 0, ":claim": claim_id},
        )

    def finish(
        self,
        enrolment: Enrolment,
        claim_id: str,
        status: str,
        reason: Optional[str],
        *,
        step_index: Optional[int] = None,
    ) -> bool:
        """Take the enrolment out of the due index for good (completed or exited)."""
        values: dict[str, Any] = {":status": status, ":claim": claim_id}
        sets = ["#status = :status"]
        if reason is not None:
            sets.append("exit_reason = :reason")
            values[":reason"] = reason
        if step_index is not None:
            sets.append("step_index = :next")
            values[":next"] = step_index
        return self._conditional_update(
            enrolment,
            f"SET {', '.join(sets)} REMOVE due_at, due_shard, claim_id",
            "claim_id = :claim",
            values,
        )

    def commit_send(
        self,
        enrolment: Enrolment,
        claim_id: str,
        message: Message,
        next_index: int,
        next_due: Optional[str],
        recent_sends: list[str],
    ) -> None:
        """Record a sent email and advance the enrolment, atomically and only under our claim."""
        key = _serialize({"pk": _lead_pk(enrolment.lead_id), "sk": f"ENROL#{enrolment.sequence_id}"})
        if next_due is None:
            update = "SET step_index = :next, #status = :done, attempts = :zero REMOVE due_at, due_shard, claim_id"
            values: dict[str, Any] = {":next": next_index, ":done": "completed", ":zero": 0, ":claim": claim_id}
        else:
            update = "SET step_index = :next, due_at = :due, attempts = :zero REMOVE claim_id"
            values = {":next": next_index, ":due": next_due, ":zero": 0, ":claim": claim_id}
        names = {"#status": "status"} if next_due is None else {}
        enrolment_update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": key,
            "UpdateExpression": update,
            "ConditionExpression": "claim_id = :claim",
            "ExpressionAttributeValues": _serialize(values),
        }
        if names:
            enrolment_update["ExpressionAttributeNames"] = names
        self._transact(
            [
                {"Update": enrolment_update},
                {"Put": self._new_item(self._message_item(message))},
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": _serialize({"pk": _lead_pk(enrolment.lead_id), "sk": "PROFILE"}),
                        "UpdateExpression": "SET recent_sends = :recent, last_email_at = :at ADD emails_sent :one",
                        "ExpressionAttributeValues": _serialize(
                            {":recent": recent_sends, ":at": message.sent_at, ":one": 1}
                        ),
                    }
                },
            ]
        )

    def _message_item(self, message: Message) -> dict[str, Any]:
        sort_key = f"MSG#{message.message_id}#{message.enrolled_at}"
        return {"pk": _lead_pk(message.lead_id), "sk": sort_key, **message.to_item()}

    def load_for_dispatch(self, lead_id: str) -> tuple[Optional[Lead], Optional[Suppression]]:
        """The lead and its suppression record, in one consistent read request."""
        keys = [{"pk": _lead_pk(lead_id), "sk": "PROFILE"}, {"pk": f"SUPPRESS#{lead_id}", "sk": "SUPPRESS"}]
        request: dict[str, Any] = {self.table_name: {"Keys": [_serialize(k) for k in keys], "ConsistentRead": True}}
        found: list[dict[str, Any]] = []
        while request:
            response = self._call("batch_get_item", RequestItems=request)
            found.extend(_deserialize(i) for i in response.get("Responses", {}).get(self.table_name, []))
            request = response.get("UnprocessedKeys") or {}
        lead = next((Lead.from_item(i) for i in found if i["sk"] == "PROFILE"), None)
        suppression = next((Suppression.from_item(i) for i in found if i["sk"] == "SUPPRESS"), None)
        return lead, suppression

    def _conditional_update(self, enrolment: Enrolment, update: str, condition: str, values: dict[str, Any]) -> bool:
        key = {"pk": _lead_pk(enrolment.lead_id), "sk": f"ENROL#{enrolment.sequence_id}"}
        return self._update_if(key, update, condition, values)

    def _update_if(
        self,
        key: dict[str, str],
        update: str,
        condition: str,
        values: dict[str, Any],
        names: Optional[dict[str, str]] = None,
    ) -> bool:
        """A conditional UpdateItem: True when written, False when the condition did not hold."""
        all_names = dict(names or {})
        if "#status" in update or "#status" in condition:
            all_names["#status"] = "status"
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": _serialize(key),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": _serialize(values),
        }
        if all_names:
            kwargs["ExpressionAttributeNames"] = all_names
        return self._write_if("update_item", kwargs)

    def _write_if(self, operation: str, kwargs: dict[str, Any]) -> bool:
        """A conditional single-item write: True when written, False when its condition failed."""
        try:
            getattr(self._client, operation)(**kwargs)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise StoreError(f"{operation} failed: {e}") from e
        except BotoCoreError as e:
            raise StoreError(f"{operation} failed: {e}") from e
        return True

    # -- suppression, unsubscribe, tracking events --------------------------------------------

    def suppress(self, suppression: Suppression) -> bool:
        """Suppress an address for good. Returns False when it already was (the first reason stays)."""
        item = {"pk": f"SUPPRESS#{suppression.lead_id}", "sk": "SUPPRESS", **suppression.to_item()}
        return self._write_if("put_item", self._new_item(item))

    def record_event(
        self,
        event: Event,
        profile_adds: Optional[dict[str, str]] = None,
        profile_sets: Optional[dict[str, str]] = None,
        *,
        note_type: bool = True,
    ) -> bool:
        """Record an event on an existing lead, and note it on the profile, in one write.

        ``note_type=False`` keeps the event off the profile's ``event_types`` (what nurture
        conditions and exits read): for events nobody vouches for. Returns False (and writes
        nothing) when the lead does not exist.
        """
        adds: dict[str, set[str]] = {"event_types": {event.type}} if note_type else {}
        for attr, added in (profile_adds or {}).items():
            adds[attr] = {added}
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        add_parts = []
        for i, (attr, members) in enumerate(adds.items()):
            names[f"#a{i}"], values[f":a{i}"] = attr, members
            add_parts.append(f"#a{i} :a{i}")
        update = f"ADD {', '.join(add_parts)}" if add_parts else ""
        if profile_sets:
            set_parts = []
            for i, (attr, value) in enumerate(profile_sets.items()):
                names[f"#s{i}"], values[f":s{i}"] = attr, value
                set_parts.append(f"#s{i} = if_not_exists(#s{i}, :s{i})")
            update = f"SET {', '.join(set_parts)} {update}"
        lead_key = _serialize({"pk": _lead_pk(event.lead_id), "sk": "PROFILE"})
        profile: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": lead_key,
            "ConditionExpression": "attribute_exists(pk)",
        }
        if update:
            profile = {
                "Update": {
                    **profile,
                    "UpdateExpression": update.strip(),
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": _serialize(values),
                }
            }
        else:
            profile = {"ConditionCheck": profile}
        try:
            self._transact([profile, {"Put": self._new_item(self._event_item(event))}])
        except ConditionFailed:
            return False
        return True

    # -- scoring and handoff --------------------------------------------------------------------

    def lead_record(self, lead_id: str) -> Optional[LeadRecord]:
        """Everything kept in the lead's partition (profile, events, enrolments, messages): one Query."""
        items = self._query_lead(lead_id)
        lead = next((Lead.from_item(i) for i in items if i["sk"] == "PROFILE"), None)
        if lead is None:
            return None
        return LeadRecord(
            lead=lead,
            events=[Event.from_item(i) for i in items if str(i["sk"]).startswith("EVENT#")],
            enrolments=[Enrolment.from_item(i) for i in items if str(i["sk"]).startswith("ENROL#")],
            messages=[Message.from_item(i) for i in items if str(i["sk"]).startswith("MSG#")],
            markers=frozenset(
                str(i["sk"])[len(MARKER_PREFIX) :] for i in items if str(i["sk"]).startswith(MARKER_PREFIX)
            ),
        )

    def exit_enrolments(self, lead_id: str, sequence_ids: set[str], reason: str) -> int:
        """Take the lead out of these sequences now (those still active); returns how many.

        Each exit is conditional on the enrolment still being active, so one that finished or
        exited meanwhile keeps its own ending; a dispatcher holding a claim loses it.
        """
        exited = 0
        for item in self._query_lead(lead_id, "ENROL#"):
            if item.get("sequence_id") not in sequence_ids or item.get("status") != "active":
                continue
            exited += self._update_if(
                {"pk": item["pk"], "sk": item["sk"]},
                "SET #status = :exited, exit_reason = :reason REMOVE due_at, due_shard, claim_id",
                "#status = :active",
                {":exited": "exited", ":reason": reason, ":active": "active"},
            )
        return exited

    def save_score(
        self,
        lead_id: str,
        fields: dict[str, Any],
        events_seen: int,
        *,
        string_sets: Optional[Mapping[str, set[str]]] = None,
        from_stage: Optional[str] = None,
        stage_event: Optional[Event] = None,
        handoff: Optional[Handoff] = None,
    ) -> bool:
        """Write a recomputed score, only if it counts more events than the stored one.

        ``string_sets`` replace whole profile sets (an empty one is removed, as DynamoDB keeps
        no empty sets): what nurture reads of engagement, recomputed with the score. With a
        stage change, the write is also conditional on the stage read, and the stage
        event and the handoff are written in the same transaction: a crossing happens once.
        Returns False when a newer score (or another crossing) got there first.
        """
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":f{i}": v for i, v in enumerate(fields.values())}
        sets = [f"#f{i} = :f{i}" for i in range(len(fields))]
        names["#seen"] = "score_events"
        values[":seen"] = events_seen
        sets.append("#seen = :seen")
        removes = []
        for i, (attribute, members) in enumerate((string_sets or {}).items()):
            names[f"#ss{i}"] = attribute
            if members:
                values[f":ss{i}"] = set(members)
                sets.append(f"#ss{i} = :ss{i}")
            else:
                removes.append(f"#ss{i}")
        condition = "attribute_exists(pk) AND (attribute_not_exists(#seen) OR #seen < :seen)"
        if from_stage is not None:
            names["#stage"] = "stage"
            values[":from_stage"] = from_stage
            condition += " AND #stage = :from_stage"
        update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": _serialize({"pk": _lead_pk(lead_id), "sk": "PROFILE"}),
            "UpdateExpression": "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else ""),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": _serialize(values),
        }
        if stage_event is None and handoff is None:
            return self._write_if("update_item", update)
        operations: list[dict[str, Any]] = [{"Update": update}]
        if stage_event is not None:
            operations.append({"Put": self._new_item(self._event_item(stage_event))})
        if handoff is not None:
            operations.append({"Put": self._new_item(self._handoff_item(handoff))})
        try:
            self._transact(operations)
        except ConditionFailed:
            return False
        return True

    def set_stage(
        self, lead_id: str, fields: dict[str, Any], event: Event, enrolment: Optional[Enrolment] = None
    ) -> bool:
        """Sales feedback: set the stage (and what goes with it) with its event, in one write.

        A recycle enrolment replaces any earlier one in that sequence. False: no such lead.
        """
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":f{i}": v for i, v in enumerate(fields.values())}
        operations: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": _serialize({"pk": _lead_pk(lead_id), "sk": "PROFILE"}),
                    "UpdateExpression": "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields))),
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": _serialize(values),
                }
            },
            {"Put": self._new_item(self._event_item(event))},
        ]
        if enrolment is not None:
            operations.append(
                {"Put": {"TableName": self.table_name, "Item": _serialize(self._enrolment_item(enrolment))}}
            )
        try:
            self._transact(operations)
        except ConditionFailed:
            return False
        return True

    def next_round_robin(self) -> int:
        """An atomic counter: 1, 2, 3, ... across all Lambda invocations."""
        response = self._call(
            "update_item",
            TableName=self.table_name,
            Key=_serialize({"pk": "STATS", "sk": "ROUND_ROBIN"}),
            UpdateExpression="ADD #n :one",
            ExpressionAttributeNames={"#n": "next"},
            ExpressionAttributeValues=_serialize({":one": 1}),
            ReturnValues="UPDATED_NEW",
        )
        return int(_deserialize(response["Attributes"])["next"])

    def _handoff_item(self, handoff: Handoff) -> dict[str, Any]:
        return {"pk": _lead_pk(handoff.lead_id), "sk": f"HANDOFF#{handoff.handoff_id}", **handoff.to_item()}

    def claim_handoff(self, handoff: Handoff, claim_id: str, now: str, lease_until: str) -> bool:
        """Take a handoff's notifications, or learn another invocation has them."""
        # The lease end is also its due time: if this invocation dies mid-way, the dispatcher's
        # tick finds the handoff in the due index then and finishes what was not sent.
        return self._handoff_update(
            handoff,
            "SET #status = :notifying, claim_id = :claim, lease_until = :lease, due_at = :lease, due_shard = :shard",
            "#status = :pending OR (#status = :notifying AND lease_until < :now)",
            {
                ":notifying": "notifying",
                ":pending": "pending",
                ":claim": claim_id,
                ":lease": lease_until,
                ":now": now,
                ":shard": due_shard(handoff.lead_id),
            },
        )

    def mark_handoff(self, handoff: Handoff, claim_id: str, fields: dict[str, Any], remove_due: bool = False) -> bool:
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values: dict[str, Any] = {f":f{i}": v for i, v in enumerate(fields.values())}
        values[":claim"] = claim_id
        update = "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields)))
        if remove_due:
            update += " REMOVE due_at, due_shard"
        return self._handoff_update(handoff, update, "claim_id = :claim", values, names)

    def schedule_webhook_retry(self, handoff: Handoff, claim_id: str, due_at: str, attempts: int) -> bool:
        return self._handoff_update(
            handoff,
            "SET webhook_status = :pending, webhook_attempts = :attempts, due_at = :due, due_shard = :shard, "
            "#status = :waiting",
            "claim_id = :claim",
            {
                ":pending": "pending",
                ":attempts": attempts,
                ":due": due_at,
                ":shard": due_shard(handoff.lead_id),
                ":waiting": "pending",
                ":claim": claim_id,
            },
        )

    def _handoff_update(
        self,
        handoff: Handoff,
        update: str,
        condition: str,
        values: dict[str, Any],
        names: Optional[dict[str, str]] = None,
    ) -> bool:
        key = {"pk": _lead_pk(handoff.lead_id), "sk": f"HANDOFF#{handoff.handoff_id}"}
        return self._update_if(key, update, condition, values, names)

    # -- rate limits --------------------------------------------------------------------------

    def take_allowance(self, scope: str, key: str, window_seconds: int, limit: int, now_epoch: float) -> bool:
        """Count one use of ``key`` (already pseudonymous: never an address or a raw IP) in the
        current fixed window of ``scope``; False, and nothing counted, once ``limit`` is reached.

        One conditional update of a small item that expires by TTL after its window: a refused
        request costs one write and stores nothing else.
        """
        window = _window_start(window_seconds, now_epoch)
        return self._write_if(
            "update_item",
            {
                "TableName": self.table_name,
                "Key": _serialize(_allowance_key(scope, key, window)),
                "UpdateExpression": "ADD #uses :one SET #ttl = if_not_exists(#ttl, :expires)",
                "ConditionExpression": "attribute_not_exists(#uses) OR #uses < :limit",
                "ExpressionAttributeNames": {"#uses": "uses", "#ttl": TTL_ATTRIBUTE},
                "ExpressionAttributeValues": _serialize(
                    {":one": 1, ":limit": limit, ":expires": window + 2 * window_seconds}
                ),
            },
        )

    # -- admin sessions -----------------------------------------------------------------------

    def open_admin_session(self, session_id: str, opened_at: str, expires_at: int) -> None:
        """Record a dashboard session (the cookie names ``session_id``) until ``expires_at``."""
        item = {"pk": f"{ADMIN_SESSION_PREFIX}{session_id}", "sk": ADMIN_SESSION_SK, "opened_at": opened_at}
        self._call("put_item", **self._new_item({**item, TTL_ATTRIBUTE: expires_at}))

    def admin_session_open(self, session_id: str, now_epoch: float) -> bool:
        """The session was opened and not closed, and has not expired (TTL deletes lag by hours)."""
        item = self._get({"pk": f"{ADMIN_SESSION_PREFIX}{session_id}", "sk": ADMIN_SESSION_SK})
        return item is not None and int(item.get(TTL_ATTRIBUTE, 0)) > now_epoch

    def close_admin_session(self, session_id: str) -> None:
        """Logout: the session's cookie opens nothing from now on (closing twice is fine)."""
        self._call(
            "delete_item",
            TableName=self.table_name,
            Key=_serialize({"pk": f"{ADMIN_SESSION_PREFIX}{session_id}", "sk": ADMIN_SESSION_SK}),
        )

    def allowance_left(self, scope: str, key: str, window_seconds: int, limit: int, now_epoch: float) -> bool:
        """Whether ``take_allowance`` would still count a use now; a read, nothing counted.

        The login form asks this before it looks at the submitted token: once the failures are
        used up, a right token and a wrong one get the same answer in the same time.
        """
        item = self._get(_allowance_key(scope, key, _window_start(window_seconds, now_epoch)))
        return item is None or int(item.get("uses", 0)) < limit

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

    def count_once(
        self,
        lead_id: str,
        marker: str,
        adds: Mapping[Counter, Mapping[str, int]],
        at: str,
        *,
        probe: bool = False,
        expires_at: Optional[int] = None,
    ) -> bool:
        """Add to report counters unless this lead's ``marker`` was counted before. One transaction.

        Returns False (and changes nothing) when the marker exists: a redelivered record, a
        second open of the same email, a lead reaching a stage again. With ``probe``, for things
        that often repeat, a read first skips the transaction: a read costs a quarter of what a
        cancelled transaction does. A marker that only guards against redelivery can be given a
        TTL (``expires_at``, epoch seconds). False too when the lead does not exist (any more).
        """
        marker_key = {"pk": _lead_pk(lead_id), "sk": f"{MARKER_PREFIX}{marker}"}
        if probe and self._get(marker_key) is not None:
            return False
        marker_item: dict[str, Any] = {**marker_key, "at": at}
        if expires_at is not None:
            marker_item[TTL_ATTRIBUTE] = expires_at
        operations: list[dict[str, Any]] = [
            {"Put": self._new_item(marker_item)},
            # Only a lead that exists is counted: a late record of an erased lead must not
            # leave a marker behind in its partition.
            {
                "ConditionCheck": {
                    "TableName": self.table_name,
                    "Key": _serialize({"pk": _lead_pk(lead_id), "sk": "PROFILE"}),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
        ]
        for counter, increments in adds.items():
            names = {f"#c{i}": name for i, name in enumerate(increments)}
            values: dict[str, Any] = {f":c{i}": amount for i, amount in enumerate(increments.values())}
            names["#parts"], values[":parts"] = "parts", list(counter.parts)
            adds_expression = ", ".join(f"#c{i} :c{i}" for i in range(len(increments)))
            operations.append(
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": _serialize({"pk": STATS_PK, "sk": counter.sort_key}),
                        "UpdateExpression": f"SET #parts = if_not_exists(#parts, :parts) ADD {adds_expression}",
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": _serialize(values),
                    }
                }
            )
        return self._transact_counts(operations)

    def uncount(self, lead_id: str, marker: str, subtracts: Mapping[Counter, Mapping[str, int]]) -> bool:
        """Take back what ``count_once`` counted under this lead's ``marker``: the marker deleted
        and the counters decreased, in one transaction, only while the marker exists (so twice
        takes back once). For counts a later signal showed wrong (a machine's click)."""
        operations: list[dict[str, Any]] = [
            {
                "Delete": {
                    "TableName": self.table_name,
                    "Key": _serialize({"pk": _lead_pk(lead_id), "sk": f"{MARKER_PREFIX}{marker}"}),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
        ]
        for counter, decrements in subtracts.items():
            names = {f"#c{i}": name for i, name in enumerate(decrements)}
            values: dict[str, Any] = {f":c{i}": -amount for i, amount in enumerate(decrements.values())}
            operations.append(
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": _serialize({"pk": STATS_PK, "sk": counter.sort_key}),
                        "UpdateExpression": "ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(decrements))),
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": _serialize(values),
                    }
                }
            )
        return self._transact_counts(operations)

    def _transact_counts(self, operations: list[dict[str, Any]]) -> bool:
        """A counting transaction: False when its condition fails (counted, or taken back, already);
        retried a few times when it collides with another on a hot STATS item."""
        for attempt in range(_COUNT_ATTEMPTS):
            try:
                self._transact(operations)
                return True
            except ConditionFailed:
                return False
            except WriteConflict:
                if attempt == _COUNT_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
        return False  # unreachable: the last attempt returns or raises

    def report_counters(self) -> dict[Counter, dict[str, Any]]:
        """Every report counter (funnel, step, spend): one Query of the stats partition."""
        counters: dict[Counter, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :stats",
            "ExpressionAttributeValues": _serialize({":stats": STATS_PK}),
        }
        while True:
            page = self._call("query", **kwargs)
            for raw in page.get("Items", []):
                item = _deserialize(raw)
                kind, named, _ = str(item["sk"]).partition("#")
                if named and "parts" in item:  # BOTS and ROUND_ROBIN have no parts
                    attributes = {k: from_dynamo_value(v) for k, v in item.items() if k not in ("pk", "sk", "parts")}
                    counters[Counter(kind.lower(), tuple(str(p) for p in item["parts"]))] = attributes
            if "LastEvaluatedKey" not in page:
                return counters
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def set_counter_fields(self, counter: Counter, fields: Mapping[str, Any]) -> None:
        """Overwrite a stats item's fields (ad spend entered through the API)."""
        self._call(
            "put_item",
            TableName=self.table_name,
            Item=_serialize({"pk": STATS_PK, "sk": counter.sort_key, "parts": list(counter.parts), **fields}),
        )

    # -- GDPR -----------------------------------------------------------------------------------

    def export_lead(self, lead_id: str) -> Optional[LeadExport]:
        """Everything stored under the lead and its suppression, if any. None: no such lead."""
        items = [{k: from_dynamo_value(v) for k, v in item.items()} for item in self._query_lead(lead_id)]
        profile = next((item for item in items if item["sk"] == "PROFILE"), None)
        if profile is None:
            return None

        def plain(prefix: str) -> list[dict[str, Any]]:
            return [
                {k: v for k, v in item.items() if k not in _KEY_ATTRIBUTES}
                for item in items
                if str(item["sk"]).startswith(prefix)
            ]

        suppression = self._get({"pk": f"SUPPRESS#{lead_id}", "sk": "SUPPRESS"})
        return LeadExport(
            profile={k: v for k, v in profile.items() if k not in _KEY_ATTRIBUTES},
            events=plain("EVENT#"),
            enrolments=plain("ENROL#"),
            messages=plain("MSG#"),
            handoffs=plain("HANDOFF#"),
            report_markers=[i["sk"].removeprefix(MARKER_PREFIX) for i in items if i["sk"].startswith(MARKER_PREFIX)],
            suppression={k: v for k, v in from_dynamo_value(suppression).items() if k not in _KEY_ATTRIBUTES}
            if suppression
            else None,
        )

    def erase_lead(self, lead_id: str, suppression: Suppression) -> Optional[int]:
        """Delete every item of the lead's partition, after suppressing the address for good.

        The suppression goes first and the profile last: a failure half-way leaves the address
        suppressed and the lead still listed, so running the erase again finishes it. Returns
        the number of items deleted, or None when there is no such lead.
        """
        items = self._query_lead(lead_id)
        if not any(item["sk"] == "PROFILE" for item in items):
            return None
        self.suppress(suppression)
        keys = [{"pk": item["pk"], "sk": item["sk"]} for item in items if item["sk"] != "PROFILE"]
        self._delete_keys(keys)
        self._call("delete_item", TableName=self.table_name, Key=_serialize({"pk": _lead_pk(lead_id), "sk": "PROFILE"}))
        # Writes that raced the deletes (a send being recorded, a count) were conditional on the
        # profile, which is gone now: one more sweep removes what landed meanwhile, for good.
        stragglers = [{"pk": item["pk"], "sk": item["sk"]} for item in self._query_lead(lead_id)]
        self._delete_keys(stragglers)
        return len(keys) + 1 + len(stragglers)

    def _delete_keys(self, keys: list[dict[str, Any]]) -> None:
        for start in range(0, len(keys), 25):
            self._delete_batch(keys[start : start + 25])

    def _delete_batch(self, keys: list[dict[str, Any]]) -> None:
        requests: list[Any] = [{"DeleteRequest": {"Key": _serialize(key)}} for key in keys]
        for attempt in range(6):
            response = self._call("batch_write_item", RequestItems={self.table_name: requests})
            requests = response.get("UnprocessedItems", {}).get(self.table_name, [])
            if not requests:
                return
            time.sleep(0.05 * 2**attempt)
        raise StoreError(f"{len(requests)} items of the lead could not be deleted; erase again")

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

    def _query_lead(self, lead_id: str, prefix: str = "") -> list[dict[str, Any]]:
        """Items of the lead's partition whose sort key starts with ``prefix`` (all when empty)."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": _serialize({":pk": _lead_pk(lead_id)}),
        }
        if prefix:  # DynamoDB rejects begins_with on an empty string
            kwargs["KeyConditionExpression"] = "pk = :pk AND begins_with(sk, :prefix)"
            kwargs["ExpressionAttributeValues"] = _serialize({":pk": _lead_pk(lead_id), ":prefix": prefix})
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
                if "ConditionalCheckFailed" in reasons:
                    raise ConditionFailed("an item was not as the write expected") from e
                if "TransactionConflict" in reasons:
                    raise WriteConflict("a concurrent transaction touched the same items; retry") from e
                if "ValidationError" in reasons:
                    raise InvalidRequest(f"transaction refused: {e}") from e
            if e.response.get("Error", {}).get("Code") == "ValidationException":
                raise InvalidRequest(f"transaction refused: {e}") from e
            raise StoreError(f"transaction failed: {e}") from e
        except BotoCoreError as e:
            raise StoreError(f"transaction failed: {e}") from e

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ValidationException":
                raise InvalidRequest(f"{operation} refused: {e}") from e
            raise StoreError(f"{operation} failed: {e}") from e
        except BotoCoreError as e:
            raise StoreError(f"{operation} failed: {e}") from e
