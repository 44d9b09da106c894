"""Tear a campaign stage down: what ``make bootstrap`` and ``make deploy`` made for it.

    make teardown STAGE=spring [DELETE_DATA=yes]
    python -m infra.teardown --stage spring [--delete-data] [--yes]

Under the stage's deploy lock (infra/deploy.py), from any checkout:

1. what ``chalice deploy`` made: the resources the deploy state in AWS records (infra/deploy.py),
   and those found by name whatever the state says (``find_stage_resources``: a deploy that failed
   partway records nothing; a second API or mapping from an old clone's deploy): the stream
   mapping, the SNS subscription, the schedule rule, the REST API, the functions, their roles and
   their log groups. "Already deleted" counts as deleted; then it looks again, and anything still
   there stops the teardown (named) before the stack is touched;
2. the stack ``trellis-<stage>``: its topics, queue, alarms and SES configuration set. The leads
   table and the assets bucket outlive it (``DeletionPolicy: Retain``): their names are recorded
   first in the SSM parameter ``/trellis/<stage>/kept-data`` (so a later ``DELETE_DATA=yes`` finds
   them from any checkout), and they and the commands that delete them for good are printed. With
   ``--delete-data`` (``DELETE_DATA=yes``) the table is first backed up (on-demand backup
   ``trellis-<stage>-final-<date>``, waited for), then deleted, and the bucket emptied (every
   version) and deleted; nothing is exported. When their names cannot be found (no stack, no
   record, no config entry) it refuses before deleting anything, and says what to do;
3. the stage's SSM parameters ``/trellis/<stage>/token-key`` and ``/trellis/<stage>/admin-token``;
4. the stage's entry in .chalice/config.json (other stages kept), its policy files and its local
   ``.chalice/deployed/<stage>.json``.

It lists what it deleted and what it kept. In a terminal it asks for the stage's name first
(``--yes`` skips that); run from a script or CI (stdin not a terminal) it asks nothing. A stage with
nothing on AWS and no policy file (one only ever run locally, like ``dev``) is refused, its config
entry left alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Optional

import boto3
from botocore.exceptions import ClientError

from infra.bootstrap import CHALICE_DIR, _write_json, secret_names, stack_name, stage_policy_files
from infra.deploy import (
    LOCK_WAIT_SECONDS,
    delete_state,
    deployed_file,
    describe,
    find_stage_resources,
    merged_record,
    read_state,
    stage_lock,
    state_key,
)

WAIT_SECONDS = 900  # a backup of a large table takes a while


class TeardownError(Exception):
    """Something a person must fix (or confirm); the message says what."""


@dataclass
class TornDown:
    stage: str
    region: str
    stack_deleted: bool = False
    table: Optional[str] = None  # the leads table's name, kept unless data_deleted
    bucket: Optional[str] = None  # the assets bucket's name, kept unless data_deleted
    backup_name: Optional[str] = None
    backup_arn: Optional[str] = None
    data_deleted: bool = False
    parameters_deleted: list[str] = field(default_factory=list)
    config_removed: bool = False
    policy_removed: bool = False
    deleted: list[str] = field(default_factory=list)  # what this run deleted (or found already deleted)
    kept: list[str] = field(default_factory=list)


def backup_name(stage: str, today: date) -> str:
    return f"trellis-{stage}-final-{today.isoformat()}"


def _stack_outputs(cloudformation: Any, stage: str) -> Optional[dict[str, str]]:
    """The stack's outputs, or None when there is no such stack (any more)."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name(stage))["Stacks"]
    except ClientError as e:
        if "does not exist" in str(e):
            return None
        raise
    if not stacks or stacks[0].get("StackStatus") == "DELETE_COMPLETE":
        return None
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def _existing_parameters(ssm: Any, names: list[str]) -> list[str]:
    found = ssm.get_parameters(Names=names)["Parameters"]
    return [p["Name"] for p in found]


def _wait(check: Callable[[], bool], what: str, sleep: Any) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise TeardownError(f"gave up waiting for {what} after {WAIT_SECONDS} s")
        sleep(5)


def _table_exists(dynamodb: Any, table: str) -> bool:
    try:
        dynamodb.describe_table(TableName=table)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return False
        raise
    return True


def _bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise
    return True


