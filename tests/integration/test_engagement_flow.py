"""Only people move scores, stages, handoffs and nurture: broken the way real inboxes break it.

Security gateways fetch every link of a message seconds after delivery (HEAD, then GET, with
their own or headless browsers' user agents), Apple's proxy fetches every pixel, and a careful
scanner looks like a browser but sweeps every link at once or follows the hidden trap link. Real
emails come out of moto's SES; their links are fetched through the API as those clients do, and
the stream is delivered (and redelivered) as Lambda would.
"""

from __future__ import annotations

import html
import re
from decimal import Decimal
from typing import Any

import boto3

from chalicelib import aws
from chalicelib.entities import lead_id_for
from testkit import items
from tests.conftest import PUBLIC_URL, LambdaContext
from tests.helpers import BROWSER, RequestCounter, body, post_json, trap_href, visible_html

DELIVERY = "ebook-nurture.ebook-delivery"
TIP = "ebook-nurture.ebook-chapter-tip"
SCANNERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
    "Mimecast",
    "Barracuda Sentinel (EE)",
    "python-requests/2.32.3",
)
IMAGE = {"Accept": "image/avif,image/webp,image/*,*/*;q=0.8"}
READ = 15 * 60  # a person opens the email and clicks a quarter of an hour after it came
_HREF = re.compile(r'href="([^"]+)"')
_IMG = re.compile(r'<img src="([^"]+/t/o/[^"]+)"')


def html_of(message: Any) -> str:
    content: str = message.get_body(("html",)).get_content()
    return content


def path(url: str) -> str:
    assert url.startswith(PUBLIC_URL + "/"), url
    return url[len(PUBLIC_URL) :]


def every_url(message: Any) -> list[str]:
    """What a scanner fetches: every href (the hidden one too) and every image of the message."""
    found = [html.unescape(u) for u in _HREF.findall(html_of(message)) + _IMG.findall(html_of(message))]
    return [u for u in found if u.startswith(PUBLIC_URL + "/t/")]


def tracked_links(message: Any) -> list[str]:
    return [html.unescape(u) for u in _HREF.findall(visible_html(html_of(message))) if "/t/c/" in u]


def pixel_of(message: Any) -> str:
    [src] = _IMG.findall(html_of(message))
    return html.unescape(src)


def sign_up(client: Any, address: str) -> str:
    response = post_json(client, "/forms/ebook", {"email": address, "first_name": "Sam", "consent": True})
    assert response.status_code == 200, response.body
    return str(body(response)["lead_id"])


def profile(settings: Any, lead_id: str) -> dict[str, Any]:
    table = boto3.resource("dynamodb").Table(settings.table_name)
    item: dict[str, Any] = table.get_item(Key=items.lead_key(lead_id), ConsistentRead=True)["Item"]
    return item


def mail(outbox: Any, address: str, subject_part: str) -> Any:
    [message] = [m for m in outbox() if m["To"] == address and subject_part in m["Subject"]]
    return message


def scan(client: Any, message: Any) -> list[int]:
    """A security gateway's sweep: HEAD then GET of every URL, a scanner's user agent each."""
    answers = []
    for n, url in enumerate(every_url(message)):
        agent = {"User-Agent": SCANNERS[n % len(SCANNERS)], **IMAGE}
        answers.append(client.http.head(path(url), headers=agent).status_code)
        answers.append(client.http.get(path(url), headers=agent).status_code)
    return answers


