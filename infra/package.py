"""The single-stack path: one SAM template with the app and every resource it uses.

    make package STAGE=spring [CAMPAIGN=spring] [PUBLIC_URL=https://...] [OUT=dist]
    python -m infra.package --stage spring [--campaign spring] [--public-url URL] [--out dist]

No AWS credentials, no AWS call. In order:

1. validates the campaign file (a broken one stops here); the zip gets it with its compiled form
   (``campaigns/<name>.compiled.json``, compiled from it in the copy), which the cold start loads;
2. writes ``<out>/merge.json``: infra/trellis.yaml (read now, so whatever it gains is included)
   as JSON, plus what Chalice's generated resources need to point at this stack: every
   function's environment (``!Ref LeadsTable``, ``!GetAtt LeadsTable.StreamArn``, ...), the
   stream trigger (partial batch responses, bisection, retry and age limits, the failures queue:
   infra/after_deploy.py's settings), the SNS subscription, the alarms' function dimensions,
   API Gateway's 401 answers and binary media types;
3. runs ``chalice package --stage S --merge-template <out>/merge.json <out>`` on a temporary
   copy of the project whose ``.chalice/config.json`` has a package-only entry for the stage
   (per-function settings from infra/settings.py; each function's role policy from infra/iam.py
   with ``Fn::Sub`` ARNs). The checkout's own ``.chalice/`` is never written: a stage that
   ``make bootstrap`` wrote for ``chalice deploy`` stays as it was;
4. checks the result (no placeholder ARN left, no ``__pycache__`` in the zip) and runs cfn-lint
   on ``<out>/sam.json``: any finding fails;
5. prints the template's resources and the size of ``<out>/deployment.zip``.

Every stage-dependent name and ARN derives from the template's ``Stage`` parameter (its default
is ``--stage``): the functions' ``TRELLIS_STAGE`` and secret names, the role policies' secret and
log-group ARNs, the alarms' names and dimensions, the tags. The parameter is kept rather than
removed because deriving makes an override safe: a stack deployed with ``Stage=other`` names,
watches and reads ``other``'s resources and secrets throughout, never half of each. The campaign
is another matter: its file is in the zip, so the ``Campaign`` parameter allows that one value.

What both deploy paths share (infra/settings.py): the Lambda runtime (this must run on that
Python: Chalice takes the runtime from the interpreter), the log retention (the
``LogRetentionDays`` parameter, default ``--log-retention-days``; one ``AWS::Logs::LogGroup`` per
function, ``/aws/lambda/<function name>``) and the ``trellis:stage`` / ``trellis:campaign`` tags
on every taggable resource. The zip holds only this stage's campaign file, and its compiled form.

Deploy with ``aws cloudformation package --s3-bucket`` + ``deploy --s3-bucket`` or ``sam deploy
--resolve-s3`` (docs/deploy.md, "The single-stack path"): the template is over the 51,200 bytes
``aws cloudformation deploy`` accepts inline.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from chalice.utils import to_cfn_resource_name

from chalicelib.compiled import COMPILED_SUFFIX
from chalicelib.compiler import compile_to
from chalicelib.config import campaign_path, load_campaign_file
from chalicelib.errors import ConfigError
from infra.after_deploy import (
    GATEWAY_RESPONSE,
    GATEWAY_RESPONSES,
    MAX_RECORD_AGE_SECONDS,
    MAX_RETRY_ATTEMPTS,
    PARTIAL_BATCH_RESPONSES,
    REPORT_FAILURES_VARIABLE,
)
from infra.bootstrap import OUTPUT_VARIABLES, policy_file_name, secret_names
from infra.iam import APP_NAME, function_policies, shard_function_name
from infra.settings import (
    CAMPAIGN_TAG,
    DEPLOYED_EXTRA_BINARY_TYPES,
    LAMBDA_RUNTIME,
    LOG_RETENTION_CHOICES,
    LOG_RETENTION_DAYS,
    STAGE_TAG,
    InterpreterMismatch,
    check_interpreter,
    lambda_functions,
    resource_tags,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STAGE_NAME = re.compile(r"[a-z0-9-]{1,40}")  # infra/trellis.yaml's Stage AllowedPattern
API_HANDLER = "APIHandler"  # Chalice's logical id of the function behind every route
# What Chalice would write where a stage's resources are unknown (chalicelib.config.EventSources).
PLACEHOLDER = "-not-set"
_TOPIC_PLACEHOLDER = "arn:aws:sns:us-east-1:000000000000:TRELLIS_SES_EVENTS_TOPIC-not-set"

# Kept out of the copy that gets packaged: local state and caches. .chalice is written anew
# (its deployments/ is Chalice's package cache, which it would reuse).
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".chalice", ".twin", "dist", "preview", "__pycache__", "*.pyc", ".*_cache"
)


class PackageError(Exception):
    """Something a person must fix; the message says what."""


@dataclass(frozen=True)
class Packaged:
    template: Path
    deployment_zip: Path
    merge_template: Path
    resources: dict[str, str]  # logical id -> type


# -- infra/trellis.yaml as JSON ------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form intrinsics (!Ref, !Sub, !GetAtt, !If, ...)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref" or suffix == "Condition":
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)  # !GetAtt Resource.Attribute
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    loaded = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(loaded, dict) or "Resources" not in loaded:
        raise PackageError(f"{path} is not a CloudFormation template")
    return loaded


# -- the merge template --------------------------------------------------------------------------


def function_ids(app_functions: Mapping[str, Any]) -> dict[str, str]:
    """Chalice's logical id of each function (``api_handler`` is Chalice's name for the routes')."""
    return {name: API_HANDLER if name == "api_handler" else to_cfn_resource_name(name) for name in app_functions}


