"""The handoff aggregate: a lead's SQL crossing, its notifications and its sales webhook.

A handoff's notifications are taken with a leased claim: the lease's end is also its due time
in the due index, so if the invocation holding it dies the dispatcher's tick finishes the job.
"""

from __future__ import annotations

from typing import Any

from chalicelib.entities import Handoff
from chalicelib.store import keys
from chalicelib.store.codec import deserialize
from chalicelib.store.expressions import Expression, all_of, any_of
from chalicelib.store.table import Table
from chalicelib.vocabulary import HandoffStatus, WebhookStatus

_CLAIM = "claim_id"


class Handoffs(Table):
    def next_round_robin(self) -> int:
        """An atomic counter: 1, 2, 3, ... across all Lambda invocations."""
        turn = Expression().add("next", 1)
        response = self._call(
            "update_item", **self._keyed(keys.stats(keys.ROUND_ROBIN_SK), turn), ReturnValues="UPDATED_NEW"
        )
        return int(deserialize(response["Attributes"])["next"])

    def claim_handoff(self, handoff: Handoff, claim_id: str, now: str, lease_until: str) -> bool:
        """Take a handoff's notifications, or learn another invocation has them."""
        claim = Expression().set("status", HandoffStatus.NOTIFYING).set(_CLAIM, claim_id)
        claim.set("lease_until", lease_until).set("due_at", lease_until)
        claim.set(keys.DUE_SHARD, keys.due_shard(handoff.lead_id))
        lapsed = all_of(claim.eq("status", HandoffStatus.NOTIFYING), claim.compare("lease_until", "<", now))
        free = any_of(claim.eq("status", HandoffStatus.PENDING), lapsed)
        return self._update_if(keys.handoff(handoff), claim, free)

    def mark_handoff(self, handoff: Handoff, claim_id: str, fields: dict[str, Any], remove_due: bool = False) -> bool:
        mark = Expression().set_all(fields)
        if remove_due:
            mark.remove(*keys.DUE_ATTRIBUTES)
        return self._update_if(keys.handoff(handoff), mark, mark.eq(_CLAIM, claim_id))

    def schedule_webhook_retry(self, handoff: Handoff, claim_id: str, due_at: str, attempts: int) -> bool:
        retry = Expression().set("webhook_status", WebhookStatus.PENDING).set("webhook_attempts", attempts)
        retry.set("due_at", due_at).set(keys.DUE_SHARD, keys.due_shard(handoff.lead_id))
        retry.set("status", HandoffStatus.PENDING)
        return self._update_if(keys.handoff(handoff), retry, retry.eq(_CLAIM, claim_id))
