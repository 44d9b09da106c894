"""Read the table's stream from moto and shape each record as Lambda delivers it.

moto's GetRecords records lack ``eventSourceARN`` and give ``ApproximateCreationDateTime`` as a
datetime; Lambda sends the stream ARN and epoch seconds. The tests and the local twin both feed
the stream handler through this, so the handler only ever sees Lambda-shaped records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

LAMBDA_BATCH_SIZE = 100


class StreamReader:
    def __init__(self, dynamodb: Any, streams: Any, table_name: str, region: str = "us-east-1") -> None:
        self._streams = streams
        self._region = region
        self.stream_arn: str = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
        self._iterators: dict[str, str] = {}

    def read(self) -> list[dict[str, Any]]:
        """Every record written since the last read, oldest first, Lambda-shaped."""
        description = self._streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
        records: list[dict[str, Any]] = []
        for shard in description["Shards"]:
            shard_id = shard["ShardId"]
            iterator = (
                self._iterators.get(shard_id)
                or self._streams.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            )
            while iterator:
                page = self._streams.get_records(ShardIterator=iterator)
                records.extend(self.lambda_shape(r) for r in page["Records"])
                next_iterator = page.get("NextShardIterator")
                if not page["Records"] or not next_iterator:
                    break
                iterator = next_iterator
            if next_iterator:
                self._iterators[shard_id] = next_iterator
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
