"""The campaign's events as they stand now: the campaign file's, with what ``PATCH
/admin/events/{id}`` changed since (a new start, a cancellation, each a new revision).

The dispatcher, the renderer and the capture read events through this, so a moved event's
reminders, invites and registration follow its new time. Reads are cached for a few seconds per
container (as the dispatcher caches broadcasts): a change reaches every sender within that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Optional

from chalicelib.campaign_types import CalendarEvent, Campaign, Sequence
from chalicelib.entities import parse_iso

if TYPE_CHECKING:
    from chalicelib.store import Store

READ_SECONDS: Final = 10.0
# Pseudo sequences that carry an updated invite or a cancellation to each registrant, with every
# guarantee of a drip step (each once): "_update-<revision>-<event>", "_cancel-<event>".
UPDATE_PREFIX: Final = "_update-"
CANCEL_PREFIX: Final = "_cancel-"


@dataclass(frozen=True)
class ScheduledEvent:
    event_id: str
    event: CalendarEvent  # with the current start
    revision: int = 0  # the invite's SEQUENCE
    cancelled: bool = False

    @property
    def starts_at(self) -> datetime:
        return parse_iso(self.event.starts_at)

    @property
    def ends_at(self) -> datetime:
        return self.starts_at + self.event.duration


def update_sequence_id(event_id: str, revision: int) -> str:
    return f"{UPDATE_PREFIX}{revision}-{event_id}"


def cancel_sequence_id(event_id: str) -> str:
    return f"{CANCEL_PREFIX}{event_id}"


def notice_of(sequence_id: str) -> Optional[tuple[str, str, int]]:
    """("update" or "cancel", event id, revision or 0) of a notice sequence, else None."""
    if sequence_id.startswith(CANCEL_PREFIX):
        return "cancel", sequence_id[len(CANCEL_PREFIX) :], 0
    if sequence_id.startswith(UPDATE_PREFIX):
        revision, _, event_id = sequence_id[len(UPDATE_PREFIX) :].partition("-")
        if revision.isdigit() and event_id:
            return "update", event_id, int(revision)
    return None


def event_id_of(campaign: Campaign, sequence_id: str) -> Optional[str]:
    """The event a sequence (or a notice) is about."""
    notice = notice_of(sequence_id)
    if notice is not None:
        return notice[1]
    sequence: Optional[Sequence] = campaign.sequences.get(sequence_id)
    return sequence.event if sequence is not None else None


class EventSchedule:
    """``store`` None: the campaign file's events only (previews, tools without AWS)."""

    def __init__(
        self, campaign: Campaign, store: Optional[Store] = None, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._campaign = campaign
        self._store = store
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, ScheduledEvent]] = {}

    def get(self, event_id: str) -> Optional[ScheduledEvent]:
        event = self._campaign.events.get(event_id)
        if event is None:
            return None
        if self._store is None:
            return ScheduledEvent(event_id, event)
        now = self._monotonic()
        with self._lock:
            cached = self._cache.get(event_id)
            if cached is not None and now - cached[0] < READ_SECONDS:
                return cached[1]
        state = self._store.event_state(event_id)
        if state.starts_at is not None:
            event = event.model_copy(update={"starts_at": state.starts_at})
        scheduled = ScheduledEvent(event_id, event, state.revision, state.cancelled_at is not None)
        with self._lock:
            self._cache[event_id] = (now, scheduled)
        return scheduled

    def forget(self, event_id: str) -> None:
        """After a change made here: read it again at once."""
        with self._lock:
            self._cache.pop(event_id, None)

    def of_sequence(self, sequence_id: str) -> Optional[ScheduledEvent]:
        event_id = event_id_of(self._campaign, sequence_id)
        return self.get(event_id) if event_id else None
