"""Deployment settings both deploy paths share: ``make bootstrap`` (``chalice deploy``) writes
them into the stage's ``.chalice/config.json``; ``make package`` (the single stack) into the
packaged copy's config and its SAM template. One place, so the two paths cannot drift. (The
stream trigger's retry settings and the gateway responses are infra/after_deploy.py's constants,
which the single-stack template uses too.)
"""

from __future__ import annotations

from typing import Any

# Per-function Lambda settings: Chalice's ``lambda_functions`` stage keys (memory in MB,
# timeout in seconds). Chalice's defaults are 128 MB and 60 s for every function.
LAMBDA_FUNCTIONS: dict[str, dict[str, int]] = {
    # Every route. API Gateway gives up on an integration at 29 s; stopping at 28 s makes the
    # function's own timeout the one that is logged. 512 MB: pydantic, Jinja2 and a faster CPU.
    "api_handler": {"lambda_memory_size": 512, "lambda_timeout": 28},
    # The nurture dispatcher, every minute. It stops claiming work once less than its safety
    # margin (10 s, chalicelib/nurture/dispatcher.py) is left, so a 55 s timeout ends each tick
    # before the next is due. One at a time: a tick never overlaps another (claims make that
    # safe anyway; one sender also keeps the SES send rate the account's, not a multiple of it).
    "dispatch": {"lambda_memory_size": 512, "lambda_timeout": 55, "reserved_concurrency": 1},
    # The table stream: batches of up to 100 records, scoring, handoffs and first sends.
    "on_lead_change": {"lambda_memory_size": 512, "lambda_timeout": 120},
    # SES bounces and complaints: one suppression write per message.
    "on_ses_feedback": {"lambda_memory_size": 256, "lambda_timeout": 30},
    # The admin authorizer: one SSM read per cold start, then a constant-time compare.
    "admin_auth": {"lambda_memory_size": 256, "lambda_timeout": 10},
}

# What the deployed API Gateway treats as binary, on top of the app's own list (app.api.binary_types).
# API Gateway decides from the request's FIRST Accept type only, so a mail client asking for
# `image/webp,*/*` or `*/*` would get the pixel as base64 text: the deployed API lists */*.
# Not in app.py's list: Chalice would then base64 every response (failing on text bodies) and
# answer any request without an Accept header with 400 (aws/chalice#1523).
DEPLOYED_EXTRA_BINARY_TYPES = ("*/*",)


def lambda_functions() -> dict[str, dict[str, Any]]:
    """A fresh copy of ``LAMBDA_FUNCTIONS`` for a stage's config (callers may change it)."""
    return {name: dict(values) for name, values in LAMBDA_FUNCTIONS.items()}
