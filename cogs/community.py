"""/kontext: a member's own spending, what the server's budgets leave them, their results.

Thin: it asks the services and shows the answer privately. The `/kontext` group is where
the community controls of a server (who may spend what) are to be found.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from services.bundle import Services
from services.storage import JobRecord

from ._host import services_of
from ._markdown import literal


class Community(commands.GroupCog, group_name="kontext"):
    """Kontext Bot's budgets and usage."""

    def __init__(self, services: Services) -> None:
        self.community = services.community
        self.edits = services.edits
        super().__init__()

    @app_commands.command(name="usage")
    async def usage(self, interaction: discord.Interaction) -> None:
        """What you have spent on images today and this month, and what is left."""
        usage = await self.community.usage(interaction.guild_id, interaction.user.id)
        await interaction.response.send_message(usage.text(), ephemeral=True)

    @app_commands.command(name="history")
    async def history(self, interaction: discord.Interaction) -> None:
        """Your newest results here, with links."""
        jobs = await self.edits.recent_results(interaction.user.id, interaction.guild_id)
        if not jobs:
            text = "You have no results here yet: try `/edit` or `/imagine`."
        else:
            text = "\n".join(_history_line(job, interaction.guild_id) for job in jobs)
        await interaction.response.send_message(text, ephemeral=True)


def _history_line(job: JobRecord, guild_id: int | None) -> str:
    """One result: when, the instruction (as written, cut short), the link to the message."""
    assert job.result_channel_id is not None and job.result_message_id is not None
    place = guild_id if guild_id is not None else "@me"
    link = f"https://discord.com/channels/{place}/{job.result_channel_id}/{job.result_message_id}"
    when = f"<t:{int(job.delivered_at or job.created_at)}:R>"
    prompt = job.prompt if len(job.prompt) <= PROMPT_SHOWN else job.prompt[: PROMPT_SHOWN - 1] + "…"
    return f"- {when} {literal(prompt)}: {link}"


# Enough of an instruction to recognise it. Eight lines of at most ~230 characters (an escaped
# instruction can double in length) stay under Discord's 2,000 per message.
PROMPT_SHOWN = 60


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Community(services_of(bot)))
