"""Kontext image editing: /edit, /imagine, /combine, "Edit with Kontext", edit threads.

One extension, four cogs over the same services and presenter: the commands (`_commands`),
the buttons (`_actions`), plain messages (`_replies`) and the job service's life (`_jobs`).
"""

from discord.ext import commands

from .._host import services_of
from ._actions import KontextActions
from ._commands import KontextCommands
from ._jobs import KontextJobs
from ._presenter import DiscordPresenter
from ._replies import KontextReplies


async def setup(bot: commands.Bot) -> None:
    services = services_of(bot)
    presenter = DiscordPresenter(bot, services)
    await bot.add_cog(KontextCommands(bot, services))
    await bot.add_cog(KontextActions(bot, services, presenter))
    await bot.add_cog(KontextReplies(bot, services))
    await bot.add_cog(KontextJobs(bot, services, presenter))
