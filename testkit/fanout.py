"""Fan-out's parts in threads: the twin's and the tests' stand-in for Lambda's asynchronous invoke.

moto records a Lambda invoke but runs no function (no Docker here), so where a deployed tick
starts ``dispatch_shard`` invocations, the twin and the tests run each order in a thread of
their own process, through the handler they are given (the twin: ``app.dispatch_shard``, as
Lambda calls it). ``wait`` joins them: the twin's tick ends when its parts have.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from chalicelib.entities import Broadcast
from chalicelib.nurture.fanout import ShardOrder


class ThreadShardStarter:
    def __init__(
        self, run: Callable[[dict[str, Any]], Any], refuse: Callable[[ShardOrder], bool] = lambda o: False
    ) -> None:
        self._run = run
        self._refuse = refuse  # an order that "Lambda" refuses to start (tests of the fallback)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.orders: list[ShardOrder] = []
        self.results: list[Any] = []
        self.errors: list[BaseException] = []

    def start(self, order: ShardOrder) -> None:
        if self._refuse(order):
            raise RuntimeError(f"part {order.part} of {order.parts} could not be started")
        thread = threading.Thread(target=self._part, args=(order.to_event(),), name=f"part-{order.part}", daemon=True)
        with self._lock:
            self.orders.append(order)
            self._threads.append(thread)
        thread.start()

    def _part(self, event: dict[str, Any]) -> None:
        try:
            result = self._run(event)
        except BaseException as e:  # reported by wait(): a part's failure must not pass unseen
            with self._lock:
                self.errors.append(e)
            return
        with self._lock:
            self.results.append(result)

    def wait(self, timeout: float = 120.0) -> list[Any]:
        """Join every part started so far; their results (a part's error is raised here)."""
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)
        if self.errors:
            raise self.errors[0]
        return list(self.results)


class BroadcastsOnly:
    """A store whose due index shows a tick only the due broadcasts: a tick that enrols their
    recipients and sends nothing (tests and bench that enrol first, then send)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def due_enrolments(self, now: str, page_size: int = 50, shards: Any = None) -> Iterator[Any]:
        return (due for due in self._store.due_enrolments(now, page_size, shards) if isinstance(due, Broadcast))
