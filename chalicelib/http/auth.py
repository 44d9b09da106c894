"""The admin token: the bearer check (the authorizer's and the dashboard's) and the verdict every
admin route enforces through ``chalicelib.http.endpoint``."""

from __future__ import annotations

import hmac
import logging
from typing import Any, Optional

from chalice.app import AuthRequest, AuthResponse, Request

from chalicelib.credentials import AdminToken, CredentialsUnavailable
from chalicelib.http.errors import Unauthorized

logger = logging.getLogger(__name__)

# The authorizer's verdicts, as principal ids.
ADMIN = "admin"
ANONYMOUS = "anonymous"
UNKNOWN = "unknown"  # the token could not be read: 503, never a guess either way


def bearer_token(authorization: Any) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header; None for another scheme."""
    scheme, _, token = str(authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def token_matches(candidate: Optional[str], admin_token: AdminToken) -> bool:
    """Compared in constant time. Raises ``CredentialsUnavailable`` when the token cannot be read."""
    expected = admin_token.value()
    # An empty expected token must never match an empty candidate.
    return candidate is not None and bool(expected) and hmac.compare_digest(candidate.encode(), expected)


def authorize_admin(admin_token: AdminToken, auth: AuthRequest) -> AuthResponse:
    """The authorizer of every ``/admin/`` API route: ``Authorization: Bearer <admin token>``.

    It lets every caller through with a verdict instead of denying the wrong ones: API Gateway
    answers a denial with 403 (and chalice local a raised error with 500), while Trellis answers
    wrong credentials as API Gateway answers missing ones, 401, the same deployed and local.
    The endpoint decorator turns the "anonymous" verdict into that 401 (``require_admin``).
    """
    try:
        granted = token_matches(bearer_token(auth.token), admin_token)
    except CredentialsUnavailable:
        logger.exception("admin token unavailable")
        return AuthResponse(routes=["*"], principal_id=UNKNOWN)
    return AuthResponse(routes=["*"], principal_id=ADMIN if granted else ANONYMOUS)


def require_admin(request: Request) -> None:
    verdict = ((request.context or {}).get("authorizer") or {}).get("principalId")
    if verdict == UNKNOWN:
        raise CredentialsUnavailable("the admin token could not be read")
    if verdict != ADMIN:
        raise Unauthorized("bad credentials")
