"""The table's plumbing: the client call, its errors in domain terms, Query pages, retries.

The aggregates (leads, nurture, handoffs, counters, sessions, erasure) subclass ``Table``. The
operation a request makes is always named at the call site (``self._call("query", ...)``,
``self._write_if("update_item", ...)``, a transaction part's ``{"Put": ...}``):
tests/infra/test_iam_policy.py reads them there to check each is granted.

Throttling and transient errors are retried by botocore (``chalicelib.aws.RETRY_CONFIG``);
what it does not retry (a transaction cancelled by a conflicting one, a batch's unprocessed
items) is retried here, with ``sleep`` between attempts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Optional

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import ConditionFailed, InvalidRequest, StoreError, WriteConflict
from chalicelib.store import keys
from chalicelib.store.codec import deserialize, serialize
from chalicelib.store.expressions import Expression

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# A batch write's unprocessed items are sent again this many times, then the caller hears of it.
_BATCH_ATTEMPTS = 6
_BATCH_SIZE = 25  # BatchWriteItem's limit


def backoff(attempt: int) -> float:
    return 0.05 * (1 << attempt)


def _code(error: Exception) -> Optional[str]:
    return error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else None


def _failure(operation: str, error: Exception, *, refusal_is_invalid: bool = True) -> StoreError:
    """The domain error (chalicelib/errors.py) a failed request raises.

    ``refusal_is_invalid=False`` keeps a single conditional write's ValidationException a plain
    StoreError, as it always was: callers that give up on InvalidRequest never saw one there.
    """
    code = _code(error)
    if code == "TransactionCanceledException" and isinstance(error, ClientError):
        reasons = {r.get("Code") for r in error.response.get("CancellationReasons", [])}
        if "ConditionalCheckFailed" in reasons:
            return ConditionFailed("an item was not as the write expected")
        if "TransactionConflict" in reasons:
            return WriteConflict("a concurrent transaction touched the same items; retry")
        if "ValidationError" in reasons:
            return InvalidRequest(f"{operation} refused: {error}")
    if code == "ValidationException" and refusal_is_invalid:
        return InvalidRequest(f"{operation} refused: {error}")
    return StoreError(f"{operation} failed: {error}")


class Table:
    def __init__(
        self,
        client: Callable[[], DynamoDBClient],
        table_name: str,
        *,
        sleep: Optional[Callable[[float], None]] = None,
    ) -> None:
        """``client`` makes (or returns the cached) client on first request: creating one loads
        DynamoDB's service model, which a cold start that never reaches the table (the admin
        authorizer) need not pay for."""
        self._make_client = client
        self.table_name = table_name
        self._sleep = sleep

    @property
    def _client(self) -> DynamoDBClient:
        return self._make_client()

    def _pause(self, attempt: int) -> None:
        # Looked up at call time, so a test that patches time.sleep reaches it.
        (self._sleep or time.sleep)(backoff(attempt))

    # -- calls and their errors -----------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as e:
            raise _failure(operation, e) from e

    def _write_if(self, operation: str, kwargs: dict[str, Any]) -> bool:
        """A conditional single-item write: True when written, False when its condition failed."""
        try:
            getattr(self._client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as e:
            if _code(e) == "ConditionalCheckFailedException":
                return False
            raise _failure(operation, e, refusal_is_invalid=False) from e
        return True

    def _transact(self, operations: list[dict[str, Any]]) -> None:
        try:
            self._client.transact_write_items(TransactItems=operations)  # type: ignore[arg-type]
        except (ClientError, BotoCoreError) as e:
            raise _failure("transaction", e) from e

    def _transact_if(self, operations: list[dict[str, Any]], *, conflict_attempts: int = 1) -> bool:
        """A transaction: True when written, False when one of its conditions failed.

        A conflict with a concurrent transaction is tried again up to ``conflict_attempts``
        times in all, then raised (WriteConflict).
        """
        for attempt in range(conflict_attempts):
            try:
                self._transact(operations)
                return True
            except ConditionFailed:
                return False
            except WriteConflict:
                if attempt == conflict_attempts - 1:
                    raise
                self._pause(attempt)
        return False  # unreachable: the last attempt returns or raises

    # -- request parts --------------------------------------------------------------------------

    def _new_item(self, item: dict[str, Any]) -> dict[str, Any]:
        """A put (alone or in a transaction) that writes only where no item is yet."""
        return {
            "TableName": self.table_name,
            "Item": serialize(item),
            "ConditionExpression": "attribute_not_exists(pk)",
        }

    def _item(self, item: dict[str, Any]) -> dict[str, Any]:
        """A put (alone or in a transaction) that replaces whatever is there."""
        return {"TableName": self.table_name, "Item": serialize(item)}

    def _keyed(
        self, key: keys.Key, expression: Optional[Expression] = None, **expressions: Optional[str]
    ) -> dict[str, Any]:
        """An update, delete or condition check of one item: its key and its expressions."""
        params = (expression or Expression()).params(**expressions)
        return {"TableName": self.table_name, "Key": serialize(key), **params}

    def _update_if(self, key: keys.Key, expression: Expression, condition: Optional[str]) -> bool:
        """A conditional UpdateItem: True when written, False when the condition did not hold."""
        return self._write_if("update_item", self._keyed(key, expression, ConditionExpression=condition))

    # -- reads ----------------------------------------------------------------------------------

    def _get(self, key: keys.Key) -> Optional[dict[str, Any]]:
        response = self._call("get_item", TableName=self.table_name, Key=serialize(key), ConsistentRead=True)
        item = response.get("Item")
        return deserialize(item) if item else None

    def _query_pages(
        self,
        request: dict[str, Any],
        *,
        start: Optional[dict[str, Any]] = None,
        page_size: Optional[int] = None,
        total: Optional[int] = None,
    ) -> Iterator[tuple[list[dict[str, Any]], Optional[dict[str, Any]]]]:
        """A Query's pages, as items with the key after them (None after the last), read as
        they are wanted. Each page asks for ``page_size`` items at most, and for no more than
        ``total`` still lacks: then the last key is exactly where to resume."""
        received, key = 0, start
        while total is None or received < total:
            params = {"TableName": self.table_name, **request}
            limits = [n for n in (page_size, None if total is None else total - received) if n is not None]
            if limits:
                params["Limit"] = min(limits)
            if key is not None:
                params["ExclusiveStartKey"] = key
            page = self._call("query", **params)
            items = [deserialize(i) for i in page.get("Items", [])]
            received += len(items)
            key = page.get("LastEvaluatedKey")
            yield items, key
            if key is None:
                return

    def _query_all(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        return [item for items, _ in self._query_pages(request) for item in items]

    def _query_lead(self, lead_id: str, prefix: str = "") -> list[dict[str, Any]]:
        """Items of the lead's partition whose sort key starts with ``prefix`` (all when empty)."""
        expression = Expression()
        condition = expression.eq("pk", keys.lead_pk(lead_id))
        if prefix:  # DynamoDB rejects begins_with on an empty string
            condition += " AND " + expression.begins_with("sk", prefix)
        return self._query_all(expression.params(KeyConditionExpression=condition))

    def _get_consistent(self, wanted: list[keys.Key]) -> list[dict[str, Any]]:
        """These items, in one consistent read request (more only for what comes back unprocessed)."""
        request: dict[str, Any] = {self.table_name: {"Keys": [serialize(k) for k in wanted], "ConsistentRead": True}}
        found: list[dict[str, Any]] = []
        while request:
            response = self._call("batch_get_item", RequestItems=request)
            found.extend(deserialize(i) for i in response.get("Responses", {}).get(self.table_name, []))
            request = response.get("UnprocessedKeys") or {}
        return found

    # -- batch deletes --------------------------------------------------------------------------

    def _delete_keys(self, wanted: list[keys.Key]) -> None:
        for start in range(0, len(wanted), _BATCH_SIZE):
            self._delete_batch(wanted[start : start + _BATCH_SIZE])

    def _delete_batch(self, batch: list[keys.Key]) -> None:
        requests: list[Any] = [{"DeleteRequest": {"Key": serialize(key)}} for key in batch]
        for attempt in range(_BATCH_ATTEMPTS):
            response = self._call("batch_write_item", RequestItems={self.table_name: requests})
            requests = response.get("UnprocessedItems", {}).get(self.table_name, [])
            if not requests:
                return
            self._pause(attempt)
        raise StoreError(f"{len(requests)} items of the lead could not be deleted; erase again")
