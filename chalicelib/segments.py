"""Segments (pure): who a broadcast goes to, and which index can narrow the read to them.

A segment's rules all hold for a lead, or it is not in it. Reading one starts from the index
that narrows it most (``plan``): the stage index for the stages it names (the score range in the
key condition), else the creation index (the created range in the key condition, or every
profile); each candidate is then matched here against the rest, on its profile alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from chalicelib.campaign_types import Segment
from chalicelib.entities import Lead, iso

CONTAINS = "~"  # {"job_title": "~head"}: the field contains "head"


@dataclass(frozen=True)
class IndexPlan:
    """The index reads that hold every lead of a segment (and usually more)."""

    stages: Optional[tuple[str, ...]]  # one stage-index Query each; None: the creation index
    score_min: Optional[float] = None
    score_max: Optional[float] = None
    created_after: Optional[str] = None
    created_before: Optional[str] = None


def plan(segment: Segment) -> IndexPlan:
    if segment.stages:
        return IndexPlan(tuple(dict.fromkeys(segment.stages)), segment.score_min, segment.score_max)
    return IndexPlan(None, created_after=segment.created_after, created_before=segment.created_before)


def matches(segment: Segment, lead: Lead, now: datetime) -> bool:
    """Whether every rule of the segment holds for the lead, now."""
    if segment.stages and lead.stage not in segment.stages:
        return False
    if segment.score_min is not None and lead.score < segment.score_min:
        return False
    if segment.score_max is not None and lead.score > segment.score_max:
        return False
    if segment.forms and not (set(segment.forms) & _forms_of(lead)):
        return False
    if segment.topics and not all(lead.subscribed_to(t) for t in segment.topics):
        return False
    touches = (lead.first_touch, lead.last_touch)
    for wanted, attribute in ((segment.source, "utm_source"), (segment.medium, "utm_medium")):
        if wanted is not None and not any(_same(getattr(t, attribute), wanted) for t in touches):
            return False
    if segment.utm_campaign is not None and not any(_same(t.utm_campaign, segment.utm_campaign) for t in touches):
        return False
    if segment.created_after is not None and lead.created_at < segment.created_after:
        return False
    if segment.created_before is not None and lead.created_at >= segment.created_before:
        return False
    for name, values in (segment.fields or {}).items():
        if not _field_holds(lead.field_value(name), values):
            return False
    if segment.engaged_within is not None:
        since = iso(now - segment.engaged_within)
        if lead.engaged_at is None or lead.engaged_at < since:
            return False
    return True


def _forms_of(lead: Lead) -> set[str]:
    # Leads captured before the profile kept every form still name their first and last one.
    return {*lead.forms, lead.first_touch.form_id, lead.last_touch.form_id}


def _field_holds(value: object, wanted: list[str]) -> bool:
    if value is None or value == "":
        return False
    text = _norm(value)
    for option in wanted:
        if option.startswith(CONTAINS):
            if _norm(option[len(CONTAINS) :]) in text:
                return True
        elif _norm(option) == text:
            return True
    return False


def _same(value: Optional[str], wanted: str) -> bool:
    return value is not None and _norm(value) == _norm(wanted)


def _norm(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().casefold()
