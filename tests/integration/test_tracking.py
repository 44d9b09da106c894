"""Email links, as recipients use them: tracked clicks, the open pixel, unsubscribe, confirmation.

Real tokens come out of real emails: a form is submitted, the dispatcher sends, and the links are
parsed from what moto's SES accepted. Edge cases mint their own with ``rt.links``.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib.entities import iso, lead_id_for
from chalicelib.tracking import LEAD_TOKEN_PARAM, MAILBOX, TRACKING_LIFETIME, LeadClaim
from testkit import items as table_of
from tests.conftest import PUBLIC_URL, START
from tests.helpers import BROWSER, body, post_json, trap_href, visible_html

READ = 15 * 60  # seconds a person takes to open the email and click: long after any scanner

ANN = {"email": "Ann.Lee@Example.com", "first_name": "Ann", "consent": True}
BOB = {"email": "bob@example.org", "first_name": "Bob", "consent": True}
ANN_ID = lead_id_for("ann.lee@example.com")
BOB_ID = lead_id_for("bob@example.org")
WELCOME = "welcome.welcome"  # "<sequence>.<step>" of the first newsletter email
GUIDE = "https://trellis.example/guides/lead-nurture-basics"  # the welcome email's one link
# What Chrome sends for an <img>; chalice (and API Gateway) need an Accept matching image/gif.
IMAGE_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
UNKNOWN_LEAD = "0" * 32

_HREF = re.compile(r'href="([^"]+)"')
_IMG = re.compile(r'<img src="([^"]+)"')


# -- helpers ----------------------------------------------------------------------------------


def signup(client: Any, data: dict[str, Any] = ANN, form_id: str = "newsletter") -> str:
    response = post_json(client, f"/forms/{form_id}", data)
    assert response.status_code in (200, 201), response.body
    lead_id: str = body(response)["lead_id"]
    return lead_id


def mail_to(outbox: Any, address: str) -> list[Any]:
    return [m for m in outbox() if str(m["To"]).casefold() == address.casefold()]


def html_part(message: Any) -> str:
    content: str = message.get_body(("html",)).get_content()
    return content


def links(message: Any) -> list[str]:
    """The links a person sees (the hidden trap link for machines left out)."""
    return [html.unescape(href) for href in _HREF.findall(visible_html(html_part(message)))]


def tracked_links(message: Any) -> list[str]:
    return [url for url in links(message) if url.startswith(f"{PUBLIC_URL}/t/c/")]


def pixel(message: Any) -> str:
    [src] = [html.unescape(s) for s in _IMG.findall(html_part(message)) if "/t/o/" in s]
    return src


def list_unsubscribe(message: Any) -> str:
    """The HTTPS URL of the List-Unsubscribe header (RFC 2369: <url>, <mailto:...>)."""
    urls = re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))
    [https] = [u for u in urls if u.startswith("https://")]
    return https


def path(url: str) -> str:
    assert url.startswith(PUBLIC_URL + "/"), url
    return url[len(PUBLIC_URL) :]


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def flip_signature(url: str) -> str:
    return url[:-1] + ("A" if url[-1] != "A" else "B")


def flip_body(url: str) -> str:
    head, token = url.rsplit("/", 1)
    i = 10  # a character inside the claims, before the "."
    return f"{head}/{token[:i]}{'A' if token[i] != 'A' else 'B'}{token[i + 1 :]}"


def profile(table_items: Any, lead_id: str) -> dict[str, Any]:
    [item] = table_of.profiles(table_items(), lead_id)
    return item


def events(table_items: Any, lead_id: str, event_type: str) -> list[dict[str, Any]]:
    return table_of.events(table_items(), lead_id, event_type)


def suppressions(table_items: Any) -> list[dict[str, Any]]:
    return [i for i in table_items() if i["pk"].startswith("SUPPRESS#")]


def enrolment(table_items: Any, lead_id: str, sequence_id: str) -> dict[str, Any]:
    [item] = table_of.enrolments(table_items(), sequence_id, lead_id)
    return item


@pytest.fixture
def welcomed(client: Any, deliver: Any, outbox: Any) -> Any:
    """Ann signed up and got the welcome email (sent at once through the stream)."""
    assert signup(client) == ANN_ID
    deliver()
    [message] = mail_to(outbox, "Ann.Lee@example.com")
    assert message["Subject"].startswith("Welcome to the Trellis newsletter")
    return message


# -- clicks -----------------------------------------------------------------------------------


def test_click_redirects_to_destination_and_records_the_click(client, clock, deliver, welcomed, table_items):
    [link] = tracked_links(welcomed)
    clock.advance(READ)

    response = client.http.get(path(link), headers=BROWSER)

    assert response.status_code == 302
    assert response.headers["Location"] == GUIDE  # a foreign page: nothing appended
    assert "no-store" in response.headers["Cache-Control"]
    [event] = events(table_items, ANN_ID, "email_clicked")
    assert event["data"] == {"message_id": WELCOME, "url": GUIDE, "signals": []}  # nothing a machine's
    assert event["at"] == iso(START + timedelta(seconds=READ))
    deliver()  # judged with the message's history, then noted for nurture
    lead = profile(table_items, ANN_ID)
    assert lead["clicked"] == {WELCOME}
    assert "email_clicked" not in lead.get("event_types", set())  # nurture reads people's clicks only


def test_a_scanners_head_and_get_are_redirected_and_recorded_as_a_machines(client, deliver, welcomed, table_items):
    [link] = tracked_links(welcomed)

    head = client.http.head(path(link), headers={"User-Agent": BROWSER["User-Agent"]})
    get = client.http.get(path(link), headers={"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"})

    assert (head.status_code, get.status_code) == (302, 302)  # a dead link would flag the mail
    assert head.headers["Location"] == get.headers["Location"] == GUIDE
    signals = sorted(tuple(e["data"]["signals"]) for e in events(table_items, ANN_ID, "email_clicked"))
    assert signals == [("agent:scanner Barracuda",), ("method:HEAD",)]
    deliver()
    assert "clicked" not in profile(table_items, ANN_ID)


def test_the_hidden_trap_link_redirects_and_is_recorded_as_a_trap_hit(client, clock, welcomed, table_items):
    trap = trap_href(html_part(welcomed))
    assert trap.startswith(f"{PUBLIC_URL}/t/c/") and trap not in tracked_links(welcomed)
    clock.advance(READ)

    response = client.http.get(path(trap), headers=BROWSER)

    assert response.status_code == 302 and response.headers["Location"] == GUIDE  # no lead token either
    [event] = events(table_items, ANN_ID, "email_clicked")
    assert event["data"]["trap"] is True and event["data"]["message_id"] == WELCOME


def test_every_link_of_the_email_is_tracked_except_our_own(welcomed):
    hrefs = links(welcomed)

    assert GUIDE not in hrefs  # the guide link went through /t/c/
    assert len(tracked_links(welcomed)) == 1
    others = [u for u in hrefs if u not in tracked_links(welcomed)]
    # Unsubscribe and the preference centre: ours, untracked.
    assert sorted(u[len(PUBLIC_URL) :][:3] for u in others) == ["/p/", "/u/"]


OWN_PAGES = ["http://127.0.0.1:8001/pricing", "http://localhost:8001/pricing?plan=pro&x=1", "HTTP://LOCALHOST:8001/p"]
FOREIGN_PAGES = [
    "https://trellis.example/pricing?utm_source=email",
    "http://127.0.0.1:9999/pricing",  # same host, other port: another origin
    "https://127.0.0.1:8001/pricing",  # other scheme: another origin
    "http://127.0.0.1:8001.evil.example/pricing",
]


def test_click_to_own_landing_page_appends_a_lead_token(client, rt, clock, welcomed):
    for destination in OWN_PAGES:
        url = rt.links.click(ANN_ID, WELCOME, destination, clock.now())
        clock.advance(READ)

        response = client.http.get(path(url), headers=BROWSER)

        assert response.status_code == 302, destination
        location = urlsplit(response.headers["Location"])
        original = urlsplit(destination)
        assert (location.scheme, location.netloc, location.path) == (original.scheme, original.netloc, original.path)
        query = parse_qs(location.query)
        [lead_token] = query.pop(LEAD_TOKEN_PARAM)
        assert query == parse_qs(original.query), destination  # what was there stays
        assert rt.signer.lead_from_token(lead_token, clock.now()) == LeadClaim(ANN_ID, MAILBOX)  # proof of the mailbox


@pytest.mark.parametrize(
    ("headers", "read"),
    [({"User-Agent": "python-requests/2.32.3"}, READ), ({}, READ), (BROWSER, 2)],
    ids=["http-library", "no-agent", "seconds-after-the-send"],
)
def test_a_machines_click_to_own_landing_page_gets_no_lead_token(client, rt, clock, welcomed, headers, read):
    # A headless scanner runs the page's script: with a lead token its page views would count.
    url = rt.links.click(ANN_ID, WELCOME, OWN_PAGES[0], clock.now())
    clock.advance(read)

    response = client.http.get(path(url), headers=headers)

    assert response.status_code == 302 and response.headers["Location"] == OWN_PAGES[0]


def test_click_to_foreign_page_appends_nothing(client, rt, clock, welcomed, table_items):
    for destination in FOREIGN_PAGES:
        url = rt.links.click(ANN_ID, WELCOME, destination, clock.now())

        response = client.http.get(path(url))

        assert response.status_code == 302, destination
        assert response.headers["Location"] == destination
    assert len(events(table_items, ANN_ID, "email_clicked")) == len(FOREIGN_PAGES)


def forged(rt: Any, clock: Any, url: str, route: str) -> dict[str, str]:
    """Ways to get ``url`` (a signed link for ``route``) wrong: tampered, or another purpose's token."""
    now = clock.now()
    token = token_of(url)
    others = {
        "/t/c/": rt.links.click(ANN_ID, WELCOME, GUIDE, now),
        "/t/o/": rt.links.open_pixel(ANN_ID, WELCOME, now),
        "/u/": rt.links.unsubscribe(ANN_ID, WELCOME, now),
        "/confirm/": rt.links.confirm(ANN_ID, now, timedelta(days=7)),
    }
    variants = {
        "signature": flip_signature(url),
        "claims": flip_body(url),
        "no-dot": f"{PUBLIC_URL}{route}{token.replace('.', '')}",
        "extra-part": f"{url}.x",
        "truncated": url[:-4],
        "lead-token": f"{PUBLIC_URL}{route}{rt.signer.lead_token(ANN_ID, now, MAILBOX)}",
    }
    for other_route, other in others.items():
        if other_route != route:
            variants[f"{other_route.strip('/')}-token"] = f"{PUBLIC_URL}{route}{token_of(other)}"
    return variants


