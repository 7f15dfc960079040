"""Status updates without holding anyone up: published, coalesced, sent under one request budget.

The job service publishes a job's latest status and moves on; a separate task sends it. Four rules,
none of them Discord-specific (the caller's `send` does the talking):

- Coalescing: only the newest status of a job waits to be sent; an unchanged one is not sent.
- Spacing: a job's status is sent at most once every `min_gap_s`, except its first and those
  published `at_once` (a new stage: few per job, and a member waits to see them).
- One budget: every request the bot makes to the chat service takes a slot of one
  `RequestBudget`; result posts go first, then jobs' endings, then status edits and log
  channel posts, and each of the latter may use only part of it.
- Endings win: once a job has ended, its pending status is dropped and nothing newer is sent,
  so a stale "Generating…" never overwrites "Done".
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import ClassVar, Generic, TypeVar

from .recent import RecentSet

log = logging.getLogger(__name__)

P = TypeVar("P")

# How many ended jobs are remembered, so a late publish for one of them is ignored; job ids only
# grow, and a publish arrives at most seconds after its job's ending.
ENDED_MEMORY = 10_000
# An ending waits this long at most for its job's status edit in flight (one stuck behind a rate
# limit must not hold up a failure report).
SETTLE_TIMEOUT_S = 10.0


class Lane(enum.IntEnum):
    """Who is asking for a request slot, most urgent first."""

    DELIVERY = 0  # a result post, or a look for one: the member is waiting for it
    ENDING = 1  # a job's last status (done, failed): after deliveries, before progress
    STATUS = 2  # progress edits: a courtesy, and the most numerous


class RequestBudget:
    """At most `per_window` grants in any `window_s` (a sliding window), in lane order.

    A sliding window rather than a token bucket: no burst can put more than `per_window`
    requests into any one window, which is how the chat service counts. Each lane, with the
    lanes after it, may only take its share of a window (`LANE_SHARES`): what status edits and
    endings already took never leaves a result post waiting, even while a thousand queued jobs
    are being told their places.
    """

    LANE_SHARES: ClassVar[dict[Lane, float]] = {
        Lane.DELIVERY: 1.0,
        Lane.ENDING: 2 / 3,
        Lane.STATUS: 1 / 3,
    }

    def __init__(
        self,
        per_window: int,
        window_s: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_window < 1:
            raise ValueError("a budget needs at least one request per window")
        self._limits = {
            lane: max(1, int(per_window * share)) for lane, share in self.LANE_SHARES.items()
        }
        self._window_s = window_s
        self._clock = clock
        self._grants: deque[tuple[float, Lane]] = deque()
        self._queues: dict[Lane, deque[object]] = {lane: deque() for lane in Lane}
        self._changed = asyncio.Condition()

    async def take(self, lane: Lane = Lane.STATUS) -> None:
        """Wait for a slot: each lane in order, a lane only when every lane before it is empty."""
        queue = self._queues[lane]
        ticket = object()
        async with self._changed:
            queue.append(ticket)
            try:
                while True:
                    my_turn = queue[0] is ticket and not any(
                        self._queues[earlier] for earlier in Lane if earlier < lane
                    )
                    wait = self._until_free(lane) if my_turn else None
                    if wait is not None and wait <= 0:
                        self._grants.append((self._clock(), lane))
                        return
                    # Not our turn: woken when a grant is made. Our turn but full: woken when
                    # a grant leaves the window (or sooner, by an earlier lane).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._changed.wait()
            finally:
                queue.remove(ticket)
                self._changed.notify_all()

    def _until_free(self, lane: Lane) -> float:
        """Seconds until `lane` may have a grant (0: now)."""
        now = self._clock()
        while self._grants and self._grants[0][0] <= now - self._window_s:
            self._grants.popleft()
        # No lane goes past the whole window; each lane's share counts its own grants and
        # those of the lanes after it.
        return max(
            self._wait_for_room(self._limits[Lane.DELIVERY], Lane.DELIVERY, now),
            self._wait_for_room(self._limits[lane], lane, now),
        )

    def _wait_for_room(self, limit: int, lanes_from: Lane, now: float) -> float:
        counted = [at for at, lane in self._grants if lane >= lanes_from]
        room = limit - len(counted)
        if room > 0:
            return 0.0
        # Free once enough of the counted grants have left the window.
        return counted[-room] + self._window_s - now


class StatusUpdater(Generic[P]):
    """Sends the newest published status of each key (a job id) through `send`."""

    def __init__(
        self,
        send: Callable[[int, P], Awaitable[None]],
        budget: RequestBudget,
        *,
        min_gap_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._budget = budget
        self._min_gap_s = min_gap_s
        self._clock = clock
        # In publishing order (a re-published key keeps its place), so no job waits behind
        # another's stream of updates.
        self._pending: dict[int, tuple[P, bool]] = {}
        self._last: dict[int, tuple[float, P]] = {}
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._ended: RecentSet[int] = RecentSet(ENDED_MEMORY)
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="status-updater")

    async def stop(self) -> None:
        """Stop sending; pending statuses are dropped (each job's state is stored)."""
        tasks = [t for t in (self._runner, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = None

    def publish(self, key: int, status: P, *, at_once: bool = False) -> None:
        """Make `status` the one to show for `key`; returns at once. `at_once` skips the
        per-job gap (not the budget, nor the wait for the job's edit in flight)."""
        if key in self._ended:
            return
        last = self._last.get(key)
        if last is not None and last[1] == status:
            # Already shown (a pending change back to it would be a round trip for nothing).
            self._pending.pop(key, None)
            return
        # An unsent `at_once` status replaced by a later one still owes the member a change.
        earlier = self._pending.get(key)
        self._pending[key] = (status, at_once or (earlier is not None and earlier[1]))
        self._wake.set()

    async def end(self, key: int) -> None:
        """Before a job's ending is sent: drop its pending status, refuse later ones, let an
        edit in flight land first, then take a priority slot of the budget."""
        self._ended.add(key)
        self._pending.pop(key, None)
        self._last.pop(key, None)
        in_flight = self._in_flight.get(key)
        if in_flight is not None:
            await asyncio.wait({in_flight}, timeout=SETTLE_TIMEOUT_S)
        await self._budget.take(Lane.ENDING)

    async def urgent(self) -> None:
        """A slot for a delivery (a result post or a look for one), ahead of everything else."""
        await self._budget.take(Lane.DELIVERY)

    async def aside(self) -> None:
        """A slot for a request nobody waits on (a post in a server's log channel): after
        deliveries and endings, taking turns with status edits in their share."""
        await self._budget.take(Lane.STATUS)

    async def _run(self) -> None:
        while True:
            key, wait = self._next_due()
            if key is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            await self._budget.take(Lane.STATUS)
            # Ended, or sent by nobody else, while waiting for the slot: look again.
            pending = self._pending.pop(key, None)
            if pending is None or key in self._in_flight:
                continue
            status = pending[0]
            self._last[key] = (self._clock(), status)
            task = asyncio.create_task(self._deliver(key, status), name=f"status-{key}")
            self._in_flight[key] = task

    def _next_due(self) -> tuple[int | None, float | None]:
        """The first pending key that may be sent now; else how long until one may."""
        now = self._clock()
        soonest: float | None = None
        for key, (_, at_once) in self._pending.items():
            if key in self._in_flight:
                continue  # its previous edit lands first; the send's end wakes us
            last = self._last.get(key)
            due = now if last is None or at_once else last[0] + self._min_gap_s
            if due <= now:
                return key, None
            soonest = due - now if soonest is None else min(soonest, due - now)
        return None, soonest

    async def _deliver(self, key: int, status: P) -> None:
        try:
            await self._send(key, status)
        except Exception:
            # A status is a courtesy; the job goes on without it.
            log.warning("status of %d not updated", key, exc_info=True)
        finally:
            # Cleared here, not in a done callback, so the wake-up below sees the key free.
            self._in_flight.pop(key, None)
            self._wake.set()
