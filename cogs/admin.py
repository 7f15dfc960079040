"""/kontext-admin: a server's rules for Kontext Bot, changed by members with Manage Server.

Thin: each command reads its options, asks the community service and shows the result, only
to the admin who asked. Discord hides the group from members without Manage Server, but a
server may give the commands to anyone, so the cog checks the permission itself as well
(`interaction_check`). `balance` (what is left on the WaveSpeed account) is to join them.
"""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands
from discord.app_commands import Choice
from discord.ext import commands

from services.bundle import Services
from services.community import ListName, tidy_word
from services.rules import NsfwPolicy, ServerRules
from services.wavespeed import InvalidInputError
from services.wavespeed.catalog import COMMAND_FAMILIES, Family

from ._admin_render import (
    NSFW_WORDS,
    budgets_text,
    channels_text,
    cooldown_text,
    roles_text,
    safety_text,
    settings_embed,
    usage_embed,
    words_text,
)
from ._host import services_of
from ._markdown import literal

ListAction = Literal["add", "remove", "clear"]
# A message holds 2,000 characters; the words list leaves room for a line around it.
WORDS_SHOWN = 1_800


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Admin(commands.GroupCog, group_name="kontext-admin"):
    """Kontext Bot's rules for this server (Manage Server)."""

    def __init__(self, services: Services) -> None:
        self.community = services.community
        self.account = services.account
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Manage Server, whatever the server's command permissions say."""
        if interaction.guild_id is None:
            raise app_commands.NoPrivateMessage()
        if not interaction.permissions.manage_guild:
            raise app_commands.MissingPermissions(["manage_guild"])
        return True

    @app_commands.command(name="settings")
    async def settings(self, interaction: discord.Interaction) -> None:
        """Everything in force for Kontext Bot in this server."""
        guild_id = _guild(interaction)
        rules = await self.community.rules(guild_id)
        banned = await self.community.banned(guild_id)
        await _answer(interaction, embed=settings_embed(rules, len(banned)))

    @app_commands.command(name="models")
    @app_commands.describe(
        offered="The models members may choose, e.g. pro dev (pro, max, dev, dev-ultra-fast)",
        default="The model used when a member names none",
    )
    @app_commands.choices(
        default=[Choice(name=f.display_name, value=f.value) for f in COMMAND_FAMILIES]
    )
    async def models(
        self,
        interaction: discord.Interaction,
        offered: app_commands.Range[str, 1, 100] | None = None,
        default: str | None = None,
    ) -> None:
        """Choose the models offered here and the default one."""
        guild_id = _guild(interaction)
        if offered is None and default is None:
            rules = await self.community.rules(guild_id)
        else:
            rules = await self.community.change_models(
                guild_id,
                interaction.user.id,
                offered,
                Family(default) if default is not None else None,
            )
        await _answer(interaction, _models_text(rules))

    @app_commands.command(name="channels")
    @app_commands.describe(
        action="Add a channel to the list, take one off, or clear it (every channel)",
        channel="The channel to add or remove (its threads count too)",
    )
    async def channels(
        self,
        interaction: discord.Interaction,
        action: ListAction,
        channel: discord.TextChannel | None = None,
    ) -> None:
        """The channels I work in (none listed: every channel)."""
        said = await self._change_list(
            interaction,
            "channels",
            action,
            channel.id if channel else None,
            channel.mention if channel else "",
        )
        rules = await self.community.rules(_guild(interaction))
        await _answer(interaction, f"{said}\nI work in: {channels_text(rules.channels)}.")

    @app_commands.command(name="roles")
    @app_commands.describe(
        action="Add a role to the list, take one off, or clear it (everyone)",
        role="The role to add or remove",
    )
    async def roles(
        self,
        interaction: discord.Interaction,
        action: ListAction,
        role: discord.Role | None = None,
    ) -> None:
        """The roles whose members may use me (none listed: everyone)."""
        said = await self._change_list(
            interaction, "roles", action, role.id if role else None, role.mention if role else ""
        )
        rules = await self.community.rules(_guild(interaction))
        await _answer(interaction, f"{said}\nWho may use me: {roles_text(rules.roles)}.")

    @app_commands.command(name="words")
    @app_commands.describe(
        action="Block a word or phrase, unblock one, clear the list, or list it",
        word="The word or phrase (whole words, any case)",
    )
    async def words(
        self,
        interaction: discord.Interaction,
        action: Literal["add", "remove", "clear", "list"],
        word: app_commands.Range[str, 1, 100] | None = None,
    ) -> None:
        """Words or phrases refused in instructions here."""
        said = ""
        if action != "list":
            word = tidy_word(word) if word is not None else None
            shown = f"`{word}`" if word and "`" not in word else literal(word or "")
            said = await self._change_list(interaction, "blocked_words", action, word, shown)
            said += "\n"
        rules = await self.community.rules(_guild(interaction))
        listed = words_text(rules.blocked_words, limit=WORDS_SHOWN)
        await _answer(interaction, f"{said}Blocked ({len(rules.blocked_words)}): {listed}")

    async def _change_list(
        self,
        interaction: discord.Interaction,
        name: ListName,
        action: str,
        value: int | str | None,
        shown: str,
    ) -> str:
        guild_id, by = _guild(interaction), interaction.user.id
        if action == "clear":
            await self.community.change(guild_id, by, **{name: ()})
            return "Cleared."
        if value is None:
            what = {"channels": "a channel", "roles": "a role", "blocked_words": "a word"}[name]
            raise InvalidInputError(f"Name {what} to {action}.")
        if action == "add":
            added = await self.community.add_to(guild_id, by, name, value)
            return f"Added {shown}." if added else f"{shown} was already on the list."
        removed = await self.community.remove_from(guild_id, by, name, value)
        return f"Removed {shown}." if removed else f"{shown} was not on the list."

    @app_commands.command(name="nsfw")
    @app_commands.describe(policy="What happens to an image the image service flags as NSFW")
    @app_commands.choices(
        policy=[Choice(name=words, value=policy.value) for policy, words in NSFW_WORDS.items()]
    )
    async def nsfw(self, interaction: discord.Interaction, policy: str) -> None:
        """What happens to images flagged as NSFW."""
        rules = await self._change(interaction, nsfw=NsfwPolicy(policy))
        await _answer(interaction, f"NSFW images: {NSFW_WORDS[rules.nsfw]}.")

    @app_commands.command(name="safety")
    @app_commands.describe(highest="The highest safety tolerance members may choose")
    @app_commands.choices(
        highest=[
            Choice(name="1 (strictest)", value="1"),
            *(Choice(name=str(level), value=str(level)) for level in (2, 3, 4)),
            Choice(name="5 (most permissive)", value="5"),
            Choice(name="Any", value="any"),
        ]
    )
    async def safety(self, interaction: discord.Interaction, highest: str) -> None:
        """The highest safety tolerance members may choose."""
        value = None if highest == "any" else int(highest)
        rules = await self._change(interaction, max_safety_tolerance=value)
        await _answer(
            interaction, f"Highest safety tolerance: {safety_text(rules.max_safety_tolerance)}."
        )

    @app_commands.command(name="budget")
    @app_commands.describe(
        server_daily="What this server may spend per day, in US dollars; none or default",
        server_monthly="What this server may spend per month, in US dollars; none or default",
        member_daily="What each member may spend per day, in US dollars; none or default",
        member_images="How many images each member may make per day; none or default",
    )
    async def budget(
        self,
        interaction: discord.Interaction,
        server_daily: app_commands.Range[str, 1, 20] | None = None,
        server_monthly: app_commands.Range[str, 1, 20] | None = None,
        member_daily: app_commands.Range[str, 1, 20] | None = None,
        member_images: app_commands.Range[str, 1, 20] | None = None,
    ) -> None:
        """Budgets here ("none" for no cap, "default" for the bot's own setting)."""
        rules = await self.community.change_budget(
            _guild(interaction),
            interaction.user.id,
            server_daily_usd=server_daily,
            server_monthly_usd=server_monthly,
            member_daily_usd=member_daily,
            member_daily_images=member_images,
        )
        await _answer(interaction, f"**Budgets** (reset at 00:00 UTC)\n{budgets_text(rules)}")

    @app_commands.command(name="cooldown")
    @app_commands.describe(seconds="Seconds between the starts of a member's jobs (0: none)")
    async def cooldown(
        self, interaction: discord.Interaction, seconds: app_commands.Range[int, 0, 86_400]
    ) -> None:
        """How long a member waits between images."""
        rules = await self._change(interaction, cooldown_s=seconds)
        await _answer(interaction, f"Cooldown: {cooldown_text(rules.cooldown_s)}.")

    @app_commands.command(name="ban")
    @app_commands.describe(member="The member who may no longer use me here")
    async def ban(self, interaction: discord.Interaction, member: discord.User) -> None:
        """Stop a member from using me in this server."""
        if member.bot:
            raise InvalidInputError("Bots cannot use me, so there is nobody to ban.")
        if member.id == interaction.user.id:
            raise InvalidInputError("You cannot ban yourself.")
        banned = await self.community.ban(_guild(interaction), member.id, interaction.user.id)
        await _answer(
            interaction,
            f"{member.mention} can no longer use me here."
            if banned
            else f"{member.mention} was already banned.",
        )

    @app_commands.command(name="unban")
    @app_commands.describe(member="The member who may use me here again")
    async def unban(self, interaction: discord.Interaction, member: discord.User) -> None:
        """Let a banned member use me in this server again."""
        lifted = await self.community.unban(_guild(interaction), member.id)
        await _answer(
            interaction,
            f"{member.mention} can use me here again."
            if lifted
            else f"{member.mention} was not banned.",
        )

    @app_commands.command(name="log-channel")
    @app_commands.describe(channel="The channel for moderators' notes; leave it out for none")
    async def log_channel(
        self, interaction: discord.Interaction, channel: discord.TextChannel | None = None
    ) -> None:
        """The channel for moderators' notes about the bot."""
        await self._change(interaction, log_channel_id=channel.id if channel else None)
        await _answer(
            interaction,
            f"Log channel: {channel.mention}." if channel else "No log channel.",
        )

    @app_commands.command(name="usage")
    async def usage(self, interaction: discord.Interaction) -> None:
        """What this server has spent today and this month, by member and by model."""
        usage = await self.community.server_usage(_guild(interaction))
        await _answer(interaction, embed=usage_embed(usage))

    @app_commands.command(name="balance")
    async def balance(self, interaction: discord.Interaction) -> None:
        """What is left on the WaveSpeed account that pays for every image."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        balance = await self.account.balance()
        await interaction.followup.send(balance.text(), ephemeral=True)

    async def _change(self, interaction: discord.Interaction, **changes: object) -> ServerRules:
        return await self.community.change(_guild(interaction), interaction.user.id, **changes)


def _guild(interaction: discord.Interaction) -> int:
    # interaction_check let only server interactions through.
    assert interaction.guild_id is not None
    return interaction.guild_id


def _models_text(rules: ServerRules) -> str:
    offered = ", ".join(family.display_name for family in rules.models)
    return f"Models offered: {offered}.\nDefault: {rules.default_model.display_name}."


async def _answer(
    interaction: discord.Interaction, text: str | None = None, *, embed: discord.Embed | None = None
) -> None:
    if embed is not None:
        await interaction.response.send_message(text, embed=embed, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Admin(services_of(bot)))
