"""Per-API-key limits: concurrent task slots (FIFO) and output images per sliding minute."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict, deque

WINDOW_S = 60.0


class TaskSlots:
    """At most `limit` running tasks per key; later ones queue in submit order.

    `claim` is synchronous so the queue order is the submit order, even before the task that
    will await the slot first runs (asyncio.Semaphore would order by first await instead).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._running: dict[str, int] = defaultdict(int)
        self._queues: dict[str, deque[asyncio.Future[None]]] = defaultdict(deque)

    def claim(self, key: str) -> asyncio.Future[None]:
        """A future that resolves when `key` may run one more task; `release` it afterwards."""
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # `release` hands a slot straight to the next live waiter, so a free slot means nobody
        # alive is waiting (the queue may still hold waiters cancelled meanwhile).
        if self._running[key] < self._limit:
            self._running[key] += 1
            ticket.set_result(None)
        else:
            self._queues[key].append(ticket)
        return ticket

    def release(self, key: str) -> None:
        """Hand the slot to the next waiter of `key`, or free it."""
        queue = self._queues[key]
        while queue:
            ticket = queue.popleft()
            if not ticket.done():  # skip waiters that were cancelled meanwhile
                ticket.set_result(None)
                return
        self._running[key] -= 1
        if self._running[key] <= 0:
            # Keys come and go (any key is accepted by default): do not keep empty entries.
            self._running.pop(key, None)
            self._queues.pop(key, None)

    def waiting(self, key: str) -> int:
        """How many tasks of `key` wait for a slot."""
        queue = self._queues.get(key)
        return sum(not ticket.done() for ticket in queue) if queue else 0


class ImageWindow:
    """Output images counted at submit, per key, over a sliding 60 s window."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._entries: dict[str, deque[tuple[float, int]]] = defaultdict(deque)

    def retry_after(self, key: str, images: int, now: float) -> int | None:
        """Whole seconds until `images` more fit for `key`; None when they fit now."""
        if self._limit is None:
            return None
        entries = self._entries[key]
        while entries and entries[0][0] <= now - WINDOW_S:
            entries.popleft()
        if not entries:
            self._entries.pop(key, None)
        used = sum(count for _, count in entries)
        if used + images <= self._limit:
            return None
        if images > self._limit:
            return math.ceil(WINDOW_S)  # never fits; a minute is the honest answer
        freed = 0
        for stamp, count in entries:
            freed += count
            if used - freed + images <= self._limit:
                return max(1, math.ceil(stamp + WINDOW_S - now))
        return math.ceil(WINDOW_S)  # unreachable: freeing everything always makes room

    def record(self, key: str, images: int, now: float) -> None:
        """Count `images` submitted by `key` at `now`."""
        if self._limit is not None:
            self._entries[key].append((now, images))
