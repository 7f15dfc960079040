"""Status updates without holding anyone up: published, coalesced, sent under one request budget.

The job service publishes a job's latest status and moves on; a separate task sends it. Four rules,
none of them Discord-specific (the caller's `send` does the talking):

- Coalescing: only the newest status of a job waits to be sent; an unchanged one is not sent.
- Spacing: a job's status is sent at most once every `min_gap_s`, except its first and those
  published `at_once` (a new stage: few per job, and a member waits to see them).
- One budget: every request the bot makes to the chat service takes a slot of one
  `RequestBudget`; deliveries (result posts, a job's ending) are served before status edits.
- Endings win: once a job has ended, its pending status is dropped and nothing newer is sent,
  so a stale "Generating…" never overwrites "Done".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

P = TypeVar("P")

# How many ended jobs are remembered, so a late publish for one of them is ignored; job ids only
# grow, and a publish arrives at most seconds after its job's ending.
ENDED_MEMORY = 10_000
# An ending waits this long at most for its job's status edit in flight (one stuck behind a rate
# limit must not hold up a failure report).
SETTLE_TIMEOUT_S = 10.0


class RequestBudget:
    """At most `per_window` grants in any `window_s` (a sliding window), priority takers first.

    A sliding window rather than a token bucket: no burst can put more than `per_window`
    requests into any one window, which is how the chat service counts.
    """

    def __init__(
        self,
        per_window: int,
        window_s: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_window < 1:
            raise ValueError("a budget needs at least one request per window")
        self._per_window = per_window
        self._window_s = window_s
        self._clock = clock
        self._grants: deque[float] = deque()
        self._urgent: deque[object] = deque()
        self._normal: deque[object] = deque()
        self._changed = asyncio.Condition()

    async def take(self, *, priority: bool = False) -> None:
        """Wait for a slot. Priority takers go before every ordinary one, each kind in order."""
        queue = self._urgent if priority else self._normal
        ticket = object()
        async with self._changed:
            queue.append(ticket)
            try:
                while True:
                    my_turn = queue[0] is ticket and (priority or not self._urgent)
                    wait = self._until_free() if my_turn else None
                    if wait is not None and wait <= 0:
                        self._grants.append(self._clock())
                        return
                    # Not our turn: woken when a grant is made. Our turn but full: woken when
                    # the oldest grant leaves the window (or sooner, by a priority taker).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._changed.wait()
            finally:
                queue.remove(ticket)
                self._changed.notify_all()

    def _until_free(self) -> float:
        now = self._clock()
        while self._grants and self._grants[0] <= now - self._window_s:
            self._grants.popleft()
        if len(self._grants) < self._per_window:
            return 0.0
        return self._grants[0] + self._window_s - now


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
        self._ended: OrderedDict[int, None] = OrderedDict()
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
        self._ended[key] = None
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)
        self._pending.pop(key, None)
        self._last.pop(key, None)
        in_flight = self._in_flight.get(key)
        if in_flight is not None:
            await asyncio.wait({in_flight}, timeout=SETTLE_TIMEOUT_S)
        await self._budget.take(priority=True)

    async def urgent(self) -> None:
        """A slot for a delivery (a result post or a look for one), ahead of status edits."""
        await self._budget.take(priority=True)

    async def _run(self) -> None:
        while True:
            key, wait = self._next_due()
            if key is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            await self._budget.take()
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
