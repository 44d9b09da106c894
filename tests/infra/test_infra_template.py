"""infra/trellis.yaml: cfn-lint clean, its alarms on the metrics the app really emits, its data retained."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.api import lint_file
from cfnlint.decode.decode import decode_str
from moto import mock_aws

from chalicelib.observability import METRIC_NAMES, NAMESPACE, STAGE_DIMENSION
from infra.settings import CAMPAIGN_TAG, LOG_RETENTION_CHOICES, LOG_RETENTION_DAYS, STAGE_TAG
from twin import stack

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "trellis.yaml"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, errors = decode_str(TEMPLATE.read_text())
    assert not errors and decoded is not None
    return decoded


def _alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def _metric_stats(alarm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {query["Id"]: query["MetricStat"] for query in alarm.get("Metrics", []) if "MetricStat" in query}


def test_cfn_lint_finds_nothing():
    matches = lint_file(TEMPLATE)  # errors and warnings, as `cfn-lint infra/trellis.yaml`
    assert not matches, "\n".join(f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches)


def test_the_rate_alarms_read_the_apps_own_metrics(template):
    alarms = _alarms(template)
    stage = {"Name": STAGE_DIMENSION, "Value": {"Ref": "Stage"}}
    app_metrics = [
        (name, stat["Metric"])
        for name, alarm in alarms.items()
        for stat in _metric_stats(alarm).values()
        if stat["Metric"]["Namespace"] == NAMESPACE
    ]
    assert {name for name, _ in app_metrics} == {"BounceRateAlarm", "ComplaintRateAlarm"}
    for _, metric in app_metrics:
        assert metric["MetricName"] in METRIC_NAMES
        assert metric["Dimensions"] == [stage]  # EMF's one dimension set: exactly Stage

    for name, numerator, threshold, ses_review in (
        ("BounceRateAlarm", "Bounces", 4, 5),
        ("ComplaintRateAlarm", "Complaints", 0.08, 0.1),
    ):
        alarm = alarms[name]
        stats = _metric_stats(alarm)
        assert {s["Metric"]["MetricName"] for s in stats.values()} == {numerator, "EmailsSent"}
        assert all((s["Period"], s["Stat"]) == (3600, "Sum") for s in stats.values())
        (result,) = [q for q in alarm["Metrics"] if q.get("ReturnData")]
        assert result["Expression"].startswith("IF(FILL(sent, 0) >= 20, 100 * ")  # percent, of 20+ sends only
        assert alarm["Threshold"] == threshold < ses_review  # earlier than SES's review
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_the_lambda_alarms_name_the_functions_chalice_deploys(template):
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    functions = {n.name for n in ast.parse((ROOT / "app.py").read_text()).body if isinstance(n, ast.FunctionDef)}
    alarms = _alarms(template)
    watched = {
        name: (alarm["MetricName"], alarm["Dimensions"][0]["Value"]["Fn::Sub"])
        for name, alarm in alarms.items()
        if alarm.get("Namespace") == "AWS/Lambda"
    }
    assert watched == {
        "DispatcherErrorsAlarm": ("Errors", "trellis-${Stage}-dispatch"),
        "StreamHandlerErrorsAlarm": ("Errors", "trellis-${Stage}-on_lead_change"),
        "StreamIteratorAgeAlarm": ("IteratorAge", "trellis-${Stage}-on_lead_change"),
    }
    assert config["app_name"] == "trellis" and {"dispatch", "on_lead_change"} <= functions
    assert alarms["StreamFailuresAlarm"]["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["StreamFailuresQueue", "QueueName"]}}
    ]
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmsTopic"}]
        assert alarm["TreatMissingData"] == "notBreaching"


def test_only_the_data_outlives_the_stack(template):
    resources = template["Resources"]
    retained = {
        name for name, r in resources.items() if "Retain" in (r.get("DeletionPolicy"), r.get("UpdateReplacePolicy"))
    }
    assert retained == {"LeadsTable", "AssetsBucket"}
    for name in retained:
        assert (resources[name]["DeletionPolicy"], resources[name]["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert resources["AlarmsEmailSubscription"]["Condition"] == "HasAlarmEmail"
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""


def test_moto_creates_the_stack_with_the_failures_queue_and_the_alarms_topic():
    with mock_aws():
        session = boto3.session.Session(region_name="eu-west-1")
        outputs = stack.deploy("spring", session)  # moto skips the alarms and the subscription (a warning each)
        queue = session.client("sqs").get_queue_url(QueueName="trellis-spring-stream-failures")["QueueUrl"]
        attributes = session.client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        topics = {t["TopicArn"] for t in session.client("sns").list_topics()["Topics"]}
    assert outputs["StreamFailuresQueueArn"] == attributes["QueueArn"]
    assert (attributes["SqsManagedSseEnabled"], attributes["MessageRetentionPeriod"]) == ("true", str(14 * 86400))
    assert outputs["AlarmsTopicArn"] in topics
    assert outputs["AlarmsTopicArn"].endswith(":trellis-spring-alarms")


def _taggable(resource_type: str) -> bool:
    """Whether CloudFormation's schema of the type has a Tags property (cfn-lint's copy of it)."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", resource_type).schema
    return "Tags" in schema.get("properties", {})


def test_every_taggable_resource_carries_the_stage_and_campaign_tags(template):
    stage_tag = {"Key": STAGE_TAG, "Value": {"Ref": "Stage"}}
    campaign_tag = {"Key": CAMPAIGN_TAG, "Value": {"Fn::If": ["HasCampaign", {"Ref": "Campaign"}, {"Ref": "Stage"}]}}
    taggable = {name: r for name, r in template["Resources"].items() if _taggable(r["Type"])}
    assert {"LeadsTable", "AssetsBucket", "StreamFailuresQueue", "AlarmsTopic", "BounceRateAlarm"} <= set(taggable)
    for name, resource in taggable.items():
        assert resource["Properties"].get("Tags") == [stage_tag, campaign_tag], name
    assert not _taggable("AWS::SNS::TopicPolicy")  # the check can say no


def test_log_retention_is_a_stage_parameter_defaulting_to_the_settings(template):
    parameter = template["Parameters"]["LogRetentionDays"]
    assert parameter["Default"] == LOG_RETENTION_DAYS == 30
    assert tuple(parameter["AllowedValues"]) == LOG_RETENTION_CHOICES
    assert template["Outputs"]["LogRetentionDays"]["Value"] == {"Ref": "LogRetentionDays"}


def test_moto_tags_the_table_and_queue_with_the_stage_and_a_default_campaign():
    with mock_aws():
        session = boto3.session.Session(region_name="eu-west-1")
        outputs = stack.deploy("autumn", session)  # no Campaign given: the stage's name
        table = session.client("dynamodb").describe_table(TableName=outputs["LeadsTableName"])["Table"]
        table_tags = session.client("dynamodb").list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
        queue = session.client("sqs").get_queue_url(QueueName="trellis-autumn-stream-failures")["QueueUrl"]
        queue_tags = session.client("sqs").list_queue_tags(QueueUrl=queue)["Tags"]
    assert {t["Key"]: t["Value"] for t in table_tags} == {STAGE_TAG: "autumn", CAMPAIGN_TAG: "autumn"}
    assert queue_tags == {STAGE_TAG: "autumn", CAMPAIGN_TAG: "autumn"}
    assert outputs["LogRetentionDays"] == "30"
