"""Each Lambda function's role policy grants what its code calls, on its resources, and no more.

Two checks: the code's boto3 calls found by reading it (an AST scan of chalicelib/: each must be
granted to some function, and nothing granted that no code calls), and a whole campaign loop
whose every real AWS call (botocore's before-parameter-build hook, which presigning emits too)
is recorded under the function that made it and checked against THAT function's policy by a
small evaluator of Allow statements (actions and resources matched as IAM does, with ``*``).
Each function runs as in its own Lambda container: its own runtime, built on its first call,
reading its secrets from SSM as deployed.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import dataclasses
import fnmatch
import io
import json
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID

from chalicelib import aws, runtime
from chalicelib.entities import lead_id_for
from chalicelib.models import RESERVED_ASSET_PREFIX
from chalicelib.nurture.dispatcher import Pacer
from chalicelib.nurture.fanout import ShardOrder
from chalicelib.store import DUE_SHARDS
from infra import deploy
from infra.iam import (
    DESTINATION_ACTIONS,
    FUNCTION_GRANTS,
    FUNCTIONS,
    LOG_ACTIONS,
    STREAM_ACTIONS,
    function_policies,
    log_group,
    shard_function_name,
)
from infra.settings import LAMBDA_FUNCTIONS, LAMBDA_RUNTIME
from tests.conftest import ADMIN_TOKEN, TEST_TOKEN_KEY, LambdaContext
from tests.helpers import FORM_HEADERS, post_json

CHALICELIB = Path(__file__).resolve().parents[2] / "chalicelib"
IAM_PREFIX = {
    "dynamodb": "dynamodb",
    "sesv2": "ses",
    "ses": "ses",
    "sns": "sns",
    "ssm": "ssm",
    "s3": "s3",
    "lambda": "lambda",
}
# Which client each attribute holds, where the code keeps one (file, attribute) or anywhere (attribute).
CLIENT_ATTRIBUTES = {
    ("store.py", "_client"): "dynamodb",
    ("assets.py", "_client"): "s3",
    ("*", "_sesv2"): "sesv2",
    ("*", "_ses_v1"): "ses",
    ("*", "_sns"): "sns",
    ("*", "_ssm"): "ssm",
    ("fanout.py", "_lambda"): "lambda",
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

REGION, ACCOUNT, STAGE = "us-east-1", DEFAULT_ACCOUNT_ID, "test"  # the conftest's moto world
SECRETS = {"token_key": f"/trellis/{STAGE}/token-key", "admin_token": f"/trellis/{STAGE}/admin-token"}
# An AWS-managed key's id, for the decryption SSM does on GetParameter(WithDecryption=True).
SSM_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0a1b2c3d-aws-ssm"

Call = tuple[str, str]  # (IAM action, resource ARN)


def policies_for(outputs: dict[str, str]) -> dict[str, dict[str, Any]]:
    return function_policies(
        region=REGION,
        account=ACCOUNT,
        stage=STAGE,
        outputs=outputs,
        sender="hello@demo.trellis.example",
        token_key_parameter=SECRETS["token_key"],
        admin_token_parameter=SECRETS["admin_token"],
    )


EXAMPLE_OUTPUTS = {
    "LeadsTableName": "trellis-test-leads",
    "LeadsTableStreamArn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/trellis-test-leads/stream/2026-11-23T00:00:00.000",
    "AssetsBucketName": "trellis-test-assetsbucket-abc",
    "SalesTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:trellis-test-sales",
    "StreamFailuresQueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:trellis-test-stream-failures",
    "ConfigurationSetName": "trellis-test",
}
POLICIES = policies_for(EXAMPLE_OUTPUTS)


# -- the evaluator -------------------------------------------------------------------------------


def matches(statement: dict[str, Any], action: str, resource: str) -> bool:
    """The statement names the action and the resource (IAM's ``*`` and ``?``, actions
    case-insensitive; conditions are not evaluated: the one there, kms:ViaService, is met by
    SSM's own decryption)."""
    actions = [a.lower() for a in statement["Action"]]
    return any(fnmatch.fnmatchcase(action.lower(), pattern) for pattern in actions) and any(
        fnmatch.fnmatchcase(resource, pattern) for pattern in statement["Resource"]
    )


def allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    """An Allow statement matches and no Deny does (an explicit Deny wins)."""
    effects = {s["Effect"] for s in policy["Statement"] if matches(s, action, resource)}
    assert effects <= {"Allow", "Deny"}
    return effects == {"Allow"}


def refused(policy: dict[str, Any], calls: set[Call]) -> list[Call]:
    return sorted(call for call in calls if not allows(policy, *call))


def test_the_evaluator_refuses_what_a_policy_does_not_grant():
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{EXAMPLE_OUTPUTS['LeadsTableName']}"
    token = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{SECRETS['admin_token']}"
    key = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{SECRETS['token_key']}"
    authorizer = POLICIES["admin_auth"]
    assert allows(authorizer, "ssm:GetParameter", token)
    assert allows(authorizer, "kms:Decrypt", SSM_KEY)
    assert allows(
        authorizer,
        "logs:PutLogEvents",
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/trellis-test-admin_auth:log-stream:x",
    )
    assert not allows(authorizer, "dynamodb:PutItem", table)
    assert not allows(authorizer, "ssm:GetParameter", key)  # the token key is not the authorizer's
    assert not allows(authorizer, "ses:SendEmail", "*")
    assert not allows(authorizer, "sns:Publish", EXAMPLE_OUTPUTS["SalesTopicArn"])
    other_group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/trellis-test-api_handler:log-stream:x"
    assert not allows(authorizer, "logs:PutLogEvents", other_group)  # another function's logs
    # The right action on another resource, and another action on the right resource.
    assert allows(POLICIES["api_handler"], "dynamodb:PutItem", table)
    assert not allows(POLICIES["api_handler"], "dynamodb:PutItem", table.replace("test-leads", "autumn-leads"))
    assert not allows(POLICIES["api_handler"], "dynamodb:Scan", table)
    assert not allows(POLICIES["api_handler"], "ses:SendEmail", f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/x@y.z")
    assert not allows(POLICIES["on_ses_feedback"], "dynamodb:BatchWriteItem", table)
    # A magnet's object may be read; the deploy state kept in the same bucket may not (the Deny).
    bucket = f"arn:aws:s3:::{EXAMPLE_OUTPUTS['AssetsBucketName']}"
    assert allows(POLICIES["dispatch"], "s3:GetObject", f"{bucket}/magnets/guide.pdf")
    assert not allows(POLICIES["dispatch"], "s3:GetObject", f"{bucket}/{RESERVED_ASSET_PREFIX}deployed/test.json")
    assert deploy.STATE_PREFIX.startswith(RESERVED_ASSET_PREFIX)
    assert refused(authorizer, {("ssm:GetParameter", token), ("dynamodb:PutItem", table)}) == [
        ("dynamodb:PutItem", table)
    ]


def test_one_policy_per_function_and_each_grant_names_its_resource():
    assert set(POLICIES) == set(FUNCTION_GRANTS) == set(LAMBDA_FUNCTIONS) == set(FUNCTIONS)
    for function, policy in POLICIES.items():
        statements = {s["Sid"]: s for s in policy["Statement"]}
        assert len(statements) == len(policy["Statement"]), function  # no Sid twice
        assert {s["Effect"] for s in statements.values() if s["Sid"] != "NotTheDeployState"} == {"Allow"}
        wildcards = {sid for sid, s in statements.items() if "*" in s["Resource"]}
        assert wildcards <= {"ReadSendRate"}, function  # ses:GetSendQuota: IAM has no resource for it
        assert all("*" not in action for s in statements.values() for action in s["Action"])
        group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{log_group(STAGE, function)}"
        assert statements["OwnLogs"]["Resource"] == [group, f"{group}:*"]
    # Only the stream handler's role reads the stream and writes to its failures queue.
    streaming = [f for f, p in POLICIES.items() if any(s["Sid"] == "LeadsTableStream" for s in p["Statement"])]
    assert streaming == ["on_lead_change"]
    assert [s["Resource"] for s in POLICIES["on_lead_change"]["Statement"] if s["Sid"] == "StreamFailures"] == [
        [EXAMPLE_OUTPUTS["StreamFailuresQueueArn"]]
    ]
    assert {s["Sid"] for s in POLICIES["admin_auth"]["Statement"]} == {"ReadSecrets", "DecryptSecrets", "OwnLogs"}


# -- the static scan -----------------------------------------------------------------------------


# Where an IAM action is not the operation's name.
ACTION_NAMES = {("lambda", "invoke"): "lambda:InvokeFunction"}


def iam_action(service: str, operation: str) -> str:
    if (service, operation) in ACTION_NAMES:
        return ACTION_NAMES[service, operation]
    return f"{IAM_PREFIX[service]}:{''.join(word.capitalize() for word in operation.split('_'))}"


def scanned_actions() -> set[str]:
    """Every IAM action the code's boto3 calls need, read from the source."""
    actions: set[str] = set()
    for path in sorted(CHALICELIB.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for key in node.keys:
                    if (
                        isinstance(key, ast.Constant)
                        and key.value in TRANSACTION_PARTS
                        and path.relative_to(CHALICELIB).parts[0] in ("store", "store.py")
                    ):
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


def granted_anywhere() -> set[str]:
    return {
        action
        for policy in POLICIES.values()
        for s in policy["Statement"]
        if s["Effect"] == "Allow"
        for action in s["Action"]
    }


def test_the_scan_finds_the_calls_we_know_of():
    # If the scanner stopped seeing calls, the coverage tests below would pass for nothing.
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


def test_every_action_the_code_calls_is_granted_to_some_function():
    missing = scanned_actions() - granted_anywhere()
    assert not missing, f"no function's policy (infra/iam.py) grants: {sorted(missing)}"


def test_nothing_is_granted_that_the_code_does_not_call():
    extra = granted_anywhere() - scanned_actions() - GRANTED_FOR_AWS
    assert not extra, f"granted but never called: {sorted(extra)}"


# -- the whole loop, per function ------------------------------------------------------------------

_function: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("function", default=None)


def _resources(service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """The (IAM action, resource ARN) pairs one call needs."""
    arn = f"arn:aws:{IAM_PREFIX[service]}:{REGION}:{ACCOUNT}"
    action = iam_action(service, _snake(operation))
    if service == "dynamodb":
        if operation == "TransactWriteItems":
            return [
                (f"dynamodb:{TRANSACTION_PARTS[part]}", f"{arn}:table/{body['TableName']}")
                for item in params["TransactItems"]
                for part, body in item.items()
            ]
        if operation in ("BatchWriteItem", "BatchGetItem"):
            return [(action, f"{arn}:table/{table}") for table in params["RequestItems"]]
        table = f"{arn}:table/{params['TableName']}"
        return [(action, f"{table}/index/{params['IndexName']}" if "IndexName" in params else table)]
    if service == "s3":
        return [(action, f"arn:aws:s3:::{params['Bucket']}/{params['Key']}")]
    if service == "sns":
        return [(action, params["TopicArn"])]
    if service == "ssm":
        needed = [(action, f"{arn}:parameter/{params['Name'].lstrip('/')}")]
        return needed + ([("kms:Decrypt", SSM_KEY)] if params.get("WithDecryption") else [])
    if service == "lambda":
        return [(action, f"{arn}:function:{params['FunctionName']}")]
    if operation == "SendEmail":  # SES checks the sending identity and the configuration set
        needed = [(action, f"{arn}:identity/{params['FromEmailAddress']}")]
        if "ConfigurationSetName" in params:
            needed.append((action, f"{arn}:configuration-set/{params['ConfigurationSetName']}"))
        return needed
    return [(action, "*")]  # GetSendQuota: account-level


def _empty_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "")
    return buffer.getvalue()


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


# Grants the whole loop below does not reach, and why they are there all the same.
NOT_REACHED_BY_THE_LOOP = {
    "dispatch": {
        "MagnetAssets": "a due step with a magnet link (the dispatcher presigns it); the loop's due step has none",
        "NotifySales": "a due handoff retry (the handoff's first try, from the stream, succeeds here)",
        "ReadSendRate": "ses:GetSendQuota, read when no send rate is set; the tests give the pacer its rate",
    },
    "dispatch_shard": {
        "MagnetAssets": "as for dispatch",
        "NotifySales": "as for dispatch",
        "ReadSendRate": "as for dispatch",
    },
    "on_lead_change": {
        "ReadSendRate": "as for dispatch: its first sends are paced too",
        "StreamFailures": "Lambda's mapping, not the code, sends a batch that failed every retry to the queue",
    },
}


@dataclasses.dataclass
class Loop:
    calls: dict[str, set[Call]]  # per function
    outside: list[str]  # calls made while no function ran (must stay empty)
    outputs: dict[str, str]


@pytest.fixture
def functions(settings, clock, fake_sleep, stack_outputs, monkeypatch) -> Iterator[Any]:
    """``run(name)``: a context in which the app runs as that Lambda function, in its own
    container (runtime built on first use, secrets from SSM); every AWS call recorded for it."""
    ssm = boto3.client("ssm")  # the test's own client: its calls are not the app's
    ssm.put_parameter(Name=SECRETS["token_key"], Value=TEST_TOKEN_KEY, Type="SecureString")
    ssm.put_parameter(Name=SECRETS["admin_token"], Value=ADMIN_TOKEN, Type="SecureString")
    deployed = dataclasses.replace(
        settings,
        shard_function=shard_function_name(STAGE),
        token_key=b"",
        token_key_parameter=SECRETS["token_key"],
        admin_token=b"",
        admin_token_parameter=SECRETS["admin_token"],
    )
    calls: dict[str, set[Call]] = {name: set() for name in FUNCTIONS}
    outside: list[str] = []
    containers: dict[tuple[str, float], runtime.Runtime] = {}

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        name = _function.get()
        if name is None:
            outside.append(model.name)
        else:
            calls[name].update(_resources(model.service_model.service_name, model.name, params))

    # The function a fanned-out tick starts its parts in: moto accepts an asynchronous invoke of
    # it (and runs nothing: the loop runs the part itself, as dispatch_shard).
    role = boto3.client("iam").create_role(RoleName="part", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    boto3.client("lambda").create_function(
        FunctionName=shard_function_name(STAGE),
        Runtime=LAMBDA_RUNTIME,
        Role=role,
        Handler="app.dispatch_shard",
        Code={"ZipFile": _empty_zip()},
    )
    for client in (aws.dynamodb(), aws.sesv2(), aws.ses_v1(), aws.sns(), aws.s3(), aws.ssm(), aws.lambda_()):
        client.meta.events.register("before-parameter-build", record)

    @contextlib.contextmanager
    def run(name: str, rate: float = 14.0) -> Iterator[None]:
        """``rate``: the send rate its container paces at (SES's default; a higher one, another container)."""
        # The runtime installed before (None: none yet), put back after: calls nest (an admin route
        # runs the authorizer first).
        outer = (_function.set(name), runtime.current() if runtime.pending_metrics() is not None else None)
        try:
            if (name, rate) not in containers:  # a cold start: built (and its secrets read) as this function
                pacer = Pacer(rate, monotonic=fake_sleep.monotonic, sleep=fake_sleep.sleep)
                containers[name, rate] = runtime.Runtime.build(deployed, clock=clock, pacer=pacer)
            runtime.install(containers[name, rate])
            # Lambda writes each invocation's logs to the function's group with its role.
            group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{log_group(STAGE, name)}"
            calls[name].update(
                {("logs:CreateLogStream", f"{group}:log-stream:x"), ("logs:PutLogEvents", f"{group}:log-stream:x")}
            )
            yield
        finally:
            _function.reset(outer[0])
            runtime.install(outer[1])

    # The routes run as api_handler (below), the authorizer API Gateway calls first as admin_auth.
    from app import admin_auth

    authorize = admin_auth.func

    def as_authorizer(request: Any) -> Any:
        with run("admin_auth"):
            return authorize(request)

    monkeypatch.setattr(admin_auth, "func", as_authorizer)
    yield run, Loop(calls, outside, stack_outputs)


def test_each_function_calls_only_what_its_own_policy_grants(client, functions, stream, clock):
    from app import dispatch, dispatch_shard, on_lead_change, on_ses_feedback
    from twin.pump import batches, scheduled_event

    run, loop = functions
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def http(method: str, path: str, status: int, **kwargs: Any) -> Any:
        with run("api_handler"):
            response = client.http.request(method, path, **kwargs)
        assert response.status_code == status, (path, response.body)
        return response

    def deliver() -> int:
        records = stream.read()
        # Lambda's event source mapping reads the stream with the function's role.
        loop.calls["on_lead_change"].update(
            (action, loop.outputs["LeadsTableStreamArn"])
            for action in ("dynamodb:GetRecords", "dynamodb:GetShardIterator")
        )
        for batch in batches(records):
            with run("on_lead_change"):
                on_lead_change({"Records": batch}, LambdaContext())
        return len(records)

    # Capture (a magnet's presigned link on the ebook), the stream's first sends, a hand-raiser's
    # handoff (rescored to SQL: the owner's email and the sales topic), the dispatcher's next step.
    fields = {"email": "ann@example.com", "first_name": "Ann", "consent": True}
    with run("api_handler"):
        assert post_json(client, "/forms/newsletter", fields).status_code == 200
        hot = {"email": "bob@hotlead.example", "first_name": "Bob", "company": "Xylofirm", "consent": True}
        lead_token = json.loads(post_json(client, "/forms/ebook", hot).body)["lead_token"]
    deliver()
    event = {"token": lead_token, "type": "demo_request"}
    http("POST", "/events", 202, headers={"Content-Type": "application/json"}, body=json.dumps(event))
    for _ in range(6):
        if not deliver():
            break
    clock.advance(3 * 86400)
    with run("dispatch"):
        assert dispatch(scheduled_event(), LambdaContext())["sent"] >= 1
    deliver()
    # At a rate of 200/s the tick fans out: it starts eight parts, and moto runs no function, so
    # the loop runs them as dispatch_shard (after a step more is due).
    clock.advance(4 * 86400)
    with run("dispatch", rate=200.0):
        assert dispatch(scheduled_event(), LambdaContext())["fanned_out"] == DUE_SHARDS
    deadline = int(time.time() * 1000) + 60_000
    sent = 0
    for part in range(DUE_SHARDS):
        order = ShardOrder((part,), 25.0, deadline, part, DUE_SHARDS)
        with run("dispatch_shard"):
            sent += dispatch_shard(order.to_event(), LambdaContext())["sent"]
    assert sent >= 1
    deliver()

    # SES feedback: a bounce suppresses the address, noted on the lead and counted.
    bounce = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": "ann@example.com", "diagnosticCode": "smtp; 550 user unknown"}],
        },
        "mail": {"destination": ["ann@example.com"], "headers": [{"name": "To", "value": "ann@example.com"}]},
    }
    with run("on_ses_feedback"):
        on_ses_feedback(client.events.generate_sns_event(message=json.dumps(bounce), subject="SES"), LambdaContext())
    deliver()

    # The admin API (each request authorized by admin_auth first) and the dashboard's session.
    bob = lead_id_for("bob@hotlead.example")
    for path in ("/admin/leads", f"/admin/leads/{bob}", f"/admin/leads/{bob}/export", "/admin/export/leads.csv"):
        http("GET", path, 200, headers=auth)
    for path in ("/admin/reports/funnel", "/admin/reports/sequences"):
        http("GET", path, 200, headers=auth)
    json_auth = {**auth, "Content-Type": "application/json"}
    http("PATCH", f"/admin/leads/{bob}", 200, headers=json_auth, body=json.dumps({"stage": "customer"}))
    spend = {"utm_source": "g", "utm_medium": "c", "amount": 1}
    http("PUT", "/admin/reports/spend", 200, headers=json_auth, body=json.dumps(spend))
    login = http("POST", "/admin/login", 303, headers=FORM_HEADERS, body=f"token={ADMIN_TOKEN}")
    cookie = {k.lower(): v for k, v in login.headers.items()}["set-cookie"].split(";")[0]
    http("GET", "/admin/dashboard", 200, headers={"Cookie": cookie})
    http("DELETE", f"/admin/leads/{lead_id_for('ann@example.com')}", 200, headers=auth)
    deliver()

    calls = loop.calls
    # The loop did reach what each function is there for (else the checks below prove little).
    actions = {name: {action for action, _ in made} for name, made in calls.items()}
    assert {"dynamodb:PutItem", "s3:GetObject", "ssm:GetParameter"} <= actions["api_handler"]
    assert actions["admin_auth"] == {"ssm:GetParameter", "kms:Decrypt", "logs:CreateLogStream", "logs:PutLogEvents"}
    assert {"ses:SendEmail", "sns:Publish", "dynamodb:ConditionCheckItem"} <= actions["on_lead_change"]
    assert {"ses:SendEmail", "dynamodb:Query", "lambda:InvokeFunction"} <= actions["dispatch"]
    assert {"ses:SendEmail", "dynamodb:Query"} <= actions["dispatch_shard"]
    assert {"dynamodb:PutItem", "dynamodb:UpdateItem"} <= actions["on_ses_feedback"]
    assert not loop.outside, f"AWS calls made outside any function: {loop.outside}"

    # Each function's real calls are within its OWN policy.
    policies = policies_for(loop.outputs)
    for name, made in calls.items():
        assert not refused(policies[name], made), (
            f"{name}'s policy (infra/iam.py) refuses {refused(policies[name], made)}"
        )
    # Every grant of each function was used by the loop, or is one of these (so a grant added
    # for nothing fails here).
    unused = {
        name: {
            s["Sid"]
            for s in policies[name]["Statement"]
            if s["Effect"] == "Allow" and not any(matches(s, *call) for call in made)
        }
        for name, made in calls.items()
    }
    assert {name: sids for name, sids in unused.items() if sids} == {
        name: set(reasons) for name, reasons in NOT_REACHED_BY_THE_LOOP.items()
    }
    # ...and not within another's: the authorizer's could not run the stream handler.
    assert refused(policies["admin_auth"], calls["on_lead_change"])
    assert refused(policies["on_ses_feedback"], calls["dispatch"])
    # Every action the loop made is one the scan knows of.
    assert set().union(*actions.values()) - GRANTED_FOR_AWS <= scanned_actions()


def test_a_call_outside_a_functions_policy_fails_the_check():
    # What the whole-loop test does with each function's calls, on one call the authorizer may not make.
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{EXAMPLE_OUTPUTS['LeadsTableName']}"
    made = set(_resources("dynamodb", "PutItem", {"TableName": EXAMPLE_OUTPUTS["LeadsTableName"]}))
    assert made == {("dynamodb:PutItem", table)}
    assert refused(POLICIES["admin_auth"], made) == [("dynamodb:PutItem", table)]
    parts = {"TransactItems": [{"Put": {"TableName": "t"}}, {"ConditionCheck": {"TableName": "t"}}]}
    assert {a for a, _ in _resources("dynamodb", "TransactWriteItems", parts)} == {
        "dynamodb:PutItem",
        "dynamodb:ConditionCheckItem",
    }
    assert re.fullmatch(
        r"arn:aws:ssm:[^:]+:\d+:parameter/trellis/test/admin-token",
        _resources("ssm", "GetParameter", {"Name": SECRETS["admin_token"]})[0][1],
    )


def test_the_dispatchers_memory_is_what_its_fan_out_plans_with():
    from chalicelib.nurture.dispatcher import PART_MEMORY_MB, TICK_MEMORY_MB

    assert LAMBDA_FUNCTIONS["dispatch"]["lambda_memory_size"] == TICK_MEMORY_MB
    assert LAMBDA_FUNCTIONS["dispatch_shard"]["lambda_memory_size"] == PART_MEMORY_MB
