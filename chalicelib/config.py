"""Settings read once from the environment, and the campaign file, validated at cold start.

Domain code never reads ``os.environ``: it is handed a ``Settings`` and a ``Campaign``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from chalicelib.errors import ConfigError
from chalicelib.models import Campaign

# In the deployed zip, vendor/ (holding symlinks to these folders) is unpacked next to chalicelib/,
# so the same relative path works there and in a checkout.
APP_ROOT = Path(__file__).resolve().parent.parent
CAMPAIGNS_DIR = APP_ROOT / "campaigns"
TEMPLATES_DIR = APP_ROOT / "templates"

# Landing-page forms are small; anything bigger is a mistake or an attack. API Gateway's own
# limit (10 MB) is far above this.
MAX_BODY_BYTES = 16 * 1024
MIN_TOKEN_KEY_LENGTH = 32


@dataclass(frozen=True)
class Settings:
    campaign_name: str
    table_name: str
    assets_bucket: str
    # HMAC key for every signed token and for the IP hash; from the environment (locally) or the
    # stage's secret (deployed). Never logged, never in the repo.
    token_key: bytes

    def __repr__(self) -> str:  # keep the key out of tracebacks and logs
        return (
            f"Settings(campaign_name={self.campaign_name!r}, table_name={self.table_name!r}, "
            f"assets_bucket={self.assets_bucket!r}, token_key=<redacted>)"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        required = {
            "TRELLIS_CAMPAIGN": "the campaign file to serve (campaigns/<name>.yaml)",
            "TRELLIS_TABLE": "the DynamoDB table name",
            "TRELLIS_ASSETS_BUCKET": "the S3 bucket holding lead-magnet assets",
            "TRELLIS_TOKEN_KEY": f"secret key for signed tokens, at least {MIN_TOKEN_KEY_LENGTH} characters",
        }
        missing = [f"{name} ({why})" for name, why in required.items() if not env.get(name)]
        if missing:
            raise ConfigError("missing environment variables: " + "; ".join(missing))
        token_key = env["TRELLIS_TOKEN_KEY"]
        if len(token_key) < MIN_TOKEN_KEY_LENGTH:
            raise ConfigError(f"TRELLIS_TOKEN_KEY must be at least {MIN_TOKEN_KEY_LENGTH} characters")
        return cls(
            campaign_name=env["TRELLIS_CAMPAIGN"],
            table_name=env["TRELLIS_TABLE"],
            assets_bucket=env["TRELLIS_ASSETS_BUCKET"],
            token_key=token_key.encode(),
        )


def campaign_path(name: str, directory: Path = CAMPAIGNS_DIR) -> Path:
    return directory / f"{name}.yaml"


def load_campaign_file(path: Path) -> Campaign:
    """Parse and validate one campaign file; errors name the file, the path inside it and the problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: campaign file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        campaign = Campaign.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: {_location(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError("invalid campaign file\n  " + "\n  ".join(lines)) from e
    if campaign.name != path.stem:
        raise ConfigError(f"{path}: name: {campaign.name!r} must match the file name {path.stem!r}")
    return campaign


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def load_campaign(name: str, directory: Path = CAMPAIGNS_DIR) -> Campaign:
    return load_campaign_file(campaign_path(name, directory))
