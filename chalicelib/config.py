"""Settings read once from the environment, and the campaign: validated and compiled before a
deploy (``make validate``, packaging), loaded compiled at cold start.

Domain code never reads ``os.environ``: it is handed a ``Settings`` and a ``Campaign`` (the
read-only records of ``chalicelib.campaign_types``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from chalicelib import compiled
from chalicelib.errors import ConfigError

if TYPE_CHECKING:  # the cold start never imports pydantic: only validation (below) needs it
    from chalicelib import models
    from chalicelib.campaign_types import Campaign

# In the deployed zip, vendor/ (holding symlinks to these folders) is unpacked next to chalicelib/,
# so the same relative path works there and in a checkout.
APP_ROOT = Path(__file__).resolve().parent.parent
CAMPAIGNS_DIR = APP_ROOT / "campaigns"
TEMPLATES_DIR = APP_ROOT / "templates"

# Landing-page forms are small; anything bigger is a mistake or an attack. API Gateway's own
# limit (10 MB) is far above this.
MAX_BODY_BYTES = 16 * 1024
MIN_TOKEN_KEY_LENGTH = 32
STAGE_NAME = re.compile(r"[a-z0-9-]{1,40}")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    """Secrets are excluded from repr, so tracebacks and logs never show them."""

    campaign_name: str
    # The deployed stage (chalice deploy --stage <stage>): the Stage dimension of every metric.
    stage: str
    table_name: str
    assets_bucket: str
    # HMAC key for every signed token and for the IP hash; from the environment (locally) or the
    # stage's SSM SecureString named by token_key_parameter (deployed, read once at cold start).
    # Never logged, never in the repo. Empty while the parameter has not been read.
    token_key: bytes = field(repr=False)
    # Base URL of this stage's API (tracked links, unsubscribe and confirm links point here).
    public_url: str
    ses_configuration_set: str
    # SNS topic every new SQL is published to.
    sales_topic_arn: str = ""
    # Bearer token of the team's admin API; compared in constant time, never logged. Deployed
    # stages name an SSM SecureString parameter holding it instead (admin_token_parameter).
    admin_token: bytes = field(default=b"", repr=False)
    admin_token_parameter: Optional[str] = None
    token_key_parameter: Optional[str] = None
    # Emails per second; when unset, the SES account's own max send rate (GetSendQuota).
    max_send_rate: Optional[float] = None
    # Signs the sales webhook; required when the campaign configures one.
    webhook_secret: Optional[bytes] = field(default=None, repr=False)
    # The Lambda function that runs one part of a fanned-out dispatcher tick (deployed stages:
    # trellis-<stage>-dispatch_shard). Unset: the tick never fans out (it works every shard).
    shard_function: Optional[str] = None
    # Local twin only: the file holding the shared clock's offset. Unset in deployed stages.
    clock_file: Optional[str] = None
    # Where campaign files are read from: the packaged campaigns/ unless set. The twin points it at
    # a copy of the demo campaign whose landing-page URLs follow the dev console's port.
    campaigns_dir: Path = CAMPAIGNS_DIR
    # True only where the stream's event source mapping has ReportBatchItemFailures (the
    # single-stack template and the twin set both together): the handler then answers a failed
    # record with batchItemFailures. Otherwise it raises, and Lambda retries the whole batch.
    stream_report_failures: bool = False
    # Level of Trellis's own loggers (chalicelib.*, the app's); libraries log WARNING and above.
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        required = {
            "TRELLIS_CAMPAIGN": "the campaign file to serve (campaigns/<name>.yaml)",
            "TRELLIS_STAGE": "the stage's name, the Stage dimension of its metrics ([a-z0-9-]{1,40})",
            "TRELLIS_TABLE": "the DynamoDB table name",
            "TRELLIS_ASSETS_BUCKET": "the S3 bucket holding lead-magnet assets",
            "TRELLIS_PUBLIC_URL": "the API's public base URL, e.g. https://abc.execute-api.eu-west-1.amazonaws.com/api",
            "TRELLIS_SES_CONFIGURATION_SET": "the SES configuration set every email is sent with",
            "TRELLIS_SALES_TOPIC_ARN": "the SNS topic new sales-qualified leads are published to",
        }
        missing = [f"{name} ({why})" for name, why in required.items() if not env.get(name)]
        key_sources = [name for name in ("TRELLIS_TOKEN_KEY", "TRELLIS_TOKEN_KEY_PARAMETER") if env.get(name)]
        if not key_sources:
            missing.append(
                f"TRELLIS_TOKEN_KEY (secret key for signed tokens, at least {MIN_TOKEN_KEY_LENGTH} characters)"
                " or TRELLIS_TOKEN_KEY_PARAMETER (the SSM SecureString parameter holding it)"
            )
        admin_sources = [name for name in ("TRELLIS_ADMIN_TOKEN", "TRELLIS_ADMIN_TOKEN_PARAMETER") if env.get(name)]
        if not admin_sources:
            missing.append(
                f"TRELLIS_ADMIN_TOKEN (bearer token for /admin/ routes, at least {MIN_TOKEN_KEY_LENGTH} characters)"
                " or TRELLIS_ADMIN_TOKEN_PARAMETER (the SSM SecureString parameter holding it)"
            )
        if missing:
            raise ConfigError("missing environment variables: " + "; ".join(missing))
        if len(key_sources) > 1:
            raise ConfigError("set TRELLIS_TOKEN_KEY or TRELLIS_TOKEN_KEY_PARAMETER, not both")
        token_key = env.get("TRELLIS_TOKEN_KEY", "")
        if token_key and len(token_key) < MIN_TOKEN_KEY_LENGTH:
            raise ConfigError(f"TRELLIS_TOKEN_KEY must be at least {MIN_TOKEN_KEY_LENGTH} characters")
        if len(admin_sources) > 1:
            raise ConfigError("set TRELLIS_ADMIN_TOKEN or TRELLIS_ADMIN_TOKEN_PARAMETER, not both")
        if env.get("TRELLIS_ADMIN_TOKEN") and len(env["TRELLIS_ADMIN_TOKEN"]) < MIN_TOKEN_KEY_LENGTH:
            raise ConfigError(f"TRELLIS_ADMIN_TOKEN must be at least {MIN_TOKEN_KEY_LENGTH} characters")
        public_url = env["TRELLIS_PUBLIC_URL"].rstrip("/")
        if not public_url.startswith(("https://", "http://")):
            raise ConfigError("TRELLIS_PUBLIC_URL must be an absolute http(s) URL")
        max_send_rate = None
        if env.get("TRELLIS_MAX_SEND_RATE"):
            try:
                max_send_rate = float(env["TRELLIS_MAX_SEND_RATE"])
            except ValueError as e:
                raise ConfigError("TRELLIS_MAX_SEND_RATE must be a number (emails per second)") from e
            if max_send_rate <= 0:
                raise ConfigError("TRELLIS_MAX_SEND_RATE must be above 0")
        if not STAGE_NAME.fullmatch(env["TRELLIS_STAGE"]):
            raise ConfigError("TRELLIS_STAGE must be 1 to 40 of a-z, 0-9 and -")
        log_level = (env.get("TRELLIS_LOG_LEVEL") or "INFO").strip().upper()
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"TRELLIS_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        return cls(
            campaign_name=env["TRELLIS_CAMPAIGN"],
            stage=env["TRELLIS_STAGE"],
            table_name=env["TRELLIS_TABLE"],
            assets_bucket=env["TRELLIS_ASSETS_BUCKET"],
            token_key=token_key.encode(),
            public_url=public_url,
            ses_configuration_set=env["TRELLIS_SES_CONFIGURATION_SET"],
            sales_topic_arn=env["TRELLIS_SALES_TOPIC_ARN"],
            admin_token=env.get("TRELLIS_ADMIN_TOKEN", "").encode(),
            admin_token_parameter=env.get("TRELLIS_ADMIN_TOKEN_PARAMETER") or None,
            token_key_parameter=env.get("TRELLIS_TOKEN_KEY_PARAMETER") or None,
            max_send_rate=max_send_rate,
            webhook_secret=env["TRELLIS_WEBHOOK_SECRET"].encode() if env.get("TRELLIS_WEBHOOK_SECRET") else None,
            shard_function=env.get("TRELLIS_SHARD_FUNCTION") or None,
            clock_file=env.get("TRELLIS_CLOCK_FILE") or None,
            campaigns_dir=Path(env["TRELLIS_CAMPAIGNS_DIR"]) if env.get("TRELLIS_CAMPAIGNS_DIR") else CAMPAIGNS_DIR,
            stream_report_failures=_flag(env, "TRELLIS_STREAM_REPORT_FAILURES"),
            log_level=log_level,
        )


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "false").strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(f"{name} must be true or false, not {value!r}")
    return value == "true"


def campaign_path(name: str, directory: Path = CAMPAIGNS_DIR) -> Path:
    return directory / f"{name}.yaml"


def load_campaign_file(path: Path) -> models.Campaign:
    """Parse and validate one campaign file; errors name the file, the path inside it and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: campaign file not found") from e
    return validate_campaign_text(path, text)


