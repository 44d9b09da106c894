"""Pure scoring and lifecycle rules. No boto3 in here.

The score is a pure function of the lead's fields and its whole event history:

    score(t) = fit + Σ points_i · 2^(-(t - t_i) / half_life)

It is judged as of the latest event (``as_of``), never "now", so a stored score does not depend
on when it was computed: a batch delivered twice, in part, or out of order gives exactly the
same result. Every exponent is ≤ 0 (no overflow, whatever the half-life). Caps
(``max_per_day``, ``max_total``) are applied in event-time order, so they too are
order-independent.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional
from zoneinfo import ZoneInfo

from chalicelib.campaign_types import FitRule, Scoring
from chalicelib.entities import Lead
from chalicelib.vocabulary import SALES_STAGES, SCORING_RANKS, Stage


@dataclass(frozen=True)
class ScoredEvent:
    event_id: str
    type: str
    at: datetime
    url: Optional[str] = None


@dataclass(frozen=True)
class Score:
    fit: float
    engagement: float  # engagement points, decayed to ``as_of``
    half_life: timedelta
    as_of: Optional[datetime]  # the latest event's time: the moment the score is judged at
    engagement_points: dict[str, float] = field(default_factory=dict)  # raw points per rule
    fit_points: dict[str, float] = field(default_factory=dict)
    hand_raiser: Optional[str] = None  # the first hand-raising event type, if any
    events_counted: int = 0

    def engagement_at(self, moment: datetime) -> float:
        if self.as_of is None:
            return 0.0
        return self.engagement * _decay(moment - self.as_of, self.half_life)

    def value_at(self, moment: datetime) -> float:
        return round(self.fit + self.engagement_at(moment), 2)

    @property
    def value(self) -> float:
        """The score as of the latest event."""
        return self.value_at(self.as_of) if self.as_of else round(self.fit, 2)


def _decay(age: timedelta, half_life: timedelta) -> float:
    return float(2.0 ** (-(age / half_life)))


def score_lead(scoring: Scoring, lead: Lead, events: Iterable[ScoredEvent], zone: ZoneInfo) -> Score:
    fit_points = {_fit_label(rule): rule.points for rule in scoring.fit if fit_matches(rule, lead)}
    ordered = sorted(events, key=lambda e: (e.at, e.event_id))
    per_day: Counter[tuple[str, str]] = Counter()
    total: Counter[str] = Counter()
    engagement_points: dict[str, float] = {}
    as_of = ordered[-1].at if ordered else None
    engagement = 0.0
    hand_raiser = None
    counted = 0
    for event in ordered:
        if hand_raiser is None and event.type in scoring.hand_raisers:
            hand_raiser = event.type
        rule_index = matching_rule(scoring, event)
        if rule_index is None:
            continue
        rule = scoring.events[event.type][rule_index]
        label = f"{event.type}#{rule_index}"
        day = event.at.astimezone(zone).date().isoformat()
        if total[label] >= rule.max_total:
            continue
        if per_day[(label, day)] >= rule.max_per_day:
            continue
        total[label] += 1
        per_day[(label, day)] += 1
        counted += 1
        engagement_points[label] = engagement_points.get(label, 0.0) + rule.points
        assert as_of is not None
        engagement += rule.points * _decay(as_of - event.at, scoring.half_life)
    return Score(
        fit=sum(fit_points.values()),
        engagement=engagement,
        half_life=scoring.half_life,
        as_of=as_of,
        engagement_points=engagement_points,
        fit_points=fit_points,
        hand_raiser=hand_raiser,
        events_counted=counted,
    )


def matching_rule(scoring: Scoring, event: ScoredEvent) -> Optional[int]:
    for index, rule in enumerate(scoring.events.get(event.type, [])):
        if rule.url is None or (event.url is not None and fnmatch.fnmatch(event.url.lower(), rule.url.lower())):
            return index
    return None


def fit_matches(rule: FitRule, lead: Lead) -> bool:
    value = lead.field_value(rule.field)
    if value is None or value == "":
        return False
    text = str(value).strip().casefold()
    if rule.equals is not None:
        return text == rule.equals.strip().casefold()
    if rule.in_ is not None:
        return text in {v.strip().casefold() for v in rule.in_}
    assert rule.contains_any is not None
    # Whole words: "cto" is a job title in "CTO & co-founder", not in "Director" or "Contractor".
    return any(re.search(rf"\b{re.escape(keyword.casefold())}\b", text) for keyword in rule.contains_any)


def _fit_label(rule: FitRule) -> str:
    if rule.equals is not None:
        return f"{rule.field} = {rule.equals}"
    if rule.in_ is not None:
        return f"{rule.field} in {'|'.join(rule.in_)}"
    return f"{rule.field} contains {'|'.join(rule.contains_any or [])}"


@dataclass(frozen=True)
class StageChange:
    stage: str
    reason: str


def next_stage(scoring: Scoring, current: str, score: Score) -> Optional[StageChange]:
    """Where the score takes the lead, if anywhere. Scoring only moves leads up to SQL; the
    stages after it (and disqualified) are set by sales."""
    if current in SALES_STAGES:
        return None
    value = score.value
    rank = SCORING_RANKS.get(current, 0)
    if score.hand_raiser is not None:
        return StageChange(Stage.SQL, f"hand-raiser event {score.hand_raiser}")
    if value >= scoring.sql_threshold:
        return StageChange(Stage.SQL, f"score {value:g} reached sql_threshold {scoring.sql_threshold}")
    if value >= scoring.mql_threshold and rank < SCORING_RANKS[Stage.MQL]:
        return StageChange(Stage.MQL, f"score {value:g} reached mql_threshold {scoring.mql_threshold}")
    return None
