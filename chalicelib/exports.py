"""The lead list as CSV, for spreadsheets and CRM imports."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import Any, Optional

from chalicelib.campaign_types import Campaign
from chalicelib.entities import PROFILE_FIELDS, Lead
from chalicelib.vocabulary import TRACKING_FIELDS

BASE_COLUMNS = (
    "lead_id",
    "email",
    *PROFILE_FIELDS,
    "stage",
    "score",
    "created_at",
    "updated_at",
    "form",
    "magnet",
    *(name for name in TRACKING_FIELDS if name.startswith("utm_")),
    "referrer",
    "consent_status",
    "consent_version",
    "consent_at",
    "owner",
    "unsubscribed_at",
)
# A cell starting with one of these is a formula to Excel and LibreOffice ("CSV injection"):
# a lead typing "=HYPERLINK(...)" as their company must reach the sheet as text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Digits and phone punctuation only ("+49 30 1234-56") call no function: left as they are.
_PHONE_LIKE = re.compile(r"^[+-]?[0-9][0-9 ()./-]*$")


def custom_columns(campaign: Campaign) -> list[str]:
    names: dict[str, None] = {}
    for form in campaign.forms.values():
        names.update(dict.fromkeys(form.custom_fields))
    return [f"custom_{name}" for name in names]


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS) and not _PHONE_LIKE.match(value):
        return "'" + value
    return "" if value is None else value


def lead_row(lead: Lead) -> dict[str, Any]:
    touch, consent = lead.first_touch, lead.consent
    row: dict[str, Any] = {
        "lead_id": lead.lead_id,
        "email": lead.email,
        **{name: lead.profile.get(name) for name in PROFILE_FIELDS},
        "stage": lead.stage,
        "score": lead.score,
        "created_at": lead.created_at,
        "updated_at": lead.updated_at,
        "form": touch.form_id,
        "magnet": touch.magnet,
        "utm_source": touch.utm_source,
        "utm_medium": touch.utm_medium,
        "utm_campaign": touch.utm_campaign,
        "utm_term": touch.utm_term,
        "utm_content": touch.utm_content,
        "referrer": touch.referrer,
        "consent_status": consent.status if consent else None,
        "consent_version": consent.version if consent else None,
        "consent_at": consent.at if consent else None,
        "owner": (lead.owner or {}).get("email"),
        "unsubscribed_at": lead.unsubscribed_at,
        **{f"custom_{name}": value for name, value in lead.custom.items()},
    }
    return row


def leads_csv(campaign: Campaign, leads: Sequence[Lead], max_bytes: int) -> tuple[str, int]:
    """A header row, then a row per lead (first-touch attribution), while the text stays within
    ``max_bytes`` (at least one row always); returns the text and how many leads it holds."""
    line = io.StringIO()  # one row at a time: its size is known without re-reading the page
    writer = csv.DictWriter(line, fieldnames=[*BASE_COLUMNS, *custom_columns(campaign)], extrasaction="ignore")

    def render(row: Optional[dict[str, Any]]) -> str:
        """The CSV text of one row (None: the header row)."""
        line.seek(0)
        line.truncate()
        if row is None:
            writer.writeheader()
        else:
            writer.writerow({name: _cell(value) for name, value in row.items()})
        return line.getvalue()

    parts = [render(None)]
    size = len(parts[0].encode())
    for lead in leads:
        row = render(lead_row(lead))
        size += len(row.encode())
        if len(parts) > 1 and size > max_bytes:
            break
        parts.append(row)
    return "".join(parts), len(parts) - 1
