"""Signed tokens: valid ones verify; tampered, expired or misused ones never do."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.errors import InvalidToken
from chalicelib.tracking import (
    CLAIMED,
    CREATOR,
    LEAD_TOKEN_LIFETIME,
    LEAD_TOKEN_PURPOSE,
    MAILBOX,
    TOKEN_TRUSTS,
    VOID,
    LeadClaim,
    TokenSigner,
    _b64decode,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
signer = TokenSigner(b"k" * 32)


@pytest.mark.parametrize("trust", TOKEN_TRUSTS)
def test_lead_token_round_trip_keeps_what_it_proves(trust):
    token = signer.lead_token("abc123", NOW, trust)

    assert signer.lead_from_token(token, NOW + timedelta(days=30)) == LeadClaim("abc123", trust)


def test_token_kinds_look_the_same():
    """A bot's token, a stranger's and the mailbox owner's: the same claims, the same length;
    only the key tells them apart (and each token is fresh)."""
    tokens = [signer.lead_token("abc123", NOW, trust) for trust in (MAILBOX, CREATOR, CLAIMED, VOID)]
    bodies = [json.loads(_b64decode(token.split(".")[0])) for token in tokens]

    assert {tuple(sorted(body)) for body in bodies} == {("exp", "lead", "n")}
    assert len({len(token) for token in tokens}) == 1
    assert len(set(tokens)) == 4


def test_a_plain_lead_token_of_before_proves_nothing():
    legacy = signer.sign(LEAD_TOKEN_PURPOSE, {"lead": "abc123"}, NOW + timedelta(days=1))

    assert signer.lead_from_token(legacy, NOW) == LeadClaim("abc123", CLAIMED)


def test_expired_token_is_rejected():
    token = signer.lead_token("abc123", NOW, MAILBOX)

    with pytest.raises(InvalidToken):
        signer.lead_from_token(token, NOW + LEAD_TOKEN_LIFETIME + timedelta(seconds=1))


def test_other_key_is_rejected():
    token = TokenSigner(b"x" * 32).lead_token("abc123", NOW, MAILBOX)

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
    token = signer.lead_token("abc123", NOW, MAILBOX)

    with pytest.raises(InvalidToken):
        signer.lead_from_token(mangle(token), NOW)


def test_pseudonym_is_keyed_and_stable():
    assert signer.pseudonym("203.0.113.9") == signer.pseudonym("203.0.113.9")
    assert signer.pseudonym("203.0.113.9") != TokenSigner(b"x" * 32).pseudonym("203.0.113.9")
    assert "203.0.113.9" not in signer.pseudonym("203.0.113.9")