def test_tampered_click_token_redirects_nowhere_and_records_nothing(client, rt, clock, welcomed, table_items):
    [link] = tracked_links(welcomed)
    before = table_items()

    for name, bad in forged(rt, clock, link, "/t/c/").items():
        for method in ("get", "head"):  # a scanner's HEAD is no way around the signature
            response = getattr(client.http, method)(path(bad), headers=BROWSER)

            assert response.status_code in (400, 404), (name, method)
            assert "Location" not in response.headers, (name, method)
            assert table_items() == before, (name, method)


def test_expired_click_token_redirects_nowhere_and_records_nothing(client, clock, welcomed, table_items):
    [link] = tracked_links(welcomed)
    clock.advance((TRACKING_LIFETIME + timedelta(seconds=1)).total_seconds())
    before = table_items()

    response = client.http.get(path(link))

    assert response.status_code in (400, 404)
    assert "Location" not in response.headers
    assert table_items() == before


def test_click_token_still_works_just_before_it_expires(client, clock, welcomed, table_items):
    [link] = tracked_links(welcomed)
    clock.advance((TRACKING_LIFETIME - timedelta(seconds=1)).total_seconds())

    response = client.http.get(path(link))

    assert response.status_code == 302
    assert len(events(table_items, ANN_ID, "email_clicked")) == 1


