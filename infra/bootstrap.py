"""Bootstrap a campaign stage: its infra stack, its secrets, its policy and its Chalice config.

    make bootstrap STAGE=spring [CAMPAIGN=spring] [PUBLIC_URL=https://...]
    python -m infra.bootstrap --stage spring [--campaign spring] [--public-url https://...]

1. creates or updates the CloudFormation stack ``trellis-<stage>`` from infra/trellis.yaml;
2. creates the stage's two SSM SecureStrings (token key, admin token) with random values when
   they do not exist yet; an existing one is never overwritten (rotate with put-parameter);
3. writes ``.chalice/policy-<stage>-<function>.json``, each function's least-privilege role
   policy (infra/iam.py);
4. writes the stage into ``.chalice/config.json`` (other stages and keys kept): the resources'
   names and ARNs (and the stage's name) as ``environment_variables``, ``autogen_policy: false``,
   per function its policy file, memory, timeout and concurrency (infra/settings.py) and the
   ``trellis:stage`` and ``trellis:campaign`` tags Chalice puts on what it creates.

The stack takes the campaign (its resources' ``trellis:campaign`` tag) and the stage's log
retention (``--log-retention-days``, default infra/settings.py ``LOG_RETENTION_DAYS``; an update
without it keeps the stack's), which infra/after_deploy.py gives each function's log group. It
refuses to run on another Python than infra/settings.py ``LAMBDA_RUNTIME``'s.

``--secrets-only`` does step 2 alone: the single-stack path (``make package``, one SAM template
with the app and its resources) needs the secrets to exist before its stack is deployed.

Then ``make deploy STAGE=<stage>`` (chalice deploy and infra/after_deploy.py; never plain
``chalice deploy``, which skips the second). The API's URL exists only after the first deploy: run
the bootstrap again with ``--public-url "$(chalice url --stage <stage>)"`` (or your domain) and
``make deploy`` again. Secret values are never printed or written to the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import boto3
from botocore.exceptions import ClientError

from chalicelib.config import campaign_path, load_campaign_file
from chalicelib.errors import ConfigError
from infra.iam import FUNCTIONS, function_policies, shard_function_name
from infra.settings import (
    LOG_RETENTION_CHOICES,
    LOG_RETENTION_DAYS,
    InterpreterMismatch,
    check_interpreter,
    lambda_functions,
    resource_tags,
)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "trellis.yaml"
CHALICE_DIR = ROOT / ".chalice"
# The functions' environment variables that name the stack's resources, and the stack output
# each one is (the single-stack path, infra/package.py, uses the outputs' values in place).
OUTPUT_VARIABLES = {
    "TRELLIS_TABLE": "LeadsTableName",
    "TRELLIS_STREAM_ARN": "LeadsTableStreamArn",
    "TRELLIS_ASSETS_BUCKET": "AssetsBucketName",
    "TRELLIS_SES_EVENTS_TOPIC": "SesEventsTopicArn",
    "TRELLIS_SALES_TOPIC_ARN": "SalesTopicArn",
    "TRELLIS_SES_CONFIGURATION_SET": "ConfigurationSetName",
}
REQUIRED_OUTPUTS = (
    "LeadsTableName",
    "LeadsTableStreamArn",
    "AssetsBucketName",
    "SesEventsTopicArn",
    "SalesTopicArn",
    "StreamFailuresQueueArn",
)


class BootstrapError(Exception):
    """Something a person must fix; the message says what."""


@dataclass(frozen=True)
class Bootstrapped:
    stage: str
    outputs: dict[str, str]
    environment: dict[str, str]
    policy_files: dict[str, Path]  # function name -> its role policy
    created_secrets: list[str]


def stack_name(stage: str) -> str:
    return f"trellis-{stage}"


def secret_names(stage: str) -> dict[str, str]:
    return {
        "TRELLIS_TOKEN_KEY_PARAMETER": f"/trellis/{stage}/token-key",
        "TRELLIS_ADMIN_TOKEN_PARAMETER": f"/trellis/{stage}/admin-token",
    }


def _parameter(key: str, value: Optional[str], exists: bool, default: str) -> dict[str, Any]:
    """A stack parameter: ``value`` when given, else the stack's current one (a new stack: ``default``)."""
    if value is not None:
        return {"ParameterKey": key, "ParameterValue": value}
    if exists:
        return {"ParameterKey": key, "UsePreviousValue": True}
    return {"ParameterKey": key, "ParameterValue": default}


