"""The local Discord lets a member run an application command only where Discord would.

Real Discord never delivers an invocation the member could not make (the client does not even
offer it), so a bot tested here cannot come to rely on one: `default_member_permissions`,
`contexts` / `dm_permission`, Use Application Commands and Integrations overrides all refuse at
the driver, and the bot hears nothing.
"""

from __future__ import annotations

import discord
import pytest

from tests.local_discord import (
    PROBE_EXTENSION,
    CommandNotAllowedError,
    CommandOverride,
    DiscordDriver,
    LocalDiscord,
    OverrideType,
    Perm,
    RunningBot,
)
from tests.local_discord.models import Command

pytest_plugins = ("tests.local_discord.fixtures",)


@pytest.fixture
def bot_extensions() -> tuple[str, ...]:
    return (PROBE_EXTENSION,)


def command(local_discord: LocalDiscord, name: str) -> Command:
    found = local_discord.state.find_command(name, 1, local_discord.guild.id)
    assert found is not None, name
    return found


async def refused(driver: DiscordDriver, name: str, local_discord: LocalDiscord) -> str:
    """Run `/name` expecting a refusal; the bot must not have been sent anything."""
    before = len(local_discord.state.interactions)
    with pytest.raises(CommandNotAllowedError) as caught:
        await driver.slash(name)
    assert len(local_discord.state.interactions) == before
    return str(caught.value)


async def test_manage_server_commands_are_refused_to_members_without_it(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    reason = await refused(alice, "probe-manage", local_discord)
    assert "alice lacks MANAGE_GUILD in #general" in reason

    # With a role that grants Manage Server, alice may.
    managers = local_discord.state.create_role(
        local_discord.guild, "managers", permissions=Perm.MANAGE_GUILD
    )
    alice.give_roles(managers)
    answer = await (await alice.slash("probe-manage")).response()
    assert answer.content == "managed by alice"


async def test_administrators_and_the_owner_may_run_every_command(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    bob = alice.stranger
    admins = local_discord.state.create_role(
        local_discord.guild, "admins", permissions=Perm.ADMINISTRATOR
    )
    bob.give_roles(admins)
    assert (await (await bob.slash("probe-manage")).response()).content == "managed by bob"
    owner = local_discord.moderator()
    assert (await (await owner.slash("probe-manage")).response()).content == "managed by owner"


async def test_guild_only_commands_do_not_exist_in_dms(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    # Only global commands reach a DM; the probe's are synced globally.
    reason = await refused(alice.dm(), "probe-manage", local_discord)
    assert reason == "/probe-manage cannot be used in direct messages"


async def test_use_application_commands_is_needed_in_the_channel(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    everyone = local_discord.guild.roles[local_discord.guild.id]
    local_discord.state.set_overwrite(
        local_discord.images, everyone, deny=Perm.USE_APPLICATION_COMMANDS
    )
    in_images = alice.in_channel(local_discord.images)
    assert "Use Application Commands in #images" in await refused(
        in_images, "probe-ping", local_discord
    )
    assert (await (await alice.slash("probe-ping")).response()).content.startswith("pong")


async def test_integrations_overrides_come_before_default_permissions(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    state, guild = local_discord.state, local_discord.guild
    helpers = state.create_role(guild, "helpers")
    alice.give_roles(helpers)
    manage = command(local_discord, "probe-manage")
    ping = command(local_discord, "probe-ping")

    # A role override lets helpers run /probe-manage without Manage Server...
    state.set_command_permissions(
        guild, manage, [CommandOverride(helpers.id, OverrideType.ROLE, True)]
    )
    assert (await (await alice.slash("probe-manage")).response()).content == "managed by alice"
    # ...a member override shuts one member out of /probe-ping, which everyone else may run...
    state.set_command_permissions(
        guild, ping, [CommandOverride(alice.user.id, OverrideType.USER, False)]
    )
    assert "(server settings, Integrations)" in await refused(alice, "probe-ping", local_discord)
    assert (await (await alice.stranger.slash("probe-ping")).response()).content.startswith("pong")
    # ...and an app-wide channel override closes #images to every command of the app.
    state.set_command_permissions(
        guild, None, [CommandOverride(local_discord.images.id, OverrideType.CHANNEL, False)]
    )
    in_images = alice.stranger.in_channel(local_discord.images)
    assert "switched off in #images" in await refused(in_images, "probe-ping", local_discord)

    # The bot may read the overrides, but only a member's own token may change them.
    assert bot.application_id is not None
    read = await bot.http.get_application_command_permissions(
        bot.application_id, guild.id, manage.id
    )
    assert read["permissions"] == [{"id": str(helpers.id), "type": 1, "permission": True}]
    with pytest.raises(discord.Forbidden) as caught:
        await bot.http.edit_application_command_permissions(
            bot.application_id, guild.id, manage.id, {"permissions": []}
        )
    assert caught.value.code == 20001
    local_discord.violations.expect(code=20001)
