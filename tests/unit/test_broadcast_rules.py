"""Broadcast rules (pure): who is skipped and why, the variant split, the A/B winner, local time."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib.config import load_campaign
from chalicelib.entities import Broadcast, ConsentRecord, Enrolment, Suppression, Variant, iso
from chalicelib.nurture import rules
from chalicelib.nurture.broadcasts import decide, local_due, sequence_id_of, variant_index, winner_of
from testkit.leads import a_lead

DEMO = load_campaign("demo")
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # 11:00 in Berlin, inside the send window
GRANTED = ConsentRecord("granted", "2026-11", "yes", "newsletter", iso(MONDAY))


def broadcast(**fields: Any) -> Broadcast:
    values: dict[str, Any] = {
        "broadcast_id": "20261123T100000-abcdef",
        "name": "December",
        "topic": "newsletter",
        "segment": {"name": "newsletter-readers"},
        "variants": (Variant("a", "A", "email/broadcast.html"), Variant("b", "B", "email/broadcast.html")),
        "send_at": iso(MONDAY),
        "status": "sending",
        "created_at": iso(MONDAY),
        **fields,
    }
    return Broadcast(**values)


def reader(**fields: Any) -> Any:
    return a_lead("ann@example.com", at=MONDAY, **{"consent": GRANTED, "topics": ("newsletter",), **fields})


def recipient(step_index: int = 0) -> Enrolment:
    return Enrolment("lead", sequence_id_of("20261123T100000-abcdef"), "active", step_index, iso(MONDAY), iso(MONDAY))


def test_a_reader_who_wants_the_topic_gets_their_variant() -> None:
    assert decide(DEMO, broadcast(), recipient(1), reader(), None, MONDAY) == rules.Send(1, 1, None)


def test_whoever_may_not_get_it_exits_with_the_reason() -> None:
    cases = [
        (reader(), Suppression("lead", "bounced", iso(MONDAY)), broadcast(), "suppressed:bounced"),
        (reader(unsubscribed_at=iso(MONDAY)), None, broadcast(), "unsubscribed"),
        (reader(), None, broadcast(status="cancelled"), "cancelled"),
        (reader(), None, None, "cancelled"),  # the broadcast is gone
        (reader(consent=None), None, broadcast(), "no_consent"),
        (reader(topics=("product",)), None, broadcast(), "topic_off"),
        (reader(topics_off=("newsletter",)), None, broadcast(), "topic_off"),
        (reader(paused_until=iso(MONDAY + timedelta(days=3))), None, broadcast(), "paused"),
    ]
    for lead, suppression, sent, reason in cases:
        assert decide(DEMO, sent, recipient(), lead, suppression, MONDAY) == rules.Exit(reason), reason
    assert decide(DEMO, broadcast(), recipient(), None, None, MONDAY) == rules.Exit("lead_gone")


def test_outside_the_send_window_a_recipient_waits_for_it() -> None:
    saturday = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    decision = decide(DEMO, broadcast(), recipient(), reader(), None, saturday)
    assert decision == rules.Defer(datetime(2026, 11, 30, 8, 0, tzinfo=UTC), "window")  # Monday 9:00 Berlin


def test_the_rest_of_an_ab_test_waits_for_the_winner_then_gets_it() -> None:
    testing = broadcast(status="testing", test_fraction=0.2, winner_after=3600)
    assert isinstance(decide(DEMO, testing, recipient(2), reader(), None, MONDAY), rules.Defer)
    chosen = broadcast(test_fraction=0.2, winner_after=3600, winner="b")
    assert decide(DEMO, chosen, recipient(2), reader(), None, MONDAY) == rules.Send(1, 1, None)


def test_variants_are_fixed_per_lead_and_split_evenly() -> None:
    leads = [f"lead-{n}" for n in range(4000)]
    split = Counter(variant_index(lead, "b1", 4) for lead in leads)
    assert set(split) == {0, 1, 2, 3} and all(900 < n < 1100 for n in split.values())
    assert [variant_index(lead, "b1", 4) for lead in leads[:50]] == [
        variant_index(lead, "b1", 4) for lead in leads[:50]
    ]
    assert [variant_index(lead, "b1", 4) for lead in leads[:50]] != [
        variant_index(lead, "b2", 4) for lead in leads[:50]
    ]


def test_a_test_fraction_goes_first_and_the_rest_waits_for_the_winner() -> None:
    leads = [f"lead-{n}" for n in range(4000)]
    split = Counter(variant_index(lead, "b1", 2, 0.2) for lead in leads)
    assert 700 < split[0] + split[1] < 900  # about a fifth
    assert abs(split[0] - split[1]) < 120  # split evenly
    assert split[2] == 4000 - split[0] - split[1]  # the rest: the winner


def test_the_winner_has_the_best_rate_and_the_report_says_why() -> None:
    ab = broadcast(test_fraction=0.2, winner_after=3600)
    counts = {"a": {"sent": 100, "clicked": 5}, "b": {"sent": 80, "clicked": 8}}
    winner, reason = winner_of(ab, counts)
    assert winner == "b"
    assert reason == "best rate of people's clicks: a: 5 of 100 sent (5.0%), b: 8 of 80 sent (10.0%)"
    opens = broadcast(test_fraction=0.2, winner_after=3600, winner_metric="human_opens")
    assert winner_of(opens, {"a": {"sent": 10, "opened": 6, "clicked": 0}, "b": {"sent": 10, "opened": 2}})[0] == "a"
    assert winner_of(ab, {})[0] == "a"  # nothing to tell them apart: the first


def test_local_time_rolls_across_the_time_zones() -> None:
    send_at = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    berlin = local_due(send_at, "10:00", ZoneInfo("Europe/Berlin"))
    tokyo = local_due(send_at, "10:00", ZoneInfo("Asia/Tokyo"))
    new_york = local_due(send_at, "10:00", ZoneInfo("America/New_York"))
    assert berlin == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert tokyo == datetime(2026, 11, 24, 1, 0, tzinfo=UTC)  # 10:00 had passed there: the next day's
    assert new_york == datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def test_the_frequency_cap_holds_a_broadcast_only_when_the_campaign_says_so() -> None:
    from chalicelib.compiler import compile_model
    from chalicelib.models import Campaign

    raw = yaml_document()
    capped = compile_model(Campaign.model_validate({**raw, "broadcasts": {"count_toward_frequency_cap": True}}))
    just_mailed = reader(recent_sends=(iso(MONDAY - timedelta(hours=1)),))
    assert DEMO.frequency_cap is not None and DEMO.frequency_cap.max_emails == 1
    assert isinstance(decide(DEMO, broadcast(), recipient(), just_mailed, None, MONDAY), rules.Send)  # the default
    assert decide(capped, broadcast(), recipient(), just_mailed, None, MONDAY) == rules.Exit("frequency_cap")


def yaml_document() -> dict[str, Any]:
    import yaml

    from chalicelib.config import campaign_path

    document: dict[str, Any] = yaml.safe_load(campaign_path("demo").read_text(encoding="utf-8"))
    return document
