"""Build the raw MIME messages Trellis sends, with the stdlib ``email`` package, so that no lead's
data can add a header, a recipient or a body part.

Python's header factory parses every value it is given as if it came off the wire, RFC 2047
encoded words included: ``=?utf-8?q?Ann=0D=0ABcc:_x@evil.example?=`` set as (part of) a Subject
decodes to a line break and serialises as a real ``Bcc:`` line. So text that reaches a header goes
through ``header_text`` (no control character, no encoded-word syntax), addresses through
``mailbox`` (one validated addr-spec, its domain in IDNA), and every message is parsed back and
compared with what was meant before it is handed to SES (``compose``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes
from email.errors import MessageError
from email.headerregistry import Address, AddressHeader
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP, default
from email.utils import format_datetime, make_msgid
from typing import Optional
from urllib.parse import quote

from chalicelib.campaign_types import Sender
from chalicelib.errors import Unsendable
from chalicelib.nurture.render import RenderedEmail

ONE_CLICK = "List-Unsubscribe=One-Click"
# RFC 5322 allows 998-character lines. The default fold at 78 would turn the long unsubscribe
# URLs into RFC 2047 encoded-words, which mail clients do not parse as List-Unsubscribe URLs.
_POLICY = SMTP.clone(max_line_length=998)
# Lead data makes these; past this they are noise, and a long one only helps a spoof.
SUBJECT_LIMIT = 200
DISPLAY_NAME_LIMIT = 100
# Controls (C0, DEL, C1 with NEL), lone surrogates, and the Unicode line and paragraph
# separators: each is a line break to some parser, or unencodable.
_BREAKING_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
ENCODED_WORD_START = "=?"
MULTIPART_ALTERNATIVE = "multipart/alternative"
MULTIPART_MIXED = "multipart/mixed"
BODY_PARTS = ("text/plain", "text/html")


@dataclass(frozen=True)
class Attachment:
    """A file of Trellis's own making (a calendar invite), after the body."""

    filename: str
    content_type: str  # "text/calendar"
    data: bytes
    params: tuple[tuple[str, str], ...] = ()  # e.g. (("method", "REQUEST"),)


def _breaks(char: str) -> bool:
    return unicodedata.category(char) in _BREAKING_CATEGORIES


def header_text(value: str, *, limit: Optional[int] = None) -> str:
    """``value`` as unstructured header text (a Subject, a display name) that decodes to itself.

    Controls and separators become spaces and runs of whitespace one space; ``=?`` becomes
    ``= ?``, which no decoder takes for the start of an encoded word. Non-ASCII text stays: the
    policy encodes it on output, and what it encodes it decodes back without a line break.
    """
    cleaned = " ".join("".join(" " if _breaks(c) else c for c in value).split())
    # One pass cannot make a new "=?": the inserted space is followed by the "?" it split off.
    cleaned = cleaned.replace(ENCODED_WORD_START, "= ?")
    if limit is not None and len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "\N{HORIZONTAL ELLIPSIS}"
    return cleaned


def mailbox(address: str, display_name: str = "") -> Address:
    """One mailbox from a stored address, or ``Unsendable`` when it cannot be one we can send.

    The domain goes out in IDNA (A-labels); a non-ASCII local part would need SMTPUTF8, which
    Trellis does not use. The reasons name no part of the address (they are logged).
    """
    if any(_breaks(c) for c in address):
        raise Unsendable("line break or control character in the address")
    if "," in address or ";" in address or address.count("@") > 1:
        raise Unsendable("more than one address")
    if ENCODED_WORD_START in address:
        # Valid atext, but the header parser would decode it into something else.
        raise Unsendable("encoded-word syntax in the address")
    # Imported on first send: a tick with nothing due never pays for it (see models.normalise_email).
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=True,  # so that a non-ASCII local part gets its own reason below
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
        )
    except EmailNotValidError as e:
        raise Unsendable("not a valid address") from e
    if result.ascii_local_part is None:
        raise Unsendable("non-ASCII local part")
    return Address(
        display_name=header_text(display_name, limit=DISPLAY_NAME_LIMIT),
        username=result.ascii_local_part,
        domain=result.ascii_domain,
    )


def recipient(address: str) -> str:
    """The envelope form of ``address`` (ASCII, IDNA domain), as ``To`` carries it."""
    return mailbox(address).addr_spec


