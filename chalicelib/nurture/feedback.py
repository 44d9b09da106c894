"""SES feedback through SNS: permanent bounces and complaints suppress the address for good;
deliveries are counted for the per-step report."""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from chalicelib.clock import Clock
from chalicelib.entities import Event, Suppression, iso, lead_id_for
from chalicelib.errors import ValidationFailed
from chalicelib.models import normalise_email
from chalicelib.observability import NO_METRICS, MetricName, MetricsSink
from chalicelib.reports import Tally
from chalicelib.store import Store
from chalicelib.tracking import EMAIL_BOUNCED, EMAIL_COMPLAINED
from chalicelib.vocabulary import SuppressionReason

logger = logging.getLogger(__name__)
# Per recipient, counted like the tally (and SES's reputation metrics): permanent bounces only.
_METRIC_OF: dict[str, MetricName] = {"Bounce": "Bounces", "Complaint": "Complaints"}


@dataclass(frozen=True)
class FeedbackResult:
    kind: str
    suppressed: int
    ignored: int
    counted: int = 0  # deliveries counted for the report (each email once)


class Feedback:
    def __init__(self, store: Store, tally: Tally, clock: Clock, metrics: MetricsSink = NO_METRICS) -> None:
        self._metrics = metrics
        self._store = store
        self._tally = tally
        self._clock = clock

    def handle(self, raw_message: str) -> FeedbackResult:
        """One SNS message body: an SES notification (identity) or event (configuration set)."""
        try:
            notification = json.loads(raw_message)
        except (ValueError, RecursionError) as e:
            raise ValidationFailed({"message": "not JSON"}) from e
        if not isinstance(notification, dict):
            raise ValidationFailed({"message": "not a JSON object"})
        kind = str(notification.get("notificationType") or notification.get("eventType") or "")
        reference = _reference(notification.get("mail") or {})
        if kind == "Delivery":
            return FeedbackResult(kind, 0, 0, self._tally.delivered(reference, iso(self._clock.now())))
        if kind == "Bounce":
            bounce = notification.get("bounce") or {}
            if bounce.get("bounceType") != "Permanent":
                # Transient bounces (full mailbox, out of office) may deliver later: keep mailing.
                return FeedbackResult(kind, 0, len(bounce.get("bouncedRecipients") or []))
            detail = f"{bounce.get('bounceType')}/{bounce.get('bounceSubType', '')}"
            return self._suppress(
                kind, bounce.get("bouncedRecipients"), SuppressionReason.BOUNCED, detail, EMAIL_BOUNCED, reference
            )
        if kind == "Complaint":
            complaint = notification.get("complaint") or {}
            detail = str(complaint.get("complaintFeedbackType") or "complaint")
            return self._suppress(
                kind,
                complaint.get("complainedRecipients"),
                SuppressionReason.COMPLAINED,
                detail,
                EMAIL_COMPLAINED,
                reference,
            )
        return FeedbackResult(kind or "unknown", 0, 0)

    def _suppress(
        self, kind: str, recipients: Any, reason: str, detail: str, event_type: str, reference: str
    ) -> FeedbackResult:
        now = self._clock.now()
        suppressed = ignored = 0
        for recipient in recipients or []:
            address = recipient.get("emailAddress") if isinstance(recipient, dict) else None
            try:
                identity = normalise_email(str(address)).identity
            except ValueError:
                ignored += 1
                continue
            lead_id = lead_id_for(identity)
            data = {"detail": detail, "message_id": reference.rpartition("/")[2] or None}
            event = Event(lead_id, secrets.token_hex(8), event_type, iso(now), data)
            # A redelivered notification finds the address suppressed already and records nothing.
            if self._store.suppress(Suppression(lead_id, reason, iso(now), detail)):
                self._store.record_event(event)  # on the timeline, when the lead still exists
            # Counted whether or not the address was suppressed before: SES counts a complaint
            # from someone who had unsubscribed too, and so must the rate we warn about.
            self._tally.feedback(reference, event_type, iso(now))
            suppressed += 1
        if suppressed:
            self._metrics.add(_METRIC_OF[kind], suppressed)
        logger.info("ses %s: %d suppressed, %d ignored", kind, suppressed, ignored)
        return FeedbackResult(kind, suppressed, ignored)


def _reference(mail: dict[str, Any]) -> str:
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "x-trellis-reference":
            return str(header.get("value", ""))
    return ""