def back_up_and_delete_table(dynamodb: Any, table: str, name: str, sleep: Any) -> Optional[str]:
    """An on-demand backup of the table (waited for: a table cannot be deleted while one is made),
    then the table. The backup's ARN; None when the table is already gone."""
    if not _table_exists(dynamodb, table):
        return None
    arn = str(dynamodb.create_backup(TableName=table, BackupName=name)["BackupDetails"]["BackupArn"])

    def available() -> bool:
        details = dynamodb.describe_backup(BackupArn=arn)["BackupDescription"]["BackupDetails"]
        if details["BackupStatus"] == "DELETED":
            raise TeardownError(f"backup {name} of {table} was deleted before it completed; table kept")
        return bool(details["BackupStatus"] == "AVAILABLE")

    _wait(available, f"backup {name}", sleep)
    dynamodb.delete_table(TableName=table)
    dynamodb.get_waiter("table_not_exists").wait(TableName=table, WaiterConfig={"Delay": 5})
    return arn


def empty_and_delete_bucket(s3: Any, bucket: str) -> bool:
    """Every object version and delete marker, then the bucket. False when it is already gone."""
    if not _bucket_exists(s3, bucket):
        return False
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        keys = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in (*page.get("Versions", []), *page.get("DeleteMarkers", []))
        ]
        for start in range(0, len(keys), 1000):  # delete_objects takes at most 1000 keys
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True})
    s3.delete_bucket(Bucket=bucket)
    return True


def kept_data_parameter(stage: str) -> str:
    """Where a teardown records the names of the table and bucket it kept (the stack that named them is gone)."""
    return f"/trellis/{stage}/kept-data"


