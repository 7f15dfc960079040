"""The one error path for app commands, buttons and modals.

Typed service errors become the friendly sentence they carry, sent ephemerally; anything
unexpected becomes a generic message and a logged traceback. No secret and no stack trace ever
reaches a member.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from services.wavespeed import KontextError

from ._markdown import literal

log = logging.getLogger(__name__)

UNEXPECTED = "Something went wrong on my side. It has been logged; please try again later."


def message_for(error: BaseException) -> str:
    """The sentence a member reads for `error` (logging the unexpected ones)."""
    original = getattr(error, "original", None) or error
    if isinstance(original, KontextError):
        if original.own_words:
            return original.user_message
        # It may quote the member (a file name) or the image service: shown as written.
        return literal(original.user_message)
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down a little: try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.MissingPermissions):
        needed = " and ".join(map(_permission_name, error.missing_permissions))
        return f"Only members with the {needed} permission can use that."
    if isinstance(error, app_commands.BotMissingPermissions):
        return "That needs permissions that are missing here."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "That only works in a server."
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use that here."
    log.error("unexpected error in an interaction", exc_info=original)
    return UNEXPECTED


def _permission_name(name: str) -> str:
    """A permission as the Discord app names it: manage_guild is "Manage Server"."""
    return PERMISSION_NAMES.get(name, name.replace("_", " ").title())


PERMISSION_NAMES = {"manage_guild": "Manage Server"}


async def tell_member(interaction: discord.Interaction, error: BaseException) -> None:
    """Answer the interaction with the error's sentence, ephemerally, however far it got."""
    text = message_for(error)
    try:
        if interaction.response.is_done():
            await interaction.edit_original_response(
                content=f"❌ {text}", embed=None, attachments=[], view=None
            )
        else:
            await interaction.response.send_message(f"❌ {text}", ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the member about an error", exc_info=True)


class KontextTree(app_commands.CommandTree):
    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        await tell_member(interaction, error)
