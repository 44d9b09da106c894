"""The preference centre's form, read as a choice (pure)."""

from __future__ import annotations

import pytest

from chalicelib.errors import ValidationFailed
from chalicelib.preferences import Choice, parse_choice

TOPICS = ("newsletter", "product", "events")


def test_ticked_boxes_are_the_topics_wanted_and_the_rest_are_off() -> None:
    choice = parse_choice({"topic_product": "on", "topic_events": "on", "pause": "", "action": "save"}, TOPICS)
    assert choice == Choice(leave=False, topics=frozenset({"product", "events"}))


def test_no_box_ticked_is_every_topic_off_and_a_pause_is_days() -> None:
    assert parse_choice({"pause": "90", "action": "save"}, TOPICS) == Choice(leave=False, pause_days=90)
    assert parse_choice({"pause": "keep"}, TOPICS) == Choice(leave=False, keep_pause=True)


def test_leave_is_the_button_not_a_box() -> None:
    assert parse_choice({"topic_newsletter": "on", "action": "leave"}, TOPICS).leave


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"topic_sports": "on"}, "topic_sports"),
        ({"topic_": "on"}, "topic_"),
        ({"email": "a@b.c"}, "email"),
        ({"topic_product": "off"}, "topic_product"),
        ({"pause": "31"}, "pause"),
        ({"pause": "-30"}, "pause"),
        ({"action": "unsubscribe"}, "action"),
    ],
)
def test_anything_else_is_named(fields: dict[str, str], named: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        parse_choice(fields, TOPICS)
    assert named in raised.value.fields
