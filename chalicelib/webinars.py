"""The campaign's events after registration: attendance uploads (CSV or JSON, as webinar platforms
export them) become ``event_attended`` / ``event_missed`` once per registrant.

Parsing is pure (``parse_attendance``); ``EventDesk`` applies the rows through the store. A bad
row never stops the good ones: it is listed back with its reason, and the rest are applied.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from chalicelib.campaign_types import Campaign
from chalicelib.clock import Clock
from chalicelib.entities import Event, iso, lead_id_for
from chalicelib.errors import NotFound, ValidationFailed, field_errors
from chalicelib.nurture.schedule import EventSchedule
from chalicelib.store import Store
from chalicelib.vocabulary import EventType

if TYPE_CHECKING:
    from chalicelib.http import bodies

CSV_HEADER = ("email", "attended", "minutes")
UPLOAD_SOURCE = "attendance_upload"


@dataclass(frozen=True)
class AttendanceRow:
    row: int  # 1 = the first row after the CSV header, or the list's first item
    address: str  # as given (normalised), for the answer
    identity: str
    attended: bool
    minutes: Optional[int]


@dataclass(frozen=True)
class RowProblem:
    row: int
    field: str
    reason: str


@dataclass
class Parsed:
    rows: list[AttendanceRow] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)


def parse_attendance(media_type: str, text: str) -> Parsed:
    """The upload's rows, each valid or a problem. A body that is not an upload at all (no CSV
    header with email and attended, not a JSON object with an ``attendance`` list, too many
    rows) is a ValidationFailed naming ``body``."""
    from chalicelib.models import MAX_ATTENDANCE_ROWS

    text = text.removeprefix("\ufeff")  # spreadsheets write a byte-order mark
    if media_type == "text/csv":
        reader = csv.DictReader(io.StringIO(text))
        header = [name.strip().lower() for name in reader.fieldnames or ()]
        if not {"email", "attended"} <= set(header):
            raise ValidationFailed({"body": f"the CSV header must name {','.join(CSV_HEADER)} (minutes optional)"})
        reader.fieldnames = header
        raw: list[Any] = [{k: v for k, v in record.items() if k is not None} for record in reader]
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValidationFailed({"body": f"not valid JSON: {e}"}) from e
        if not isinstance(data, dict) or not isinstance(data.get("attendance"), list):
            raise ValidationFailed({"body": 'must be {"attendance": [{"email", "attended", "minutes"}, ...]}'})
        raw = data["attendance"]
    if len(raw) > MAX_ATTENDANCE_ROWS:
        raise ValidationFailed({"body": f"at most {MAX_ATTENDANCE_ROWS} rows in one upload"})
    parsed = Parsed()
    for number, record in enumerate(raw, start=1):
        row = _row(number, record)
        if isinstance(row, AttendanceRow):
            parsed.rows.append(row)
        else:
            parsed.problems += row
    return parsed


def _row(number: int, record: Any) -> AttendanceRow | list[RowProblem]:
    from pydantic import ValidationError

    from chalicelib.models import AttendanceRowIn

    if not isinstance(record, dict):
        return [RowProblem(number, "row", "must be an object with email, attended and minutes")]
    try:
        valid = AttendanceRowIn.model_validate(record)
    except ValidationError as e:
        return [RowProblem(number, name, reason) for name, reason in field_errors(e).items()]
    return AttendanceRow(number, valid.email.address, valid.email.identity, valid.attended, valid.minutes)


class EventDesk:
    def __init__(
        self, campaign: Campaign, store: Store, clock: Clock, schedule: Optional[EventSchedule] = None
    ) -> None:
        self._campaign = campaign
        self._store = store
        self._clock = clock
        self._schedule = schedule or EventSchedule(campaign, store)

    def known(self, event_id: str) -> None:
        if event_id not in self._campaign.events:
            raise NotFound("event", event_id)

    def record_attendance(self, event_id: str, media_type: str, text: str) -> bodies.AttendanceResult:
        from chalicelib.http import bodies

        self.known(event_id)
        parsed = parse_attendance(media_type, text)
        now = iso(self._clock.now())
        result: dict[str, Any] = {"attended": 0, "missed": 0, "unchanged": 0, "unknown": [], "not_registered": []}
        for row in parsed.rows:
            lead_id = lead_id_for(row.identity)
            registration = self._store.get_registration(event_id, lead_id)
            if registration is None:
                known = self._store.get_lead(lead_id) is not None
                result["not_registered" if known else "unknown"].append(row.address)
                continue
            kind = EventType.EVENT_ATTENDED if row.attended else EventType.EVENT_MISSED
            data = {"event": event_id, "minutes": row.minutes, "source": UPLOAD_SOURCE}
            event = Event(lead_id=lead_id, event_id=secrets.token_hex(8), type=kind, at=now, data=data)
            if self._store.record_attendance(registration, row.attended, row.minutes, event):
                result["attended" if row.attended else "missed"] += 1
            else:
                result["unchanged"] += 1  # noted by an earlier upload (or this one's earlier row)
        return bodies.AttendanceResult(
            event_id=event_id,
            rows=len(parsed.rows) + len({p.row for p in parsed.problems}),
            invalid=[bodies.AttendanceProblem(row=p.row, field=p.field, reason=p.reason) for p in parsed.problems],
            **result,
        )
