"""Create a stage's resources from infra/trellis.yaml, through CloudFormation, in moto.

The local twin and the tests use the very template a real deploy uses, so the table, its
indexes and stream cannot drift between them.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import boto3

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "trellis.yaml"


def stack_name(stage: str) -> str:
    return f"trellis-{stage}"


def deploy(stage: str, session: Any = None) -> dict[str, str]:
    """Create (or reuse) the stage's stack and return its outputs by key."""
    session = session or boto3.session.Session()
    # moto warns (and, as a server, logs) each resource type its CloudFormation skips; the gaps
    # are filled below, so the warnings would only alarm the person running the twin.
    parser_log = logging.getLogger("moto")  # the logger moto's CloudFormation parser uses
    level = parser_log.level
    parser_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not supported by moto's CloudFormation.*")
            outputs = _create_stack(session.client("cloudformation"), stack_name(stage), stage)
    finally:
        parser_log.setLevel(level)
    _enable_ttl(session, outputs["LeadsTableName"])
    outputs.setdefault("ConfigurationSetName", _create_configuration_set(session, stage))
    return outputs


def _create_stack(cloudformation: Any, name: str, stage: str) -> dict[str, str]:
    existing = {s["StackName"] for s in cloudformation.describe_stacks()["Stacks"]}
    if name not in existing:
        cloudformation.create_stack(
            StackName=name,
            TemplateBody=TEMPLATE.read_text(),
            Parameters=[{"ParameterKey": "Stage", "ParameterValue": stage}],
        )
        cloudformation.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1})
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _create_configuration_set(session: Any, stage: str) -> str:
    # moto's CloudFormation skips AWS::SES::* resources; create the set the template names.
    name = f"trellis-{stage}"
    sesv2 = session.client("sesv2")
    if name not in sesv2.list_configuration_sets().get("ConfigurationSets", []):
        sesv2.create_configuration_set(ConfigurationSetName=name)
    return name


def _enable_ttl(session: Any, table_name: str) -> None:
    # moto's CloudFormation ignores TimeToLiveSpecification; apply the template's own setting.
    import yaml

    class _CfnLoader(yaml.SafeLoader):
        pass

    _CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    ttl = template["Resources"]["LeadsTable"]["Properties"]["TimeToLiveSpecification"]
    dynamodb = session.client("dynamodb")
    status = dynamodb.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]["TimeToLiveStatus"]
    if status != "ENABLED":
        dynamodb.update_time_to_live(TableName=table_name, TimeToLiveSpecification=ttl)


def verify_sender(session: Any, from_address: str) -> None:
    """moto, like SES, refuses to send from an unverified identity: verify the sender's domain.

    On AWS this is a DNS step done once per domain (docs/deploy.md, "Deploy a campaign").
    """
    domain = from_address.rpartition("@")[2]
    session.client("ses").verify_domain_identity(Domain=domain)
