"""Unit tests of the pure scoring rules (chalicelib.scoring): no AWS, exact numbers.

The demo campaign's scoring section: thresholds 40 (MQL) / 80 (SQL), half_life 14d,
hand_raisers [demo_request]; event rules

    form_submitted 5 (max_total 3)          email_opened 1 (max_per_day 2, max_total 10)
    email_clicked 5 (max_per_day 3, max_total 10)
    page_view 10 on "*/pricing*" (max_per_day 1, max_total 5), else 2 (max_per_day 5, max_total 20)
    pricing_view 15 (max_per_day 1, max_total 3)
    webinar_registered 20 (max_per_day 1, max_total 2)     demo_request 40 (1, 1)

and fit rules job_title contains cto|ceo|founder|head|director|vp|chief +15, company_size in
51-200|201-1000|1000+ +10, country in DE|AT|CH|NL +5, free-mail email_domain -10,
competitor.example -60.

Calendar: 2026-11-23 is a Monday; Berlin is UTC+1 in November (UTC+2 in July).
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any, Optional
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.config import load_campaign
from chalicelib.entities import Lead
from chalicelib.models import DEFAULT_EVENT_MAX_PER_DAY, DEFAULT_EVENT_MAX_TOTAL, FitRule, Scoring
from chalicelib.scoring import (
    SALES_STAGES,
    Score,
    ScoredEvent,
    fit_matches,
    matching_rule,
    next_stage,
    score_lead,
)
from testkit.leads import a_lead

DEMO = load_campaign("demo")
SCORING = DEMO.scoring
BERLIN = ZoneInfo("Europe/Berlin")
UTC_ZONE = ZoneInfo("UTC")
HALF_LIFE = timedelta(days=14)
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # Monday, 11:00 in Berlin

PRICING_URL = "https://www.demo.trellis.example/pricing"
BLOG_URL = "https://www.demo.trellis.example/blog/nurture-101"

JOB_RULE, SIZE_RULE, COUNTRY_RULE, FREE_MAIL_RULE, COMPETITOR_RULE = SCORING.fit


# -- factories ---------------------------------------------------------------------------------


def make_lead(
    email: str = "ada@acme.example",
    *,
    stage: str = "lead",
    profile: Optional[dict[str, str]] = None,
    custom: Optional[dict[str, Any]] = None,
) -> Lead:
    return a_lead(
        email, at=T0 - timedelta(days=30), lead_id="lead-1", stage=stage, profile=profile or {}, custom=custom or {}
    )


PLAIN = make_lead()  # no fit points at all: acme.example, no profile, no custom fields
FIT_30 = make_lead(
    profile={"job_title": "CTO", "first_name": "Ada"},
    custom={"company_size": "201-1000", "country": "DE"},
)  # 15 + 10 + 5


def ev(event_id: str, type_: str, at: datetime, url: Optional[str] = None) -> ScoredEvent:
    return ScoredEvent(event_id=event_id, type=type_, at=at, url=url)


def score(events: list[ScoredEvent], lead: Lead = PLAIN, zone: ZoneInfo = BERLIN) -> Score:
    return score_lead(SCORING, lead, events, zone)


def fixed(value: float) -> Score:
    """A score worth exactly ``value`` (all fit, nothing to decay)."""
    return Score(fit=value, engagement=0.0, half_life=HALF_LIFE, as_of=None)


def assert_same_score(a: Score, b: Score) -> None:
    assert a.value == b.value
    assert math.isclose(a.engagement, b.engagement, rel_tol=1e-12, abs_tol=0.0)
    assert a.engagement_points == b.engagement_points
    assert a.fit_points == b.fit_points
    assert a.fit == b.fit
    assert a.hand_raiser == b.hand_raiser
    assert a.events_counted == b.events_counted
    assert a.as_of == b.as_of


# -- the demo scoring section is what these tests assume -----------------------------------------


def test_demo_scoring_section_is_what_the_tests_assume():
    assert (SCORING.mql_threshold, SCORING.sql_threshold) == (40, 80)
    assert SCORING.half_life == HALF_LIFE
    assert SCORING.hand_raisers == ["demo_request"]
    assert [r.points for r in SCORING.events["page_view"]] == [10, 2]
    assert SCORING.events["page_view"][0].url == "*/pricing*"
    assert (JOB_RULE.field, SIZE_RULE.field, COUNTRY_RULE.field) == ("job_title", "company_size", "country")
    assert (FREE_MAIL_RULE.points, COMPETITOR_RULE.points) == (-10, -60)


# -- points per event type ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "url", "label", "points"),
    [
        ("form_submitted", None, "form_submitted#0", 5),
        ("email_opened", None, "email_opened#0", 1),
        ("email_clicked", "https://www.demo.trellis.example/guide", "email_clicked#0", 5),
        ("page_view", PRICING_URL, "page_view#0", 10),
        ("page_view", BLOG_URL, "page_view#1", 2),
        ("page_view", None, "page_view#1", 2),
        ("pricing_view", None, "pricing_view#0", 15),
        ("webinar_registered", None, "webinar_registered#0", 20),
        ("demo_request", None, "demo_request#0", 40),
    ],
)
def test_points_per_event_type(type_, url, label, points):
    result = score([ev("e1", type_, T0, url)])
    assert result.engagement_points == {label: points}
    assert result.events_counted == 1
    assert result.fit == 0
    assert result.as_of == T0
    assert result.value == points  # judged at the event itself: no decay yet
    assert math.isclose(result.engagement_at(T0), points, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("url", "rule_index"),
    [
        ("https://www.demo.trellis.example/pricing", 0),
        ("https://www.demo.trellis.example/pricing?plan=team", 0),
        ("https://www.demo.trellis.example/en/pricing/enterprise", 0),
        ("https://www.demo.trellis.example/PRICING", 0),  # globs match case-insensitively
        ("https://www.demo.trellis.example/", 1),
        ("https://www.demo.trellis.example/blog/nurture-101", 1),
        ("https://www.demo.trellis.example/prices", 1),
        (None, 1),  # no URL: only a rule without a glob can match
    ],
)
def test_first_matching_url_rule_wins(url, rule_index):
    assert matching_rule(SCORING, ev("e1", "page_view", T0, url)) == rule_index


def test_pricing_page_view_scores_10_and_other_page_view_2():
    result = score([ev("e1", "page_view", T0, PRICING_URL), ev("e2", "page_view", T0, BLOG_URL)])
    assert result.engagement_points == {"page_view#0": 10, "page_view#1": 2}
    assert result.value == 12
    assert result.events_counted == 2


def test_an_earlier_catch_all_rule_shadows_a_later_url_rule():
    scoring = Scoring(
        mql_threshold=40,
        sql_threshold=80,
        events={"page_view": [{"points": 2}, {"points": 10, "url": "*/pricing*", "max_total": 5}]},
    )
    assert matching_rule(scoring, ev("e1", "page_view", T0, PRICING_URL)) == 0
    result = score_lead(scoring, PLAIN, [ev("e1", "page_view", T0, PRICING_URL)], BERLIN)
    assert result.engagement_points == {"page_view#0": 2}
    assert result.value == 2


def test_a_capped_pricing_view_does_not_fall_through_to_the_catch_all_rule():
    # The second pricing page view on the same day matches rule 0, which is capped: it scores
    # nothing rather than the catch-all's 2.
    result = score(
        [ev("e1", "page_view", T0, PRICING_URL), ev("e2", "page_view", T0 + timedelta(hours=1), PRICING_URL)]
    )
    assert result.engagement_points == {"page_view#0": 10}
    assert result.events_counted == 1


def test_event_type_with_only_url_rules_scores_nothing_when_no_url_matches():
    scoring = Scoring(
        mql_threshold=40, sql_threshold=80, events={"page_view": [{"points": 10, "url": "*/pricing*", "max_total": 5}]}
    )
    assert matching_rule(scoring, ev("e1", "page_view", T0, BLOG_URL)) is None
    assert matching_rule(scoring, ev("e2", "page_view", T0, None)) is None
    result = score_lead(scoring, PLAIN, [ev("e1", "page_view", T0, BLOG_URL), ev("e2", "page_view", T0)], BERLIN)
    assert result.engagement_points == {}
    assert result.events_counted == 0
    assert result.value == 0


@pytest.mark.parametrize("type_", ["email_bounced", "unsubscribed", "sales_feedback", "Page_View"])
def test_event_types_without_rules_score_zero(type_):
    assert matching_rule(SCORING, ev("e1", type_, T0)) is None
    result = score([ev("e1", type_, T0)])
    assert result.engagement_points == {}
    assert result.events_counted == 0
    assert result.engagement == 0
    assert result.value == 0
    assert result.hand_raiser is None


def test_unscored_events_add_nothing_to_scored_ones():
    result = score([ev("e1", "webinar_registered", T0), ev("e2", "email_bounced", T0), ev("e3", "unknown", T0)])
    assert result.engagement_points == {"webinar_registered#0": 20}
    assert result.events_counted == 1
    assert result.value == 20


def test_no_events_is_just_fit():
    result = score([], lead=FIT_30)
    assert result.as_of is None
    assert result.engagement == 0
    assert result.events_counted == 0
    assert result.value == 30
    assert result.value_at(T0) == 30


# -- caps ----------------------------------------------------------------------------------------


def test_max_per_day_counts_per_calendar_day():
    events = [ev(f"p{i}", "pricing_view", T0 + timedelta(hours=i)) for i in range(4)]  # all Monday in Berlin
    events.append(ev("p-next", "pricing_view", T0 + timedelta(days=1)))
    result = score(events)
    assert result.engagement_points == {"pricing_view#0": 30}
    assert result.events_counted == 2


def test_max_per_day_is_per_rule_not_per_event_type():
    # 1 pricing page view (cap 1) + 5 other page views (cap 5); the 2nd pricing and 6th other are capped.
    events = [ev("pr1", "page_view", T0, PRICING_URL), ev("pr2", "page_view", T0 + timedelta(minutes=1), PRICING_URL)]
    events += [ev(f"b{i}", "page_view", T0 + timedelta(minutes=2 + i), BLOG_URL) for i in range(6)]
    result = score(events)
    assert result.engagement_points == {"page_view#0": 10, "page_view#1": 10}
    assert result.events_counted == 6


def test_max_per_day_uses_the_given_time_zone_winter():
    # email_opened: max 2 a day. Monday 2026-11-23 in Berlin (UTC+1).
    opens = [
        ev("o1", "email_opened", datetime(2026, 11, 23, 9, 0, tzinfo=UTC)),
        ev("o2", "email_opened", datetime(2026, 11, 23, 12, 0, tzinfo=UTC)),
        ev("o3", "email_opened", datetime(2026, 11, 23, 22, 30, tzinfo=UTC)),  # 23:30 Monday in Berlin: capped
        ev("o4", "email_opened", datetime(2026, 11, 23, 23, 30, tzinfo=UTC)),  # 00:30 Tuesday in Berlin: counts
    ]
    in_berlin = score(opens, zone=BERLIN)
    assert in_berlin.engagement_points == {"email_opened#0": 3}
    assert in_berlin.events_counted == 3
    # The same events judged in UTC: all four on Monday, so only two count.
    in_utc = score(opens, zone=UTC_ZONE)
    assert in_utc.engagement_points == {"email_opened#0": 2}
    assert in_utc.events_counted == 2


def test_max_per_day_uses_the_given_time_zone_summer():
    # pricing_view: max 1 a day. Berlin is UTC+2 in July: 22:30 UTC is already the next day.
    views = [
        ev("v1", "pricing_view", datetime(2026, 7, 1, 12, 0, tzinfo=UTC)),
        ev("v2", "pricing_view", datetime(2026, 7, 1, 21, 30, tzinfo=UTC)),  # 23:30 on the 1st in Berlin
        ev("v3", "pricing_view", datetime(2026, 7, 1, 22, 30, tzinfo=UTC)),  # 00:30 on the 2nd in Berlin
    ]
    assert score(views, zone=BERLIN).engagement_points == {"pricing_view#0": 30}
    assert score(views, zone=UTC_ZONE).engagement_points == {"pricing_view#0": 15}


def test_max_per_day_with_event_times_in_other_offsets():
    # The same instants given with a non-UTC offset are judged by the zone, not by their own offset.
    tokyo = ZoneInfo("Asia/Tokyo")
    opens = [
        ev("o1", "email_opened", datetime(2026, 11, 23, 9, 0, tzinfo=UTC).astimezone(tokyo)),
        ev("o2", "email_opened", datetime(2026, 11, 23, 12, 0, tzinfo=UTC).astimezone(tokyo)),
        ev("o3", "email_opened", datetime(2026, 11, 23, 23, 30, tzinfo=UTC).astimezone(tokyo)),
    ]
    assert score(opens, zone=BERLIN).engagement_points == {"email_opened#0": 3}
    assert score(opens, zone=UTC_ZONE).engagement_points == {"email_opened#0": 2}


def test_max_total_counts_the_earliest_events():
    # form_submitted: 5 points, at most 3 ever. Four submissions a day apart: the last one is dropped.
    days = [0, 1, 2, 3]
    events = [ev(f"f{d}", "form_submitted", T0 + timedelta(days=d)) for d in days]
    result = score(events)
    assert result.engagement_points == {"form_submitted#0": 15}
    assert result.events_counted == 3
    assert result.as_of == T0 + timedelta(days=3)
    # Judged at day 3, the three counted submissions are 3, 2 and 1 days old.
    expected = sum(5 * 2 ** (-(3 - d) / 14) for d in (0, 1, 2))
    assert result.value == round(expected, 2) == 13.6
    assert math.isclose(result.engagement_at(T0 + timedelta(days=3)), expected, rel_tol=1e-9)


def test_max_total_and_max_per_day_together():
    # email_opened: 1 point, max 2 a day, max 10 in all. Three opens a day for 7 days: 2 a day
    # count until the total of 10 is reached on day 5.
    events = [ev(f"o{d}-{i}", "email_opened", T0 + timedelta(days=d, hours=i)) for d in range(7) for i in range(3)]
    result = score(events)
    assert result.engagement_points == {"email_opened#0": 10}
    assert result.events_counted == 10
    counted_times = [T0 + timedelta(days=d, hours=i) for d in range(5) for i in range(2)]
    expected = sum(2 ** (-(result.as_of - t) / HALF_LIFE) for t in counted_times)
    assert math.isclose(result.engagement, expected, rel_tol=1e-12)


def test_a_rule_without_caps_gets_the_default_caps():
    scoring = Scoring(mql_threshold=40, sql_threshold=80, events={"download": [{"points": 1}]})
    one_day = [ev(f"d{i}", "download", T0 + timedelta(minutes=i)) for i in range(30)]
    assert score_lead(scoring, PLAIN, one_day, BERLIN).events_counted == DEFAULT_EVENT_MAX_PER_DAY == 5
    a_month = [ev(f"d{i}", "download", T0 + timedelta(days=i)) for i in range(30)]
    assert score_lead(scoring, PLAIN, a_month, BERLIN).events_counted == DEFAULT_EVENT_MAX_TOTAL == 20


def test_webinar_registrations_repeated_cannot_make_a_lead_sql():
    """The attack: four (or forty) webinar_registered events used to carry a lead to SQL."""
    events = [ev(f"w{i}", "webinar_registered", T0 + timedelta(days=i)) for i in range(40)]
    result = score(events)
    assert result.engagement_points == {"webinar_registered#0": 40}
    assert result.value < SCORING.sql_threshold


def test_a_rule_that_could_reach_sql_by_repetition_is_refused():
    with pytest.raises(ValueError, match=r"events.webinar_registered\[0\]: 20 x 20 points reaches sql_threshold 80"):
        Scoring(mql_threshold=40, sql_threshold=80, events={"webinar_registered": [{"points": 20}]})
    # A hand-raiser may: it makes the lead SQL on its own anyway.
    Scoring(mql_threshold=40, sql_threshold=80, hand_raisers=["demo"], events={"demo": [{"points": 40}]})


def test_caps_are_applied_in_event_time_order_whatever_the_input_order():
    # A mix where the cap decides which events count: each permutation must count the same ones.
    events = [
        ev("o1", "email_opened", datetime(2026, 11, 23, 9, 0, tzinfo=UTC)),
        ev("o2", "email_opened", datetime(2026, 11, 23, 12, 0, tzinfo=UTC)),
        ev("o3", "email_opened", datetime(2026, 11, 23, 22, 30, tzinfo=UTC)),
        ev("o4", "email_opened", datetime(2026, 11, 23, 23, 30, tzinfo=UTC)),
        ev("f1", "form_submitted", T0 - timedelta(days=3)),
        ev("f2", "form_submitted", T0 - timedelta(days=2)),
        ev("f3", "form_submitted", T0 - timedelta(days=1)),
        ev("f4", "form_submitted", T0 + timedelta(days=1)),  # the 4th in time: never counted
        ev("pv1", "page_view", T0, PRICING_URL),
        ev("pv2", "page_view", T0 + timedelta(hours=3), PRICING_URL),
        ev("d1", "demo_request", T0 + timedelta(days=2)),
    ]
    reference = score(events)
    assert reference.engagement_points == {
        "email_opened#0": 3,
        "form_submitted#0": 15,
        "page_view#0": 10,
        "demo_request#0": 40,
    }
    assert reference.events_counted == 3 + 3 + 1 + 1
    assert reference.hand_raiser == "demo_request"
    counted_times = [
        (datetime(2026, 11, 23, 9, 0, tzinfo=UTC), 1),
        (datetime(2026, 11, 23, 12, 0, tzinfo=UTC), 1),
        (datetime(2026, 11, 23, 23, 30, tzinfo=UTC), 1),
        (T0 - timedelta(days=3), 5),
        (T0 - timedelta(days=2), 5),
        (T0 - timedelta(days=1), 5),
        (T0, 10),
        (T0 + timedelta(days=2), 40),
    ]
    expected = sum(p * 2 ** (-(reference.as_of - t) / HALF_LIFE) for t, p in counted_times)
    assert math.isclose(reference.engagement, expected, rel_tol=1e-12)

    rng = random.Random(20261123)  # noqa: S311 (reproducible shuffles, not cryptography)
    shuffled = list(events)
    for _ in range(300):
        rng.shuffle(shuffled)
        assert_same_score(score(shuffled), reference)
    assert_same_score(score(list(reversed(events))), reference)


# -- decay -------------------------------------------------------------------------------------


@pytest.mark.parametrize("lead", [PLAIN, FIT_30], ids=["no-fit", "fit-30"])
@pytest.mark.parametrize(
    ("type_", "points"), [("webinar_registered", 20), ("demo_request", 40), ("pricing_view", 15), ("email_opened", 1)]
)
def test_one_event_halves_every_half_life(lead, type_, points):
    result = score([ev("e1", type_, T0)], lead=lead)
    fit = 30 if lead is FIT_30 else 0
    assert result.fit == fit
    assert result.value_at(T0) == fit + points
    assert result.value_at(T0 + HALF_LIFE) == round(fit + points / 2, 2)
    assert result.value_at(T0 + 2 * HALF_LIFE) == round(fit + points / 4, 2)
    assert result.value_at(T0 + 3 * HALF_LIFE) == round(fit + points / 8, 2)
    assert math.isclose(result.engagement_at(T0 + HALF_LIFE), points / 2, rel_tol=1e-9)
    assert math.isclose(result.engagement_at(T0 + 2 * HALF_LIFE), points / 4, rel_tol=1e-9)


def test_decay_is_continuous_between_half_lives():
    result = score([ev("e1", "webinar_registered", T0)])
    assert result.value_at(T0 + HALF_LIFE / 2) == round(20 / math.sqrt(2), 2) == 14.14
    assert result.value_at(T0 + timedelta(days=1)) == round(20 * 2 ** (-1 / 14), 2) == 19.03


def test_score_value_is_judged_as_of_the_latest_event():
    # 20 points at T0 and 10 points one half-life later: as of the second event, 10 + 10.
    result = score([ev("e1", "webinar_registered", T0), ev("e2", "page_view", T0 + HALF_LIFE, PRICING_URL)])
    assert result.as_of == T0 + HALF_LIFE
    assert result.value == 20.0
    assert result.value == result.value_at(T0 + HALF_LIFE)
    # The latest event fixes the moment even when it scores nothing itself.
    later = score([ev("e1", "webinar_registered", T0), ev("e2", "email_bounced", T0 + 2 * HALF_LIFE)])
    assert later.as_of == T0 + 2 * HALF_LIFE
    assert later.value == 5.0


def test_the_stored_score_does_not_depend_on_when_it_is_computed():
    # Engagement is judged as of the latest event: value_at any moment is consistent with it.
    result = score([ev("e1", "webinar_registered", T0)])
    assert result.as_of == T0
    assert math.isclose(result.engagement, 20, rel_tol=1e-12)
    for days in (0, 3, 14, 40, 365):
        moment = T0 + timedelta(days=days)
        assert math.isclose(result.engagement_at(moment), 20 * 2 ** (-days / 14), rel_tol=1e-9)


def test_a_lead_who_went_quiet_drops_below_mql():
    # A well-fitting lead (30) views the pricing page (10) and then the pricing tour (15) an hour later.
    events = [ev("e1", "page_view", T0, PRICING_URL), ev("e2", "pricing_view", T0 + timedelta(hours=1))]
    result = score(events, lead=FIT_30)
    assert result.value == round(30 + 10 * 2 ** (-1 / (14 * 24)) + 15, 2) == 54.98
    assert result.value >= SCORING.mql_threshold
    change = next_stage(SCORING, "lead", result)
    assert change is not None
    assert change.stage == "mql"
    # Six weeks (three half-lives) of silence later: 30 + 25/8, below the MQL threshold.
    six_weeks = T0 + timedelta(hours=1) + timedelta(weeks=6)
    assert result.value_at(six_weeks) == round(30 + 10 * 2 ** (-(6 * 7 * 24 + 1) / (14 * 24)) + 15 / 8, 2) == 33.12
    assert result.value_at(six_weeks) < SCORING.mql_threshold


def test_two_webinars_cross_mql_only_with_a_little_more():
    # One registration a day counts (max_per_day 1): the first has decayed a little by the second.
    two_days = score([ev("e1", "webinar_registered", T0), ev("e2", "webinar_registered", T0 + timedelta(days=1))])
    assert two_days.value == round(20 + 20 * 2 ** (-1 / 14), 2) == 39.03
    assert next_stage(SCORING, "lead", two_days) is None
    same_day = score([ev("e1", "webinar_registered", T0), ev("e2", "webinar_registered", T0 + timedelta(hours=1))])
    assert same_day.engagement_points == {"webinar_registered#0": 20}
    with_a_page_view = score(
        [
            ev("e1", "webinar_registered", T0),
            ev("e2", "webinar_registered", T0 + timedelta(days=1)),
            ev("p", "page_view", T0 + timedelta(days=1), BLOG_URL),
        ]
    )
    assert next_stage(SCORING, "lead", with_a_page_view).stage == "mql"  # type: ignore[union-attr]


@pytest.mark.parametrize("half_life", ["1h", "12h", "1d", "2d", "14d", "30d"])
def test_every_valid_half_life_scores_present_day_events(half_life):
    # Scoring accepts any half_life >= 1h; scoring an event in 2026 must work for all of them.
    scoring = Scoring(
        mql_threshold=40,
        sql_threshold=80,
        half_life=half_life,
        events={"webinar_registered": [{"points": 20, "max_total": 3}]},
    )
    result = score_lead(scoring, PLAIN, [ev("e1", "webinar_registered", T0)], BERLIN)
    assert result.value == 20
    assert result.value_at(T0 + scoring.half_life) == 10
    assert result.value_at(T0 + 2 * scoring.half_life) == 5
    assert math.isfinite(result.engagement)


# -- fit -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "title",
    ["Head of Growth", "head of growth", "HEAD OF MARKETING", "CTO", "Co-Founder", "VP Sales", "Chief of Staff"],
)
def test_job_title_keywords_match_case_insensitively(title):
    lead = make_lead(profile={"job_title": title})
    assert fit_matches(JOB_RULE, lead)
    result = score([], lead=lead)
    assert result.fit == 15
    assert result.fit_points == {"job_title contains cto|ceo|founder|head|director|vp|chief": 15}


@pytest.mark.parametrize(
    "title",
    # Keywords match whole words: "cto" hides inside "Contractor" and "Instructor", "head" in "Headhunter".
    ["Marketing Manager", "Engineer", "Growth Lead", "Contractor", "Instructor", "Headhunter"],
)
def test_job_title_without_keywords_scores_nothing(title):
    lead = make_lead(profile={"job_title": title})
    assert not fit_matches(JOB_RULE, lead)
    assert score([], lead=lead).fit == 0


def test_job_title_matching_several_keywords_counts_once():
    lead = make_lead(profile={"job_title": "Founder & CEO, Head of Everything"})
    assert score([], lead=lead).fit_points == {"job_title contains cto|ceo|founder|head|director|vp|chief": 15}


@pytest.mark.parametrize(
    ("size", "points"), [("51-200", 10), ("201-1000", 10), ("1000+", 10), ("1-10", 0), ("11-50", 0)]
)
def test_company_size_custom_field_in_list(size, points):
    lead = make_lead(custom={"company_size": size})
    assert lead.field_value("company_size") == size
    assert fit_matches(SIZE_RULE, lead) is (points > 0)
    result = score([], lead=lead)
    assert result.fit == points
    assert result.fit_points == ({"company_size in 51-200|201-1000|1000+": 10} if points else {})


@pytest.mark.parametrize(
    ("country", "points"), [("DE", 5), ("de", 5), (" nl ", 5), ("CH", 5), ("AT", 5), ("US", 0), ("DEU", 0)]
)
def test_country_in_list_case_insensitive(country, points):
    lead = make_lead(custom={"country": country})
    assert fit_matches(COUNTRY_RULE, lead) is (points > 0)
    assert score([], lead=lead).fit == points


@pytest.mark.parametrize(
    ("email", "points"),
    [
        ("someone@gmail.com", -10),
        ("Someone@GMX.de", -10),
        ("someone@outlook.com", -10),
        ("someone@web.de", -10),
        ("spy@competitor.example", -60),
        ("ada@acme.example", 0),
        ("ada@mail.gmail.com.acme.example", 0),
    ],
)
def test_email_domain_rules(email, points):
    lead = make_lead(email)
    assert lead.field_value("email_domain") == email.casefold().rpartition("@")[2]
    result = score([], lead=lead)
    assert result.fit == points
    assert result.value == points


def test_missing_fields_score_no_fit_points():
    lead = make_lead("ada@acme.example")
    for rule in SCORING.fit:
        assert not fit_matches(rule, lead)
    empty = make_lead(profile={"job_title": ""}, custom={"company_size": "", "country": ""})
    for rule in SCORING.fit:
        assert not fit_matches(rule, empty)
    assert score([], lead=lead).fit_points == {}
    assert score([], lead=empty).fit == 0


def test_fit_points_add_up():
    assert score([], lead=FIT_30).fit_points == {
        "job_title contains cto|ceo|founder|head|director|vp|chief": 15,
        "company_size in 51-200|201-1000|1000+": 10,
        "country in DE|AT|CH|NL": 5,
    }
    everything = make_lead(
        "boss@gmail.com", profile={"job_title": "Director of Sales"}, custom={"company_size": "1000+", "country": "AT"}
    )
    assert score([], lead=everything).fit == 15 + 10 + 5 - 10
    competitor = make_lead("cto@competitor.example", profile={"job_title": "CTO"}, custom={"country": "NL"})
    assert score([], lead=competitor).fit == 15 + 5 - 60


def test_equals_rule_on_a_profile_field():
    rule = FitRule.model_validate({"field": "company", "equals": "ACME GmbH", "points": 7})
    assert fit_matches(rule, make_lead(profile={"company": " acme gmbh "}))
    assert not fit_matches(rule, make_lead(profile={"company": "ACME"}))
    assert not fit_matches(rule, make_lead())


def test_fit_rule_in_alias():
    rule = FitRule.model_validate({"field": "country", "in": ["FR"], "points": 3})
    assert rule.in_ == ["FR"]
    assert fit_matches(rule, make_lead(custom={"country": "fr"}))


def test_fit_does_not_decay():
    result = score([ev("e1", "webinar_registered", T0)], lead=FIT_30)
    assert result.value == 50
    assert result.value_at(T0 + HALF_LIFE) == 40
    assert result.value_at(T0 + timedelta(days=365)) == 30.0  # engagement ~0.00035: rounds away
    assert result.value_at(T0 + timedelta(days=3650)) == 30.0
    negative = score([ev("e1", "webinar_registered", T0)], lead=make_lead("spy@competitor.example"))
    assert negative.value == -40
    assert negative.value_at(T0 + timedelta(days=365)) == -60.0


# -- next_stage ----------------------------------------------------------------------------------


@pytest.mark.parametrize("current", ["subscriber", "lead", "recycled"])
def test_reaching_mql_threshold_makes_an_mql(current):
    change = next_stage(SCORING, current, fixed(40))
    assert change is not None
    assert change.stage == "mql"
    assert "mql_threshold 40" in change.reason
    assert "40" in change.reason.split("reached")[0]  # names the score too
    assert next_stage(SCORING, current, fixed(39.99)) is None
    assert next_stage(SCORING, current, fixed(79.99)).stage == "mql"  # type: ignore[union-attr]


@pytest.mark.parametrize("current", ["subscriber", "lead", "recycled", "mql"])
def test_reaching_sql_threshold_makes_an_sql(current):
    change = next_stage(SCORING, current, fixed(80))
    assert change is not None
    assert change.stage == "sql"
    assert "sql_threshold 80" in change.reason
    assert next_stage(SCORING, current, fixed(123.5)).stage == "sql"  # type: ignore[union-attr]


def test_threshold_reason_from_a_real_score():
    result = score([ev("e1", "webinar_registered", T0), ev("e2", "pricing_view", T0)], lead=FIT_30)
    assert result.value == 65
    change = next_stage(SCORING, "lead", result)
    assert change is not None
    assert change.stage == "mql"
    assert change.reason == "score 65 reached mql_threshold 40"


@pytest.mark.parametrize("current", ["subscriber", "lead", "recycled", "mql"])
def test_hand_raiser_goes_to_sql_whatever_the_score(current):
    # A competitor-domain lead asking for a demo: 40 - 60 = -20, still sales-ready.
    result = score([ev("d1", "demo_request", T0)], lead=make_lead("x@competitor.example"))
    assert result.value == -20
    assert result.hand_raiser == "demo_request"
    change = next_stage(SCORING, current, result)
    assert change is not None
    assert change.stage == "sql"
    assert "demo_request" in change.reason


def test_hand_raiser_is_set_even_when_long_ago():
    result = score([ev("d1", "demo_request", T0), ev("o1", "email_opened", T0 + timedelta(days=90))])
    assert result.value < SCORING.mql_threshold
    assert result.hand_raiser == "demo_request"
    assert next_stage(SCORING, "lead", result).stage == "sql"  # type: ignore[union-attr]


def test_mql_stays_mql_below_sql_threshold():
    assert next_stage(SCORING, "mql", fixed(40)) is None
    assert next_stage(SCORING, "mql", fixed(79.99)) is None


def test_no_demotion_when_the_score_falls():
    # An MQL lead goes quiet; six weeks later an email open is scored: the score is now below 40.
    events = [ev("e1", "page_view", T0, PRICING_URL), ev("e2", "pricing_view", T0 + timedelta(hours=1))]
    events.append(ev("e3", "email_opened", T0 + timedelta(hours=1, weeks=6)))
    result = score(events, lead=FIT_30)
    assert result.value == 34.12
    assert next_stage(SCORING, "mql", result) is None
    assert next_stage(SCORING, "mql", fixed(0)) is None
    assert next_stage(SCORING, "mql", fixed(-60)) is None
    assert next_stage(SCORING, "lead", result) is None
    assert next_stage(SCORING, "subscriber", fixed(-10)) is None


def test_recycled_lead_can_go_back_up():
    assert next_stage(SCORING, "recycled", fixed(10)) is None
    assert next_stage(SCORING, "recycled", fixed(45)).stage == "mql"  # type: ignore[union-attr]
    assert next_stage(SCORING, "recycled", fixed(85)).stage == "sql"  # type: ignore[union-attr]
    hand_raised = score([ev("d1", "demo_request", T0)])
    assert next_stage(SCORING, "recycled", hand_raised).stage == "sql"  # type: ignore[union-attr]


@pytest.mark.parametrize("current", ["sql", "opportunity", "customer", "disqualified"])
def test_sales_stages_are_never_changed_by_scoring(current):
    assert current in SALES_STAGES
    hand_raised = score([ev("d1", "demo_request", T0)], lead=FIT_30)
    assert hand_raised.value == 70
    for result in (fixed(0), fixed(-60), fixed(40), fixed(80), fixed(500), hand_raised):
        assert next_stage(SCORING, current, result) is None


# -- order independence ------------------------------------------------------------------------


def test_score_lead_accepts_any_iterable_in_any_order():
    events = [
        ev("a", "page_view", T0, PRICING_URL),
        ev("b", "email_clicked", T0 + timedelta(hours=2)),
        ev("c", "demo_request", T0 + timedelta(days=1)),
        ev("d", "webinar_registered", T0 - timedelta(days=5)),
    ]
    forward = score(events, lead=FIT_30)
    assert_same_score(score(list(reversed(events)), lead=FIT_30), forward)
    assert_same_score(score_lead(SCORING, FIT_30, iter(events), BERLIN), forward)
    assert_same_score(score_lead(SCORING, FIT_30, (e for e in reversed(events)), BERLIN), forward)
    assert forward.hand_raiser == "demo_request"
    assert forward.events_counted == 4
    assert forward.as_of == T0 + timedelta(days=1)


def test_first_hand_raiser_in_time_is_reported_whatever_the_order():
    scoring = Scoring(
        mql_threshold=40,
        sql_threshold=80,
        hand_raisers=["demo_request", "contact_sales"],
        events={"demo_request": [{"points": 40}]},  # contact_sales has no points: still a hand-raiser
    )
    events = [
        ev("x1", "demo_request", T0 + timedelta(hours=1)),
        ev("x2", "contact_sales", T0),
        ev("x3", "email_opened", T0 - timedelta(hours=1)),
    ]
    for order in (events, list(reversed(events)), [events[1], events[0], events[2]], [events[2], events[0], events[1]]):
        result = score_lead(scoring, PLAIN, order, BERLIN)
        assert result.hand_raiser == "contact_sales"
        assert result.events_counted == 1
        assert result.engagement_points == {"demo_request#0": 40}
    # Same instant: decided by event id, not by input order.
    tied = [ev("b", "demo_request", T0), ev("a", "contact_sales", T0)]
    assert score_lead(scoring, PLAIN, tied, BERLIN).hand_raiser == "contact_sales"
    assert score_lead(scoring, PLAIN, list(reversed(tied)), BERLIN).hand_raiser == "contact_sales"


EVENT_TYPES = [*SCORING.events, "email_bounced", "unknown_event"]
URLS = [None, PRICING_URL, "https://www.demo.trellis.example/Pricing/team", BLOG_URL]


@st.composite
def histories(draw: st.DrawFn) -> list[ScoredEvent]:
    specs = draw(
        st.lists(
            st.tuples(
                st.sampled_from(EVENT_TYPES),
                st.sampled_from(URLS),
                # Half-hour steps over ~20 days, so same-instant ties and day boundaries are common.
                st.integers(min_value=0, max_value=20 * 48),
            ),
            max_size=40,
        )
    )
    base = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)
    return [ev(f"e{i:03d}", t, base + timedelta(minutes=30 * step), url) for i, (t, url, step) in enumerate(specs)]


LEADS = [PLAIN, FIT_30, make_lead("x@gmail.com", profile={"job_title": "Head of Growth"})]


@settings(max_examples=200, deadline=None)
@given(
    events=histories(),
    lead_index=st.integers(0, len(LEADS) - 1),
    zone=st.sampled_from([BERLIN, UTC_ZONE]),
    data=st.data(),
)
def test_property_any_order_gives_the_same_score(events, lead_index, zone, data):
    lead = LEADS[lead_index]
    reference = score_lead(SCORING, lead, events, zone)
    assert_same_score(score_lead(SCORING, lead, list(reversed(events)), zone), reference)
    for _ in range(3):
        permutation = data.draw(st.permutations(events))
        assert_same_score(score_lead(SCORING, lead, permutation, zone), reference)
    # Sanity of the reference itself.
    assert reference.events_counted <= len(events)
    assert sum(reference.engagement_points.values()) >= 0
    assert (reference.hand_raiser == "demo_request") is any(e.type == "demo_request" for e in events)
    assert reference.as_of == (max(e.at for e in events) if events else None)


@settings(max_examples=200, deadline=None)
@given(events=histories(), data=st.data())
def test_property_caps_hold_in_any_order(events, data):
    permutation = data.draw(st.permutations(events))
    result = score_lead(SCORING, PLAIN, permutation, BERLIN)
    opened = result.engagement_points.get("email_opened#0", 0)
    assert opened <= 10
    assert result.engagement_points.get("form_submitted#0", 0) <= 15
    days = {e.at.astimezone(BERLIN).date() for e in events}
    assert opened <= 2 * len(days)
    assert result.engagement_points.get("pricing_view#0", 0) <= 15 * len(days)
    assert result.engagement_points.get("page_view#0", 0) <= 10 * len(days)
    assert result.engagement_points.get("page_view#1", 0) <= 2 * 5 * len(days)
    webinar_days = {e.at.astimezone(BERLIN).date() for e in events if e.type == "webinar_registered"}
    assert result.engagement_points.get("webinar_registered#0", 0) == 20 * min(len(webinar_days), 2)
