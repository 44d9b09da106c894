"""Property: over random interleavings of captures, unsubscribes, bounces, complaints, stream
deliveries, ticks and time, no email ever reaches a suppressed or unsubscribed address after it
left, and no step is ever sent twice to the same lead."""

from __future__ import annotations

import itertools
import json
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.entities import lead_id_for
from tests.helpers import post_form, post_json

LEADS = 2  # few addresses, so operations on the same lead interleave often
_examples = itertools.count()

capture = st.tuples(st.just("capture"), st.integers(0, LEADS - 1), st.sampled_from(["newsletter", "ebook"]))
operation = st.one_of(
    capture,
    capture,
    st.tuples(st.just("tick")),
    st.tuples(st.just("unsubscribe"), st.integers(0, LEADS - 1)),
    st.tuples(st.just("bounce"), st.integers(0, LEADS - 1), st.sampled_from(["Permanent", "Transient"])),
    st.tuples(st.just("complaint"), st.integers(0, LEADS - 1)),
    st.tuples(st.just("deliver")),
    st.tuples(st.just("tick")),
    st.tuples(st.just("advance"), st.sampled_from([1, 6, 20, 24, 49, 72])),
)


# 25 random sequences of up to 30 operations on two addresses: every kind of operation, several
# times per sequence, on the same lead in either order (50 took twice the time for the same kinds).
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(operation, min_size=1, max_size=30))
def test_no_mail_after_leaving_and_no_step_twice(client, rt, clock, deliver, tick, outbox, operations):
    from app import on_ses_feedback
    from tests.conftest import LambdaContext

    # Every example gets its own addresses: the table (and the outbox) outlive examples.
    example = next(_examples)
    address = [f"ex{example}-lead{i}@example.com" for i in range(LEADS)]
    first_sent = len(outbox())
    left_at: dict[str, int] = {}  # address -> outbox length when it left

    for op in operations:
        kind = op[0]
        if kind == "capture":
            data = {"email": address[op[1]], "first_name": "P", "consent": "on"}
            post_form(client, f"/forms/{op[2]}", data) if op[1] % 2 else post_json(client, f"/forms/{op[2]}", data)
        elif kind == "unsubscribe":
            url = rt.links.unsubscribe(lead_id_for(address[op[1]]), "welcome.welcome", clock.now())
            response = client.http.post(
                url.removeprefix(rt.links.public_url),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                body="List-Unsubscribe=One-Click",
            )
            if response.status_code == 200:
                left_at.setdefault(address[op[1]], len(outbox()))
        elif kind in ("bounce", "complaint"):
            if kind == "bounce":
                notice = {
                    "notificationType": "Bounce",
                    "bounce": {"bounceType": op[2], "bouncedRecipients": [{"emailAddress": address[op[1]].upper()}]},
                    "mail": {},
                }
            else:
                notice = {
                    "notificationType": "Complaint",
                    "complaint": {"complainedRecipients": [{"emailAddress": address[op[1]]}]},
                    "mail": {},
                }
            event = client.events.generate_sns_event(message=json.dumps(notice), subject="ses")
            on_ses_feedback(event, LambdaContext())
            if kind == "complaint" or op[2] == "Permanent":
                left_at.setdefault(address[op[1]], len(outbox()))
        elif kind == "deliver":
            deliver()
        elif kind == "tick":
            tick()
        else:
            clock.advance(op[1] * 3600)

    sent = outbox()[first_sent:]
    for index, message in enumerate(sent, start=first_sent):
        recipient = message["To"]
        assert recipient not in left_at or index < left_at[recipient], f"mailed {recipient} after it left"
    references = Counter(m["X-Trellis-Reference"] for m in sent)
    assert all(count == 1 for count in references.values()), references.most_common(3)