def test_click_for_unknown_lead_is_404_and_records_nothing(client, rt, clock, welcomed, table_items):
    url = rt.links.click(UNKNOWN_LEAD, WELCOME, GUIDE, clock.now())
    before = table_items()

    response = client.http.get(path(url))

    assert response.status_code == 404
    assert "Location" not in response.headers
    assert table_items() == before
    assert not [i for i in before if table_of.is_leads(i, UNKNOWN_LEAD)]


def test_signed_non_web_destination_is_refused(client, rt, clock, welcomed, table_items):
    before = table_items()

    for destination in [
        "javascript:alert(1)",
        "data:text/html,hi",
        "//evil.example/x",
        "/relative",
        "ftp://x.example/",
    ]:
        url = rt.links.click(ANN_ID, WELCOME, destination, clock.now())

        response = client.http.get(path(url))

        assert response.status_code == 400, destination
        assert "Location" not in response.headers, destination
        assert table_items() == before, destination


def test_two_clicks_record_two_events_and_one_step_in_clicked(client, clock, deliver, welcomed, table_items):
    [link] = tracked_links(welcomed)
    clock.advance(READ)

    client.http.get(path(link), headers=BROWSER)
    clock.advance(60)
    client.http.get(path(link), headers=BROWSER)
    deliver()

    assert len(events(table_items, ANN_ID, "email_clicked")) == 2
    assert profile(table_items, ANN_ID)["clicked"] == {WELCOME}


