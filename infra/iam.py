"""The least-privilege policy of each of a campaign stage's Lambda functions (``autogen_policy: false``).

Chalice gives every function its own role (``trellis-<stage>-<function>``) and reads each one's
policy file from the stage's ``lambda_functions`` (``iam_policy_file``). Chalice's policy
generator misses calls made through helpers (``Store._call("query", ...)``), transactions and
SES v2, and grants on ``*``; these policies name each action a function's code path calls, on the
one resource it calls it on, and nothing else: the admin authorizer reads the admin token and
writes its logs. ``tests/infra/test_iam_policy.py`` scans the code's boto3 calls (each must be granted
to some function) and runs a whole campaign loop, each handler's real calls checked against its
own policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.models import RESERVED_ASSET_PREFIX
from chalicelib.nurture.fanout import SHARD_FUNCTION
from infra.settings import LAMBDA_FUNCTIONS

APP_NAME = "trellis"  # Chalice's app_name: functions are named <app>-<stage>-<function>
FUNCTIONS = tuple(LAMBDA_FUNCTIONS)

# What the code does to each resource (IAM actions). A transaction needs the actions of its parts.
TABLE_ACTIONS = (
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
)
# SES feedback suppresses the address, notes the event on the lead and counts it once (a
# transaction of a marker Put, an Update and a ConditionCheck; uncounting Deletes the marker).
FEEDBACK_TABLE_ACTIONS = (
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
)
INDEX_ACTIONS = ("dynamodb:Query",)
# Lambda's event source mapping reads the stream with the function's role.
STREAM_ACTIONS = ("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams")
# ...and, when a batch fails every retry, describes it on the stream-failures queue (its
# on-failure destination, infra/after_deploy.py), again with the function's role.
DESTINATION_ACTIONS = ("sqs:SendMessage",)
ASSET_ACTIONS = ("s3:GetObject",)  # the presigned download links are signed with the role's credentials
SEND_ACTIONS = ("ses:SendEmail",)  # SES v2 SendEmail (raw MIME content)
QUOTA_ACTIONS = ("ses:GetSendQuota",)  # account-level: only "*" exists as its resource
PUBLISH_ACTIONS = ("sns:Publish",)
PARAMETER_ACTIONS = ("ssm:GetParameter",)
INVOKE_ACTIONS = ("lambda:InvokeFunction",)  # the tick starts the parts of a fanned-out tick
LOG_ACTIONS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")

# What each function's code path touches (the grants below), from what its handler calls:
# api_handler: every route (capture writes and magnet links, tracking, unsubscribe, the admin
#   API and dashboard: reads, erasure, exports, reports; sessions signed with the token key and
#   bound to the admin token);
# admin_auth: the admin token, nothing else;
# dispatch: due steps (rendered with signed links and magnet links), sends and the send rate,
#   and due handoff retries (the owner's email, the sales topic); it starts the parts of a
#   fanned-out tick (dispatch_shard), which do the same work on their shards;
# on_lead_change: the stream (read by Lambda with this role, failures to its queue), scoring,
#   handoffs, the tally and the dispatcher's first sends (no index: only the admin's lead lists
#   and the dispatcher's tick query one);
# on_ses_feedback: suppressions, the lead's timeline and the counts.
FUNCTION_GRANTS: dict[str, tuple[str, ...]] = {
    "api_handler": ("table", "indexes", "assets", "token_key", "admin_token"),
    "dispatch": ("table", "indexes", "assets", "send", "quota", "publish", "token_key", "start_parts"),
    "dispatch_shard": ("table", "indexes", "assets", "send", "quota", "publish", "token_key"),
    "on_lead_change": ("table", "stream", "failures", "assets", "send", "quota", "publish", "token_key"),
    "on_ses_feedback": ("feedback_table",),
    "admin_auth": ("admin_token",),
}


def shard_function_name(stage: str) -> str:
    """The function a fanned-out tick starts its parts in (the stage's TRELLIS_SHARD_FUNCTION)."""
    return f"{APP_NAME}-{stage}-{SHARD_FUNCTION}"


def log_group(stage: str, function: str) -> str:
    """The function's log group, as Lambda names it for a function Chalice named."""
    return f"/aws/lambda/{APP_NAME}-{stage}-{function}"


def function_policies(
    *,
    region: str,
    account: str,
    stage: str,
    outputs: Mapping[str, str],
    sender: str,
    token_key_parameter: str,
    admin_token_parameter: str,
) -> dict[str, dict[str, Any]]:
    """Each function's role policy (by its name in infra/settings.py), from the stage's infra outputs.

    ``sender`` is the campaign's from address: SES checks the send against its identity (the
    address or its domain, whichever is verified) and the configuration set.
    ``*_parameter``: the SSM SecureStrings' names.
    """
    table = f"arn:aws:dynamodb:{region}:{account}:table/{outputs['LeadsTableName']}"
    ses = f"arn:aws:ses:{region}:{account}"
    domain = sender.rpartition("@")[2]

    def parameter(name: str) -> str:
        return f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}"

    def allow(sid: str, actions: tuple[str, ...], resources: list[str], **extra: Any) -> dict[str, Any]:
        return {"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": resources, **extra}

    bucket = f"arn:aws:s3:::{outputs['AssetsBucketName']}"

    grants = {
        "table": allow("LeadsTable", TABLE_ACTIONS, [table]),
        "feedback_table": allow("LeadsTable", FEEDBACK_TABLE_ACTIONS, [table]),
        "indexes": allow("LeadsTableIndexes", INDEX_ACTIONS, [f"{table}/index/*"]),
        "stream": allow("LeadsTableStream", STREAM_ACTIONS, [outputs["LeadsTableStreamArn"]]),
        "failures": allow("StreamFailures", DESTINATION_ACTIONS, [outputs["StreamFailuresQueueArn"]]),
        "assets": allow("MagnetAssets", ASSET_ACTIONS, [f"{bucket}/*"]),
        "send": allow(
            "SendEmail",
            SEND_ACTIONS,
            [
                f"{ses}:identity/{sender}",
                f"{ses}:identity/{domain}",
                f"{ses}:configuration-set/{outputs['ConfigurationSetName']}",
            ],
        ),
        "quota": allow("ReadSendRate", QUOTA_ACTIONS, ["*"]),
        "publish": allow("NotifySales", PUBLISH_ACTIONS, [outputs["SalesTopicArn"]]),
        "start_parts": allow(
            "StartTickParts",
            INVOKE_ACTIONS,
            [f"arn:aws:lambda:{region}:{account}:function:{shard_function_name(stage)}"],
        ),
    }
    secrets = {"token_key": parameter(token_key_parameter), "admin_token": parameter(admin_token_parameter)}

    policies: dict[str, dict[str, Any]] = {}
    for function, names in FUNCTION_GRANTS.items():
        statements = [grants[name] for name in names if name in grants]
        # The deploy state lives under the reserved prefix (infra/deploy.py): no function may
        # read it, whatever a download link names. An explicit Deny wins over the Allow above.
        if "assets" in names:
            reserved = f"{bucket}/{RESERVED_ASSET_PREFIX}*"
            statements.append({**allow("NotTheDeployState", ASSET_ACTIONS, [reserved]), "Effect": "Deny"})
        read = [secrets[name] for name in names if name in secrets]
        if read:
            statements.append(allow("ReadSecrets", PARAMETER_ACTIONS, read))
            # The SecureStrings are encrypted with the account's aws/ssm key: decrypt only via SSM.
            statements.append(
                allow(
                    "DecryptSecrets",
                    ("kms:Decrypt",),
                    [f"arn:aws:kms:{region}:{account}:key/*"],
                    Condition={"StringEquals": {"kms:ViaService": f"ssm.{region}.amazonaws.com"}},
                )
            )
        group = f"arn:aws:logs:{region}:{account}:log-group:{log_group(stage, function)}"
        statements.append(allow("OwnLogs", LOG_ACTIONS, [group, f"{group}:*"]))
        policies[function] = {"Version": "2012-10-17", "Statement": statements}
    return policies