def _sub_placeholders(outputs: Mapping[str, Any]) -> dict[str, str]:
    """Each stack output as a ``Fn::Sub`` placeholder: {"Ref": "X"} -> "${X}", GetAtt -> "${X.Y}"."""
    placeholders = {}
    for key, output in outputs.items():
        value = output.get("Value")
        if isinstance(value, dict) and set(value) == {"Ref"}:
            placeholders[key] = "${" + value["Ref"] + "}"
        elif isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
            placeholders[key] = "${" + ".".join(value["Fn::GetAtt"]) + "}"
    return placeholders


def _subbed(value: Any) -> Any:
    """Every string with a ``${...}`` in it as ``{"Fn::Sub": ...}``, recursively."""
    if isinstance(value, dict):
        return {key: _subbed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_subbed(item) for item in value]
    if isinstance(value, str) and "${" in value:
        return {"Fn::Sub": value}
    return value


def role_policies(template: Mapping[str, Any], sender: str) -> dict[str, dict[str, Any]]:
    """infra/iam.py's policy of each function, its ARNs as ``Fn::Sub`` of this stack's region,
    account, ``Stage`` (the secrets, the functions' log groups) and resources."""
    outputs = _sub_placeholders(template.get("Outputs", {}))
    secrets = secret_names("${Stage}")
    policies = function_policies(
        region="${AWS::Region}",
        account="${AWS::AccountId}",
        stage="${Stage}",
        outputs=outputs,
        sender=sender.replace("${", "${!"),  # a literal "${" in Fn::Sub is written "${!"
        token_key_parameter=secrets["TRELLIS_TOKEN_KEY_PARAMETER"],
        admin_token_parameter=secrets["TRELLIS_ADMIN_TOKEN_PARAMETER"],
    )
    return {function: _subbed(policy) for function, policy in policies.items()}


def _output_value(template: Mapping[str, Any], key: str) -> Any:
    try:
        return template["Outputs"][key]["Value"]
    except KeyError:
        raise PackageError(f"infra/trellis.yaml has no output {key}") from None


