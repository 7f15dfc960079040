"""Run bot.py unchanged, plus a sampler of its event loop's lag, for benchmarks/bot_end_to_end.py.

    LOOP_LAG_FILE=lag.txt python benchmarks/bot_with_loop_lag.py [bot.py's arguments]

The sampler is a task in the bot's own loop that sleeps 10 ms and records by how much each
sleep overshot: anything that holds the loop (a blocking call, a long callback) shows up as
overshoot. It appends "wall_time overshoot_ms" lines to LOOP_LAG_FILE and flushes them every
second, so the benchmark can read the samples of any time window while the bot runs, and a
killed bot still leaves what it measured.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

# Runs from the bot's working directory (a temporary one): find bot.py and services/ here.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bot

PERIOD_S = 0.010
FLUSH_EVERY_S = 1.0


async def sample_loop_lag(path: Path) -> None:
    loop = asyncio.get_running_loop()
    pending: list[str] = []
    last_flush = loop.time()
    with path.open("a", encoding="ascii") as out:
        try:
            while True:
                before = loop.time()
                await asyncio.sleep(PERIOD_S)
                now = loop.time()
                pending.append(f"{time.time():.4f} {(now - before - PERIOD_S) * 1000:.3f}\n")
                if now - last_flush >= FLUSH_EVERY_S:
                    out.writelines(pending)
                    out.flush()
                    pending.clear()
                    last_flush = now
        finally:
            out.writelines(pending)


def with_sampler(run: Any) -> Any:
    """bot.run, with the sampler running beside it for as long as the bot does."""

    async def wrapped(*args: Any, **kwargs: Any) -> None:
        sampler = asyncio.create_task(sample_loop_lag(Path(os.environ["LOOP_LAG_FILE"])))
        try:
            coro: Coroutine[Any, Any, None] = run(*args, **kwargs)
            await coro
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)

    return wrapped


if __name__ == "__main__":
    # bot.main looks `run` up in its module at call time, so this wraps it without a copy.
    bot.run = with_sampler(bot.run)  # type: ignore[method-assign]
    sys.exit(bot.main(sys.argv[1:]))
