"""Form and lead-magnet submissions: validate, defend against bots, upsert the lead in one write."""

from __future__ import annotations

import logging
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional, Protocol

from chalicelib.campaign_types import Campaign, Form
from chalicelib.clock import Clock
from chalicelib.entities import (
    GRANTED,
    ConsentRecord,
    Enrolment,
    Event,
    Lead,
    Registration,
    Touch,
    iso,
    lead_id_for,
)
from chalicelib.errors import Conflict, InvalidToken, NotFound, ValidationFailed, WriteConflict, field_errors
from chalicelib.nurture.rules import CONFIRM_SEQUENCE, EventTimes, first_step
from chalicelib.nurture.schedule import EventSchedule
from chalicelib.observability import NO_METRICS, MetricsSink
from chalicelib.store import CaptureWrite, Store
from chalicelib.tracking import CLAIMED, CREATOR, MAILBOX, TRUST_KEY, VOID, TokenSigner
from chalicelib.vocabulary import CONSENT_FIELD, LEAD_TOKEN_FIELD, RENDERED_AT_FIELD, ConsentStatus, EventType

if TYPE_CHECKING:  # pydantic (the submissions' models) loads when the capture service is built
    from pydantic import BaseModel

    from chalicelib.models import NormalisedEmail, Tracking

logger = logging.getLogger(__name__)

SUBMISSION_EVENT = EventType.FORM_SUBMITTED
# rendered_at: milliseconds since the epoch as the page's script wrote it (Date.now()), nothing else.
_EPOCH_MILLIS = re.compile(r"^\d{1,16}(\.\d{1,6})?$")
_CONFLICT_RETRIES = 3
_TRUE_VALUES = {"on", "true", "1", "yes", "y"}


class AssetLinks(Protocol):
    def download_url(self, asset_key: str, lifetime_seconds: int) -> str: ...


@dataclass(frozen=True)
class RequestMeta:
    user_agent: Optional[str]
    source_ip: Optional[str]
    # A JSON post comes from a script, which always sets rendered_at; a plain HTML post may come
    # from a page without JavaScript, which cannot.
    scripted: bool = False


@dataclass(frozen=True)
class CaptureResult:
    lead_id: str
    lead_token: str
    # Whether the lead is new: for logs and metrics only, never for the answer (which would tell
    # a stranger who is a lead).
    created: bool
    thank_you_url: str
    download_url: Optional[str] = None
    bot: bool = False


