"""Unit tests of the pure nurture rules (chalicelib.nurture.rules): no AWS, exact datetimes.

Calendar used throughout (demo campaign: Europe/Berlin, mon-fri 09:00-17:00, cap 1 per 20h):
2026-11-23 is a Monday; Berlin is UTC+1 in November, so the window is 08:00-16:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any, Optional
from zoneinfo import ZoneInfo

import pytest

from chalicelib import campaign_types
from chalicelib.compiler import compile_model
from chalicelib.config import load_campaign
from chalicelib.entities import (
    ConsentRecord,
    Enrolment,
    Lead,
    Suppression,
    from_dynamo_value,
    iso,
    parse_iso,
    to_dynamo_value,
)
from chalicelib.models import Campaign, Condition, FrequencyCap, SendWindow, Sequence, SequenceExit, Step
from chalicelib.nurture.rules import (
    CONFIRM_SEQUENCE,
    CONFIRM_STEP,
    Advance,
    Defer,
    Exit,
    Send,
    cap_free_at,
    decide,
    earliest_send_time,
    first_step_due,
    holds,
    is_skipped,
    recent_sends_after,
    sequence_for,
    step_due,
    window_opening,
)
from testkit.leads import a_lead

DEMO = load_campaign("demo")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WINDOW = DEMO.send_window
CAP = DEMO.frequency_cap

# Monday 2026-11-23, 11:30 in Berlin: inside the demo window.
MON_INSIDE = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
ENROLLED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # the Friday before


# -- factories ---------------------------------------------------------------------------------


def make_lead(**overrides: Any) -> Lead:
    return a_lead(**{"email": "Ada@Example.COM", "at": ENROLLED, "lead_id": "lead-1", **overrides})


def make_enrolment(sequence_id: str, step_index: int = 0, enrolled_at: datetime = ENROLLED) -> Enrolment:
    return Enrolment(
        lead_id="lead-1",
        sequence_id=sequence_id,
        status="active",
        step_index=step_index,
        enrolled_at=iso(enrolled_at),
        due_at=None,
    )


def cond(**spec: Any) -> Condition:
    return Condition.model_validate(spec)


def with_sequences(campaign: Campaign = DEMO, **sequences: dict[str, Any]) -> Campaign:
    """The campaign re-validated from its dict form with extra (or replaced) sequences, compiled
    as a cold start loads it."""
    raw = campaign.model_dump(by_alias=True)
    raw["sequences"] = {**raw["sequences"], **sequences}
    return compile_model(Campaign.model_validate(raw))


def step(step_id: str, delay: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "delay": delay, "subject": f"Subject {step_id}", "template": "email/welcome.html", **extra}


def granted_consent() -> ConsentRecord:
    return ConsentRecord(status="granted", version="2026-11", text="yes", form_id="newsletter", at=iso(ENROLLED))


def pending_consent() -> ConsentRecord:
    return ConsentRecord(
        status="pending_confirmation", version="2026-11", text="yes", form_id="newsletter", at=iso(ENROLLED)
    )


def test_demo_campaign_is_what_these_tests_assume() -> None:
    assert DEMO.timezone == "Europe/Berlin"
    assert WINDOW.days == ["mon", "tue", "wed", "thu", "fri"]
    assert (WINDOW.start, WINDOW.end) == (time(9), time(17))
    assert CAP is not None
    assert (CAP.max_emails, CAP.per) == (1, timedelta(hours=20))
    assert [s.id for s in DEMO.sequences["welcome"].steps] == ["welcome", "best-of", "pricing-nudge"]
    assert [s.id for s in DEMO.sequences["ebook-nurture"].steps] == [
        "ebook-delivery",
        "ebook-chapter-tip",
        "ebook-case-study",
        "ebook-demo-offer",
    ]


# -- window_opening ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(MON_INSIDE, MON_INSIDE, id="inside-same-moment"),
        pytest.param(
            datetime(2026, 11, 23, 8, 0, tzinfo=UTC), datetime(2026, 11, 23, 8, 0, tzinfo=UTC), id="exactly-at-start"
        ),
        pytest.param(
            datetime(2026, 11, 23, 15, 59, 59, tzinfo=UTC),
            datetime(2026, 11, 23, 15, 59, 59, tzinfo=UTC),
            id="last-second-inside",
        ),
        pytest.param(
            datetime(2026, 11, 23, 6, 0, tzinfo=UTC), datetime(2026, 11, 23, 8, 0, tzinfo=UTC), id="before-start"
        ),
        pytest.param(
            datetime(2026, 11, 23, 16, 30, tzinfo=UTC), datetime(2026, 11, 24, 8, 0, tzinfo=UTC), id="after-end"
        ),
        pytest.param(
            datetime(2026, 11, 23, 16, 0, tzinfo=UTC), datetime(2026, 11, 24, 8, 0, tzinfo=UTC), id="exactly-at-end"
        ),
        pytest.param(
            datetime(2026, 11, 27, 18, 0, tzinfo=UTC), datetime(2026, 11, 30, 8, 0, tzinfo=UTC), id="friday-evening"
        ),
        pytest.param(
            datetime(2026, 11, 28, 12, 0, tzinfo=UTC), datetime(2026, 11, 30, 8, 0, tzinfo=UTC), id="saturday"
        ),
        pytest.param(datetime(2026, 11, 29, 12, 0, tzinfo=UTC), datetime(2026, 11, 30, 8, 0, tzinfo=UTC), id="sunday"),
        # Sunday 23:30 UTC is already Monday 00:30 in Berlin: the local day decides.
        pytest.param(
            datetime(2026, 11, 29, 23, 30, tzinfo=UTC),
            datetime(2026, 11, 30, 8, 0, tzinfo=UTC),
            id="utc-sunday-is-local-monday",
        ),
        # Monday 23:30 UTC is Tuesday 00:30 in Berlin: Tuesday's opening, not Monday's.
        pytest.param(
            datetime(2026, 11, 23, 23, 30, tzinfo=UTC),
            datetime(2026, 11, 24, 8, 0, tzinfo=UTC),
            id="utc-evening-is-local-next-day",
        ),
    ],
)
def test_window_opening_in_berlin(moment: datetime, expected: datetime) -> None:
    result = window_opening(moment, WINDOW, BERLIN)
    assert result == expected
    assert result.utcoffset() == timedelta(0)  # given in UTC, answered in UTC


def test_window_opening_answers_in_the_moments_own_zone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    saturday_in_tokyo = datetime(2026, 11, 28, 21, 0, tzinfo=tokyo)  # Sat 13:00 Berlin
    result = window_opening(saturday_in_tokyo, WINDOW, BERLIN)
    assert result == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert result.tzinfo is tokyo


def test_window_opening_depends_on_the_zone() -> None:
    # Monday 12:00 UTC: 13:00 in Berlin (open), 07:00 in New York (not yet).
    moment = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert window_opening(moment, WINDOW, BERLIN) == moment
    assert window_opening(moment, WINDOW, NEW_YORK) == datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


def test_window_opening_friday_afternoon_in_new_york_is_open_while_berlin_waits_for_monday() -> None:
    moment = datetime(2026, 11, 27, 21, 30, tzinfo=UTC)  # Fri 16:30 New York, Fri 22:30 Berlin
    assert window_opening(moment, WINDOW, NEW_YORK) == moment
    assert window_opening(moment, WINDOW, BERLIN) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    # and New York's own Friday evening goes to New York's Monday 09:00 (14:00 UTC)
    assert window_opening(datetime(2026, 11, 27, 22, 30, tzinfo=UTC), WINDOW, NEW_YORK) == datetime(
        2026, 11, 30, 14, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # Spring forward: Sunday 2027-03-28. Friday is CET (UTC+1), Monday CEST (UTC+2).
        pytest.param(
            datetime(2027, 3, 26, 6, 0, tzinfo=UTC), datetime(2027, 3, 26, 8, 0, tzinfo=UTC), id="spring-before"
        ),
        pytest.param(
            datetime(2027, 3, 26, 17, 0, tzinfo=UTC), datetime(2027, 3, 29, 7, 0, tzinfo=UTC), id="spring-across"
        ),
        pytest.param(
            datetime(2027, 3, 29, 6, 30, tzinfo=UTC), datetime(2027, 3, 29, 7, 0, tzinfo=UTC), id="spring-after"
        ),
        # 07:30 UTC on the Monday after is 09:30 CEST: open (it would be 08:30, closed, in CET).
        pytest.param(
            datetime(2027, 3, 29, 7, 30, tzinfo=UTC), datetime(2027, 3, 29, 7, 30, tzinfo=UTC), id="spring-open"
        ),
        # Fall back: Sunday 2026-10-25. Friday is CEST (UTC+2), Monday CET (UTC+1).
        pytest.param(
            datetime(2026, 10, 23, 5, 0, tzinfo=UTC), datetime(2026, 10, 23, 7, 0, tzinfo=UTC), id="autumn-before"
        ),
        pytest.param(
            datetime(2026, 10, 23, 16, 0, tzinfo=UTC), datetime(2026, 10, 26, 8, 0, tzinfo=UTC), id="autumn-across"
        ),
        # 07:30 UTC on the Monday after is 08:30 CET: closed (it would be open in CEST).
        pytest.param(
            datetime(2026, 10, 26, 7, 30, tzinfo=UTC), datetime(2026, 10, 26, 8, 0, tzinfo=UTC), id="autumn-closed"
        ),
        # Friday 15:30 UTC is 17:30 CEST: already closed (it would be open in CET).
        pytest.param(
            datetime(2026, 10, 23, 15, 30, tzinfo=UTC), datetime(2026, 10, 26, 8, 0, tzinfo=UTC), id="autumn-late"
        ),
    ],
)
def test_window_opening_across_dst_is_nine_local(moment: datetime, expected: datetime) -> None:
    result = window_opening(moment, WINDOW, BERLIN)
    assert result == expected
    if result != moment:
        assert result.astimezone(BERLIN).time() == time(9, 0)


def test_window_opening_on_the_dst_sundays_themselves() -> None:
    every_day = SendWindow(days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"])
    # Saturday evening before spring forward -> Sunday 09:00 CEST = 07:00 UTC
    assert window_opening(datetime(2027, 3, 27, 20, 0, tzinfo=UTC), every_day, BERLIN) == datetime(
        2027, 3, 28, 7, 0, tzinfo=UTC
    )
    # Saturday evening before fall back -> Sunday 09:00 CET = 08:00 UTC
    assert window_opening(datetime(2026, 10, 24, 16, 0, tzinfo=UTC), every_day, BERLIN) == datetime(
        2026, 10, 25, 8, 0, tzinfo=UTC
    )
    # Sunday 01:30 UTC (03:30 CEST, just after the jump) -> 07:00 UTC the same day
    assert window_opening(datetime(2027, 3, 28, 1, 30, tzinfo=UTC), every_day, BERLIN) == datetime(
        2027, 3, 28, 7, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(
            datetime(2026, 11, 23, 10, 0, tzinfo=UTC), datetime(2026, 11, 25, 8, 0, tzinfo=UTC), id="monday-to-wed"
        ),
        pytest.param(
            datetime(2026, 11, 25, 10, 0, tzinfo=UTC), datetime(2026, 11, 25, 10, 0, tzinfo=UTC), id="wed-inside"
        ),
        pytest.param(
            datetime(2026, 11, 25, 17, 0, tzinfo=UTC), datetime(2026, 12, 2, 8, 0, tzinfo=UTC), id="wed-after-a-week"
        ),
        pytest.param(datetime(2026, 11, 26, 10, 0, tzinfo=UTC), datetime(2026, 12, 2, 8, 0, tzinfo=UTC), id="thursday"),
    ],
)
def test_window_opening_with_a_single_day(moment: datetime, expected: datetime) -> None:
    wednesdays = SendWindow(days=["wed"], start=time(9), end=time(17))
    assert window_opening(moment, wednesdays, BERLIN) == expected


def test_window_opening_with_custom_hours() -> None:
    afternoons = SendWindow(days=["mon", "tue", "wed", "thu", "fri"], start=time(13, 30), end=time(14, 0))
    assert window_opening(MON_INSIDE, afternoons, BERLIN) == datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
    assert window_opening(datetime(2026, 11, 23, 12, 45, tzinfo=UTC), afternoons, BERLIN) == datetime(
        2026, 11, 23, 12, 45, tzinfo=UTC
    )
    assert window_opening(datetime(2026, 11, 23, 13, 0, tzinfo=UTC), afternoons, BERLIN) == datetime(
        2026, 11, 24, 12, 30, tzinfo=UTC
    )


# -- cap_free_at -------------------------------------------------------------------------------


def test_cap_free_at_without_a_cap_is_now() -> None:
    sends = [MON_INSIDE - timedelta(minutes=m) for m in (1, 2, 3)]
    assert cap_free_at(MON_INSIDE, None, sends) == MON_INSIDE


def test_cap_free_at_with_no_sends_is_now() -> None:
    assert cap_free_at(MON_INSIDE, CAP, []) == MON_INSIDE


def test_cap_free_at_ignores_sends_older_than_the_period() -> None:
    assert cap_free_at(MON_INSIDE, CAP, [MON_INSIDE - timedelta(hours=21)]) == MON_INSIDE
    # exactly one period ago no longer counts
    assert cap_free_at(MON_INSIDE, CAP, [MON_INSIDE - timedelta(hours=20)]) == MON_INSIDE


def test_cap_free_at_at_the_cap_is_the_send_plus_the_period() -> None:
    sent = MON_INSIDE - timedelta(hours=19)
    assert cap_free_at(MON_INSIDE, CAP, [sent]) == MON_INSIDE + timedelta(hours=1)
    assert cap_free_at(MON_INSIDE, CAP, [MON_INSIDE - timedelta(hours=20, seconds=-1)]) == MON_INSIDE + timedelta(
        seconds=1
    )


def test_cap_free_at_under_a_larger_cap_is_now() -> None:
    two_a_day = FrequencyCap(max_emails=2, per=timedelta(days=1))
    assert cap_free_at(MON_INSIDE, two_a_day, [MON_INSIDE - timedelta(hours=3)]) == MON_INSIDE
    assert (
        cap_free_at(MON_INSIDE, two_a_day, [MON_INSIDE - timedelta(hours=30), MON_INSIDE - timedelta(hours=3)])
        == MON_INSIDE
    )


def test_cap_free_at_at_a_larger_cap_waits_for_the_oldest_counted_send() -> None:
    two_a_day = FrequencyCap(max_emails=2, per=timedelta(days=1))
    sends = [MON_INSIDE - timedelta(hours=10), MON_INSIDE - timedelta(hours=30), MON_INSIDE - timedelta(hours=23)]
    # the 30h-old send is out of the period; the oldest counted (23h ago) frees a slot in 1h
    assert cap_free_at(MON_INSIDE, two_a_day, sends) == MON_INSIDE + timedelta(hours=1)


def test_cap_free_at_over_the_cap_waits_until_enough_sends_age_out() -> None:
    two_a_day = FrequencyCap(max_emails=2, per=timedelta(days=1))
    # three sends in the last day (e.g. immediate steps): two must age out before another may go
    sends = [MON_INSIDE - timedelta(hours=5), MON_INSIDE - timedelta(hours=20), MON_INSIDE - timedelta(hours=10)]
    assert cap_free_at(MON_INSIDE, two_a_day, sends) == MON_INSIDE + timedelta(hours=14)


# -- earliest_send_time ------------------------------------------------------------------------


def test_earliest_send_time_without_cap_inside_the_window_is_now() -> None:
    campaign = DEMO.model_copy(update={"frequency_cap": None})
    lead = make_lead(recent_sends=(iso(MON_INSIDE - timedelta(minutes=5)),))
    assert earliest_send_time(MON_INSIDE, campaign, lead)[0] == MON_INSIDE


def test_earliest_send_time_under_the_cap_is_now() -> None:
    lead = make_lead(recent_sends=(iso(MON_INSIDE - timedelta(hours=21)),))
    assert earliest_send_time(MON_INSIDE, DEMO, lead)[0] == MON_INSIDE


def test_earliest_send_time_at_the_cap_inside_the_window() -> None:
    lead = make_lead(recent_sends=(iso(MON_INSIDE - timedelta(hours=18)),))
    assert earliest_send_time(MON_INSIDE, DEMO, lead) == (MON_INSIDE + timedelta(hours=2), "frequency_cap")


def test_earliest_send_time_outside_the_window_reports_window() -> None:
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    lead = make_lead(recent_sends=(iso(saturday - timedelta(days=2)),))
    assert earliest_send_time(saturday, DEMO, lead) == (datetime(2026, 11, 30, 8, 0, tzinfo=UTC), "window")


def test_earliest_send_time_cap_freeing_after_hours_defers_to_next_opening() -> None:
    # A send at Monday 00:00 Berlin (23:00 UTC Sunday): the cap frees at 20:00 Berlin (19:00 UTC),
    # after the window closed, so the step waits for Tuesday 09:00 Berlin.
    sent = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)
    lead = make_lead(recent_sends=(iso(sent),))
    assert cap_free_at(MON_INSIDE, CAP, [sent]) == datetime(2026, 11, 23, 19, 0, tzinfo=UTC)
    assert earliest_send_time(MON_INSIDE, DEMO, lead) == (datetime(2026, 11, 24, 8, 0, tzinfo=UTC), "frequency_cap")


def test_earliest_send_time_cap_freeing_friday_night_defers_to_monday() -> None:
    friday = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    sent = datetime(2026, 11, 26, 23, 0, tzinfo=UTC)  # frees Friday 19:00 UTC = 20:00 Berlin
    lead = make_lead(recent_sends=(iso(sent),))
    assert earliest_send_time(friday, DEMO, lead) == (datetime(2026, 11, 30, 8, 0, tzinfo=UTC), "frequency_cap")


def test_earliest_send_time_cap_freeing_before_opening_waits_for_the_window() -> None:
    # Cap 2 per day: at Monday 15:30 UTC both slots are used; the older frees Tuesday 07:00 UTC
    # (08:00 Berlin), before the window; at Tuesday 09:00 Berlin only one send still counts.
    campaign = DEMO.model_copy(update={"frequency_cap": FrequencyCap(max_emails=2, per=timedelta(days=1))})
    now = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
    sends = (iso(datetime(2026, 11, 23, 7, 0, tzinfo=UTC)), iso(datetime(2026, 11, 23, 15, 0, tzinfo=UTC)))
    when, _ = earliest_send_time(now, campaign, make_lead(recent_sends=sends))
    assert when == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def test_earliest_send_time_uses_the_leads_time_zone() -> None:
    moment = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # 13:00 Berlin, 07:00 New York
    assert earliest_send_time(moment, DEMO, make_lead())[0] == moment
    assert earliest_send_time(moment, DEMO, make_lead(timezone="America/New_York")) == (
        datetime(2026, 11, 23, 14, 0, tzinfo=UTC),
        "window",
    )


def test_earliest_send_time_unknown_lead_zone_falls_back_to_the_campaigns() -> None:
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    lead = make_lead(timezone="Not/AZone")
    assert earliest_send_time(saturday, DEMO, lead) == (datetime(2026, 11, 30, 8, 0, tzinfo=UTC), "window")
    # 16:30 UTC Monday: 17:30 in Berlin (closed), 16:30 in UTC (open)
    late = datetime(2026, 11, 23, 16, 30, tzinfo=UTC)
    utc_campaign = DEMO.model_copy(update={"timezone": "UTC"})
    assert earliest_send_time(late, utc_campaign, lead)[0] == late
    assert earliest_send_time(late, DEMO, lead)[0] == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


# -- conditions: holds / is_skipped ------------------------------------------------------------


@pytest.mark.parametrize(
    ("company", "equals", "expected"),
    [
        ("Acme GmbH", "acme gmbh", True),
        ("Acme GmbH", "  ACME GMBH ", True),
        ("ACME GMBH", "Acme GmbH", True),
        ("Acme GmbH", "Acme", False),
        (None, "Acme GmbH", False),
    ],
)
def test_holds_field_equals_is_case_insensitive(company: Optional[str], equals: str, expected: bool) -> None:
    lead = make_lead(profile={"company": company} if company is not None else {})
    assert holds(cond(field="company", equals=equals), lead, "welcome") is expected


@pytest.mark.parametrize(
    ("equals", "value", "expected"),
    [
        pytest.param(50, 50, True, id="int-equals-matches-score"),
        pytest.param(50.0, 50, True, id="float-equals-matches-score"),
        pytest.param("50", 50, True, id="string-equals-matches-score"),
        pytest.param(51, 50, False, id="other-number"),
    ],
)
def test_holds_field_equals_numbers_on_score(equals: Any, value: int, expected: bool) -> None:
    # `{field: score, equals: 50}` in YAML: pydantic stores 50.0 (float) in Condition.equals.
    assert holds(cond(field="score", equals=equals), make_lead(score=value), "welcome") is expected


def test_holds_field_equals_number_on_custom_number_field() -> None:
    # A "number" custom field is a float at capture (10.0), a Decimal in DynamoDB, and comes back
    # as the int 10 (from_dynamo_value turns integral Decimals into ints).
    stored = from_dynamo_value(to_dynamo_value({"employees": 10.0}))
    assert stored == {"employees": 10}
    assert type(stored["employees"]) is int
    lead = make_lead(custom=stored)
    assert holds(cond(field="employees", equals=10), lead, "welcome") is True
    assert holds(cond(field="employees", equals=11), lead, "welcome") is False


def test_holds_field_equals_booleans() -> None:
    lead = make_lead(custom={"wants_demo": True})
    assert holds(cond(field="wants_demo", equals=True), lead, "welcome") is True
    assert holds(cond(field="wants_demo", equals=False), lead, "welcome") is False


@pytest.mark.parametrize(
    ("size", "expected"),
    [("51-200", True), ("11-50", True), ("1-10", False), (None, False)],
)
def test_holds_field_in(size: Optional[str], expected: bool) -> None:
    lead = make_lead(custom={"company_size": size} if size is not None else {})
    condition = cond(field="company_size", **{"in": ["11-50", "51-200"]})
    assert condition.in_ == ["11-50", "51-200"]
    assert holds(condition, lead, "welcome") is expected


def test_holds_field_in_is_case_insensitive_and_accepts_the_python_name() -> None:
    condition = Condition(field="country", in_=["de", "AT"])
    assert holds(condition, make_lead(custom={"country": "DE"}), "welcome") is True
    assert holds(condition, make_lead(custom={"country": "at "}), "welcome") is True
    assert holds(condition, make_lead(custom={"country": "CH"}), "welcome") is False


@pytest.mark.parametrize(
    ("profile", "exists", "expected"),
    [
        pytest.param({"company": "Acme"}, True, True, id="present-exists"),
        pytest.param({"company": "Acme"}, False, False, id="present-not-exists"),
        pytest.param({}, True, False, id="missing-exists"),
        pytest.param({}, False, True, id="missing-not-exists"),
        pytest.param({"company": ""}, True, False, id="empty-exists"),
        pytest.param({"company": ""}, False, True, id="empty-not-exists"),
    ],
)
def test_holds_field_exists(profile: dict[str, str], exists: bool, expected: bool) -> None:
    assert holds(cond(field="company", exists=exists), make_lead(profile=profile), "welcome") is expected


def test_holds_field_exists_counts_falsy_non_empty_values() -> None:
    # a checkbox left unticked (False) or a number 0 is a value, not a missing field
    assert holds(cond(field="opt", exists=True), make_lead(custom={"opt": False}), "welcome") is True
    assert holds(cond(field="n", exists=True), make_lead(custom={"n": 0}), "welcome") is True


def test_holds_email_domain_is_derived_from_the_identity() -> None:
    lead = make_lead(email="Ada@Example.COM", email_identity="ada@example.com")
    assert holds(cond(field="email_domain", equals="EXAMPLE.com"), lead, "welcome") is True
    assert holds(cond(field="email_domain", equals="mail.example.com"), lead, "welcome") is False
    assert holds(cond(field="email_domain", **{"in": ["gmail.com", "example.com"]}), lead, "welcome") is True
    assert holds(cond(field="email_domain", **{"in": ["gmail.com"]}), lead, "welcome") is False


def test_holds_custom_field() -> None:
    lead = make_lead(custom={"country": "DE"})
    assert holds(cond(field="country", equals="de"), lead, "welcome") is True
    assert holds(cond(field="country", equals="fr"), lead, "welcome") is False
    assert holds(cond(field="country", exists=True), lead, "welcome") is True
    assert holds(cond(field="company_size", exists=True), lead, "welcome") is False


def test_holds_built_in_lead_fields() -> None:
    lead = make_lead(stage="mql", timezone="America/New_York")
    assert holds(cond(field="stage", equals="MQL"), lead, "welcome") is True
    assert holds(cond(field="timezone", equals="america/new_york"), lead, "welcome") is True
    assert holds(cond(field="timezone", exists=True), make_lead(), "welcome") is False


@pytest.mark.parametrize(("stage", "expected"), [("mql", True), ("sql", True), ("lead", False), ("customer", False)])
def test_holds_stage_list(stage: str, expected: bool) -> None:
    assert holds(cond(stage=["mql", "sql"]), make_lead(stage=stage), "welcome") is expected


@pytest.mark.parametrize(
    ("score", "expected"),
    [(39, False), (40, True), (60, True), (80, True), (81, False)],
)
def test_holds_score_bounds_are_inclusive(score: int, expected: bool) -> None:
    assert holds(cond(score={"min": 40, "max": 80}), make_lead(score=score), "welcome") is expected


def test_holds_score_with_one_bound() -> None:
    at_least = cond(score={"min": 40})
    at_most = cond(score={"max": 10})
    assert holds(at_least, make_lead(score=40), "welcome") is True
    assert holds(at_least, make_lead(score=10_000), "welcome") is True
    assert holds(at_least, make_lead(score=39), "welcome") is False
    assert holds(at_most, make_lead(score=10), "welcome") is True
    assert holds(at_most, make_lead(score=-5), "welcome") is True
    assert holds(at_most, make_lead(score=11), "welcome") is False


def test_holds_clicked_bare_step_id_means_this_sequence() -> None:
    lead = make_lead(clicked=("ebook-nurture.ebook-chapter-tip",))
    assert holds(cond(clicked="ebook-chapter-tip"), lead, "ebook-nurture") is True
    # the same step id in another sequence is another message
    assert holds(cond(clicked="ebook-chapter-tip"), lead, "welcome") is False
    assert holds(cond(clicked="ebook-case-study"), lead, "ebook-nurture") is False


def test_holds_clicked_with_sequence_prefix() -> None:
    lead = make_lead(clicked=("welcome.best-of",))
    assert holds(cond(clicked="welcome.best-of"), lead, "ebook-nurture") is True
    assert holds(cond(clicked="welcome.best-of"), lead, "welcome") is True
    assert holds(cond(clicked="ebook-nurture.best-of"), lead, "welcome") is False


def test_holds_opened_bare_and_prefixed_and_separate_from_clicked() -> None:
    lead = make_lead(opened=("welcome.best-of",), clicked=("welcome.welcome",))
    assert holds(cond(opened="best-of"), lead, "welcome") is True
    assert holds(cond(opened="welcome.best-of"), lead, "ebook-nurture") is True
    assert holds(cond(opened="best-of"), lead, "ebook-nurture") is False
    # clicks and opens are kept apart
    assert holds(cond(opened="welcome"), lead, "welcome") is False
    assert holds(cond(clicked="best-of"), lead, "welcome") is False


def test_holds_event() -> None:
    lead = make_lead(event_types=("form_submit", "pricing_view"))
    assert holds(cond(event="pricing_view"), lead, "welcome") is True
    assert holds(cond(event="demo_request"), lead, "welcome") is False


def _step_with(**conditions: Any) -> Step:
    return Step.model_validate(step("s", "1d", **conditions))


def test_is_skipped_only_if_needs_all_conditions() -> None:
    s = _step_with(only_if=[{"field": "company", "exists": True}, {"score": {"min": 10}}])
    assert is_skipped(s, make_lead(profile={"company": "Acme"}, score=10), "x") is False
    assert is_skipped(s, make_lead(profile={"company": "Acme"}, score=9), "x") is True
    assert is_skipped(s, make_lead(score=10), "x") is True


def test_is_skipped_skip_if_needs_any_condition() -> None:
    s = _step_with(skip_if=[{"event": "pricing_view"}, {"stage": ["mql"]}])
    assert is_skipped(s, make_lead(), "x") is False
    assert is_skipped(s, make_lead(event_types=("pricing_view",)), "x") is True
    assert is_skipped(s, make_lead(stage="mql"), "x") is True


def test_is_skipped_without_conditions_is_false() -> None:
    assert is_skipped(_step_with(), make_lead(), "x") is False


def test_is_skipped_skip_if_wins_over_a_met_only_if() -> None:
    s = _step_with(only_if=[{"field": "company", "exists": True}], skip_if=[{"event": "pricing_view"}])
    assert is_skipped(s, make_lead(profile={"company": "Acme"}), "x") is False
    assert is_skipped(s, make_lead(profile={"company": "Acme"}, event_types=("pricing_view",)), "x") is True


# -- step_due ----------------------------------------------------------------------------------


def test_step_due_after_previous() -> None:
    s = Step.model_validate(step("s", "2d"))
    assert s.after == "previous"
    assert step_due(s, previous_at=MON_INSIDE, enrolled_at=ENROLLED) == datetime(2026, 11, 25, 10, 30, tzinfo=UTC)


def test_step_due_after_enrolment() -> None:
    s = Step.model_validate(step("s", "6d", after="enrolment"))
    assert step_due(s, previous_at=MON_INSIDE, enrolled_at=ENROLLED) == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_step_due_zero_delay() -> None:
    s = Step.model_validate(step("s", "0s"))
    assert step_due(s, previous_at=MON_INSIDE, enrolled_at=ENROLLED) == MON_INSIDE


def test_first_step_due_counts_from_when_the_enrolment_starts() -> None:
    # Whatever the first step's "after" says: the sequence starts at enrolment, or at confirmation.
    for after in ("previous", "enrolment"):
        seq = Sequence.model_validate({"steps": [step("a", "2h", after=after), step("b", "1d")]})
        assert first_step_due(seq, MON_INSIDE) == MON_INSIDE + timedelta(hours=2)


def test_first_step_due_immediately_for_a_zero_delay() -> None:
    seq = Sequence.model_validate({"steps": [step("a", "0s")]})
    assert first_step_due(seq, MON_INSIDE) == MON_INSIDE


# -- sequence_for ------------------------------------------------------------------------------


def test_sequence_for_campaign_sequences() -> None:
    assert sequence_for(DEMO, "welcome") is DEMO.sequences["welcome"]
    assert sequence_for(DEMO, "no-such-sequence") is None


def test_sequence_for_confirm_pseudo_sequence() -> None:
    sequence = sequence_for(DEMO, CONFIRM_SEQUENCE)
    assert sequence is not None
    assert DEMO.confirmation is not None
    assert len(sequence.steps) == 1
    only = sequence.steps[0]
    assert only.id == CONFIRM_STEP
    assert only.delay == timedelta(0)
    assert only.timing == "immediate"
    assert only.subject == DEMO.confirmation.subject == "Please confirm your subscription"
    assert only.template == DEMO.confirmation.template == "email/confirm.html"
    assert sequence.exit.stages == []
    assert sequence.exit.events == []


def test_sequence_for_confirm_without_confirmation_is_none() -> None:
    assert sequence_for(DEMO.model_copy(update={"confirmation": None}), CONFIRM_SEQUENCE) is None


# -- decide: exits -----------------------------------------------------------------------------


def test_decide_exits_when_the_lead_is_gone() -> None:
    assert decide(DEMO, make_enrolment("welcome", 1), None, None, MON_INSIDE) == Exit("lead_gone")


def test_decide_exits_when_suppressed() -> None:
    suppression = Suppression(lead_id="lead-1", reason="bounce", at=iso(ENROLLED))
    assert decide(DEMO, make_enrolment("welcome", 1), make_lead(), suppression, MON_INSIDE) == Exit("suppressed:bounce")


def test_decide_exits_when_unsubscribed() -> None:
    lead = make_lead(unsubscribed_at=iso(ENROLLED))
    assert decide(DEMO, make_enrolment("welcome", 1), lead, None, MON_INSIDE) == Exit("unsubscribed")


def test_decide_exits_when_the_sequences_topic_is_off() -> None:
    assert DEMO.sequences["welcome"].topic == "newsletter"
    lead = make_lead(topics=("product",), topics_off=("newsletter",))
    assert decide(DEMO, make_enrolment("welcome", 1), lead, None, MON_INSIDE) == Exit("topic_off")
    other_topic_off = make_lead(topics=("newsletter",), topics_off=("product",))
    assert isinstance(decide(DEMO, make_enrolment("welcome", 1), other_topic_off, None, MON_INSIDE), Send)


def test_a_pause_defers_scheduled_steps_to_its_end_and_lets_immediate_ones_go() -> None:
    until = MON_INSIDE + timedelta(days=30)
    paused = make_lead(paused_until=iso(until))
    assert decide(DEMO, make_enrolment("welcome", 1), paused, None, MON_INSIDE) == Defer(until, "paused")
    assert isinstance(decide(DEMO, make_enrolment("welcome", 0), paused, None, MON_INSIDE), Send)  # immediate
    ended = make_lead(paused_until=iso(MON_INSIDE - timedelta(seconds=1)))
    assert isinstance(decide(DEMO, make_enrolment("welcome", 1), ended, None, MON_INSIDE), Send)


def test_decide_exit_beats_an_immediate_step() -> None:
    # step 0 is immediate and due: an unsubscribe still wins
    lead = make_lead(unsubscribed_at=iso(ENROLLED))
    assert decide(DEMO, make_enrolment("welcome", 0), lead, None, MON_INSIDE) == Exit("unsubscribed")


@pytest.mark.parametrize("stage", ["sql", "opportunity", "customer", "disqualified"])
def test_decide_exits_on_default_exit_stages(stage: str) -> None:
    assert DEMO.sequences["welcome"].exit.stages == ["sql", "opportunity", "customer", "disqualified"]
    lead = make_lead(stage=stage)
    assert decide(DEMO, make_enrolment("welcome", 1), lead, None, MON_INSIDE) == Exit(f"stage:{stage}")


@pytest.mark.parametrize("stage", ["subscriber", "lead", "mql", "recycled"])
def test_decide_does_not_exit_on_other_stages(stage: str) -> None:
    lead = make_lead(stage=stage)
    assert decide(DEMO, make_enrolment("welcome", 1), lead, None, MON_INSIDE) == Send(
        1, 2, MON_INSIDE + timedelta(days=3)
    )


def test_decide_custom_exit_stages() -> None:
    campaign = with_sequences(custom={"steps": [step("a", "0s")], "exit": {"stages": ["mql"]}})
    assert decide(campaign, make_enrolment("custom"), make_lead(stage="mql"), None, MON_INSIDE) == Exit("stage:mql")
    # "customer" is a default exit stage, but not on this custom list
    assert decide(campaign, make_enrolment("custom"), make_lead(stage="customer"), None, MON_INSIDE) == Send(0, 1, None)


def test_decide_custom_exit_stages_via_model_copy() -> None:
    welcome = DEMO.sequences["welcome"]
    custom = welcome.model_copy(update={"exit": SequenceExit(stages=[], events=[])})
    campaign = DEMO.model_copy(update={"sequences": {**DEMO.sequences, "welcome": custom}})
    lead = make_lead(stage="customer", event_types=("demo_request",))
    assert decide(campaign, make_enrolment("welcome", 1), lead, None, MON_INSIDE) == Send(
        1, 2, MON_INSIDE + timedelta(days=3)
    )


def test_decide_exits_on_a_goal_event() -> None:
    lead = make_lead(event_types=("form_submit", "demo_request"))
    assert decide(DEMO, make_enrolment("ebook-nurture", 2), lead, None, MON_INSIDE) == Exit("goal:demo_request")


def test_decide_exits_when_the_sequence_was_removed() -> None:
    assert decide(DEMO, make_enrolment("retired-sequence", 1), make_lead(), None, MON_INSIDE) == Exit(
        "sequence_removed"
    )


# -- decide: the double opt-in pseudo sequence -------------------------------------------------


def test_decide_confirm_exits_when_already_confirmed() -> None:
    lead = make_lead(consent=granted_consent())
    assert decide(DEMO, make_enrolment(CONFIRM_SEQUENCE), lead, None, MON_INSIDE) == Exit("already_confirmed")


def test_decide_confirm_sends_immediately_even_at_three_on_a_sunday() -> None:
    sunday_3am_berlin = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
    lead = make_lead(
        consent=pending_consent(),
        recent_sends=(iso(sunday_3am_berlin - timedelta(minutes=1)),),  # at the cap too
    )
    assert decide(
        DEMO, make_enrolment(CONFIRM_SEQUENCE, enrolled_at=sunday_3am_berlin), lead, None, sunday_3am_berlin
    ) == (Send(0, 1, None))


def test_decide_confirm_sends_without_any_consent_record() -> None:
    assert decide(DEMO, make_enrolment(CONFIRM_SEQUENCE), make_lead(), None, MON_INSIDE) == Send(0, 1, None)


def test_decide_confirm_without_confirmation_config_is_removed() -> None:
    campaign = DEMO.model_copy(update={"confirmation": None})
    assert decide(campaign, make_enrolment(CONFIRM_SEQUENCE), make_lead(), None, MON_INSIDE) == Exit("sequence_removed")


def test_decide_confirm_still_honours_unsubscribe_and_suppression() -> None:
    suppression = Suppression(lead_id="lead-1", reason="complaint", at=iso(ENROLLED))
    assert decide(DEMO, make_enrolment(CONFIRM_SEQUENCE), make_lead(), suppression, MON_INSIDE) == Exit(
        "suppressed:complaint"
    )


# -- decide: timing ----------------------------------------------------------------------------


def test_decide_immediate_step_sends_outside_the_window_and_past_the_cap() -> None:
    saturday_night = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
    lead = make_lead(recent_sends=(iso(saturday_night - timedelta(hours=1)),))
    decision = decide(DEMO, make_enrolment("welcome", 0, enrolled_at=saturday_night), lead, None, saturday_night)
    assert decision == Send(0, 1, datetime(2026, 11, 30, 23, 0, tzinfo=UTC))


def test_decide_scheduled_step_inside_the_window_sends() -> None:
    decision = decide(DEMO, make_enrolment("welcome", 1), make_lead(), None, MON_INSIDE)
    assert decision == Send(1, 2, datetime(2026, 11, 26, 10, 30, tzinfo=UTC))


@pytest.mark.parametrize(
    ("now", "until"),
    [
        pytest.param(
            datetime(2026, 11, 28, 12, 0, tzinfo=UTC), datetime(2026, 11, 30, 8, 0, tzinfo=UTC), id="saturday"
        ),
        pytest.param(
            datetime(2026, 11, 27, 18, 0, tzinfo=UTC), datetime(2026, 11, 30, 8, 0, tzinfo=UTC), id="friday-evening"
        ),
        pytest.param(
            datetime(2026, 11, 24, 5, 0, tzinfo=UTC), datetime(2026, 11, 24, 8, 0, tzinfo=UTC), id="early-morning"
        ),
    ],
)
def test_decide_scheduled_step_outside_the_window_defers(now: datetime, until: datetime) -> None:
    assert decide(DEMO, make_enrolment("welcome", 1), make_lead(), None, now) == Defer(until, "window")


def test_decide_scheduled_step_in_the_leads_time_zone() -> None:
    moment = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # 13:00 Berlin, 07:00 New York
    lead = make_lead(timezone="America/New_York")
    assert decide(DEMO, make_enrolment("welcome", 1), lead, None, moment) == Defer(
        datetime(2026, 11, 23, 14, 0, tzinfo=UTC), "window"
    )


def test_decide_scheduled_step_at_the_cap_defers_for_the_cap() -> None:
    lead = make_lead(recent_sends=(iso(MON_INSIDE - timedelta(hours=17)),))
    assert decide(DEMO, make_enrolment("welcome", 1), lead, None, MON_INSIDE) == Defer(
        MON_INSIDE + timedelta(hours=3), "frequency_cap"
    )


def test_decide_scheduled_step_cap_after_hours_defers_to_next_morning() -> None:
    lead = make_lead(recent_sends=(iso(datetime(2026, 11, 22, 23, 0, tzinfo=UTC)),))  # frees 20:00 Berlin
    assert decide(DEMO, make_enrolment("welcome", 1), lead, None, MON_INSIDE) == Defer(
        datetime(2026, 11, 24, 8, 0, tzinfo=UTC), "frequency_cap"
    )


# -- decide: next_due --------------------------------------------------------------------------


def test_decide_send_next_due_counts_from_now_after_previous() -> None:
    # ebook-delivery (immediate) -> chapter tip 1d after it
    assert decide(DEMO, make_enrolment("ebook-nurture", 0), make_lead(), None, MON_INSIDE) == Send(
        0, 1, datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
    )
    # chapter tip -> case study 2d after it
    assert decide(DEMO, make_enrolment("ebook-nurture", 1), make_lead(), None, MON_INSIDE) == Send(
        1, 2, datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
    )


def test_decide_send_next_due_counts_from_enrolment() -> None:
    # case study -> demo offer, 6d after enrolment (Fri 2026-11-20 12:00), not 6d after now
    assert decide(DEMO, make_enrolment("ebook-nurture", 2), make_lead(), None, MON_INSIDE) == Send(
        2, 3, datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    )


def test_decide_send_next_due_from_enrolment_may_already_be_past() -> None:
    enrolled = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)
    assert decide(
        DEMO, make_enrolment("ebook-nurture", 2, enrolled_at=enrolled), make_lead(), None, MON_INSIDE
    ) == Send(2, 3, datetime(2026, 11, 16, 9, 0, tzinfo=UTC))


def test_decide_last_step_sends_with_no_next_due() -> None:
    lead = make_lead(clicked=("ebook-nurture.ebook-chapter-tip",))
    assert decide(DEMO, make_enrolment("ebook-nurture", 3), lead, None, MON_INSIDE) == Send(3, 4, None)


def test_decide_past_the_last_step_completes() -> None:
    assert decide(DEMO, make_enrolment("welcome", 3), make_lead(), None, MON_INSIDE) == Advance(3, None)


# -- decide: skipped steps ---------------------------------------------------------------------


def test_decide_only_if_not_met_on_the_last_step_completes() -> None:
    # demo offer needs a click on the chapter tip; a click elsewhere does not count
    lead = make_lead(clicked=("welcome.ebook-chapter-tip", "ebook-nurture.ebook-case-study"))
    assert decide(DEMO, make_enrolment("ebook-nurture", 3), lead, None, MON_INSIDE) == Advance(4, None)


def test_decide_skip_if_met_on_the_last_step_completes() -> None:
    lead = make_lead(event_types=("pricing_view",))
    assert decide(DEMO, make_enrolment("welcome", 2), lead, None, MON_INSIDE) == Advance(3, None)
    # without the event it would go
    assert decide(DEMO, make_enrolment("welcome", 2), make_lead(), None, MON_INSIDE) == Send(2, 3, None)


CONDITIONAL = {
    "steps": [
        step("intro", "0s", timing="immediate"),
        step("for-companies", "1d", only_if=[{"field": "company", "exists": True}]),
        step("follow-up", "2d"),
        step("last", "1d", skip_if=[{"stage": ["mql"]}]),
    ]
}


def test_decide_skipped_step_advances_to_a_future_next_step() -> None:
    campaign = with_sequences(cond_seq=CONDITIONAL)
    # no company: "for-companies" is skipped; "follow-up" is due 2d after the skip
    assert decide(campaign, make_enrolment("cond_seq", 1), make_lead(), None, MON_INSIDE) == Advance(
        2, datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
    )
    # with a company it is sent
    lead = make_lead(profile={"company": "Acme"})
    assert decide(campaign, make_enrolment("cond_seq", 1), lead, None, MON_INSIDE) == Send(
        1, 2, datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
    )


def test_decide_skip_if_met_advances() -> None:
    campaign = with_sequences(
        s={"steps": [step("a", "1d", skip_if=[{"score": {"min": 50}}]), step("b", "3d"), step("c", "1d")]}
    )
    assert decide(campaign, make_enrolment("s"), make_lead(score=50), None, MON_INSIDE) == Advance(
        1, MON_INSIDE + timedelta(days=3)
    )
    assert decide(campaign, make_enrolment("s"), make_lead(score=49), None, MON_INSIDE) == Send(
        0, 1, MON_INSIDE + timedelta(days=3)
    )


def test_decide_skipped_step_chains_to_a_due_next_step() -> None:
    campaign = with_sequences(
        chain={
            "steps": [
                step("a", "1d", only_if=[{"event": "webinar"}]),
                step("b", "0s"),
                step("c", "2d"),
            ]
        }
    )
    # "a" skipped, "b" due at once (0s after the skip): "b" is sent now, "c" 2d later
    assert decide(campaign, make_enrolment("chain"), make_lead(), None, MON_INSIDE) == Send(
        1, 2, MON_INSIDE + timedelta(days=2)
    )


def test_decide_skip_chain_through_several_steps() -> None:
    campaign = with_sequences(
        chain={
            "steps": [
                step("a", "1d", skip_if=[{"stage": ["lead"]}]),
                step("b", "0s", skip_if=[{"stage": ["lead"]}]),
                step("c", "0s", only_if=[{"stage": ["mql"]}]),
                step("d", "0s"),
                step("e", "4d", after="enrolment"),
            ]
        }
    )
    enrolled = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert decide(campaign, make_enrolment("chain", enrolled_at=enrolled), make_lead(), None, MON_INSIDE) == Send(
        3, 4, datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    )


def test_decide_skip_chain_to_a_step_due_from_enrolment() -> None:
    campaign = with_sequences(
        chain={
            "steps": [
                step("a", "0s", only_if=[{"event": "webinar"}]),
                step("b", "1d", after="enrolment"),
                step("c", "2d", after="enrolment"),
            ]
        }
    )
    # enrolled Friday: "b" was due Saturday already, so it goes now; "c" is due Sunday (past, too)
    assert decide(campaign, make_enrolment("chain"), make_lead(), None, MON_INSIDE) == Send(
        1, 2, datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    )
    # enrolled just now: "b" is a day away
    assert decide(campaign, make_enrolment("chain", enrolled_at=MON_INSIDE), make_lead(), None, MON_INSIDE) == Advance(
        1, MON_INSIDE + timedelta(days=1)
    )


def test_decide_skip_chain_then_scheduled_step_outside_the_window_defers() -> None:
    campaign = with_sequences(
        chain={"steps": [step("a", "0s", timing="immediate", only_if=[{"event": "webinar"}]), step("b", "0s")]}
    )
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert decide(campaign, make_enrolment("chain"), make_lead(), None, saturday) == Defer(
        datetime(2026, 11, 30, 8, 0, tzinfo=UTC), "window"
    )


def test_decide_all_remaining_steps_skipped_completes() -> None:
    campaign = with_sequences(
        cond_seq={
            "steps": [
                step("a", "0s"),
                step("b", "1d", only_if=[{"event": "webinar"}]),
                step("c", "0s", skip_if=[{"event": "pricing_view"}]),
                step("d", "0s", only_if=[{"score": {"min": 90}}]),
            ]
        }
    )
    lead = make_lead(event_types=("pricing_view",), score=89)
    assert decide(campaign, make_enrolment("cond_seq", 1), lead, None, MON_INSIDE) == Advance(4, None)


def test_decide_skipped_step_before_a_last_step_that_sends() -> None:
    campaign = with_sequences(cond_seq=CONDITIONAL)
    # "last" is skipped for an mql: from step 3 the enrolment completes
    assert decide(campaign, make_enrolment("cond_seq", 3), make_lead(stage="mql"), None, MON_INSIDE) == Advance(4, None)
    assert decide(campaign, make_enrolment("cond_seq", 3), make_lead(), None, MON_INSIDE) == Send(3, 4, None)


# -- recent_sends_after ------------------------------------------------------------------------


def test_recent_sends_after_keeps_only_the_cap_period_plus_the_new_send() -> None:
    sends = [
        iso(MON_INSIDE - timedelta(hours=25)),
        iso(MON_INSIDE - timedelta(hours=20)),  # exactly one period old: no longer counted
        iso(MON_INSIDE - timedelta(hours=19, minutes=59)),
        iso(MON_INSIDE - timedelta(hours=1)),
    ]
    assert recent_sends_after(sends, MON_INSIDE, CAP) == [
        iso(MON_INSIDE - timedelta(hours=19, minutes=59)),
        iso(MON_INSIDE - timedelta(hours=1)),
        iso(MON_INSIDE),
    ]


def test_recent_sends_after_from_empty() -> None:
    assert recent_sends_after([], MON_INSIDE, CAP) == ["2026-11-23T10:30:00.000000Z"]


def test_recent_sends_after_without_a_cap_keeps_one_day() -> None:
    sends = [iso(MON_INSIDE - timedelta(hours=30)), iso(MON_INSIDE - timedelta(hours=23))]
    assert recent_sends_after(sends, MON_INSIDE, None) == [iso(MON_INSIDE - timedelta(hours=23)), iso(MON_INSIDE)]


def test_recent_sends_after_with_a_longer_cap_keeps_longer() -> None:
    weekly = FrequencyCap(max_emails=3, per=timedelta(weeks=1))
    sends = [iso(MON_INSIDE - timedelta(days=8)), iso(MON_INSIDE - timedelta(days=6))]
    assert recent_sends_after(sends, MON_INSIDE, weekly) == [iso(MON_INSIDE - timedelta(days=6)), iso(MON_INSIDE)]


def test_recent_sends_after_is_capped_at_fifty_newest() -> None:
    sends = [iso(MON_INSIDE - timedelta(minutes=60 - i)) for i in range(60)]
    result = recent_sends_after(sends, MON_INSIDE, CAP)
    assert len(result) == 50
    assert result == [*sends[11:], iso(MON_INSIDE)]


def test_recent_sends_after_result_feeds_cap_free_at() -> None:
    kept = recent_sends_after([], MON_INSIDE, CAP)
    later = MON_INSIDE + timedelta(hours=2)
    assert cap_free_at(later, CAP, [parse_iso(s) for s in kept]) == MON_INSIDE + timedelta(hours=20)


def test_sequence_model_is_the_one_rules_use() -> None:
    # guards the helper: a re-validated campaign keeps the demo sequences intact
    campaign = with_sequences(cond_seq=CONDITIONAL)
    assert campaign.sequences["welcome"] == DEMO.sequences["welcome"]
    assert isinstance(campaign.sequences["cond_seq"], campaign_types.Sequence)
    assert [s.id for s in campaign.sequences["cond_seq"].steps] == ["intro", "for-companies", "follow-up", "last"]


def test_a_drip_steps_variants_split_its_leads_evenly_and_each_lead_always_gets_the_same() -> None:
    from collections import Counter

    from chalicelib.models import Step
    from chalicelib.nurture.rules import step_variant

    step = Step.model_validate(
        {
            "id": "tip",
            "delay": "1d",
            "subject": "A",
            "template": "email/a.html",
            "variants": [{"subject": "B"}, {"subject": "C", "template": "email/c.html"}],
        }
    )
    chosen = [step_variant(f"lead{n}", "welcome", step) for n in range(3000)]
    counts = Counter(variant for variant, _ in chosen)
    assert set(counts) == {"a", "b", "c"} and all(900 < n < 1100 for n in counts.values())
    for variant, version in chosen[:30]:
        assert (version.subject, version.template) == {
            "a": ("A", "email/a.html"),
            "b": ("B", "email/a.html"),  # the step's own template unless the variant names one
            "c": ("C", "email/c.html"),
        }[variant]
    assert [step_variant(f"lead{n}", "welcome", step)[0] for n in range(30)] == [v for v, _ in chosen[:30]]
    # Another step of the same sequence splits the same leads independently.
    other = step.model_copy(update={"id": "tip2"})
    assert [step_variant(f"lead{n}", "welcome", other)[0] for n in range(60)] != [v for v, _ in chosen[:60]]
    plain = step.model_copy(update={"variants": []})
    assert step_variant("lead1", "welcome", plain) == ("a", plain)
