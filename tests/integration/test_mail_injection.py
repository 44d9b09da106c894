"""No lead's data can add a header, a recipient or a body part to an email Trellis sends.

Python's ``email`` package decodes RFC 2047 encoded words in every header value it is given, so
``=?utf-8?q?Ann=0D=0ABcc:_attacker@evil.example?=`` as a first name used to become a real ``Bcc:``
line of the welcome mail, and a company did the same in the sales handoff's Subject. The attacks
from issue 14 run end to end on moto; the property tests feed hostile strings into every lead
field that reaches a header or a body of both builders and read each message back as a receiver
would.
"""

from __future__ import annotations

import base64
import unicodedata
from datetime import UTC, datetime
from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.config import load_campaign
from chalicelib.entities import Event, Handoff, Lead, Touch, iso
from chalicelib.errors import Unsendable
from chalicelib.handoff import handoff_email
from chalicelib.models import Step
from chalicelib.nurture.mime import build_message, header_text, mailbox, recipient
from chalicelib.nurture.render import Renderer
from chalicelib.nurture.rules import sequence_for
from chalicelib.tracking import LinkBuilder, TokenSigner
from testkit.leads import a_lead
from tests.helpers import body, post_json

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
ATTACKER = "attacker@evil.example"
BCC_IN_Q = f"=?utf-8?q?Ann=0D=0ABcc:_{ATTACKER}?="  # the value from the issue
BCC_IN_B = "=?utf-8?b?" + base64.b64encode(f"Ann\r\nBcc: {ATTACKER}".encode()).decode() + "?="
MARKUP = "<b id=pwn>"
BODY_IN_Q = f"=?utf-8?q?x=0D=0AContent-Type:_text/html=0D=0A=0D=0A{MARKUP}owned?="
BOUNDARY = "===============0123456789=="
HOSTILE_ATOMS = [
    "\r",
    "\n",
    "\r\n",
    "\r\n\r\n",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
    "\u2028",
    "\u2029",
    BCC_IN_Q,
    BCC_IN_B,
    BODY_IN_Q,
    "=?iso-8859-1?q?=0A?=",
    f"\r\nBcc: {ATTACKER}",
    f"\nCc: {ATTACKER}",
    f"Bcc: {ATTACKER}",
    f"\r\n--{BOUNDARY}\r\nContent-Type: text/html\r\n\r\n{MARKUP}\r\n--{BOUNDARY}--\r\n",
    f"--{BOUNDARY}",
    f"Content-Type: text/html\r\n\r\n{MARKUP}",
    MARKUP,
    "<script>alert(1)</script>",
    "\"<>&\\'",
    "Zoë 日本語 🙂",
    "=?",
    "?=",
]
hostile = st.one_of(
    st.lists(st.one_of(st.sampled_from(HOSTILE_ATOMS), st.text(max_size=12)), min_size=1, max_size=6).map("".join),
    st.tuples(st.sampled_from(HOSTILE_ATOMS), st.integers(40, 400)).map(lambda t: t[0] * t[1]),  # very long
    st.integers(990, 3000).map(lambda n: "x" * n),  # one word longer than a header line may be
)
SUBJECT_TEMPLATES = [
    "{{ first_name }} {{ last_name }} at {{ company }} ({{ job_title }})",
    "Hi {{ lead.first_name }}, {{ lead.size }} {{ lead.country }}",
    "Welcome to the Trellis newsletter, {{ first_name or 'there' }}",
]
campaign = load_campaign("demo")
SENDER = campaign.sender
LEAD_EMAIL = "lead@example.com"
OWNER = campaign.sales.team[0]
signer = TokenSigner(b"k" * 32)
renderer = Renderer(campaign, LinkBuilder(signer, "https://api.trellis.test"))
DRIP_HEADERS = [
    "From",
    "To",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "X-Trellis-Reference",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
]
HANDOFF_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "X-Trellis-Reference", "MIME-Version", "Content-Type"]


def make_lead(profile: dict[str, str], custom: Optional[dict[str, str]] = None, touch: Optional[Touch] = None) -> Lead:
    return a_lead(LEAD_EMAIL, at=NOW, touch=touch, profile=profile, custom=custom or {})


def drip(lead: Lead, step: Step, to: str = LEAD_EMAIL) -> bytes:
    context = renderer.context(lead, "welcome", step, "m1", NOW)
    rendered = renderer.render(step, context, lead.lead_id, "m1", NOW)
    return build_message(sender=SENDER, to=to, rendered=rendered, reference=f"{lead.lead_id}/m1", now=NOW)


def handoff_for(lead: Lead, events: list[Event]) -> bytes:
    handoff = Handoff(lead.lead_id, iso(NOW), iso(NOW), OWNER.name, OWNER.email, "hand-raiser event demo_request", 45)
    return handoff_email(campaign, handoff, lead, events, NOW)


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def part(message: EmailMessage, subtype: str) -> str:
    found = message.get_body((subtype,))
    assert found is not None
    return str(found.get_content())


