"""What ``chalice deploy`` cannot set, set right after it: ``make deploy STAGE=spring`` runs both.

    python -m infra.after_deploy --stage spring

1. The stream handler's event source mapping (``on_lead_change`` on the stage's table stream):
   partial batch responses (``ReportBatchItemFailures``), a failing batch bisected, at most
   ``MAX_RETRY_ATTEMPTS`` retries, records older than ``MAX_RECORD_AGE_SECONDS`` not retried, and
   the stack's ``StreamFailuresQueueArn`` as the on-failure destination: a batch that fails every
   retry is described on that queue (and alarms), never dropped silently. Only once the mapping
   honours partial responses is the function told to send them (``TRELLIS_STREAM_REPORT_FAILURES``).
2. API Gateway's own answers to a missing or refused bearer token (``UNAUTHORIZED``,
   ``ACCESS_DENIED``): the app's 401 ``{"error": "unauthorized"}`` with ``WWW-Authenticate:
   Bearer`` instead of ``{"message": "Unauthorized"}``, and ``*/*`` among the binary media types
   (API Gateway reads only the first Accept type: the open pixel must be bytes for ``*/*``
   too; infra/settings.py says why not in app.py); then a deployment of the API's stage.
3. Logs and tags. Chalice creates no log groups (Lambda makes one on a function's first run, kept
   forever): each function's ``/aws/lambda/<function name>`` is created, or found, with the stack's
   ``LogRetentionDays`` and the stage's ``trellis:stage`` / ``trellis:campaign`` tags
   (infra/settings.py). Chalice tags only its functions (the stage's ``tags`` key, written by
   infra/bootstrap.py): the API's stage, the functions' roles and the schedule's rule get the tags here.

Idempotent. Run it after every ``chalice deploy``: a deploy re-imports the API in overwrite mode
(which drops gateway responses) and rewrites the function's environment from .chalice/config.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import boto3
from botocore.exceptions import ClientError

from infra.bootstrap import CHALICE_DIR, stack_name
from infra.settings import DEPLOYED_EXTRA_BINARY_TYPES, resource_tags

STREAM_HANDLER = "on_lead_change"  # app.py's function (Chalice names it trellis-<stage>-on_lead_change)
# Every action of the handler is idempotent, so retrying is safe, and a transient error (throttling,
# a moment of SES or DynamoDB trouble) passes within a few backed-off retries while bisection narrows
# a failing batch down to the record that fails. Lambda's default (-1) retries until the record
# expires from the stream (24 h), holding up scoring, handoffs and first sends of every other lead
# in the shard all that time; 5 retries, then the record is described on the failures queue.
MAX_RETRY_ATTEMPTS = 5
# A record this old is given up on (described on the failures queue) even with retries left: it
# leaves 18 of the stream's 24 hours to replay it from the stream after fixing the cause.
MAX_RECORD_AGE_SECONDS = 6 * 3600
PARTIAL_BATCH_RESPONSES = ["ReportBatchItemFailures"]
# chalicelib.config.Settings.stream_report_failures: the handler answers failed records with
# batchItemFailures only when this is "true" (set here, never in .chalice/config.json: a fresh
# mapping from chalice deploy would ignore them, and a batch it ignores counts as a success).
REPORT_FAILURES_VARIABLE = "TRELLIS_STREAM_REPORT_FAILURES"

UNAUTHORIZED_BODY = json.dumps({"error": "unauthorized"})
GATEWAY_RESPONSES = ("UNAUTHORIZED", "ACCESS_DENIED")  # no or refused credentials: both the app's 401
GATEWAY_RESPONSE = {
    "statusCode": "401",
    "responseParameters": {"gatewayresponse.header.WWW-Authenticate": "'Bearer'"},
    "responseTemplates": {"application/json": UNAUTHORIZED_BODY},
}

_BUSY_STATES = {"Creating", "Enabling", "Disabling", "Updating"}  # an update must wait for these
WAIT_SECONDS = 300


class AfterDeployError(Exception):
    """Something a person must fix; the message says what."""


@dataclass
class AfterDeployed:
    stage: str
    mapping_uuid: str
    mapping_changed: bool
    failure_reports_enabled: bool  # the function's flag was set by this run
    rest_api_id: str
    api_stage: str
    gateway_responses_changed: list[str] = field(default_factory=list)
    deployment_id: str = ""
    binary_types_added: list[str] = field(default_factory=list)
    log_groups_changed: list[str] = field(default_factory=list)  # created, or retention or tags set
    log_retention_days: int = 0
    tagged: list[str] = field(default_factory=list)  # the other resources tagged (their ARNs)


def deployed_resources(stage: str, chalice_dir: Path = CHALICE_DIR) -> dict[str, dict[str, Any]]:
    """The resources ``chalice deploy --stage <stage>`` recorded in .chalice/deployed/<stage>.json, by name."""
    path = chalice_dir / "deployed" / f"{stage}.json"
    if not path.exists():
        raise AfterDeployError(
            f"stage {stage} was never deployed (no .chalice/deployed/{stage}.json): "
            f"run chalice deploy --stage {stage} first, or make deploy STAGE={stage}"
        )
    try:
        resources = json.loads(path.read_text())["resources"]
        return {resource["name"]: resource for resource in resources}
    except (ValueError, KeyError, TypeError) as e:
        raise AfterDeployError(f"{path} is not a Chalice deployment record: {e}") from e


def _resource(resources: dict[str, dict[str, Any]], name: str, key: str, stage: str) -> str:
    value = resources.get(name, {}).get(key)
    if not value:
        raise AfterDeployError(
            f"the deployment of stage {stage} has no {name} {key}: run chalice deploy --stage {stage} again"
        )
    return str(value)


def _stack(cloudformation: Any, stage: str) -> dict[str, Any]:
    name = stack_name(stage)
    try:
        stack: dict[str, Any] = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError as e:
        raise AfterDeployError(f"no stack {name} ({e}): run make bootstrap STAGE={stage} first") from e
    return stack


def stack_tags(cloudformation: Any, stage: str) -> dict[str, str]:
    """The stage's tags, its campaign read from the stack's ``Campaign`` parameter (empty: the stage's name)."""
    parameters = {
        p["ParameterKey"]: p.get("ParameterValue", "") for p in _stack(cloudformation, stage).get("Parameters", [])
    }
    return resource_tags(stage, parameters.get("Campaign") or stage)


def stack_outputs(cloudformation: Any, stage: str) -> dict[str, str]:
    name = stack_name(stage)
    stack = _stack(cloudformation, stage)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    for key in ("LeadsTableStreamArn", "StreamFailuresQueueArn", "LogRetentionDays"):
        if key not in outputs:
            raise AfterDeployError(
                f"stack {name} has no output {key}, it predates infra/trellis.yaml: run make bootstrap STAGE={stage}"
            )
    return outputs


def api_gateway_stage(stage: str, chalice_dir: Path = CHALICE_DIR) -> str:
    """The API's stage name, as .chalice/config.json gives it to chalice deploy (Chalice's default: api)."""
    config_path = chalice_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    stage_config = config.get("stages", {}).get(stage, {})
    return str(stage_config.get("api_gateway_stage") or config.get("api_gateway_stage") or "api")


def _wait(
    describe: Callable[[], dict[str, Any]], ready: Callable[[dict[str, Any]], bool], what: str, sleep: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        current = describe()
        if ready(current):
            return current
        if time.monotonic() > deadline:
            raise AfterDeployError(f"gave up waiting for {what} after {WAIT_SECONDS} s")
        sleep(2)


def _desired_mapping(queue_arn: str) -> dict[str, Any]:
    return {
        "FunctionResponseTypes": PARTIAL_BATCH_RESPONSES,
        "BisectBatchOnFunctionError": True,
        "MaximumRetryAttempts": MAX_RETRY_ATTEMPTS,
        "MaximumRecordAgeInSeconds": MAX_RECORD_AGE_SECONDS,
        "DestinationConfig": {"OnFailure": {"Destination": queue_arn}},
    }


def _mapping_differs(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    for key, value in desired.items():
        if key == "DestinationConfig":
            destination = current.get(key, {}).get("OnFailure", {}).get("Destination")
            if destination != value["OnFailure"]["Destination"]:
                return True
        elif current.get(key) != value:
            return True
    return False


def configure_stream_mapping(
    lambda_client: Any, function_arn: str, stream_arn: str, queue_arn: str, sleep: Any = time.sleep
) -> tuple[str, bool]:
    """Apply the retry and failure settings to the handler's mapping on the stream: (its UUID, changed)."""
    mappings: list[dict[str, Any]] = []
    for page in lambda_client.get_paginator("list_event_source_mappings").paginate(
        EventSourceArn=stream_arn, FunctionName=function_arn
    ):
        mappings.extend(page["EventSourceMappings"])
    if not mappings:
        raise AfterDeployError(
            f"no event source mapping of {function_arn} on {stream_arn}: chalice deploy subscribes the "
            "function to TRELLIS_STREAM_ARN of .chalice/config.json; run make bootstrap, then make deploy"
        )
    if len(mappings) > 1:
        uuids = ", ".join(m["UUID"] for m in mappings)
        raise AfterDeployError(
            f"{len(mappings)} mappings of {function_arn} on {stream_arn} ({uuids}): delete the extra"
        )
    uuid = mappings[0]["UUID"]
    desired = _desired_mapping(queue_arn)

    def describe() -> dict[str, Any]:
        return dict(lambda_client.get_event_source_mapping(UUID=uuid))

    def settled(mapping: dict[str, Any]) -> bool:
        return mapping.get("State") not in _BUSY_STATES

    current = _wait(describe, settled, f"event source mapping {uuid}", sleep)  # a fresh one is "Creating"
    if not _mapping_differs(current, desired):
        return uuid, False
    lambda_client.update_event_source_mapping(UUID=uuid, **desired)
    _wait(describe, settled, f"the update of event source mapping {uuid}", sleep)
    return uuid, True


def enable_failure_reports(lambda_client: Any, function_arn: str, sleep: Any = time.sleep) -> bool:
    """Set the handler's flag (its other variables kept). True when this changed it."""
    configuration = lambda_client.get_function_configuration(FunctionName=function_arn)
    variables = dict(configuration.get("Environment", {}).get("Variables", {}))
    if variables.get(REPORT_FAILURES_VARIABLE) == "true":
        return False

    def describe() -> dict[str, Any]:
        return dict(lambda_client.get_function_configuration(FunctionName=function_arn))

    def updated(config: dict[str, Any]) -> bool:
        return bool(config.get("LastUpdateStatus", "Successful") != "InProgress")

    _wait(describe, updated, f"the last update of {function_arn}", sleep)
    variables[REPORT_FAILURES_VARIABLE] = "true"
    lambda_client.update_function_configuration(FunctionName=function_arn, Environment={"Variables": variables})
    _wait(describe, updated, f"the environment update of {function_arn}", sleep)
    return True


def configure_binary_types(apigateway: Any, rest_api_id: str) -> list[str]:
    """Add ``DEPLOYED_EXTRA_BINARY_TYPES`` to the API's binary media types (deployed with the
    gateway responses): the types added. chalice deploy imports only the app's own list."""
    present = set(apigateway.get_rest_api(restApiId=rest_api_id).get("binaryMediaTypes", []))
    missing = [media_type for media_type in DEPLOYED_EXTRA_BINARY_TYPES if media_type not in present]
    if missing:
        # JSON Pointer escapes "/" in a path segment as "~1": "*/*" is /binaryMediaTypes/*~1*.
        operations = [{"op": "add", "path": "/binaryMediaTypes/" + t.replace("/", "~1")} for t in missing]
        apigateway.update_rest_api(restApiId=rest_api_id, patchOperations=operations)
    return missing


def configure_gateway_responses(apigateway: Any, rest_api_id: str, api_stage: str) -> tuple[list[str], str]:
    """Put the 401 gateway responses that differ, then deploy the API's stage: (changed types, deployment id).

    The stage is deployed on every run: a run that stopped between the two steps is finished by the next.
    """
    changed = []
    for response_type in GATEWAY_RESPONSES:
        try:
            current = apigateway.get_gateway_response(restApiId=rest_api_id, responseType=response_type)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "NotFoundException":
                raise
            current = {}
        if any(current.get(key) != value for key, value in GATEWAY_RESPONSE.items()):
            apigateway.put_gateway_response(restApiId=rest_api_id, responseType=response_type, **GATEWAY_RESPONSE)
            changed.append(response_type)
    try:
        tracing = bool(apigateway.get_stage(restApiId=rest_api_id, stageName=api_stage).get("tracingEnabled"))
    except ClientError as e:
        raise AfterDeployError(f"REST API {rest_api_id} has no stage {api_stage}: {e}") from e
    deployment = apigateway.create_deployment(
        restApiId=rest_api_id,
        stageName=api_stage,
        tracingEnabled=tracing,  # as chalice deploy left it
        description="infra.after_deploy: gateway responses",
    )
    return changed, str(deployment["id"])


def log_group_name(function_arn: str) -> str:
    """Where Lambda writes a function's logs: ``/aws/lambda/<function name>`` (the ARN's last part)."""
    return "/aws/lambda/" + function_arn.split(":")[6]


def configure_log_group(logs: Any, name: str, retention_days: int, tags: dict[str, str]) -> bool:
    """Create the log group with the retention and tags, or give an existing one them: True when changed.

    One Lambda made itself on a first run (before this step, or by an older deploy) is kept, its
    events with it.
    """
    try:
        logs.create_log_group(logGroupName=name, tags=tags)
        created = True
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
            raise
        created = False
    groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    group: dict[str, Any] = next((g for g in groups if g["logGroupName"] == name), {})
    changed = created
    if group.get("retentionInDays") != retention_days:
        logs.put_retention_policy(logGroupName=name, retentionInDays=retention_days)
        changed = True
    present = logs.list_tags_log_group(logGroupName=name).get("tags", {})
    if any(present.get(key) != value for key, value in tags.items()):
        logs.tag_log_group(logGroupName=name, tags=tags)
        changed = True
    return changed


def tag_chalice_resources(
    session: Any, resources: dict[str, dict[str, Any]], api_stage: str, tags: dict[str, str]
) -> list[str]:
    """Tag what chalice deploy creates but does not tag (its ``tags`` reach only the functions): the
    API's stage (where API Gateway's costs are allocated), the functions' roles and the schedule's
    rule. Their ARNs (tagging again changes nothing)."""
    tagged = []
    region = session.region_name
    for resource in resources.values():
        kind = resource.get("resource_type")
        if kind == "rest_api":
            arn = f"arn:aws:apigateway:{region}::/restapis/{resource['rest_api_id']}/stages/{api_stage}"
            session.client("apigateway").tag_resource(resourceArn=arn, tags=tags)
        elif kind == "iam_role":
            arn = resource["role_arn"]
            pairs = [{"Key": key, "Value": value} for key, value in tags.items()]
            session.client("iam").tag_role(RoleName=resource["role_name"], Tags=pairs)
        elif kind == "cloudwatch_event" and resource.get("rule_name"):
            events = session.client("events")
            arn = events.describe_rule(Name=resource["rule_name"])["Arn"]
            events.tag_resource(ResourceARN=arn, Tags=[{"Key": key, "Value": value} for key, value in tags.items()])
        else:
            continue
        tagged.append(arn)
    return tagged


def after_deploy(stage: str, session: Any, chalice_dir: Path = CHALICE_DIR, sleep: Any = time.sleep) -> AfterDeployed:
    resources = deployed_resources(stage, chalice_dir)
    function_arn = _resource(resources, STREAM_HANDLER, "lambda_arn", stage)
    rest_api_id = _resource(resources, "rest_api", "rest_api_id", stage)
    outputs = stack_outputs(session.client("cloudformation"), stage)
    lambda_client = session.client("lambda")
    uuid, mapping_changed = configure_stream_mapping(
        lambda_client, function_arn, outputs["LeadsTableStreamArn"], outputs["StreamFailuresQueueArn"], sleep
    )
    reports_enabled = enable_failure_reports(lambda_client, function_arn, sleep)
    api_stage = api_gateway_stage(stage, chalice_dir)
    apigateway = session.client("apigateway")
    binary_types = configure_binary_types(apigateway, rest_api_id)
    changed, deployment_id = configure_gateway_responses(apigateway, rest_api_id, api_stage)
    retention = int(outputs["LogRetentionDays"])
    tags = stack_tags(session.client("cloudformation"), stage)
    logs = session.client("logs")
    functions = [r["lambda_arn"] for r in resources.values() if r.get("resource_type") == "lambda_function"]
    log_groups = [name for name in map(log_group_name, functions) if configure_log_group(logs, name, retention, tags)]
    tagged = tag_chalice_resources(session, resources, api_stage, tags)
    return AfterDeployed(
        stage,
        uuid,
        mapping_changed,
        reports_enabled,
        rest_api_id,
        api_stage,
        changed,
        deployment_id,
        binary_types,
        log_groups,
        retention,
        tagged,
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.after_deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="the campaign stage just deployed with chalice deploy")
    args = parser.parse_args(argv)
    try:
        result = after_deploy(args.stage, boto3.session.Session())
    except (AfterDeployError, ClientError) as e:
        print(f"after_deploy failed: {e}", file=sys.stderr)
        return 1
    state = "updated" if result.mapping_changed else "already set"
    print(
        f"stage {result.stage}: stream mapping {result.mapping_uuid} {state} (retries {MAX_RETRY_ATTEMPTS}, "
        f"max record age {MAX_RECORD_AGE_SECONDS} s, bisect, partial batch responses, failures to the queue)"
    )
    if result.failure_reports_enabled:
        print(f"  set {REPORT_FAILURES_VARIABLE}=true on trellis-{result.stage}-{STREAM_HANDLER}")
    if result.binary_types_added:
        print(f"  binary media types added: {', '.join(result.binary_types_added)} (the open pixel's Accept)")
    groups = ", ".join(result.log_groups_changed) or "already set"
    print(f"  log groups ({result.log_retention_days} days, tagged): {groups}")
    if result.tagged:
        print(f"  tagged the API's stage, the roles and the schedule ({len(result.tagged)} resources)")
    responses = ", ".join(result.gateway_responses_changed) or "already set"
    print(
        f"  gateway responses {responses}; API {result.rest_api_id} stage {result.api_stage} "
        f"deployed ({result.deployment_id})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
