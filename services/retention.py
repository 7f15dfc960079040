"""Retention: stored image bytes are dropped `[storage] retention_days` after their last use.

WaveSpeed's own copies are gone after 7 days; ours keep Reroll, Undo and Edit working on older
results for a month by default. Jobs, chains and the budget ledger are kept for good: only the
bytes go. A prune runs at start-up and then every hour, in short transactions on the store's
own connection, so it never blocks the event loop or holds jobs up for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from .storage import Repository

log = logging.getLogger(__name__)

DAY_S = 86_400.0
PRUNE_INTERVAL_S = 3_600.0


class Retention:
    """Prunes image bytes older than `days` (0 keeps them for good) on `clock`."""

    def __init__(
        self,
        repository: Repository,
        days: int,
        *,
        clock: Callable[[], float] = time.time,
        interval_s: float = PRUNE_INTERVAL_S,
    ) -> None:
        self._repository = repository
        self.days = days
        self._clock = clock
        self._interval_s = interval_s

    async def prune_once(self) -> int:
        """One prune now; how many images lost their bytes."""
        now = self._clock()
        # Webhook deliveries relayed between a fleet's processes matter while a job waits
        # (minutes): a day later they are only clutter, whatever images are kept.
        await self._repository.forget_relayed_webhooks(before=now - DAY_S)
        if self.days <= 0:
            return 0
        pruned = await self._repository.prune_images(before=now - self.days * DAY_S, at=now)
        if pruned:
            log.info(
                "retention: dropped the bytes of %d images older than %d days", pruned, self.days
            )
        return pruned

    async def run(self) -> None:
        """Prune now and every interval until cancelled; a failed prune is retried next time."""
        while True:
            try:
                await self.prune_once()
            except Exception:
                # Either engine's error, or a connection lost: the loop must outlive one pass.
                log.exception("retention: the prune failed; trying again in an hour")
            await asyncio.sleep(self._interval_s)


@contextlib.asynccontextmanager
async def keep_pruning(retention: Retention) -> AsyncIterator[Retention]:
    """Run `retention` in the background while the block runs; stop it on the way out."""
    task = asyncio.create_task(retention.run(), name="retention")
    try:
        yield retention
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
