"""Deployment settings both deploy paths share: ``make bootstrap`` (``chalice deploy``) writes
them into the stage's ``.chalice/config.json``; ``make package`` (the single stack) into the
packaged copy's config and its SAM template. One place, so the two paths cannot drift. (The
stream trigger's retry settings and the gateway responses are infra/after_deploy.py's constants,
which the single-stack template uses too.)
"""

from __future__ import annotations

import sys
from typing import Any, Optional

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
    # 1,024 MB: ~0.58 vCPU, enough CPU alone for ~19 emails/s (CPU_PER_EMAIL in
    # chalicelib/nurture/dispatcher.py, measured by make bench); above that it fans out. Its
    # TICK_MEMORY_MB and PART_MEMORY_MB are these two (tests/infra/test_iam_policy.py).
    "dispatch": {"lambda_memory_size": 1024, "lambda_timeout": 55, "reserved_concurrency": 1},
    # A part of a fanned-out tick (chalicelib/nurture/fanout.py), started by ``dispatch`` when
    # the send rate needs more than one sender: its shards and share of the rate. Not reserved:
    # at most eight at once, and a reservation would take from the account's unreserved pool.
    # 1,769 MB: a whole vCPU (~33 emails/s of our code's CPU), the most one Python thread uses.
    # It takes new work until just before the next minute's parts start (fanout.PART_WORK_SECONDS,
    # 58 s), then its emails in flight finish within the dispatcher's 10 s safety margin.
    "dispatch_shard": {"lambda_memory_size": 1769, "lambda_timeout": 70},
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


# -- the Lambda runtime -----------------------------------------------------------------------------

# The functions' runtime, set here and nowhere else. Chalice has no setting for it: ``chalice
# deploy`` and ``chalice package`` take it from the interpreter running them (and fetch wheels for
# that version: cp311 for 3.11). So both deploy paths refuse any other interpreter
# (``check_interpreter``) rather than deploy python3.12 functions with cp312 wheels.
LAMBDA_RUNTIME = "python3.11"


class InterpreterMismatch(Exception):
    """The running Python would deploy another runtime than ``LAMBDA_RUNTIME``; the message says both."""


def interpreter_runtime(version_info: tuple[int, ...]) -> str:
    """The Lambda runtime Chalice derives from an interpreter's version (``python3.11`` for 3.11.x)."""
    return f"python{version_info[0]}.{version_info[1]}"


def check_interpreter(version_info: Optional[tuple[int, ...]] = None) -> None:
    """Raise ``InterpreterMismatch`` unless this interpreter (or ``version_info``) is ``LAMBDA_RUNTIME``'s.

    Called first by every command that runs Chalice to deploy or package (infra.package,
    infra.bootstrap, infra.deploy), before anything is built or touched.
    """
    if version_info is None:
        version_info = (sys.version_info[0], sys.version_info[1], sys.version_info[2])
    running = version_info
    if interpreter_runtime(running) != LAMBDA_RUNTIME:
        found = ".".join(str(part) for part in running[:3])
        wanted = LAMBDA_RUNTIME.removeprefix("python")
        raise InterpreterMismatch(
            f"this is Python {found}, which would deploy {interpreter_runtime(running)} functions with "
            f"cp{running[0]}{running[1]} wheels; the project's runtime is {LAMBDA_RUNTIME} (infra/settings.py "
            f"LAMBDA_RUNTIME): run it with Python {wanted} (make clean && make venv PYTHON=python{wanted})"
        )


# -- logs and tags ------------------------------------------------------------------------------------

# Days CloudWatch keeps a function's logs (a stage may set another: ``--log-retention-days`` of
# infra.bootstrap and infra.package, the stack's ``LogRetentionDays`` parameter). Lambda's own
# log groups never expire; Chalice creates none, so both paths create them with this retention.
LOG_RETENTION_DAYS = 30
# What CloudWatch Logs accepts as a retention (PutRetentionPolicy's enum).
LOG_RETENTION_CHOICES = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip

STAGE_TAG = "trellis:stage"
CAMPAIGN_TAG = "trellis:campaign"


def resource_tags(stage: str, campaign: str) -> dict[str, str]:
    """The tags on every resource of a stage, whichever path creates it (teardown finds them by these)."""
    return {STAGE_TAG: stage, CAMPAIGN_TAG: campaign}