def build_message(
    *,
    sender: Sender,
    to: str,
    rendered: RenderedEmail,
    reference: str,
    now: datetime,
    attachments: Sequence[Attachment] = (),
) -> bytes:
    """multipart/alternative (text, then HTML) with RFC 2369 + RFC 8058 unsubscribe headers;
    with attachments, that in a multipart/mixed before them.

    The recipient's name is deliberately not put in ``To``: it is user input, and the address
    alone is all delivery needs.
    """
    mailto = f"mailto:{sender.unsubscribe_mailbox}?subject={quote('unsubscribe ' + rendered.unsubscribe_url)}"
    return compose(
        sender=sender,
        to=to,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        reference=reference,
        now=now,
        reply_to=sender.reply_to,
        extra=(("List-Unsubscribe", f"<{rendered.unsubscribe_url}>, <{mailto}>"), ("List-Unsubscribe-Post", ONE_CLICK)),
        attachments=attachments,
    )


def compose(
    *,
    sender: Sender,
    to: str,
    subject: str,
    text: str,
    html: str,
    reference: str,
    now: datetime,
    reply_to: Optional[str] = None,
    extra: Sequence[tuple[str, str]] = (),
    attachments: Sequence[Attachment] = (),
) -> bytes:
    """The one way Trellis builds a message: text then HTML, to one recipient, checked after.

    ``extra`` headers are Trellis's own (URLs it signed); they are cleaned like the rest anyway.
    """
    origin = mailbox(sender.from_address, sender.from_name)
    message = EmailMessage(policy=_POLICY)
    try:
        message["From"] = origin
        message["To"] = mailbox(to)
        if reply_to:
            message["Reply-To"] = mailbox(reply_to)
        message["Subject"] = header_text(subject, limit=SUBJECT_LIMIT)
        message["Date"] = format_datetime(now)
        message["Message-ID"] = make_msgid(domain=origin.domain)
        # Pseudonymous: lead id and step, so a bounce or a support question can be traced to a send.
        message["X-Trellis-Reference"] = header_text(reference)
        for name, value in extra:
            message[name] = header_text(value)
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        for attachment in attachments:
            maintype, _, subtype = attachment.content_type.partition("/")
            message.add_attachment(
                attachment.data,
                maintype=maintype,
                subtype=subtype,
                filename=attachment.filename,
                params=dict(attachment.params),
            )
        raw = message.as_bytes()
    except (ValueError, UnicodeError, MessageError) as e:  # the email package refused a value
        raise Unsendable(f"the email package refused it ({type(e).__name__})") from e
    _verify(raw, message, attachments)
    return raw


def _verify(raw: bytes, intended: EmailMessage, attachments: Sequence[Attachment] = ()) -> None:
    """Parse ``raw`` as a receiver would and demand exactly ``intended``: the same header names in
    the same order, the same recipients and values, one text and one HTML part (then exactly the
    attachments meant). Whatever slipped past the cleaning above stops here rather than at
    someone else's inbox."""
    parsed = message_from_bytes(raw, policy=default)
    if parsed.keys() != intended.keys():
        raise Unsendable("the built message has other headers than intended")
    for name, value in intended.items():
        got = parsed[name]
        if isinstance(value, AddressHeader):
            if not isinstance(got, AddressHeader) or got.addresses != value.addresses:
                raise Unsendable(f"the built message's {name} is not the intended one")
        elif str(got) != str(value):
            raise Unsendable(f"the built message's {name} is not the intended one")
    body: MIMEPart = parsed
    intended_body: MIMEPart = intended
    if attachments:
        if parsed.get_content_type() != MULTIPART_MIXED:
            raise Unsendable("the built message with attachments is not multipart/mixed")
        body, *files = list(parsed.iter_parts())
        intended_body = next(iter(intended.iter_parts()))
        if len(files) != len(attachments):
            raise Unsendable("the built message has other attachments than intended")
        for got_file, attachment in zip(files, attachments, strict=True):
            if (
                got_file.get_content_type() != attachment.content_type
                or got_file.get_filename() != attachment.filename
                or got_file.get_payload(decode=True) != attachment.data
            ):
                raise Unsendable("an attachment of the built message does not read back as written")
    if body.get_content_type() != MULTIPART_ALTERNATIVE:
        raise Unsendable("the built message is not multipart/alternative")
    parts = list(body.iter_parts())
    if tuple(p.get_content_type() for p in parts) != BODY_PARTS or any(p.is_multipart() for p in parts):
        raise Unsendable("the built message's parts are not one text and one HTML part")
    for got_part, intended_part in zip(parts, intended_body.iter_parts(), strict=True):
        # Line ends are the generator's to choose (LF in the object, CRLF on the wire and in base64).
        got_text = got_part.get_content().replace("\r\n", "\n")
        if got_text != intended_part.get_content().replace("\r\n", "\n"):
            raise Unsendable("a part of the built message does not read back as written")