# -- opens ------------------------------------------------------------------------------------


def test_open_pixel_returns_a_gif_and_records_the_open(client, deliver, welcomed, table_items):
    response = client.http.get(path(pixel(welcomed)), headers={"Accept": "image/gif", **BROWSER})

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/gif"
    assert "no-store" in response.headers["Cache-Control"]
    assert isinstance(response.body, bytes)
    assert response.body.startswith(b"GIF89a")
    assert response.body.endswith(b";")  # the GIF trailer: a whole image
    [event] = events(table_items, ANN_ID, "email_opened")
    assert event["data"] == {"message_id": WELCOME, "signals": []}
    deliver()
    lead = profile(table_items, ANN_ID)
    assert lead["opened"] == {WELCOME}
    assert "email_opened" not in lead.get("event_types", set())


def test_apple_proxys_open_and_a_head_on_the_pixel_are_a_machines(client, deliver, welcomed, table_items):
    apple = client.http.get(path(pixel(welcomed)), headers={"Accept": IMAGE_ACCEPT, "User-Agent": "Mozilla/5.0"})
    head = client.http.head(path(pixel(welcomed)), headers={"Accept": IMAGE_ACCEPT, **BROWSER})

    assert apple.status_code == head.status_code == 200
    assert apple.body.startswith(b"GIF89a") and not head.body  # HEAD: the GET's headers, no body
    signals = sorted(tuple(e["data"]["signals"]) for e in events(table_items, ANN_ID, "email_opened"))
    assert signals == [("apple_proxy",), ("method:HEAD",)]
    deliver()
    assert "opened" not in profile(table_items, ANN_ID)


def test_open_pixel_answers_a_browsers_image_accept_header(client, welcomed, table_items):
    response = client.http.get(path(pixel(welcomed)), headers={"Accept": IMAGE_ACCEPT})

    assert response.status_code == 200
    assert response.body.startswith(b"GIF89a")
    assert len(events(table_items, ANN_ID, "email_opened")) == 1


