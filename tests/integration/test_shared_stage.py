"""The tests share one deployed stage per process (testkit.world.SharedStage): each test must get
it exactly as a fresh CloudFormation deploy leaves it, seeing nothing an earlier test wrote."""

from __future__ import annotations

import json
from typing import Any

import boto3
from moto import mock_aws

from testkit.world import SENDER, SharedStage
from twin import stack
from twin.pump import StreamReader


def _world(outputs: dict[str, str]) -> dict[str, Any]:
    """What any test can observe of the account, through the APIs and moto's own records; the
    stage's generated names (its bucket's suffix, its stream's label) written as the output naming them."""
    from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
    from moto.dynamodbstreams.models import dynamodbstreams_backends
    from moto.ses.models import ses_backends
    from moto.sns.models import sns_backends

    ddb, s3, sqs, sns = boto3.client("dynamodb"), boto3.client("s3"), boto3.client("sqs"), boto3.client("sns")
    ses, sesv2, cloudwatch = boto3.client("ses"), boto3.client("sesv2"), boto3.client("cloudwatch")
    tables = ddb.list_tables()["TableNames"]
    queues = sqs.list_queues().get("QueueUrls", [])
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    ses_backend = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    topics = [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    observed = {
        "tables": {
            name: {
                "items": ddb.scan(TableName=name, Select="COUNT", ConsistentRead=True)["Count"],
                "indexes": sorted(
                    i["IndexName"]
                    for i in ddb.describe_table(TableName=name)["Table"].get("GlobalSecondaryIndexes", [])
                ),
                "ttl": ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"],
                "stream_records": len(StreamReader(ddb, boto3.client("dynamodbstreams"), name).read())
                if "LatestStreamArn" in ddb.describe_table(TableName=name)["Table"]
                else None,
            }
            for name in tables
        },
        "shard_iterators": sum(len(b.shard_iterators) for b in dynamodbstreams_backends[DEFAULT_ACCOUNT_ID].values()),
        "sent_emails": (len(ses_backend.sent_messages), ses_backend.sent_message_count),
        "identities": ses.list_identities()["Identities"],
        "configuration_sets": sesv2.list_configuration_sets().get("ConfigurationSets", []),
        "topics": sorted(topics),
        "subscriptions": sorted(s["Endpoint"] for s in sns.list_subscriptions()["Subscriptions"]),
        "notifications": sum(
            len(t.sent_notifications) for t in sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].topics.values()
        ),
        "queues": {
            url: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
            for url in queues
        },
        "buckets": {name: s3.list_objects_v2(Bucket=name)["KeyCount"] for name in buckets},
        "parameters": [p["Name"] for p in boto3.client("ssm").describe_parameters()["Parameters"]],
        "metrics": cloudwatch.list_metrics()["Metrics"],
        "alarms": [a["AlarmName"] for a in cloudwatch.describe_alarms()["MetricAlarms"]],
        "log_groups": [g["logGroupName"] for g in boto3.client("logs").describe_log_groups()["logGroups"]],
        "roles": [r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]],
    }
    text = json.dumps(observed, sort_keys=True, default=str)
    for key, value in sorted(outputs.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, f"<{key}>")
    named: dict[str, Any] = json.loads(text)
    return named


