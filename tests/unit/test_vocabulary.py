"""The domain words: the enums are the strings stored and served, and the stage sets follow
from the lifecycle order."""

from __future__ import annotations

import json
from typing import get_args

from chalicelib import models, vocabulary
from chalicelib.vocabulary import Stage


def test_members_are_their_strings() -> None:
    assert Stage("sql") is Stage.SQL
    assert isinstance(Stage.SQL, str)
    assert f"{Stage.MQL}" == "mql"
    assert json.dumps({"stage": Stage.CUSTOMER}) == '{"stage": "customer"}'
    assert str(vocabulary.ConsentStatus.GRANTED) == "granted"
    assert str(vocabulary.EventType.STAGE_CHANGED) == "stage_changed"


def test_the_campaign_schema_spells_the_same_stages() -> None:
    assert get_args(models.Stage) == tuple(Stage)
    assert models.CAPTURE_STAGES == vocabulary.CAPTURE_STAGES
    assert models.DEFAULT_EXIT_STAGES == vocabulary.SALES_STAGES


def test_stage_sets_follow_the_lifecycle() -> None:
    assert vocabulary.LIFECYCLE == ("subscriber", "lead", "mql", "sql", "opportunity", "customer")
    assert vocabulary.OFF_FUNNEL_STAGES == ("recycled", "disqualified")
    assert vocabulary.SALES_STAGES == ("sql", "opportunity", "customer", "disqualified")
    assert vocabulary.FEEDBACK_STAGES == ("opportunity", "customer", "disqualified", "recycled")
    assert vocabulary.FUNNEL_STAGES == ("captured", "lead", "mql", "sql", "opportunity", "customer")
    assert vocabulary.VELOCITY_STAGES == ("mql", "sql")
    assert vocabulary.SCORING_RANKS == {"subscriber": 0, "lead": 1, "recycled": 1, "mql": 2, "sql": 3}


def test_stages_reached() -> None:
    assert vocabulary.stages_reached("subscriber") == ("captured",)
    assert vocabulary.stages_reached("mql") == ("captured", "lead", "mql")
    assert vocabulary.stages_reached("disqualified") == ("disqualified",)


def test_internal_event_types() -> None:
    assert {
        "form_submitted",
        "subscription_confirmed",
        "email_opened",
        "email_clicked",
        "email_bounced",
        "email_complained",
        "unsubscribed",
        "preferences_changed",
        "stage_changed",
        "event_registered",
        "event_joined",
        "event_attended",
        "event_missed",
    } == vocabulary.INTERNAL_EVENT_TYPES
    assert vocabulary.PAGE_VIEW not in vocabulary.INTERNAL_EVENT_TYPES