def assert_one_clean_message(message: EmailMessage, headers: list[str], to: str, values: list[str]) -> None:
    """Exactly the intended headers, one recipient, text then HTML, and hostile text only in bodies."""
    assert message.keys() == headers
    assert message["To"].addresses == (Address(addr_spec=to),)
    assert message["From"].addresses == (Address(SENDER.from_name, addr_spec=SENDER.from_address),)
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert not any(p.is_multipart() for p in parts)
    for name in headers:
        decoded = str(message[name])
        assert not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in decoded), name
        assert "=?" not in decoded, name  # no encoded word of the lead's survives decoding
    page = part(message, "html")
    assert MARKUP not in page and "<script>" not in page
    for value in values:
        if any(c in value for c in "<>&"):
            assert value not in page  # there only as HTML-escaped text


# -- the attacks from the issue, end to end on moto ------------------------------------------


def submit(client: Any, clock: Any, form_id: str, fields: dict[str, Any]) -> Any:
    """A form posted as the landing page's script does, half a minute after the page rendered."""
    rendered_at = int((clock.now().timestamp() - 30) * 1000)
    return post_json(client, f"/forms/{form_id}", {**fields, "consent": True, "rendered_at": rendered_at})


def sent_to() -> set[str]:
    """Every address moto's SES delivered to: the envelope plus the To, Cc and Bcc headers."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return {d for m in ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages for d in m.destinations}


@pytest.mark.parametrize("first_name", [BCC_IN_Q, BCC_IN_B])
def test_an_encoded_word_in_a_first_name_adds_no_recipient_to_the_welcome(client, clock, tick, outbox, first_name):
    submit(client, clock, "newsletter", {"email": "ann@example.com", "first_name": first_name})

    assert tick()["sent"] == 1

    [message] = outbox()
    assert "Bcc" not in message and "Cc" not in message
    assert sent_to() == {"ann@example.com"}
    assert message["Subject"].startswith("Welcome to the Trellis newsletter, = ?utf-8?")


def test_an_encoded_word_in_a_first_name_cannot_replace_the_body(client, clock, tick, outbox):
    submit(client, clock, "newsletter", {"email": "ann@example.com", "first_name": BODY_IN_Q})

    tick()

    [message] = outbox()
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert MARKUP not in part(message, "html") and "Hi Ann" not in part(message, "plain")
    assert "Trellis" in part(message, "html")


def test_an_encoded_word_in_the_company_adds_no_recipient_to_the_sales_handoff(client, clock, deliver, outbox):
    form = {"email": "rae@beta.example", "first_name": "Rae", "company": BCC_IN_Q}
    response = submit(client, clock, "ebook", form)
    token = body(response)["lead_token"]
    for url in ("https://trellis.example/pricing", "https://trellis.example/blog/1"):
        assert post_json(client, "/events", {"token": token, "type": "page_view", "url": url}).status_code == 202
    assert post_json(client, "/events", {"token": token, "type": "demo_request"}).status_code == 202
    for _ in range(6):
        if not deliver():
            break

    [to_owner] = [m for m in outbox() if m["To"] == OWNER.email]
    assert "Bcc" not in to_owner and "Cc" not in to_owner
    assert OWNER.email in sent_to() and ATTACKER not in sent_to()
    assert to_owner["Subject"] == "New sales-qualified lead: = ?utf-8?q?Ann=0D=0ABcc:_attacker@evil.example?="
    # The text part's timeline has one event a line (it used to run onto one line).
    text = part(to_owner, "plain")
    timeline = text.split("Timeline (latest first):", 1)[1].strip().splitlines()
    assert len(timeline) >= 4 and all(line.startswith("- ") for line in timeline), timeline
    assert any(line.endswith("page_view https://trellis.example/pricing") for line in timeline)
    assert any(line.endswith("demo_request") for line in timeline)


# -- addresses --------------------------------------------------------------------------------


def test_a_non_ascii_domain_goes_out_in_punycode():
    raw = drip(make_lead({"first_name": "Zoë"}), welcome_step(), to="zoe@bücher.example")

    assert b"\r\nTo: zoe@xn--bcher-kva.example\r\n" in raw
    assert parse(raw)["To"].addresses == (Address(username="zoe", domain="xn--bcher-kva.example"),)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("zoë@example.com", "non-ASCII local part"),
        ("ann@example.com\r\nBcc: attacker@evil.example", "line break or control character in the address"),
        ("ann@example.com\n", "line break or control character in the address"),
        ("ann@example.com,attacker@evil.example", "more than one address"),
        ("ann@example.com attacker@evil.example", "more than one address"),
        ("Ann <ann@example.com>", "not a valid address"),
        ("=?utf-8?q?ann=0D=0A?=@example.com", "encoded-word syntax in the address"),
        ("", "not a valid address"),
    ],
)
def test_an_address_that_cannot_make_one_valid_to_is_unsendable(address, reason):
    with pytest.raises(Unsendable) as raised:
        drip(make_lead({"first_name": "Ann"}), welcome_step(), to=address)

    assert raised.value.reason == reason


def test_a_literal_line_break_in_the_company_makes_a_clean_handoff_not_an_error():
    lead = make_lead({"first_name": "Rae", "company": f"Acme\r\nBcc: {ATTACKER}"})

    message = parse(handoff_for(lead, []))

    assert message.keys() == HANDOFF_HEADERS
    assert message["Subject"] == f"New sales-qualified lead: Acme Bcc: {ATTACKER}"


def test_header_text_neutralises_encoded_words_and_line_breaks():
    assert header_text(BCC_IN_Q) == "= ?utf-8?q?Ann=0D=0ABcc:_attacker@evil.example?="
    assert header_text("a\r\nb\u2028c\x00d\x85e  f") == "a b c d e f"
    assert header_text("==??") == "== ??"
    assert header_text("x" * 300, limit=200) == "x" * 199 + "\N{HORIZONTAL ELLIPSIS}"
    assert mailbox("Ann@Example.COM").addr_spec == "Ann@example.com"
    assert recipient("zoe@bücher.example") == "zoe@xn--bcher-kva.example"  # the envelope's form


# -- properties -------------------------------------------------------------------------------


def welcome_step(subject: str = SUBJECT_TEMPLATES[2]) -> Step:
    sequence = sequence_for(campaign, "welcome")
    assert sequence is not None
    return sequence.steps[0].model_copy(update={"subject": subject})


PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(
    first_name=hostile,
    last_name=hostile,
    company=hostile,
    job_title=hostile,
    size=hostile,
    country=hostile,
    subject=st.sampled_from(SUBJECT_TEMPLATES),
    template=st.sampled_from(["email/welcome.html", "email/pricing_nudge.html", "email/ebook_demo_offer.html"]),
)
def test_no_lead_field_can_change_a_drip_emails_headers_recipients_or_structure(
    first_name: str, last_name: str, company: str, job_title: str, size: str, country: str, subject: str, template: str
) -> None:
    values = [first_name, last_name, company, job_title]
    profile = dict(zip(("first_name", "last_name", "company", "job_title"), values, strict=True))
    lead = make_lead(profile, {"size": size, "country": country})
    step = welcome_step(subject).model_copy(update={"template": template})

    message = parse(drip(lead, step))

    assert_one_clean_message(message, DRIP_HEADERS, LEAD_EMAIL, values)
    assert len(str(message["Subject"])) <= 200


@PROPERTY
@given(
    profile=st.fixed_dictionaries(
        {name: hostile for name in ("first_name", "last_name", "company", "job_title", "phone")}
    ),
    custom=st.dictionaries(st.sampled_from(["size", "country", "note"]), hostile, max_size=3),
    utm=hostile,
    urls=st.lists(hostile, max_size=4),
)
def test_no_lead_field_can_change_the_handoffs_headers_recipients_structure_or_timeline(
    profile: dict[str, str], custom: dict[str, str], utm: str, urls: list[str]
) -> None:
    touch = Touch(at=iso(NOW), form_id="ebook", utm_source=utm, utm_medium=utm)
    lead = make_lead(profile, custom, touch)
    events = [Event(lead.lead_id, f"e{n}", "page_view", iso(NOW), {"url": url}) for n, url in enumerate(urls)]

    message = parse(handoff_for(lead, events))

    assert_one_clean_message(message, HANDOFF_HEADERS, OWNER.email, [*profile.values(), *custom.values(), utm])
    timeline = part(message, "plain").split("Timeline (latest first):", 1)[1].strip("\r\n").splitlines()
    assert len([line for line in timeline if line]) == len(events)
    assert all(line.startswith("- ") for line in timeline if line)


addresses = st.one_of(
    st.builds(lambda a, b: f"{a}@{b}", hostile, st.sampled_from(["example.com", "bücher.example", "x.example"])),
    st.builds(lambda a: f"ann@example.com{a}", hostile),
    st.sampled_from(["ann@example.com", "zoë@example.com", "zoe@bücher.example"]),
)


@PROPERTY
@given(address=addresses)
def test_any_stored_address_makes_one_exact_recipient_or_is_unsendable(address: str) -> None:
    try:
        raw = drip(make_lead({"first_name": "Ann"}), welcome_step(), to=address)
    except Unsendable:
        return
    message = parse(raw)
    assert message.keys() == DRIP_HEADERS
    [to] = message["To"].addresses
    assert to.addr_spec.isascii() and to.addr_spec.count("@") == 1
    assert to == mailbox(address)
