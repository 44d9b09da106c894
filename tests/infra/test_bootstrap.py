"""`make bootstrap STAGE=...` against moto's CloudFormation, SSM and STS, up to the config it writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.config import Config
from moto import mock_aws

from chalicelib.config import EventSources, Settings
from infra import bootstrap as bootstrapping
from infra import settings
from infra.bootstrap import BootstrapError, bootstrap
from infra.settings import CAMPAIGN_TAG, LAMBDA_FUNCTIONS, LAMBDA_RUNTIME, LOG_RETENTION_DAYS, STAGE_TAG

# moto's CloudFormation warns of each resource type it skips (the SES ones, the topic policy).
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse")  # no "::" here: the filter splits at ":"

DEV_STAGE = {"api_gateway_stage": "api", "environment_variables": {"TRELLIS_CAMPAIGN": "demo"}}


@pytest.fixture
def aws():
    with mock_aws():
        session = boto3.session.Session(region_name="eu-west-1")
        # moto's CloudFormation skips AWS::SES::* (AWS creates it from the template): made by hand.
        session.client("sesv2").create_configuration_set(ConfigurationSetName="trellis-spring")
        yield session


@pytest.fixture
def chalice_dir(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(
        json.dumps({"version": "2.0", "app_name": "trellis", "stages": {"dev": DEV_STAGE}})
    )
    return tmp_path


def test_bootstrap_deploys_the_stack_creates_secrets_and_writes_the_stage(aws, chalice_dir):
    result = bootstrap("spring", "demo", aws, chalice_dir=chalice_dir)

    config = json.loads((chalice_dir / "config.json").read_text())
    assert config["stages"]["dev"] == DEV_STAGE  # other stages kept as they were
    stage = config["stages"]["spring"]
    assert (stage["autogen_policy"], stage["api_gateway_stage"]) == (False, "api")
    assert "iam_policy_file" not in stage  # one per function, below
    env = stage["environment_variables"]
    table = aws.client("dynamodb").describe_table(TableName=env["TRELLIS_TABLE"])["Table"]
    assert env["TRELLIS_STREAM_ARN"] == table["LatestStreamArn"]
    assert env["TRELLIS_TABLE"] == "trellis-spring-leads"
    assert aws.client("s3").head_bucket(Bucket=env["TRELLIS_ASSETS_BUCKET"])
    topics = {t["TopicArn"] for t in aws.client("sns").list_topics()["Topics"]}
    assert {env["TRELLIS_SALES_TOPIC_ARN"], env["TRELLIS_SES_EVENTS_TOPIC"]} <= topics
    assert env["TRELLIS_SES_CONFIGURATION_SET"] == "trellis-spring"
    assert env["TRELLIS_STAGE"] == "spring"
    assert "TRELLIS_PUBLIC_URL" not in env  # unknown before the first deploy
    # Per-function memory, timeout and concurrency: the same settings as the single-stack path.
    functions = stage["lambda_functions"]
    assert {name: {k: v for k, v in f.items() if k != "iam_policy_file"} for name, f in functions.items()} == (
        LAMBDA_FUNCTIONS
    )
    # Each function's own policy file, as Chalice reads it (per function, with a role per function).
    read = Config(chalice_stage="spring", config_from_disk=config)
    for name in LAMBDA_FUNCTIONS:
        assert (
            read.scope("spring", name).iam_policy_file == f"policy-spring-{name}.json" == result.policy_files[name].name
        )
    assert stage["lambda_functions"]["dispatch"]["reserved_concurrency"] == 1

    # Secrets: created in SSM as SecureStrings, named in the config, their values nowhere in it.
    ssm = aws.client("ssm")
    assert sorted(result.created_secrets) == ["/trellis/spring/admin-token", "/trellis/spring/token-key"]
    for name in result.created_secrets:
        parameter = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
        assert parameter["Type"] == "SecureString" and len(parameter["Value"]) >= 32
        assert parameter["Value"] not in (chalice_dir / "config.json").read_text()
    policies = {name: json.loads((chalice_dir / f"policy-spring-{name}.json").read_text()) for name in LAMBDA_FUNCTIONS}
    table_grant = next(s for s in policies["api_handler"]["Statement"] if s["Sid"] == "LeadsTable")
    assert table_grant["Resource"] == [table["TableArn"]]
    # The authorizer's: the admin token (and its decryption via SSM) and its own logs, nothing else.
    grants = {s["Sid"]: s["Resource"] for s in policies["admin_auth"]["Statement"]}
    assert set(grants) == {"ReadSecrets", "DecryptSecrets", "OwnLogs"}
    assert grants["ReadSecrets"] == ["arn:aws:ssm:eu-west-1:123456789012:parameter/trellis/spring/admin-token"]
    assert grants["OwnLogs"][0].endswith(":log-group:/aws/lambda/trellis-spring-admin_auth")

    # What Chalice and the app read from this stage's environment works.
    sources = EventSources.from_env(env)
    assert sources.stream_arn == table["LatestStreamArn"]
    settings = Settings.from_env({**env, "TRELLIS_PUBLIC_URL": "https://x.example/api"})
    assert settings.token_key_parameter == "/trellis/spring/token-key"


def test_bootstrap_again_keeps_secrets_and_adds_the_public_url(aws, chalice_dir):
    bootstrap("spring", "demo", aws, chalice_dir=chalice_dir)
    ssm = aws.client("ssm")
    before = ssm.get_parameter(Name="/trellis/spring/admin-token", WithDecryption=True)["Parameter"]["Value"]

    again = bootstrap(
        "spring",
        "demo",
        aws,
        public_url="https://abc.execute-api.eu-west-1.amazonaws.com/api/",
        chalice_dir=chalice_dir,
    )

    assert again.created_secrets == []
    assert ssm.get_parameter(Name="/trellis/spring/admin-token", WithDecryption=True)["Parameter"]["Value"] == before
    env = json.loads((chalice_dir / "config.json").read_text())["stages"]["spring"]["environment_variables"]
    assert env["TRELLIS_PUBLIC_URL"] == "https://abc.execute-api.eu-west-1.amazonaws.com/api"
    # A third run without the URL keeps the one it knows.
    bootstrap("spring", "demo", aws, chalice_dir=chalice_dir)
    env = json.loads((chalice_dir / "config.json").read_text())["stages"]["spring"]["environment_variables"]
    assert env["TRELLIS_PUBLIC_URL"] == "https://abc.execute-api.eu-west-1.amazonaws.com/api"


def test_a_broken_campaign_stops_before_anything_is_created(aws, capsys):
    config = bootstrapping.CHALICE_DIR / "config.json"
    before = config.read_text()
    assert bootstrapping.main(["--stage", "nosuch"]) == 1
    assert "bootstrap failed" in capsys.readouterr().err
    assert aws.client("cloudformation").describe_stacks()["Stacks"] == []
    assert aws.client("ssm").describe_parameters()["Parameters"] == []
    assert config.read_text() == before


def test_a_missing_ses_configuration_set_is_named(aws, chalice_dir):
    aws.client("sesv2").delete_configuration_set(ConfigurationSetName="trellis-spring")
    with pytest.raises(BootstrapError, match="SES configuration set trellis-spring not found"):
        bootstrap("spring", "demo", aws, chalice_dir=chalice_dir)
    assert "spring" not in json.loads((chalice_dir / "config.json").read_text())["stages"]


def test_secrets_only_creates_the_secrets_and_nothing_else(aws, monkeypatch, capsys):
    config = bootstrapping.CHALICE_DIR / "config.json"
    before = config.read_text()
    monkeypatch.setattr(bootstrapping.boto3.session, "Session", lambda: aws)
    assert bootstrapping.main(["--stage", "spring", "--secrets-only"]) == 0
    ssm = aws.client("ssm")
    names = sorted(p["Name"] for p in ssm.describe_parameters()["Parameters"])
    assert names == ["/trellis/spring/admin-token", "/trellis/spring/token-key"]
    value = ssm.get_parameter(Name="/trellis/spring/token-key", WithDecryption=True)["Parameter"]["Value"]
    assert value not in capsys.readouterr().out
    assert aws.client("cloudformation").describe_stacks()["Stacks"] == []
    assert config.read_text() == before
    # Again: both kept, never overwritten.
    assert bootstrapping.main(["--stage", "spring", "--secrets-only"]) == 0
    assert ssm.get_parameter(Name="/trellis/spring/token-key", WithDecryption=True)["Parameter"]["Value"] == value
    assert capsys.readouterr().out.count("exists, kept") == 2


def test_the_alarm_email_is_set_then_kept_by_a_later_bootstrap(aws, chalice_dir):
    def alarm_email() -> str:
        stack = aws.client("cloudformation").describe_stacks(StackName="trellis-spring")["Stacks"][0]
        return next(p["ParameterValue"] for p in stack["Parameters"] if p["ParameterKey"] == "AlarmEmail")

    bootstrap("spring", "demo", aws, chalice_dir=chalice_dir)
    assert alarm_email() == ""  # none by default
    bootstrap("spring", "demo", aws, chalice_dir=chalice_dir, alarm_email="ops@example.com")
    assert alarm_email() == "ops@example.com"
    bootstrap("spring", "demo", aws, chalice_dir=chalice_dir)  # e.g. to add the public URL
    assert alarm_email() == "ops@example.com"
    bootstrap("spring", "demo", aws, chalice_dir=chalice_dir, alarm_email="")
    assert alarm_email() == ""


def test_the_stage_and_its_stack_are_tagged_and_keep_their_log_retention(aws, chalice_dir):
    bootstrap("spring", "demo", aws, chalice_dir=chalice_dir)
    tags = {STAGE_TAG: "spring", CAMPAIGN_TAG: "demo"}
    # Chalice's own resources: the stage's tags key.
    assert json.loads((chalice_dir / "config.json").read_text())["stages"]["spring"]["tags"] == tags

    def stack() -> dict[str, Any]:
        found: dict[str, Any] = aws.client("cloudformation").describe_stacks(StackName="trellis-spring")["Stacks"][0]
        return found

    def parameters() -> dict[str, str]:
        return {p["ParameterKey"]: p["ParameterValue"] for p in stack()["Parameters"]}

    assert {t["Key"]: t["Value"] for t in stack()["Tags"]} == tags
    assert (parameters()["Campaign"], parameters()["LogRetentionDays"]) == ("demo", str(LOG_RETENTION_DAYS))
    table = aws.client("dynamodb").describe_table(TableName="trellis-spring-leads")["Table"]["TableArn"]
    table_tags = aws.client("dynamodb").list_tags_of_resource(ResourceArn=table)["Tags"]
    assert {t["Key"]: t["Value"] for t in table_tags} == tags
    bootstrap("spring", "demo", aws, chalice_dir=chalice_dir, log_retention_days=90)
    assert parameters()["LogRetentionDays"] == "90"
    bootstrap("spring", "demo", aws, chalice_dir=chalice_dir)  # kept by a run without it
    assert parameters()["LogRetentionDays"] == "90"
    with pytest.raises(BootstrapError, match="log retention 31 days"):
        bootstrap("spring", "demo", aws, chalice_dir=chalice_dir, log_retention_days=31)


def test_the_closing_hint_says_make_deploy_never_plain_chalice_deploy(aws, chalice_dir):
    first = bootstrap("spring", "demo", aws, chalice_dir=chalice_dir)
    hint = bootstrapping.next_step(first)
    assert hint.splitlines()[0] == "next: make deploy STAGE=spring"
    assert 'make bootstrap STAGE=spring CAMPAIGN=demo PUBLIC_URL="$(.venv/bin/chalice url --stage spring)"' in hint
    assert hint.endswith("&& make deploy STAGE=spring")
    assert "chalice deploy" not in hint
    known = bootstrap("spring", "demo", aws, public_url="https://x.example/api", chalice_dir=chalice_dir)
    assert bootstrapping.next_step(known) == "next: make deploy STAGE=spring"


def test_another_python_is_refused_before_aws_is_touched(aws, monkeypatch, capsys):
    monkeypatch.setattr(settings.sys, "version_info", (3, 12, 4, "final", 0))
    monkeypatch.setattr(bootstrapping.boto3.session, "Session", lambda: aws)
    assert bootstrapping.main(["--stage", "spring", "--campaign", "demo"]) == 2
    err = capsys.readouterr().err
    assert "Python 3.12.4" in err and "python3.12" in err and "cp312" in err
    assert LAMBDA_RUNTIME == "python3.11" and f"runtime is {LAMBDA_RUNTIME}" in err
    assert aws.client("cloudformation").describe_stacks()["Stacks"] == []
