"""Time travel between invocations, never during one.

In AWS, time flows continuously while a Lambda runs: a dispatcher's 5-minute claim outlives its
invocation. In the twin, ``POST /clock/advance`` jumps the shared clock; a jump while a dispatch is
between claiming a step and recording its send would make the claim look expired to the next
tick, which would send the step again. Deployed, that cannot happen; the twin must not show it
either. So handlers (any number at once) hold the gate shared, and a clock jump holds it alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ClockGate:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._advancing = False

    @contextmanager
    def handler(self) -> Iterator[None]:
        """Around one handler invocation: waits while the clock is being moved."""
        with self._changed:
            self._changed.wait_for(lambda: not self._advancing)
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    @contextmanager
    def advancing(self) -> Iterator[None]:
        """Around a clock jump: waits for running handlers to finish and holds new ones back."""
        with self._changed:
            self._changed.wait_for(lambda: not self._advancing)
            self._advancing = True  # new handlers wait from here on
            self._changed.wait_for(lambda: self._running == 0)
        try:
            yield
        finally:
            with self._changed:
                self._advancing = False
                self._changed.notify_all()
