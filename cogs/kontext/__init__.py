"""Kontext image editing: /edit, /imagine, /combine, "Edit with Kontext", edit threads."""

from discord.ext import commands

from .._host import services_of
from ._cog import KontextCog


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(KontextCog(bot, services_of(bot)))