def merge_template(
    template: dict[str, Any],
    *,
    stage: str,
    campaign: str,
    public_url: str,
    api_gateway_stage: str,
    binary_types: list[str],
    functions: Mapping[str, str],
    log_retention_days: int = LOG_RETENTION_DAYS,
) -> dict[str, Any]:
    """infra/trellis.yaml plus the overrides of Chalice's resources (``functions``: name -> id)."""
    merged: dict[str, Any] = json.loads(json.dumps(template))  # a deep copy, and proof it is plain JSON
    merged["Parameters"]["Stage"]["Default"] = stage
    # The zip holds this campaign's file only: no other value would run.
    merged["Parameters"]["Campaign"].update(
        {
            "Default": campaign,
            "AllowedValues": [campaign],
            "Description": "The campaign whose file is in the zip (the one value allowed): the trellis:campaign tag.",
        }
    )
    merged["Parameters"]["LogRetentionDays"]["Default"] = log_retention_days
    merged["Parameters"]["PublicUrl"] = {
        "Type": "String",
        "Default": public_url,
        "AllowedPattern": "(|https?://.+)",
        "Description": (
            "The API's public base URL (a custom domain, or the EndpointURL output without its "
            "trailing slash). Empty: the scheduled and event functions use the API's execute-api "
            "URL; the API's own functions cannot (a circular reference) and report it missing "
            "until the stack is updated with it."
        ),
    }
    merged.setdefault("Conditions", {})["HasPublicUrl"] = {"Fn::Not": [{"Fn::Equals": [{"Ref": "PublicUrl"}, ""]}]}
    resources = merged["Resources"]

    execute_api_url = {
        "Fn::Sub": "https://${RestAPI}.execute-api.${AWS::Region}.${AWS::URLSuffix}/" + api_gateway_stage
    }
    environment: dict[str, Any] = {
        "TRELLIS_CAMPAIGN": campaign,
        "TRELLIS_STAGE": {"Ref": "Stage"},
        "TRELLIS_SHARD_FUNCTION": {"Fn::Sub": shard_function_name("${Stage}")},
        **{variable: _output_value(template, output) for variable, output in OUTPUT_VARIABLES.items()},
        **{variable: {"Fn::Sub": name} for variable, name in secret_names("${Stage}").items()},
        # The mapping below has ReportBatchItemFailures from its creation on.
        REPORT_FAILURES_VARIABLE: "true",
    }
    behind_the_api = {functions["api_handler"], functions.get("admin_auth")}
    for logical_id in functions.values():
        fallback = {"Ref": "AWS::NoValue"} if logical_id in behind_the_api else execute_api_url
        variables = {**environment, "TRELLIS_PUBLIC_URL": {"Fn::If": ["HasPublicUrl", {"Ref": "PublicUrl"}, fallback]}}
        resources[logical_id] = {"Properties": {"Environment": {"Variables": variables}}}
    for name, logical_id in functions.items():
        # Named as chalice deploy names them: each role's policy names its function's log group.
        resources[logical_id]["Properties"]["FunctionName"] = {"Fn::Sub": f"{APP_NAME}-${{Stage}}-{name}"}

    stream_event: dict[str, Any] = {
        "Type": "DynamoDB",
        "Properties": {
            "Stream": _output_value(template, "LeadsTableStreamArn"),
            # The table is created with the trigger: read it from its first record on.
            "StartingPosition": "TRIM_HORIZON",
            "FunctionResponseTypes": list(PARTIAL_BATCH_RESPONSES),
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": MAX_RETRY_ATTEMPTS,
            "MaximumRecordAgeInSeconds": MAX_RECORD_AGE_SECONDS,
        },
    }
    if "StreamFailuresQueue" in resources:
        stream_event["Properties"]["DestinationConfig"] = {
            "OnFailure": {"Destination": {"Fn::GetAtt": ["StreamFailuresQueue", "Arn"]}}
        }
    on_lead_change = functions["on_lead_change"]
    resources[on_lead_change]["Properties"]["Events"] = {
        to_cfn_resource_name("on_lead_change-dynamodb-event-source"): stream_event
    }
    on_ses_feedback = functions["on_ses_feedback"]
    resources[on_ses_feedback]["Properties"]["Events"] = {
        to_cfn_resource_name("on_ses_feedback-sns-subscription"): {
            "Type": "SNS",
            "Properties": {"Topic": {"Ref": "SesEventsTopic"}},
        }
    }

    # The alarms name functions as chalice deploy names them (trellis-<stage>-<name>); here
    # CloudFormation names them, so the alarm refers to the function itself.
    by_deployed_name = {"trellis-${Stage}-" + name: logical_id for name, logical_id in functions.items()}
    for resource in resources.values():
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        for dimension in resource.get("Properties", {}).get("Dimensions", []):
            value = dimension.get("Value")
            if dimension.get("Name") == "FunctionName" and isinstance(value, dict) and "Fn::Sub" in value:
                if value["Fn::Sub"] not in by_deployed_name:
                    raise PackageError(f"an alarm names an unknown function: {value['Fn::Sub']}")
                dimension["Value"] = {"Ref": by_deployed_name[value["Fn::Sub"]]}

    resources["RestAPI"] = {
        "Properties": {
            "DefinitionBody": {
                "x-amazon-apigateway-binary-media-types": binary_types,
                "x-amazon-apigateway-gateway-responses": {name: dict(GATEWAY_RESPONSE) for name in GATEWAY_RESPONSES},
            }
        }
    }

    # Chalice creates no log groups and Lambda's own never expire: one per function, with the
    # stage's retention, going with the stack (the data is in the table, not the logs). Named
    # after the function's FunctionName (above), not a !Ref of it: the function depends on its
    # log group, so none of its runs (the schedule's first tick) can make Lambda's own first.
    for logical_id in functions.values():
        group = log_group_id(logical_id)
        function_name = resources[logical_id]["Properties"]["FunctionName"]["Fn::Sub"]
        resources[group] = {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/lambda/{function_name}"},
                "RetentionInDays": {"Ref": "LogRetentionDays"},
            },
        }
        resources[logical_id]["DependsOn"] = [group]
    return merged


