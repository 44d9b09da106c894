"""The calendar-event aggregate: one partition per campaign event (``CALENDAR#<event>``), holding
its state (how many registered) and one item per registrant, so that the registrants of an event
are one Query and a registration is once per lead (a conditional put).

A registration is written by the capture transaction (``registration_operations``): the lead,
its submission, its enrolment, the registrant item and the count in one request, the count
conditional on the capacity, so a full event refuses the whole submission and stores nothing.
"""

from __future__ import annotations

from typing import Any, Optional

from chalicelib.entities import Registration
from chalicelib.store import keys
from chalicelib.store.expressions import Expression, all_of, any_of
from chalicelib.store.table import Table

REGISTERED = "registrations"


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
        item = self._get(keys.calendar_state(event_id))
        return int(item.get(REGISTERED, 0)) if item else 0

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
