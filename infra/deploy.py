"""Deploy a stage from any checkout: ``make deploy STAGE=spring`` runs this.

    python -m infra.deploy --stage spring

Chalice keeps what it deployed in ``.chalice/deployed/<stage>.json`` of the working copy it ran in;
a teammate's fresh clone without that file would create a second REST API (a new URL), a second
stream mapping and a second SNS subscription. So the stage's deployed state lives with the stage in
AWS, and every deploy:

1. takes the stage's deploy lock, the SSM parameter ``/trellis/<stage>/deploy-lock`` (created only
   when absent; its value names the owner and when it expires). A second deploy of the stage at
   once waits up to ``LOCK_WAIT_SECONDS``, then refuses, naming the owner and the expiry; a lock
   past its expiry (a deploy killed before it released it) is taken over;
2. reads the state, the object ``_trellis/deployed/<stage>.json`` in the stage's assets bucket
   (the stack's ``AssetsBucketName``; the first deploy creates it), and what AWS holds of the stage
   by name (``find_stage_resources``: the functions ``trellis-<stage>[-<function>]``, their roles,
   the REST API whose integrations call the stage's API function, the stream mapping and the SNS
   subscription of the stage's functions, the schedule rule). What the state lacks is adopted from
   what was found, so a deploy that failed partway (Chalice records nothing then) or a lost state
   is finished by the next deploy instead of being created twice. Two REST APIs (or mappings, or
   subscriptions) of one stage are refused, named, before anything is changed;
3. writes the result to ``.chalice/deployed/<stage>.json`` and runs ``chalice deploy --stage``;
4. uploads what Chalice recorded, also when it failed (the file as it then is);
5. runs the after-deploy step (infra/after_deploy.py) and releases the lock, always.

Neither the lock parameter nor the state object is for the functions: their policies (infra/iam.py)
name their SSM parameters one by one, and deny the assets bucket's ``_trellis/`` prefix, which no
magnet may use (chalicelib.models ``RESERVED_ASSET_PREFIX``).

Chalice runs in a copy of the project that holds only the stage's campaign file and its compiled
form (compiled there), as ``make package`` ships them; the interpreter must build for the
functions' runtime (infra/settings.py).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Optional

import boto3
from botocore.exceptions import ClientError

from chalicelib.errors import ConfigError
from chalicelib.models import RESERVED_ASSET_PREFIX
from infra.after_deploy import AfterDeployError, after_deploy, api_gateway_stage, stack_outputs
from infra.bootstrap import CHALICE_DIR, _write_json
from infra.package import ship_campaign
from infra.settings import LAMBDA_FUNCTIONS, InterpreterMismatch, check_interpreter

APP_NAME = "trellis"  # .chalice/config.json's app_name: Chalice's prefix of every name
API_FUNCTION = "api_handler"  # Chalice names the routes' function trellis-<stage>, no suffix
STREAM_FUNCTION = "on_lead_change"
SNS_FUNCTION = "on_ses_feedback"
SCHEDULED_FUNCTION = "dispatch"
STATE_PREFIX = f"{RESERVED_ASSET_PREFIX}deployed/"  # reserved in the assets bucket: no magnet may live there
LOCK_SECONDS = 30 * 60  # longer than any deploy; a dead deploy's lock is taken over after it
LOCK_WAIT_SECONDS = 60
LOCK_POLL_SECONDS = 5

ChaliceRunner = Callable[[str, Path], int]


class DeployError(Exception):
    """Something a person must fix (or wait for); the message says what."""


def function_name(stage: str, function: str) -> str:
    return f"{APP_NAME}-{stage}" if function == API_FUNCTION else f"{APP_NAME}-{stage}-{function}"


def role_names(stage: str, function: str) -> dict[str, str]:
    """The roles Chalice may give a function, by their record name: its own (one policy file per
    function) or the stage's shared one (one policy for all)."""
    return {f"{function}_role": f"{APP_NAME}-{stage}-{function}", "default-role": f"{APP_NAME}-{stage}"}


def schedule_rule(stage: str) -> str:
    return f"{APP_NAME}-{stage}-{SCHEDULED_FUNCTION}-event"


def lock_parameter(stage: str) -> str:
    return f"/trellis/{stage}/deploy-lock"


def state_key(stage: str) -> str:
    return f"{STATE_PREFIX}{stage}.json"


