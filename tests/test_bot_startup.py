"""The bot's start-up, end to end against the local Discord: sync, intents, cogs, invite."""

from __future__ import annotations

import logging

import pytest

from tests.local_discord import PROBE_EXTENSION, LocalDiscord, start_bot
from tests.local_discord.gateway import MESSAGE_CONTENT

pytest_plugins = ("tests.local_discord.fixtures",)

GLOBAL_SYNC = "PUT /applications/{application_id}/commands"
GUILD_SYNC = "PUT /applications/{application_id}/guilds/{guild_id}/commands"
PRIVILEGED = MESSAGE_CONTENT | (1 << 1) | (1 << 8)  # message content, members, presences


def session_intents(local: LocalDiscord) -> int:
    (session,) = local.gateway.sessions.values()
    return session.intents


async def test_a_normal_start_syncs_nothing_and_logs_the_invite(
    local_discord: LocalDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with start_bot(local_discord, sync=False) as (_, bot):
        assert local_discord.requests_to(GLOBAL_SYNC) == []
        assert local_discord.requests_to(GUILD_SYNC) == []
        assert session_intents(local_discord) & PRIVILEGED == 0
        assert not bot.http_session.closed
    assert bot.http_session.closed
    invite = next(r.getMessage() for r in caplog.records if "invite the bot" in r.getMessage())
    assert f"client_id={local_discord.application_id}" in invite
    assert "scope=bot+applications.commands" in invite
    assert "permissions=309237763072" in invite
    # No WaveSpeed key in the test settings: the dry run is announced at start-up.
    assert any("DRY RUN" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


async def test_message_content_intent_only_when_the_operator_enables_it(
    local_discord: LocalDiscord,
) -> None:
    overrides = {"discord": {"message_content": True}}
    async with start_bot(local_discord, sync=False, settings_overrides=overrides):
        assert session_intents(local_discord) & MESSAGE_CONTENT


async def test_sync_to_one_guild_when_asked(local_discord: LocalDiscord) -> None:
    async with start_bot(
        local_discord, extra_extensions=(PROBE_EXTENSION,), sync_guild=local_discord.guild.id
    ):
        assert local_discord.requests_to(GLOBAL_SYNC) == []
        (guild_sync,) = local_discord.requests_to(GUILD_SYNC)
        assert "probe-ping" in {command["name"] for command in guild_sync.body}


async def test_a_failing_extension_is_logged_and_the_others_load(
    local_discord: LocalDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    extensions = ("tests.broken_extension", PROBE_EXTENSION)
    async with start_bot(local_discord, extra_extensions=extensions) as (alice, _):
        answer = await (await alice.slash("probe-ping")).response()
        assert answer.content.startswith("pong")
    failure = next(r for r in caplog.records if "tests.broken_extension" in r.getMessage())
    assert "failed to load" in failure.getMessage()
    assert failure.exc_info is not None
