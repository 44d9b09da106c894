"""What moto's SES accepted, as parsed emails: each message parsed once, however often a test asks."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from typing import Any


def _sent_messages() -> list[Any]:
    from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
    from moto.ses.models import ses_backends

    messages: list[Any] = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    return messages


class Outbox:
    """Every email moto's SES accepted, oldest first. moto only appends to its list, so a message
    already parsed is kept (checked by identity: a reset of moto starts the list anew)."""

    def __init__(self) -> None:
        self._raw: list[Any] = []
        self._parsed: list[EmailMessage] = []

    def __call__(self) -> list[EmailMessage]:
        sent = _sent_messages()
        kept = 0
        while kept < min(len(sent), len(self._raw)) and sent[kept] is self._raw[kept]:
            kept += 1
        del self._raw[kept:], self._parsed[kept:]
        for message in sent[kept:]:
            self._raw.append(message)
            parsed = email.message_from_string(message.raw_data, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            self._parsed.append(parsed)
        return list(self._parsed)

    @staticmethod
    def count() -> int:
        return len(_sent_messages())
