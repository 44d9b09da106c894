"""Read the table's stream from moto and shape each record as Lambda delivers it.

moto's GetRecords records lack ``eventSourceARN`` and give ``ApproximateCreationDateTime`` as a
datetime; Lambda sends the stream ARN and epoch seconds. The tests and the local twin both feed
the stream handler through this, so the handler only ever sees Lambda-shaped records.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

LAMBDA_BATCH_SIZE = 100


class StreamReader:
    def __init__(self, dynamodb: Any, streams: Any, table_name: str, region: str = "us-east-1") -> None:
        self._streams = streams
        self._region = region
        self.stream_arn: str = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
        # The last sequence number read per shard. Each read starts from a fresh iterator after it,
        # as a long-lived consumer must (real iterators expire after 15 minutes; moto's point at a
        # shard object that a failed transaction replaces with a copy when it rolls back).
        self._positions: dict[str, str] = {}

    def read(self) -> list[dict[str, Any]]:
        """Every record written since the last read, oldest first, Lambda-shaped."""
        description = self._streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
        records: list[dict[str, Any]] = []
        for shard in description["Shards"]:
            shard_id = shard["ShardId"]
            position = self._positions.get(shard_id)
            start: dict[str, str] = (
                {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": position}
                if position
                else {"ShardIteratorType": "TRIM_HORIZON"}
            )
            iterator = self._streams.get_shard_iterator(StreamArn=self.stream_arn, ShardId=shard_id, **start)[
                "ShardIterator"
            ]
            while iterator:
                page = self._streams.get_records(ShardIterator=iterator)
                if not page["Records"]:
                    break
                records.extend(self.lambda_shape(r) for r in page["Records"])
                self._positions[shard_id] = page["Records"][-1]["dynamodb"]["SequenceNumber"]
                iterator = page.get("NextShardIterator")
        return records

    def lambda_shape(self, record: dict[str, Any]) -> dict[str, Any]:
        shaped = dict(record)
        dynamodb = dict(shaped.get("dynamodb", {}))
        created = dynamodb.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            dynamodb["ApproximateCreationDateTime"] = int(created.timestamp())
        shaped["dynamodb"] = dynamodb
        shaped["eventSourceARN"] = self.stream_arn
        shaped.setdefault("eventSource", "aws:dynamodb")
        shaped.setdefault("awsRegion", self._region)
        shaped.setdefault("eventVersion", "1.1")
        return shaped


def batches(records: list[dict[str, Any]], size: int = LAMBDA_BATCH_SIZE) -> list[list[dict[str, Any]]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


class LambdaContext:
    """What the handlers read of Lambda's context object, for invocations the twin makes."""

    def __init__(self, function_name: str, timeout_seconds: float = 60.0) -> None:
        self.function_name = function_name
        self.aws_request_id = str(uuid.uuid4())  # each invocation its own, as Lambda's
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def scheduled_event(rule: str = "trellis-dev-dispatch") -> dict[str, Any]:
    """An EventBridge scheduled event, as Lambda receives it."""
    return {
        "version": "0",
        "id": "twin",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.now().astimezone().isoformat(),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{rule}"],
        "detail": {},
    }


class StreamPump:
    """Feeds the stream to the handler like Lambda's event source mapping with
    ``ReportBatchItemFailures``: batches in order; a batch that raises is retried whole, one that
    answers ``batchItemFailures`` is retried from the record it names (with backoff) before the
    pump moves on; after ``max_attempts`` the rest is dropped and reported, as a mapping with a
    retry limit and an on-failure destination would."""

    def __init__(self, reader: StreamReader, handler: Any, max_attempts: int = 5, sleep: Any = None) -> None:
        self._reader = reader
        self._handler = handler
        self._max_attempts = max_attempts
        self._sleep = sleep or time.sleep
        self.delivered = 0
        self.failures: list[str] = []

    def pump_once(self) -> int:
        records = self._reader.read()
        for batch in batches(records):
            pending = batch
            for attempt in range(1, self._max_attempts + 1):
                try:
                    answer = self._handler({"Records": pending}, LambdaContext("on_lead_change"))
                    resume_at, why = resume_point(answer, pending), "batchItemFailures"
                except Exception as e:
                    resume_at, why = 0, f"{type(e).__name__}: {e}"
                if resume_at is None:
                    break
                pending = pending[resume_at:]
                if attempt == self._max_attempts:
                    self.failures.append(why)
                else:
                    self._sleep(min(0.2 * 2**attempt, 5.0))
            self.delivered += len(batch)
        return len(records)


def resume_point(answer: Any, batch: list[dict[str, Any]]) -> int | None:
    """Where Lambda resumes a batch after this answer: None when all of it succeeded.

    As Lambda reads a partial batch response: the lowest sequence number named; one it cannot
    find in the batch (or a malformed answer) fails the whole batch.
    """
    failures = answer.get("batchItemFailures") if isinstance(answer, dict) else None
    if not failures:
        return None
    positions = {r.get("dynamodb", {}).get("SequenceNumber"): i for i, r in enumerate(batch)}
    named = [f.get("itemIdentifier") if isinstance(f, dict) else None for f in failures]
    if any(n not in positions for n in named):
        return 0
    return min(positions[n] for n in named)
