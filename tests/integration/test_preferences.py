"""Topics and the preference centre: forms subscribe topics with consent, every email links to
``/p/{token}``, whose GET changes nothing and whose POST (a plain form) turns topics off,
pauses all mail or leaves everything; drips respect all three."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.entities import iso, lead_id_for
from testkit import items as table_of
from tests.conftest import PUBLIC_URL, START
from tests.helpers import post_form, post_json, visible_html

ANN = {"email": "ann@example.com", "first_name": "Ann", "consent": True}
BOB = {"email": "bob@example.org", "first_name": "Bob", "consent": True}
ANN_ID, BOB_ID = lead_id_for("ann@example.com"), lead_id_for("bob@example.org")
EBOOK = {"email": "ann@example.com", "first_name": "Ann", "consent": True}
DAY = 86_400


def signup(client: Any, data: dict[str, Any], form_id: str = "newsletter") -> None:
    response = post_json(client, f"/forms/{form_id}", data)
    assert response.status_code in (200, 201), response.body


def mail_to(outbox: Any, address: str) -> list[Any]:
    return [m for m in outbox() if str(m["To"]).casefold() == address.casefold()]


def preferences_url(message: Any) -> str:
    page = visible_html(message.get_body(("html",)).get_content())
    [url] = [html.unescape(u) for u in re.findall(r'href="([^"]+)"', page) if "/p/" in u]
    assert url.startswith(f"{PUBLIC_URL}/p/")
    return url[len(PUBLIC_URL) :]


def profile(table_items: Any, lead_id: str) -> dict[str, Any]:
    [item] = table_of.profiles(table_items(), lead_id)
    return item


def run_days(clock: Any, tick: Any, deliver: Any, days: int) -> None:
    for _ in range(days):
        clock.advance(DAY)
        tick()
        deliver()


@pytest.fixture
def welcomed(client: Any, deliver: Any, outbox: Any) -> Any:
    """Ann and Bob signed up for the newsletter and got the welcome."""
    signup(client, ANN)
    signup(client, BOB)
    deliver()
    [welcome] = mail_to(outbox, ANN["email"])
    return welcome


def test_a_form_subscribes_its_topics_with_the_consent_it_was_given(client, table_items):
    signup(client, ANN)
    signup(client, EBOOK, "ebook")

    lead = profile(table_items, ANN_ID)
    assert lead["topics"] == {"newsletter", "product"}
    assert lead["forms"] == {"newsletter", "ebook"}
    submissions = table_of.events(table_items(), ANN_ID, "form_submitted")
    assert sorted((e["data"]["form_id"], tuple(e["data"]["topics"])) for e in submissions) == [
        ("ebook", ("product",)),
        ("newsletter", ("newsletter",)),
    ]
    assert {e["data"]["consent_version"] for e in submissions} == {"2026-11"}


def test_every_email_links_to_the_preference_centre_and_its_page_changes_nothing(client, welcomed, table_items):
    before = table_items()
    page = client.http.get(preferences_url(welcomed))

    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    text = page.body.decode()
    assert 'name="topic_newsletter" value="on" checked' in text
    assert 'name="topic_product" value="on">' in text  # not subscribed: unticked
    assert "<script" not in text  # a plain form: it works without JavaScript
    assert table_items() == before


def test_turning_a_topic_off_takes_the_lead_out_of_its_drip(
    client, clock, tick, deliver, outbox, welcomed, table_items
):
    clock.advance(600)
    response = post_form(client, preferences_url(welcomed), {"topic_product": "on", "pause": "", "action": "save"})

    assert response.status_code == 200
    assert "Saved." in response.body.decode()
    lead = profile(table_items, ANN_ID)
    assert (lead["topics"], lead["topics_off"]) == ({"product"}, {"newsletter", "events"})
    [event] = table_of.events(table_items(), ANN_ID, "preferences_changed")
    assert event["at"] == iso(START + timedelta(seconds=600))
    assert event["data"]["topics_on"] == ["product"]
    assert event["data"]["page_version"] and event["data"]["message_id"] == "welcome.welcome"

    run_days(clock, tick, deliver, 7)
    assert len(mail_to(outbox, ANN["email"])) == 1  # the welcome only
    assert len(mail_to(outbox, BOB["email"])) == 3  # Bob's drip went on
    [enrolment] = table_of.enrolments(table_items(), "welcome", ANN_ID)
    assert (enrolment["status"], enrolment["exit_reason"]) == ("exited", "topic_off")


def test_a_strangers_submission_cannot_turn_a_topic_back_on(client, welcomed, table_items):
    post_form(client, preferences_url(welcomed), {"action": "save", "pause": ""})
    assert "topics" not in profile(table_items, ANN_ID)

    signup(client, ANN)  # anyone can type Ann's address

    lead = profile(table_items, ANN_ID)
    assert "topics" not in lead and "newsletter" in lead["topics_off"]


def test_a_pause_holds_scheduled_mail_until_it_ends(client, clock, tick, deliver, outbox, welcomed, table_items):
    response = post_form(client, preferences_url(welcomed), {"topic_newsletter": "on", "pause": "30", "action": "save"})
    assert response.status_code == 200
    assert profile(table_items, ANN_ID)["paused_until"] == iso(START + timedelta(days=30))
    assert "paused until" in response.body.decode()

    run_days(clock, tick, deliver, 10)
    assert len(mail_to(outbox, ANN["email"])) == 1
    assert len(mail_to(outbox, BOB["email"])) == 3

    run_days(clock, tick, deliver, 25)  # the pause is over: the drip resumes
    assert len(mail_to(outbox, ANN["email"])) > 1


def test_keeping_a_pause_while_changing_topics_keeps_its_end(client, clock, welcomed, table_items):
    url = preferences_url(welcomed)
    post_form(client, url, {"topic_newsletter": "on", "pause": "90", "action": "save"})
    clock.advance(DAY)
    post_form(client, url, {"topic_newsletter": "on", "topic_events": "on", "pause": "keep", "action": "save"})

    lead = profile(table_items, ANN_ID)
    assert lead["paused_until"] == iso(START + timedelta(days=90))
    assert lead["topics"] == {"newsletter", "events"}
    post_form(client, url, {"topic_newsletter": "on", "pause": "", "action": "save"})
    assert "paused_until" not in profile(table_items, ANN_ID)


def test_leaving_everything_unsubscribes_for_good(client, welcomed, table_items):
    response = post_form(client, preferences_url(welcomed), {"topic_newsletter": "on", "action": "leave"})

    assert response.status_code == 200
    assert "You are unsubscribed" in response.body.decode()
    [suppression] = [i for i in table_items() if i["pk"] == f"SUPPRESS#{ANN_ID}"]
    assert suppression["reason"] == "unsubscribed"
    assert "unsubscribed_at" in profile(table_items, ANN_ID)
    assert not table_of.events(table_items(), ANN_ID, "preferences_changed")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"topic_sports": "on", "action": "save"}, "topic_sports"),
        ({"email": "eve@example.com", "action": "save"}, "email"),
        ({"topic_newsletter": "yes please", "action": "save"}, "topic_newsletter"),
        ({"pause": "7", "action": "save"}, "pause"),
        ({"action": "delete"}, "action"),
    ],
)
def test_a_wrong_field_is_named_and_nothing_is_stored(client, welcomed, table_items, fields, field):
    before = table_items()
    response = post_form(client, preferences_url(welcomed), fields)

    assert response.status_code == 400
    assert field.replace("_", " ") in response.body.decode()
    assert table_items() == before


def test_tampered_expired_or_unknown_tokens_do_nothing(client, rt, clock, welcomed, table_items):
    url = preferences_url(welcomed)
    before = table_items()
    tampered = url[:-1] + ("A" if url[-1] != "A" else "B")
    assert client.http.get(tampered).status_code == 400
    assert post_form(client, tampered, {"action": "leave"}).status_code == 400
    stranger = rt.links.preferences("0" * 32, "welcome.welcome", clock.now())[len(PUBLIC_URL) :]
    assert client.http.get(stranger).status_code == 404
    assert post_form(client, stranger, {"action": "save"}).status_code == 404
    assert post_form(client, url, {"action": "save"}).status_code == 200  # the real one still works
    changed = [i for i in table_items() if i not in before]
    assert {i["pk"] for i in changed} == {f"LEAD#{ANN_ID}"}  # ...and only it wrote


def test_json_is_not_what_the_page_posts(client, welcomed, table_items):
    before = table_items()
    response = client.http.post(
        preferences_url(welcomed), headers={"Content-Type": "application/json"}, body=b'{"action": "leave"}'
    )
    assert response.status_code == 415
    assert table_items() == before
