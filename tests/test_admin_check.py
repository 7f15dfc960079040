"""/kontext-admin's own check: Manage Server, whatever a server's command permissions say.

Discord hides the group from members without Manage Server (default_member_permissions), but a
server's admins may hand the commands to anyone; the cog then refuses them itself."""

from __future__ import annotations

from unittest import mock

import discord
import pytest
from discord import app_commands

from cogs._errors import message_for
from cogs.admin import Admin
from services.bundle import Services


def admin_cog() -> Admin:
    return Admin(mock.NonCallableMagicMock(spec=Services))


def interaction(*, guild_id: int | None = 500, manage_guild: bool) -> discord.Interaction:
    fake = mock.NonCallableMagicMock(spec=discord.Interaction)
    fake.guild_id = guild_id
    fake.permissions = discord.Permissions(manage_guild=manage_guild)
    return fake


async def test_a_member_with_manage_server_passes() -> None:
    assert await admin_cog().interaction_check(interaction(manage_guild=True))


async def test_a_member_without_manage_server_is_refused_in_one_sentence() -> None:
    with pytest.raises(app_commands.MissingPermissions) as refused:
        await admin_cog().interaction_check(interaction(manage_guild=False))
    assert message_for(refused.value) == (
        "Only members with the Manage Server permission can use that."
    )


async def test_outside_a_server_it_is_refused() -> None:
    with pytest.raises(app_commands.NoPrivateMessage):
        await admin_cog().interaction_check(interaction(guild_id=None, manage_guild=True))


def test_the_group_is_for_servers_and_manage_server_by_default() -> None:
    group = admin_cog().app_command
    assert group is not None and group.name == "kontext-admin"
    assert group.guild_only
    assert group.default_permissions == discord.Permissions(manage_guild=True)
    names = {command.name for command in group.commands}
    assert names == {
        "settings",
        "models",
        "channels",
        "roles",
        "words",
        "nsfw",
        "safety",
        "budget",
        "cooldown",
        "ban",
        "unban",
        "log-channel",
        "usage",
        "balance",
    }
