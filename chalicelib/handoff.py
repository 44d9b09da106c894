"""Qualification and sales handoff: rescore a lead, move its stage, hand SQLs to sales once.

``Qualifier`` runs from the stream for every lead with new events. It recomputes the score from
the lead's whole history (``chalicelib.scoring``), so redelivered or reordered records change
nothing, and writes it only when it counts more events than the stored score. A crossing into
SQL is one transaction (stage, owner, stage-change event, handoff item) conditional on the stage
it read, so it happens once.

``Notifier`` runs when the handoff item appears on the stream: it claims the handoff, then emails
the owner, publishes to the sales topic and POSTs the signed webhook, marking each as done, so a
retry repeats only what did not happen. A failing webhook never blocks the stream: it is retried
by the dispatcher's tick with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Optional, Protocol

from chalicelib.campaign_types import Campaign
from chalicelib.clock import Clock
from chalicelib.engagement import Verdict
from chalicelib.entities import Enrolment, Event, Handoff, Lead, Message, iso, parse_iso
from chalicelib.errors import NotFound, SendFailed, SendRejected, SendThrottled, ValidationFailed
from chalicelib.nurture.mailer import Mailer
from chalicelib.nurture.mime import compose, header_text, recipient
from chalicelib.nurture.rules import first_step_due, lead_zone
from chalicelib.observability import NO_METRICS, MetricsSink
from chalicelib.rendering import environment
from chalicelib.scoring import ScoredEvent, next_stage, score_lead
from chalicelib.store import LeadRecord, Store
from chalicelib.tracking import (
    EMAIL_CLICKED,
    EMAIL_OPENED,
    STAGE_CHANGED,
    counts_as_human,
    engagement_verdicts,
    is_trusted,
)
from chalicelib.vocabulary import FEEDBACK_STAGES, EnrolmentStatus, HandoffStatus, Stage, WebhookStatus

if TYPE_CHECKING:
    from chalicelib.http.bodies import StageChanged
    from chalicelib.models import StageChange

logger = logging.getLogger(__name__)

# The profile's sets of messages a person clicked and opened ("<sequence>.<step>"): what step
# conditions (``clicked:``, ``opened:``) read.
ENGAGED_ATTRIBUTES = {"clicked": EMAIL_CLICKED, "opened": EMAIL_OPENED}
HANDOFF_LEASE = timedelta(minutes=5)
WEBHOOK_TIMEOUT_SECONDS = 3.0
WEBHOOK_MAX_ATTEMPTS = 8
WEBHOOK_BACKOFF = timedelta(seconds=30)
SIGNATURE_HEADER = "X-Trellis-Signature"
TIMESTAMP_HEADER = "X-Trellis-Timestamp"


class Qualifier:
    def __init__(self, campaign: Campaign, store: Store, clock: Clock, metrics: MetricsSink = NO_METRICS) -> None:
        self._metrics = metrics
        self._campaign = campaign
        self._store = store
        self._clock = clock

    def rescore_record(self, record: LeadRecord, verdicts: Mapping[str, Verdict]) -> Optional[str]:
        """Recompute a lead's score and stage from its record as read, with its opens' and clicks'
        verdicts. Returns the new stage when it changed.

        Only a person's engagement counts (``chalicelib.engagement``): a machine's opens and
        clicks stay on the timeline and count for nothing, here and in what nurture reads of
        engagement (the profile's ``clicked`` and ``opened``, rewritten with the score). A later
        signal that shows earlier hits were a machine's (a trap hit, a burst) is a new event,
        so the lead is rescored from the corrected history once, like any other news.
        """
        lead, history = record.lead, record.events
        # Our own stage_changed events are not evidence: counting them would make every
        # redelivery after a stage change look like news.
        # Nor is what nobody vouches for: a stranger's submission or page view (tracking.TRUSTED).
        events = [e for e in history if e.type != STAGE_CHANGED and is_trusted(e.data)]
        if len(events) <= lead.score_events:
            return None  # already scored with everything we see (a redelivery)
        human = [e for e in events if counts_as_human(e, verdicts)]
        scoring = self._campaign.scoring
        counted = [
            ScoredEvent(e.event_id, e.type, parse_iso(e.at), _url(e))
            for e in human
            if lead.score_reset_at is None or e.at > lead.score_reset_at
        ]
        score = score_lead(scoring, lead, counted, lead_zone(self._campaign, lead))
        fields: dict[str, Any] = {
            "score": Decimal(str(score.value)),
            "score_engagement": Decimal(str(round(score.engagement, 6))),
            "score_fit": Decimal(str(score.fit)),
            "score_as_of": iso(score.as_of) if score.as_of else None,
            "score_breakdown": {
                "fit": {k: Decimal(str(v)) for k, v in score.fit_points.items()},
                "engagement": {k: Decimal(str(v)) for k, v in score.engagement_points.items()},
            },
        }
        fields = {k: v for k, v in fields.items() if v is not None}
        # A person's latest open or click (what a segment's engaged_within reads); None removes it
        # when a later signal showed every hit was a machine's.
        fields["engaged_at"] = max((e.at for e in human if e.type in ENGAGED_ATTRIBUTES.values()), default=None)
        lead_id = lead.lead_id
        engaged = {
            attribute: {
                str(e.data.get("message_id")) for e in human if e.type == event_type and e.data.get("message_id")
            }
            for attribute, event_type in ENGAGED_ATTRIBUTES.items()
        }
        change = next_stage(scoring, lead.stage, score)
        if change is None:
            self._store.save_score(lead_id, fields, len(events), string_sets=engaged)
            return None
        at = score.as_of or self._clock.now()
        fields.update({"stage": change.stage, "stage_reason": change.reason, "stage_changed_at": iso(at)})
        stage_event = Event(
            lead_id,
            f"stage-{change.stage}-{len(events)}",  # deterministic: a racing duplicate cannot land
            STAGE_CHANGED,
            iso(at),
            {"from": lead.stage, "to": change.stage, "reason": change.reason, "score": score.value},
        )
        handoff = None
        if change.stage == Stage.SQL:
            team = self._campaign.sales.team
            owner = team[(self._store.next_round_robin() - 1) % len(team)]
            fields["owner"] = {"name": owner.name, "email": owner.email}
            handoff = Handoff(
                lead_id=lead_id,
                handoff_id=iso(at),
                at=iso(self._clock.now()),
                owner_name=owner.name,
                owner_email=owner.email,
                reason=change.reason,
                score=score.value,
            )
        written = self._store.save_score(
            lead_id,
            fields,
            len(events),
            string_sets=engaged,
            from_stage=lead.stage,
            stage_event=stage_event,
            handoff=handoff,
        )
        if written and handoff is not None:
            # Counted here, where the one write that creates the handoff succeeded: a redelivered
            # record finds the score (or the stage) moved on and writes nothing.
            self._metrics.add("SqlHandoffs")
        if written and change.stage == Stage.SQL:
            # Sales has the lead now: end its nurture at once (every send re-checks the stage too).
            ending = {sid for sid, seq in self._campaign.sequences.items() if Stage.SQL in seq.exit.stages}
            self._store.exit_enrolments(lead_id, ending, "stage:sql")
        return change.stage if written else None


def _url(event: Event) -> Optional[str]:
    url = event.data.get("url")
    return url if isinstance(url, str) else None


class Publisher(Protocol):
    def publish(self, **kwargs: Any) -> Any: ...


class Webhook:
    """POSTs JSON signed with HMAC-SHA256 over ``<timestamp>.<body>``."""

    def __init__(self, url: str, secret: bytes) -> None:
        self.url = url
        self._secret = secret

    def sign(self, timestamp: str, body: bytes) -> str:
        digest = hmac.new(self._secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return f"sha256={digest}"

    def post(self, payload: dict[str, Any]) -> bool:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(time.time()))
        request = urllib.request.Request(  # noqa: S310 - the URL is the campaign's configured https/http webhook
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: self.sign(timestamp, body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
                return 200 <= int(response.status) < 300
        except (urllib.error.URLError, TimeoutError, OSError):
            return False


class Notifier:
    def __init__(
        self,
        campaign: Campaign,
        store: Store,
        mailer: Mailer,
        sns: Callable[[], Publisher],  # made on the first handoff: most cold starts publish nothing
        topic_arn: str,
        webhook: Optional[Webhook],
        clock: Clock,
        metrics: MetricsSink = NO_METRICS,
    ) -> None:
        self._metrics = metrics
        self._campaign = campaign
        self._store = store
        self._mailer = mailer
        self._make_sns = sns
        self._topic_arn = topic_arn
        self._webhook = webhook
        self._clock = clock

    @property
    def _sns(self) -> Publisher:
        return self._make_sns()

    def notify(self, handoff: Handoff) -> bool:
        """Send what has not been sent for this handoff. False when another invocation has it."""
        now = self._clock.now()
        claim_id = secrets.token_hex(8)
        if not self._store.claim_handoff(handoff, claim_id, iso(now), iso(now + HANDOFF_LEASE)):
            return False
        # The whole record (one Query, as profile and events were): the email's timeline tells a
        # person's opens and clicks from a machine's, judged with the lead's sends.
        record = self._store.lead_record(handoff.lead_id)
        if record is None:
            self._store.mark_handoff(handoff, claim_id, {"status": "lead_gone"}, remove_due=True)
            return True
        lead = record.lead
        payload = self._payload(handoff, lead)
        raw = self._email_or_none(handoff, record) if handoff.email_sent_at is None else None
        if raw is not None:
            try:
                self._mailer.send(self._campaign.sender.from_address, recipient(handoff.owner_email), raw)
            except (SendThrottled, SendFailed, SendRejected):
                self._metrics.add("SendFailures")
                logger.warning("handoff email for %s failed; the lease will retry it", handoff.lead_id)
                raise
            self._metrics.add("EmailsSent")
            self._store.mark_handoff(handoff, claim_id, {"email_sent_at": iso(now)})
        if handoff.sns_sent_at is None:
            self._sns.publish(
                TopicArn=self._topic_arn,
                Subject=f"New SQL for {handoff.owner_name}"[:100],
                Message=json.dumps(payload, sort_keys=True),
            )
            self._store.mark_handoff(handoff, claim_id, {"sns_sent_at": iso(now)})
        if self._webhook is not None and handoff.webhook_status != WebhookStatus.DELIVERED:
            attempts = handoff.webhook_attempts + 1
            if self._webhook.post(payload):
                self._store.mark_handoff(
                    handoff,
                    claim_id,
                    {"webhook_status": WebhookStatus.DELIVERED, "webhook_attempts": attempts},
                    remove_due=True,
                )
            elif attempts >= WEBHOOK_MAX_ATTEMPTS:
                logger.error("webhook for handoff %s failed %d times; giving up", handoff.lead_id, attempts)
                self._store.mark_handoff(
                    handoff,
                    claim_id,
                    {
                        "webhook_status": WebhookStatus.FAILED,
                        "webhook_attempts": attempts,
                        "status": HandoffStatus.NOTIFIED,
                    },
                    remove_due=True,
                )
                return True
            else:
                due = now + WEBHOOK_BACKOFF * (2 ** (attempts - 1))
                self._store.schedule_webhook_retry(handoff, claim_id, iso(due), attempts)
                return True
        self._store.mark_handoff(handoff, claim_id, {"status": HandoffStatus.NOTIFIED}, remove_due=True)
        return True

    def _email_or_none(self, handoff: Handoff, record: LeadRecord) -> Optional[bytes]:
        """The owner's email, or None when the lead's data cannot make one (``Unsendable``, or a
        template that breaks on it): SNS and the webhook still go. Logged without the error's
        message, which may quote the lead's data."""
        try:
            return self._email(handoff, record)
        except Exception as e:
            self._metrics.add("ItemErrors")
            frames = "".join(traceback.format_tb(e.__traceback__))
            logger.error(
                "handoff email for %s cannot be built; SNS and the webhook still go",
                handoff.lead_id,
                extra={"error_type": type(e).__name__, "error_frames": frames},
            )
            return None

    def _payload(self, handoff: Handoff, lead: Lead) -> dict[str, Any]:
        return {
            "type": "lead.sql",
            "campaign": self._campaign.name,
            "lead_id": lead.lead_id,
            "email": lead.email,
            "profile": lead.profile,
            "custom": lead.custom,
            "score": handoff.score,
            "reason": handoff.reason,
            "owner": {"name": handoff.owner_name, "email": handoff.owner_email},
            "first_touch": lead.first_touch.to_item(),
            "handoff_at": handoff.at,
        }

    def _email(self, handoff: Handoff, record: LeadRecord) -> bytes:
        return handoff_email(
            self._campaign, handoff, record.lead, record.events, self._clock.now(), messages=record.messages
        )


TIMELINE_LIMIT = 50


def handoff_email(
    campaign: Campaign,
    handoff: Handoff,
    lead: Lead,
    events: list[Event],
    now: datetime,
    *,
    messages: Sequence[Message] = (),
) -> bytes:
    """The owner's email: who the lead is, why it is an SQL, its timeline (latest first).

    A machine's opens and clicks (link scanners, Apple's proxy: ``chalicelib.engagement``, judged
    with the lead's sent ``messages``) are left out of the timeline and only counted: sales must
    not read a scanner's sweep as interest, and a sweep of every link would crowd the person's
    own events out of the latest ``TIMELINE_LIMIT``.

    Company and names are the lead's own input: the Subject gets them through ``compose``'s
    cleaning, the text part through ``one_line``, so a line break cannot forge a header or a line.
    """
    verdicts = engagement_verdicts(events, messages, campaign.engagement)
    people = [e for e in events if counts_as_human(e, verdicts)]
    context = {
        "handoff": handoff,
        "lead": lead,
        "events": sorted(people, key=lambda e: e.at, reverse=True)[:TIMELINE_LIMIT],
        "machine_hits": len(events) - len(people),
        "campaign_title": campaign.title or campaign.name,
        "one_line": _one_line,
    }
    env = environment()
    return compose(
        sender=campaign.sender,
        to=handoff.owner_email,
        subject=f"New sales-qualified lead: {lead.profile.get('company') or lead.email}",
        text=env.get_template("email/handoff.txt").render(**context),
        html=env.get_template("email/handoff.html").render(**context),
        reference=f"{lead.lead_id}/handoff",
        now=now,
    )


def _one_line(value: Any) -> str:
    """A value for the text part: nothing it holds can start a new line there."""
    return "" if value is None else header_text(str(value))


class SalesFeedback:
    """Sales moves a lead on (opportunity, customer), out (disqualified) or back to nurture.

    Recycling resets the score by a simple rule: engagement before the recycle no longer counts,
    fit still does; the lead is enrolled in the campaign's recycle sequence when it has one.
    """

    def __init__(self, campaign: Campaign, store: Store, clock: Clock) -> None:
        self._campaign = campaign
        self._store = store
        self._clock = clock

    def set_stage(self, lead_id: str, stage: str, note: Optional[str]) -> Lead:
        if stage not in FEEDBACK_STAGES:
            raise ValidationFailed({"stage": f"must be one of {', '.join(FEEDBACK_STAGES)}"})
        lead = self._store.get_lead(lead_id)
        if lead is None:
            raise NotFound("lead", lead_id)
        now = self._clock.now()
        reason = f"sales feedback{': ' + note if note else ''}"
        fields: dict[str, Any] = {"stage": stage, "stage_reason": reason, "stage_changed_at": iso(now)}
        enrolment = None
        if stage == Stage.RECYCLED:
            fields.update(
                {
                    "score_reset_at": iso(now),
                    "score": Decimal(str(lead.score_fit)),
                    "score_engagement": Decimal(0),
                }
            )
            recycle = self._campaign.sales.recycle_sequence
            if recycle is not None:
                due = first_step_due(self._campaign.sequences[recycle], now)
                enrolment = Enrolment(lead_id, recycle, EnrolmentStatus.ACTIVE, 0, iso(now), iso(due))
                fields["sequences"] = set(lead.sequences) | {recycle}
        fields = {k: v for k, v in fields.items() if v is not None}
        event = Event(
            lead_id, secrets.token_hex(8), STAGE_CHANGED, iso(now), {"from": lead.stage, "to": stage, "reason": reason}
        )
        if not self._store.set_stage(lead_id, fields, event, enrolment):
            raise NotFound("lead", lead_id)
        updated = self._store.get_lead(lead_id)
        assert updated is not None
        return updated

    def change_stage(self, lead_id: str, change: StageChange) -> StageChanged:
        """``PATCH /admin/leads/{lead_id}``: the answer is the lead's stage and score after it."""
        from chalicelib.http.bodies import StageChanged

        lead = self.set_stage(lead_id, change.stage, change.note)
        return StageChanged(lead_id=lead.lead_id, stage=lead.stage, stage_reason=lead.stage_reason, score=lead.score)
