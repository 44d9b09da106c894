"""The single-stack path: `python -m infra.package` builds one SAM template with the app and its
resources, cfn-lint passes on it, and it is wired to itself (no placeholder left).

It runs once per module, on a copy of the project with an EMPTY requirements.txt (as
tests/infra/test_package.py does: third-party wheels are Chalice's job, and would need the network),
in an environment without AWS credentials: packaging calls no AWS API.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import py_compile
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from chalicelib.entities import lead_id_for
from infra import after_deploy, settings
from infra.bootstrap import OUTPUT_VARIABLES, secret_names
from infra.package import cfn_lint, load_template, offline_environment
from infra.package import main as package_main
from infra.settings import CAMPAIGN_TAG, LAMBDA_FUNCTIONS, LAMBDA_RUNTIME, LOG_RETENTION_DAYS, STAGE_TAG
from testkit import items as table_of
from testkit.packaging import REPO, copy_project
from testkit.world import PUBLIC_URL

STAGE = "spring"
FUNCTIONS = {
    "api_handler": "APIHandler",
    "dispatch": "Dispatch",
    "dispatch_shard": "DispatchShard",
    "on_lead_change": "OnLeadChange",
    "on_ses_feedback": "OnSesFeedback",
    "admin_auth": "AdminAuth",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("stack")
    project, out, home = base / "project", base / "dist", base / "home"
    copy_project(project)  # .chalice/config.json included, requirements.txt empty
    # Another stage's campaign in the checkout: it must stay out of this stage's zip.
    other = (project / "campaigns" / "demo.yaml").read_text().replace("name: demo", "name: other", 1)
    (project / "campaigns" / "other.yaml").write_text(other)
    home.mkdir()
    config_before = (project / ".chalice" / "config.json").read_text()
    env = offline_environment(home, region=None)  # not even a region: packaging needs no AWS
    result = subprocess.run(
        [sys.executable, "-m", "infra.package", "--stage", STAGE, "--campaign", "demo", "--out", str(out)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"infra.package failed:\n{result.stdout}\n{result.stderr}"
    return {
        "stdout": result.stdout,
        "sam_path": out / "sam.json",
        "sam": json.loads((out / "sam.json").read_text()),
        "zip": out / "deployment.zip",
        "config_before": config_before,
        "config_after": (project / ".chalice" / "config.json").read_text(),
        "source": load_template(project / "infra" / "trellis.yaml"),
    }


@pytest.fixture(scope="module")
def resources(built: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = built["sam"]["Resources"]
    return found


def _props(resources: dict[str, Any], logical_id: str) -> dict[str, Any]:
    properties: dict[str, Any] = resources[logical_id]["Properties"]
    return properties


def test_one_template_holds_the_app_and_its_resources(built, resources):
    kinds = {logical_id: r["Type"] for logical_id, r in resources.items()}
    for logical_id in FUNCTIONS.values():
        assert kinds[logical_id] == "AWS::Serverless::Function", logical_id
    assert kinds["RestAPI"] == "AWS::Serverless::Api"
    expected = {
        "LeadsTable": "AWS::DynamoDB::Table",
        "AssetsBucket": "AWS::S3::Bucket",
        "SalesTopic": "AWS::SNS::Topic",
        "SesEventsTopic": "AWS::SNS::Topic",
        "ConfigurationSet": "AWS::SES::ConfigurationSet",
        "ConfigurationSetEvents": "AWS::SES::ConfigurationSetEventDestination",
        "DispatcherErrorsAlarm": "AWS::CloudWatch::Alarm",
    }
    assert {k: kinds.get(k) for k in expected} == expected
    # Whatever infra/trellis.yaml holds (read at package time) is in the template as it is.
    assert set(built["source"]["Resources"]) <= set(kinds)
    assert _props(resources, "LeadsTable")["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert built["sam"]["Parameters"]["Stage"]["Default"] == STAGE
    # The schedule.
    [schedule] = _props(resources, "Dispatch")["Events"].values()
    assert schedule == {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)"}}
    # What it printed: every resource, and the zip's size.
    for logical_id, kind in kinds.items():
        assert f"{logical_id} " in built["stdout"] and kind in built["stdout"]
    assert f"deployment.zip: {built['zip'].stat().st_size / 1024:.0f} KB" in built["stdout"]
    assert "cfn-lint clean" in built["stdout"]


def test_the_stream_trigger_reports_item_failures_bisects_and_gives_up_to_the_queue(resources):
    [event] = _props(resources, "OnLeadChange")["Events"].values()
    assert event["Type"] == "DynamoDB"
    properties = event["Properties"]
    assert properties["Stream"] == {"Fn::GetAtt": ["LeadsTable", "StreamArn"]}
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["BisectBatchOnFunctionError"] is True
    assert properties["MaximumRetryAttempts"] == after_deploy.MAX_RETRY_ATTEMPTS
    assert properties["MaximumRecordAgeInSeconds"] == after_deploy.MAX_RECORD_AGE_SECONDS
    assert properties["BatchSize"] == 100
    if "StreamFailuresQueue" in resources:
        assert properties["DestinationConfig"] == {
            "OnFailure": {"Destination": {"Fn::GetAtt": ["StreamFailuresQueue", "Arn"]}}
        }
    # The handler answers with batchItemFailures only where the mapping asks for them: here.
    variables = _props(resources, "OnLeadChange")["Environment"]["Variables"]
    assert variables[after_deploy.REPORT_FAILURES_VARIABLE] == "true"
    [subscription] = _props(resources, "OnSesFeedback")["Events"].values()
    assert subscription == {"Type": "SNS", "Properties": {"Topic": {"Ref": "SesEventsTopic"}}}


def test_every_function_points_at_this_stacks_resources(built, resources):
    outputs = built["source"]["Outputs"]
    for logical_id in FUNCTIONS.values():
        variables = _props(resources, logical_id)["Environment"]["Variables"]
        for variable, output in OUTPUT_VARIABLES.items():
            assert variables[variable] == outputs[output]["Value"], (logical_id, variable)
        assert variables["TRELLIS_TABLE"] == {"Ref": "LeadsTable"}
        assert variables["TRELLIS_STAGE"] == {"Ref": "Stage"}
        assert variables["TRELLIS_CAMPAIGN"] == "demo"
        for variable, name in secret_names("${Stage}").items():
            assert variables[variable] == {"Fn::Sub": name}
        condition, given, fallback = variables["TRELLIS_PUBLIC_URL"]["Fn::If"]
        assert (condition, given) == ("HasPublicUrl", {"Ref": "PublicUrl"})
        # The API's own functions cannot name the API (a circular reference); the others can.
        if logical_id in ("APIHandler", "AdminAuth"):
            assert fallback == {"Ref": "AWS::NoValue"}
        else:
            assert "${RestAPI}.execute-api" in fallback["Fn::Sub"]
    text = json.dumps(built["sam"])
    assert "not-set" not in text and "000000000000" not in text  # no placeholder ARN left


def test_per_function_memory_timeout_and_concurrency(resources):
    for name, logical_id in FUNCTIONS.items():
        properties = _props(resources, logical_id)
        wanted = LAMBDA_FUNCTIONS[name]
        assert properties["MemorySize"] == wanted["lambda_memory_size"], name
        assert properties["Timeout"] == wanted["lambda_timeout"], name
        assert properties.get("ReservedConcurrentExecutions") == wanted.get("reserved_concurrency"), name
    assert _props(resources, "APIHandler")["Timeout"] <= 29  # API Gateway's integration limit
    assert _props(resources, "Dispatch")["Timeout"] < 60  # one tick ends before the next
    assert _props(resources, "Dispatch")["ReservedConcurrentExecutions"] == 1


def test_each_function_has_its_own_role_with_its_own_policy_on_this_stacks_resources(resources):
    documents = {}
    for name, logical_id in FUNCTIONS.items():
        # Named as chalice deploy names it: its role's policy names its log group.
        assert _props(resources, logical_id)["FunctionName"] == {"Fn::Sub": f"trellis-${{Stage}}-{name}"}
        [role, attribute] = _props(resources, logical_id)["Role"]["Fn::GetAtt"]
        assert (resources[role]["Type"], attribute) == ("AWS::IAM::Role", "Arn")
        [policy] = _props(resources, role)["Policies"]
        documents[name] = policy["PolicyDocument"]
    roles = {_props(resources, logical_id)["Role"]["Fn::GetAtt"][0] for logical_id in FUNCTIONS.values()}
    assert len(roles) == len(FUNCTIONS)  # one role per function (autogen_policy: false)
    sids = {name: {s["Sid"]: s for s in document["Statement"]} for name, document in documents.items()}

    def sub(arn: str) -> dict[str, str]:
        return {"Fn::Sub": arn}

    parameter = "arn:aws:ssm:${AWS::Region}:${AWS::AccountId}:parameter/trellis/${Stage}/"
    # The authorizer reads the admin token and writes its own logs, nothing else.
    assert set(sids["admin_auth"]) == {"ReadSecrets", "DecryptSecrets", "OwnLogs"}
    assert sids["admin_auth"]["ReadSecrets"]["Resource"] == [sub(parameter + "admin-token")]
    condition = sids["admin_auth"]["DecryptSecrets"]["Condition"]["StringEquals"]["kms:ViaService"]
    assert condition == sub("ssm.${AWS::Region}.amazonaws.com")
    assert sids["admin_auth"]["OwnLogs"]["Resource"][0] == sub(
        "arn:aws:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/trellis-${Stage}-admin_auth"
    )
    table = sub("arn:aws:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${LeadsTable}")
    for name in ("api_handler", "dispatch", "on_lead_change", "on_ses_feedback"):
        assert sids[name]["LeadsTable"]["Resource"] == [table], name
    # Only the stream handler's role reads the stream (its mapping uses it) and sends to its failures queue.
    assert [name for name, s in sids.items() if "LeadsTableStream" in s] == ["on_lead_change"]
    assert sids["on_lead_change"]["LeadsTableStream"]["Resource"] == [sub("${LeadsTable.StreamArn}")]
    assert sorted(name for name, s in sids.items() if "NotifySales" in s) == [
        "dispatch",
        "dispatch_shard",
        "on_lead_change",
    ]
    assert sids["dispatch"]["NotifySales"]["Resource"] == [sub("${SalesTopic}")]
    assert sids["api_handler"]["ReadSecrets"]["Resource"] == [
        sub(parameter + "token-key"),
        sub(parameter + "admin-token"),
    ]
    for name, statements in sids.items():
        wildcards = [sid for sid, s in statements.items() if "*" in s["Resource"]]
        senders = ("dispatch", "dispatch_shard", "on_lead_change")
        assert wildcards == (["ReadSendRate"] if name in senders else []), name
    assert sids["dispatch"]["StartTickParts"]["Resource"] == [
        sub("arn:aws:lambda:${AWS::Region}:${AWS::AccountId}:function:trellis-${Stage}-dispatch_shard")
    ]


def test_alarms_watch_the_functions_of_this_stack(built, resources):
    watched = []
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        for dimension in resource["Properties"].get("Dimensions", []):
            if dimension["Name"] == "FunctionName":
                assert dimension["Value"] in [{"Ref": f} for f in FUNCTIONS.values()], logical_id
                watched.append(dimension["Value"]["Ref"])
    assert "Dispatch" in watched


def test_api_gateway_answers_missing_credentials_like_the_app_and_sends_binary_pixels(resources):
    body = _props(resources, "RestAPI")["DefinitionBody"]
    responses = body["x-amazon-apigateway-gateway-responses"]
    assert set(responses) == {"UNAUTHORIZED", "ACCESS_DENIED"}
    for response in responses.values():
        assert response["statusCode"] == "401"
        assert response["responseParameters"] == {"gatewayresponse.header.WWW-Authenticate": "'Bearer'"}
        assert json.loads(response["responseTemplates"]["application/json"]) == {"error": "unauthorized"}
    binary = body["x-amazon-apigateway-binary-media-types"]
    # */*: API Gateway matches only the first Accept type ("image/webp,*/*", "*/*" from mail clients).
    assert {"*/*", "image/gif", "image/*"} <= set(binary)


def test_cfn_lint_finds_nothing(built):
    assert cfn_lint(built["sam_path"]) == (0, "")


def test_the_zip_holds_the_app_with_its_own_bytecode_and_the_checkout_is_untouched(built):
    from infra.package import bytecode_problems

    with zipfile.ZipFile(built["zip"]) as zf:
        names = zf.namelist()
    assert "app.py" in names and "chalicelib/config.py" in names
    # This stage's campaign file alone, and its compiled form (the checkout copy holds other.yaml too).
    assert sorted(n for n in names if n.startswith("campaigns/")) == [
        "campaigns/demo.compiled.json",
        "campaigns/demo.yaml",
    ]
    # Bytecode only for chalicelib, each module's compiled from the very source beside it in the zip
    # (none carried over from the checkout): what Lambda's read-only /var/task cannot write itself.
    with zipfile.ZipFile(built["zip"]) as zf:
        assert bytecode_problems(zf) == []
    assert importlib.util.cache_from_source("chalicelib/config.py") in names
    # The project's own .chalice/config.json is not where the package-only stage goes.
    assert built["config_after"] == built["config_before"]
    assert STAGE not in json.loads(built["config_after"])["stages"]


def test_bytecode_from_anything_but_the_zipped_source_is_refused(tmp_path):
    from infra.package import bytecode_problems

    source = tmp_path / "chalicelib" / "rules.py"
    source.parent.mkdir()
    source.write_text("LIMIT = 1\n")
    py_compile.compile(str(source), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    pyc = Path(importlib.util.cache_from_source(str(source)))
    stale = pyc.read_bytes()
    zipped = importlib.util.cache_from_source("chalicelib/rules.py")

    def zip_of(files: dict[str, bytes]) -> zipfile.ZipFile:
        path = tmp_path / f"{len(list(tmp_path.glob('*.zip')))}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return zipfile.ZipFile(path)

    assert bytecode_problems(zip_of({"chalicelib/rules.py": b"LIMIT = 1\n", zipped: stale})) == []
    edited = bytecode_problems(zip_of({"chalicelib/rules.py": b"LIMIT = 2\n", zipped: stale}))
    missing = bytecode_problems(zip_of({"chalicelib/rules.py": b"LIMIT = 1\n"}))
    stray = bytecode_problems(zip_of({"chalicelib/rules.py": b"LIMIT = 1\n", zipped: stale, "app.pyc": stale}))
    assert [p.split(": ")[1] for p in (*edited, *missing, *stray)] == [
        "not the unchecked-hash bytecode of chalicelib/rules.py",
        "no bytecode",
        "not chalicelib's",
    ]


def test_make_package_without_a_stage_says_so():
    env = {k: v for k, v in os.environ.items() if k not in ("STAGE", "MAKEFLAGS", "MFLAGS")}
    # -o: never (re)build the virtualenv stamp from here, whatever its age.
    result = subprocess.run(
        ["make", "-s", "-C", str(REPO), "-o", ".venv/.installed", "package"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "set STAGE=" in result.stderr


# -- what the deployed API's binary media types change for the app ----------------------------------


def _gateway_call(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> dict[str, Any]:
    """A request as API Gateway hands it to Lambda once */* is a binary media type: every body
    base64-encoded, ``isBase64Encoded`` true. (chalice local and chalice.test.Client encode only
    an exact binary Content-Type, so they never send a form or JSON body this way.)"""
    from chalice.local import LambdaContext, LambdaEventConverter, RouteMatcher

    from app import app

    event = LambdaEventConverter(RouteMatcher(list(app.routes))).create_lambda_event(method, path, headers, body)
    if body:
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode("ascii"), True
    response: dict[str, Any] = app(event, LambdaContext("trellis-spring-APIHandler", 512))
    return response


def _decoded(response: dict[str, Any]) -> bytes:
    if response.get("isBase64Encoded"):
        return base64.b64decode(response["body"])
    return str(response["body"]).encode()


def test_base64_encoded_bodies_and_any_accept_work_as_deployed(client, rt, clock, table_items):
    form = {"email": "ann@example.com", "first_name": "Ann", "consent": "true"}
    posted = _gateway_call(
        "POST",
        "/forms/newsletter",
        {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html,*/*;q=0.8"},
        urlencode(form).encode(),
    )
    assert posted["statusCode"] == 303, posted
    joined = _gateway_call(
        "POST",
        "/forms/ebook",
        {"Content-Type": "application/json", "Accept": "*/*"},
        json.dumps(
            {"email": "bo@example.com", "first_name": "Bo", "consent": True, "rendered_at": "1577836800000"}
        ).encode(),
    )
    assert joined["statusCode"] == 200, joined
    assert not joined.get("isBase64Encoded")  # text stays text: API Gateway passes it as is
    token = json.loads(joined["body"])["lead_token"]
    event = _gateway_call(
        "POST",
        "/events",
        {"Content-Type": "application/json"},
        json.dumps({"token": token, "type": "page_view"}).encode(),
    )
    assert event["statusCode"] == 202, event
    assert {i["type"] for i in table_of.events(table_items())} >= {"form_submitted", "page_view"}

    lead_id = lead_id_for("ann@example.com")
    pixel = rt.links.open_pixel(lead_id, "welcome.welcome", clock.now())
    path = urlsplit(pixel).path.removeprefix(urlsplit(PUBLIC_URL).path)
    for accept in ("image/webp,*/*", "*/*", "image/*", "image/gif"):
        opened = _gateway_call("GET", path, {"Accept": accept})
        assert opened["statusCode"] in (200, 404), (accept, opened)
        assert opened["isBase64Encoded"] is True, accept  # decoded to bytes by API Gateway (*/* listed)
        assert opened["headers"]["Content-Type"] == "image/gif"
        if opened["statusCode"] == 200:
            assert _decoded(opened).startswith(b"GIF89a")


