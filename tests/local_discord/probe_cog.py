"""A TEST-ONLY extension: one command per interaction path, and some that break the rules.

Loaded by the end-to-end tests as an extra extension (`harness.PROBE_EXTENSION`), never by the
bot itself. The well-behaved commands show the local Discord carries every path discord.py
uses; the deliberately bad ones (`probe-late`, `-huge`, `-invalid`, `-long`, `-expired`) show
the harness catches a bot that breaks a rule. Errors Discord answers are kept in `errors` so a
test can also check what the bot saw.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

log = logging.getLogger(__name__)

REROLL_ID = "probe:reroll"
LATE_ACK_DELAY_S = 3.5


class PromptModal(discord.ui.Modal, title="New prompt"):
    """Opened by the Reroll button; its submit edits the message the button is on."""

    prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
        label="Prompt", custom_id="prompt", max_length=200
    )

    def __init__(self) -> None:
        super().__init__(timeout=None)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content=f"rerolled: {self.prompt.value}")


class RerollView(discord.ui.View):
    """Persistent (fixed custom_id, no timeout), registered with `bot.add_view`."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Reroll", custom_id=REROLL_ID, style=discord.ButtonStyle.primary)
    async def reroll(
        self, interaction: discord.Interaction, button: discord.ui.Button[RerollView]
    ) -> None:
        await interaction.response.send_modal(PromptModal())


class ProbeCog(commands.Cog):
    """Probe commands for the local Discord's own tests."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.heard: list[discord.Message] = []
        self.errors: list[discord.HTTPException] = []
        # `probe-expired` holds its followup until the test (having moved the clock) sets this.
        self.release = asyncio.Event()
        self.describe_menu = app_commands.ContextMenu(
            name="Probe: Describe", callback=self.describe
        )

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.describe_menu)
        self.bot.add_view(RerollView())

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.describe_menu.name, type=self.describe_menu.type)

    # -- well-behaved ------------------------------------------------------------------------

    @app_commands.command(name="probe-ping")
    async def ping(
        self,
        interaction: discord.Interaction,
        times: app_commands.Range[int, 1, 5] = 1,
        scale: float = 1.0,
        mood: Literal["calm", "loud"] = "calm",
    ) -> None:
        """Answer at once."""
        await interaction.response.send_message(
            f"pong x{times} scale={scale} mood={mood} for {interaction.user.name}"
        )

    @app_commands.command(name="probe-echo")
    async def echo(
        self, interaction: discord.Interaction, image: discord.Attachment, prompt: str
    ) -> None:
        """Defer, download the attachment, send it back as a followup file."""
        await interaction.response.defer(thinking=True)
        data = await image.read()
        await interaction.followup.send(
            f"echo {prompt!r}: {len(data)} bytes",
            file=discord.File(io.BytesIO(data), filename=f"echo-{image.filename}"),
        )

    @app_commands.command(name="probe-thread")
    async def thread(self, interaction: discord.Interaction, name: str) -> None:
        """Answer, start a thread on the answer, post in it."""
        await interaction.response.send_message(f"starting {name}")
        message = await interaction.original_response()
        thread = await message.create_thread(name=name, auto_archive_duration=60)
        await thread.send(
            f"inside {name}, {interaction.user.mention}",
            allowed_mentions=discord.AllowedMentions(users=[interaction.user]),
        )

    @app_commands.command(name="probe-button")
    async def button(self, interaction: discord.Interaction) -> None:
        """A message with a Reroll button (which opens a modal)."""
        await interaction.response.send_message("pick a prompt", view=RerollView())

    @app_commands.command(name="probe-progress")
    async def progress(self, interaction: discord.Interaction) -> None:
        """Edit the original response, add and remove a followup, then vanish if asked."""
        await interaction.response.send_message("working")
        await interaction.edit_original_response(content="half way")
        extra = await interaction.followup.send("a passing note", wait=True)
        await extra.delete()
        original = await interaction.original_response()
        await interaction.edit_original_response(content=f"done (was {original.content!r})")

    @app_commands.command(name="probe-manage")
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    async def manage(self, interaction: discord.Interaction) -> None:
        """For members with Manage Server, in servers only (Discord enforces both)."""
        await interaction.response.send_message(f"managed by {interaction.user.name}")

    @app_commands.command(name="probe-vanish")
    async def vanish(self, interaction: discord.Interaction) -> None:
        """Answer, then delete the answer."""
        await interaction.response.send_message("now you see me")
        await interaction.delete_original_response()

    async def describe(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Message context menu: read the target's attachments from the CDN."""
        sizes = [len(await attachment.read()) for attachment in message.attachments]
        await interaction.response.send_message(
            f"{message.author.name} said {message.content!r} with attachments of {sizes} bytes",
            ephemeral=True,
        )

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or self.bot.user not in message.mentions:
            return
        self.heard.append(message)
        await message.reply(f"heard: {message.content!r}", mention_author=False)

    # -- deliberately broken ---------------------------------------------------------------

    @app_commands.command(name="probe-late")
    async def late(self, interaction: discord.Interaction) -> None:
        """BAD: acknowledges after 3.5 s."""
        await asyncio.sleep(LATE_ACK_DELAY_S)
        try:
            await interaction.response.send_message("too late")
        except discord.HTTPException as exc:
            self.errors.append(exc)

    @app_commands.command(name="probe-huge")
    async def huge(self, interaction: discord.Interaction) -> None:
        """BAD: a file one byte over the interaction's attachment_size_limit."""
        await interaction.response.defer(thinking=True)
        data = bytes(interaction.filesize_limit + 1)
        try:
            await interaction.followup.send(file=discord.File(io.BytesIO(data), "huge.bin"))
        except discord.HTTPException as exc:
            self.errors.append(exc)

    @app_commands.command(name="probe-invalid")
    async def invalid(self, interaction: discord.Interaction) -> None:
        """BAD: an embed title over 256 characters (the spec says so)."""
        try:
            await interaction.response.send_message(embed=discord.Embed(title="t" * 300))
        except discord.HTTPException as exc:
            self.errors.append(exc)

    @app_commands.command(name="probe-long")
    async def long(self, interaction: discord.Interaction) -> None:
        """BAD: a 2001-character channel message (the spec allows 4000; bots get 2000)."""
        await interaction.response.defer(thinking=True)
        try:
            await interaction.channel.send("x" * 2001)  # type: ignore[union-attr]
        except discord.HTTPException as exc:
            self.errors.append(exc)
        await interaction.followup.send("tried a long message")

    @app_commands.command(name="probe-expired")
    async def expired(self, interaction: discord.Interaction) -> None:
        """BAD: defers, then follows up once the test has moved the clock past 15 minutes."""
        await interaction.response.defer(thinking=True)
        await self.release.wait()
        try:
            await interaction.followup.send("finally done")
        except discord.HTTPException as exc:
            self.errors.append(exc)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(ProbeCog(bot))
