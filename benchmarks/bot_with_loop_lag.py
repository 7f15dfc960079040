"""Run bot.py unchanged, plus two probes, for benchmarks/bot_end_to_end.py.

    LOOP_LAG_FILE=lag.txt [ACK_FILE=acks.txt] python benchmarks/bot_with_loop_lag.py [bot args]

The sampler is a task in the bot's own loop that sleeps 10 ms and records by how much each
sleep overshot: anything that holds the loop (a blocking call, a long callback) shows up as
overshoot. It appends "wall_time overshoot_ms" lines to LOOP_LAG_FILE and flushes them every
second, so the benchmark can read the samples of any time window while the bot runs, and a
killed bot still leaves what it measured.

With ACK_FILE set, the second probe records the bot's own share of each acknowledgement: when
the gateway frame carrying an INTERACTION_CREATE was read, and when the bot called discord.py
to send that interaction's callback, as "interaction_id received sent" lines (wall seconds).
What the chat service then takes to handle the callback is not the bot's.
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

import discord
import discord.gateway
import discord.state
import discord.webhook.async_

import bot

PERIOD_S = 0.010
FLUSH_EVERY_S = 1.0


class AckProbe:
    """Wraps three discord.py internals to timestamp interactions from frame to callback."""

    def __init__(self) -> None:
        self.frame_read_at = 0.0
        self.received: dict[int, float] = {}
        self.pending: list[str] = []

    def install(self) -> None:
        probe = self
        received_message = discord.gateway.DiscordWebSocket.received_message
        parse = discord.state.ConnectionState.parse_interaction_create
        respond = discord.webhook.async_.AsyncWebhookAdapter.create_interaction_response

        async def timed_received_message(ws: Any, msg: Any, /) -> None:
            probe.frame_read_at = time.time()
            await received_message(ws, msg)

        def timed_parse(state: Any, data: Any) -> None:
            # Called from within received_message, for the frame just read.
            probe.received[int(data["id"])] = probe.frame_read_at
            parse(state, data)

        def timed_respond(adapter: Any, interaction_id: int, *args: Any, **kwargs: Any) -> Any:
            received = probe.received.pop(interaction_id, None)
            if received is not None:
                probe.pending.append(f"{interaction_id} {received:.4f} {time.time():.4f}\n")
            return respond(adapter, interaction_id, *args, **kwargs)

        discord.gateway.DiscordWebSocket.received_message = timed_received_message  # type: ignore[method-assign]
        discord.state.ConnectionState.parse_interaction_create = timed_parse  # type: ignore[method-assign]
        discord.webhook.async_.AsyncWebhookAdapter.create_interaction_response = timed_respond  # type: ignore[method-assign]

    async def write_every_second(self, path: Path) -> None:
        with path.open("a", encoding="ascii") as out:
            try:
                while True:
                    await asyncio.sleep(FLUSH_EVERY_S)
                    out.writelines(self.pending)
                    out.flush()
                    self.pending.clear()
            finally:
                out.writelines(self.pending)


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
        probes = [asyncio.create_task(sample_loop_lag(Path(os.environ["LOOP_LAG_FILE"])))]
        if ack_file := os.environ.get("ACK_FILE"):
            ack_probe = AckProbe()
            ack_probe.install()
            probes.append(asyncio.create_task(ack_probe.write_every_second(Path(ack_file))))
        try:
            coro: Coroutine[Any, Any, None] = run(*args, **kwargs)
            await coro
        finally:
            for probe in probes:
                probe.cancel()
            await asyncio.gather(*probes, return_exceptions=True)

    return wrapped


if __name__ == "__main__":
    # bot.main looks `run` up in its module at call time, so this wraps it without a copy.
    bot.run = with_sampler(bot.run)  # type: ignore[method-assign]
    sys.exit(bot.main(sys.argv[1:]))