def log_group_id(function_id: str) -> str:
    """The logical id of a function's log group in the packaged template."""
    return f"{function_id}LogGroup"


# Chalice's SAM types and how they take tags (a map; PropagateTags passes them on to what SAM
# generates from them: the schedule's rule, the stream mapping, the API's stage and deployment).
_SAM_TAGGED = ("AWS::Serverless::Function", "AWS::Serverless::Api")
CHALICE_TAG = "aws-chalice"  # the tag Chalice adds to every function


def _taggable(resource_type: str) -> bool:
    """Whether CloudFormation's schema of the type (cfn-lint's copy) has a ``Tags`` property."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER  # type: ignore[import-untyped]  # the linter run below

    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", resource_type).schema
    return "Tags" in schema.get("properties", {})


def tag_resources(template: dict[str, Any]) -> list[str]:
    """The ``trellis:stage`` (``Ref Stage``) and ``trellis:campaign`` (``Ref Campaign``) tags on every
    taggable resource still without them (Chalice's functions, API and roles, the log groups; the
    ones from infra/trellis.yaml carry them already): the logical ids tagged."""
    tags = {STAGE_TAG: {"Ref": "Stage"}, CAMPAIGN_TAG: {"Ref": "Campaign"}}
    tagged = []
    for logical_id, resource in template["Resources"].items():
        kind = resource.get("Type", "")
        properties = resource.setdefault("Properties", {})
        if kind in _SAM_TAGGED:
            # Chalice wrote the stage config's tags as strings: the stage's tag follows Stage, and
            # so does the stage in its own tag (version=...:stage=<stage>:app=trellis).
            present = dict(properties.get("Tags", {}))
            chalice = present.get(CHALICE_TAG)
            if isinstance(chalice, str):
                present[CHALICE_TAG] = {"Fn::Sub": re.sub(r"(^|:)stage=[^:]*", r"\1stage=${Stage}", chalice)}
            properties["Tags"] = {**present, **tags}
            properties["PropagateTags"] = True
        elif kind.startswith("AWS::Serverless::") or not _taggable(kind):
            continue
        else:
            present = properties.get("Tags", [])
            if {t.get("Key") for t in present} >= set(tags):
                continue
            properties["Tags"] = [t for t in present if t.get("Key") not in tags] + [
                {"Key": key, "Value": value} for key, value in tags.items()
            ]
        tagged.append(logical_id)
    return tagged


# -- chalice package on a copy -------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def ship_campaign(project_copy: Path, campaign: str) -> None:
    """Only this stage's campaign goes into the zip (vendor/campaigns links to campaigns/): another
    team's campaign is not this stage's to ship. It goes as its file and its compiled form,
    compiled here from that very file (whatever the checkout held compiled): the cold start loads
    the compiled form alone, and refuses it if it is not the file's. Both deploy paths use it."""
    directory = project_copy / "campaigns"
    # Anything else goes, not only other campaigns: a compilation's temporary file, copied while
    # make validate or a test session was writing it, is nothing to ship either.
    for other in directory.iterdir():
        if other.name not in (f"{campaign}.yaml", f"{campaign}{COMPILED_SUFFIX}"):
            other.unlink()
    compile_to(campaign_path(campaign, directory), directory)
    precompile(project_copy)


