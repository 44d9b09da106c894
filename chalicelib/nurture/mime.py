"""Build the raw MIME message with the stdlib ``email`` package."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid
from urllib.parse import quote

from chalicelib.models import Sender
from chalicelib.nurture.render import RenderedEmail

ONE_CLICK = "List-Unsubscribe=One-Click"
# RFC 5322 allows 998-character lines. The default fold at 78 would turn the long unsubscribe
# URLs into RFC 2047 encoded-words, which mail clients do not parse as List-Unsubscribe URLs.
_POLICY = SMTP.clone(max_line_length=998)


def build_message(*, sender: Sender, to: str, rendered: RenderedEmail, reference: str, now: datetime) -> bytes:
    """multipart/alternative (text, then HTML) with RFC 2369 + RFC 8058 unsubscribe headers.

    The recipient's name is deliberately not put in ``To``: it is user input, and the address
    alone is all delivery needs.
    """
    message = EmailMessage(policy=_POLICY)
    message["From"] = formataddr((sender.from_name, sender.from_address))
    message["To"] = to
    if sender.reply_to:
        message["Reply-To"] = sender.reply_to
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=sender.from_address.rpartition("@")[2])
    mailto = f"mailto:{sender.unsubscribe_mailbox}?subject={quote('unsubscribe ' + rendered.unsubscribe_url)}"
    message["List-Unsubscribe"] = f"<{rendered.unsubscribe_url}>, <{mailto}>"
    message["List-Unsubscribe-Post"] = ONE_CLICK
    # Pseudonymous: lead id and step, so a bounce or a support question can be traced to a send.
    message["X-Trellis-Reference"] = reference
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message.as_bytes()
