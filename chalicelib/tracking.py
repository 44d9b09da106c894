"""Signed tokens: lead tokens now; click, open, unsubscribe and confirm tokens build on them.

A token is ``base64url(json claims) + "." + base64url(HMAC-SHA256(key, purpose + "." + claims))``,
truncated to 128 bits. The purpose is inside the MAC, so a token minted for one use (a lead token)
can never be replayed as another (an unsubscribe). Verification is constant-time and failures
say nothing about why: callers act on nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any

from chalicelib.errors import InvalidToken

_MAC_BYTES = 16
LEAD_TOKEN_PURPOSE = "lead"  # noqa: S105 - a label, not a secret
LEAD_TOKEN_LIFETIME = timedelta(days=400)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, key: bytes) -> None:
        # Separate subkeys per use, so no output of one use helps forge another.
        self._token_key = hmac.new(key, b"trellis/tokens", hashlib.sha256).digest()
        self._hash_key = hmac.new(key, b"trellis/pseudonyms", hashlib.sha256).digest()

    def _mac(self, purpose: str, body: str) -> bytes:
        message = f"{purpose}.{body}".encode("ascii")
        return hmac.new(self._token_key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def sign(self, purpose: str, claims: dict[str, Any], expires_at: datetime) -> str:
        payload = dict(claims, exp=int(expires_at.timestamp()))
        body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64encode(self._mac(purpose, body))}"

    def verify(self, purpose: str, token: str, now: datetime) -> dict[str, Any]:
        try:
            body, mac = token.split(".")
            # Compare the canonical text, not decoded bytes: base64's spare low bits would
            # otherwise let several spellings of one MAC pass.
            expected = _b64encode(self._mac(purpose, body))
            if not hmac.compare_digest(mac.encode("ascii"), expected.encode("ascii")):
                raise InvalidToken("bad signature")
            claims = json.loads(_b64decode(body))
        except (ValueError, UnicodeError, binascii.Error) as e:
            raise InvalidToken("malformed token") from e
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            raise InvalidToken("malformed claims")
        if claims["exp"] <= now.timestamp():
            raise InvalidToken("expired")
        return claims

    def pseudonym(self, value: str) -> str:
        """A keyed hash for values we must correlate but not keep (client IPs)."""
        return hmac.new(self._hash_key, value.encode(), hashlib.sha256).hexdigest()[:32]

    def lead_token(self, lead_id: str, now: datetime) -> str:
        return self.sign(LEAD_TOKEN_PURPOSE, {"lead": lead_id}, now + LEAD_TOKEN_LIFETIME)

    def lead_from_token(self, token: str, now: datetime) -> str:
        claims = self.verify(LEAD_TOKEN_PURPOSE, token, now)
        lead_id = claims.get("lead")
        if not isinstance(lead_id, str):
            raise InvalidToken("malformed claims")
        return lead_id


CLICK_PURPOSE = "click"
OPEN_PURPOSE = "open"
UNSUBSCRIBE_PURPOSE = "unsubscribe"
CONFIRM_PURPOSE = "confirm"
# Emails are read and clicked months later; links must keep working as long as people keep mail.
TRACKING_LIFETIME = timedelta(days=730)
UNSUBSCRIBE_LIFETIME = timedelta(days=3650)


class LinkBuilder:
    """Signed URLs of the public API that emails carry: tracked clicks, the open pixel,
    unsubscribe and confirmation."""

    def __init__(self, signer: TokenSigner, public_url: str) -> None:
        self._signer = signer
        self.public_url = public_url.rstrip("/")

    def click(self, lead_id: str, message_id: str, destination: str, now: datetime) -> str:
        token = self._signer.sign(
            CLICK_PURPOSE, {"lead": lead_id, "msg": message_id, "url": destination}, now + TRACKING_LIFETIME
        )
        return f"{self.public_url}/t/c/{token}"

    def open_pixel(self, lead_id: str, message_id: str, now: datetime) -> str:
        token = self._signer.sign(OPEN_PURPOSE, {"lead": lead_id, "msg": message_id}, now + TRACKING_LIFETIME)
        return f"{self.public_url}/t/o/{token}"

    def unsubscribe(self, lead_id: str, message_id: str, now: datetime) -> str:
        token = self._signer.sign(UNSUBSCRIBE_PURPOSE, {"lead": lead_id, "msg": message_id}, now + UNSUBSCRIBE_LIFETIME)
        return f"{self.public_url}/u/{token}"

    def confirm(self, lead_id: str, now: datetime, lifetime: timedelta) -> str:
        token = self._signer.sign(CONFIRM_PURPOSE, {"lead": lead_id}, now + lifetime)
        return f"{self.public_url}/confirm/{token}"

    def is_own(self, url: str) -> bool:
        return url.startswith(self.public_url + "/")
