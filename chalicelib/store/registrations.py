"""The calendar-event aggregate: one partition per campaign event (``CALENDAR#<event>``), holding
its state (how many registered) and one item per registrant, so that the registrants of an event
are one Query and a registration is once per lead (a conditional put).

A registration is written by the capture transaction (``registration_operations``): the lead,
its submission, its enrolment, the registrant item and the count in one request, the count
conditional on the capacity, so a full event refuses the whole submission and stores nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from chalicelib.entities import Event, Registration
from chalicelib.store import keys
from chalicelib.store.expressions import Expression, all_of, any_of
from chalicelib.store.table import Table

REGISTERED = "registrations"
REVISION = "revision"


@dataclass(frozen=True)
class EventState:
    """What changed of a campaign event since the file (``PATCH /admin/events/{id}``)."""

    registrations: int = 0
    revision: int = 0
    starts_at: Optional[str] = None  # the new start, if moved
    cancelled_at: Optional[str] = None


class Registrations(Table):
    def registration_operations(self, registration: Registration, capacity: Optional[int]) -> list[dict[str, Any]]:
        """The transaction's parts that register a lead: its item (only if not there yet) and the
        event's count (only while under ``capacity``)."""
        count = Expression().increment(REGISTERED, 1, 0)
        room = None
        if capacity is not None:
            room = any_of(count.absent(REGISTERED), count.compare(REGISTERED, "<", capacity))
        return [
            {"Put": self._new_item(keys.registration_item(registration))},
            {"Update": self._keyed(keys.calendar_state(registration.event_id), count, ConditionExpression=room)},
        ]

    def registration_count(self, event_id: str) -> int:
        return self.event_state(event_id).registrations

    def event_state(self, event_id: str) -> EventState:
        item = self._get(keys.calendar_state(event_id)) or {}
        return EventState(
            registrations=int(item.get(REGISTERED, 0)),
            revision=int(item.get(REVISION, 0)),
            starts_at=item.get("starts_at"),
            cancelled_at=item.get("cancelled_at"),
        )

    def change_event(
        self, event_id: str, revision: int, *, starts_at: Optional[str] = None, cancelled_at: Optional[str] = None
    ) -> bool:
        """Move or cancel the event as its revision ``revision`` + 1, only if it is still at
        ``revision`` (two changes at once: one wins, the other learns it). False: it was not."""
        change = Expression().set(REVISION, revision + 1)
        if starts_at is not None:
            change.set("starts_at", starts_at)
        if cancelled_at is not None:
            change.set("cancelled_at", cancelled_at)
        unchanged = change.absent(REVISION) if revision == 0 else change.eq(REVISION, revision)
        return self._update_if(keys.calendar_state(event_id), change, all_of(unchanged, change.absent("cancelled_at")))

    def get_registration(self, event_id: str, lead_id: str) -> Optional[Registration]:
        item = self._get(keys.registration(event_id, lead_id))
        return Registration.from_item(item) if item else None

    def registrations(self, event_id: str) -> list[Registration]:
        """Every registrant of the event: one Query of its partition (pages of 1 MB)."""
        listed = Expression()
        condition = all_of(
            listed.eq("pk", keys.calendar_pk(event_id)), listed.begins_with("sk", keys.REGISTRATION_PREFIX)
        )
        items = self._query_all(listed.params(KeyConditionExpression=condition))
        return [Registration.from_item(item) for item in items]

    def record_attendance(
        self, registration: Registration, attended: bool, minutes: Optional[int], event: Event
    ) -> bool:
        """A registrant attended or missed the event: noted on the registration (only if nothing
        is noted yet), the timeline event put and its type noted on the lead (what sequences
        branch on), in one transaction. False: noted before (a re-upload), nothing written."""
        noted = Expression().set_all(
            {"attended": attended, "attendance_at": event.at, **({"minutes": minutes} if minutes is not None else {})}
        )
        first = all_of(noted.exists(), noted.absent("attended"))
        lead = Expression().add("event_types", {event.type})
        key = keys.registration(registration.event_id, registration.lead_id)
        return self._transact_if(
            [
                {"Update": self._keyed(key, noted, ConditionExpression=first)},
                {"Update": self._keyed(keys.profile(event.lead_id), lead, ConditionExpression=lead.exists())},
                {"Put": self._new_item(keys.event_item(event))},
            ]
        )