def validate_campaign_text(path: Path, text: str) -> models.Campaign:
    """The campaign file ``path`` holding ``text``, validated (the compiler hashes the very text
    it validated)."""
    # Imported here: validation runs before a deploy and in development, never at cold start.
    import yaml
    from pydantic import ValidationError

    from chalicelib.models import Campaign as CampaignModel

    # libyaml's loader (in PyYAML's wheels) is about 7x faster than the pure-Python one; the same
    # safe subset of YAML either way.
    loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
    try:
        raw = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        campaign = CampaignModel.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: {_location(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError("invalid campaign file\n  " + "\n  ".join(lines)) from e
    if campaign.name != path.stem:
        raise ConfigError(f"{path}: name: {campaign.name!r} must match the file name {path.stem!r}")
    missing = [
        f"{path}: {where}.template: no file templates/{template}"
        for where, template in _templates(campaign)
        if not (TEMPLATES_DIR / template).is_file()
    ]
    if missing:
        raise ConfigError("invalid campaign file\n  " + "\n  ".join(missing))
    return campaign


def _templates(campaign: models.Campaign) -> list[tuple[str, str]]:
    named = [
        (f"sequences.{sequence_id}.steps.{step.id}", step.template)
        for sequence_id, sequence in campaign.sequences.items()
        for step in sequence.steps
    ]
    named += [
        (f"sequences.{sequence_id}.steps.{step.id}.variants.{n}", variant.template)
        for sequence_id, sequence in campaign.sequences.items()
        for step in sequence.steps
        for n, variant in enumerate(step.variants)
        if variant.template is not None
    ]
    if campaign.confirmation is not None:
        named.append(("confirmation", campaign.confirmation.template))
    return named


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def load_campaign(name: str, directory: Path = CAMPAIGNS_DIR) -> Campaign:
    """The campaign ``name`` as a cold start loads it: its compiled form
    (``<name>.compiled.json``, written by ``make validate`` and packaging), not validated again.
    Missing, or compiled from another version of ``<name>.yaml`` (when that is there too), it is
    refused: never a silent fallback to validating, so what runs is what was validated."""
    source = campaign_path(name, directory)
    target = compiled.compiled_path(source)
    if not source.is_file() and not target.is_file():
        raise ConfigError(f"{source}: campaign file not found")
    return compiled.load(target, source)


@dataclass(frozen=True)
class EventSources:
    """ARNs Chalice needs when it *imports* app.py (to wire triggers), before any handler runs.

    ``chalice deploy/package --stage S`` loads the stage's environment_variables first, so a
    deployed stage gets its real stream and topic (``make bootstrap`` writes them). Locally
    nothing subscribes: the twin and the tests call the handlers directly, and the placeholders
    say loudly what is missing if one ever reaches AWS.
    """

    stream_arn: str
    ses_events_topic: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EventSources:
        env = os.environ if environ is None else environ
        return cls(
            stream_arn=env.get(
                "TRELLIS_STREAM_ARN",
                "arn:aws:dynamodb:us-east-1:000000000000:table/TRELLIS_STREAM_ARN-not-set/stream/not-set",
            ),
            ses_events_topic=env.get("TRELLIS_SES_EVENTS_TOPIC", "TRELLIS_SES_EVENTS_TOPIC-not-set"),
        )
