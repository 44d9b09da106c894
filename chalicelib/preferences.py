"""The preference centre (``/p/{token}``): a lead chooses its topics, pauses all mail for a
while, or leaves everything. Every email carries its link beside the one-click unsubscribe.

The GET shows the choices and changes nothing (link scanners fetch every link); only the page's
POST saves, in one write with a ``preferences_changed`` event that records what was chosen,
when, from which email, and the page's wording version: the consent record for topics.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Optional

from chalicelib.campaign_types import Campaign
from chalicelib.clock import Clock
from chalicelib.entities import Event, Lead, iso, parse_iso
from chalicelib.errors import NotFound, ValidationFailed
from chalicelib.store import Store
from chalicelib.tracking import PREFERENCES_PURPOSE, TOPIC_PURPOSE, TokenSigner, Tracker
from chalicelib.vocabulary import EventType

# The page's wording, as the consent record names it; bump it when templates/pages/preferences.html
# changes what people agree to.
PAGE_VERSION = "2026-12"
PAUSE_DAYS = (30, 90)
TOPIC_FIELD_PREFIX = "topic_"
ACTION_SAVE, ACTION_LEAVE = "save", "leave"
KEEP_PAUSE = "keep"
SOURCE = "preference_centre"


@dataclass(frozen=True)
class TopicChoice:
    topic_id: str
    title: str
    description: str
    subscribed: bool


@dataclass(frozen=True)
class Preferences:
    """What the page shows: each topic on or off, the pause, whether the lead left."""

    topics: list[TopicChoice]
    paused_until: Optional[datetime]
    left: bool


@dataclass(frozen=True)
class Choice:
    """What the page's form posted."""

    leave: bool
    topics: frozenset[str] = frozenset()
    pause_days: Optional[int] = None
    keep_pause: bool = False  # the pause the lead has, as it is


def parse_choice(fields: Mapping[str, Any], topic_ids: tuple[str, ...]) -> Choice:
    """The posted form as a Choice, or ValidationFailed naming each field that is wrong.

    A checkbox posts ``topic_<id>=on`` when ticked and nothing when not; ``pause`` is empty,
    30 or 90 (days) or ``keep``; ``action`` is the button pressed.
    """
    errors: dict[str, str] = {}
    action = str(fields.get("action", ACTION_SAVE))
    if action not in (ACTION_SAVE, ACTION_LEAVE):
        errors["action"] = f"must be {ACTION_SAVE!r} or {ACTION_LEAVE!r}"
    chosen = set()
    for name, value in fields.items():
        if name in ("action", "pause"):
            continue
        topic = name[len(TOPIC_FIELD_PREFIX) :] if name.startswith(TOPIC_FIELD_PREFIX) else None
        if topic is None or topic not in topic_ids:
            errors[name] = "not a field of this page"
        elif str(value) not in ("on", "true", "1"):
            errors[name] = "a ticked box posts 'on'"
        else:
            chosen.add(topic)
    pause_days = None
    pause = str(fields.get("pause", "")).strip()
    if pause and pause != KEEP_PAUSE:
        if pause.isdigit() and int(pause) in PAUSE_DAYS:
            pause_days = int(pause)
        else:
            errors["pause"] = f"must be empty, {KEEP_PAUSE!r} or one of {', '.join(map(str, PAUSE_DAYS))} (days)"
    if errors:
        raise ValidationFailed(errors)
    return Choice(
        leave=action == ACTION_LEAVE, topics=frozenset(chosen), pause_days=pause_days, keep_pause=pause == KEEP_PAUSE
    )