def deploy_stack(
    cloudformation: Any,
    stage: str,
    alarm_email: Optional[str] = None,
    campaign: Optional[str] = None,
    log_retention_days: Optional[int] = None,
) -> dict[str, str]:
    """Create the stage's stack, or update it to the current template; its outputs by key.

    ``alarm_email`` subscribes an address to the alarms and ``log_retention_days`` sets the
    functions' log retention; without them an update keeps the stack's current values (a new
    stack: no address, ``LOG_RETENTION_DAYS``). ``campaign`` (default: the stage's name) is the
    ``trellis:campaign`` tag of the stack and of every resource in it.
    """
    name = stack_name(stage)
    try:
        cloudformation.describe_stacks(StackName=name)
        exists = True
    except ClientError:
        exists = False
    if log_retention_days is not None and log_retention_days not in LOG_RETENTION_CHOICES:
        raise BootstrapError(f"log retention {log_retention_days} days: CloudWatch Logs keeps {LOG_RETENTION_CHOICES}")
    retention = None if log_retention_days is None else str(log_retention_days)
    campaign = campaign or stage
    arguments = {
        "StackName": name,
        "TemplateBody": TEMPLATE.read_text(),
        "Parameters": [
            {"ParameterKey": "Stage", "ParameterValue": stage},
            {"ParameterKey": "Campaign", "ParameterValue": campaign},
            _parameter("AlarmEmail", alarm_email, exists, ""),
            _parameter("LogRetentionDays", retention, exists, str(LOG_RETENTION_DAYS)),
        ],
        # On the stack itself too (found by its tags when its name is not known).
        "Tags": [{"Key": key, "Value": value} for key, value in resource_tags(stage, campaign).items()],
    }
    try:
        if exists:
            cloudformation.update_stack(**arguments)
            cloudformation.get_waiter("stack_update_complete").wait(StackName=name, WaiterConfig={"Delay": 5})
        else:
            cloudformation.create_stack(**arguments)
            cloudformation.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 5})
    except ClientError as e:
        if "No updates are to be performed" not in str(e):
            raise BootstrapError(f"stack {name}: {e}") from e
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = [key for key in REQUIRED_OUTPUTS if key not in outputs]
    if missing:
        raise BootstrapError(f"stack {name} has no output {', '.join(missing)}: is infra/trellis.yaml deployed?")
    return outputs


def configuration_set(sesv2: Any, stage: str) -> str:
    """The SES configuration set the template names ``trellis-<stage>``, when the stack's outputs
    lack it (moto's CloudFormation skips AWS::SES resources); it must exist."""
    name = f"trellis-{stage}"
    try:
        sesv2.get_configuration_set(ConfigurationSetName=name)
    except ClientError as e:
        raise BootstrapError(f"SES configuration set {name} not found: {e}") from e
    return name


def policy_file_name(stage: str, function: str) -> str:
    """A function's role policy file in .chalice/ (what its ``iam_policy_file`` names)."""
    return f"policy-{stage}-{function}.json"


def stage_policy_files(chalice_dir: Path, stage: str) -> list[Path]:
    """Every role policy file of the stage: one per function, and an older bootstrap's one for all."""
    return [chalice_dir / f"policy-{stage}.json", *(chalice_dir / policy_file_name(stage, f) for f in FUNCTIONS)]


def ensure_secret(ssm: Any, name: str) -> bool:
    """Create the SecureString with a random value unless it exists. True when created."""
    try:
        ssm.put_parameter(Name=name, Value=secrets.token_urlsafe(48), Type="SecureString", Overwrite=False)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ParameterAlreadyExists":
            return False
        raise BootstrapError(f"cannot create SSM parameter {name}: {e}") from e
    return True


def ensure_secrets(ssm: Any, stage: str) -> list[str]:
    """The stage's secrets (``secret_names``), each created unless it exists: the created ones."""
    return [name for name in secret_names(stage).values() if ensure_secret(ssm, name)]