def _read_kept(ssm: Any, stage: str) -> dict[str, str]:
    try:
        value = ssm.get_parameter(Name=kept_data_parameter(stage))["Parameter"]["Value"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return {}
        raise
    try:
        data = json.loads(value)
    except ValueError:
        return {}
    return {key: str(data[key]) for key in ("table", "bucket") if data.get(key)} if isinstance(data, dict) else {}


def _gone(e: ClientError) -> bool:
    """An error that says the resource is not there: already deleted counts as deleted."""
    return e.response.get("Error", {}).get("Code") in _NOT_FOUND


_NOT_FOUND = {"ResourceNotFoundException", "NotFoundException", "NoSuchEntity", "NotFound", "ParameterNotFound"}
# The order chalice delete uses too: what invokes a function first, the roles last.
_DELETE_ORDER = (
    "dynamodb_event",
    "sns_event",
    "cloudwatch_event",
    "rest_api",
    "lambda_function",
    "log_group",
    "iam_role",
)


def _delete_resource(session: Any, record: dict[str, Any]) -> None:
    kind = record["resource_type"]
    try:
        if kind == "dynamodb_event":
            session.client("lambda").delete_event_source_mapping(UUID=record["event_uuid"])
        elif kind == "sns_event":
            session.client("sns").unsubscribe(SubscriptionArn=record["subscription_arn"])
        elif kind == "cloudwatch_event":
            events = session.client("events")
            targets = events.list_targets_by_rule(Rule=record["rule_name"])["Targets"]
            if targets:
                events.remove_targets(Rule=record["rule_name"], Ids=[t["Id"] for t in targets])
            events.delete_rule(Name=record["rule_name"])
        elif kind == "rest_api":
            session.client("apigateway").delete_rest_api(restApiId=record["rest_api_id"])
        elif kind == "lambda_function":
            session.client("lambda").delete_function(FunctionName=record["lambda_arn"])
        elif kind == "log_group":
            session.client("logs").delete_log_group(logGroupName=record["log_group_name"])
        elif kind == "iam_role":
            iam, role = session.client("iam"), record["role_name"]
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
                iam.delete_role_policy(RoleName=role, PolicyName=name)
            for attached in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
                iam.detach_role_policy(RoleName=role, PolicyArn=attached["PolicyArn"])
            iam.delete_role(RoleName=role)
    except ClientError as e:
        if not _gone(e):
            raise


def _stage_records(
    session: Any, stage: str, state: Optional[dict[str, Any]], local: Optional[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every Chalice-made resource of the stage: recorded (in AWS or locally) or found by name."""
    found = find_stage_resources(session, stage)
    records = merged_record(state, local, found=found)["resources"] + found.extras
    records += [{"name": group, "resource_type": "log_group", "log_group_name": group} for group in found.log_groups]
    unique: dict[str, dict[str, Any]] = {}
    for record in records:
        unique.setdefault(describe(record), record)
    return list(unique.values())


def _read_local(path: Path) -> Optional[dict[str, Any]]:
    try:
        record = json.loads(path.read_text()) if path.exists() else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def teardown(
    stage: str,
    session: Any,
    *,
    delete_data: bool = False,
    chalice_dir: Path = CHALICE_DIR,
    today: Optional[date] = None,
    sleep: Any = time.sleep,
    lock_wait_seconds: float = LOCK_WAIT_SECONDS,
) -> TornDown:
    if not stage:
        raise TeardownError("which stage? set STAGE=<campaign stage>")
    report = TornDown(stage, session.region_name)
    deployed = deployed_file(stage, chalice_dir)
    policy_files = [path for path in stage_policy_files(chalice_dir, stage) if path.exists()]
    config_path = chalice_dir / "config.json"
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.exists() else {}
    entry = config.get("stages", {}).get(stage)
    cloudformation, ssm, s3 = session.client("cloudformation"), session.client("ssm"), session.client("s3")
    outputs = _stack_outputs(cloudformation, stage)
    parameters = _existing_parameters(ssm, list(secret_names(stage).values()))
    kept = _read_kept(ssm, stage)
    environment = (entry or {}).get("environment_variables", {})
    report.table = (outputs or {}).get("LeadsTableName") or kept.get("table") or environment.get("TRELLIS_TABLE")
    report.bucket = (
        (outputs or {}).get("AssetsBucketName") or kept.get("bucket") or environment.get("TRELLIS_ASSETS_BUCKET")
    )
    state = read_state(s3, report.bucket, stage) if report.bucket and _bucket_exists(s3, report.bucket) else None
    records = _stage_records(session, stage, state, _read_local(deployed))
    nothing = outputs is None and not records and not deployed.exists() and not policy_files
    if nothing and not parameters and not (delete_data and kept):
        raise TeardownError(
            f"nothing of stage {stage} to tear down: no stack {stack_name(stage)}, no functions, API or roles "
            f"named trellis-{stage}, no .chalice/policy-{stage}-*.json, no SSM parameters "
            "(a stage only run locally is left alone)"
        )
    if delete_data and not (report.table or report.bucket):
        # Refused before anything is deleted: a success that deleted nothing would be a lie.
        raise TeardownError(
            f"DELETE_DATA=yes: the names of stage {stage}'s table and bucket are unknown "
            f"(no stack {stack_name(stage)}, "
            f"no SSM parameter {kept_data_parameter(stage)}, no stage entry in .chalice/config.json); nothing was "
            f"deleted. Find them with aws dynamodb list-tables (trellis-{stage}-leads) and aws s3 ls "
            f"(trellis-{stage}-assetsbucket-...), back the table up and delete both by hand"
        )

    with stage_lock(ssm, stage, wait_seconds=lock_wait_seconds, sleep=sleep):
        # 1. What chalice deploy made, recorded or not; then a second look: nothing may remain.
        for kind in _DELETE_ORDER:
            for record in records:
                if record["resource_type"] == kind:
                    _delete_resource(session, record)
                    report.deleted.append(describe(record))
        unknown = [describe(r) for r in records if r["resource_type"] not in _DELETE_ORDER]
        left = [describe(r) for r in _stage_records(session, stage, None, None)] + unknown
        if left:
            raise TeardownError(
                f"stage {stage}: still there after deleting: {', '.join(left)}; the stack, secrets and data "
                "were not touched: delete these by hand (or run make teardown again)"
            )
        if deployed.exists():
            deployed.unlink()
        if report.bucket and delete_state(s3, report.bucket, stage):
            report.deleted.append(f"deploy state s3://{report.bucket}/{state_key(stage)}")

        # 2. The stack; the names of the table and bucket it retains recorded first.
        if report.table or report.bucket:
            names = {"table": report.table or "", "bucket": report.bucket or ""}
            ssm.put_parameter(Name=kept_data_parameter(stage), Value=json.dumps(names), Type="String", Overwrite=True)
        if outputs is not None:
            cloudformation.delete_stack(StackName=stack_name(stage))
            cloudformation.get_waiter("stack_delete_complete").wait(
                StackName=stack_name(stage), WaiterConfig={"Delay": 5}
            )
            report.stack_deleted = True
            report.deleted.append(f"stack {stack_name(stage)}")
        if delete_data:
            report.backup_name = backup_name(stage, today or datetime.now(UTC).date())
            if report.table:
                report.backup_arn = back_up_and_delete_table(
                    session.client("dynamodb"), report.table, report.backup_name, sleep
                )
                state_of_table = "backed up as " + report.backup_name if report.backup_arn else "already deleted"
                report.deleted.append(f"table {report.table} ({state_of_table})")
            if report.bucket:
                emptied = empty_and_delete_bucket(s3, report.bucket)
                report.deleted.append(f"bucket {report.bucket} ({'emptied' if emptied else 'already deleted'})")
            _delete_kept_record(ssm, stage)
            report.data_deleted = True
        else:
            report.kept = [
                *([f"table {report.table}"] if report.table else []),
                *([f"bucket {report.bucket}"] if report.bucket else []),
                *(
                    [f"SSM parameter {kept_data_parameter(stage)} (their names)"]
                    if report.table or report.bucket
                    else []
                ),
            ]

        # 3. The secrets, 4. the stage's config (written whole, other stages as they were) and policy.
        if parameters:
            ssm.delete_parameters(Names=parameters)
            report.parameters_deleted = parameters
            report.deleted.extend(f"SSM parameter {name}" for name in parameters)
    if entry is not None:
        del config["stages"][stage]
        _write_json(config_path, config)
        report.config_removed = True
    for path in stage_policy_files(chalice_dir, stage):  # the functions' role policies
        if path.exists():
            path.unlink()
            report.policy_removed = True
    return report


def _delete_kept_record(ssm: Any, stage: str) -> None:
    try:
        ssm.delete_parameter(Name=kept_data_parameter(stage))
    except ClientError as e:
        if not _gone(e):
            raise


def retained_commands(report: TornDown) -> list[str]:
    """The commands that delete, for good, the table and bucket the stack kept."""
    region = f"--region {report.region}"
    commands = []
    if report.table:
        name = backup_name(report.stage, datetime.now(UTC).date())
        commands.append(f"aws dynamodb create-backup {region} --table-name {report.table} --backup-name {name}")
        commands.append(f"aws dynamodb delete-table {region} --table-name {report.table}")
    if report.bucket:
        commands.append(f"aws s3 rb {region} s3://{report.bucket} --force")
    return commands


def _print_report(report: TornDown) -> None:
    stage = report.stage
    print(f"stage {stage}: torn down")
    if not report.stack_deleted:
        print(f"  stack {stack_name(stage)}: not found (already deleted)")
    print("  deleted:" if report.deleted else "  deleted: nothing (all already gone)")
    for what in report.deleted:
        print(f"    {what}")
    if report.kept:
        print("  kept, as the stack's DeletionPolicy says (the data outlives the stage):")
        for what in report.kept:
            print(f"    {what}")
        print(f"  to delete them for good: make teardown STAGE={stage} DELETE_DATA=yes, or")
        for command in retained_commands(report):
            print(f"    {command}")
    if report.config_removed or report.policy_removed:
        print(f"  removed stage {stage} from .chalice/config.json and its .chalice/policy-{stage}*.json")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.teardown", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="the campaign stage to tear down")
    parser.add_argument(
        "--delete-data", action="store_true", help="back up, then delete the leads table and the assets bucket too"
    )
    parser.add_argument("--yes", action="store_true", help="do not ask (never asked when stdin is not a terminal)")
    args = parser.parse_args(argv)
    if sys.stdin.isatty() and not args.yes:
        what = "and DELETE its table and bucket (after a backup) " if args.delete_data else ""
        answer = input(f"Tear down stage {args.stage} {what}for good? Type its name to confirm: ")
        if answer.strip() != args.stage:
            print("teardown cancelled", file=sys.stderr)
            return 1
    try:
        report = teardown(args.stage, boto3.session.Session(), delete_data=args.delete_data)
    except (TeardownError, ClientError) as e:
        print(f"teardown failed: {e}", file=sys.stderr)
        return 1
    _print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
