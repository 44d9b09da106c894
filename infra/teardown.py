"""Tear a campaign stage down: what ``make bootstrap`` and ``chalice deploy`` made for it.

    make teardown STAGE=spring [DELETE_DATA=yes]
    python -m infra.teardown --stage spring [--delete-data] [--yes]

1. ``chalice delete --stage <stage>`` (functions, API, role, subscriptions, schedule), when
   .chalice/deployed/<stage>.json exists;
2. the stack ``trellis-<stage>``: its topics, queue, alarms and SES configuration set. The leads
   table and the assets bucket outlive it (``DeletionPolicy: Retain``): their names and the
   commands that delete them for good are printed. With ``--delete-data`` (``DELETE_DATA=yes``)
   the table is first backed up (on-demand backup ``trellis-<stage>-final-<date>``, waited for),
   then deleted, and the bucket emptied (every version) and deleted; nothing is exported;
3. the stage's SSM parameters ``/trellis/<stage>/token-key`` and ``/trellis/<stage>/admin-token``;
4. the stage's entry in .chalice/config.json (other stages kept) and .chalice/policy-<stage>.json.

In a terminal it asks for the stage's name first (``--yes`` skips that); run from a script or CI
(stdin not a terminal) it asks nothing. A stage with nothing on AWS and no policy file (one only
ever run locally, like ``dev``) is refused, its config entry left alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
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

WAIT_SECONDS = 900  # a backup of a large table takes a while

Runner = Callable[[list[str], Path], int]


class TeardownError(Exception):
    """Something a person must fix (or confirm); the message says what."""


@dataclass
class TornDown:
    stage: str
    region: str
    chalice_deleted: bool = False
    stack_deleted: bool = False
    table: Optional[str] = None  # the leads table's name, kept unless data_deleted
    bucket: Optional[str] = None  # the assets bucket's name, kept unless data_deleted
    backup_name: Optional[str] = None
    backup_arn: Optional[str] = None
    data_deleted: bool = False
    parameters_deleted: list[str] = field(default_factory=list)
    config_removed: bool = False
    policy_removed: bool = False


def backup_name(stage: str, today: date) -> str:
    return f"trellis-{stage}-final-{today.isoformat()}"


def run_chalice(command: list[str], project_dir: Path) -> int:
    """Run the virtualenv's chalice (else the one on PATH) in the project directory."""
    chalice = Path(sys.executable).parent / "chalice"
    executable = str(chalice) if chalice.exists() else "chalice"
    return subprocess.run([executable, *command], cwd=project_dir, check=False).returncode  # noqa: S603


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


def teardown(
    stage: str,
    session: Any,
    *,
    delete_data: bool = False,
    chalice_dir: Path = CHALICE_DIR,
    run: Runner = run_chalice,
    today: Optional[date] = None,
    sleep: Any = time.sleep,
) -> TornDown:
    if not stage:
        raise TeardownError("which stage? set STAGE=<campaign stage>")
    report = TornDown(stage, session.region_name)
    deployed = chalice_dir / "deployed" / f"{stage}.json"
    policy_file = chalice_dir / f"policy-{stage}.json"
    config_path = chalice_dir / "config.json"
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.exists() else {}
    entry = config.get("stages", {}).get(stage)
    cloudformation, ssm = session.client("cloudformation"), session.client("ssm")
    outputs = _stack_outputs(cloudformation, stage)
    parameters = _existing_parameters(ssm, list(secret_names(stage).values()))
    if outputs is None and not deployed.exists() and not policy_file.exists() and not parameters:
        raise TeardownError(
            f"nothing of stage {stage} to tear down: no stack {stack_name(stage)}, no .chalice/deployed/{stage}.json, "
            f"no .chalice/policy-{stage}.json, no SSM parameters (a stage only run locally is left alone)"
        )

    # 1. What chalice deploy made. It stops here when that fails: the data is not touched.
    if deployed.exists():
        code = run(["delete", "--stage", stage], chalice_dir.parent)
        if code != 0:
            raise TeardownError(f"chalice delete --stage {stage} failed (exit {code}); nothing else was deleted")
        report.chalice_deleted = True

    # 2. The stack; the table and bucket it retains (names from the stack, else from the stage's config).
    environment = (entry or {}).get("environment_variables", {})
    report.table = (outputs or {}).get("LeadsTableName") or environment.get("TRELLIS_TABLE")
    report.bucket = (outputs or {}).get("AssetsBucketName") or environment.get("TRELLIS_ASSETS_BUCKET")
    if outputs is not None:
        cloudformation.delete_stack(StackName=stack_name(stage))
        cloudformation.get_waiter("stack_delete_complete").wait(StackName=stack_name(stage), WaiterConfig={"Delay": 5})
        report.stack_deleted = True
    if delete_data:
        report.backup_name = backup_name(stage, today or datetime.now(UTC).date())
        if report.table:
            report.backup_arn = back_up_and_delete_table(
                session.client("dynamodb"), report.table, report.backup_name, sleep
            )
        if report.bucket:
            empty_and_delete_bucket(session.client("s3"), report.bucket)
        report.data_deleted = True

    # 3. The secrets, 4. the stage's config (written whole, other stages as they were) and policy.
    if parameters:
        ssm.delete_parameters(Names=parameters)
        report.parameters_deleted = parameters
    if entry is not None:
        del config["stages"][stage]
        _write_json(config_path, config)
        report.config_removed = True
    for path in stage_policy_files(chalice_dir, stage):  # the functions' role policies
        if path.exists():
            path.unlink()
            report.policy_removed = True
    return report


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
    if report.chalice_deleted:
        print(f"stage {stage}: chalice delete --stage {stage} done")
    print(f"  stack {stack_name(stage)}: {'deleted' if report.stack_deleted else 'not found (already deleted)'}")
    if report.data_deleted:
        if report.backup_arn:
            print(f"  table {report.table}: backed up as {report.backup_name} ({report.backup_arn}), then deleted")
        print(f"  bucket {report.bucket}: emptied and deleted")
    elif report.table or report.bucket:
        print("  kept, as the stack's DeletionPolicy says (the data outlives the stage):")
        if report.table:
            print(f"    table  {report.table} (its leads, events and messages)")
        if report.bucket:
            print(f"    bucket {report.bucket} (the lead-magnet assets)")
        print(f"  to delete them for good: make teardown STAGE={stage} DELETE_DATA=yes, or")
        for command in retained_commands(report):
            print(f"    {command}")
    for name in report.parameters_deleted:
        print(f"  deleted SSM parameter {name}")
    if report.config_removed or report.policy_removed:
        print(f"  removed stage {stage} from .chalice/config.json and .chalice/policy-{stage}.json")


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
