"""DynamoDB access patterns: the only package that knows keys, index names and item layout.

One table per campaign stage (docs/data-model.md has the items and the access-pattern chart).
``Store`` is the one object the rest of Trellis holds; it is composed of one repository per
aggregate, each a file here:

    keys.py         every key format and index name
    expressions.py  placeholders and update/condition expressions for one request
    table.py        the client call, errors in domain terms, Query pages, retries
    leads.py        capture, confirmation, events, scores and stages, the admin lead list
    nurture.py      enrolments, due steps and their claims, messages, suppressions
    broadcasts.py   broadcasts, the enrolment of their recipients
    registrations.py  the campaign's events: registrants and their count
    handoffs.py     handoff claims and marks, webhook retries, round robin
    counters.py     report counters and their once-only markers, bot counts
    sessions.py     rate-limit allowances, dashboard sessions
    erasure.py      GDPR export and erase
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Optional

from chalicelib.entities import Enrolment, Event, Handoff, Message
from chalicelib.store import keys
from chalicelib.store.broadcasts import Broadcasts
from chalicelib.store.codec import deserialize
from chalicelib.store.counters import Counter, Counters
from chalicelib.store.erasure import Erasure, LeadExport
from chalicelib.store.handoffs import Handoffs
from chalicelib.store.keys import (
    ADMIN_SESSION_PREFIX,
    ADMIN_SESSION_SK,
    CREATED_INDEX,
    DUE_INDEX,
    DUE_SHARDS,
    LEAD_LIST,
    LIMIT_PREFIX,
    MARKER_PREFIX,
    STAGE_INDEX,
    STATS_PK,
    TTL_ATTRIBUTE,
    due_shard,
)
from chalicelib.store.leads import CaptureWrite, LeadQuery, LeadRecord, Leads
from chalicelib.store.nurture import Nurture
from chalicelib.store.registrations import Registrations
from chalicelib.store.sessions import Sessions

__all__ = [
    "ADMIN_SESSION_PREFIX",
    "ADMIN_SESSION_SK",
    "CREATED_INDEX",
    "DUE_INDEX",
    "DUE_SHARDS",
    "LEAD_LIST",
    "LIMIT_PREFIX",
    "MARKER_PREFIX",
    "STAGE_INDEX",
    "STATS_PK",
    "TTL_ATTRIBUTE",
    "CaptureWrite",
    "Counter",
    "LeadExport",
    "LeadQuery",
    "LeadRecord",
    "Store",
    "due_shard",
    "parse_stream_image",
]


class Store(Leads, Erasure, Nurture, Broadcasts, Registrations, Handoffs, Counters, Sessions):
    """Every access pattern of the table, one repository class per aggregate.

    The repositories share nothing but the table, so one object made of them all serves the
    callers that want a single store (runtime, twin, bench) while each file stays one aggregate.
    """


# The items the stream handler reacts to, by the sort key's prefix.
_STREAMED: tuple[tuple[str, Callable[[dict[str, Any]], Enrolment | Event | Handoff | Message]], ...] = (
    (keys.ENROL_PREFIX, Enrolment.from_item),
    (keys.EVENT_PREFIX, Event.from_item),
    (keys.HANDOFF_PREFIX, Handoff.from_item),
    (keys.MESSAGE_PREFIX, Message.from_item),
)


def parse_stream_image(image: Mapping[str, Any]) -> Optional[Enrolment | Event | Handoff | Message]:
    """Turn a stream record's image (DynamoDB JSON) into the entity it holds, if we react to it."""
    if not image or "sk" not in image:
        return None
    item = deserialize(image)
    return next((entity(item) for prefix, entity in _STREAMED if keys.is_kind(item, prefix)), None)
