"""Time as the local Discord sees it: wall time plus an offset the test controls.

Interaction deadlines (3 s to acknowledge, 15 min of token life), CDN URL expiry and thread
auto-archiving are all measured on this clock, so a test can jump 15 minutes ahead instead of
waiting for them. Snowflakes embed the same clock, like Discord's do.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

DISCORD_EPOCH_MS = 1_420_070_400_000


class Clock:
    """Wall-clock seconds since the Unix epoch, shifted by `advance()`."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._listeners: list[Callable[[], None]] = []

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every jump (things that expire with time re-check then)."""
        self._listeners.append(listener)

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Jump ahead: everything measured on this clock ages by `seconds` at once."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds
        log.info("local discord clock advanced by %.1f s", seconds)
        for listener in self._listeners:
            listener()

    def iso(self, timestamp: float | None = None) -> str:
        """ISO 8601 with microseconds and an explicit UTC offset, as Discord writes it."""
        when = self.now() if timestamp is None else timestamp
        return dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="microseconds")


class Snowflakes:
    """Discord-shaped ids: milliseconds since 2015 in the high bits, strictly increasing."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last = 0
        self._increment = 0

    def next(self) -> int:
        ms = int(self._clock.now() * 1000) - DISCORD_EPOCH_MS
        self._increment = (self._increment + 1) & 0xFFF
        value = (ms << 22) | (1 << 17) | self._increment
        # Two ids in the same millisecond (or after a clock jump backwards in wall time)
        # must still sort in creation order, as Discord's do.
        value = max(value, self._last + 1)
        self._last = value
        return value
