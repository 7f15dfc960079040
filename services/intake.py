"""How much member input the bot works on at once: commands holding images, and image work.

A burst of commands must not become a burst of downloads and Pillow decodes: each holds megabytes
and the decodes compete with the event loop for the CPU. One `Intake`, created at start-up and
closed at shutdown, admits a fixed number of commands at a time, each from the download of its
images until they are prepared and stored (so downloaded bytes never pile up in front of the
image workers), and runs image work on a pool of its own with a fixed number of workers;
everything else waits its turn, in order, holding nothing but its place in line. Commands are
acknowledged before they ask to be admitted, so waiting here never costs Discord's
acknowledgement deadline.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

from .settings import LimitSettings

T = TypeVar("T")


class Intake:
    """Admission for commands with images, and a bounded pool for image work, shared by all."""

    def __init__(self, limits: LimitSettings, *, executor: Executor | None = None) -> None:
        # Pillow releases the GIL while it decodes, filters and encodes, so threads give the
        # parallelism; benchmarks/image_pool.py measured a process pool against them.
        self._executor = executor or ThreadPoolExecutor(
            max_workers=limits.image_preparations, thread_name_prefix="image"
        )
        self._admitted = asyncio.Semaphore(limits.intake_commands)
        # The executor has its own queue, but an unbounded one: the semaphore keeps work that
        # waits out of it, so a cancelled command never leaves a decode behind to run.
        self._preparations = asyncio.Semaphore(limits.image_preparations)

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold one of the command slots for as long as the block runs: download the
        command's images, prepare and store them inside it."""
        async with self._admitted:
            yield

    async def run(self, func: Callable[..., T], *args: object) -> T:
        """`func(*args)` on the image pool, once one of its workers is free."""
        async with self._preparations:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, functools.partial(func, *args))

    def close(self) -> None:
        """Stop the pool; work already running finishes first."""
        self._executor.shutdown(wait=True, cancel_futures=True)


@asynccontextmanager
async def open_intake(limits: LimitSettings) -> AsyncIterator[Intake]:
    """An `Intake` for as long as the context; its pool is shut down on the way out."""
    intake = Intake(limits)
    try:
        yield intake
    finally:
        # Shutting down waits for running work, so it must not hold the event loop.
        await asyncio.to_thread(intake.close)