def _write_json(path: Path, data: Any) -> None:
    """Whole or not at all: a temporary file renamed over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    os.replace(temporary, path)


def bootstrap(
    stage: str,
    campaign_name: str,
    session: Any,
    public_url: Optional[str] = None,
    chalice_dir: Path = CHALICE_DIR,
    alarm_email: Optional[str] = None,
    log_retention_days: Optional[int] = None,
) -> Bootstrapped:
    campaign = load_campaign_file(campaign_path(campaign_name))  # a broken file stops here, before AWS is touched
    outputs = deploy_stack(session.client("cloudformation"), stage, alarm_email, campaign_name, log_retention_days)
    outputs.setdefault("ConfigurationSetName", configuration_set(session.client("sesv2"), stage))
    ssm = session.client("ssm")
    names = secret_names(stage)
    created = ensure_secrets(ssm, stage)
    account = session.client("sts").get_caller_identity()["Account"]
    policies = function_policies(
        region=session.region_name,
        account=account,
        stage=stage,
        outputs=outputs,
        sender=campaign.sender.from_address,
        token_key_parameter=names["TRELLIS_TOKEN_KEY_PARAMETER"],
        admin_token_parameter=names["TRELLIS_ADMIN_TOKEN_PARAMETER"],
    )
    policy_files = {function: chalice_dir / policy_file_name(stage, function) for function in policies}
    for function, policy in policies.items():
        _write_json(policy_files[function], policy)
    # Chalice reads iam_policy_file per function: each function's role gets its own policy.
    functions = lambda_functions()
    for function, path in policy_files.items():
        functions[function]["iam_policy_file"] = path.name

    environment = {
        "TRELLIS_CAMPAIGN": campaign_name,
        "TRELLIS_STAGE": stage,
        "TRELLIS_SHARD_FUNCTION": shard_function_name(stage),
        **{variable: outputs[output] for variable, output in OUTPUT_VARIABLES.items()},
        **names,
    }
    config_path = chalice_dir / "config.json"
    config: dict[str, Any] = (
        json.loads(config_path.read_text()) if config_path.exists() else {"version": "2.0", "app_name": "trellis"}
    )
    entry = dict(config.setdefault("stages", {}).get(stage, {}))
    known_url = entry.get("environment_variables", {}).get("TRELLIS_PUBLIC_URL")
    if public_url or known_url:
        environment["TRELLIS_PUBLIC_URL"] = (public_url or known_url).rstrip("/")
    entry.update(
        {
            "api_gateway_stage": entry.get("api_gateway_stage", "api"),
            "autogen_policy": False,
            "environment_variables": environment,
            "lambda_functions": functions,
            # Chalice tags what it creates with these (next to its own aws-chalice tag).
            "tags": resource_tags(stage, campaign_name),
        }
    )
    entry.pop("iam_policy_file", None)  # an older bootstrap's one policy for every function
    config["stages"][stage] = entry
    _write_json(config_path, config)
    return Bootstrapped(stage, outputs, environment, policy_files, created)


def next_step(result: Bootstrapped) -> str:
    """The closing hint: ``make deploy`` (chalice deploy, then infra/after_deploy.py), never plain chalice deploy."""
    deploy = f"make deploy STAGE={result.stage}"
    if "TRELLIS_PUBLIC_URL" in result.environment:
        return f"next: {deploy}"
    campaign = result.environment["TRELLIS_CAMPAIGN"]
    again = f"make bootstrap STAGE={result.stage}" + (f" CAMPAIGN={campaign}" if campaign != result.stage else "")
    url = f'PUBLIC_URL="$(.venv/bin/chalice url --stage {result.stage})"'
    return f"next: {deploy}\nthen, for the email links: {again} {url} && {deploy}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bootstrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="the campaign stage (lower-case letters, digits, -)")
    parser.add_argument("--campaign", help="campaign file name in campaigns/ (default: the stage name)")
    parser.add_argument("--public-url", help="the API's base URL, once known (chalice url --stage STAGE)")
    parser.add_argument(
        "--alarm-email",
        help="subscribe this address to the stage's alarms ('' for none; default: keep the stack's)",
    )
    parser.add_argument(
        "--log-retention-days",
        type=int,
        choices=LOG_RETENTION_CHOICES,
        metavar="DAYS",
        help=f"days the functions' logs are kept (default: the stack's, {LOG_RETENTION_DAYS} for a new one)",
    )
    parser.add_argument(
        "--secrets-only",
        action="store_true",
        help="only create the stage's SSM secrets (for the single-stack path, make package)",
    )
    args = parser.parse_args(argv)
    if args.secrets_only:
        try:
            created = ensure_secrets(boto3.session.Session().client("ssm"), args.stage)
        except (BootstrapError, ClientError) as e:
            print(f"bootstrap failed: {e}", file=sys.stderr)
            return 1
        for name in secret_names(args.stage).values():
            state = "created (random)" if name in created else "exists, kept"
            print(f"  SSM SecureString {name}: {state}")
        return 0
    try:
        # Before AWS is touched: the stage it writes is deployed by chalice with this interpreter's runtime.
        check_interpreter()
    except InterpreterMismatch as e:
        print(f"bootstrap refused: {e}", file=sys.stderr)
        return 2
    try:
        result = bootstrap(
            args.stage,
            args.campaign or args.stage,
            boto3.session.Session(),
            args.public_url,
            alarm_email=args.alarm_email,
            log_retention_days=args.log_retention_days,
        )
    except (BootstrapError, ClientError, ConfigError) as e:
        print(f"bootstrap failed: {e}", file=sys.stderr)
        return 1
    print(f"stage {result.stage}: stack {stack_name(result.stage)}, table {result.outputs['LeadsTableName']}")
    for name in result.created_secrets:
        print(f"  created SSM SecureString {name} (random; read it with aws ssm get-parameter --with-decryption)")
    print(f"  wrote .chalice/{policy_file_name(result.stage, '<function>')} (one per function)")
    print("  and the stage in .chalice/config.json")
    print(next_step(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
