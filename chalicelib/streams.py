"""The table's stream, as Lambda delivers it: react to what was just written.

A new enrolment whose first step is due is dispatched at once (the lead-magnet delivery
does not wait for the next tick); events named in a sequence's ``entry.events`` enrol the lead;
events rescore their lead; a new handoff notifies sales; events and sent messages move the
report counters (``chalicelib.reports``). Every action here is idempotent (claims, conditional
puts, counted markers), so Lambda's redelivery of a batch is harmless.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from chalicelib.campaign_types import Campaign
from chalicelib.clock import Clock
from chalicelib.entities import Enrolment, Event, Handoff, Message, iso
from chalicelib.errors import InvalidRequest
from chalicelib.handoff import Notifier, Qualifier
from chalicelib.nurture.dispatcher import Dispatcher, TickReport
from chalicelib.nurture.rules import first_step_due
from chalicelib.observability import correlated
from chalicelib.reports import Tally
from chalicelib.store import Store, parse_stream_image
from chalicelib.tracking import ENGAGEMENT_KINDS, STAGE_CHANGED, engagement_verdicts, is_trusted
from chalicelib.vocabulary import BROADCAST_SEQUENCE_PREFIX, EnrolmentStatus

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
    # Where Lambda must resume the batch (the first record not fully done); None when all were.
    failed_sequence_number: Optional[str] = None


class StreamBatchFailed(Exception):
    """Raised, when partial batch responses are off, so that Lambda retries the whole batch."""


def lambda_response(report: StreamReport, report_batch_failures: bool) -> dict[str, Any]:
    """The handler's answer to Lambda's event source mapping.

    With ``ReportBatchItemFailures`` on the mapping, ``batchItemFailures`` names the record to
    resume from. Without it Lambda ignores the answer and would drop a failed record, so the
    handler raises instead and the whole batch comes again (harmless: everything is idempotent).
    """
    if report.failed_sequence_number is None:
        return {**vars(report), "batchItemFailures": []}
    if not report_batch_failures:
        raise StreamBatchFailed(f"stream record {report.failed_sequence_number} failed; retry the batch")
    return {**vars(report), "batchItemFailures": [{"itemIdentifier": report.failed_sequence_number}]}


def _event_id(record: dict[str, Any]) -> str:
    return str(record.get("eventID", ""))


def _note(sent: list[tuple[int, Message]], index: int, message: Message) -> None:
    sent.append((index, message))


def _sequence_number(record: dict[str, Any]) -> str:
    return str(record.get("dynamodb", {}).get("SequenceNumber", ""))


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

    def handle(self, records: Sequence[dict[str, Any]]) -> StreamReport:
        """Everything here is idempotent, so a redelivered batch (whole or in part) is harmless.

        Leads with new events are rescored once per batch, after the batch's other work, in
        the order they first appear: one Query and at most one write each.

        A record that fails stops the batch there: the report names its sequence number, and
        every record before it is fully done (its lead rescored too), so Lambda can resume from
        it (``ReportBatchItemFailures``). A lead whose rescoring fails moves that point back to
        the lead's first record in the batch; rescoring re-reads all of a lead's events, so the
        redelivery from there redoes exactly what is missing.
        """
        report = StreamReport()
        tick = TickReport()
        first_record_of: dict[str, int] = {}  # lead to rescore -> index of its first event record
        sent: list[tuple[int, Message]] = []  # new messages, counted together after the loop
        failed_at: Optional[int] = None
        for index, record in enumerate(records):
            report.records += 1
            try:
                with correlated(_event_id(record)):
                    lead_to_rescore = self._handle_record(record, report, tick, functools.partial(_note, sent, index))
            except Exception:
                logger.exception("stream record %s failed; the batch resumes from it", _sequence_number(record))
                failed_at = index
                break
            if lead_to_rescore is not None:
                first_record_of.setdefault(lead_to_rescore, index)
        if sent:
            try:
                report.counted += self._count_sent([message for _, message in sent])
            except Exception:
                logger.exception("counting sent emails failed; the batch resumes from record %s", sent[0][0])
                failed_at = sent[0][0]
        for lead_id, first_index in first_record_of.items():
            if failed_at is not None and first_index >= failed_at:
                break  # its events come again with the redelivery (first appearances are in order)
            try:
                with correlated(_event_id(records[first_index])):  # the record that asked for it
                    changed = self._judge_and_rescore(lead_id, report)
            except Exception:
                logger.exception("rescoring failed; the batch resumes from record %s", first_index)
                failed_at = first_index
                break
            report.rescored += 1
            if changed is not None:
                report.stage_changes += 1
        if failed_at is not None:
            report.failed_sequence_number = _sequence_number(records[failed_at])
        return report

    def _judge_and_rescore(self, lead_id: str, report: StreamReport) -> Optional[str]:
        """One read of the lead's partition: its opens and clicks judged from the whole history
        (human or machine), the reports' human and machine counts brought in line with the
        verdicts, then the rescore. Both are idempotent: a redelivery changes nothing."""
        record = self._store.lead_record(lead_id)
        if record is None:
            return None  # erased since
        verdicts = engagement_verdicts(record.events, record.messages, self._campaign.engagement)
        report.counted += self._tally.sync_engagement(record, verdicts)
        return self._qualifier.rescore_record(record, verdicts)

    def _handle_record(
        self, record: dict[str, Any], report: StreamReport, tick: TickReport, on_sent: Callable[[Message], object]
    ) -> Optional[str]:
        """Do a record's own work (a new message: handed to ``on_sent``, counted with the
        batch's); the lead it asks to rescore, if any."""
        if record.get("eventName") not in ("INSERT", "MODIFY"):
            return None
        image = parse_stream_image(record.get("dynamodb", {}).get("NewImage") or {})
        if isinstance(image, Enrolment):
            report.counted += self._count(image)  # an exit, by reason
            was_due = self._became_due(record, image)
            if was_due and self._dispatcher.dispatch(image, tick):
                report.dispatched += 1
        elif isinstance(image, Event) and record["eventName"] == "INSERT":
            report.counted += self._count(image)
            report.enrolled += self._enrol_on(image)
            if image.type != STAGE_CHANGED:  # our own writes never feed back
                return image.lead_id
        elif isinstance(image, Handoff) and record["eventName"] == "INSERT":
            report.handoffs += int(self._notifier.notify(image))
        elif isinstance(image, Message) and record["eventName"] == "INSERT":
            on_sent(image)
        return None

    def _count_sent(self, messages: list[Message]) -> int:
        """A batch's sent emails counted together; refused by DynamoDB: skipped, as ``_count``."""
        try:
            return self._tally.sent(messages)
        except InvalidRequest:
            logger.exception("report count refused for %d sent emails; skipped", len(messages))
            return 0

    def _count(self, image: Event | Message | Enrolment) -> int:
        """Count for the reports; a record DynamoDB refuses to count is skipped, never retried:
        the reports must not hold up scoring, handoffs and sends for the rest of the shard."""
        try:
            return self._tally.observe(image)
        except InvalidRequest:
            logger.exception("report count refused for a %s record; skipped", type(image).__name__)
            return 0

    def _became_due(self, record: dict[str, Any], enrolment: Enrolment) -> bool:
        """A fresh enrolment (or one just confirmed) with its step due now, not a dispatcher's own write."""
        if (
            enrolment.status != EnrolmentStatus.ACTIVE
            or enrolment.sequence_id.startswith(BROADCAST_SEQUENCE_PREFIX)  # the dispatcher paces those
            or enrolment.due_at is None
            or enrolment.due_at > iso(self._clock.now())
        ):
            return False
        if record["eventName"] == "INSERT":
            return True
        old = parse_stream_image(record.get("dynamodb", {}).get("OldImage") or {})
        return isinstance(old, Enrolment) and old.status == EnrolmentStatus.AWAITING_CONFIRMATION

    def _enrol_on(self, event: Event) -> int:
        enrolled = 0
        if not is_trusted(event.data) or event.type in ENGAGEMENT_KINDS:
            # Nobody vouches for it, or it may be a machine's open or click: it enrols nobody.
            return 0
        for sequence_id in self._entry.get(event.type, []):
            now = self._clock.now()
            enrolment = Enrolment(
                lead_id=event.lead_id,
                sequence_id=sequence_id,
                status=EnrolmentStatus.ACTIVE,
                step_index=0,
                enrolled_at=iso(now),
                due_at=iso(first_step_due(self._campaign.sequences[sequence_id], now)),
            )
            enrolled += self._store.enrol(enrolment)
        return enrolled
