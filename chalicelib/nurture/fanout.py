"""Fan-out: when one dispatcher cannot reach the account's send rate, the minute's tick splits
the due index's shards among parallel invocations, each with its share of the rate.

One invocation keeps at most ``MAX_SEND_WORKERS`` emails in flight, each taking about
``SEND_TIME_ALLOWANCE`` end to end, and our code takes ``CPU_PER_EMAIL`` of one vCPU per email
(rendering, MIME, bookkeeping: make bench measures it), so it sends at most what the lesser of
the two allows (``capacity_per_invocation``). A rate above what the tick alone can send needs
more senders: ``invocations_for`` says how many parts (a divisor of the shard count, so each
gets as many shards), ``orders`` what each does. The tick starts them all (``ShardStarter``: in
AWS asynchronous invocations of ``dispatch_shard``, a function with a whole vCPU; in the twin
and tests, threads of the same handler) and works only a part it could not start.

What stays true: the claims make every email at most once whoever dispatches it (two orders on
one shard only race for claims); the rate shares add up to the account's rate; and every order
carries the tick's deadline, so an invocation that starts late (Lambda's asynchronous queue may
retry or deliver twice) stops with its tick and never overlaps the next minute's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.errors import InvalidRequest
from chalicelib.store import DUE_SHARDS

# The Lambda function (app.py) that runs one order; Chalice names it trellis-<stage>-dispatch_shard.
SHARD_FUNCTION = "dispatch_shard"
# The parts of a tick take new work for this long after it starts: the schedule is every minute,
# and the last emails in flight (a second or so) land before the next tick's parts begin. Their
# function's timeout leaves the dispatcher's safety margin after it (infra/settings.py).
PART_WORK_SECONDS = 58


# Lambda gives a function CPU in proportion to its memory: one vCPU at 1,769 MB. Python runs
# one thread at a time, so more than one vCPU does not make one invocation send faster.
MB_PER_VCPU = 1769


def capacity_per_invocation(
    workers: int, seconds_per_email: float, cpu_per_email: float, memory_mb: int = MB_PER_VCPU
) -> float:
    """Emails a second one invocation can send: its sends in flight over the time each takes,
    or what its share of a CPU can render, build and record, whichever is less."""
    vcpus = min(memory_mb / MB_PER_VCPU, 1.0)
    return min(workers / seconds_per_email, vcpus / cpu_per_email)


def invocations_for(rate: float, per_invocation: float, shards: int = DUE_SHARDS) -> int:
    """How many dispatchers at once reach ``rate``: the fewest, among the divisors of the shard
    count (each gets as many shards), whose capacity together is at least the rate."""
    needed = max(1, math.ceil(rate / per_invocation))
    for count in range(1, shards + 1):
        if shards % count == 0 and count >= needed:
            return count
    return shards


@dataclass(frozen=True)
class ShardOrder:
    """One dispatcher's part of a fanned-out tick: its shards, its share of the send rate, and
    the deadline (Unix milliseconds) after which it takes no new work: just before the next
    minute's tick starts its own parts, so the parts send all minute long and never overlap."""

    shards: tuple[int, ...]
    rate: float
    deadline_ms: int
    part: int = 0
    parts: int = 1

    def to_event(self) -> dict[str, Any]:
        return {
            "shards": list(self.shards),
            "rate": self.rate,
            "deadline_ms": self.deadline_ms,
            "part": self.part,
            "parts": self.parts,
        }

    @classmethod
    def from_event(cls, event: Any) -> ShardOrder:
        """The order an invocation was given; anything malformed is refused (``InvalidRequest``)
        rather than guessed at: a wrong shard list would leave shards undispatched or doubled."""
        if not isinstance(event, dict):
            raise InvalidRequest("a shard order is a JSON object")
        shards, rate, deadline = event.get("shards"), event.get("rate"), event.get("deadline_ms")
        if (
            not isinstance(shards, list)
            or not shards
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < DUE_SHARDS for s in shards)
            or len(set(shards)) != len(shards)
        ):
            raise InvalidRequest(f"shards must be distinct shard numbers 0-{DUE_SHARDS - 1}")
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 < rate < 1e6:
            raise InvalidRequest("rate must be a positive number of emails per second")
        if not isinstance(deadline, int) or isinstance(deadline, bool) or deadline <= 0:
            raise InvalidRequest("deadline_ms must be a Unix time in milliseconds")
        part, parts = event.get("part", 0), event.get("parts", 1)
        if not isinstance(part, int) or not isinstance(parts, int) or not 0 <= part < parts <= DUE_SHARDS:
            raise InvalidRequest("part must be below parts, and parts at most the shard count")
        return cls(tuple(shards), float(rate), deadline, part, parts)

    def remaining_ms(
        self, own_remaining_ms: Callable[[], int], now_ms: Callable[[], int], margin_ms: int
    ) -> Callable[[], int]:
        """This invocation's time left as its tick counts it (it takes no new work once less than
        ``margin_ms`` is left): its own, or up to the deadline and the margin if that is sooner."""
        return lambda: min(own_remaining_ms(), self.deadline_ms - now_ms() + margin_ms)


def orders(rate: float, count: int, deadline_ms: int, shards: int = DUE_SHARDS) -> list[ShardOrder]:
    """``count`` orders that cover every shard once, round robin, each with rate/count."""
    return [
        ShardOrder(tuple(range(part, shards, count)), rate / count, deadline_ms, part, count) for part in range(count)
    ]


class ShardStarter(Protocol):
    def start(self, order: ShardOrder) -> None:
        """Start the order in a dispatcher of its own, without waiting for it; raise if it
        could not be started (the tick then works it itself)."""


class LambdaShardStarter:
    """Each order an asynchronous invocation of the stage's ``dispatch_shard`` function."""

    def __init__(self, lambda_client: Callable[[], Any], function_name: str) -> None:
        self._lambda_client = lambda_client
        self._function = function_name

    @property
    def _lambda(self) -> Any:
        return self._lambda_client()

    def start(self, order: ShardOrder) -> None:
        self._lambda.invoke(
            FunctionName=self._function, InvocationType="Event", Payload=json.dumps(order.to_event()).encode()
        )
