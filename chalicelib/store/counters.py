"""Report counters in the stats partition, and the lead markers that make each count once.

Report counters are kept by the stream handler: each count is a transaction of a marker put
(conditional on its absence, in the lead's partition) and the counter increments, so a
redelivered record or a lead reaching a stage twice counts once. A sent email is its own marker
(``count_sent``: a flag on its message item).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from chalicelib.entities import Message, from_dynamo_value
from chalicelib.store import keys
from chalicelib.store.expressions import Expression, all_of
from chalicelib.store.table import Table

# A counter transaction that collides with another on the same hot STATS item is retried a few
# times; after that the stream batch fails and Lambda redelivers it (counting is idempotent).
_COUNT_ATTEMPTS = 4
# On a message item: when its send was counted (count_sent).
SENT_COUNTED = "sent_counted_at"
# Sent emails counted in one transaction: DynamoDB's 100 actions, less room for the counters
# (a stream batch's messages are of a few steps at most).
SENT_BATCH = 90


@dataclass(frozen=True)
class Counter:
    """One report counter item: a kind ("funnel", "step", "exit", "spend") and the parts naming it."""

    kind: str
    parts: tuple[str, ...]

    @property
    def sort_key(self) -> str:
        # The parts themselves are stored on the item (``parts``) and read back from there: the
        # key may have hashed them.
        return keys.counter_sort_key(self.kind, self.parts)


class Counters(Table):
    def count_bot(self, form_id: str, reason: str) -> None:
        """Bots are counted, never stored: one counter update, no lead, no event."""
        bots = Expression().add("blocked", 1).add(f"{form_id}:{reason}", 1)
        self._call("update_item", **self._keyed(keys.stats(keys.BOTS_SK), bots))

    def bot_counts(self) -> dict[str, int]:
        item = self._get(keys.stats(keys.BOTS_SK)) or {}
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
        if probe and self._get(keys.marker(lead_id, marker)) is not None:
            return False
        lead = Expression()
        operations: list[dict[str, Any]] = [
            {"Put": self._new_item(keys.marker_item(lead_id, marker, at, expires_at))},
            # Only a lead that exists is counted: a late record of an erased lead must not
            # leave a marker behind in its partition.
            {"ConditionCheck": self._keyed(keys.profile(lead_id), lead, ConditionExpression=lead.exists())},
            *self._counter_updates(adds, sign=1),
        ]
        return self._transact_if(operations, conflict_attempts=_COUNT_ATTEMPTS)

    def count_sent(self, messages: Sequence[tuple[Message, Sequence[Counter]]]) -> int:
        """Count sent emails once each, their own items the markers: transactions that flag each
        message (only if it exists and is not flagged yet) and add the batch's sends to each
        counter once. A transaction refused (one was counted before: a redelivered record; or
        is gone: its lead erased meanwhile) counts its messages one by one, so nothing is
        counted twice and nothing is left behind. The number counted.

        Per email that is 2 write units (its flag) plus a share of the counter's, against 6 for
        a marker item, a check of the profile and the counter each; and one transaction per
        batch instead of one per email on the hot counter item."""
        counted = 0
        for start in range(0, len(messages), SENT_BATCH):
            chunk = messages[start : start + SENT_BATCH]
            adds: dict[Counter, dict[str, int]] = {}
            for _, counters in chunk:
                for counter in counters:
                    adds.setdefault(counter, {"sent": 0})["sent"] += 1
            if self._transact_if(
                [*map(self._sent_flag, chunk), *self._counter_updates(adds, sign=1)], conflict_attempts=_COUNT_ATTEMPTS
            ):
                counted += len(chunk)
            elif len(chunk) > 1:
                counted += sum(self.count_sent([one]) for one in chunk)
        return counted

    def _sent_flag(self, sent: tuple[Message, Sequence[Counter]]) -> dict[str, Any]:
        flag = Expression().set(SENT_COUNTED, sent[0].sent_at)
        unflagged = all_of(flag.exists(), flag.absent(SENT_COUNTED))
        return {"Update": self._keyed(keys.message(sent[0]), flag, ConditionExpression=unflagged)}

    def uncount(self, lead_id: str, marker: str, subtracts: Mapping[Counter, Mapping[str, int]]) -> bool:
        """Take back what ``count_once`` counted under this lead's ``marker``: the marker deleted
        and the counters decreased, in one transaction, only while the marker exists (so twice
        takes back once). For counts a later signal showed wrong (a machine's click)."""
        counted = Expression()
        operations: list[dict[str, Any]] = [
            {"Delete": self._keyed(keys.marker(lead_id, marker), counted, ConditionExpression=counted.exists())},
            *self._counter_updates(subtracts, sign=-1),
        ]
        return self._transact_if(operations, conflict_attempts=_COUNT_ATTEMPTS)

    def _counter_updates(self, changes: Mapping[Counter, Mapping[str, int]], sign: int) -> list[dict[str, Any]]:
        updates: list[dict[str, Any]] = []
        for counter, amounts in changes.items():
            change = Expression()
            if sign > 0:  # a counter's first count names it; a take-back follows a count
                change.set_if_absent("parts", list(counter.parts))
            change.add_all({name: sign * amount for name, amount in amounts.items()})
            updates.append({"Update": self._keyed(keys.stats(counter.sort_key), change)})
        return updates

    def report_counters(self) -> dict[Counter, dict[str, Any]]:
        """Every report counter (funnel, step, spend): one Query of the stats partition."""
        stats = Expression()
        counters: dict[Counter, dict[str, Any]] = {}
        for item in self._query_all(stats.params(KeyConditionExpression=stats.eq("pk", keys.STATS_PK))):
            kind = keys.counter_kind(str(item["sk"]))
            if kind is not None and "parts" in item:  # BOTS and ROUND_ROBIN have no parts
                attributes = {k: from_dynamo_value(v) for k, v in item.items() if k not in ("pk", "sk", "parts")}
                counters[Counter(kind, tuple(str(p) for p in item["parts"]))] = attributes
        return counters

    def set_counter_fields(self, counter: Counter, fields: Mapping[str, Any]) -> None:
        """Overwrite a stats item's fields (ad spend entered through the API)."""
        self._call("put_item", **self._item({**keys.stats(counter.sort_key), "parts": list(counter.parts), **fields}))
