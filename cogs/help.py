"""/help: what the bot does, every way to use it, and the member's own limits here."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from services.bundle import Services

from ._help import HELP
from ._host import services_of

MORE = (
    "- `/kontext usage`: what you have spent; `/kontext history`: your newest results\n"
    "- Under each result: **Reroll** (same instruction, new seed), **Undo**, **Details**"
)


class Help(commands.Cog):
    """Kontext Bot's help."""

    def __init__(self, services: Services) -> None:
        self.community = services.community

    @app_commands.command(name="help")
    async def help(self, interaction: discord.Interaction) -> None:
        """How to use Kontext Bot, and your limits here."""
        summary = await self.community.member_summary(interaction.guild_id, interaction.user.id)
        where = "in this server" if interaction.guild_id is not None else "in direct messages"
        text = f"{HELP}\n{MORE}\n\n**For you {where}:**\n{summary}"
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Help(services_of(bot)))
