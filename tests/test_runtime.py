"""The dry-run switch: no WaveSpeed key means the built-in simulator, said loudly."""

from __future__ import annotations

import logging
from decimal import Decimal

import aiohttp
import pytest
from pydantic import SecretStr

from services.runtime import wavespeed_client
from services.settings import DiscordSettings, Settings, SimulatorSettings, WaveSpeedSettings
from services.wavespeed import InputImage, InsufficientCreditError, model_for_path
from tests.images import make_png


def settings(**wavespeed: object) -> Settings:
    return Settings(
        discord=DiscordSettings(token=SecretStr("discord-token")),
        wavespeed=WaveSpeedSettings(poll_interval_s=0.01, **wavespeed),
        simulator=SimulatorSettings(latency_s=0, sync_wait_s=5),
    )


async def test_without_a_key_the_bot_runs_on_the_simulator(
    http_session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with wavespeed_client(settings(), http_session) as client:
        spec = model_for_path("flux-kontext-pro")
        result = await client.generate(
            spec, client.prepare(spec, prompt="add a hat", image=InputImage(make_png()))
        )

        # The dry run's account starts at [simulator] balance_usd and pays list prices.
        assert await client.balance() == Decimal("99.96")

    assert client.simulated is True
    assert result.simulated is True
    assert result.images
    assert "DRY RUN" in caplog.text
    assert "nothing is billed" in caplog.text


async def test_the_dry_run_balance_is_a_setting(http_session: aiohttp.ClientSession) -> None:
    configured = settings().model_copy(
        update={"simulator": SimulatorSettings(latency_s=0, balance_usd="0.01")}
    )
    async with wavespeed_client(configured, http_session) as client:
        assert await client.balance() == Decimal("0.01")
        spec = model_for_path("flux-kontext-pro")
        with pytest.raises(InsufficientCreditError):
            await client.generate(
                spec, client.prepare(spec, prompt="add a hat", image=InputImage(make_png()))
            )


async def test_with_a_key_the_real_service_is_used(
    http_session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    configured = settings(api_key=SecretStr("real-key"), base_url="http://127.0.0.1:9")
    async with wavespeed_client(configured, http_session) as client:
        assert client.simulated is False
    assert "DRY RUN" not in caplog.text
