"""The twin's stream pump delivers records exactly as Lambda does, and retries a failed batch
(whole, or from the record a partial batch response names)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from tests.helpers import post_json
from twin.pump import StreamPump, StreamReader


def test_handler_sees_lambda_shaped_records(client, settings):
    reader = StreamReader(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), settings.table_name)
    seen: list[dict[str, Any]] = []
    pump = StreamPump(reader, lambda event, context: seen.extend(event["Records"]))

    post_json(client, "/forms/newsletter", {"email": "p@example.com", "consent": True})
    delivered = pump.pump_once()

    assert delivered == len(seen)
    # moto emits a transaction's upsert as two INSERTs (DynamoDB emits one); the handler is
    # idempotent either way, so only which items arrived matters here.
    kinds = {r["dynamodb"]["Keys"]["sk"]["S"].split("#")[0] for r in seen}
    assert kinds == {"PROFILE", "EVENT", "ENROL"}
    for record in seen:
        assert record["eventSourceARN"] == reader.stream_arn
        assert record["eventSource"] == "aws:dynamodb"
        assert record["eventName"] == "INSERT"
        assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
        assert "NewImage" in record["dynamodb"]
    assert pump.pump_once() == 0  # nothing new: nothing delivered twice


def test_failed_batch_is_redelivered_whole_then_the_pump_moves_on(client, settings):
    reader = StreamReader(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), settings.table_name)
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky(event: dict[str, Any], context: Any) -> None:
        calls.append(len(event["Records"]))
        if len(calls) < 3:
            raise RuntimeError("handler crashed")

    pump = StreamPump(reader, flaky, sleep=sleeps.append)
    post_json(client, "/forms/newsletter", {"email": "q@example.com", "consent": True})

    pump.pump_once()

    assert len(calls) == 3 and len(set(calls)) == 1  # the same whole batch, until it succeeded
    assert len(sleeps) == 2 and sleeps[0] < sleeps[1]  # with backoff
    assert pump.failures == []


def test_a_batch_failing_every_time_is_reported_not_retried_forever(client, settings):
    reader = StreamReader(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), settings.table_name)

    def broken(event: dict[str, Any], context: Any) -> None:
        raise RuntimeError("always")

    pump = StreamPump(reader, broken, max_attempts=3, sleep=lambda _: None)
    post_json(client, "/forms/newsletter", {"email": "r@example.com", "consent": True})

    pump.pump_once()

    assert pump.failures == ["RuntimeError: always"]


def test_a_partial_batch_answer_resumes_from_the_named_record(client, settings):
    reader = StreamReader(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), settings.table_name)
    deliveries: list[list[str]] = []

    def fails_the_second_record_once(event: dict[str, Any], context: Any) -> dict[str, Any]:
        numbers = [r["dynamodb"]["SequenceNumber"] for r in event["Records"]]
        deliveries.append(numbers)
        if len(deliveries) == 1:
            return {"batchItemFailures": [{"itemIdentifier": numbers[1]}]}
        return {"batchItemFailures": []}

    pump = StreamPump(reader, fails_the_second_record_once, sleep=lambda _: None)
    post_json(client, "/forms/newsletter", {"email": "s@example.com", "consent": True})

    pump.pump_once()

    first, second = deliveries
    assert len(first) >= 3
    assert second == first[1:]  # resumed at the failed record, not from the start
    assert pump.failures == []


def test_an_unknown_item_identifier_fails_the_whole_batch_as_lambda_does(client, settings):
    reader = StreamReader(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), settings.table_name)
    deliveries: list[int] = []

    def names_a_record_not_in_the_batch(event: dict[str, Any], context: Any) -> dict[str, Any]:
        deliveries.append(len(event["Records"]))
        return {"batchItemFailures": [{"itemIdentifier": "0"}]}

    pump = StreamPump(reader, names_a_record_not_in_the_batch, max_attempts=3, sleep=lambda _: None)
    post_json(client, "/forms/newsletter", {"email": "t@example.com", "consent": True})

    pump.pump_once()

    assert len(deliveries) == 3 and len(set(deliveries)) == 1  # the whole batch, each time
    assert pump.failures == ["batchItemFailures"]


def test_campaign_copy_follows_the_console_port(tmp_path):
    from chalicelib.config import load_campaign
    from twin.run import campaign_for_console

    directory = campaign_for_console("demo", 18001, tmp_path / "campaigns")

    packaged, served = load_campaign("demo"), load_campaign("demo", directory)
    newsletter = served.forms["newsletter"]
    assert newsletter.thank_you_url == "http://127.0.0.1:18001/thanks.html"
    assert newsletter.allowed_origins == ["http://127.0.0.1:18001", "http://localhost:18001"]
    assert served.forms["ebook"].thank_you_url == "http://127.0.0.1:18001/ebook-thanks.html"
    # Nothing else differs.
    for form_id, form in packaged.forms.items():
        changed = {"thank_you_url", "allowed_origins"}
        assert served.forms[form_id].model_dump(exclude=changed) == form.model_dump(exclude=changed)
    assert served.model_dump(exclude={"forms"}) == packaged.model_dump(exclude={"forms"})


def test_a_load_test_may_lift_the_per_address_event_limit_of_the_twins_copy_only(tmp_path):
    # Under chalice local every visitor is 127.0.0.1: the soak lifts that one limit, nothing else.
    from chalicelib.config import load_campaign
    from twin.run import EVENTS_PER_ADDRESS_ENV, TwinConfig, TwinError, campaign_for_console

    config = TwinConfig.from_env({EVENTS_PER_ADDRESS_ENV: "100000"})
    directory = campaign_for_console("demo", 18001, tmp_path / "campaigns", config.events_per_address_per_minute)

    packaged, served = load_campaign("demo"), load_campaign("demo", directory)
    assert served.rate_limits.events_per_address_per_minute == 100_000
    assert served.rate_limits.events_per_lead_per_minute == packaged.rate_limits.events_per_lead_per_minute
    assert served.scoring == packaged.scoring
    assert TwinConfig.from_env({}).events_per_address_per_minute is None
    for bad in ("0", "-1", "many"):
        with pytest.raises(TwinError, match=EVENTS_PER_ADDRESS_ENV):
            TwinConfig.from_env({EVENTS_PER_ADDRESS_ENV: bad})


def test_the_twin_may_stand_in_for_a_production_send_quota():
    from twin.run import MAX_SEND_RATE_ENV, TwinConfig, TwinError

    assert TwinConfig.from_env({MAX_SEND_RATE_ENV: "14"}).max_send_rate == 14.0
    assert TwinConfig.from_env({}).max_send_rate is None  # moto's answer to GetSendQuota, as SES's
    for bad in ("0", "-3", "fast", "inf", "nan"):
        with pytest.raises(TwinError, match=MAX_SEND_RATE_ENV):
            TwinConfig.from_env({MAX_SEND_RATE_ENV: bad})