def test_tampered_open_pixel_is_404_and_records_nothing(client, rt, clock, welcomed, table_items):
    before = table_items()
    variants = forged(rt, clock, pixel(welcomed), "/t/o/")
    variants["unknown-lead"] = rt.links.open_pixel(UNKNOWN_LEAD, WELCOME, clock.now())

    for name, bad in variants.items():
        response = client.http.get(path(bad), headers={"Accept": "image/gif"})

        assert response.status_code == 404, name
        assert table_items() == before, name


def test_expired_open_pixel_is_404_and_records_nothing(client, clock, welcomed, table_items):
    url = pixel(welcomed)
    clock.advance((TRACKING_LIFETIME + timedelta(seconds=1)).total_seconds())
    before = table_items()

    response = client.http.get(path(url), headers={"Accept": "image/gif"})

    assert response.status_code == 404
    assert table_items() == before


# -- unsubscribe ------------------------------------------------------------------------------

BOUNDARY = "----trellisTestBoundary7MA4YWxkTrZu0gW"
ONE_CLICK_BODIES = {
    "urlencoded": ("application/x-www-form-urlencoded", "List-Unsubscribe=One-Click"),
    "multipart": (
        f"multipart/form-data; boundary={BOUNDARY}",
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--{BOUNDARY}--\r\n',
    ),
}


def one_click(client: Any, url: str, encoding: str = "urlencoded") -> Any:
    content_type, payload = ONE_CLICK_BODIES[encoding]
    return client.http.post(path(url), headers={"Content-Type": content_type}, body=payload)


def test_list_unsubscribe_headers_offer_one_click(welcomed):
    url = list_unsubscribe(welcomed)

    assert url.startswith(f"{PUBLIC_URL}/u/")
    assert welcomed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert url in links(welcomed)  # the footer link is the same page


def test_unsubscribe_page_shows_a_post_form_and_changes_nothing(client, welcomed, table_items):
    before = table_items()

    response = client.http.get(path(list_unsubscribe(welcomed)))

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "no-store" in response.headers["Cache-Control"]
    page = response.body.decode()
    assert re.search(r'<form[^>]*method="post"', page, re.IGNORECASE)
    assert 'name="List-Unsubscribe"' in page and 'value="One-Click"' in page
    assert table_items() == before
    assert "unsubscribed_at" not in profile(table_items, ANN_ID)
    assert suppressions(table_items) == []


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_unsubscribe_suppresses_for_good(
    client, clock, deliver, tick, outbox, welcomed, table_items, encoding
):
    signup(client, BOB)
    deliver()
    assert len(mail_to(outbox, BOB["email"])) == 1
    clock.advance(300)

    response = one_click(client, list_unsubscribe(welcomed), encoding)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert profile(table_items, ANN_ID)["unsubscribed_at"] == iso(START + timedelta(seconds=300))
    [suppression] = suppressions(table_items)
    assert (suppression["pk"], suppression["sk"]) == (f"SUPPRESS#{ANN_ID}", "SUPPRESS")
    assert suppression["reason"] == "unsubscribed"
    [event] = events(table_items, ANN_ID, "unsubscribed")
    assert event["data"]["message_id"] == WELCOME
    assert "unsubscribed" in profile(table_items, ANN_ID)["event_types"]

    # The next steps (best-of on Wednesday, the pricing nudge deferred from Saturday to Monday)
    # go to Bob only.
    for _ in range(7):
        clock.advance(24 * 3600)
        tick()
        deliver()
    assert len(mail_to(outbox, ANN["email"])) == 1  # the welcome, nothing after
    assert len(mail_to(outbox, BOB["email"])) == 3
    assert enrolment(table_items, ANN_ID, "welcome")["status"] == "exited"