class Capture:
    def __init__(
        self,
        campaign: Campaign,
        store: Store,
        signer: TokenSigner,
        assets: AssetLinks,
        clock: Clock,
        metrics: MetricsSink = NO_METRICS,
        schedule: Optional[EventSchedule] = None,
    ) -> None:
        self._schedule = schedule or EventSchedule(campaign, store)
        self._campaign = campaign
        self._metrics = metrics
        self._store = store
        self._signer = signer
        self._assets = assets
        self._clock = clock
        from chalicelib.models import submission_model

        self._models: dict[str, type[BaseModel]] = {
            form_id: submission_model(form) for form_id, form in campaign.forms.items()
        }

    def form(self, form_id: str) -> Form:
        form = self._campaign.forms.get(form_id)
        if form is None:
            raise NotFound("form", form_id)
        return form

    def submit(self, form_id: str, fields: Mapping[str, Any], meta: RequestMeta) -> CaptureResult:
        form = self.form(form_id)
        now = self._clock.now()
        values, tracking, consent_given = self._validate(form_id, form, fields)
        email: NormalisedEmail = values.pop("email")
        lead_id = lead_id_for(email.identity)

        bot_reason = self._bot_reason(fields, now, meta)
        if bot_reason is not None:
            self._store.count_bot(form_id, bot_reason)
            self._metrics.add("BotsBlocked")
            logger.info("bot blocked", extra={"form_id": form_id, "reason": bot_reason})
            # The answer a person gets, with a token that looks the same and does nothing, so the
            # bot learns nothing; nothing is stored.
            return self._result(form, lead_id, now, created=True, trust=VOID, bot=True)

        self._check_open(form, now)
        proven = self._proves_mailbox(fields.get(LEAD_TOKEN_FIELD), lead_id, now)
        for _ in range(_CONFLICT_RETRIES):
            known = self._store.get_lead(lead_id)
            write = self._plan(form_id, form, now, lead_id, email, values, tracking, consent_given, meta, known, proven)
            try:
                self._store.save_capture(write)
            except WriteConflict:
                if write.registration is not None:
                    self._check_room(form)  # a full event refused it: 409, nothing stored
                continue  # someone changed the lead between our read and write: read again
            if known is None:
                self._metrics.add("LeadsCaptured")
            # The lead id (a hash), never the address or any field's value.
            logger.info("lead captured", extra={"lead_id": lead_id, "form_id": form_id, "new_lead": known is None})
            trust = CREATOR if known is None else MAILBOX if proven else CLAIMED
            return self._result(form, lead_id, now, created=known is None, trust=trust)
        raise WriteConflict(f"lead kept changing during {_CONFLICT_RETRIES} attempts")

    # -- steps --------------------------------------------------------------------------------

    def _check_open(self, form: Form, now: datetime) -> None:
        """An event's registration closes when the event ends."""
        if form.event is None:
            return
        scheduled = self._schedule.get(form.event)
        assert scheduled is not None  # the campaign's validation: an event form's event exists
        if scheduled.cancelled:
            raise Conflict(f"event {form.event!r} is cancelled: registration is closed")
        if now >= scheduled.ends_at:
            raise Conflict(f"event {form.event!r} is over: registration is closed")

    def _event_times(self, form: Form) -> Optional[EventTimes]:
        scheduled = self._schedule.get(form.event) if form.event else None
        return EventTimes(scheduled.starts_at, scheduled.ends_at) if scheduled is not None else None

    def _check_room(self, form: Form) -> None:
        assert form.event is not None
        capacity = self._campaign.events[form.event].capacity
        if capacity is not None and self._store.registration_count(form.event) >= capacity:
            raise Conflict(f"event {form.event!r} is full: all {capacity} places are taken")

    def _validate(self, form_id: str, form: Form, fields: Mapping[str, Any]) -> tuple[dict[str, Any], Tracking, bool]:
        from pydantic import ValidationError

        from chalicelib.models import Tracking

        # An empty HTML input means "not given", not "given as empty".
        cleaned = {k: v for k, v in fields.items() if not (isinstance(v, str) and not v.strip())}
        errors: dict[str, str] = {}
        values: dict[str, Any] = {}
        tracking = Tracking()
        try:
            values = dict(self._models[form_id].model_validate(cleaned))
        except ValidationError as e:
            errors.update(field_errors(e))
        try:
            tracking = Tracking.model_validate(cleaned)
        except ValidationError as e:
            errors.update(field_errors(e))
        consent_given = _truthy(cleaned.get(CONSENT_FIELD))
        if form.consent is not None and form.consent.required and not consent_given:
            errors[CONSENT_FIELD] = "consent is required to sign up with this form"
        if errors:
            raise ValidationFailed(errors)
        return values, tracking, consent_given and form.consent is not None

    def _proves_mailbox(self, token: Any, lead_id: str, now: datetime) -> bool:
        """Whether the submission carries a token from one of this lead's own emails."""
        if not isinstance(token, str) or not token or len(token) > 4096:
            return False
        try:
            claim = self._signer.lead_from_token(token, now)
        except InvalidToken:
            return False
        return claim.trust == MAILBOX and claim.lead_id == lead_id

    def _bot_reason(self, fields: Mapping[str, Any], now: datetime, meta: RequestMeta) -> Optional[str]:
        defence = self._campaign.bot_defence
        honeypot = fields.get(defence.honeypot_field)
        # Anything at all in the hidden field, 0 and false included, is a bot's doing.
        if honeypot is not None and honeypot != "":
            return "honeypot"
        rendered_at = fields.get(RENDERED_AT_FIELD)
        if rendered_at is None or rendered_at == "":
            # A page without JavaScript cannot set it: the honeypot alone judges a plain HTML post.
            return "no_timestamp" if meta.scripted else None
        rendered = _epoch_seconds(rendered_at)
        if rendered is None:
            return "bad_timestamp"
        elapsed = now.timestamp() - rendered
        if elapsed < 0:
            return "future_timestamp"
        if elapsed < defence.min_fill_seconds:
            return "too_fast"
        return None

    def _plan(
        self,
        form_id: str,
        form: Form,
        now: datetime,
        lead_id: str,
        email: NormalisedEmail,
        values: dict[str, Any],
        tracking: Tracking,
        consent_given: bool,
        meta: RequestMeta,
        known: Optional[Lead],
        proven: bool,
    ) -> CaptureWrite:
        at = iso(now)
        touch = Touch(at=at, form_id=form_id, magnet=form.magnet, **tracking.attribution())
        profile: dict[str, Any] = {k: v for k, v in values.items() if k in form.fields and v is not None}
        if tracking.timezone:
            profile["timezone"] = tracking.timezone
        custom: dict[str, Any] = {k: v for k, v in values.items() if k in form.custom_fields and v is not None}
        # Anyone can type an address: without proof, a submission for a known lead only fills in
        # what is missing; what it would change is kept as a proposal on its timeline event.
        trusted = known is None or proven
        proposed: dict[str, Any] = {}
        if not trusted:
            assert known is not None
            profile, proposed_profile = _split_new(profile, known.profile | {"timezone": known.timezone})
            custom, proposed_custom = _split_new(custom, known.custom)
            proposed = {**proposed_profile, **{f"cf_{k}": v for k, v in proposed_custom.items()}}

        consent = None
        if consent_given and form.consent is not None:
            status = ConsentStatus.PENDING_CONFIRMATION if form.double_opt_in else ConsentStatus.GRANTED
            if known is not None and known.consent is not None and known.consent.status == GRANTED:
                status = GRANTED  # a confirmed lead stays confirmed when they sign up again
            consent = ConsentRecord(
                status=status, version=form.consent.version, text=form.consent.text, form_id=form_id, at=at
            )
            if not trusted and known is not None and known.consent is not None and known.consent.status == GRANTED:
                consent = None  # the lead's own consent record stays; this one is on the event

        # Topics come with marketing consent; a stranger's submission cannot turn back on one the
        # lead turned off (only the lead can: its preference centre, or a submission it proves).
        topics: tuple[str, ...] = ()
        if consent_given and form.consent is not None:
            turned_off = () if trusted or known is None else known.topics_off
            topics = tuple(t for t in form.topics if t not in turned_off)

        enrolments = []
        pending = consent is not None and consent.status == ConsentStatus.PENDING_CONFIRMATION
        if form.sequence is not None and (known is None or form.sequence not in known.sequences):
            first_index, first_due = first_step(
                self._campaign, self._campaign.sequences[form.sequence], now, self._event_times(form)
            )
            if first_due is not None:  # else every step's time has passed (a registration too late for them)
                enrolments.append(
                    Enrolment(
                        lead_id=lead_id,
                        sequence_id=form.sequence,
                        status="awaiting_confirmation" if pending else "active",
                        step_index=first_index,
                        enrolled_at=at,
                        due_at=None if pending else iso(first_due),
                    )
                )
        if pending and (known is None or CONFIRM_SEQUENCE not in known.sequences):
            # The confirmation email goes through the dispatcher like every other email.
            enrolments.append(
                Enrolment(
                    lead_id=lead_id,
                    sequence_id=CONFIRM_SEQUENCE,
                    status="active",
                    step_index=0,
                    enrolled_at=at,
                    due_at=at,
                )
            )
        expires_at = None
        if pending and known is None and self._campaign.confirmation is not None:
            expires_at = int((now + self._campaign.confirmation.expires_after).timestamp())

        stage: Optional[str] = None
        if known is None:
            stage = form.stage
        elif trusted and known.stage == "subscriber" and form.stage == "lead":
            stage = "lead"

        event = Event(
            lead_id=lead_id,
            event_id=secrets.token_hex(8),
            type=SUBMISSION_EVENT,
            at=at,
            data={
                "form_id": form_id,
                "magnet": form.magnet,
                "fields": sorted(profile) + sorted(custom),
                "consent": consent_given and form.consent is not None,
                "consent_version": form.consent.version if consent_given and form.consent is not None else None,
                "topics": list(topics) or None,
                # A stranger's submission scores nothing and moves no stage (tracking.TRUSTED).
                TRUST_KEY: CREATOR if known is None else MAILBOX if proven else CLAIMED,
                "proposed_changes": proposed or None,
                "user_agent": (meta.user_agent or "")[:512] or None,
                "ip_hash": self._signer.pseudonym(meta.source_ip) if meta.source_ip else None,
                **tracking.attribution(),
            },
        )
        registration = registration_event = None
        if form.event is not None and (known is None or form.event not in known.registered_for):
            source = tracking.attribution().get("utm_source") or "direct"
            registration = Registration(form.event, lead_id, at, form_id, source)
            registration_event = Event(
                lead_id=lead_id,
                event_id=secrets.token_hex(8),
                type=EventType.EVENT_REGISTERED,
                at=at,
                data={"event": form.event, "form_id": form_id, "source": source, TRUST_KEY: event.data[TRUST_KEY]},
            )
        return CaptureWrite(
            lead_id=lead_id,
            now=at,
            email=email.address,
            email_identity=email.identity,
            # Only a new lead or the mailbox's owner sets the address mail goes to (its spelling).
            email_is_new=trusted,
            touch=touch,
            event=event,
            known_stage=None if known is None else known.stage,
            stage=stage,
            profile=profile,
            custom=custom,
            consent=consent,
            magnet=form.magnet,
            form_id=form_id,
            topics=topics,
            topics_resumed=trusted,
            enrolments=enrolments,
            expires_at=expires_at,
            registration=registration,
            registration_event=registration_event,
            capacity=self._campaign.events[form.event].capacity if form.event is not None else None,
        )

    def _result(
        self, form: Form, lead_id: str, now: datetime, created: bool, trust: str, bot: bool = False
    ) -> CaptureResult:
        download_url = None
        if form.magnet is not None:
            magnet = self._campaign.magnets[form.magnet]
            download_url = self._assets.download_url(magnet.asset_key, int(magnet.link_lifetime.total_seconds()))
        return CaptureResult(
            lead_id=lead_id,
            lead_token=self._signer.lead_token(lead_id, now, trust),
            created=created,
            thank_you_url=form.thank_you_url,
            download_url=download_url,
            bot=bot,
        )


def _split_new(given: dict[str, Any], known: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``given`` split into what ``known`` lacks (to fill in) and what it would change (proposed)."""
    fill: dict[str, Any] = {}
    change: dict[str, Any] = {}
    for name, value in given.items():
        current = known.get(name)
        if current is None or current == "":
            fill[name] = value
        elif current != value:
            change[name] = value
    return fill, change


def _epoch_seconds(value: Any) -> Optional[float]:
    """rendered_at in seconds, or None when it is not a plausible Date.now() (bounded before float)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        millis = float(value) if 0 <= value < 10**16 else math.nan
    elif isinstance(value, float):
        millis = value
    elif isinstance(value, str) and _EPOCH_MILLIS.match(value.strip()):
        millis = float(value.strip())
    else:
        return None
    if not math.isfinite(millis) or millis < 0:
        return None
    return millis / 1000.0


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in _TRUE_VALUES