def precompile(project_copy: Path) -> None:
    """The copy's chalicelib as bytecode beside its source (chalice zips chalicelib/ whole): Lambda
    cannot write bytecode to its read-only /var/task, so without it every cold start compiles
    every module it imports. Unchecked hashes: a zip's timestamps prove nothing; the copy is made
    for this zip and never edited. The runtime is this interpreter's version (chalice picks it),
    so the bytecode fits; a runtime that did not take it would compile the source as before."""
    compiled = compileall.compile_dir(
        project_copy / "chalicelib", quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )
    if not compiled:
        raise ConfigError(f"{project_copy / 'chalicelib'}: could not compile to bytecode")


def bytecode_problems(zf: zipfile.ZipFile) -> list[str]:
    """What is wrong with the zip's bytecode: any outside chalicelib's __pycache__, any module of
    chalicelib without it, or any that is not its zipped source's (unchecked hash, this version)."""
    names = set(zf.namelist())
    problems = []
    sources = {n for n in names if n.startswith("chalicelib/") and n.endswith(".py")}
    expected = {importlib.util.cache_from_source(n): n for n in sources}
    for name in sorted(n for n in names if n.endswith(".pyc") or "__pycache__" in n):
        source = expected.get(name)
        if source is None:
            problems.append(f"{name}: not chalicelib's")
            continue
        header = zf.read(name)[:16]
        flags, digest = int.from_bytes(header[4:8], "little"), header[8:16]
        if (
            header[:4] != importlib.util.MAGIC_NUMBER
            or flags != 1
            or digest != importlib.util.source_hash(zf.read(source))
        ):
            problems.append(f"{name}: not the unchecked-hash bytecode of {source}")
    problems += [f"{source}: no bytecode" for pyc, source in sorted(expected.items()) if pyc not in names]
    return problems


def _copy_project(project: Path, dest: Path, stage_entry: dict[str, Any], stage: str, campaign: str) -> None:
    shutil.copytree(project, dest, symlinks=True, ignore=_NOT_COPIED)
    ship_campaign(dest, campaign)
    config_path = project / ".chalice" / "config.json"
    config: dict[str, Any] = (
        json.loads(config_path.read_text()) if config_path.exists() else {"version": "2.0", "app_name": "trellis"}
    )
    config.setdefault("stages", {})[stage] = stage_entry
    _write_json(dest / ".chalice" / "config.json", config)


