"""GDPR: everything stored under a lead, exported or erased.

Everything about a lead is in its partition, except its suppression, which has its own so that
it outlives the erase, and its registrations for the campaign's events, which are in each
event's partition (the profile's ``registered_for`` names them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from chalicelib.entities import Suppression, from_dynamo_value
from chalicelib.store import keys
from chalicelib.store.nurture import Nurture


@dataclass(frozen=True)
class LeadExport:
    """Everything stored under one lead (GDPR export), as plain attributes without key plumbing."""

    profile: dict[str, Any]
    events: list[dict[str, Any]]
    enrolments: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    handoffs: list[dict[str, Any]]
    report_markers: list[str]
    suppression: Optional[dict[str, Any]]
    registrations: list[dict[str, Any]] = field(default_factory=list)  # for the campaign's events


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in keys.KEY_ATTRIBUTES}


class Erasure(Nurture):
    """Built on Nurture: an erase suppresses the address first, as an unsubscribe does."""

    def export_lead(self, lead_id: str) -> Optional[LeadExport]:
        """Everything stored under the lead and its suppression, if any. None: no such lead."""
        items = [{k: from_dynamo_value(v) for k, v in item.items()} for item in self._query_lead(lead_id)]
        profile = next((item for item in items if keys.is_profile(item)), None)
        if profile is None:
            return None

        def plain(prefix: str) -> list[dict[str, Any]]:
            return [_plain(item) for item in keys.of_kind(items, prefix)]

        suppression = self._get(keys.suppression(lead_id))
        registrations = [self._get(key) for key in _registration_keys(lead_id, profile)]
        return LeadExport(
            profile=_plain(profile),
            events=plain(keys.EVENT_PREFIX),
            enrolments=plain(keys.ENROL_PREFIX),
            messages=plain(keys.MESSAGE_PREFIX),
            handoffs=plain(keys.HANDOFF_PREFIX),
            report_markers=keys.marker_names(items),
            suppression=_plain(from_dynamo_value(suppression)) if suppression else None,
            registrations=[_plain(from_dynamo_value(item)) for item in registrations if item],
        )

    def erase_lead(self, lead_id: str, suppression: Suppression) -> Optional[int]:
        """Delete every item of the lead's partition, after suppressing the address for good.

        The suppression goes first and the profile last: a failure half-way leaves the address
        suppressed and the lead still listed, so running the erase again finishes it. Returns
        the number of items deleted, or None when there is no such lead.
        """
        items = self._query_lead(lead_id)
        profile = next((item for item in items if keys.is_profile(item)), None)
        if profile is None:
            return None
        self.suppress(suppression)
        others = [keys.key_of(item) for item in items if not keys.is_profile(item)]
        others += _registration_keys(lead_id, from_dynamo_value(profile))
        self._delete_keys(others)
        self._call("delete_item", **self._keyed(keys.profile(lead_id)))
        # Writes that raced the deletes (a send being recorded, a count) were conditional on the
        # profile, which is gone now: one more sweep removes what landed meanwhile, for good.
        stragglers = [keys.key_of(item) for item in self._query_lead(lead_id)]
        self._delete_keys(stragglers)
        return len(others) + 1 + len(stragglers)


def _registration_keys(lead_id: str, profile: dict[str, Any]) -> list[keys.Key]:
    return [keys.registration(event_id, lead_id) for event_id in sorted(profile.get("registered_for", ()))]
