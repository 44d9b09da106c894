"""Segment rules (pure): each rule alone, all together, and the index read that holds them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from chalicelib.compiler import compile_model
from chalicelib.config import campaign_path, load_campaign
from chalicelib.entities import Touch, iso
from chalicelib.models import Campaign, Segment, segment_problems
from chalicelib.segments import IndexPlan, matches, plan
from testkit.leads import a_lead

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DEMO = load_campaign("demo")


DEMO_RAW = Campaign.model_validate(yaml.safe_load(campaign_path("demo").read_text(encoding="utf-8"))).model_dump(
    by_alias=True
)


def segment(**rules: Any) -> Any:
    """Validated as the campaign file validates it, then compiled as a cold start loads it."""
    return compile_model(Campaign.model_validate(DEMO_RAW | {"segments": {"s": rules}})).segments["s"]


def lead(**fields: Any) -> Any:
    return a_lead("ann@example.com", at=NOW - timedelta(days=10), **fields)


def test_no_rules_is_every_lead_and_reads_the_creation_index() -> None:
    assert matches(segment(), lead(), NOW)
    assert plan(segment()) == IndexPlan(None)


def test_stages_and_score_range_narrow_to_the_stage_index() -> None:
    rules = segment(stages=["mql", "sql", "mql"], score_min=10, score_max=50)
    assert plan(rules) == IndexPlan(("mql", "sql"), 10, 50)
    assert matches(rules, lead(stage="mql", score=10), NOW)
    assert not matches(rules, lead(stage="mql", score=51), NOW)
    assert not matches(rules, lead(stage="lead", score=20), NOW)


def test_created_range_narrows_the_creation_index_and_is_half_open() -> None:
    rules = segment(created_after="2026-11-01", created_before="2026-11-21T12:00:00Z")
    assert plan(rules) == IndexPlan(
        None,
        created_after=iso(datetime(2026, 11, 1, tzinfo=UTC)),
        created_before=iso(datetime(2026, 11, 21, 12, tzinfo=UTC)),
    )
    at_end = a_lead("b@example.com", at=datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    assert not matches(rules, at_end, NOW)
    at_start = a_lead("c@example.com", at=datetime(2026, 11, 1, tzinfo=UTC))
    assert matches(rules, at_start, NOW)


def test_forms_match_any_form_the_lead_submitted() -> None:
    rules = segment(forms=["newsletter"])
    assert matches(rules, lead(forms=("ebook", "newsletter")), NOW)
    assert not matches(rules, lead(forms=("ebook",)), NOW)
    touched = Touch(at=iso(NOW), form_id="newsletter")
    assert matches(rules, lead(first_touch=touched, last_touch=touched), NOW)  # before `forms` was kept


def test_topics_must_all_be_on() -> None:
    rules = segment(topics=["newsletter", "product"])
    assert matches(rules, lead(topics=("newsletter", "product", "events")), NOW)
    assert not matches(rules, lead(topics=("newsletter",)), NOW)
    assert not matches(rules, lead(topics=("newsletter", "product"), topics_off=("product",)), NOW)


def test_source_medium_and_campaign_match_either_touch_case_insensitively() -> None:
    first = Touch(at=iso(NOW), form_id="ebook", utm_source="Google", utm_medium="cpc", utm_campaign="autumn")
    last = Touch(at=iso(NOW), form_id="newsletter", utm_source="linkedin")
    someone = lead(first_touch=first, last_touch=last)
    assert matches(segment(source="google", medium="CPC", utm_campaign="Autumn"), someone, NOW)
    assert matches(segment(source="LinkedIn"), someone, NOW)
    assert not matches(segment(source="bing"), someone, NOW)
    assert not matches(segment(medium="paid-social"), someone, NOW)


def test_fields_equal_one_of_their_values_or_contain_text() -> None:
    cto = lead(profile={"job_title": "Head of Growth", "company": "Acme"}, custom={"company_size": "51-200"})
    assert matches(segment(fields={"company": "acme"}), cto, NOW)
    assert matches(segment(fields={"company_size": ["11-50", "51-200"]}), cto, NOW)
    assert matches(segment(fields={"job_title": "~head"}), cto, NOW)
    assert matches(segment(fields={"email_domain": "example.com"}), cto, NOW)
    assert not matches(segment(fields={"job_title": "~engineer"}), cto, NOW)
    assert not matches(segment(fields={"country": "DE"}), cto, NOW)  # absent never matches


def test_engaged_within_needs_a_persons_open_or_click_in_the_period() -> None:
    rules = segment(engaged_within="30d")
    assert matches(rules, lead(engaged_at=iso(NOW - timedelta(days=29))), NOW)
    assert not matches(rules, lead(engaged_at=iso(NOW - timedelta(days=31))), NOW)
    assert not matches(rules, lead(), NOW)  # never engaged (or only machines did)


def test_every_rule_must_hold() -> None:
    rules = segment(stages=["lead"], topics=["product"], engaged_within="30d")
    engaged = iso(NOW - timedelta(days=1))
    assert matches(rules, lead(topics=("product",), engaged_at=engaged), NOW)
    assert not matches(rules, lead(topics=("product",)), NOW)
    assert not matches(rules, lead(stage="mql", topics=("product",), engaged_at=engaged), NOW)


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ({"score_min": 50, "score_max": 10}, "score_min is above score_max"),
        ({"created_after": "2026-12-01", "created_before": "2026-11-01"}, "created_after is not before"),
        ({"created_after": "yesterday"}, "ISO date"),
        ({"created_after": "2026-11-01T09:00:00"}, "offset"),
        ({"stages": ["prospect"]}, "stages"),
        ({"stages": []}, "stages"),
        ({"engaged_within": "soon"}, "duration"),
        ({"colour": "blue"}, "colour"),
        ({"fields": {"job_title": []}}, "fields"),
    ],
)
def test_bad_rules_are_refused_naming_the_key(rules: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Segment.model_validate(rules)
    assert problem in str(raised.value)


def test_what_the_campaign_lacks_is_named() -> None:
    rules = Segment.model_validate({"forms": ["hackathon"], "topics": ["sports"], "fields": {"shoe_size": "44"}})
    assert segment_problems(rules, DEMO) == [
        "forms: no form named 'hackathon'",
        "topics: no topic named 'sports'",
        "fields.shoe_size: no form has this field",
    ]
    with pytest.raises(ValidationError, match=re.escape("segments.s.topics: no topic named 'sports'")):
        Campaign.model_validate(DEMO_RAW | {"segments": {"s": {"topics": ["sports"]}}})
