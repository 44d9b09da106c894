"""The least-privilege policy of a campaign stage's Lambda role (``autogen_policy: false``).

Chalice's policy generator misses calls made through helpers (``Store._call("query", ...)``),
transactions and SES v2, and grants on ``*``. This policy names each action the code calls on
the one resource it calls it on; ``tests/test_iam_policy.py`` scans the code's boto3 calls and
fails when one is missing here, or when this grants an action nothing calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
LOG_ACTIONS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")


def lambda_policy(
    *, region: str, account: str, outputs: Mapping[str, str], sender: str, secret_parameters: Sequence[str]
) -> dict[str, Any]:
    """The role policy for one stage, from its infra stack's outputs.

    ``sender`` is the campaign's from address: SES checks the send against its identity (the
    address or its domain, whichever is verified) and the configuration set.
    ``secret_parameters``: the SSM SecureStrings of the token key and the admin token.
    """
    table = f"arn:aws:dynamodb:{region}:{account}:table/{outputs['LeadsTableName']}"
    ses = f"arn:aws:ses:{region}:{account}"
    domain = sender.rpartition("@")[2]
    parameters = [f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}" for name in secret_parameters]

    def allow(sid: str, actions: tuple[str, ...], resources: list[str], **extra: Any) -> dict[str, Any]:
        return {"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": resources, **extra}

    return {
        "Version": "2012-10-17",
        "Statement": [
            allow("LeadsTable", TABLE_ACTIONS, [table]),
            allow("LeadsTableIndexes", INDEX_ACTIONS, [f"{table}/index/*"]),
            allow("LeadsTableStream", STREAM_ACTIONS, [outputs["LeadsTableStreamArn"]]),
            allow("StreamFailures", DESTINATION_ACTIONS, [outputs["StreamFailuresQueueArn"]]),
            allow("MagnetAssets", ASSET_ACTIONS, [f"arn:aws:s3:::{outputs['AssetsBucketName']}/*"]),
            allow(
                "SendNurtureEmail",
                SEND_ACTIONS,
                [
                    f"{ses}:identity/{sender}",
                    f"{ses}:identity/{domain}",
                    f"{ses}:configuration-set/{outputs['ConfigurationSetName']}",
                ],
            ),
            allow("ReadSendRate", QUOTA_ACTIONS, ["*"]),
            allow("NotifySales", PUBLISH_ACTIONS, [outputs["SalesTopicArn"]]),
            allow("ReadSecrets", PARAMETER_ACTIONS, parameters),
            # The SecureStrings are encrypted with the account's aws/ssm key: decrypt only via SSM.
            allow(
                "DecryptSecrets",
                ("kms:Decrypt",),
                [f"arn:aws:kms:{region}:{account}:key/*"],
                Condition={"StringEquals": {"kms:ViaService": f"ssm.{region}.amazonaws.com"}},
            ),
            allow("Logs", LOG_ACTIONS, [f"arn:aws:logs:{region}:{account}:*"]),
        ],
    }