def test_unsubscribe_twice_is_fine_and_keeps_one_suppression(client, clock, welcomed, table_items):
    url = list_unsubscribe(welcomed)
    assert one_click(client, url).status_code == 200
    first = profile(table_items, ANN_ID)["unsubscribed_at"]
    clock.advance(3600)

    second = one_click(client, url, "multipart")

    assert second.status_code == 200
    [suppression] = suppressions(table_items)
    assert suppression["reason"] == "unsubscribed"
    assert suppression["at"] == first
    assert profile(table_items, ANN_ID)["unsubscribed_at"] == first  # the first time counts


def test_unsubscribe_page_button_posts_without_a_body(client, welcomed, table_items):
    # Some clients post the page's form with no body at all; the token is what counts.
    response = client.http.post(path(list_unsubscribe(welcomed)), headers={"Content-Type": "text/plain"}, body="")

    assert response.status_code == 200
    assert len(suppressions(table_items)) == 1


def test_tampered_unsubscribe_token_changes_nothing(client, rt, clock, welcomed, table_items):
    before = table_items()

    for name, bad in forged(rt, clock, list_unsubscribe(welcomed), "/u/").items():
        page = client.http.get(path(bad))
        post = one_click(client, bad)

        assert 400 <= page.status_code < 500, name
        assert 400 <= post.status_code < 500, name
        assert table_items() == before, name


def test_unsubscribe_for_unknown_lead_changes_nothing(client, rt, clock, welcomed, table_items):
    url = rt.links.unsubscribe(UNKNOWN_LEAD, WELCOME, clock.now())
    before = table_items()

    response = one_click(client, url)

    assert 400 <= response.status_code < 500
    assert table_items() == before


# -- double opt-in ----------------------------------------------------------------------------


def confirm_link(message: Any) -> str:
    [url] = [u for u in links(message) if u.startswith(f"{PUBLIC_URL}/confirm/")]
    return url


@pytest.fixture
def pending(client, deliver, tick, outbox) -> Any:
    """Ann signed up on the demo's double opt-in form and got the confirmation email, and only that."""
    assert signup(client, form_id="digest") == ANN_ID
    deliver()
    tick()
    deliver()  # the send's own record: the stream is quiet before each test looks
    [message] = outbox()
    return message


def lead_items(table_items: Any, lead_id: str) -> list[dict[str, Any]]:
    return [i for i in table_items() if table_of.is_leads(i, lead_id)]


def press_confirm(client: Any, url: str) -> Any:
    """What a browser sends for the confirm page's button: an empty form post to the page's URL."""
    return client.http.post(path(url), headers={"Content-Type": "application/x-www-form-urlencoded"}, body="")


def heading(response: Any) -> str:
    [h1] = re.findall(r"<h1>(.*?)</h1>", response.body.decode())
    return html.unescape(h1)


CONFIRM_HEADING = "Confirm your subscription"
CONFIRMED_HEADING = "Thank you, you are subscribed"


def test_double_opt_in_sends_only_the_confirmation(client, pending, table_items, tick, deliver, outbox):
    assert pending["Subject"] == "Please confirm your subscription"
    assert str(pending["To"]) == "Ann.Lee@example.com"
    url = confirm_link(pending)  # untracked: our own link, straight to /confirm/
    assert not [u for u in tracked_links(pending) if "confirm" in u]
    assert url.startswith(f"{PUBLIC_URL}/confirm/")
    assert profile(table_items, ANN_ID)["consent"]["status"] == "pending_confirmation"
    assert profile(table_items, ANN_ID)["consent"]["form_id"] == "digest"
    assert enrolment(table_items, ANN_ID, "welcome")["status"] == "awaiting_confirmation"

    for _ in range(3):
        tick()
        deliver()

    assert len(outbox()) == 1  # no welcome before confirmation


