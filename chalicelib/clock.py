"""The one source of "now".

Everything that depends on time takes a ``Clock`` so that tests and the local twin can move time
forward; deployed stages use the system clock.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


class OffsetFileClock:
    """The local twin's shared clock: real time plus an offset kept in a file.

    Every process of the twin (the API, the stream pump, the dispatcher tick) reads the same
    file, so fast-forwarding it (the dev console's ``POST /clock/advance``) moves them all.
    Deployed stages never set ``TRELLIS_CLOCK_FILE`` and use the system clock.
    """

    def __init__(self, path: str) -> None:
        self._path = path

    def offset_seconds(self) -> float:
        try:
            with open(self._path, encoding="ascii") as handle:
                return float(handle.read().strip() or 0)
        except FileNotFoundError:
            return 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset_seconds())

    def advance(self, seconds: float) -> float:
        """Move the shared clock forward; returns the new offset. Written atomically."""
        offset = self.offset_seconds() + seconds
        temporary = f"{self._path}.tmp"
        with open(temporary, "w", encoding="ascii") as handle:
            handle.write(repr(offset))
        os.replace(temporary, self._path)
        return offset
