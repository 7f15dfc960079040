"""pytest fixtures for end-to-end tests; load them in a test module with

    pytest_plugins = ("tests.local_discord.fixtures",)

and override `bot_extensions` / `bot_settings_overrides` / `local_discord_config` there to
change what runs. `local_discord` fails the test at teardown if the bot did anything real
Discord refuses (schema errors, broken limits, late acknowledgements...) that the test did not
take out of `local_discord.violations` itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from .harness import RunningBot, start_bot
from .server import LocalDiscord, LocalDiscordConfig

log = logging.getLogger(__name__)


@pytest.fixture
def local_discord_config() -> LocalDiscordConfig:
    """Override to change the local Discord (deadlines, boosts, permissions, intents)."""
    return LocalDiscordConfig()


@pytest.fixture
async def local_discord(local_discord_config: LocalDiscordConfig) -> AsyncIterator[LocalDiscord]:
    async with LocalDiscord(local_discord_config) as discord:
        yield discord
    if discord.violations:
        pytest.fail(
            "the bot did what real Discord refuses:\n" + discord.violations.describe(),
            pytrace=False,
        )


@pytest.fixture
def bot_extensions() -> tuple[str, ...]:
    """Extensions loaded after cogs/ (e.g. `harness.PROBE_EXTENSION`)."""
    return ()


@pytest.fixture
def bot_settings_overrides() -> dict[str, Any]:
    """Settings merged over the test defaults, e.g. {"discord": {"message_content": True}}."""
    return {}


@pytest.fixture
async def running_bot(
    local_discord: LocalDiscord,
    bot_extensions: tuple[str, ...],
    bot_settings_overrides: dict[str, Any],
) -> AsyncIterator[RunningBot]:
    """The real KontextBot, READY against `local_discord`: yields (driver, bot)."""
    async with start_bot(
        local_discord, extra_extensions=bot_extensions, settings_overrides=bot_settings_overrides
    ) as running:
        yield running
