"""A lead as the store hands it out, built in memory for the tests that render, score or decide on one."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from chalicelib.entities import Lead, Touch, iso, lead_id_for
from chalicelib.vocabulary import Stage
from testkit.world import START


def a_lead(
    email: str = "lead@example.com",
    *,
    at: datetime = START,
    touch: Optional[Touch] = None,
    lead_id: Optional[str] = None,
    **fields: Any,
) -> Lead:
    """A lead captured at ``at`` by one form (``touch``, its first and last; by default the ebook
    form with the ebook magnet), stage "lead" with no score; any other field of ``Lead`` as given."""
    touch = touch or Touch(at=iso(at), form_id="ebook", magnet="ebook")
    values: dict[str, Any] = {
        "lead_id": lead_id or lead_id_for(email),
        "email": email,
        "email_identity": email.strip().casefold(),
        "stage": Stage.LEAD,
        "score": 0,
        "created_at": iso(at),
        "updated_at": iso(at),
        "first_touch": touch,
        "last_touch": touch,
        **fields,
    }
    return Lead(**values)