def sequence_row(client: Any, step: str) -> dict[str, Any]:
    from tests.conftest import ADMIN_TOKEN

    response = client.http.get("/admin/reports/sequences", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    [row] = [s for s in body(response)["steps"] if f"{s['sequence_id']}.{s['step_id']}" == step]
    return dict(row)


def engagement_points(item: dict[str, Any]) -> dict[str, Decimal]:
    return dict(item.get("score_breakdown", {}).get("engagement", {}))


READERS = 5  # per kind of machine: each reader's mail is scanned or proxied on its own


def test_scanners_and_apples_proxy_move_no_score_stage_handoff_or_step(
    client, rt, clock, settings, deliver, tick, outbox, table_items
):
    scanned = [f"reader{n}@scanned.example" for n in range(READERS)]
    apple = [f"reader{n}@mpp.example" for n in range(READERS)]
    ids = {address: sign_up(client, address) for address in scanned + apple}
    deliver()  # the ebook emails go at once
    before = {a: profile(settings, i) for a, i in ids.items()}

    clock.advance(0.5)  # within a second of delivery
    for address in scanned:
        assert set(scan(client, mail(outbox, address, "Your copy"))) <= {200, 302}  # redirected, never 5xx
    for address in apple:
        url = pixel_of(mail(outbox, address, "Your copy"))
        assert client.http.get(path(url), headers={"User-Agent": "Mozilla/5.0", **IMAGE}).status_code == 200
    deliver()

    for address, lead_id in ids.items():
        after = profile(settings, lead_id)
        assert after["score"] == before[address]["score"], address  # not one point
        assert engagement_points(after) == engagement_points(before[address]), address
        assert after["stage"] == "lead" and "clicked" not in after and "opened" not in after, address
    row = sequence_row(client, DELIVERY)
    assert (row["opened"], row["clicked"], row["machine_opened"], row["machine_clicked"]) == (
        0,
        0,
        2 * READERS,
        READERS,
    )

    # The chapter tip the next day: scanned at once too, so the demo offer (only_if clicked the
    # tip) goes to nobody...
    tips_scanned: set[str] = set()
    # The tip on day 1, the case study on day 3, the offer's turn on day 6 (a Sunday: Monday 7).
    for days in (1, 2, 4):
        clock.advance(days * 86_400)
        tick()
        deliver()
        for address in set(scanned) - tips_scanned:
            tips = [m for m in outbox() if m["To"] == address and "chapter" in m["Subject"]]
            if tips:
                clock.advance(0.5)
                scan(client, tips[0])
                tips_scanned.add(address)
        deliver()
    assert tips_scanned == set(scanned)
    assert not [m for m in outbox() if m["Subject"].startswith("Want us to show you")]
    # ...though its turn came: the offer, the last step, was skipped, the nurture completed.
    enrolments = items.enrolments(table_items(), "ebook-nurture")
    assert len(enrolments) == 2 * READERS and {e["status"] for e in enrolments} == {"completed"}
    assert not items.handoffs(table_items())
    assert all(profile(settings, i)["stage"] == "lead" for i in ids.values())

    # ...and then a person's click, with a browser a quarter of an hour after a send, counts.
    person = scanned[0]
    clock.advance(READ)
    tip = mail(outbox, person, "chapter")
    assert client.http.get(path(tracked_links(tip)[0]), headers=BROWSER).status_code == 302
    deliver()
    assert engagement_points(profile(settings, ids[person])) == {
        **engagement_points(before[person]),
        "email_clicked#0": 5,
    }
    assert profile(settings, ids[person])["clicked"] == {TIP}


def test_a_trap_hit_takes_back_the_points_of_two_human_looking_clicks_once(
    client, clock, settings, stream, outbox, table_items
):
    from app import on_lead_change

    delivered: list[dict[str, Any]] = []

    def deliver() -> None:
        records = stream.read()
        delivered.extend(records)
        if records:
            on_lead_change({"Records": records}, LambdaContext())

    lead_id = sign_up(client, "careful@scanner.example")
    deliver()
    message = mail(outbox, "careful@scanner.example", "Your copy")
    base = profile(settings, lead_id)
    first, second = tracked_links(message)

    clock.advance(30)  # late enough for a person, and a browser's user agent: human-looking
    client.http.get(path(first), headers=BROWSER)
    clock.advance(20)  # apart: not a burst
    client.http.get(path(second), headers=BROWSER)
    deliver()
    assert engagement_points(profile(settings, lead_id)) == {**engagement_points(base), "email_clicked#0": 10}
    assert sequence_row(client, DELIVERY)["clicked"] == 1

    clock.advance(1)
    assert client.http.get(path(trap_href(html_of(message))), headers=BROWSER).status_code == 302
    deliver()

    corrected = profile(settings, lead_id)
    assert engagement_points(corrected) == engagement_points(base)  # their points taken back
    assert corrected["score"] == base["score"] and "clicked" not in corrected
    row = sequence_row(client, DELIVERY)
    assert (row["clicked"], row["machine_clicked"]) == (0, 1)
    before = table_items()
    on_lead_change({"Records": delivered}, LambdaContext())  # the whole stream again
    assert table_items() == before  # rescored once: a redelivery changes nothing


def test_a_browser_looking_sweep_of_most_links_at_once_is_a_burst(client, clock, settings, deliver, outbox):
    lead_id = sign_up(client, "sweeper@example.org")
    deliver()
    message = mail(outbox, "sweeper@example.org", "Your copy")
    base = profile(settings, lead_id)

    clock.advance(30)
    for url in tracked_links(message):  # both links, a second apart
        client.http.get(path(url), headers=BROWSER)
        clock.advance(1)
    deliver()

    assert engagement_points(profile(settings, lead_id)) == engagement_points(base)
    assert sequence_row(client, DELIVERY)["machine_clicked"] == 1


def test_a_scanner_with_200_links_costs_one_write_per_hit_and_never_a_5xx(client, rt, clock, deliver):
    lead_id = sign_up(client, "many@example.org")
    deliver()
    urls = [rt.links.click(lead_id, DELIVERY, f"https://trellis.example/p/{n}", clock.now()) for n in range(200)]
    calls = RequestCounter(aws.dynamodb())

    answers = [client.http.get(path(url), headers={"User-Agent": SCANNERS[0]}).status_code for url in urls]

    assert answers == [302] * 200
    writes = [c for c in calls.calls if c in ("PutItem", "UpdateItem", "TransactWriteItems", "BatchWriteItem")]
    assert len(writes) == 200
    assert lead_id == lead_id_for("many@example.org")
