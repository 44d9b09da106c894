"""The stage role's policy grants every AWS action the code calls, on its resource, and no more.

The code's boto3 calls are found by reading it (an AST scan of chalicelib/), and checked once
more against the calls a whole campaign loop really makes (botocore's before-call hook).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib import aws
from infra.iam import DESTINATION_ACTIONS, LOG_ACTIONS, STREAM_ACTIONS, lambda_policy
from tests.conftest import ADMIN_TOKEN
from tests.helpers import post_json

CHALICELIB = Path(__file__).resolve().parent.parent / "chalicelib"
IAM_PREFIX = {"dynamodb": "dynamodb", "sesv2": "ses", "ses": "ses", "sns": "sns", "ssm": "ssm", "s3": "s3"}
# Which client each attribute holds, where the code keeps one (file, attribute) or anywhere (attribute).
CLIENT_ATTRIBUTES = {
    ("store.py", "_client"): "dynamodb",
    ("assets.py", "_client"): "s3",
    ("*", "_sesv2"): "sesv2",
    ("*", "_ses_v1"): "ses",
    ("*", "_sns"): "sns",
    ("*", "_ssm"): "ssm",
}
# Store helpers that take the DynamoDB operation's name as their first argument.
OPERATION_HELPERS = {"_call", "_write_if"}
TRANSACTION_PARTS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
# Granted for AWS to use on the function's behalf, not called by the code.
GRANTED_FOR_AWS = {*STREAM_ACTIONS, *DESTINATION_ACTIONS, *LOG_ACTIONS, "kms:Decrypt"}

OUTPUTS = {
    "LeadsTableName": "trellis-spring-leads",
    "LeadsTableStreamArn": "arn:aws:dynamodb:eu-west-1:123456789012:table/trellis-spring-leads/stream/2026-11-23T00:00:00.000",
    "AssetsBucketName": "trellis-spring-assetsbucket-abc",
    "SalesTopicArn": "arn:aws:sns:eu-west-1:123456789012:trellis-spring-sales",
    "StreamFailuresQueueArn": "arn:aws:sqs:eu-west-1:123456789012:trellis-spring-stream-failures",
    "ConfigurationSetName": "trellis-spring",
}
POLICY = lambda_policy(
    region="eu-west-1",
    account="123456789012",
    outputs=OUTPUTS,
    sender="hello@spring.example",
    secret_parameters=["/trellis/spring/token-key", "/trellis/spring/admin-token"],
)


def iam_action(service: str, operation: str) -> str:
    return f"{IAM_PREFIX[service]}:{''.join(word.capitalize() for word in operation.split('_'))}"


def scanned_actions() -> set[str]:
    """Every IAM action the code's boto3 calls need, read from the source."""
    actions: set[str] = set()
    for path in sorted(CHALICELIB.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for key in node.keys:
                    if isinstance(key, ast.Constant) and key.value in TRANSACTION_PARTS and path.name == "store.py":
                        actions.add(f"dynamodb:{TRANSACTION_PARTS[key.value]}")
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            method, owner = node.func.attr, node.func.value
            if method in OPERATION_HELPERS and node.args and isinstance(node.args[0], ast.Constant):
                actions.add(iam_action("dynamodb", str(node.args[0].value)))
            elif isinstance(owner, ast.Attribute):
                service = CLIENT_ATTRIBUTES.get((path.name, owner.attr)) or CLIENT_ATTRIBUTES.get(("*", owner.attr))
                if service is None:
                    continue
                if method == "generate_presigned_url":  # the link's reader acts with the role's rights
                    signed = [k.value for k in node.keywords if k.arg == "ClientMethod"] + node.args[:1]
                    actions.update(iam_action(service, str(a.value)) for a in signed if isinstance(a, ast.Constant))
                elif method != "transact_write_items":  # its parts' actions are collected above
                    actions.add(iam_action(service, method))
    return actions


def granted() -> dict[str, list[str]]:
    """Each action the policy allows, with the resources it allows it on."""
    allowed: dict[str, list[str]] = {}
    for statement in POLICY["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            allowed.setdefault(action, []).extend(statement["Resource"])
    return allowed


def test_the_scan_finds_the_calls_we_know_of():
    # If the scanner stopped seeing calls, the coverage test below would pass for nothing.
    assert {
        "dynamodb:Query",
        "dynamodb:BatchWriteItem",
        "dynamodb:ConditionCheckItem",
        "dynamodb:PutItem",
        "ses:SendEmail",
        "ses:GetSendQuota",
        "sns:Publish",
        "ssm:GetParameter",
        "s3:GetObject",
    } <= scanned_actions()


def test_every_action_the_code_calls_is_granted():
    missing = scanned_actions() - granted().keys()
    assert not missing, f"the policy (infra/iam.py) does not grant: {sorted(missing)}"


def test_nothing_is_granted_that_the_code_does_not_call():
    extra = granted().keys() - scanned_actions() - GRANTED_FOR_AWS
    assert not extra, f"granted but never called: {sorted(extra)}"


def test_every_grant_names_its_resource():
    allowed = granted()
    assert all("*" not in action for action in allowed)
    wildcards = {action for action, resources in allowed.items() if "*" in resources}
    assert wildcards == {"ses:GetSendQuota"}  # account-level: IAM has no resource for it
    assert allowed["dynamodb:PutItem"] == [f"arn:aws:dynamodb:eu-west-1:123456789012:table/{OUTPUTS['LeadsTableName']}"]
    assert allowed["dynamodb:Query"][1].endswith("/index/*")
    assert allowed["sqs:SendMessage"] == [OUTPUTS["StreamFailuresQueueArn"]]  # the mapping's on-failure queue only
    assert allowed["ssm:GetParameter"] == [
        "arn:aws:ssm:eu-west-1:123456789012:parameter/trellis/spring/token-key",
        "arn:aws:ssm:eu-west-1:123456789012:parameter/trellis/spring/admin-token",
    ]


@pytest.fixture
def recorded(rt) -> set[str]:
    """The IAM actions of every AWS call the app makes while the fixture's test runs."""
    actions: set[str] = set()

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name  # params: the call's own, before serialising
        if model.name == "TransactWriteItems":
            for item in params.get("TransactItems", []):
                actions.update(f"dynamodb:{TRANSACTION_PARTS[part]}" for part in item)
        else:
            actions.add(iam_action(service, _snake(model.name)))

    for client in (aws.dynamodb(), aws.sesv2(), aws.ses_v1(), aws.sns(), aws.s3()):
        client.meta.events.register("before-parameter-build", record)
    return actions


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def test_a_whole_campaign_loop_calls_nothing_the_scan_missed(client, recorded, deliver, tick, clock):
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for form, email in (("newsletter", "ann@example.com"), ("ebook", "bob@example.com")):
        fields = {"email": email, "first_name": "X", "consent": True}
        assert post_json(client, f"/forms/{form}", fields).status_code == 200
    deliver()
    clock.advance(3 * 86400)
    tick()
    deliver()
    for path in ("/admin/leads", "/admin/reports/funnel", "/admin/export/leads.csv"):
        assert client.http.get(path, headers=auth).status_code == 200
    assert client.http.delete("/admin/leads/ann@example.com", headers=auth).status_code == 200
    spend = {"utm_source": "g", "utm_medium": "c", "amount": 1}
    assert (
        client.http.put(
            "/admin/reports/spend", headers={**auth, "Content-Type": "application/json"}, body=json.dumps(spend)
        ).status_code
        == 200
    )

    assert {"ses:SendEmail", "dynamodb:BatchWriteItem", "dynamodb:ConditionCheckItem"} <= recorded
    assert recorded <= scanned_actions()
