"""Data-subject requests (GDPR articles 15 and 17): export everything about a person, erase them.

Erasure deletes the lead's whole partition (profile, events, enrolments, messages, handoffs,
report markers) but keeps the anonymous report counters, and suppresses the address by its
hash (the lead id is a hash of the normalised address), so it is never mailed again even if
it turns up in a later import or submission.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import TYPE_CHECKING
from urllib.parse import unquote

from chalicelib.clock import Clock
from chalicelib.entities import Suppression, iso, lead_id_for
from chalicelib.errors import NotFound, ValidationFailed
from chalicelib.models import normalise_email
from chalicelib.store import Store
from chalicelib.vocabulary import SuppressionReason

if TYPE_CHECKING:
    from chalicelib.http.bodies import LeadErased, LeadExport

ERASED = SuppressionReason.ERASED
_LEAD_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve_lead_id(lead_id_or_email: str) -> str:
    """A lead id, or the email address it is derived from (a request names the person by either)."""
    value = lead_id_or_email.strip()
    if "@" not in value:  # an address whose "@" arrived still percent-encoded: decode once
        value = unquote(value).strip()
    if "@" in value:
        try:
            return lead_id_for(normalise_email(value).identity)
        except ValueError as e:
            raise ValidationFailed({"lead_id": f"neither a lead id nor a valid email address: {e}"}) from e
    if not _LEAD_ID.match(value):
        raise NotFound("lead", value[:64])
    return value


class Privacy:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def export(self, lead_id_or_email: str) -> LeadExport:
        from chalicelib.http.bodies import LeadExport

        lead_id = resolve_lead_id(lead_id_or_email)
        stored = self._store.export_lead(lead_id)
        if stored is None:
            raise NotFound("lead", lead_id)
        return LeadExport(lead_id=lead_id, exported_at=iso(self._clock.now()), **asdict(stored))

    def erase(self, lead_id_or_email: str) -> LeadErased:
        from chalicelib.http.bodies import LeadErased

        lead_id = resolve_lead_id(lead_id_or_email)
        deleted = self._store.erase_lead(lead_id, Suppression(lead_id, ERASED, iso(self._clock.now())))
        if deleted is None:
            raise NotFound("lead", lead_id)
        return LeadErased(lead_id=lead_id, items_deleted=deleted)