def test_confirm_link_shows_a_button_and_only_the_button_confirms_once(
    client, clock, pending, table_items, tick, deliver, outbox
):
    url = confirm_link(pending)
    clock.advance(600)
    before = table_items()

    # What a mail scanner does with every link of a message: fetch it. It gets a page, no consent.
    page = client.http.get(path(url))
    deliver()
    tick()
    deliver()

    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "no-store" in page.headers["Cache-Control"]
    assert heading(page) == CONFIRM_HEADING
    [form] = re.findall(r"<form[^>]*>", page.body.decode())
    assert re.search(r'method="post"', form, re.IGNORECASE) and "action=" not in form  # posts to this URL
    assert "<button" in page.body.decode()
    assert table_items() == before
    assert len(outbox()) == 1

    response = press_confirm(client, url)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert heading(response) == CONFIRMED_HEADING
    lead = profile(table_items, ANN_ID)
    assert lead["consent"]["status"] == "granted"
    assert lead["consent"]["confirmed_at"] == iso(START + timedelta(seconds=600))
    assert [i["sk"] for i in lead_items(table_items, ANN_ID) if "expires_at" in i] == []  # kept for good
    welcome = enrolment(table_items, ANN_ID, "welcome")
    assert welcome["status"] == "active"
    assert welcome["due_at"] <= iso(clock.now())
    assert len(events(table_items, ANN_ID, "subscription_confirmed")) == 1

    deliver()
    tick()
    deliver()

    messages = outbox()
    assert len(messages) == 2
    assert messages[1]["Subject"] == "Welcome to the Trellis newsletter, Ann"

    # A second press, and the link opened again later: the confirmed page, and nothing more.
    clock.advance(60)
    settled = profile(table_items, ANN_ID)["consent"]
    again = press_confirm(client, url)
    later = client.http.get(path(url))
    deliver()
    tick()
    deliver()

    assert again.status_code == 200 and heading(again) == CONFIRMED_HEADING
    assert later.status_code == 200 and heading(later) == CONFIRMED_HEADING
    assert "<form" not in later.body.decode()
    assert len(outbox()) == 2  # no second welcome
    assert len(events(table_items, ANN_ID, "subscription_confirmed")) == 1
    assert profile(table_items, ANN_ID)["consent"] == settled  # confirmed_at: the first press


def test_confirmed_lead_then_gets_the_rest_of_the_sequence(client, clock, pending, table_items, tick, deliver, outbox):
    press_confirm(client, confirm_link(pending))
    deliver()

    for _ in range(3):
        clock.advance(24 * 3600)
        tick()
        deliver()

    subjects = [m["Subject"] for m in outbox()]
    assert subjects == [
        "Please confirm your subscription",
        "Welcome to the Trellis newsletter, Ann",
        "Our three most-read guides",
    ]


def test_tampered_confirm_token_changes_nothing(client, rt, clock, pending, table_items, tick, deliver, outbox):
    before = table_items()

    for name, bad in forged(rt, clock, confirm_link(pending), "/confirm/").items():
        page = client.http.get(path(bad))
        post = press_confirm(client, bad)
        deliver()
        tick()

        assert page.status_code == 400, name
        assert post.status_code == 400, name
        assert "<form" not in page.body.decode(), name
        assert table_items() == before, name
    assert len(outbox()) == 1


def test_expired_confirm_token_changes_nothing(client, clock, pending, table_items, tick, deliver, outbox):
    url = confirm_link(pending)
    clock.advance((timedelta(days=7) + timedelta(seconds=1)).total_seconds())
    before = table_items()

    page = client.http.get(path(url))
    post = press_confirm(client, url)
    deliver()
    tick()

    assert page.status_code == 400
    assert post.status_code == 400
    assert "<form" not in page.body.decode()
    assert table_items() == before
    assert profile(table_items, ANN_ID)["consent"]["status"] == "pending_confirmation"
    assert len(outbox()) == 1


def test_confirm_for_unknown_lead_changes_nothing(client, rt, clock, pending, table_items):
    url = rt.links.confirm(UNKNOWN_LEAD, clock.now(), timedelta(days=7))
    before = table_items()

    page = client.http.get(path(url))
    post = press_confirm(client, url)

    assert page.status_code == 404
    assert post.status_code == 404
    assert table_items() == before
