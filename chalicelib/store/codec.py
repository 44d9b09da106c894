"""Plain Python values <-> DynamoDB JSON (the low-level client speaks only the latter)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from chalicelib.entities import to_dynamo_value

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def serialize(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(to_dynamo_value(v)) for k, v in attributes.items()}


def deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}
