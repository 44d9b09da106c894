"""Team deploys end to end, as a team would run them from two laptops, on a moto server standing in
for the AWS account: bootstrap, ``make deploy`` from clone A, again from a fresh clone B (the same
REST API, one stream mapping, one SNS subscription), a deploy that fails halfway and the next one
that recovers it, teardown from clone B (only the kept table and bucket left, and listed), then
``DELETE_DATA=yes`` from a third clone that never deployed.

What is not the real thing, and why:
- ``chalice deploy`` runs in this process (testkit/chalice_deploy.py) with its packaging stubbed to
  hand every function one small zip built once: Chalice's packager builds wheels with pip from PyPI
  (slow, online). Chalice's planner, executor and recorder are its own, against the moto server.
- moto's API Gateway takes only OpenAPI 3 and Chalice sends Swagger 2.0: testkit/moto_apigateway.py
  (a test helper, labelled as one) hands moto the same document as OpenAPI 3.
- moto's CloudFormation skips AWS::SES::*: the stage's configuration set is made by hand.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, Optional

import boto3
import pytest
from moto.server import ThreadedMotoServer

from infra import deploy as deploying
from infra.bootstrap import bootstrap
from infra.deploy import DeployError, deploy, state_key
from infra.settings import LAMBDA_FUNCTIONS
from infra.teardown import kept_data_parameter, teardown
from testkit.chalice_deploy import chalice_deploy
from testkit.moto_apigateway import swagger2_accepted
from tests.twin_process import free_ports

pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse")  # moto's CloudFormation, skipped types

REPO = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"
STAGE, OTHER = "autumn", "winter"
# What chalice needs of a checkout (vendor/ holds symlinks to templates/ and campaigns/).
CHECKOUT = ("app.py", "requirements.txt", "chalicelib", "templates", "campaigns", "vendor")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with swagger2_accepted():
            yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one zip every function of every deploy gets (moto stores it; nothing runs it)."""
    path = tmp_path_factory.mktemp("package") / "deployment.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(REPO / "app.py", "app.py")
    return path


