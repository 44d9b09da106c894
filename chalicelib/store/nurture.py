"""The nurture aggregate: enrolments walking their sequences, the messages sent, suppressions.

An enrolment sits in the sparse, sharded due index only while a step waits. A dispatcher takes
a due step with a conditional claim, and every later change of the enrolment is conditional on
that claim, so two dispatchers never both send a step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Optional

from chalicelib.entities import Broadcast, Enrolment, Handoff, Lead, Message, Suppression
from chalicelib.store import keys
from chalicelib.store.expressions import Expression, all_of
from chalicelib.store.table import Table
from chalicelib.vocabulary import EnrolmentStatus

logger = logging.getLogger(__name__)

# Set while a dispatcher holds a step; the write that ends the step removes it.
_CLAIM = "claim_id"


def _under(claim: Expression, claim_id: str) -> str:
    return claim.eq(_CLAIM, claim_id)


def _ended(status: str, reason: Optional[str] = None, step_index: Optional[int] = None) -> Expression:
    """An enrolment's end (completed or exited): out of the due index for good."""
    end = Expression().set("status", status)
    if reason is not None:
        end.set("exit_reason", reason)
    if step_index is not None:
        end.set("step_index", step_index)
    return end.remove(*keys.DUE_ATTRIBUTES, _CLAIM)


def _next_step(next_index: int, next_due: str) -> Expression:
    return Expression().set("step_index", next_index).set("due_at", next_due).set("attempts", 0).remove(_CLAIM)


class Nurture(Table):
    def enrol(self, enrolment: Enrolment) -> bool:
        """Enrol a lead that exists, unless already in the sequence. One transaction."""
        profile = Expression().add("sequences", {enrolment.sequence_id})
        return self._transact_if(
            [
                {"Update": self._keyed(keys.profile(enrolment.lead_id), profile, ConditionExpression=profile.exists())},
                {"Put": self._new_item(keys.enrolment_item(enrolment))},
            ]
        )

    def due_enrolments(
        self, now: str, page_size: int = 50, shards: Optional[Sequence[int]] = None
    ) -> Iterator[Enrolment | Handoff | Broadcast]:
        """Enrolments with a step due at or before ``now``, shard by shard, read page by page
        (only ``shards`` when given: a dispatcher of a fanned-out tick reads its own).

        Reads only the sparse due index: their cost grows with the due work, not with the leads.
        """
        for shard in range(keys.DUE_SHARDS) if shards is None else shards:
            shard_due = Expression()
            condition = all_of(
                shard_due.eq(keys.DUE_SHARD, keys.due_shard_name(shard)), shard_due.compare("due_at", "<=", now)
            )
            request = {"IndexName": keys.DUE_INDEX, **shard_due.params(KeyConditionExpression=condition)}
            for items, _ in self._query_pages(request, page_size=page_size):
                for item in items:
                    try:
                        due: Enrolment | Handoff | Broadcast
                        if keys.is_broadcast(item):
                            due = Broadcast.from_item(item)
                        elif keys.is_kind(item, keys.HANDOFF_PREFIX):
                            due = Handoff.from_item(item)
                        else:
                            due = Enrolment.from_item(item)
                    except (KeyError, TypeError, ValueError):
                        # A damaged item must not end the walk for everything due after it.
                        logger.error("unreadable due item %s %s skipped", item.get("pk"), item.get("sk"))
                        continue
                    yield due

    def claim(self, enrolment: Enrolment, claim_id: str, lease_until: str) -> bool:
        """Take a due step for this dispatcher, or learn that another one has it.

        The claim moves ``due_at`` to the lease's end: if this dispatcher dies before it
        commits, the step falls due again then, and another tick retries it.
        """
        claim = Expression().set("due_at", lease_until).set(_CLAIM, claim_id).increment("attempts", 1, start=0)
        unclaimed = all_of(claim.eq("due_at", enrolment.due_at), claim.eq("status", EnrolmentStatus.ACTIVE))
        return self._update_if(keys.enrolment(enrolment), claim, unclaimed)

    def release(self, enrolment: Enrolment, claim_id: str, due_at: str, *, reset_attempts: bool) -> bool:
        """Give a claimed step back, due again at ``due_at`` (window, cap, or backoff)."""
        release = Expression().set("due_at", due_at)
        if reset_attempts:
            release.set("attempts", 0)
        release.remove(_CLAIM)
        return self._update_if(keys.enrolment(enrolment), release, _under(release, claim_id))

    def advance(self, enrolment: Enrolment, claim_id: str, next_index: int, next_due: Optional[str]) -> bool:
        """Move past skipped steps without sending (or finish the sequence)."""
        if next_due is None:
            return self.finish(enrolment, claim_id, EnrolmentStatus.COMPLETED, None, step_index=next_index)
        advance = _next_step(next_index, next_due)
        return self._update_if(keys.enrolment(enrolment), advance, _under(advance, claim_id))

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
        end = _ended(status, reason, step_index)
        return self._update_if(keys.enrolment(enrolment), end, _under(end, claim_id))

    def commit_send(
        self,
        enrolment: Enrolment,
        claim_id: str,
        message: Message,
        next_index: int,
        next_due: Optional[str],
        recent_sends: Optional[list[str]],
    ) -> None:
        """Record a sent email and advance the enrolment, atomically and only under our claim.

        ``recent_sends``: the lead's send log after it (with its count of emails and the last
        one's time), or None for an email that does not count toward the frequency cap (a
        broadcast, by default): the profile is then left alone, which is a third of the commit's
        write units and keeps a broadcast from rewriting every recipient's profile and its two
        indexes."""
        if next_due is None:
            step = _ended(EnrolmentStatus.COMPLETED, step_index=next_index).set("attempts", 0)
        else:
            step = _next_step(next_index, next_due)
        operations = [
            {"Update": self._keyed(keys.enrolment(enrolment), step, ConditionExpression=_under(step, claim_id))},
            {"Put": self._new_item(keys.message_item(message))},
        ]
        if recent_sends is not None:
            sent = Expression().set("recent_sends", recent_sends).set("last_email_at", message.sent_at)
            sent.add("emails_sent", 1)
            operations.append({"Update": self._keyed(keys.profile(enrolment.lead_id), sent)})
        self._transact(operations)

    def load_for_dispatch(self, lead_id: str) -> tuple[Optional[Lead], Optional[Suppression]]:
        """The lead and its suppression record, in one consistent read request."""
        found = self._get_consistent([keys.profile(lead_id), keys.suppression(lead_id)])
        lead = next((Lead.from_item(i) for i in found if keys.is_profile(i)), None)
        suppression = next((Suppression.from_item(i) for i in found if keys.is_suppression(i)), None)
        return lead, suppression

    def exit_enrolments(self, lead_id: str, sequence_ids: set[str], reason: str) -> int:
        """Take the lead out of these sequences now (those still active); returns how many.

        Each exit is conditional on the enrolment still being active, so one that finished or
        exited meanwhile keeps its own ending; a dispatcher holding a claim loses it.
        """
        exited = 0
        for item in self._query_lead(lead_id, keys.ENROL_PREFIX):
            if item.get("sequence_id") not in sequence_ids or item.get("status") != EnrolmentStatus.ACTIVE:
                continue
            end = _ended(EnrolmentStatus.EXITED, reason)
            exited += self._update_if(keys.key_of(item), end, end.eq("status", EnrolmentStatus.ACTIVE))
        return exited

    def suppress(self, suppression: Suppression) -> bool:
        """Suppress an address for good. Returns False when it already was (the first reason stays)."""
        return self._write_if("put_item", self._new_item(keys.suppression_item(suppression)))
