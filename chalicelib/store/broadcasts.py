"""The broadcast aggregate: one item per broadcast in the ``BROADCAST`` partition (the list is one
Query), in the due index while its recipients wait to be enrolled.

Enrolling the recipients is resumable: a dispatcher claims the broadcast with a lease, enrols a
page of the segment (its recipients' enrolments in one transaction of conditional puts, each
on its own if some are there: a page done twice after a crash enrols nobody twice), and saves
the cursor under its claim.
"""

from __future__ import annotations

from typing import Optional

from chalicelib.entities import Broadcast, Enrolment
from chalicelib.errors import WriteConflict
from chalicelib.store import keys
from chalicelib.store.expressions import Expression, all_of, any_of
from chalicelib.store.table import Table
from chalicelib.vocabulary import BroadcastStatus

_CLAIM = "claim_id"


# DynamoDB's limit of actions in one transaction.
RECIPIENT_BATCH = 100


class Broadcasts(Table):
    def create_broadcast(self, broadcast: Broadcast) -> None:
        self._call("put_item", **self._new_item(keys.broadcast_item(broadcast)))

    def get_broadcast(self, broadcast_id: str) -> Optional[Broadcast]:
        item = self._get(keys.broadcast(broadcast_id))
        return Broadcast.from_item(item) if item else None

    def list_broadcasts(self) -> list[Broadcast]:
        """Every broadcast, newest first (ids are time-ordered)."""
        listed = Expression()
        condition = listed.eq("pk", keys.BROADCAST_PK)
        items = self._query_all({**listed.params(KeyConditionExpression=condition), "ScanIndexForward": False})
        return [Broadcast.from_item(i) for i in items]

    def claim_broadcast(self, broadcast: Broadcast, claim_id: str, lease_until: str) -> bool:
        """Take a due broadcast's enrolment work, or learn another dispatcher has it (the lease's
        end makes it due again, as an enrolment's claim does)."""
        claim = Expression().set("due_at", lease_until).set(_CLAIM, claim_id)
        unclaimed = all_of(
            claim.eq("due_at", broadcast.due_at), claim.compare("status", "<>", BroadcastStatus.CANCELLED)
        )
        return self._update_if(keys.broadcast(broadcast.broadcast_id), claim, unclaimed)

    def enrol_recipient(self, enrolment: Enrolment) -> bool:
        """A recipient's enrolment in the broadcast's sequence, unless it has one (a page enrolled
        again after a crash adds nobody twice). True when written."""
        return self._write_if("put_item", self._new_item(keys.enrolment_item(enrolment)))

    def enrol_recipients(self, enrolments: list[Enrolment]) -> int:
        """A page of recipients in one transaction (one request for up to ``RECIPIENT_BATCH``,
        each a put only where none is); when some are there already (a page enrolled again after
        a crash) or another writer is, each on its own. The number written."""
        if not enrolments:
            return 0
        page, rest = enrolments[:RECIPIENT_BATCH], enrolments[RECIPIENT_BATCH:]
        try:
            together = self._transact_if([{"Put": self._new_item(keys.enrolment_item(e))} for e in page])
        except WriteConflict:
            together = False
        enrolled = len(page) if together else sum(self.enrol_recipient(e) for e in page)
        return enrolled + self.enrol_recipients(rest)

    def save_enrolment_progress(
        self, broadcast_id: str, claim_id: str, cursor: Optional[str], enrolled: int, status: str
    ) -> bool:
        """After a page: the cursor to go on from and the recipients added, under the claim. At
        the end (``cursor`` None) the broadcast leaves the due index, claim and all."""
        progress = Expression().add("recipients", enrolled).set("status", status)
        if cursor is None:
            progress.remove("cursor", *keys.DUE_ATTRIBUTES, _CLAIM)
        else:
            progress.set("cursor", cursor)
        condition = progress.eq(_CLAIM, claim_id)
        return self._update_if(keys.broadcast(broadcast_id), progress, condition)

    def set_broadcast_winner(self, broadcast_id: str, winner: str, reason: str, at: str) -> bool:
        """An A/B test's winner, once: the first dispatcher to choose it writes it (and the
        broadcast goes on sending); False when one was there."""
        choice = Expression().set("winner", winner).set("winner_reason", reason).set("winner_at", at)
        choice.set("status", BroadcastStatus.SENDING)
        condition = all_of(choice.exists(), choice.absent("winner"), choice.eq("status", BroadcastStatus.TESTING))
        return self._update_if(keys.broadcast(broadcast_id), choice, condition)

    def release_broadcast(self, broadcast_id: str, claim_id: str, due_at: str) -> bool:
        """Out of time: the rest is enrolled from the cursor at the next tick."""
        release = Expression().set("due_at", due_at).remove(_CLAIM)
        return self._update_if(keys.broadcast(broadcast_id), release, release.eq(_CLAIM, claim_id))

    def set_broadcast_status(self, broadcast_id: str, status: str, expected: tuple[str, ...], at: str) -> bool:
        """Move a broadcast on (sent, cancelled) only from one of the ``expected`` statuses; a
        cancel also takes it out of the due index. False: it was not in one of them."""
        change = Expression().set("status", status)
        if status == BroadcastStatus.CANCELLED:
            change.set("cancelled_at", at).remove(*keys.DUE_ATTRIBUTES, _CLAIM)
        allowed = any_of(*(change.eq("status", s) for s in expected))
        return self._update_if(keys.broadcast(broadcast_id), change, all_of(change.exists(), allowed))