@pytest.fixture
def session(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    # botocore (boto3's and Chalice's sessions alike) sends every call to the moto server.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    return boto3.session.Session(region_name=REGION)


def clone(base: Path, name: str) -> Path:
    """A fresh checkout: the project's files and its committed .chalice/config.json, no deployed/."""
    project = base / name
    project.mkdir()
    for entry in CHECKOUT:
        source = REPO / entry
        if source.is_dir():
            shutil.copytree(source, project / entry, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, project / entry)
    (project / ".chalice").mkdir()
    shutil.copy2(REPO / ".chalice" / "config.json", project / ".chalice" / "config.json")
    return project


def runner(package: Path, fail_on: Optional[str] = None) -> Any:
    def run(stage: str, project_dir: Path) -> int:
        return chalice_deploy(stage, project_dir, package, fail_on=fail_on)

    return run


def inventory(session: Any) -> dict[str, list[str]]:
    """Everything in the account a stage's bootstrap, deploy or teardown makes, by kind."""
    lam, apigw, sns = session.client("lambda"), session.client("apigateway"), session.client("sns")
    functions = sorted(f["FunctionName"] for f in lam.list_functions()["Functions"])
    return {
        "stacks": sorted(
            s["StackName"]
            for s in session.client("cloudformation").list_stacks()["StackSummaries"]
            if s["StackStatus"] != "DELETE_COMPLETE"
        ),
        "functions": functions,
        "roles": sorted(r["RoleName"] for r in session.client("iam").list_roles()["Roles"]),
        "rest_apis": sorted(f"{a['name']} {a['id']}" for a in apigw.get_rest_apis()["items"]),
        "stream_mappings": sorted(
            f"{m['FunctionArn'].rsplit(':', 1)[-1]} {m['UUID']}"
            for m in lam.list_event_source_mappings()["EventSourceMappings"]
        ),
        "sns_subscriptions": sorted(
            f"{s['Endpoint'].rsplit(':', 1)[-1]} on {s['TopicArn'].rsplit(':', 1)[-1]}"
            for s in sns.list_subscriptions()["Subscriptions"]
            if s["Protocol"] == "lambda"
        ),
        "rules": sorted(r["Name"] for r in session.client("events").list_rules()["Rules"]),
        "log_groups": sorted(g["logGroupName"] for g in session.client("logs").describe_log_groups()["logGroups"]),
        "tables": sorted(session.client("dynamodb").list_tables()["TableNames"]),
        "buckets": sorted(b["Name"] for b in session.client("s3").list_buckets()["Buckets"]),
        "parameters": sorted(p["Name"] for p in session.client("ssm").describe_parameters()["Parameters"]),
    }


def of_stage(items: list[str], stage: str) -> list[str]:
    return [item for item in items if f"trellis-{stage}" in item or f"/trellis/{stage}/" in item]


def state(session: Any, bucket: str, stage: str) -> dict[str, Any]:
    body = session.client("s3").get_object(Bucket=bucket, Key=state_key(stage))["Body"].read()
    return {r["name"]: r for r in json.loads(body)["resources"]}


def test_two_clones_deploy_one_stage_a_failed_deploy_is_recovered_and_teardown_tells_the_truth(
    session: Any, package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps: dict[str, dict[str, list[str]]] = {}
    for stage in (STAGE, OTHER):  # moto's CloudFormation skips AWS::SES::*: made as AWS would
        session.client("sesv2").create_configuration_set(ConfigurationSetName=f"trellis-{stage}")
    clone_a, clone_b = clone(tmp_path, "a"), clone(tmp_path, "b")

    # Bootstrap from A; deploy from A.
    booted = bootstrap(STAGE, "demo", session, chalice_dir=clone_a / ".chalice")
    bucket, table = booted.outputs["AssetsBucketName"], booted.outputs["LeadsTableName"]
    first = deploy(STAGE, session, chalice_dir=clone_a / ".chalice", run=runner(package), sleep=lambda s: None)
    steps["deploy from A"] = inventory(session)
    api_id = first.rest_api_id
    assert api_id and steps["deploy from A"]["rest_apis"] == [f"trellis {api_id}"]
    assert state(session, bucket, STAGE)["rest_api"]["rest_api_id"] == api_id
    assert len(steps["deploy from A"]["functions"]) == len(LAMBDA_FUNCTIONS)
    assert len(steps["deploy from A"]["stream_mappings"]) == 1
    assert len(steps["deploy from A"]["sns_subscriptions"]) == 1

    # B: a fresh clone, its own bootstrap (idempotent) and deploy: the same stage, updated.
    bootstrap(STAGE, "demo", session, chalice_dir=clone_b / ".chalice")
    assert not (clone_b / ".chalice" / "deployed").exists()
    second = deploy(STAGE, session, chalice_dir=clone_b / ".chalice", run=runner(package), sleep=lambda s: None)
    steps["deploy from B"] = inventory(session)
    assert second.rest_api_id == api_id
    assert steps["deploy from B"] == steps["deploy from A"]  # nothing created twice, nothing lost
    assert second.adopted == []  # all from the state in AWS, nothing by search
    recorded_b = json.loads((clone_b / ".chalice" / "deployed" / f"{STAGE}.json").read_text())
    assert {r["name"]: r for r in recorded_b["resources"]}["rest_api"]["rest_api_id"] == api_id

    # A second stage whose first deploy (from B) fails halfway: Chalice records nothing.
    other = bootstrap(OTHER, "demo", session, chalice_dir=clone_b / ".chalice")
    with pytest.raises(DeployError, match="chalice deploy --stage winter failed"):
        deploy(
            OTHER,
            session,
            chalice_dir=clone_b / ".chalice",
            run=runner(package, fail_on=f"trellis-{OTHER}-on_ses_feedback"),
            sleep=lambda s: None,
        )
    steps["failed deploy of winter from B"] = inventory(session)
    half = steps["failed deploy of winter from B"]
    assert of_stage(half["functions"], OTHER) == [
        "trellis-winter-dispatch",
        "trellis-winter-dispatch_shard",
        "trellis-winter-on_lead_change",
    ]
    assert len(of_stage(half["stream_mappings"], OTHER)) == 1
    assert of_stage(half["parameters"], OTHER).count(f"/trellis/{OTHER}/deploy-lock") == 0  # released
    assert state(session, other.outputs["AssetsBucketName"], OTHER) == {}  # nothing recorded

    # The next deploy (from A, which never deployed winter: bootstrapped there first, as B was for
    # autumn) adopts what the failed one made.
    bootstrap(OTHER, "demo", session, chalice_dir=clone_a / ".chalice")
    recovered = deploy(OTHER, session, chalice_dir=clone_a / ".chalice", run=runner(package), sleep=lambda s: None)
    steps["recovering deploy of winter from A"] = inventory(session)
    after = steps["recovering deploy of winter from A"]
    assert "on_lead_change-dynamodb-event-source" in recovered.adopted
    assert len(of_stage(after["functions"], OTHER)) == len(LAMBDA_FUNCTIONS)
    assert len(of_stage(after["stream_mappings"], OTHER)) == 1  # adopted, not a second one
    assert len(after["rest_apis"]) == 2 and recovered.rest_api_id != api_id  # one per stage
    assert of_stage(after["functions"], STAGE) == of_stage(steps["deploy from B"]["functions"], STAGE)

    # Teardown of autumn from B: nothing of it left but the kept table and bucket, listed.
    capsys.readouterr()
    report = teardown(STAGE, session, chalice_dir=clone_b / ".chalice", sleep=lambda s: None)
    steps["teardown of autumn from B"] = inventory(session)
    gone = steps["teardown of autumn from B"]
    for kind in ("stacks", "functions", "roles", "stream_mappings", "sns_subscriptions", "rules", "log_groups"):
        assert of_stage(gone[kind], STAGE) == [], kind
    assert gone["rest_apis"] == [f"trellis {recovered.rest_api_id}"]  # winter's, untouched
    assert of_stage(gone["tables"], STAGE) == [table]
    assert bucket in gone["buckets"]
    assert of_stage(gone["parameters"], STAGE) == [kept_data_parameter(STAGE)]
    assert report.kept[:2] == [f"table {table}", f"bucket {bucket}"]
    assert f"REST API {api_id}" in report.deleted and "function trellis-autumn" in report.deleted
    assert f"stack trellis-{STAGE}" in report.deleted
    session.client("s3").head_bucket(Bucket=bucket)
    assert "Contents" not in session.client("s3").list_objects_v2(Bucket=bucket, Prefix=state_key(STAGE))
    assert of_stage(gone["functions"], OTHER) == of_stage(after["functions"], OTHER)

    # DELETE_DATA=yes from a clone that never deployed: the names come from the teardown's record.
    clone_c = clone(tmp_path, "c")
    report = teardown(
        STAGE,
        session,
        delete_data=True,
        chalice_dir=clone_c / ".chalice",
        today=date(2026, 12, 2),
        sleep=lambda s: None,
    )
    steps["DELETE_DATA=yes of autumn from C"] = inventory(session)
    final = steps["DELETE_DATA=yes of autumn from C"]
    assert report.deleted[:2] == [
        f"table {table} (backed up as trellis-autumn-final-2026-12-02)",
        f"bucket {bucket} (emptied)",
    ]
    assert of_stage(final["tables"], STAGE) == [] and bucket not in final["buckets"]
    assert of_stage(final["parameters"], STAGE) == []
    backups = session.client("dynamodb").list_backups(TableName=table)["BackupSummaries"]
    assert [b["BackupName"] for b in backups] == ["trellis-autumn-final-2026-12-02"]

    # Winter torn down with its data from B: the account holds nothing of either stage.
    teardown(OTHER, session, delete_data=True, chalice_dir=clone_b / ".chalice", sleep=lambda s: None)
    steps["teardown of winter from B, DELETE_DATA=yes"] = inventory(session)
    empty = steps["teardown of winter from B, DELETE_DATA=yes"]
    assert {kind: of_stage(items, STAGE) + of_stage(items, OTHER) for kind, items in empty.items()} == {
        kind: [] for kind in empty
    }
    assert empty["rest_apis"] == []

    with capsys.disabled():
        print("\nresources after each step (tests/infra/test_team_deploy.py):")
        for step, resources in steps.items():
            print(f"  {step}: {json.dumps({k: v for k, v in resources.items() if v})}")


def test_a_second_deploy_of_a_stage_at_once_is_refused_naming_the_owner(
    session: Any, package: Path, tmp_path: Path
) -> None:
    session.client("sesv2").create_configuration_set(ConfigurationSetName="trellis-locked")
    project = clone(tmp_path, "a")
    bootstrap("locked", "demo", session, chalice_dir=project / ".chalice")
    ran: list[str] = []
    ssm = session.client("ssm")
    refused = pytest.raises(DeployError, match=r"being deployed or torn down by ann@laptop pid 1 .*expires 20")
    with deploying.stage_lock(ssm, "locked", owner="ann@laptop pid 1"), refused:
        deploy(
            "locked",
            session,
            chalice_dir=project / ".chalice",
            run=lambda stage, directory: ran.append(stage) or 0,
            lock_wait_seconds=0,
        )
    assert ran == []  # refused before chalice ran
    # The lock went with its owner; an expired one is taken over (a deploy killed before its finally).
    assert "/trellis/locked/deploy-lock" not in {p["Name"] for p in ssm.describe_parameters()["Parameters"]}
    stale = deploying.acquire_lock(ssm, "locked", "bob@desk", seconds=-1)
    taken = deploying.acquire_lock(ssm, "locked", "cy@home", wait_seconds=0, say=lambda message: None)
    assert (stale.owner, taken.owner) == ("bob@desk", "cy@home")
    deploying.release_lock(ssm, "locked", stale)  # no longer bob's: left alone
    assert json.loads(ssm.get_parameter(Name="/trellis/locked/deploy-lock")["Parameter"]["Value"])["owner"] == "cy@home"
    deploying.release_lock(ssm, "locked", taken)


def test_chalice_deploys_a_copy_that_holds_only_the_stages_campaign(tmp_path: Path, monkeypatch: Any) -> None:
    import subprocess

    project = tmp_path / "project"
    (project / ".chalice" / "deployments").mkdir(parents=True)
    (project / ".chalice" / "deployments" / "cached.zip").write_bytes(b"zip")
    (project / "campaigns").mkdir()
    demo = (REPO / "campaigns" / "demo.yaml").read_text()
    for name in ("autumn", "other"):  # valid files: the copy compiles the stage's
        (project / "campaigns" / f"{name}.yaml").write_text(demo.replace("name: demo", f"name: {name}", 1))
    (project / "vendor").mkdir()
    (project / "vendor" / "campaigns").symlink_to("../campaigns")
    config = {"stages": {"autumn": {"environment_variables": {"TRELLIS_CAMPAIGN": "autumn"}}}}
    (project / ".chalice" / "config.json").write_text(json.dumps(config))
    (project / ".chalice" / "policy-autumn-dispatch.json").write_text("{}")
    seen: dict[str, Any] = {}

    def chalice(command: list[str], cwd: Path, check: bool) -> Any:
        seen["cwd"] = Path(cwd)
        seen["shipped"] = sorted(p.name for p in (Path(cwd) / "vendor" / "campaigns").iterdir())
        seen["chalice_dir"] = sorted(p.name for p in (Path(cwd) / ".chalice").iterdir())
        (Path(cwd) / ".chalice" / "deployed").mkdir(exist_ok=True)
        (Path(cwd) / ".chalice" / "deployed" / "autumn.json").write_text('{"resources": ["api"]}')
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(deploying.subprocess, "run", chalice)

    assert deploying.run_chalice_deploy("autumn", project) == 0
    # Another campaign is not shipped; this one goes with its compiled form, compiled in the copy.
    assert seen["cwd"] != project and seen["shipped"] == ["autumn.compiled.json", "autumn.yaml"]
    assert not (project / "campaigns" / "autumn.compiled.json").exists()
    assert "policy-autumn-dispatch.json" in seen["chalice_dir"] and "deployments" not in seen["chalice_dir"]
    assert json.loads((project / ".chalice" / "deployed" / "autumn.json").read_text()) == {"resources": ["api"]}
    assert (project / "campaigns" / "other.yaml").exists()  # the checkout keeps every campaign


def test_an_invalid_campaign_file_stops_the_deploy_before_chalice_runs(tmp_path: Path, monkeypatch: Any) -> None:
    project = tmp_path / "project"
    (project / ".chalice").mkdir(parents=True)
    (project / "campaigns").mkdir()
    (project / "campaigns" / "autumn.yaml").write_text("name: autumn\n")
    config = {"stages": {"autumn": {"environment_variables": {"TRELLIS_CAMPAIGN": "autumn"}}}}
    (project / ".chalice" / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(deploying.subprocess, "run", lambda *a, **k: pytest.fail("chalice ran on an invalid campaign"))

    with pytest.raises(DeployError, match=r"autumn\.yaml: sender: Field required"):
        deploying.run_chalice_deploy("autumn", project)


def test_make_deploy_refuses_an_interpreter_of_another_runtime(monkeypatch: Any, capsys: Any) -> None:
    from infra.settings import InterpreterMismatch

    def mismatch() -> None:
        raise InterpreterMismatch("this is Python 3.12; the functions run python3.11: deploy with python3.11")

    monkeypatch.setattr(deploying, "check_interpreter", mismatch)
    monkeypatch.setattr(deploying, "deploy", lambda *a, **k: pytest.fail("deployed with the wrong interpreter"))

    assert deploying.main(["--stage", "autumn"]) == 2
    assert "3.12" in capsys.readouterr().err
