"""Every email of the demo campaign renders for ordinary and hostile leads: footer, tracked links,
escaping, a readable text part. Pure rendering: no AWS."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Optional

import pytest

from chalicelib.config import load_campaign
from chalicelib.entities import Lead, Touch, iso
from chalicelib.nurture import preview
from chalicelib.nurture.render import RenderedEmail, Renderer
from chalicelib.nurture.rules import CONFIRM_SEQUENCE, sequence_for
from chalicelib.tracking import CLICK_PURPOSE, LinkBuilder, TokenSigner
from testkit.leads import a_lead
from tests.helpers import trap_href, visible_html

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
PUBLIC_URL = "https://api.trellis.test"
DOWNLOAD_URL = "https://assets.example.invalid/playbook.pdf?X-Amz-Signature=abc&X-Amz-Expires=604800"
HOSTILE = "<script>alert(1)</script>"
COMPANY = "Tom & Jerry's"

campaign = load_campaign("demo")
signer = TokenSigner(b"k" * 32)
links = LinkBuilder(signer, PUBLIC_URL)
renderer = Renderer(campaign, links)

assert campaign.confirmation is not None, "the demo campaign has a double opt-in email"
CONFIRM_LIFETIME = campaign.confirmation.expires_after


def _steps() -> list[tuple[str, str]]:
    steps = []
    for sequence_id in [*campaign.sequences, CONFIRM_SEQUENCE]:
        sequence = sequence_for(campaign, sequence_id)
        assert sequence is not None
        steps.extend((sequence_id, step.id) for step in sequence.steps)
    return steps


STEPS = _steps()
HREF = re.compile(r'href="([^"]*)"')


def make_lead(first_name: Optional[str], company: Optional[str] = None, magnet: Optional[str] = None) -> Lead:
    touch = Touch(at=iso(NOW), form_id="ebook" if magnet else "newsletter", magnet=magnet)
    profile = {"last_name": "Doe"}
    if first_name is not None:
        profile["first_name"] = first_name
    if company is not None:
        profile["company"] = company
    return a_lead("lead@example.com", at=NOW, touch=touch, profile=profile)


def render(sequence_id: str, step_id: str, lead: Lead) -> tuple[RenderedEmail, dict[str, object]]:
    sequence = sequence_for(campaign, sequence_id)
    assert sequence is not None
    step = next(s for s in sequence.steps if s.id == step_id)
    message_id = f"msg-{sequence_id}-{step_id}"
    magnet_id = "ebook" if sequence_id == "ebook-nurture" else lead.first_touch.magnet
    confirm_url = links.confirm(lead.lead_id, NOW, CONFIRM_LIFETIME)
    context = renderer.context(
        lead,
        sequence_id,
        step,
        message_id,
        NOW,
        magnet_id=magnet_id,
        download_url=DOWNLOAD_URL if magnet_id else None,
        confirm_url=confirm_url if sequence_id == CONFIRM_SEQUENCE else None,
    )
    return renderer.render(step, context, lead.lead_id, message_id, NOW), context


def click_destination(url: str) -> str:
    assert url.startswith(f"{PUBLIC_URL}/t/c/")
    return signer.verify(CLICK_PURPOSE, url.rsplit("/", 1)[1], NOW)["url"]


LEADS = {
    "ada": make_lead("Ada", company="Analytical Engines"),
    "no-name": make_lead(None),
    "hostile": make_lead(HOSTILE, company=COMPANY),
    "ebook-first": make_lead("Grace", magnet="ebook"),
    "hostile-ebook-first": make_lead(HOSTILE, company=COMPANY, magnet="ebook"),
}


@pytest.mark.parametrize("lead_key", LEADS)
@pytest.mark.parametrize(("sequence_id", "step_id"), STEPS)
def test_every_email_renders_safely(sequence_id, step_id, lead_key):
    lead = LEADS[lead_key]
    email, _ = render(sequence_id, step_id, lead)

    assert email.subject.strip() and "\n" not in email.subject and "\r" not in email.subject
    assert "None" not in email.subject
    assert "</body>" in email.html
    assert f'href="{email.unsubscribe_url}"' in email.html
    assert email.unsubscribe_url.startswith(f"{PUBLIC_URL}/u/")
    assert html.escape(campaign.sender.postal_address) in email.html
    assert ">None<" not in email.html and " None " not in email.text

    hrefs = HREF.findall(email.html)
    assert hrefs
    for href in hrefs:
        if href.startswith("http"):
            assert href.startswith(f"{PUBLIC_URL}/"), href
        assert "trellis.example" not in href, href
    assert "<script" not in email.html.lower()
    assert "javascript:" not in email.html.lower()

    first_name = lead.profile.get("first_name")
    assert (first_name or "there") in email.text
    assert re.search(r"<[a-zA-Z/!]", email.text.replace(HOSTILE, "")) is None  # only the lead's own text
    assert email.unsubscribe_url in email.text
    assert campaign.sender.postal_address in email.text


@pytest.mark.parametrize(("sequence_id", "step_id"), STEPS)
def test_hostile_values_are_escaped_in_html(sequence_id, step_id):
    email, _ = render(sequence_id, step_id, LEADS["hostile"])

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert "Tom & Jerry" not in email.html  # a bare "&" would mean company went out unescaped


@pytest.mark.parametrize("step_id", ["welcome", "pricing-nudge"])
def test_company_is_escaped_in_html_and_plain_in_text(step_id):
    email, _ = render("welcome", step_id, LEADS["hostile"])

    assert "Tom &amp; Jerry&#39;s" in email.html
    assert COMPANY in email.text


JOIN_URL = "https://meet.demo.trellis.example/"


def test_nurture_links_are_tracked_to_trellis_content():
    for sequence_id, step_id in STEPS:
        if sequence_id == CONFIRM_SEQUENCE:
            continue
        email, _ = render(sequence_id, step_id, LEADS["ada"])
        destinations = [click_destination(h) for h in HREF.findall(visible_html(email.html)) if "/t/c/" in h]
        # Content of ours, or (webinar emails) the event's join link, which is tracked like the rest.
        content = [d for d in destinations if d.startswith(("https://trellis.example/", JOIN_URL))]
        assert len(content) in (1, 2, 3), (step_id, destinations)
        assert email.links == len(set(destinations))  # what a burst is measured against


@pytest.mark.parametrize(("sequence_id", "step_id"), STEPS)
def test_every_html_email_carries_one_hidden_trap_link_people_cannot_follow(sequence_id, step_id):
    email, _ = render(sequence_id, step_id, LEADS["ada"])

    trap = trap_href(email.html)
    [block] = [b for b in re.findall(r"<div hidden[^>]*>.*?</div>", email.html, re.DOTALL)]
    assert "display:none" in block and "mso-hide:all" in block  # hidden in browsers and in Outlook
    assert 'tabindex="-1"' in block and 'aria-label="Do not follow' in block
    assert re.search(r"<a [^>]*></a>", block), "the trap has no text to click if a client shows it"
    token = trap.rpartition("/t/c/")[2]
    claims = signer.verify(CLICK_PURPOSE, token, NOW)
    assert claims["trap"] == 1 and claims["msg"] == f"msg-{sequence_id}-{step_id}"
    assert trap not in email.text and "/t/c/" + token not in email.text  # the text part has no trap


def test_ebook_delivery_carries_the_tracked_download_link():
    email, _ = render("ebook-nurture", "ebook-delivery", LEADS["ada"])

    destinations = [click_destination(h) for h in HREF.findall(email.html) if "/t/c/" in h]
    assert DOWNLOAD_URL in destinations
    assert "assets.example.invalid" not in email.html
    assert "The Lead Nurture Playbook" in email.html
    assert "few days" in email.text


def test_ebook_delivery_without_download_link_still_renders():
    sequence = sequence_for(campaign, "ebook-nurture")
    assert sequence is not None
    step = sequence.steps[0]
    context = renderer.context(LEADS["ada"], "ebook-nurture", step, "m1", NOW, magnet_id="ebook")
    email = renderer.render(step, context, LEADS["ada"].lead_id, "m1", NOW)

    assert "/t/c/" in email.html  # the guide link, still tracked
    assert "reply" in email.text.lower()


def test_confirm_carries_the_untracked_confirm_link():
    email, context = render(CONFIRM_SEQUENCE, "confirm", LEADS["ada"])

    confirm_url = context["confirm_url"]
    assert isinstance(confirm_url, str) and confirm_url.startswith(f"{PUBLIC_URL}/confirm/")
    assert f'href="{confirm_url}"' in email.html
    assert "/t/c/" not in visible_html(email.html)
    assert "expire" in email.text
    assert "ignore" in email.text


def test_welcome_mentions_the_magnet_that_first_brought_the_lead():
    via_ebook, _ = render("welcome", "welcome", LEADS["ebook-first"])
    via_newsletter, _ = render("welcome", "welcome", LEADS["ada"])

    assert "The Lead Nurture Playbook" in via_ebook.text
    assert "Playbook" not in via_newsletter.text


def test_preview_all_writes_every_email(tmp_path, capsys):
    assert preview.main(["--campaign", "demo", "--all", "--out-dir", str(tmp_path)]) == 0

    for sequence_id, step_id in STEPS:
        page = tmp_path / f"{sequence_id}-{step_id}.html"
        assert "</body>" in page.read_text(encoding="utf-8")
        assert page.with_suffix(".txt").read_text(encoding="utf-8").strip()
    out = capsys.readouterr().out
    assert "Your copy of The Lead Nurture Playbook" in out
    assert "Please confirm your subscription" in out


def test_preview_single_step_with_overrides(tmp_path, capsys):
    target = tmp_path / "w.html"
    code = preview.main(
        ["--sequence", "welcome", "--step", "welcome", "--out", str(target), "--first-name", "", "--magnet", "ebook"]
    )

    assert code == 0
    text = target.with_suffix(".txt").read_text(encoding="utf-8")
    assert "Hi there," in text
    assert "The Lead Nurture Playbook" in text
    assert "Welcome to the Trellis newsletter, there" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["--sequence", "nope", "--step", "welcome"],
        ["--sequence", "welcome", "--step", "nope"],
        ["--sequence", "welcome", "--step", "welcome", "--magnet", "nope"],
        ["--campaign", "no-such-campaign", "--all"],
    ],
)
def test_preview_unknown_names_exit_2(tmp_path, capsys, args):
    assert preview.main([*args, "--out-dir", str(tmp_path)]) == 2
    assert "preview:" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