def offline_environment(home: Path, region: Optional[str]) -> dict[str, str]:
    """No credentials, no config file to find them in (``home`` is an empty folder): packaging
    needs neither. ``region``: only that of the placeholder ARNs Chalice writes (all replaced, and
    checked); None sets none."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        # Chalice imports app.py: no chalicelib/__pycache__ written into what it zips.
        "PYTHONDONTWRITEBYTECODE": "1",
        # pip (for requirements.txt) uses the configured index, as a plain pip run would.
        **{name: value for name, value in os.environ.items() if name.startswith("PIP_")},
    }
    if region is not None:
        env["AWS_DEFAULT_REGION"] = region
    return env


def _app_binary_types(project: Path) -> list[str]:
    """app.api.binary_types as Chalice sees it when it imports app.py (no AWS call on import)."""
    script = "import json, app; print(json.dumps(app.app.api.binary_types))"
    result = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script],
        cwd=project,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1", "AWS_DEFAULT_REGION": "us-east-1"},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise PackageError(f"cannot import app.py:\n{result.stderr}")
    types: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return types


def _check(template: dict[str, Any], zip_path: Path, functions: Mapping[str, str], campaign: str) -> None:
    resources = template["Resources"]
    missing = [logical_id for logical_id in functions.values() if resources.get(logical_id, {}).get("Type") is None]
    if missing:
        raise PackageError(f"Chalice's template has no {', '.join(missing)}: did its logical ids change?")
    for logical_id in functions.values():
        events = resources[logical_id]["Properties"].get("Events", {})
        if len(events) > 1:  # an override under a name Chalice no longer uses
            raise PackageError(f"{logical_id} has events {sorted(events)}: did Chalice's names change?")
    runtimes = {resources[logical_id]["Properties"].get("Runtime") for logical_id in functions.values()}
    if runtimes != {LAMBDA_RUNTIME}:  # check_interpreter ran first; this is Chalice's side of it
        raise PackageError(f"the functions' runtimes are {sorted(map(str, runtimes))}, not {LAMBDA_RUNTIME}")
    text = json.dumps(template)
    if PLACEHOLDER in text or "000000000000" in text:
        raise PackageError("the template still names a placeholder resource (TRELLIS_*-not-set)")
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        problems = bytecode_problems(zf)
    if problems:
        raise PackageError(f"bytecode in the zip that is not its sources': {problems[:5]}")
    campaigns = sorted(n for n in names if n.startswith("campaigns/") and not n.endswith("/"))
    shipped = sorted([f"campaigns/{campaign}{COMPILED_SUFFIX}", f"campaigns/{campaign}.yaml"])
    if campaigns != shipped:
        raise PackageError(f"the zip's campaign files are {campaigns}, not {' and '.join(shipped)} alone")


def cfn_lint(template: Path) -> tuple[int, str]:
    """cfn-lint's exit code (0: nothing found) and its findings."""
    result = subprocess.run(  # noqa: S603 - the venv's cfn-lint on our own file
        [str(BIN / "cfn-lint"), "--", str(template)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


def package(
    stage: str,
    campaign_name: str,
    out: Path,
    public_url: str = "",
    project: Path = ROOT,
    log_retention_days: int = LOG_RETENTION_DAYS,
) -> Packaged:
    if not STAGE_NAME.fullmatch(stage):
        raise PackageError(f"stage {stage!r}: 1 to 40 of a-z, 0-9 and -")
    if log_retention_days not in LOG_RETENTION_CHOICES:
        raise PackageError(f"log retention {log_retention_days} days: CloudWatch Logs keeps {LOG_RETENTION_CHOICES}")
    campaign = load_campaign_file(campaign_path(campaign_name))  # a broken campaign file stops here
    template = load_template(project / "infra" / "trellis.yaml")
    config_path = project / ".chalice" / "config.json"
    known = json.loads(config_path.read_text()).get("stages", {}).get(stage, {}) if config_path.exists() else {}
    api_gateway_stage = known.get("api_gateway_stage", "api")
    settings = lambda_functions()
    functions = function_ids(settings)
    binary_types = [*_app_binary_types(project), *DEPLOYED_EXTRA_BINARY_TYPES]

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("sam.json", "deployment.zip"):
        (out / stale).unlink(missing_ok=True)
    merge_path = out / "merge.json"
    _write_json(
        merge_path,
        merge_template(
            template,
            stage=stage,
            campaign=campaign_name,
            public_url=public_url.rstrip("/"),
            api_gateway_stage=api_gateway_stage,
            binary_types=binary_types,
            functions=functions,
            log_retention_days=log_retention_days,
        ),
    )

    with tempfile.TemporaryDirectory(prefix="trellis-package-") as scratch:
        copy, home = Path(scratch) / "project", Path(scratch) / "home"
        home.mkdir()
        # Each function's role (Chalice makes one per function) gets its own policy.
        policies = role_policies(template, campaign.sender.from_address)
        for name, function_settings in settings.items():
            function_settings["iam_policy_file"] = policy_file_name(stage, name)
        _copy_project(
            project,
            copy,
            {
                "api_gateway_stage": api_gateway_stage,
                "autogen_policy": False,
                # The real values are in merge.json (they name this stack's resources). This one
                # only makes Chalice write the SNS event's Topic as a string, which the merge
                # replaces: a dict there (Chalice's Fn::Sub) would be merged key by key with ours.
                "environment_variables": {"TRELLIS_SES_EVENTS_TOPIC": _TOPIC_PLACEHOLDER},
                "lambda_functions": settings,
                "tags": resource_tags(stage, campaign_name),  # Chalice's functions; tag_resources does the rest
            },
            stage,
            campaign_name,
        )
        for name, policy in policies.items():
            _write_json(copy / ".chalice" / policy_file_name(stage, name), policy)
        result = subprocess.run(  # noqa: S603 - the venv's chalice, our arguments
            [
                str(BIN / "chalice"),
                "--project-dir",
                str(copy),
                "package",
                "--stage",
                stage,
                "--merge-template",
                str(merge_path),
                str(out),
            ],
            env=offline_environment(home, os.environ.get("AWS_DEFAULT_REGION", "us-east-1")),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise PackageError(f"chalice package failed:\n{result.stdout}\n{result.stderr}")

    sam, zip_path = out / "sam.json", out / "deployment.zip"
    packaged = json.loads(sam.read_text())
    tag_resources(packaged)
    sam.write_text(json.dumps(packaged, indent=2) + "\n")
    _check(packaged, zip_path, functions, campaign_name)
    resources = {logical_id: resource["Type"] for logical_id, resource in packaged["Resources"].items()}
    return Packaged(sam, zip_path, merge_path, resources)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.package", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="the campaign stage (lower-case letters, digits, -)")
    parser.add_argument("--campaign", help="campaign file name in campaigns/ (default: the stage name)")
    parser.add_argument("--public-url", default="", help="the API's base URL, when known (the PublicUrl default)")
    parser.add_argument("--out", default="dist", type=Path, help="output directory (default: dist)")
    parser.add_argument(
        "--log-retention-days",
        type=int,
        default=LOG_RETENTION_DAYS,
        choices=LOG_RETENTION_CHOICES,
        metavar="DAYS",
        help=f"days the functions' logs are kept (the LogRetentionDays default; default {LOG_RETENTION_DAYS})",
    )
    args = parser.parse_args(argv)
    try:
        check_interpreter()  # first: chalice package would build for this interpreter's runtime
    except InterpreterMismatch as e:
        print(f"package refused: {e}", file=sys.stderr)
        return 2
    try:
        result = package(
            args.stage,
            args.campaign or args.stage,
            args.out,
            args.public_url,
            log_retention_days=args.log_retention_days,
        )
    except (PackageError, ConfigError) as e:
        print(f"package failed: {e}", file=sys.stderr)
        return 1
    code, findings = cfn_lint(result.template)
    if code != 0:
        print(f"package failed: cfn-lint found problems in {result.template}:\n{findings}", file=sys.stderr)
        return 1
    print(f"{result.template}: {len(result.resources)} resources, cfn-lint clean")
    width = max(len(logical_id) for logical_id in result.resources)
    for logical_id, kind in sorted(result.resources.items()):
        print(f"  {logical_id:<{width}}  {kind}")
    print(f"{result.deployment_zip}: {result.deployment_zip.stat().st_size / 1024:.0f} KB")
    print(f"merge template: {result.merge_template}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
