"""The table's stream, as Lambda delivers it: react to what was just written.

A new enrolment whose first step is due is dispatched at once (the lead-magnet delivery
does not wait for the next tick); events named in a sequence's ``entry.events`` enrol the lead;
events rescore their lead; a new handoff notifies sales; events and sent messages move the
report counters (``chalicelib.reports``). Every action here is idempotent (claims, conditional
puts, counted markers), so Lambda's redelivery of a batch is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chalicelib.clock import Clock
from chalicelib.entities import Enrolment, Event, Handoff, Message, iso
from chalicelib.errors import InvalidRequest
from chalicelib.handoff import STAGE_CHANGED, Notifier, Qualifier
from chalicelib.models import Campaign
from chalicelib.nurture.dispatcher import Dispatcher, TickReport
from chalicelib.reports import Tally
from chalicelib.store import Store, parse_stream_image

logger = logging.getLogger(__name__)


@dataclass
class StreamReport:
    records: int = 0
    dispatched: int = 0
    enrolled: int = 0
    rescored: int = 0
    stage_changes: int = 0
    handoffs: int = 0
    counted: int = 0


class StreamProcessor:
    def __init__(
        self,
        campaign: Campaign,
        store: Store,
        dispatcher: Dispatcher,
        qualifier: Qualifier,
        notifier: Notifier,
        tally: Tally,
        clock: Clock,
    ) -> None:
        self._campaign = campaign
        self._store = store
        self._dispatcher = dispatcher
        self._qualifier = qualifier
        self._notifier = notifier
        self._tally = tally
        self._clock = clock
        self._entry: dict[str, list[str]] = {}
        for sequence_id, sequence in campaign.sequences.items():
            for event_type in sequence.entry.events:
                self._entry.setdefault(event_type, []).append(sequence_id)

    def handle(self, records: Iterable[dict[str, Any]]) -> StreamReport:
        """Everything here is idempotent, so a redelivered batch (whole or in part) is harmless.

        Leads with new events are rescored once per batch, after the batch's other work, in
        the order they first appear: one Query and at most one write each.
        """
        report = StreamReport()
        tick = TickReport()
        to_rescore: dict[str, None] = {}
        for record in records:
            report.records += 1
            if record.get("eventName") not in ("INSERT", "MODIFY"):
                continue
            image = parse_stream_image(record.get("dynamodb", {}).get("NewImage") or {})
            if isinstance(image, Enrolment):
                was_due = self._became_due(record, image)
                if was_due and self._dispatcher.dispatch(image, tick):
                    report.dispatched += 1
            elif isinstance(image, Event) and record["eventName"] == "INSERT":
                report.counted += self._count(image)
                report.enrolled += self._enrol_on(image)
                if image.type != STAGE_CHANGED:  # our own writes never feed back
                    to_rescore.setdefault(image.lead_id)
            elif isinstance(image, Handoff) and record["eventName"] == "INSERT":
                report.handoffs += int(self._notifier.notify(image))
            elif isinstance(image, Message) and record["eventName"] == "INSERT":
                report.counted += self._count(image)
        for lead_id in to_rescore:
            report.rescored += 1
            if self._qualifier.rescore(lead_id) is not None:
                report.stage_changes += 1
        return report

    def _count(self, image: Event | Message) -> int:
        """Count for the reports; a record DynamoDB refuses to count is skipped, never retried:
        the reports must not hold up scoring, handoffs and sends for the rest of the shard."""
        try:
            return self._tally.observe(image)
        except InvalidRequest:
            logger.exception("report count refused for a %s record; skipped", type(image).__name__)
            return 0

    def _became_due(self, record: dict[str, Any], enrolment: Enrolment) -> bool:
        """A fresh enrolment (or one just confirmed) with its step due now, not a dispatcher's own write."""
        if enrolment.status != "active" or enrolment.due_at is None or enrolment.due_at > iso(self._clock.now()):
            return False
        if record["eventName"] == "INSERT":
            return True
        old = parse_stream_image(record.get("dynamodb", {}).get("OldImage") or {})
        return isinstance(old, Enrolment) and old.status == "awaiting_confirmation"

    def _enrol_on(self, event: Event) -> int:
        enrolled = 0
        for sequence_id in self._entry.get(event.type, []):
            first_step = self._campaign.sequences[sequence_id].steps[0]
            now = self._clock.now()
            enrolment = Enrolment(
                lead_id=event.lead_id,
                sequence_id=sequence_id,
                status="active",
                step_index=0,
                enrolled_at=iso(now),
                due_at=iso(now + first_step.delay),
            )
            enrolled += self._store.enrol(enrolment)
        return enrolled
