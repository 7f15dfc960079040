"""What every way into Kontext shares: acknowledging an interaction and describing who used
it and where (an `Origin`), reading attachments, and editing the image of a message.

It imports nothing else of this package, so every module of it may use this one."""

from __future__ import annotations

from typing import Any

import discord

from services.bundle import Services
from services.images import MAX_INPUT_BYTES, ImageTooLargeError
from services.origin import Origin
from services.storage import JobRecord
from services.wavespeed import InvalidInputError, KontextError

TOKEN_LIFETIME_S = 15 * 60


class AttachmentUnreadableError(KontextError):
    default_message = "I couldn't download that attachment from Discord. Please try again."


class NoImageError(KontextError):
    default_message = "That message has no image for me to edit."


def images_of(message: discord.Message) -> list[discord.Attachment]:
    # content_type is only a hint (the bytes are checked later); it keeps text files out.
    return [
        a
        for a in message.attachments
        if (a.content_type or "").startswith("image/") or a.width is not None
    ]


async def read_attachment(attachment: discord.Attachment) -> bytes:
    """The attachment's bytes, refusing oversized files before downloading them.

    Callers download inside `Intake.admit()`, after acknowledging the interaction, so waiting
    for a slot cannot cost Discord's 3 s deadline.
    """
    if attachment.size > MAX_INPUT_BYTES:
        raise ImageTooLargeError(attachment.size, filename=attachment.filename)
    try:
        return await attachment.read()
    except (discord.HTTPException, discord.NotFound) as exc:
        raise AttachmentUnreadableError() from exc


async def edit_message_image(
    services: Services, origin: Origin, message: discord.Message, instruction: str, number: int
) -> JobRecord:
    """Edit image `number` of `message`: a result of ours continues its chain, a member's
    image starts one."""
    edits = services.edits
    result = await edits.result_for_message(message.id)
    if result is not None:
        return await edits.edit_result(origin, result.id, instruction, image_number=number)
    images = images_of(message)
    if not images:
        raise NoImageError()
    if not 1 <= number <= len(images):
        raise InvalidInputError(f"That message has {len(images)} images; pick 1 to {len(images)}.")
    attachment = images[number - 1]
    async with services.intake.admit():
        return await edits.new_edit(
            origin,
            await read_attachment(attachment),
            instruction,
            filename=attachment.filename,
        )


async def begin(interaction: discord.Interaction) -> Origin:
    """Acknowledge at once (privately), then describe who asked and where."""
    answer = await interaction.response.defer(ephemeral=True, thinking=True)
    # Discord names the "thinking…" message in its answer; asking again costs a request.
    status_id = answer.message_id if answer is not None else None
    if status_id is None:
        status_id = (await interaction.original_response()).id
    return origin_of(interaction, status_message_id=status_id)


def origin_of(interaction: discord.Interaction, *, status_message_id: int | None = None) -> Origin:
    """Who used an interaction, and where (without acknowledging it)."""
    return Origin(
        member_id=interaction.user.id,
        channel_id=interaction.channel_id or 0,
        guild_id=interaction.guild_id,
        parent_channel_id=parent_of(interaction.channel),
        role_ids=roles_of(interaction.user),
        age_restricted=is_nsfw(interaction.channel),
        upload_limit=interaction.filesize_limit,
        interaction_token=interaction.token,
        token_expires_at=interaction.created_at.timestamp() + TOKEN_LIFETIME_S,
        can_manage=interaction.permissions.manage_messages,
        status_message_id=status_message_id,
    )


def parent_of(channel: Any) -> int | None:
    """A thread's parent channel (None for anything else)."""
    return channel.parent_id if isinstance(channel, discord.Thread) else None


def roles_of(user: discord.User | discord.Member) -> frozenset[int]:
    return (
        frozenset(role.id for role in user.roles)
        if isinstance(user, discord.Member)
        else frozenset()
    )


def is_nsfw(channel: Any) -> bool:
    check = getattr(channel, "is_nsfw", None)
    return bool(check()) if callable(check) else False
