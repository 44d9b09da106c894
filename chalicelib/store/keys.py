"""Key formats and index names: the only module that spells them (docs/data-model.md).

    item              pk                 sk                                  indexes
    lead profile      LEAD#<lead_id>     PROFILE                             by_stage, by_created
    event             LEAD#<lead_id>     EVENT#<iso time>#<event_id>         -
    enrolment         LEAD#<lead_id>     ENROL#<sequence_id>                 due (sparse, sharded)
    message           LEAD#<lead_id>     MSG#<sequence>.<step>#<enrolled_at> -
    handoff           LEAD#<lead_id>     HANDOFF#<iso time>                  due (only while a webhook retry waits)
    broadcast         BROADCAST          <broadcast_id> (time-ordered)       due (while recipients wait to enrol)
    calendar event    CALENDAR#<event>   STATE (registrations, revision)     -
    registration      CALENDAR#<event>   REG#<lead_id>                       -
    report marker     LEAD#<lead_id>     COUNTED#<what>                      -
    suppression       SUPPRESS#<lead_id> SUPPRESS                            -
    rate-limit window LIMIT#<scope>#<key> W#<window start epoch>             - (TTL)
    admin session     ADMIN_SESSION#<id> SESSION                             - (TTL)
    counters          STATS              BOTS, ROUND_ROBIN, FUNNEL#..., STEP#..., EXIT#..., SPEND#...

Entities (chalicelib/entities.py) know their attributes; the ``*_item`` functions here add the
key and index attributes that place them in the table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Optional
from urllib.parse import quote

from chalicelib.entities import Broadcast, Enrolment, Event, Handoff, Message, Registration, Suppression

Key = dict[str, str]

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
PROFILE_SK = "PROFILE"
EVENT_PREFIX = "EVENT#"
ENROL_PREFIX = "ENROL#"
MESSAGE_PREFIX = "MSG#"
HANDOFF_PREFIX = "HANDOFF#"
# Every broadcast in one partition, its id (time-ordered) the sort key: the list is one Query.
BROADCAST_PK = "BROADCAST"
MARKER_PREFIX = "COUNTED#"
# A campaign event's partition: its state, then one item per registrant (the list is one Query).
CALENDAR_PREFIX = "CALENDAR#"
CALENDAR_STATE_SK = "STATE"
REGISTRATION_PREFIX = "REG#"
SUPPRESS_SK = "SUPPRESS"
# Rate-limit windows (POST /events, admin login): one small item per key and window, TTL-expired.
LIMIT_PREFIX = "LIMIT#"
# One item per signed-in dashboard browser; logout deletes it, so its cookie opens nothing.
ADMIN_SESSION_PREFIX = "ADMIN_SESSION#"
ADMIN_SESSION_SK = "SESSION"
BOTS_SK = "BOTS"
# Index attributes: an enrolment or handoff carries both only while something of it is due.
DUE_SHARD = "due_shard"
DUE_ATTRIBUTES = ("due_at", DUE_SHARD)
LEAD_LIST_ATTRIBUTE = "lead_list"
ROUND_ROBIN_SK = "ROUND_ROBIN"
# Attributes that only serve keys and indexes: not part of what a lead export shows.
KEY_ATTRIBUTES = frozenset({"pk", "sk", LEAD_LIST_ATTRIBUTE, DUE_SHARD})


def lead_pk(lead_id: str) -> str:
    return f"LEAD#{lead_id}"


def profile(lead_id: str) -> Key:
    return {"pk": lead_pk(lead_id), "sk": PROFILE_SK}


def enrolment(enrolment: Enrolment) -> Key:
    return {"pk": lead_pk(enrolment.lead_id), "sk": f"{ENROL_PREFIX}{enrolment.sequence_id}"}


def handoff(handoff: Handoff) -> Key:
    return {"pk": lead_pk(handoff.lead_id), "sk": f"{HANDOFF_PREFIX}{handoff.handoff_id}"}


def broadcast(broadcast_id: str) -> Key:
    return {"pk": BROADCAST_PK, "sk": broadcast_id}


def calendar_pk(event_id: str) -> str:
    return f"{CALENDAR_PREFIX}{event_id}"


def calendar_state(event_id: str) -> Key:
    return {"pk": calendar_pk(event_id), "sk": CALENDAR_STATE_SK}


def registration(event_id: str, lead_id: str) -> Key:
    return {"pk": calendar_pk(event_id), "sk": f"{REGISTRATION_PREFIX}{lead_id}"}


def registration_item(entity: Registration) -> dict[str, Any]:
    return {**registration(entity.event_id, entity.lead_id), **entity.to_item()}


def is_broadcast(item: Mapping[str, Any]) -> bool:
    return str(item["pk"]) == BROADCAST_PK


def marker(lead_id: str, marker: str) -> Key:
    return {"pk": lead_pk(lead_id), "sk": f"{MARKER_PREFIX}{marker}"}


def suppression(lead_id: str) -> Key:
    return {"pk": f"SUPPRESS#{lead_id}", "sk": SUPPRESS_SK}


def allowance(scope: str, key: str, window: int) -> Key:
    return {"pk": f"{LIMIT_PREFIX}{scope}#{key}", "sk": f"W#{window}"}


def admin_session(session_id: str) -> Key:
    return {"pk": f"{ADMIN_SESSION_PREFIX}{session_id}", "sk": ADMIN_SESSION_SK}


def stats(sort_key: str) -> Key:
    return {"pk": STATS_PK, "sk": sort_key}


def key_of(item: Mapping[str, Any]) -> Key:
    return {"pk": item["pk"], "sk": item["sk"]}


def due_shard(lead_id: str) -> str:
    shard = int(hashlib.sha256(lead_id.encode()).hexdigest(), 16) % DUE_SHARDS
    return due_shard_name(shard)


def due_shard_name(shard: int) -> str:
    return f"DUE#{shard}"


def counter_sort_key(kind: str, parts: Iterable[str]) -> str:
    # Parts are free text (utm values, up to 200 characters of any script): quoted, so "#"
    # cannot split one, and hashed when long, so the key stays far below DynamoDB's 1 KB.
    return "#".join((kind.upper(), *(_key_part(part) for part in parts)))


def counter_kind(sort_key: str) -> Optional[str]:
    """The counter kind a stats sort key names; None for a stats item that is no counter."""
    kind, named, _ = sort_key.partition("#")
    return kind.lower() if named else None


def _key_part(part: str) -> str:
    quoted = quote(part, safe="")
    return quoted if len(quoted) <= 64 else "~" + hashlib.sha256(part.encode()).hexdigest()[:32]


def is_profile(item: Mapping[str, Any]) -> bool:
    return str(item["sk"]) == PROFILE_SK


def is_suppression(item: Mapping[str, Any]) -> bool:
    return str(item["sk"]) == SUPPRESS_SK


def is_kind(item: Mapping[str, Any], prefix: str) -> bool:
    """Whether the item's sort key starts with ``prefix`` (one of the ``*_PREFIX`` above)."""
    return str(item["sk"]).startswith(prefix)


