"""A drip step with variants on moto (the demo's ebook case study tests two subject lines): each
lead gets one, fixed and split evenly, its message still ``<sequence>.<step>``, and the sequence
report counts each variant, its feedback included."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from chalicelib.entities import lead_id_for
from chalicelib.nurture.rules import sequence_for, step_variant
from tests.conftest import ADMIN_TOKEN, LambdaContext
from tests.helpers import body, post_json
from tests.integration.test_feedback import bounce

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SUBJECTS = {"a": "How a 5-person team doubled their SQLs", "b": "A 5-person team, twice the SQLs: how they did it"}


def test_a_steps_variants_go_to_an_even_fixed_split_and_are_reported_each(
    client, rt, clock, tick, deliver, outbox, table_items
):
    from app import on_ses_feedback

    emails = [f"reader{n}@example.com" for n in range(12)]
    for email in emails:
        fields = {"email": email, "first_name": "Eve", "company": "Acme", "consent": True}
        assert post_json(client, "/forms/ebook", fields).status_code == 200
    deliver()
    for _ in range(40):  # six-hour steps through the send windows until the case study went
        clock.advance(6 * 3600)
        tick()
        deliver()
        if sum(m["Subject"] in SUBJECTS.values() for m in outbox()) == len(emails):
            break

    step = next(s for s in sequence_for(rt.campaign, "ebook-nurture").steps if s.id == "ebook-case-study")
    expected = {email: step_variant(lead_id_for(email), "ebook-nurture", step)[0] for email in emails}
    got = {str(m["To"]): m["Subject"] for m in outbox() if m["Subject"] in SUBJECTS.values()}
    assert got == {email: SUBJECTS[variant] for email, variant in expected.items()}  # each lead its own, once
    split = Counter(expected.values())
    assert set(split) == {"a", "b"}
    messages = [i for i in table_items() if i["sk"].startswith("MSG#ebook-nurture.ebook-case-study#")]
    assert sorted(m["variant"] for m in messages) == sorted(expected.values())  # the message id stays the step's

    # One "b" reader bounces: the step and variant b count it, variant a does not.
    bounced = next(email for email, variant in expected.items() if variant == "b")
    notification = bounce(bounced, reference=f"{lead_id_for(bounced)}/ebook-nurture.ebook-case-study", key="eventType")
    on_ses_feedback(client.events.generate_sns_event(message=json.dumps(notification)), LambdaContext())
    deliver()

    rows = body(client.http.get("/admin/reports/sequences", headers=AUTH))["steps"]
    row: dict[str, Any] = next(r for r in rows if r["step_id"] == "ebook-case-study")
    variants = {v["variant_id"]: v for v in row["variants"]}
    assert {v: (variants[v]["subject"], variants[v]["sent"]) for v in variants} == {
        v: (SUBJECTS[v], split[v]) for v in ("a", "b")
    }
    assert row["sent"] == len(emails) == sum(v["sent"] for v in variants.values())
    assert (row["bounced"], variants["b"]["bounced"], variants["a"]["bounced"]) == (1, 1, 0)
    plain = next(r for r in rows if r["step_id"] == "ebook-chapter-tip")
    assert plain["variants"] == []  # a step without variants has no rows of them
