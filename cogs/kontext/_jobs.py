"""The job service's life in the extension: started once the bot is ready, stopped on unload.

How depends on the process's role (services.bundle.Role): alone it drives jobs once the
gateway is READY (recovered jobs post into channels it must see); a fleet's gateway only
stores them; a worker has no gateway and drives them as soon as it is logged in.
"""

from __future__ import annotations

import asyncio
import contextlib

from discord.ext import commands

from services.bundle import Role, Services

from ._presenter import DiscordPresenter


class KontextJobs(commands.Cog):
    """Runs the job service for as long as the extension is loaded."""

    def __init__(self, bot: commands.Bot, services: Services, presenter: DiscordPresenter) -> None:
        self.bot = bot
        self.jobs = services.jobs
        self.role = services.role
        self.presenter = presenter
        self._starter: asyncio.Task[None] | None = None

    async def cog_load(self) -> None:
        self._starter = asyncio.create_task(self._start_jobs(), name="start-jobs")

    async def cog_unload(self) -> None:
        if self._starter is not None:
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
        await self.jobs.stop()

    async def _start_jobs(self) -> None:
        if self.role is Role.ALL:
            # Recovered jobs post into channels: wait until the bot can see them.
            await self.bot.wait_until_ready()
        await self.jobs.start(self.presenter, schedule=self.role.runs_jobs)