# -- the Stage parameter, tags, logs, runtime ------------------------------------------------------


def test_every_stage_dependent_name_derives_from_the_stage_parameter(built, resources):
    template = json.loads(json.dumps(built["sam"]))
    assert template["Parameters"]["Stage"].pop("Default") == STAGE
    # The packaged stage's name is nowhere else: overriding Stage moves every name and ARN with it.
    assert STAGE not in json.dumps(template)
    alarms = {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert alarms["BounceRateAlarm"]["AlarmName"] == {"Fn::Sub": "trellis-${Stage}-bounce-rate"}
    [bounces, *_] = alarms["BounceRateAlarm"]["Metrics"]
    assert bounces["MetricStat"]["Metric"]["Dimensions"] == [{"Name": "Stage", "Value": {"Ref": "Stage"}}]
    # The campaign's file is in the zip: that one value only.
    assert built["sam"]["Parameters"]["Campaign"]["AllowedValues"] == ["demo"]


def test_every_taggable_resource_carries_the_stage_and_campaign_tags(resources):
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    stage, campaign = {"Ref": "Stage"}, {"Ref": "Campaign"}
    checked = []
    for logical_id, resource in resources.items():
        kind, tags = resource["Type"], resource["Properties"].get("Tags")
        if kind in ("AWS::Serverless::Function", "AWS::Serverless::Api"):
            assert {k: tags[k] for k in (STAGE_TAG, CAMPAIGN_TAG)} == {STAGE_TAG: stage, CAMPAIGN_TAG: campaign}
            assert resource["Properties"]["PropagateTags"] is True, logical_id  # to SAM's rule, mapping, stage
            if kind == "AWS::Serverless::Function":
                assert (
                    tags["aws-chalice"]["Fn::Sub"].startswith("version=")
                    and ":stage=${Stage}:" in tags["aws-chalice"]["Fn::Sub"]
                )
        elif "Tags" in PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", kind).schema["properties"]:
            pairs = {t["Key"]: t["Value"] for t in tags or []}
            assert pairs[STAGE_TAG] == stage, logical_id
            assert pairs[CAMPAIGN_TAG] in (campaign, {"Fn::If": ["HasCampaign", campaign, stage]}), logical_id
        else:
            continue
        checked.append(kind)
    assert {"AWS::IAM::Role", "AWS::Logs::LogGroup", "AWS::DynamoDB::Table", "AWS::Serverless::Api"} <= set(checked)


def test_each_function_has_a_log_group_with_the_stages_retention(built, resources):
    parameter = built["sam"]["Parameters"]["LogRetentionDays"]
    assert parameter["Default"] == LOG_RETENTION_DAYS == 30
    groups = {k: r for k, r in resources.items() if r["Type"] == "AWS::Logs::LogGroup"}
    assert sorted(groups) == sorted(f"{logical_id}LogGroup" for logical_id in FUNCTIONS.values())
    for logical_id in FUNCTIONS.values():
        group = groups[f"{logical_id}LogGroup"]
        function_name = _props(resources, logical_id)["FunctionName"]["Fn::Sub"]
        assert group["Properties"]["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/{function_name}"}
        # Created before the function: no run of it can make Lambda's own (never-expiring) group first.
        assert resources[logical_id]["DependsOn"] == [f"{logical_id}LogGroup"]
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert group["DeletionPolicy"] == "Delete"


def test_the_runtime_is_the_projects(resources):
    assert {_props(resources, logical_id)["Runtime"] for logical_id in FUNCTIONS.values()} == {LAMBDA_RUNTIME}


def test_another_python_is_refused_before_anything_is_built(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(settings.sys, "version_info", (3, 12, 1, "final", 0))
    assert package_main(["--stage", STAGE, "--campaign", "demo", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Python 3.12.1" in err and "python3.12" in err and f"runtime is {LAMBDA_RUNTIME}" in err
    assert not (tmp_path / "out").exists()


def test_the_readme_deploys_the_template_through_s3():
    """The template is over `aws cloudformation deploy`'s 51,200-byte inline limit: every deploy
    command of the manual's single-stack path names a bucket (or lets SAM make one)."""
    readme = (REPO / "docs" / "deploy.md").read_text()
    section = readme.split("### The single-stack path", 1)[1].split("\n### ", 1)[0]
    # Code-block commands (continuation lines joined) and inline ones (`sam deploy ...`, wrapped).
    commands = " ".join(section.split("\\\n")).splitlines() + " ".join(section.split("\n")).split("`")
    deploys = [c for c in commands if ("cloudformation deploy" in c or "sam deploy" in c) and "--template-file" in c]
    assert len(deploys) >= 3  # the two CloudFormation deploys and SAM's
    for command in deploys:
        assert "--s3-bucket" in command or "--resolve-s3" in command, command
