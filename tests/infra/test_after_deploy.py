"""`python -m infra.after_deploy --stage S` on moto: the stream mapping's retry and failure settings,
the handler's flag, and the API's 401 gateway responses, after a deploy made as chalice makes one."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.config import Settings
from infra import after_deploy as after_deploying
from infra.after_deploy import (
    MAX_RECORD_AGE_SECONDS,
    MAX_RETRY_ATTEMPTS,
    REPORT_FAILURES_VARIABLE,
    AfterDeployError,
    after_deploy,
)
from infra.settings import CAMPAIGN_TAG, LOG_RETENTION_DAYS, STAGE_TAG
from testkit.world import made_up_environment
from twin import stack

# moto's CloudFormation warns of each resource type it skips (the SES ones, the alarms, ...).
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse")

STAGE = "spring"
REGION = "eu-west-1"


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return {}\n")
    return buffer.getvalue()


def _function(session, name: str, role: str) -> str:
    return session.client("lambda").create_function(
        FunctionName=f"trellis-{STAGE}-{name}",
        Runtime="python3.11",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": _zip()},
        Environment={"Variables": {"TRELLIS_CAMPAIGN": "demo"}},
    )["FunctionArn"]


def _rest_api(apigateway, api_arn: str) -> str:
    """A REST API as chalice deploy leaves one: a route behind the custom authorizer, a Lambda proxy
    integration, deployed to the stage ``api``. (Chalice imports a Swagger 2.0 document; moto's
    import_rest_api reads OpenAPI 3 only, so the same API is built call by call.)"""
    invocations = f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{api_arn}/invocations"
    rest_api_id = apigateway.create_rest_api(name="trellis")["id"]
    root = apigateway.get_resources(restApiId=rest_api_id)["items"][0]["id"]
    admin = apigateway.create_resource(restApiId=rest_api_id, parentId=root, pathPart="admin")["id"]
    leads = apigateway.create_resource(restApiId=rest_api_id, parentId=admin, pathPart="leads")["id"]
    authorizer = apigateway.create_authorizer(
        restApiId=rest_api_id,
        name="admin_auth",
        type="TOKEN",
        authorizerUri=invocations,
        identitySource="method.request.header.Authorization",
        authorizerResultTtlInSeconds=60,
    )["id"]
    apigateway.put_method(
        restApiId=rest_api_id, resourceId=leads, httpMethod="GET", authorizationType="CUSTOM", authorizerId=authorizer
    )
    apigateway.put_integration(
        restApiId=rest_api_id,
        resourceId=leads,
        httpMethod="GET",
        type="AWS_PROXY",
        integrationHttpMethod="POST",
        uri=invocations,
    )
    apigateway.create_deployment(restApiId=rest_api_id, stageName="api")
    return rest_api_id


@pytest.fixture
def aws():
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


@pytest.fixture
def deployed(aws, tmp_path: Path):
    """The stage's stack, and what chalice deploy --stage spring makes and records."""
    outputs = stack.deploy(STAGE, aws)
    role = aws.client("iam").create_role(
        RoleName=f"trellis-{STAGE}", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
    )["Role"]["Arn"]
    api_arn, handler_arn = _function(aws, "api_handler", role), _function(aws, "on_lead_change", role)
    uuid = aws.client("lambda").create_event_source_mapping(  # as chalice's create_lambda_event_source
        EventSourceArn=outputs["LeadsTableStreamArn"],
        FunctionName=handler_arn,
        BatchSize=100,
        MaximumBatchingWindowInSeconds=0,
        StartingPosition="LATEST",
    )["UUID"]
    rest_api_id = _rest_api(aws.client("apigateway"), api_arn)
    rule_arn = aws.client("events").put_rule(
        Name=f"trellis-{STAGE}-dispatch-event", ScheduleExpression="rate(1 minute)"
    )
    # The stream handler ran once already: Lambda made its log group itself, kept forever, untagged.
    aws.client("logs").create_log_group(logGroupName=f"/aws/lambda/trellis-{STAGE}-on_lead_change")
    (tmp_path / "config.json").write_text(
        json.dumps({"version": "2.0", "app_name": "trellis", "stages": {STAGE: {"api_gateway_stage": "api"}}})
    )
    url = f"https://{rest_api_id}.execute-api.{REGION}.amazonaws.com/api/"
    record = {
        "resources": [
            {"name": "api_handler", "resource_type": "lambda_function", "lambda_arn": api_arn},
            {"name": "on_lead_change", "resource_type": "lambda_function", "lambda_arn": handler_arn},
            {
                "name": "on_lead_change-dynamodb-event-source",
                "resource_type": "dynamodb_event",
                "stream_arn": outputs["LeadsTableStreamArn"],
                "event_uuid": uuid,
                "lambda_arn": handler_arn,
            },
            {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": rest_api_id, "rest_api_url": url},
            {"name": "default-role", "resource_type": "iam_role", "role_name": f"trellis-{STAGE}", "role_arn": role},
            {
                "name": "dispatch-event",
                "resource_type": "cloudwatch_event",
                "rule_name": f"trellis-{STAGE}-dispatch-event",
            },
        ],
        "schema_version": "2.0",
        "backend": "api",
    }
    (tmp_path / "deployed").mkdir()
    (tmp_path / "deployed" / f"{STAGE}.json").write_text(json.dumps(record))
    return {
        "dir": tmp_path,
        "outputs": outputs,
        "uuid": uuid,
        "handler": handler_arn,
        "rest_api_id": rest_api_id,
        "role": role,
        "rule": rule_arn["RuleArn"],
    }


def _run(aws, deployed):
    return after_deploy(STAGE, aws, chalice_dir=deployed["dir"], sleep=lambda seconds: None)


def test_after_deploy_sets_the_stream_mapping_the_handler_flag_and_the_401s(aws, deployed):
    result = _run(aws, deployed)

    mapping = aws.client("lambda").get_event_source_mapping(UUID=deployed["uuid"])
    assert (result.mapping_uuid, result.mapping_changed) == (deployed["uuid"], True)
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["MaximumRetryAttempts"] == MAX_RETRY_ATTEMPTS == 5
    assert mapping["MaximumRecordAgeInSeconds"] == MAX_RECORD_AGE_SECONDS == 6 * 3600
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == deployed["outputs"]["StreamFailuresQueueArn"]
    assert mapping["BatchSize"] == 100  # chalice's own settings untouched

    variables = aws.client("lambda").get_function_configuration(FunctionName=deployed["handler"])["Environment"]
    assert variables["Variables"] == {"TRELLIS_CAMPAIGN": "demo", REPORT_FAILURES_VARIABLE: "true"}

    apigateway = aws.client("apigateway")
    for response_type in ("UNAUTHORIZED", "ACCESS_DENIED"):
        response = apigateway.get_gateway_response(restApiId=deployed["rest_api_id"], responseType=response_type)
        assert response["statusCode"] == "401"
        assert response["responseParameters"] == {"gatewayresponse.header.WWW-Authenticate": "'Bearer'"}
        assert json.loads(response["responseTemplates"]["application/json"]) == {"error": "unauthorized"}
    # ...and live: the API's stage now serves the deployment made after them.
    assert apigateway.get_stage(restApiId=deployed["rest_api_id"], stageName="api")["deploymentId"] == (
        result.deployment_id
    )


def test_the_deployed_api_treats_every_accept_type_as_binary(aws, deployed):
    apigateway = aws.client("apigateway")
    patches: list[dict[str, Any]] = []
    aws.events.register("before-parameter-build.api-gateway.UpdateRestApi", lambda params, **_: patches.append(params))

    result = _run(aws, deployed)

    assert result.binary_types_added == ["*/*"]
    # moto stores the patched value as "" (it ignores the path's value): the request is what counts.
    assert patches == [
        {"restApiId": deployed["rest_api_id"], "patchOperations": [{"op": "add", "path": "/binaryMediaTypes/*~1*"}]}
    ]
    assert apigateway.get_stage(restApiId=deployed["rest_api_id"], stageName="api")["deploymentId"] == (
        result.deployment_id
    )


def test_binary_types_already_there_are_not_added_again():
    from infra.after_deploy import configure_binary_types

    class KnowsStar:
        def get_rest_api(self, restApiId: str) -> dict[str, Any]:
            return {"binaryMediaTypes": ["image/gif", "*/*"]}

        def update_rest_api(self, **_: Any) -> None:
            raise AssertionError("nothing to add")

    assert configure_binary_types(KnowsStar(), "api-id") == []


def test_running_it_again_changes_nothing(aws, deployed):
    _run(aws, deployed)
    lambda_client = aws.client("lambda")
    before = lambda_client.get_event_source_mapping(UUID=deployed["uuid"])
    updates: list[str] = []
    # Clients made from the session from now on (the run's) carry the hook.
    aws.events.register("before-call.*", lambda model, **_: updates.append(model.name))
    again = _run(aws, deployed)

    assert (again.mapping_changed, again.failure_reports_enabled, again.gateway_responses_changed) == (False, False, [])
    assert {"GetEventSourceMapping", "GetGatewayResponse", "CreateDeployment"} <= set(updates)  # the hook sees the run
    assert not {"UpdateEventSourceMapping", "UpdateFunctionConfiguration", "PutGatewayResponse"} & set(updates)
    after = lambda_client.get_event_source_mapping(UUID=deployed["uuid"])
    assert {k: v for k, v in after.items() if k != "ResponseMetadata"} == {
        k: v for k, v in before.items() if k != "ResponseMetadata"
    }


def test_a_busy_mapping_is_waited_for_before_and_after_the_update():
    states = iter(["Creating", "Enabled", "Updating", "Enabled"])
    calls: list[str] = []

    class Lambda:
        def get_paginator(self, name):
            return type("P", (), {"paginate": lambda self, **kw: [{"EventSourceMappings": [{"UUID": "u1"}]}]})()

        def get_event_source_mapping(self, UUID):
            calls.append("get")
            return {"UUID": UUID, "State": next(states)}

        def update_event_source_mapping(self, **kwargs):
            calls.append("update")

    sleeps: list[float] = []
    uuid, changed = after_deploying.configure_stream_mapping(Lambda(), "fn", "stream", "queue", sleeps.append)
    assert (uuid, changed) == ("u1", True)
    assert calls == ["get", "get", "update", "get", "get"]
    assert len(sleeps) == 2


def test_a_stage_never_deployed_is_named(capsys):
    assert after_deploying.main(["--stage", "neverdeployed"]) == 1
    err = capsys.readouterr().err
    assert "stage neverdeployed was never deployed" in err
    assert "chalice deploy --stage neverdeployed" in err


def test_a_stage_without_its_stack_is_named(aws, deployed):
    aws.client("cloudformation").delete_stack(StackName=f"trellis-{STAGE}")
    with pytest.raises(AfterDeployError, match=f"no stack trellis-{STAGE}.*make bootstrap STAGE={STAGE}"):
        _run(aws, deployed)


def test_a_deployment_without_the_stream_handler_is_named(aws, deployed):
    path = deployed["dir"] / "deployed" / f"{STAGE}.json"
    record = json.loads(path.read_text())
    record["resources"] = [r for r in record["resources"] if r["name"] != "on_lead_change"]
    path.write_text(json.dumps(record))
    with pytest.raises(AfterDeployError, match="has no on_lead_change lambda_arn"):
        _run(aws, deployed)


def test_the_flag_it_sets_is_the_one_the_app_reads():
    env = made_up_environment(STAGE, TRELLIS_TOKEN_KEY_PARAMETER="/p/k", TRELLIS_ADMIN_TOKEN_PARAMETER="/p/a")
    assert Settings.from_env(env).stream_report_failures is False
    assert Settings.from_env({**env, REPORT_FAILURES_VARIABLE: "true"}).stream_report_failures is True


def test_function_log_groups_get_the_stages_retention_and_tags_as_do_the_api_stage_roles_and_rule(
    aws, deployed, monkeypatch
):
    logs = aws.client("logs")
    tags = {STAGE_TAG: STAGE, CAMPAIGN_TAG: STAGE}  # the twin's stack names no campaign: the stage's
    result = _run(aws, deployed)

    names = [f"/aws/lambda/trellis-{STAGE}-api_handler", f"/aws/lambda/trellis-{STAGE}-on_lead_change"]
    assert sorted(result.log_groups_changed) == names  # one created, one Lambda had made
    groups = {g["logGroupName"]: g for g in logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]}
    assert sorted(groups) == names
    for name in names:
        assert groups[name]["retentionInDays"] == LOG_RETENTION_DAYS == result.log_retention_days
        assert logs.list_tags_log_group(logGroupName=name)["tags"] == tags
    rest_api = f"arn:aws:apigateway:{REGION}::/restapis/{deployed['rest_api_id']}/stages/api"
    assert aws.client("apigateway").get_stage(restApiId=deployed["rest_api_id"], stageName="api")["tags"] == tags
    role_tags = aws.client("iam").list_role_tags(RoleName=f"trellis-{STAGE}")["Tags"]
    assert {t["Key"]: t["Value"] for t in role_tags} == tags
    rule_tags = aws.client("events").list_tags_for_resource(ResourceARN=deployed["rule"])["Tags"]
    assert {t["Key"]: t["Value"] for t in rule_tags} == tags
    assert sorted(result.tagged) == sorted([rest_api, deployed["role"], deployed["rule"]])

    # Again: nothing to change; a stage's own retention (the stack's LogRetentionDays) is applied.
    assert _run(aws, deployed).log_groups_changed == []
    outputs = {**deployed["outputs"], "LogRetentionDays": "90"}
    monkeypatch.setattr(after_deploying, "stack_outputs", lambda cloudformation, stage: outputs)
    assert sorted(_run(aws, deployed).log_groups_changed) == names
    assert {g["retentionInDays"] for g in logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]} == {
        90
    }


def test_the_tags_name_the_stacks_campaign():
    class Stack:
        def describe_stacks(self, StackName: str) -> dict[str, Any]:
            parameters = [
                {"ParameterKey": "Stage", "ParameterValue": STAGE},
                {"ParameterKey": "Campaign", "ParameterValue": "demo"},
            ]
            return {"Stacks": [{"StackName": StackName, "Parameters": parameters}]}

    assert after_deploying.stack_tags(Stack(), STAGE) == {STAGE_TAG: STAGE, CAMPAIGN_TAG: "demo"}
