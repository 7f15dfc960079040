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

    def next(self, *, on_shard: tuple[int, int] | None = None) -> int:
        """The next id; `on_shard=(k, count)`: one whose guild would live on shard k of
        `count` (`(id >> 22) % count == k`), stamped up to `count` ms ahead to get there and
        in a millisecond of its own, so that two such guilds can be told apart by some other
        shard count (ids of one millisecond share a shard whatever the count)."""
        ms = int(self._clock.now() * 1000) - DISCORD_EPOCH_MS
        self._increment = (self._increment + 1) & 0xFFF
        value = (ms << 22) | (1 << 17) | self._increment
        # Two ids in the same millisecond (or after a clock jump backwards in wall time)
        # must still sort in creation order, as Discord's do.
        value = max(value, self._last + 1)
        if on_shard is not None:
            shard_id, count = on_shard
            if count < 1 or not 0 <= shard_id < count:
                raise ValueError(f"no shard {shard_id} of {count}")
            stamp = max(value >> 22, (self._last >> 22) + 1)
            stamp += (shard_id - stamp) % count
            value = (stamp << 22) | (1 << 17) | self._increment
        self._last = value
        return value


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard a guild's events go to, as Discord computes it."""
    return (guild_id >> 22) % shard_count
