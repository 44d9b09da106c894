"""Reports: counters kept by the stream (each thing counted once), read without a Scan."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from chalicelib import aws
from chalicelib.entities import lead_id_for
from chalicelib.reports import (
    SES_BOUNCE_LIMIT,
    VELOCITY_BUCKETS,
    median_seconds,
    sequence_report,
    stages_reached,
    velocity_bucket,
)
from chalicelib.store import Counter
from tests.conftest import ADMIN_TOKEN, LambdaContext
from tests.helpers import BROWSER_UA, RequestCounter, body, post_json
from tests.integration.test_feedback import bounce

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HOUR = 3600

# -- pure rules ---------------------------------------------------------------------------------


def test_reaching_a_stage_reaches_the_funnel_below_it():
    assert stages_reached("subscriber") == ("captured",)
    assert stages_reached("lead") == ("captured", "lead")
    assert stages_reached("sql") == ("captured", "lead", "mql", "sql")
    assert stages_reached("customer")[-1] == "customer"
    assert stages_reached("recycled") == ("recycled",)
    assert stages_reached("disqualified") == ("disqualified",)


def test_velocity_buckets_are_half_open_and_the_last_is_open_ended():
    assert velocity_bucket(0) == 0
    assert velocity_bucket(59.9) == 0
    assert velocity_bucket(60) == 1
    assert velocity_bucket(VELOCITY_BUCKETS[-1] - 1) == len(VELOCITY_BUCKETS) - 1
    assert velocity_bucket(10**9) == len(VELOCITY_BUCKETS)


def test_median_is_interpolated_inside_its_bucket():
    assert median_seconds({}) is None
    two_to_four_hours = velocity_bucket(2 * HOUR)
    assert median_seconds({two_to_four_hours: 2}) == 3 * HOUR  # the middle of [2 h, 4 h)
    # 1 in the first minute, 3 in [2 h, 4 h): the median (2nd of 4) is in the upper bucket.
    median = median_seconds({0: 1, two_to_four_hours: 3})
    assert median is not None and 2 * HOUR <= median < 4 * HOUR
    assert median_seconds({len(VELOCITY_BUCKETS): 5}) == VELOCITY_BUCKETS[-1]  # "at least 90 days"


def test_rates_are_of_emails_sent_and_warnings_start_above_ses_limits(rt):
    def report(sent: int, bounced: int, complained: int) -> dict[str, Any]:
        counts = {Counter("step", ("welcome", "welcome")): {"sent": sent, "bounced": bounced, "complained": complained}}
        return sequence_report(rt.campaign, counts, {}).model_dump(mode="json")

    at_limits = report(1000, 50, 1)
    assert at_limits["deliverability"]["bounce_rate"] == SES_BOUNCE_LIMIT
    assert at_limits["deliverability"]["warnings"] == []
    above = report(1000, 51, 2)["deliverability"]
    assert [w.split()[0] for w in above["warnings"]] == ["Bounce", "Complaint"]
    assert "5.1%" in above["warnings"][0] and "0.20%" in above["warnings"][1]
    # A broadcast's emails are not the drips' rows, but SES reviews the account: they count here.
    counts = {
        Counter("step", ("welcome", "welcome")): {"sent": 900, "bounced": 9},
        Counter("step", ("_b-20261204T100000-ab12cd", "a")): {"sent": 100, "bounced": 51},
    }
    mixed = sequence_report(rt.campaign, counts, {}).model_dump(mode="json")
    assert mixed["totals"]["sent"] == 900 and mixed["deliverability"]["bounce_rate"] == 0.06
    assert [w.split()[0] for w in mixed["deliverability"]["warnings"]] == ["Bounce"]
    nothing_sent = report(0, 0, 0)
    assert nothing_sent["totals"]["rates"]["opened"] is None
    assert nothing_sent["deliverability"] == {
        "bounce_rate": None,
        "complaint_rate": None,
        "bounce_limit": 0.05,
        "complaint_limit": 0.001,
        "warnings": [],
    }


def test_every_campaign_step_has_a_row_in_order_even_before_any_send(rt):
    rows = sequence_report(rt.campaign, {}, {}).model_dump(mode="json")["steps"]
    expected = [(s, step.id) for s, seq in rt.campaign.sequences.items() for step in seq.steps]
    assert [(r["sequence_id"], r["step_id"]) for r in rows] == expected
    assert all(r["sent"] == 0 for r in rows)


# -- counting through the stream -------------------------------------------------------------------


def admin_get(client: Any, path: str) -> Any:
    response = client.http.get(path, headers=AUTH)
    assert response.status_code == 200, response.body
    return body(response)


def settle(deliver: Any) -> None:
    for _ in range(8):
        if not deliver():
            return
    raise AssertionError("the stream never went quiet")


LEADS = {
    # newsletter (subscriber), paid search
    "ann@example.com": ("newsletter", {"utm_source": "google", "utm_medium": "cpc"}),
    # ebook (lead), paid search
    "bob@example.com": ("ebook", {"utm_source": "google", "utm_medium": "cpc"}),
    # ebook, LinkedIn ads, a named campaign: will ask for a demo two hours later
    "cy@example.com": ("ebook", {"utm_source": "linkedin", "utm_medium": "paid-social", "utm_campaign": "launch"}),
    # newsletter, no attribution
    "dee@example.com": ("newsletter", {}),
}


@pytest.fixture
def campaign_run(client, rt, clock, deliver) -> dict[str, str]:
    """Four leads captured (welcome / ebook emails sent); Cy asks for a demo two hours later."""
    tokens = {}
    for email, (form, utm) in LEADS.items():
        fields = {"email": email, "first_name": email[:3].title(), "consent": True, **utm}
        response = post_json(client, f"/forms/{form}", fields)
        assert response.status_code == 200, response.body
        tokens[email] = body(response)["lead_token"]
    settle(deliver)
    clock.advance(2 * HOUR + 60)
    response = post_json(
        client, "/events", {"token": tokens["cy@example.com"], "type": "demo_request", "url": "https://x.example/demo"}
    )
    assert response.status_code == 202, response.body
    settle(deliver)
    return tokens


def test_funnel_per_campaign_and_channel_with_velocity_and_cost(client, campaign_run):
    report = admin_get(client, "/admin/reports/funnel")

    total = report["total"]
    assert report["stages"] == ["captured", "lead", "mql", "sql", "opportunity", "customer"]
    assert total["reached"] == {"captured": 4, "lead": 2, "mql": 1, "sql": 1, "opportunity": 0, "customer": 0}
    assert [c["rate"] for c in total["conversion"]] == [0.5, 0.5, 1.0, 0.0, None]
    assert total["velocity"]["sql"]["leads"] == total["velocity"]["mql"]["leads"] == 1
    # Cy became an SQL (and so an MQL) 2 h 1 min after capture: the median lies in [2 h, 4 h).
    assert 2 * HOUR <= total["velocity"]["sql"]["median_seconds"] < 4 * HOUR
    assert (report["currency"], total["spend"]) == ("EUR", 2000)
    assert (total["cost_per_lead"], total["cost_per_sql"]) == (500, 2000)

    channels = {(c["utm_source"], c["utm_medium"]): c for c in report["channels"]}
    assert set(channels) == {("google", "cpc"), ("linkedin", "paid-social"), ("(direct)", "(none)")}
    google, linkedin, direct = (
        channels["google", "cpc"],
        channels["linkedin", "paid-social"],
        channels["(direct)", "(none)"],
    )
    assert (google["reached"]["captured"], google["reached"]["lead"], google["reached"]["sql"]) == (2, 1, 0)
    assert (google["spend"], google["cost_per_lead"], google["cost_per_sql"]) == (1200, 600, None)
    assert (linkedin["reached"]["captured"], linkedin["reached"]["sql"]) == (1, 1)
    assert (linkedin["cost_per_lead"], linkedin["cost_per_sql"]) == (800, 800)
    assert linkedin["velocity"]["mql"]["leads"] == 1
    assert (direct["reached"]["captured"], direct["spend"], direct["cost_per_lead"]) == (1, None, None)

    campaigns = {c["utm_campaign"]: c["reached"]["captured"] for c in report["utm_campaigns"]}
    assert campaigns == {"(none)": 3, "launch": 1}


def test_a_redelivered_batch_counts_nothing_twice(client, clock, stream):
    from app import on_lead_change

    for email, (form, utm) in LEADS.items():
        fields = {"email": email, "first_name": "X", "consent": True, **utm}
        assert post_json(client, f"/forms/{form}", fields).status_code == 200
    delivered: list[dict[str, Any]] = []
    while records := stream.read():  # captures, then the sends they triggered
        for _ in range(3):  # Lambda retrying the whole batch
            on_lead_change({"Records": records}, LambdaContext())
        delivered += records
    once = admin_get(client, "/admin/reports/funnel")
    steps_once = admin_get(client, "/admin/reports/sequences")["steps"]

    for record in delivered[::-1]:  # and each record again, alone, out of order
        on_lead_change({"Records": [record]}, LambdaContext())

    assert admin_get(client, "/admin/reports/funnel") == once
    assert once["total"]["reached"]["captured"] == 4
    assert admin_get(client, "/admin/reports/sequences")["steps"] == steps_once
    assert sum(step["sent"] for step in steps_once) == 4


def test_reaching_a_stage_again_does_not_count_again(client, rt, campaign_run, deliver):
    cy = lead_id_for("cy@example.com")
    for stage in ("opportunity", "recycled", "opportunity"):  # sales sends Cy back, then takes Cy on again
        response = client.http.patch(
            f"/admin/leads/{cy}",
            headers={**AUTH, "Content-Type": "application/json"},
            body=json.dumps({"stage": stage}),
        )
        assert response.status_code == 200, response.body
        settle(deliver)

    total = admin_get(client, "/admin/reports/funnel")["total"]
    assert (total["reached"]["sql"], total["reached"]["opportunity"], total["off_funnel"]["recycled"]) == (1, 1, 1)


def test_email_steps_count_sends_deliveries_unique_opens_clicks_unsubscribes_and_bounces(
    client, rt, clock, campaign_run, deliver
):
    from app import on_ses_feedback

    ann, bob, dee = (lead_id_for(e) for e in ("ann@example.com", "bob@example.com", "dee@example.com"))
    now = clock.now()

    def visit(url: str, method: str = "GET", agent: str = BROWSER_UA) -> None:
        path = urlsplit(url).path.removeprefix(urlsplit(rt.settings.public_url).path)
        response = getattr(client.http, method.lower())(path, headers={"Accept": "*/*", "User-Agent": agent})
        assert response.status_code < 400, response.body

    visit(rt.links.click(ann, "welcome.welcome", "https://trellis.example/guide", now), "HEAD", "Mimecast")
    visit(rt.links.open_pixel(dee, "welcome.welcome", now), agent="Mozilla/5.0")  # Apple's proxy
    clock.advance(15 * 60)  # then the people read
    visit(rt.links.open_pixel(ann, "welcome.welcome", now))
    visit(rt.links.open_pixel(ann, "welcome.welcome", now))  # a second open of the same email
    visit(rt.links.click(ann, "welcome.welcome", "https://trellis.example/guide", now))
    visit(rt.links.unsubscribe(dee, "welcome.welcome", now), "POST")
    for _ in range(2):  # SES delivers its notifications at least once
        delivery = {"notificationType": "Delivery", "mail": bounce("ann@example.com", reference="x", key="k")["mail"]}
        delivery["mail"]["headers"][-1]["value"] = f"{ann}/welcome.welcome"
        on_ses_feedback(client.events.generate_sns_event(message=json.dumps(delivery)), LambdaContext())
    notification = bounce("bob@example.com", reference=f"{bob}/ebook-nurture.ebook-delivery", key="notificationType")
    on_ses_feedback(client.events.generate_sns_event(message=json.dumps(notification)), LambdaContext())
    settle(deliver)

    report = admin_get(client, "/admin/reports/sequences")
    steps = {(s["sequence_id"], s["step_id"]): s for s in report["steps"]}
    welcome, ebook = steps["welcome", "welcome"], steps["ebook-nurture", "ebook-delivery"]
    counts = ("sent", "delivered", "opened", "clicked", "unsubscribed", "bounced", "complained")
    assert tuple(welcome[c] for c in counts) == (2, 1, 1, 1, 1, 0, 0)
    assert tuple(ebook[c] for c in counts) == (2, 0, 0, 0, 0, 1, 0)
    # The scanner's click and Apple's open apart; the rates are people's.
    assert (welcome["machine_opened"], welcome["machine_clicked"]) == (1, 1)
    assert (ebook["machine_opened"], ebook["machine_clicked"]) == (0, 0)
    assert report["totals"]["machine_opened"] == 1 and report["totals"]["machine_clicked"] == 1
    assert welcome["rates"]["opened"] == 0.5 and welcome["rates"]["clicked"] == 0.5
    assert welcome["subject"] == rt.campaign.sequences["welcome"].steps[0].subject
    assert steps["welcome", "best-of"]["sent"] == 0
    assert report["totals"]["sent"] == 4 and report["totals"]["bounced"] == 1
    # 1 bounce in 4 sends: far above SES's 5 %.
    assert report["deliverability"]["bounce_rate"] == 0.25
    assert report["deliverability"]["warnings"] and "25.0%" in report["deliverability"]["warnings"][0]


def test_bots_blocked_are_reported(client, campaign_run):
    fields = {"email": "bot@example.com", "consent": True, "website": "http://spam.example"}
    assert post_json(client, "/forms/newsletter", fields).status_code == 200
    assert admin_get(client, "/admin/reports/funnel")["bots_blocked"] == {
        "total": 1,
        "by_form": {"newsletter": {"honeypot": 1}},
    }
    assert admin_get(client, "/admin/reports/sequences")["bots_blocked"] == 1


def test_reports_read_the_counters_without_a_scan(client, campaign_run):
    calls = RequestCounter(aws.dynamodb())
    admin_get(client, "/admin/reports/funnel")
    admin_get(client, "/admin/reports/sequences")
    assert sorted(calls.calls) == ["GetItem", "GetItem", "Query", "Query"]


# -- ad spend through the API ------------------------------------------------------------------------


def put_spend(client: Any, data: Any, headers: dict[str, str] | None = None) -> Any:
    raw = data if isinstance(data, str) else json.dumps(data)
    return client.http.put(
        "/admin/reports/spend", headers={**AUTH, "Content-Type": "application/json", **(headers or {})}, body=raw
    )


def test_spend_from_the_api_replaces_the_campaign_files(client, campaign_run):
    response = put_spend(client, {"utm_source": "google", "utm_medium": "cpc", "amount": 1500})
    assert (response.status_code, body(response)) == (
        200,
        {"utm_source": "google", "utm_medium": "cpc", "amount": 1500.0, "currency": "EUR"},
    )
    new = put_spend(client, {"utm_source": "newsletter-swap", "utm_medium": "partner", "amount": 99.5})
    assert new.status_code == 200

    report = admin_get(client, "/admin/reports/funnel")
    channels = {(c["utm_source"], c["utm_medium"]): c for c in report["channels"]}
    assert (channels["google", "cpc"]["spend"], channels["google", "cpc"]["cost_per_lead"]) == (1500, 750)
    # Spend on a channel that brought no lead yet: listed, no cost per lead.
    swap = channels["newsletter-swap", "partner"]
    assert (swap["spend"], swap["reached"]["captured"], swap["cost_per_lead"]) == (99.5, 0, None)
    assert report["total"]["spend"] == 1500 + 800 + 99.5


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"utm_source": "google", "utm_medium": "cpc", "amount": -1}, "amount"),
        ({"utm_source": "google", "utm_medium": "cpc", "amount": "12"}, "amount"),
        ({"utm_source": "google", "utm_medium": "cpc", "amount": True}, "amount"),
        ({"utm_source": "google", "utm_medium": "cpc", "amount": 1e12}, "amount"),
        ({"utm_source": "google", "utm_medium": "cpc"}, "amount"),
        ({"utm_source": "", "utm_medium": "cpc", "amount": 1}, "utm_source"),
        ({"utm_source": "google", "amount": 1}, "utm_medium"),
        ({"utm_source": "google", "utm_medium": "cpc", "amount": 1, "note": "x"}, "note"),
        ("[1, 2]", "body"),
        ("{not json", "body"),
    ],
)
def test_bad_spend_is_a_400_naming_the_field_and_stores_nothing(client, table_items, data, field):
    before = table_items()
    response = put_spend(client, data)
    assert response.status_code == 400
    assert body(response)["error"] == "validation_error" and field in body(response)["fields"]
    assert table_items() == before


def test_spend_needs_json_and_the_token(client, table_items):
    before = table_items()
    form = put_spend(client, "utm_source=google", {"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    anonymous = client.http.put(
        "/admin/reports/spend",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"utm_source": "g", "utm_medium": "c", "amount": 1}),
    )
    assert anonymous.status_code == 401
    assert table_items() == before


@pytest.mark.parametrize("path", ["/admin/reports/funnel", "/admin/reports/sequences"])
def test_reports_need_the_token(client, campaign_run, path):
    assert client.http.get(path).status_code == 401
    wrong = client.http.get(path, headers={"Authorization": "Bearer " + "x" * 40})
    assert (wrong.status_code, body(wrong)) == (401, {"error": "unauthorized"})


def test_spend_is_kept_to_the_cent_so_tiny_amounts_cannot_break_the_store(client):
    response = put_spend(client, {"utm_source": "g", "utm_medium": "c", "amount": 3.2272963109542513e-224})
    assert (response.status_code, body(response)["amount"]) == (200, 0.0)
    assert body(put_spend(client, {"utm_source": "g", "utm_medium": "c", "amount": 10.456}))["amount"] == 10.46


# -- what review found: long channels, erased leads, double opt-in, repeated feedback ----------------


def test_long_non_ascii_channels_are_counted_and_shown_in_full(client, deliver):
    source, medium = "€ Sommer-Aktion " * 12, "ŝocial ☃" * 12  # 192 and 96 characters
    fields = {"email": "eu@example.com", "consent": True, "utm_source": source[:200], "utm_medium": medium}
    assert post_json(client, "/forms/newsletter", fields).status_code == 200
    settle(deliver)
    spend = put_spend(client, {"utm_source": "€" * 100, "utm_medium": "☃" * 100, "amount": 5})
    assert spend.status_code == 200, spend.body

    channels = {(c["utm_source"], c["utm_medium"]): c for c in admin_get(client, "/admin/reports/funnel")["channels"]}
    assert channels[source[:200].strip(), medium.strip()]["reached"]["captured"] == 1
    assert channels["€" * 100, "☃" * 100]["spend"] == 5


def test_records_of_an_erased_lead_leave_nothing_behind(client, rt, clock, deliver, table_items):
    from app import on_ses_feedback

    assert post_json(client, "/forms/newsletter", {"email": "gone@example.com", "consent": True}).status_code == 200
    lead_id = lead_id_for("gone@example.com")
    assert client.http.delete(f"/admin/leads/{lead_id}", headers=AUTH).status_code == 200
    settle(deliver)  # the capture's records arrive after the erase
    delivery = {"notificationType": "Delivery", "mail": bounce("gone@example.com", reference="x", key="k")["mail"]}
    delivery["mail"]["headers"][-1]["value"] = f"{lead_id}/welcome.welcome"
    on_ses_feedback(client.events.generate_sns_event(message=json.dumps(delivery)), LambdaContext())

    assert [i["sk"] for i in table_items() if lead_id in i["pk"]] == ["SUPPRESS"]


def test_a_double_opt_in_sign_up_counts_from_its_confirmation(client, rt, deliver, tick, outbox, monkeypatch):
    form = rt.campaign.forms["newsletter"].model_copy(update={"double_opt_in": True})
    monkeypatch.setitem(rt.campaign.forms, "newsletter", form)
    assert post_json(client, "/forms/newsletter", {"email": "dot@example.com", "consent": True}).status_code == 200
    settle(deliver)
    tick()
    settle(deliver)
    funnel = admin_get(client, "/admin/reports/funnel")
    assert funnel["total"]["reached"]["captured"] == 0  # not a lead before confirming
    confirm = rt.links.confirm(lead_id_for("dot@example.com"), rt.clock.now(), rt.campaign.confirmation.expires_after)
    assert client.http.post(urlsplit(confirm).path.removeprefix("/api")).status_code == 200  # the page's button
    settle(deliver)

    assert admin_get(client, "/admin/reports/funnel")["total"]["reached"]["captured"] == 1
    confirmation = admin_get(client, "/admin/reports/sequences")["steps"]
    assert [(s["step_id"], s["sent"]) for s in confirmation if s["sequence_id"] == "_confirm"] == [("confirm", 1)]


def test_a_complaint_after_unsubscribing_still_counts(client, rt, clock, campaign_run, deliver):
    from app import on_ses_feedback
    from tests.integration.test_feedback import complaint

    dee = lead_id_for("dee@example.com")
    path = urlsplit(rt.links.unsubscribe(dee, "welcome.welcome", clock.now())).path.removeprefix("/api")
    assert client.http.post(path).status_code == 200
    notification = complaint("dee@example.com", reference=f"{dee}/welcome.welcome", key="eventType")
    for _ in range(2):  # and SES delivers it twice
        on_ses_feedback(client.events.generate_sns_event(message=json.dumps(notification)), LambdaContext())
    settle(deliver)

    welcome = {(s["sequence_id"], s["step_id"]): s for s in admin_get(client, "/admin/reports/sequences")["steps"]}
    assert (welcome["welcome", "welcome"]["unsubscribed"], welcome["welcome", "welcome"]["complained"]) == (1, 1)


def test_a_batch_of_sends_counts_each_email_once_whichever_of_them_came_before(client, rt, deliver, table_items):
    from chalicelib.entities import Message

    for n in range(3):
        assert (
            post_json(client, "/forms/newsletter", {"email": f"s{n}@example.com", "consent": True}).status_code == 200
        )
    settle(deliver)  # the welcomes went and were counted
    sent = [Message.from_item(i) for i in table_items() if i["sk"].startswith("MSG#welcome")]
    assert len(sent) == 3 and all("sent_counted_at" in i for i in table_items() if i["sk"].startswith("MSG#"))
    welcome = Counter("step", ("welcome", "welcome"))

    def counted() -> int:
        return int(rt.store.report_counters()[welcome]["sent"])

    assert rt.tally.sent(sent) == 0 and counted() == 3  # all came before: nothing moves
    other = [Message(**{**vars(m), "enrolled_at": "2027-01-01T00:00:00Z"}) for m in sent]  # never written
    assert rt.tally.sent(other) == 0 and counted() == 3  # a message that is not there counts nothing
    assert not [i for i in table_items() if i["sk"].endswith("2027-01-01T00:00:00Z")]  # and writes nothing
    # One of them not counted yet (its record still to come): the batch counts it alone.
    first = next(i for i in table_items() if i["sk"].startswith("MSG#welcome"))
    aws.dynamodb().update_item(
        TableName=rt.settings.table_name,
        Key={"pk": {"S": first["pk"]}, "sk": {"S": first["sk"]}},
        UpdateExpression="REMOVE sent_counted_at",
    )
    assert rt.tally.sent(sent) == 1 and counted() == 4
