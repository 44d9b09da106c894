"""A fanned-out tick on moto: a broadcast at a send rate one dispatcher cannot reach, its parts
each on their own shards at their share of the rate, every recipient exactly once; a part that
cannot be started is worked by the tick itself; a late or doubled part sends nothing twice.

Lambda's asynchronous invoke runs no function in moto: the parts run in threads
(``testkit.fanout.ThreadShardStarter``), each as another dispatcher on the same table.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from chalicelib.entities import lead_id_for
from chalicelib.nurture.fanout import ShardOrder
from chalicelib.store import DUE_SHARDS, due_shard
from testkit.fanout import ThreadShardStarter
from tests.helpers import body
from tests.integration.test_broadcasts import copies, create, enrol_only, report, signup
from tests.integration.test_dispatcher_guarantees import FOREVER, new_dispatcher

RATE = 200.0  # eight parts' worth (fanout.invocations_for at ~33 emails/s a part), one shard each


@pytest.fixture
def readers(client: Any, deliver: Any) -> list[str]:
    """Sixteen newsletter readers, spread over the due index's shards, their welcomes sent."""
    emails = [f"fan{n}@example.com" for n in range(16)]
    for email in emails:
        signup(client, email)
    deliver()
    assert len({due_shard(lead_id_for(email)) for email in emails}) >= 6
    return emails


def parts(rt: Any, **kwargs: Any) -> ThreadShardStarter:
    """Each part another dispatcher (another Lambda container) on the same table."""
    return ThreadShardStarter(lambda event: new_dispatcher(rt, RATE).shard_tick(event, lambda: FOREVER), **kwargs)


def test_a_fanned_out_broadcast_reaches_each_recipient_once_each_part_on_its_own_shards(
    client, rt, deliver, outbox, readers
):
    broadcast = body(create(client))
    assert enrol_only(rt).enrolled == 16
    starter = parts(rt)

    tick = new_dispatcher(rt, RATE).scheduled_tick(lambda: FOREVER, starter)
    others = starter.wait()

    assert tick.fanned_out == 8 and len(others) == 8
    assert (tick.claimed, tick.sent) == (0, 0)  # the tick only started them
    assert copies(outbox) == Counter(readers)  # sixteen copies, each reader once
    assert sum(part.sent for part in others) == 16
    assert sum(part.lost_claims for part in others) == 0  # no two parts shared a shard
    started = starter.orders
    theirs = [shard for order in started for shard in order.shards]
    assert sorted(theirs) == list(range(DUE_SHARDS))  # each shard in one part
    assert sum(order.rate for order in started) == RATE  # together, the account's rate
    deliver()
    assert report(client, broadcast["broadcast_id"])["sent"] == 16


def test_a_part_that_cannot_be_started_is_worked_by_the_tick_itself(client, rt, outbox, readers):
    body(create(client))
    enrol_only(rt)
    starter = parts(rt, refuse=lambda order: order.part == 2)

    tick = new_dispatcher(rt, RATE).scheduled_tick(lambda: FOREVER, starter)
    others = starter.wait()

    assert (tick.fanned_out, len(others), tick.errors) == (7, 7, 1)
    assert tick.sent == sum(due_shard(lead_id_for(r)) == "DUE#2" for r in readers)  # part 2's shard, here
    assert copies(outbox) == Counter(readers)  # part 2's shards too, once
    assert tick.sent + sum(part.sent for part in others) == 16


def test_a_part_started_after_its_ticks_deadline_takes_no_work(client, rt, tick, outbox, readers):
    body(create(client))
    enrol_only(rt)
    late = ShardOrder(tuple(range(DUE_SHARDS)), 50.0, deadline_ms=int(time.time() * 1000) - 1)

    report_ = new_dispatcher(rt, RATE).shard_tick(late.to_event(), lambda: FOREVER)

    assert (report_.claimed, report_.sent, report_.stopped_early) == (0, 0, True)
    assert copies(outbox) == Counter()
    tick()  # still due: the next tick sends them
    assert copies(outbox) == Counter(readers)


def test_an_order_delivered_twice_at_once_sends_each_recipient_once(client, rt, outbox, readers):
    body(create(client))
    enrol_only(rt)
    order = ShardOrder(tuple(range(DUE_SHARDS)), 50.0, deadline_ms=int(time.time() * 1000) + 600_000)
    together = threading.Barrier(2)

    def run(event: dict[str, Any]) -> Any:
        together.wait(timeout=30)
        return new_dispatcher(rt, RATE).shard_tick(event, lambda: FOREVER)

    twice = ThreadShardStarter(run)
    twice.start(order)
    twice.start(order)
    both = twice.wait()

    assert copies(outbox) == Counter(readers)
    assert sum(part.sent for part in both) == 16