def of_kind(items: Iterable[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [item for item in items if is_kind(item, prefix)]


def marker_names(items: Iterable[dict[str, Any]]) -> list[str]:
    return [str(item["sk"])[len(MARKER_PREFIX) :] for item in of_kind(items, MARKER_PREFIX)]


def index_key(lead_id: str, item: Mapping[str, Any], index: str) -> dict[str, Any]:
    """A profile's key in one of the lead indexes: where a Query of that index resumes after it."""
    key: dict[str, Any] = profile(lead_id)
    if index == STAGE_INDEX:
        key.update({"stage": item.get("stage"), "score": item.get("score")})
    else:
        key.update({LEAD_LIST_ATTRIBUTE: LEAD_LIST, "created_at": item.get("created_at")})
    return key


# -- entities with their keys ---------------------------------------------------------------------


def event_item(event: Event, expires_at: Optional[int] = None) -> dict[str, Any]:
    item = {"pk": lead_pk(event.lead_id), "sk": f"{EVENT_PREFIX}{event.at}#{event.event_id}", **event.to_item()}
    return _expiring(item, expires_at)


def enrolment_item(entity: Enrolment, expires_at: Optional[int] = None) -> dict[str, Any]:
    item = {**enrolment(entity), **entity.to_item()}
    if entity.due_at is not None:
        item[DUE_SHARD] = due_shard(entity.lead_id)
    return _expiring(item, expires_at)


def message(entity: Message) -> Key:
    return {"pk": lead_pk(entity.lead_id), "sk": f"{MESSAGE_PREFIX}{entity.message_id}#{entity.enrolled_at}"}


def message_item(entity: Message) -> dict[str, Any]:
    return {**message(entity), **entity.to_item()}


def handoff_item(entity: Handoff) -> dict[str, Any]:
    return {**handoff(entity), **entity.to_item()}


def broadcast_item(entity: Broadcast) -> dict[str, Any]:
    item = {**broadcast(entity.broadcast_id), **entity.to_item()}
    if entity.due_at is not None:
        item[DUE_SHARD] = due_shard(entity.broadcast_id)
    return item


def suppression_item(entity: Suppression) -> dict[str, Any]:
    return {**suppression(entity.lead_id), **entity.to_item()}


def marker_item(lead_id: str, name: str, at: str, expires_at: Optional[int]) -> dict[str, Any]:
    return _expiring({**marker(lead_id, name), "at": at}, expires_at)


def _expiring(item: dict[str, Any], expires_at: Optional[int]) -> dict[str, Any]:
    if expires_at is not None:
        item[TTL_ATTRIBUTE] = expires_at
    return item
