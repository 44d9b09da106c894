"""`make teardown STAGE=...` on moto, end to end after `make bootstrap STAGE=...`."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import date
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infra import teardown as tearing_down
from infra.bootstrap import bootstrap
from infra.settings import LAMBDA_FUNCTIONS
from infra.teardown import TeardownError, retained_commands, teardown

# moto's CloudFormation warns of each resource type it skips (the SES ones, the alarms, ...).
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse")

DEV_STAGE = {"api_gateway_stage": "api", "environment_variables": {"TRELLIS_CAMPAIGN": "demo"}}
TODAY = date(2026, 12, 1)
POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "*"}]}
)


@pytest.fixture
def aws():
    with mock_aws():
        session = boto3.session.Session(region_name="eu-west-1")
        # moto's CloudFormation skips AWS::SES::* (AWS creates it from the template): made by hand.
        for stage in ("spring", "summer"):
            session.client("sesv2").create_configuration_set(ConfigurationSetName=f"trellis-{stage}")
        yield session


@pytest.fixture
def stages(aws, tmp_path: Path):
    """Two bootstrapped stages, spring (deployed, with data) and summer, and the local dev stage."""
    chalice_dir = tmp_path / ".chalice"  # in a project directory, as chalice delete expects
    chalice_dir.mkdir()
    (chalice_dir / "config.json").write_text(
        json.dumps({"version": "2.0", "app_name": "trellis", "stages": {"dev": DEV_STAGE}})
    )
    spring = bootstrap("spring", "demo", aws, chalice_dir=chalice_dir)
    bootstrap("summer", "demo", aws, chalice_dir=chalice_dir)
    table, bucket = spring.outputs["LeadsTableName"], spring.outputs["AssetsBucketName"]
    aws.client("dynamodb").put_item(TableName=table, Item={"pk": {"S": "LEAD#ann"}, "sk": {"S": "PROFILE"}})
    aws.client("s3").put_object(Bucket=bucket, Key="magnets/ebook.pdf", Body=b"%PDF")
    # What a deploy that failed partway leaves: a function and its stream mapping, recorded nowhere.
    arn = _function(aws, "spring", "on_lead_change")
    aws.client("lambda").create_event_source_mapping(
        EventSourceArn=spring.outputs["LeadsTableStreamArn"], FunctionName=arn, StartingPosition="LATEST"
    )
    aws.client("events").put_rule(Name="trellis-spring-dispatch-event", ScheduleExpression="rate(1 minute)")
    _function(aws, "summer", "on_lead_change")  # another stage's: left alone
    return {"dir": chalice_dir, "table": table, "bucket": bucket}


def _function(aws, stage: str, name: str) -> str:
    """A function and its role as chalice deploy names them (trellis-<stage>-<function>), no record of them."""
    role = aws.client("iam").create_role(
        RoleName=f"trellis-{stage}-{name}", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"})
    )["Role"]["Arn"]
    aws.client("iam").put_role_policy(RoleName=f"trellis-{stage}-{name}", PolicyName=name, PolicyDocument=POLICY)
    return str(
        aws.client("lambda").create_function(
            FunctionName=f"trellis-{stage}-{name}",
            Runtime="python3.11",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": _zip()},
        )["FunctionArn"]
    )


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return {}\n")
    return buffer.getvalue()


def _stack_names(aws) -> set[str]:
    return {
        s["StackName"]
        for s in aws.client("cloudformation").list_stacks()["StackSummaries"]
        if s["StackStatus"] != "DELETE_COMPLETE"
    }


def _parameters(aws) -> set[str]:
    return {p["Name"] for p in aws.client("ssm").describe_parameters()["Parameters"]}


def test_teardown_deletes_the_stage_and_keeps_its_data(aws, stages):
    chalice_dir = stages["dir"]

    report = teardown("spring", aws, chalice_dir=chalice_dir)

    # Found by name, though no deploy state records them; the other stage's function untouched.
    functions = [f["FunctionName"] for f in aws.client("lambda").list_functions()["Functions"]]
    assert functions == ["trellis-summer-on_lead_change"]
    assert [r["RoleName"] for r in aws.client("iam").list_roles()["Roles"]] == ["trellis-summer-on_lead_change"]
    assert aws.client("lambda").list_event_source_mappings()["EventSourceMappings"] == []
    assert aws.client("events").list_rules()["Rules"] == []
    assert report.deleted[:4] == [
        f"stream mapping {report.deleted[0].split()[-1]}",
        "schedule rule trellis-spring-dispatch-event",
        "function trellis-spring-on_lead_change",
        "role trellis-spring-on_lead_change",
    ]
    assert "stack trellis-spring" in report.deleted
    assert report.kept == [
        f"table {stages['table']}",
        f"bucket {stages['bucket']}",
        "SSM parameter /trellis/spring/kept-data (their names)",
    ]
    assert _stack_names(aws) == {"trellis-summer"}
    # The table (with its items) and the bucket (with its objects) outlive the stack.
    items = aws.client("dynamodb").scan(TableName=stages["table"])["Items"]
    assert items == [{"pk": {"S": "LEAD#ann"}, "sk": {"S": "PROFILE"}}]
    assert aws.client("s3").list_objects_v2(Bucket=stages["bucket"])["KeyCount"] == 1
    assert (report.table, report.bucket, report.data_deleted) == (stages["table"], stages["bucket"], False)
    assert _parameters(aws) == {"/trellis/summer/token-key", "/trellis/summer/admin-token", "/trellis/spring/kept-data"}
    config = json.loads((chalice_dir / "config.json").read_text())
    assert set(config["stages"]) == {"dev", "summer"}
    assert config["stages"]["dev"] == DEV_STAGE
    assert not list(chalice_dir.glob("policy-spring-*.json"))  # every function's role policy
    assert len(list(chalice_dir.glob("policy-summer-*.json"))) == len(LAMBDA_FUNCTIONS)
    assert retained_commands(report)[1:] == [
        f"aws dynamodb delete-table --region eu-west-1 --table-name {stages['table']}",
        f"aws s3 rb --region eu-west-1 s3://{stages['bucket']} --force",
    ]


def test_with_delete_data_the_table_is_backed_up_then_table_and_bucket_deleted(aws, stages):
    report = teardown("spring", aws, delete_data=True, chalice_dir=stages["dir"], today=TODAY)

    backups = aws.client("dynamodb").list_backups(TableName=stages["table"])["BackupSummaries"]
    assert [(b["BackupName"], b["BackupStatus"]) for b in backups] == [("trellis-spring-final-2026-12-01", "AVAILABLE")]
    assert report.backup_arn == backups[0]["BackupArn"]
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        aws.client("dynamodb").describe_table(TableName=stages["table"])
    with pytest.raises(ClientError, match="404"):
        aws.client("s3").head_bucket(Bucket=stages["bucket"])
    assert _stack_names(aws) == {"trellis-summer"}
    summer = json.loads((stages["dir"] / "config.json").read_text())["stages"]["summer"]
    aws.client("dynamodb").describe_table(TableName=summer["environment_variables"]["TRELLIS_TABLE"])  # untouched
    assert "/trellis/spring/kept-data" not in _parameters(aws)
    assert report.deleted[-4:-2] == [
        f"table {stages['table']} (backed up as trellis-spring-final-2026-12-01)",
        f"bucket {stages['bucket']} (emptied)",
    ]


def test_a_second_run_finishes_what_a_first_left(aws, stages):
    aws.client("cloudformation").delete_stack(StackName="trellis-spring")  # as if the first run stopped there
    report = teardown("spring", aws, delete_data=True, chalice_dir=stages["dir"], today=TODAY)

    assert report.stack_deleted is False
    assert report.table == stages["table"]  # the names come from the stage's config then
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        aws.client("dynamodb").describe_table(TableName=stages["table"])
    assert "spring" not in json.loads((stages["dir"] / "config.json").read_text())["stages"]


def test_delete_data_later_finds_the_kept_names_from_any_checkout_and_already_deleted_counts(aws, stages, tmp_path):
    teardown("spring", aws, chalice_dir=stages["dir"])
    fresh = tmp_path / "fresh" / ".chalice"  # a clone that never bootstrapped spring
    fresh.mkdir(parents=True)
    (fresh / "config.json").write_text(json.dumps({"version": "2.0", "app_name": "trellis", "stages": {}}))
    aws.client("s3").delete_object(Bucket=stages["bucket"], Key="magnets/ebook.pdf")
    tearing_down.empty_and_delete_bucket(aws.client("s3"), stages["bucket"])  # deleted by hand meanwhile

    report = teardown("spring", aws, delete_data=True, chalice_dir=fresh, today=TODAY)

    assert report.deleted == [
        f"table {stages['table']} (backed up as trellis-spring-final-2026-12-01)",
        f"bucket {stages['bucket']} (already deleted)",
    ]
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        aws.client("dynamodb").describe_table(TableName=stages["table"])
    assert "/trellis/spring/kept-data" not in _parameters(aws)
    with pytest.raises(TeardownError, match="nothing of stage spring to tear down"):
        teardown("spring", aws, delete_data=True, chalice_dir=fresh)


def test_delete_data_refuses_when_the_names_are_unknown_and_deletes_nothing(aws, stages, tmp_path):
    aws.client("cloudformation").delete_stack(StackName="trellis-spring")  # gone, and no record of the names
    fresh = tmp_path / "fresh" / ".chalice"
    fresh.mkdir(parents=True)
    with pytest.raises(
        TeardownError, match=r"names of stage spring's table and bucket are unknown.*nothing was deleted"
    ):
        teardown("spring", aws, delete_data=True, chalice_dir=fresh)
    assert "trellis-spring-on_lead_change" in [
        f["FunctionName"] for f in aws.client("lambda").list_functions()["Functions"]
    ]
    assert "/trellis/spring/admin-token" in _parameters(aws)


def test_a_stage_only_run_locally_is_refused(aws, stages):
    before = (stages["dir"] / "config.json").read_text()
    with pytest.raises(TeardownError, match="nothing of stage dev to tear down"):
        teardown("dev", aws, chalice_dir=stages["dir"])
    assert (stages["dir"] / "config.json").read_text() == before


def test_the_command_requires_a_stage_and_asks_nothing_when_not_in_a_terminal(aws, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tearing_down.main([])
    assert exit_info.value.code == 2
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked in non-interactive mode"))
    assert tearing_down.main(["--stage", "nosuchstage"]) == 1  # the repo's .chalice has no such stage
    assert "nothing of stage nosuchstage to tear down" in capsys.readouterr().err


def test_in_a_terminal_it_asks_for_the_stage_name(aws, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "not-it")
    assert tearing_down.main(["--stage", "spring"]) == 1
    assert "teardown cancelled" in capsys.readouterr().err


def test_a_stage_left_with_only_its_functions_policy_files_has_them_removed(aws, stages):
    # What a bootstrap whose stack was deleted by hand leaves: one policy file per function.
    leftovers = [stages["dir"] / f"policy-autumn-{name}.json" for name in LAMBDA_FUNCTIONS]
    for path in leftovers:
        path.write_text("{}")
    report = teardown("autumn", aws, chalice_dir=stages["dir"])
    assert report.policy_removed and not any(path.exists() for path in leftovers)
    assert (stages["dir"] / "policy-spring-admin_auth.json").exists()  # another stage's kept