class PreferenceCentre:
    def __init__(self, campaign: Campaign, store: Store, signer: TokenSigner, tracker: Tracker, clock: Clock) -> None:
        self._campaign = campaign
        self._store = store
        self._signer = signer
        self._tracker = tracker
        self._clock = clock

    def topic_ids(self) -> tuple[str, ...]:
        return tuple(self._campaign.topics)

    def show(self, token: str) -> Preferences:
        """The lead's choices as they stand; changes nothing."""
        lead, _ = self._lead(token)
        return self._preferences(lead)

    def save(self, token: str, fields: Mapping[str, Any]) -> Preferences:
        """Save what the form posted; leaving is the one-click unsubscribe (for good)."""
        lead, message_id = self._lead(token)
        choice = parse_choice(fields, self.topic_ids())
        if choice.leave:
            self._tracker.unsubscribe_lead(lead.lead_id, message_id)
            return self._preferences(self._store.get_lead(lead.lead_id) or lead, left=True)
        now = self._clock.now()
        topics_on = sorted(choice.topics)
        topics_off = sorted(set(self.topic_ids()) - choice.topics)
        paused_until = iso(now + timedelta(days=choice.pause_days)) if choice.pause_days else None
        if choice.keep_pause and lead.paused_until is not None and parse_iso(lead.paused_until) > now:
            paused_until = lead.paused_until
        data: dict[str, Any] = {
            "topics_on": topics_on,
            "topics_off": topics_off,
            "paused_until": paused_until,
            "source": SOURCE,
            "page_version": PAGE_VERSION,
            "message_id": message_id or None,
        }
        event = Event(lead.lead_id, secrets.token_hex(8), EventType.PREFERENCES_CHANGED, iso(now), data)
        if not self._store.save_preferences(lead.lead_id, topics_on, topics_off, paused_until, event):
            raise NotFound("lead", lead.lead_id)
        saved = self._store.get_lead(lead.lead_id)
        if saved is None:
            raise NotFound("lead", lead.lead_id)
        return self._preferences(saved)

    def topic_of(self, token: str) -> str:
        """The title of the topic a footer's "unsubscribe from <topic>" link names; changes nothing."""
        return self._topic_link(token)[3]

    def leave_topic(self, token: str) -> str:
        """The one topic off, with a preferences_changed event; idempotent. Returns its title."""
        lead_id, message_id, topic_id, title = self._topic_link(token)
        now = self._clock.now()
        data = {"topics_off": [topic_id], "source": "topic_unsubscribe", "message_id": message_id or None}
        event = Event(lead_id, secrets.token_hex(8), EventType.PREFERENCES_CHANGED, iso(now), data)
        self._store.turn_topic_off(lead_id, topic_id, event)  # False: off already, nothing to do
        return title

    def _topic_link(self, token: str) -> tuple[str, str, str, str]:
        """(lead id, message id, topic id, topic title) of a topic link whose lead exists."""
        claims = self._signer.verify(TOPIC_PURPOSE, token, self._clock.now())
        topic_id = str(claims.get("topic") or "")
        topic = self._campaign.topics.get(topic_id)
        lead_id = str(claims.get("lead") or "")
        if topic is None or not lead_id or self._store.get_lead(lead_id) is None:
            raise NotFound("topic" if topic is None else "lead", topic_id if topic is None else lead_id)
        return lead_id, str(claims.get("msg") or ""), topic_id, topic.title

    def _lead(self, token: str) -> tuple[Lead, str]:
        claims = self._signer.verify(PREFERENCES_PURPOSE, token, self._clock.now())
        lead_id, message_id = str(claims.get("lead") or ""), str(claims.get("msg") or "")
        lead = self._store.get_lead(lead_id) if lead_id else None
        if lead is None:
            raise NotFound("lead", lead_id)
        return lead, message_id

    def _preferences(self, lead: Lead, left: bool = False) -> Preferences:
        now = self._clock.now()
        paused = parse_iso(lead.paused_until) if lead.paused_until else None
        return Preferences(
            topics=[
                TopicChoice(topic_id, topic.title, topic.description, lead.subscribed_to(topic_id))
                for topic_id, topic in self._campaign.topics.items()
            ],
            paused_until=paused if paused is not None and paused > now else None,
            left=left or lead.unsubscribed_at is not None,
        )
