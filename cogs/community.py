"""/kontext: a member's own spending and what the server's budgets leave them.

Thin: it asks the budget service and shows the answer privately. The `/kontext` group is where
the community controls of a server (who may spend what) are to be found.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from services.bundle import Services

from ._host import services_of


class Community(commands.GroupCog, group_name="kontext"):
    """Kontext Bot's budgets and usage."""

    def __init__(self, services: Services) -> None:
        self.budgets = services.budgets
        super().__init__()

    @app_commands.command(name="usage")
    async def usage(self, interaction: discord.Interaction) -> None:
        """What you have spent on images today and this month, and what is left."""
        usage = await self.budgets.usage(interaction.guild_id, interaction.user.id)
        await interaction.response.send_message(usage.text(), ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Community(services_of(bot)))