def _dirty(outputs: dict[str, str]) -> None:
    """Write something everywhere a test can."""
    table, topic = outputs["LeadsTableName"], outputs["SalesTopicArn"]
    boto3.client("dynamodb").put_item(TableName=table, Item={"pk": {"S": "LEAD#x"}, "sk": {"S": "PROFILE"}})
    boto3.client("dynamodb").create_table(
        TableName="other",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    StreamReader(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), table).read()
    boto3.client("ses").send_email(
        Source=SENDER,
        Destination={"ToAddresses": ["someone@example.com"]},
        Message={"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}},
    )
    boto3.client("ses").verify_email_identity(EmailAddress="other@example.com")
    sqs = boto3.client("sqs")
    inbox = sqs.create_queue(QueueName="sales-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)
    boto3.client("sns").publish(TopicArn=topic, Message="{}")
    failures = sqs.get_queue_url(QueueName=outputs["StreamFailuresQueueArn"].rpartition(":")[2])["QueueUrl"]
    sqs.send_message(QueueUrl=failures, MessageBody="failed batch")
    boto3.client("s3").put_object(Bucket=outputs["AssetsBucketName"], Key="exports/x.json", Body=b"{}")
    boto3.client("s3").create_bucket(Bucket="another-bucket")
    boto3.client("ssm").put_parameter(Name="/trellis/test/token-key", Value="s" * 48, Type="SecureString")
    cloudwatch = boto3.client("cloudwatch")
    cloudwatch.put_metric_data(Namespace="Trellis", MetricData=[{"MetricName": "Sent", "Value": 1.0}])
    cloudwatch.put_metric_alarm(
        AlarmName="extra", MetricName="Sent", Namespace="Trellis", Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    boto3.client("logs").create_log_group(logGroupName="/aws/lambda/trellis-test-dispatch")
    boto3.client("iam").create_role(RoleName="extra", AssumeRolePolicyDocument="{}")


def test_a_fresh_cloudformation_deploy_is_the_stage_every_test_gets(shared_stage: SharedStage) -> None:
    """The parity check: the stage deployed through CloudFormation (twin.stack.deploy, as the twin
    deploys it) in a fresh moto is what a test gets from the shared stage after another test
    wrote everywhere."""
    with shared_stage.use() as outputs:
        _dirty(outputs)
    with shared_stage.use() as outputs:
        shared = _world(outputs)

    with mock_aws():
        session = boto3.session.Session(region_name="us-east-1")
        fresh_outputs = stack.deploy("test", session)
        stack.verify_sender(session, SENDER)
        fresh = _world(fresh_outputs)

    assert fresh == shared
    assert set(fresh_outputs) == set(outputs)
    # What the stack deploys, as a test sees it.
    [table] = fresh["tables"].values()
    assert table == {
        "items": 0,
        "indexes": table["indexes"],
        "ttl": {"TimeToLiveStatus": "ENABLED", "AttributeName": table["ttl"]["AttributeName"]},
        "stream_records": 0,
    }
    assert table["indexes"]  # the by_created and due indexes, among others
    assert fresh["identities"] == [SENDER.rpartition("@")[2]]
    assert fresh["configuration_sets"] == ["<ConfigurationSetName>"]
    assert sorted(fresh["topics"]) == sorted(["<SalesTopicArn>", "<SesEventsTopicArn>", "<AlarmsTopicArn>"])
    assert list(fresh["buckets"]) == ["<AssetsBucketName>"]
    assert len(fresh["queues"]) == 1


def test_nothing_a_test_wrote_reaches_the_next(shared_stage: SharedStage) -> None:
    with shared_stage.use() as outputs:
        as_deployed = _world(outputs)
        deploys = shared_stage.deploys
        _dirty(outputs)
        assert _world(outputs) != as_deployed  # _dirty writes what _world observes
    for _ in range(2):  # and again: a reset stage resets as well
        with shared_stage.use() as outputs:
            assert _world(outputs) == as_deployed
            _dirty(outputs)  # fails if the last test's queue, bucket, table or parameter were left
    assert shared_stage.deploys == deploys  # reset, not deployed again


def test_a_test_that_resets_moto_itself_gets_a_stage_deployed_again(shared_stage: SharedStage) -> None:
    with shared_stage.use() as outputs:
        as_deployed = _world(outputs)
    with mock_aws():  # a test's own moto: it starts empty, and empties moto when it ends
        assert boto3.client("dynamodb").list_tables()["TableNames"] == []
    deploys = shared_stage.deploys
    with shared_stage.use() as outputs:
        assert _world(outputs) == as_deployed
    assert shared_stage.deploys == deploys + 1
