"""Settings and campaign files: validated once, with errors that say where and what."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chalicelib.compiler import compile_to
from chalicelib.config import CAMPAIGNS_DIR, Settings, load_campaign, load_campaign_file
from chalicelib.errors import ConfigError
from chalicelib.tracking import MAILBOX, LeadClaim
from testkit.world import made_up_environment

ROOT = Path(__file__).resolve().parents[2]


def write_campaign(tmp_path: Path, name: str, mutate) -> Path:
    data = yaml.safe_load((CAMPAIGNS_DIR / "demo.yaml").read_text())
    data["name"] = name
    mutate(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_campaign_has_what_design_promises():
    campaign = load_campaign("demo")

    assert campaign.forms["newsletter"].kind == "signup"
    assert campaign.forms["ebook"].kind == "magnet"
    assert campaign.forms["ebook"].magnet == "ebook"
    assert all(len(seq.steps) >= 3 for seq in campaign.sequences.values())
    assert campaign.scoring.sql_threshold > campaign.scoring.mql_threshold
    assert len(campaign.sales.team) == 2


@pytest.mark.parametrize(
    ("mutate", "where", "problem"),
    [
        (lambda d: d["forms"]["ebook"].update(magnet="missing"), "forms.ebook.magnet", "no magnet named 'missing'"),
        (lambda d: d["forms"]["newsletter"].update(sequence="nope"), "forms.newsletter.sequence", "no sequence"),
        (lambda d: d["forms"]["newsletter"]["fields"].update(email="optional"), "forms.newsletter", "fields.email"),
        (
            lambda d: d["forms"]["newsletter"].update(kind="poll"),
            "forms.newsletter.kind",
            "'signup', 'magnet' or 'event'",
        ),
        (lambda d: d["forms"]["newsletter"].update(thank_you_url="/thanks"), "forms.newsletter.thank_you_url", "URL"),
        (
            lambda d: d["forms"]["newsletter"].update(allowed_origins=["https://x.example/page"]),
            "allowed_origins",
            "no path",
        ),
        (lambda d: d["forms"]["newsletter"].update(colour="red"), "forms.newsletter.colour", "Extra inputs"),
        (lambda d: d["magnets"]["ebook"].update(link_lifetime="30d"), "magnets.ebook.link_lifetime", "7d"),
        (lambda d: d["magnets"]["ebook"].update(link_lifetime="soon"), "magnets.ebook.link_lifetime", "duration"),
        (
            lambda d: d["magnets"]["ebook"].update(asset_key="_trellis/deployed/x.json"),
            "magnets.ebook.asset_key",
            "reserved",
        ),
        (lambda d: d["sequences"]["welcome"].update(steps=[]), "sequences.welcome.steps", "at least 1"),
        (lambda d: d["scoring"].update(sql_threshold=10), "scoring", "above mql_threshold"),
        (lambda d: d.update(timezone="Mars/Olympus"), "timezone", "unknown time zone"),
        (lambda d: d["sender"].update(from_address="nobody"), "sender.from_address", "@-sign"),
        (
            lambda d: d["forms"]["ebook"]["custom_fields"].update(email={"type": "text"}),
            "forms.ebook",
            "built-in names: email",
        ),
        # The campaign's events (webinars): docs/events.md.
        (
            lambda d: d["events"]["demo-webinar"].update(starts_at="2020-01-14T16:00"),
            "events.demo-webinar.starts_at",
            "is in the past",
        ),
        (lambda d: d["events"]["demo-webinar"].update(starts_at="soon"), "events.demo-webinar.starts_at", "ISO"),
        (lambda d: d["forms"]["webinar"].update(event="gala"), "forms.webinar.event", "no event named 'gala'"),
        (lambda d: d["forms"]["webinar"].pop("event"), "forms.webinar", "must name its event"),
        (lambda d: d["sequences"]["webinar"].update(event="gala"), "sequences.webinar.event", "no event named 'gala'"),
        (
            lambda d: d["sequences"]["webinar"].pop("event"),
            "sequences.webinar.steps.reminder-day",
            "needs the sequence's 'event'",
        ),
        (
            lambda d: d["sequences"]["webinar"]["steps"][1].update(before_start="1m"),
            "sequences.webinar.steps.reminder-hour",
            "falls before reminder-day",
        ),
        (
            lambda d: d["sequences"]["webinar"]["steps"][3].update(after_end=None, before_start="0s"),
            "sequences.webinar.steps.3",
            "before_start must be more than 0s",
        ),
        (
            lambda d: d["sequences"]["webinar"]["steps"][1].update(delay="1d"),
            "sequences.webinar.steps.1",
            "give one timing, not delay and before_start",
        ),
    ],
)
def test_invalid_campaign_errors_name_file_path_and_problem(tmp_path, mutate, where, problem):
    path = write_campaign(tmp_path, "broken", mutate)

    with pytest.raises(ConfigError) as caught:
        load_campaign_file(path)

    message = str(caught.value)
    assert str(path) in message
    assert where in message
    assert problem in message


def test_campaign_name_must_match_file(tmp_path):
    path = write_campaign(tmp_path, "other", lambda d: d.update(name="mismatch"))

    with pytest.raises(ConfigError, match="must match the file name 'other'"):
        load_campaign_file(path)


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")

    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_campaign_file(path)


def test_validate_cli_passes_shipped_campaigns_and_fails_broken_ones(tmp_path):
    broken = write_campaign(tmp_path, "broken", lambda d: d["forms"]["ebook"].update(magnet="missing"))
    shipped = sorted(str(p) for p in CAMPAIGNS_DIR.glob("*.yaml"))

    ok = subprocess.run(
        [sys.executable, "-m", "chalicelib.validate", *shipped], capture_output=True, text=True, cwd=ROOT
    )
    bad = subprocess.run(
        [sys.executable, "-m", "chalicelib.validate", str(broken)], capture_output=True, text=True, cwd=ROOT
    )

    assert ok.returncode == 0, ok.stderr
    assert "demo.yaml" in ok.stdout
    assert bad.returncode == 1
    assert "forms.ebook.magnet" in bad.stderr


def test_settings_name_every_missing_variable():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"TRELLIS_CAMPAIGN": "demo"})

    message = str(caught.value)
    for name in (
        "TRELLIS_TABLE",
        "TRELLIS_ASSETS_BUCKET",
        "TRELLIS_TOKEN_KEY",
        "TRELLIS_PUBLIC_URL",
        "TRELLIS_SES_CONFIGURATION_SET",
        "TRELLIS_STAGE",
    ):
        assert name in message
    assert "TRELLIS_CAMPAIGN" not in message


STAGE_ENV_BUT_THE_KEY = made_up_environment(TRELLIS_ADMIN_TOKEN="a" * 40)


def test_settings_reject_short_key_and_never_show_the_key():
    env = STAGE_ENV_BUT_THE_KEY
    with pytest.raises(ConfigError, match="at least 32"):
        Settings.from_env({**env, "TRELLIS_TOKEN_KEY": "short"})

    settings = Settings.from_env({**env, "TRELLIS_TOKEN_KEY": "k" * 40})
    assert "k" * 40 not in repr(settings)


def test_campaign_naming_a_missing_template_fails_at_load(tmp_path):
    path = write_campaign(
        tmp_path, "broken", lambda d: d["sequences"]["welcome"]["steps"][1].update(template="email/nope.html")
    )

    with pytest.raises(
        ConfigError, match=r"sequences\.welcome\.steps\.best-of\.template: no file templates/email/nope\.html"
    ):
        load_campaign_file(path)


def test_campaigns_dir_defaults_to_the_packaged_campaigns_and_can_be_pointed_elsewhere(tmp_path):
    env = made_up_environment(TRELLIS_TOKEN_KEY="k" * 40, TRELLIS_ADMIN_TOKEN="a" * 40)
    assert Settings.from_env(env).campaigns_dir == CAMPAIGNS_DIR
    compile_to(write_campaign(tmp_path, "demo", lambda d: d.update(title="Elsewhere")), tmp_path)

    settings = Settings.from_env({**env, "TRELLIS_CAMPAIGNS_DIR": str(tmp_path)})

    assert settings.campaigns_dir == tmp_path
    assert load_campaign(settings.campaign_name, settings.campaigns_dir).title == "Elsewhere"


def test_deployed_token_key_comes_from_ssm_once_per_cold_start(settings, clock):
    import dataclasses

    import boto3

    from chalicelib import runtime
    from chalicelib.errors import ConfigError as Refused
    from chalicelib.tracking import TokenSigner

    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/trellis/dev/token-key", Value="s" * 48, Type="SecureString")
    deployed = dataclasses.replace(settings, token_key=b"", token_key_parameter="/trellis/dev/token-key")

    built = runtime.Runtime.build(deployed, clock=clock)

    token = TokenSigner(b"s" * 48).lead_token("lead-1", clock.now(), MAILBOX)
    assert built.signer.lead_from_token(token, clock.now()) == LeadClaim("lead-1", MAILBOX)
    ssm.put_parameter(Name="/trellis/dev/short", Value="short", Type="SecureString")
    with pytest.raises(Refused, match="at least 32"):
        _ = runtime.Runtime.build(
            dataclasses.replace(deployed, token_key_parameter="/trellis/dev/short"), clock=clock
        ).signer
    with pytest.raises(Refused, match="cannot read"):
        _ = runtime.Runtime.build(
            dataclasses.replace(deployed, token_key_parameter="/trellis/dev/none"), clock=clock
        ).signer


def test_token_key_from_both_places_is_refused():
    env = {**STAGE_ENV_BUT_THE_KEY, "TRELLIS_TOKEN_KEY": "k" * 40}
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env({**env, "TRELLIS_TOKEN_KEY_PARAMETER": "/trellis/x/token-key"})
    assert Settings.from_env({**env, "TRELLIS_TOKEN_KEY": ""} | {"TRELLIS_TOKEN_KEY_PARAMETER": "/p"}).token_key == b""


def test_stage_is_required_and_fit_for_a_metric_dimension():
    env = {**STAGE_ENV_BUT_THE_KEY, "TRELLIS_TOKEN_KEY": "k" * 40}
    assert Settings.from_env(env).stage == "x"
    assert Settings.from_env({**env, "TRELLIS_STAGE": "spring-2026"}).stage == "spring-2026"
    assert Settings.from_env({**env, "TRELLIS_STAGE": "a" * 40}).stage == "a" * 40

    with pytest.raises(ConfigError, match="TRELLIS_STAGE"):
        Settings.from_env({k: v for k, v in env.items() if k != "TRELLIS_STAGE"})
    for bad in ("Prod", "a_b", "a b", "a" * 41, "ü", "dev\n"):
        with pytest.raises(ConfigError, match="TRELLIS_STAGE must be"):
            Settings.from_env({**env, "TRELLIS_STAGE": bad})


def test_log_level_defaults_to_info_and_is_validated():
    env = {**STAGE_ENV_BUT_THE_KEY, "TRELLIS_TOKEN_KEY": "k" * 40}
    assert Settings.from_env(env).log_level == "INFO"
    assert Settings.from_env({**env, "TRELLIS_LOG_LEVEL": " debug "}).log_level == "DEBUG"
    assert Settings.from_env({**env, "TRELLIS_LOG_LEVEL": "ERROR"}).log_level == "ERROR"

    with pytest.raises(ConfigError, match="TRELLIS_LOG_LEVEL must be one of"):
        Settings.from_env({**env, "TRELLIS_LOG_LEVEL": "verbose"})
