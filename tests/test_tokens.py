"""Signed tokens: valid ones verify; tampered, expired or misused ones never do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.errors import InvalidToken
from chalicelib.tracking import LEAD_TOKEN_LIFETIME, TokenSigner

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
signer = TokenSigner(b"k" * 32)


def test_lead_token_round_trip():
    token = signer.lead_token("abc123", NOW)

    assert signer.lead_from_token(token, NOW + timedelta(days=30)) == "abc123"


def test_expired_token_is_rejected():
    token = signer.lead_token("abc123", NOW)

    with pytest.raises(InvalidToken):
        signer.lead_from_token(token, NOW + LEAD_TOKEN_LIFETIME + timedelta(seconds=1))


def test_other_key_is_rejected():
    token = TokenSigner(b"x" * 32).lead_token("abc123", NOW)

    with pytest.raises(InvalidToken):
        signer.lead_from_token(token, NOW)


def test_token_for_another_purpose_is_rejected():
    token = signer.sign("unsubscribe", {"lead": "abc123"}, NOW + timedelta(days=1))

    with pytest.raises(InvalidToken):
        signer.lead_from_token(token, NOW)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: ("e" if t[0] != "e" else "f") + t[1:],
        lambda t: t.replace(".", ""),
        lambda t: t + ".x",
        lambda t: "",
        lambda t: "%%%.%%%",
    ],
)
def test_tampered_tokens_are_rejected(mangle):
    token = signer.lead_token("abc123", NOW)

    with pytest.raises(InvalidToken):
        signer.lead_from_token(mangle(token), NOW)


def test_pseudonym_is_keyed_and_stable():
    assert signer.pseudonym("203.0.113.9") == signer.pseudonym("203.0.113.9")
    assert signer.pseudonym("203.0.113.9") != TokenSigner(b"x" * 32).pseudonym("203.0.113.9")
    assert "203.0.113.9" not in signer.pseudonym("203.0.113.9")
