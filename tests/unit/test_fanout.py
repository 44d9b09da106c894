"""Fan-out's rules, without AWS: how many dispatchers a send rate needs, and the orders they get."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.errors import InvalidRequest
from chalicelib.nurture.dispatcher import MAX_SEND_WORKERS, SEND_TIME_ALLOWANCE
from chalicelib.nurture.fanout import ShardOrder, capacity_per_invocation, invocations_for, orders
from chalicelib.store import DUE_SHARDS

ONE = 50.0


def test_an_invocation_sends_what_its_workers_or_its_cpu_allow_whichever_is_less() -> None:
    in_flight = MAX_SEND_WORKERS / SEND_TIME_ALLOWANCE  # ~53/s
    assert capacity_per_invocation(MAX_SEND_WORKERS, SEND_TIME_ALLOWANCE, 0.001) == in_flight
    assert capacity_per_invocation(MAX_SEND_WORKERS, SEND_TIME_ALLOWANCE, 0.030) == pytest.approx(1 / 0.030)
    assert capacity_per_invocation(8, 0.15, 0.030, memory_mb=1769 // 2) == pytest.approx(0.5 / 0.030, rel=0.01)
    assert capacity_per_invocation(8, 0.15, 0.030, memory_mb=3538) == pytest.approx(1 / 0.030)  # one thread at a time


@pytest.mark.parametrize(
    ("rate", "count"),
    [(1.0, 1), (14.0, 1), (ONE, 1), (ONE + 1, 2), (100.0, 2), (200.0, 4), (400.0, 8), (5000.0, 8)],
)
def test_the_fewest_dispatchers_that_reach_the_rate_with_as_many_shards_each(rate: float, count: int) -> None:
    assert invocations_for(rate, ONE) == count
    assert DUE_SHARDS % count == 0


@pytest.mark.parametrize("count", [1, 2, 4, 8])
def test_the_orders_cover_every_shard_once_and_share_the_rate(count: int) -> None:
    made = orders(200.0, count, deadline_ms=1_000)
    covered = [shard for order in made for shard in order.shards]
    assert sorted(covered) == list(range(DUE_SHARDS))
    assert sum(order.rate for order in made) == pytest.approx(200.0)
    assert {order.deadline_ms for order in made} == {1_000}
    assert [(order.part, order.parts) for order in made] == [(part, count) for part in range(count)]


def test_an_order_survives_its_trip_as_an_event() -> None:
    order = ShardOrder((1, 5), 50.0, 1_700_000_000_000, 1, 4)
    assert ShardOrder.from_event(order.to_event()) == order


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"shards": []}, "shards"),
        ({"shards": [8]}, "shards"),
        ({"shards": [1, 1]}, "shards"),
        ({"shards": ["1"]}, "shards"),
        ({"shards": [True]}, "shards"),
        ({"rate": 0}, "rate"),
        ({"rate": "50"}, "rate"),
        ({"deadline_ms": -1}, "deadline_ms"),
        ({"deadline_ms": 1.5}, "deadline_ms"),
        ({"part": 4}, "part"),
        ({"parts": 9, "part": 0}, "part"),
    ],
)
def test_a_malformed_order_is_refused_naming_what_is_wrong(change: dict[str, Any], named: str) -> None:
    event = {**ShardOrder((1, 5), 50.0, 1_000, 1, 4).to_event(), **change}
    with pytest.raises(InvalidRequest, match=named):
        ShardOrder.from_event(event)
    with pytest.raises(InvalidRequest):
        ShardOrder.from_event(["not", "an", "object"])


def test_an_orders_time_ends_at_its_deadline_or_its_own_whichever_is_first() -> None:
    order = ShardOrder((0,), 10.0, deadline_ms=100_000)
    # The tick takes no new work once less than the margin (here 1 s) is left: at the deadline.
    assert order.remaining_ms(lambda: 55_000, lambda: 90_000, 1_000)() == 11_000
    assert order.remaining_ms(lambda: 5_000, lambda: 90_000, 1_000)() == 5_000
    assert order.remaining_ms(lambda: 55_000, lambda: 100_000, 1_000)() == 1_000  # the deadline: no more
    assert order.remaining_ms(lambda: 55_000, lambda: 120_000, 1_000)() < 1_000  # a late start: nothing
