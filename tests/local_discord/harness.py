"""Start the real KontextBot in-process against a LocalDiscord, and stop it cleanly.

    async with LocalDiscord() as local, start_bot(local, extra_extensions=[PROBE]) as running:
        discord, bot = running
        interaction = await discord.slash("probe-ping")

discord.py reads two module-level globals for where Discord is (`Route.BASE`, the gateway
URL); they are set through `bot.point_at_discord` and put back afterwards, so one test's
local Discord never leaks into the next.
"""

# Waits take a `timeout` like discord.py's own `wait_for`: a test must fail, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple

import discord
from pydantic import SecretStr

from bot import KontextBot, point_at_discord
from services.settings import Settings, WaveSpeedSettings
from services.storage import Repository

from .driver import DiscordDriver
from .server import LocalDiscord

log = logging.getLogger(__name__)

PROBE_EXTENSION = "tests.local_discord.probe_cog"

# Where a test's bot keeps its jobs unless the test names a store: None is an in-memory SQLite
# store; `pytest --store postgres` sets a maker of fresh PostgreSQL databases (tests/conftest.py).
fresh_store: Callable[[], Awaitable[str]] | None = None


class RunningBot(NamedTuple):
    """What `start_bot` yields: the driver (alice in #general) and the bot itself."""

    discord: DiscordDriver
    bot: KontextBot


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def bot_settings(local: LocalDiscord, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings for a test run: no WaveSpeed key (the simulator, instantly) and this Discord."""
    data = _merge(
        {
            "discord": {"token": local.token},
            "simulator": {"latency_s": 0.0, "sync_wait_s": 5.0},
            # Each run its own job store, unless a test (a restart) shares a file between runs.
            "storage": {"database": ":memory:"},
            "jobs": {"status_interval_s": 0.2},
        },
        overrides or {},
    )
    settings = Settings(**data)
    # Whatever the environment says (DISCORD_API_BASE_URL, DISCORD_TOKEN, WAVESPEED_API_KEY...),
    # a test must only ever talk to the local Discord and, unless it asks otherwise, to the
    # WaveSpeed simulator: never to a real service with real credentials.
    local_discord = settings.discord.model_copy(
        update={
            "token": SecretStr(local.token),
            "api_base_url": local.api_base_url,
            "gateway_url": local.gateway_url,
        }
    )
    wavespeed = WaveSpeedSettings(
        **{
            # Poll the in-process simulator briskly: tests wait on results, not on backoff.
            "poll_interval_s": 0.05,
            **dict((overrides or {}).get("wavespeed") or {}),
        }
    )
    return settings.model_copy(update={"discord": local_discord, "wavespeed": wavespeed})


@contextlib.asynccontextmanager
async def start_bot(
    local: LocalDiscord,
    *,
    extra_extensions: Sequence[str] = (),
    sync: bool = True,
    sync_guild: int | None = None,
    settings_overrides: Mapping[str, Any] | None = None,
    ready_timeout: float = 10.0,
    guild_ready_timeout: float = 0.05,
    heartbeat_timeout: float = 60.0,
) -> AsyncIterator[RunningBot]:
    """Run KontextBot against `local` until the block ends; yields once it is READY.

    `sync=True` publishes the commands on start-up (as `bot.py --sync` would), which is what
    lets the driver find them; `sync_guild` syncs to that guild instead of globally.
    `heartbeat_timeout` is discord.py's: how long a silent gateway is trusted (60 s).
    """
    settings = bot_settings(local, settings_overrides)
    if settings.storage.database == ":memory:" and fresh_store is not None:
        # `pytest --store postgres`: every bot of the run on a database of its own there.
        storage = settings.storage.model_copy(update={"database": await fresh_store()})
        settings = settings.model_copy(update={"storage": storage})
    saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    point_at_discord(settings)
    repository = await Repository.open(settings.storage.database)
    bot = KontextBot(
        settings,
        repository,
        sync=sync,
        sync_guild=sync_guild,
        extra_extensions=extra_extensions,
        guild_ready_timeout=guild_ready_timeout,
        heartbeat_timeout=heartbeat_timeout,
        clock=local.clock.now,
    )
    try:
        async with bot:
            runner = asyncio.create_task(
                bot.start(settings.discord.token.get_secret_value()), name="kontext-bot"
            )
            try:
                await _until_ready(bot, runner, local, ready_timeout)
                yield RunningBot(local.driver(), bot)
            finally:
                await bot.close()
                await _finish(runner)
    finally:
        await repository.close()
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


async def _until_ready(
    bot: KontextBot, runner: asyncio.Task[None], local: LocalDiscord, timeout: float
) -> None:
    ready = asyncio.create_task(bot.wait_until_ready(), name="kontext-bot-ready")
    done, _ = await asyncio.wait(
        {ready, runner}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    if ready not in done:
        ready.cancel()
        await asyncio.gather(ready, return_exceptions=True)
        if runner in done:
            runner.result()  # the bot's own start-up error, with its traceback
        raise TimeoutError(f"the bot was not READY within {timeout}s")
    if bot.get_guild(local.guild.id) is None:
        raise AssertionError("READY came without the local guild")


async def _finish(runner: asyncio.Task[None]) -> None:
    """Wait for `bot.start()` to return after close(); its errors surface here."""
    try:
        await asyncio.wait_for(runner, timeout=10.0)
    except asyncio.CancelledError:
        if not runner.cancelled():
            raise
