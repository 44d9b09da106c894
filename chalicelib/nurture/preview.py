"""Render nurture emails for a sample lead into files, to look at them in a browser. No AWS.

    python -m chalicelib.nurture.preview --campaign demo --sequence welcome --step welcome
    python -m chalicelib.nurture.preview --sequence _confirm --step confirm --first-name ""
    python -m chalicelib.nurture.preview --all --out-dir preview

Each email is written as ``<sequence>-<step>.html`` with its text part next to it (``.txt``).
Links are signed with a throwaway key, so the tracked URLs in a preview lead nowhere.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Optional

from chalicelib.campaign_types import Campaign, Step
from chalicelib.compiler import load_file
from chalicelib.config import campaign_path
from chalicelib.entities import Lead, Touch, iso, lead_id_for
from chalicelib.errors import ConfigError
from chalicelib.nurture.render import RenderedEmail, Renderer, template_exists
from chalicelib.nurture.rules import CONFIRM_SEQUENCE, magnet_for, sequence_for
from chalicelib.tracking import LinkBuilder, TokenSigner
from chalicelib.vocabulary import Stage

PREVIEW_PUBLIC_URL = "http://127.0.0.1:8000"
PREVIEW_DOWNLOAD_URL = "https://example.invalid/download-preview"
DEFAULT_OUT_DIR = Path("preview")
SAMPLE_EMAIL = "ada.lovelace@example.com"


class PreviewError(Exception):
    """A request the campaign cannot satisfy (unknown sequence, step or magnet)."""


@dataclass(frozen=True)
class Preview:
    sequence_id: str
    step: Step
    email: RenderedEmail
    html_path: Path
    text_path: Path


def enrolling_form(campaign: Campaign, sequence_id: str) -> Optional[str]:
    """The first form that enrols leads into ``sequence_id``, if any."""
    return next((form_id for form_id, form in campaign.forms.items() if form.sequence == sequence_id), None)


def sample_lead(
    campaign: Campaign,
    sequence_id: str,
    now: datetime,
    *,
    first_name: Optional[str] = "Ada",
    magnet: Optional[str] = None,
    company: Optional[str] = "Analytical Engines Ltd",
) -> Lead:
    """A plausible lead in ``sequence_id``. Its first touch is the form of ``magnet`` when given,
    else the form that enrols into the sequence (else the campaign's first form)."""
    form_id = None
    if magnet is not None:
        form_id = next((f for f, form in campaign.forms.items() if form.magnet == magnet), None)
    form_id = form_id or enrolling_form(campaign, sequence_id) or next(iter(campaign.forms))
    touch = Touch(
        at=iso(now),
        form_id=form_id,
        magnet=magnet,
        utm_source="newsletter",
        utm_medium="email",
        utm_campaign="preview",
        page_url="https://trellis.example/",
    )
    profile = {"last_name": "Lovelace", "job_title": "Head of Growth"}
    if first_name:
        profile["first_name"] = first_name
    if company:
        profile["company"] = company
    stamp = iso(now)
    return Lead(
        lead_id=lead_id_for(SAMPLE_EMAIL),
        email=SAMPLE_EMAIL,
        email_identity=SAMPLE_EMAIL,
        stage=Stage.LEAD,
        score=10,
        created_at=stamp,
        updated_at=stamp,
        first_touch=touch,
        last_touch=touch,
        profile=profile,
        custom={"company_size": "11-50", "country": "GB"},
        magnets=(magnet,) if magnet else (),
        sequences=(sequence_id,),
        submissions=1,
    )


def find_step(campaign: Campaign, sequence_id: str, step_id: str) -> Step:
    sequence = sequence_for(campaign, sequence_id)
    if sequence is None:
        known = ", ".join(all_sequence_ids(campaign))
        raise PreviewError(f"campaign {campaign.name!r} has no sequence {sequence_id!r} (known: {known})")
    for step in sequence.steps:
        if step.id == step_id:
            return step
    known = ", ".join(step.id for step in sequence.steps)
    raise PreviewError(f"sequence {sequence_id!r} has no step {step_id!r} (known: {known})")


def all_sequence_ids(campaign: Campaign) -> list[str]:
    ids = list(campaign.sequences)
    if campaign.confirmation is not None:
        ids.append(CONFIRM_SEQUENCE)
    return ids


def render_step(
    campaign: Campaign,
    links: LinkBuilder,
    sequence_id: str,
    step: Step,
    lead: Lead,
    now: datetime,
    topic: Optional[str] = None,
) -> RenderedEmail:
    """Render one step as the sender would, with a placeholder download link for magnets."""
    if not template_exists(step.template):
        raise PreviewError(f"{sequence_id}.{step.id}: template {step.template!r} not found under templates/")
    renderer = Renderer(campaign, links)
    message_id = f"preview-{sequence_id}-{step.id}"
    magnet_id = magnet_for(campaign, sequence_id, lead)
    confirm_url = None
    if sequence_id == CONFIRM_SEQUENCE and campaign.confirmation is not None:
        confirm_url = links.confirm(lead.lead_id, now, campaign.confirmation.expires_after)
    context = renderer.context(
        lead,
        sequence_id,
        step,
        message_id,
        now,
        magnet_id=magnet_id,
        download_url=PREVIEW_DOWNLOAD_URL if magnet_id else None,
        confirm_url=confirm_url,
        topic=topic,
    )
    return renderer.render(step, context, lead.lead_id, message_id, now)


def write_preview(email: RenderedEmail, html_path: Path) -> Path:
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(email.html, encoding="utf-8")
    text_path = html_path.with_suffix(".txt")
    text_path.write_text(email.text, encoding="utf-8")
    return text_path


def preview(
    campaign: Campaign,
    targets: Sequence[tuple[str, str]],
    *,
    out_dir: Path,
    out: Optional[Path] = None,
    first_name: Optional[str] = "Ada",
    magnet: Optional[str] = None,
    now: Optional[datetime] = None,
) -> list[Preview]:
    """Render and write each (sequence, step); ``out`` names the file when there is one target."""
    if magnet is not None and magnet not in campaign.magnets:
        known = ", ".join(campaign.magnets) or "none"
        raise PreviewError(f"campaign {campaign.name!r} has no magnet {magnet!r} (known: {known})")
    moment = now or datetime.now(UTC)
    links = LinkBuilder(TokenSigner(secrets.token_bytes(32)), PREVIEW_PUBLIC_URL)
    previews = []
    for sequence_id, step_id in targets:
        step = find_step(campaign, sequence_id, step_id)
        lead = sample_lead(campaign, sequence_id, moment, first_name=first_name, magnet=magnet)
        email = render_step(campaign, links, sequence_id, step, lead, moment)
        html_path = out if out is not None else out_dir / f"{sequence_id}-{step.id}.html"
        text_path = write_preview(email, html_path)
        previews.append(Preview(sequence_id, step, email, html_path, text_path))
    return previews


def every_step(campaign: Campaign) -> list[tuple[str, str]]:
    targets: list[tuple[str, str]] = []
    for sequence_id in all_sequence_ids(campaign):
        sequence = sequence_for(campaign, sequence_id)
        if sequence is not None:
            targets.extend((sequence_id, step.id) for step in sequence.steps)
    return targets


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chalicelib.nurture.preview",
        description="Render nurture emails for a sample lead into HTML and text files (no AWS).",
    )
    parser.add_argument("--campaign", default="demo", help="campaign name: campaigns/<name>.yaml (default: demo)")
    parser.add_argument("--sequence", help=f"sequence id; {CONFIRM_SEQUENCE} for the confirmation email")
    parser.add_argument("--step", help="step id within the sequence (confirm for the confirmation email)")
    parser.add_argument("--all", action="store_true", help="render every step of every sequence and the confirmation")
    parser.add_argument("--out", type=Path, help="HTML file to write (one step only; the .txt goes next to it)")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help=f"folder for <sequence>-<step>.html and .txt (default: {DEFAULT_OUT_DIR}/)",
    )
    parser.add_argument("--first-name", default="Ada", help='sample first name (default: Ada; "" for none)')
    parser.add_argument(
        "--magnet",
        help="magnet id that first brought the sample lead (default: none, the first touch is the form "
        "that enrols into the sequence)",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.all:
        if args.sequence or args.step or args.out:
            parser.error("--all renders everything into --out-dir; drop --sequence, --step and --out")
    elif not (args.sequence and args.step):
        parser.error("give --sequence and --step, or --all")
    try:
        # From the campaign file, validated and compiled now: a preview shows the file as it is
        # being edited, whether or not make validate has run since.
        campaign = load_file(campaign_path(args.campaign))
        targets = every_step(campaign) if args.all else [(args.sequence, args.step)]
        previews = preview(
            campaign,
            targets,
            out_dir=args.out_dir,
            out=args.out,
            first_name=args.first_name or None,
            magnet=args.magnet or None,
        )
    except (ConfigError, PreviewError) as e:
        print(f"preview: {e}", file=sys.stderr)
        return 2
    for item in previews:
        print(f"{item.sequence_id}.{item.step.id}: {item.email.subject}")
        print(f"  html: {item.html_path}")
        print(f"  text: {item.text_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