def deployed_file(stage: str, chalice_dir: Path) -> Path:
    return chalice_dir / "deployed" / f"{stage}.json"


# -- the lock ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lock:
    owner: str
    expires: datetime


def default_owner() -> str:
    """Who holds the lock, as a person reads it, and a token only this run has."""
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} ({uuid.uuid4().hex[:8]})"


def _read_lock(ssm: Any, stage: str) -> Optional[Lock]:
    try:
        value = ssm.get_parameter(Name=lock_parameter(stage))["Parameter"]["Value"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise
    try:
        data = json.loads(value)
        return Lock(str(data["owner"]), datetime.fromisoformat(data["expires"]))
    except (ValueError, KeyError, TypeError):
        return Lock(f"unreadable lock {value!r}", datetime.min.replace(tzinfo=UTC))  # taken over


def acquire_lock(
    ssm: Any,
    stage: str,
    owner: str,
    *,
    seconds: int = LOCK_SECONDS,
    wait_seconds: float = LOCK_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    say: Callable[[str], None] = print,
) -> Lock:
    """The stage's lock, once no one else holds it (or theirs expired); DeployError after ``wait_seconds``."""
    deadline = time.monotonic() + wait_seconds
    while True:
        lock = Lock(owner, now() + timedelta(seconds=seconds))
        value = json.dumps({"owner": lock.owner, "expires": lock.expires.isoformat()})
        try:
            ssm.put_parameter(Name=lock_parameter(stage), Value=value, Type="String", Overwrite=False)
            return lock
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ParameterAlreadyExists":
                raise
        held = _read_lock(ssm, stage)
        if held is None:
            continue  # released between our put and our read
        if held.expires <= now():
            say(f"taking over the expired deploy lock of stage {stage} (held by {held.owner})")
            _delete_parameter(ssm, lock_parameter(stage))
            continue
        if time.monotonic() >= deadline:
            raise DeployError(
                f"stage {stage} is being deployed or torn down by {held.owner} (lock {lock_parameter(stage)}, "
                f"expires {held.expires.isoformat(timespec='seconds')}): try again when it is done; if that run "
                "died, the lock is taken over once it expires"
            )
        sleep(LOCK_POLL_SECONDS)


def release_lock(ssm: Any, stage: str, lock: Lock) -> None:
    """Delete the lock if it is still ours (a run that overran its expiry may have lost it)."""
    held = _read_lock(ssm, stage)
    if held is not None and held.owner == lock.owner:
        _delete_parameter(ssm, lock_parameter(stage))


@contextmanager
def stage_lock(ssm: Any, stage: str, owner: Optional[str] = None, **options: Any) -> Iterator[Lock]:
    lock = acquire_lock(ssm, stage, owner or default_owner(), **options)
    try:
        yield lock
    finally:
        release_lock(ssm, stage, lock)


def _delete_parameter(ssm: Any, name: str) -> None:
    try:
        ssm.delete_parameter(Name=name)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ParameterNotFound":
            raise


# -- the state in AWS ----------------------------------------------------------------------------


def read_state(s3: Any, bucket: str, stage: str) -> Optional[dict[str, Any]]:
    """The stage's deployed record as the last deploy uploaded it; None when there is none."""
    try:
        body = s3.get_object(Bucket=bucket, Key=state_key(stage))["Body"].read()
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
            return None
        raise
    record = json.loads(body)
    if not isinstance(record, dict) or not isinstance(record.get("resources"), list):
        raise DeployError(f"s3://{bucket}/{state_key(stage)} is not a Chalice deployment record")
    return record


def write_state(s3: Any, bucket: str, stage: str, record: dict[str, Any]) -> None:
    s3.put_object(
        Bucket=bucket,
        Key=state_key(stage),
        Body=json.dumps(record, indent=2).encode(),
        ContentType="application/json",
    )


def delete_state(s3: Any, bucket: str, stage: str) -> bool:
    """Every version of the state object (the bucket is versioned). False when there was none."""
    try:
        versions = s3.list_object_versions(Bucket=bucket, Prefix=state_key(stage))
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return False
        raise
    keys = [
        {"Key": v["Key"], "VersionId": v["VersionId"]}
        for v in (*versions.get("Versions", []), *versions.get("DeleteMarkers", []))
        if v["Key"] == state_key(stage)
    ]
    if keys:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    return bool(keys)


# -- what AWS holds of a stage, found by name ----------------------------------------------------


@dataclass
class Found:
    """The stage's Chalice-made resources found in AWS, as Chalice records them, and what is there twice."""

    records: list[dict[str, Any]] = field(default_factory=list)
    extras: list[dict[str, Any]] = field(default_factory=list)  # a second API, mapping or subscription
    log_groups: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> list[str]:
        return [describe(record) for record in self.extras]

    def by_name(self) -> dict[str, dict[str, Any]]:
        return {record["name"]: record for record in self.records}


def describe(record: dict[str, Any]) -> str:
    """A deployment record's resource as a person reads it."""
    kind = record.get("resource_type")
    if kind == "lambda_function":
        return f"function {str(record['lambda_arn']).rsplit(':', 1)[-1]}"
    if kind == "iam_role":
        return f"role {record['role_name']}"
    if kind == "rest_api":
        return f"REST API {record['rest_api_id']}"
    if kind == "dynamodb_event":
        return f"stream mapping {record['event_uuid']}"
    if kind == "sns_event":
        return f"SNS subscription {record['subscription_arn']}"
    if kind == "cloudwatch_event":
        return f"schedule rule {record['rule_name']}"
    if kind == "log_group":
        return f"log group {record['log_group_name']}"
    return f"{kind} {record.get('name')}"


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _function_arn(lambda_client: Any, name: str) -> Optional[str]:
    try:
        return str(lambda_client.get_function(FunctionName=name)["Configuration"]["FunctionArn"])
    except ClientError as e:
        if _code(e) == "ResourceNotFoundException":
            return None
        raise


def _rest_api_calls(apigateway: Any, rest_api_id: str, function_arn: str) -> bool:
    """Whether an integration of the API invokes ``function_arn`` (how one stage's ``trellis`` API is
    told from another's: every API of the app has the same name)."""
    marker = f"/functions/{function_arn}/invocations"
    for page in apigateway.get_paginator("get_resources").paginate(restApiId=rest_api_id):
        for resource in page.get("items", []):
            for method in resource.get("resourceMethods", {}):
                try:
                    integration = apigateway.get_integration(
                        restApiId=rest_api_id, resourceId=resource["id"], httpMethod=method
                    )
                except ClientError as e:
                    if _code(e) == "NotFoundException":
                        continue
                    raise
                if marker in str(integration.get("uri", "")):
                    return True
    return False


def find_stage_resources(session: Any, stage: str, api_stage: str = "api") -> Found:
    """What Chalice made for ``stage``, found by the names it gives (and, for the REST API, the
    function its integrations call), as the records of a deployment Chalice accepts."""
    found = Found()
    lambda_client, iam = session.client("lambda"), session.client("iam")
    logs = session.client("logs")
    # One pass over the account's roles and the stage's log groups, not a call per name.
    roles = {
        role["RoleName"]: role["Arn"]
        for page in iam.get_paginator("list_roles").paginate()
        for role in page["Roles"]
        if role["RoleName"].startswith(f"{APP_NAME}-{stage}")
    }
    groups = {
        group["logGroupName"]
        for page in logs.get_paginator("describe_log_groups").paginate(
            logGroupNamePrefix=f"/aws/lambda/{APP_NAME}-{stage}"
        )
        for group in page["logGroups"]
    }
    arns: dict[str, str] = {}
    for function in LAMBDA_FUNCTIONS:
        for record_name, role in role_names(stage, function).items():
            if role in roles and record_name not in found.by_name():
                found.records.append(
                    {"name": record_name, "resource_type": "iam_role", "role_arn": roles[role], "role_name": role}
                )
        name = function_name(stage, function)
        arn = _function_arn(lambda_client, name)
        if arn:
            arns[function] = arn
            found.records.append({"name": function, "resource_type": "lambda_function", "lambda_arn": arn})
        if f"/aws/lambda/{name}" in groups:  # exact names: trellis-<stage>-x is not stage <stage>-x's
            found.log_groups.append(f"/aws/lambda/{name}")

    if STREAM_FUNCTION in arns:
        mappings = [
            m
            for page in lambda_client.get_paginator("list_event_source_mappings").paginate(
                FunctionName=arns[STREAM_FUNCTION]
            )
            for m in page["EventSourceMappings"]
        ]
        for index, mapping in enumerate(mappings):
            (found.extras if index else found.records).append(
                {
                    "name": f"{STREAM_FUNCTION}-dynamodb-event-source",
                    "resource_type": "dynamodb_event",
                    "stream_arn": mapping["EventSourceArn"],
                    "event_uuid": mapping["UUID"],
                    "lambda_arn": arns[STREAM_FUNCTION],
                }
            )

    sns = session.client("sns")
    subscriptions = [
        s
        for page in sns.get_paginator("list_subscriptions").paginate()
        for s in page["Subscriptions"]
        if s.get("Protocol") == "lambda" and s.get("Endpoint") in arns.values()
    ]
    for index, subscription in enumerate(subscriptions):
        (found.extras if index else found.records).append(
            {
                "name": f"{SNS_FUNCTION}-sns-subscription",
                "resource_type": "sns_event",
                "topic": subscription["TopicArn"],
                "lambda_arn": subscription["Endpoint"],
                "subscription_arn": subscription["SubscriptionArn"],
                "topic_arn": subscription["TopicArn"],
            }
        )

    events = session.client("events")
    try:
        events.describe_rule(Name=schedule_rule(stage))
        found.records.append(
            {
                "name": f"{SCHEDULED_FUNCTION}-event",
                "resource_type": "cloudwatch_event",
                "rule_name": schedule_rule(stage),
            }
        )
    except ClientError as e:
        if _code(e) != "ResourceNotFoundException":
            raise

    if API_FUNCTION in arns:
        apigateway = session.client("apigateway")
        apis = [
            api["id"]
            for page in apigateway.get_paginator("get_rest_apis").paginate()
            for api in page.get("items", [])
            if api.get("name") == APP_NAME and _rest_api_calls(apigateway, api["id"], arns[API_FUNCTION])
        ]
        for index, rest_api_id in enumerate(apis):
            (found.extras if index else found.records).append(
                {
                    "name": "rest_api",
                    "resource_type": "rest_api",
                    "rest_api_id": rest_api_id,
                    "rest_api_url": f"https://{rest_api_id}.execute-api.{session.region_name}.amazonaws.com/{api_stage}/",
                }
            )
    return found


def merged_record(*sources: Optional[dict[str, Any]], found: Found) -> dict[str, Any]:
    """One deployment record: each resource from the first source that has it (the state in AWS,
    then the local file), then what was found in AWS and no source records."""
    resources: dict[str, dict[str, Any]] = {}
    for source in sources:
        for resource in (source or {}).get("resources", []):
            resources.setdefault(resource["name"], resource)
    for resource in found.records:
        resources.setdefault(resource["name"], resource)
    return {"resources": list(resources.values()), "schema_version": "2.0", "backend": "api"}


def _read_local(path: Path) -> Optional[dict[str, Any]]:
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as e:
        raise DeployError(f"{path} is not a Chalice deployment record: {e}") from e
    return record if isinstance(record, dict) else None


# -- the deploy ----------------------------------------------------------------------------------


def run_chalice_deploy(stage: str, project_dir: Path) -> int:
    """``chalice deploy --stage <stage>`` with the virtualenv's chalice (else the one on PATH), run
    in a copy of the project that holds only the stage's campaign file and its compiled form (as
    ``make package`` ships them); what Chalice records there is copied back to
    ``.chalice/deployed/``."""
    chalice = Path(sys.executable).parent / "chalice"
    executable = str(chalice) if chalice.exists() else "chalice"
    record = deployed_file(stage, project_dir / ".chalice")
    with tempfile.TemporaryDirectory(prefix=f"trellis-deploy-{stage}-") as scratch:
        copy = Path(scratch) / "project"
        shutil.copytree(project_dir, copy, symlinks=True, ignore=_not_deployed)
        try:
            ship_campaign(copy, _stage_campaign(stage, project_dir / ".chalice"))
        except ConfigError as e:  # an invalid campaign file: nothing deployed, the lock released
            raise DeployError(str(e)) from e
        code = subprocess.run([executable, "deploy", "--stage", stage], cwd=copy, check=False).returncode  # noqa: S603
        copied = deployed_file(stage, copy / ".chalice")
        if copied.exists():
            record.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(copied, record)
    return code


def _not_deployed(directory: str, names: list[str]) -> set[str]:
    """What a deploy's project copy leaves out: the checkout's caches and virtualenv, and
    Chalice's own caches (its deployment zips, its build venv); the config, the policies and the
    deployed record stay."""
    skipped = {n for n in names if n in {".git", ".venv", ".twin", "dist", "preview", "__pycache__"}}
    skipped |= {n for n in names if n.endswith((".pyc", "_cache"))}
    if Path(directory).name == ".chalice":
        skipped |= {n for n in names if n in {"deployments", "venv"}}
    return skipped


def _stage_campaign(stage: str, chalice_dir: Path) -> str:
    config = json.loads((chalice_dir / "config.json").read_text())
    campaign = config.get("stages", {}).get(stage, {}).get("environment_variables", {}).get("TRELLIS_CAMPAIGN")
    if not campaign:
        raise DeployError(f"{chalice_dir / 'config.json'}: stage {stage} names no TRELLIS_CAMPAIGN: run make bootstrap")
    return str(campaign)


@dataclass
class Deployed:
    stage: str
    bucket: str
    adopted: list[str]  # resources the state lacked, found in AWS and handed to Chalice
    rest_api_id: str


def deploy(
    stage: str,
    session: Any,
    *,
    chalice_dir: Path = CHALICE_DIR,
    run: ChaliceRunner = run_chalice_deploy,
    owner: Optional[str] = None,
    lock_wait_seconds: float = LOCK_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    say: Callable[[str], None] = print,
) -> Deployed:
    try:
        outputs = stack_outputs(session.client("cloudformation"), stage)
    except AfterDeployError as e:
        raise DeployError(str(e)) from e
    bucket = outputs.get("AssetsBucketName")
    if not bucket:
        raise DeployError(f"stack trellis-{stage} has no output AssetsBucketName: run make bootstrap STAGE={stage}")
    s3, ssm = session.client("s3"), session.client("ssm")
    local = deployed_file(stage, chalice_dir)
    with stage_lock(ssm, stage, owner, wait_seconds=lock_wait_seconds, sleep=sleep, say=say):
        stored = read_state(s3, bucket, stage)
        found = find_stage_resources(session, stage, api_gateway_stage(stage, chalice_dir))
        if found.duplicates:
            raise DeployError(
                f"stage {stage} has resources twice in AWS: {'; '.join(found.duplicates)}. Delete the extra ones "
                f"(or make teardown STAGE={stage}, which removes all), then make deploy again; nothing was changed"
            )
        record = merged_record(stored, _read_local(local), found=found)
        known = {r["name"] for r in (stored or {}).get("resources", [])}
        adopted = [r["name"] for r in record["resources"] if r["name"] not in known]
        if stored is not None and adopted:
            say(f"stage {stage}: adopting {', '.join(adopted)} (in AWS, not in the deploy state)")
        elif stored is None and record["resources"]:
            say(f"stage {stage}: no deploy state in s3://{bucket}; adopting what AWS holds: {', '.join(adopted)}")
        _write_json(local, record)
        code = run(stage, chalice_dir.parent)
        # Uploaded whatever happened: Chalice rewrites the file only when it succeeds, so after a
        # failure it is the record handed to it, which names nothing that does not exist.
        after = _read_local(local)
        if after is not None:
            write_state(s3, bucket, stage, after)
        if code != 0:
            raise DeployError(
                f"chalice deploy --stage {stage} failed (exit {code}); its state is saved: fix the cause and "
                f"run make deploy STAGE={stage} again (it adopts what this one created)"
            )
        try:
            after_deploy(stage, session, chalice_dir, sleep=sleep)
        except AfterDeployError as e:
            raise DeployError(f"after_deploy: {e}") from e
    rest_api = {r["name"]: r for r in (after or {}).get("resources", [])}.get("rest_api", {})
    return Deployed(stage, bucket, adopted, str(rest_api.get("rest_api_id", "")))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="the campaign stage (after make bootstrap STAGE=...)")
    args = parser.parse_args(argv)
    try:
        check_interpreter()  # first: chalice deploy builds for the interpreter it runs on
    except InterpreterMismatch as e:
        print(f"deploy refused: {e}", file=sys.stderr)
        return 2
    try:
        result = deploy(args.stage, boto3.session.Session())
    except (DeployError, ClientError) as e:
        print(f"deploy failed: {e}", file=sys.stderr)
        return 1
    print(
        f"stage {result.stage}: deployed; REST API {result.rest_api_id}; state in s3://{result.bucket}/{state_key(result.stage)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
