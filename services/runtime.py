"""Build the WaveSpeed client the settings ask for: the real service, or a dry run.

With no WaveSpeed key configured, the bot runs against the built-in simulator on a loopback port:
every feature works, no credit is spent, and it says so loudly.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from pydantic import SecretStr

from .settings import Settings
from .simulator import SimulatorConfig, run_simulator
from .wavespeed import WaveSpeedClient
from .wavespeed.client import RequestObserver

log = logging.getLogger(__name__)

DRY_RUN_BANNER = (
    "NO WAVESPEED API KEY: DRY RUN. Images come from the built-in WaveSpeed simulator at %s; "
    "nothing is billed. Set WAVESPEED_API_KEY to use the real service."
)


@asynccontextmanager
async def wavespeed_client(
    settings: Settings, session: aiohttp.ClientSession, *, observe: RequestObserver | None = None
) -> AsyncIterator[WaveSpeedClient]:
    """The client for this run; with no key, the simulator runs for as long as the context.
    `observe` is told each request's kind and seconds (the bot's metrics)."""
    if settings.wavespeed.api_key is not None:
        yield WaveSpeedClient(session, settings.wavespeed, observe=observe)
        return
    # A fresh key per run keeps the loopback simulator private to this process.
    key = secrets.token_urlsafe(24)
    config = SimulatorConfig(
        api_keys=frozenset({key}),
        latency_s=settings.simulator.latency_s,
        sync_wait_s=settings.simulator.sync_wait_s,
        balance=settings.simulator.balance_usd,
    )
    async with run_simulator(
        config, host=settings.simulator.host, port=settings.simulator.port
    ) as simulator:
        log.warning(DRY_RUN_BANNER, simulator.base_url)
        dry_run = settings.wavespeed.model_copy(
            update={"api_key": SecretStr(key), "base_url": simulator.base_url}
        )
        yield WaveSpeedClient(session, dry_run, simulated=True, observe=observe)
