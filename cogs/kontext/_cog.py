"""The Discord surface of Kontext: /edit, /imagine, /combine, the context menu, replies.

Thin on purpose: acknowledge first, read attachments, describe the member and the place in an
`Origin`, call the edit service, show where the job stands. The work is in services/.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import Range
from discord.ext import commands

from services.bundle import Services
from services.edits import EditService, Origin
from services.images import MAX_INPUT_BYTES, ImageTooLargeError
from services.intake import Intake
from services.jobs import CancelOutcome, JobService
from services.prompts import MAX_PROMPT_CHARS, check_prompt
from services.storage import JobRecord
from services.wavespeed import InvalidInputError, KontextError

from .._errors import message_for
from . import _render as render
from ._choices import (
    ASPECT_RATIO_CHOICES,
    COMBINE_MODELS,
    DEFAULT_MODEL,
    EDIT_MODELS,
    FORMAT_CHOICES,
    IMAGINE_MODELS,
    SAFETY_CHOICES,
)
from ._content import MENU_NAME, HiddenImageError, HintOnce, UnreadMessageError, content_hidden
from ._presenter import DEFAULT_UPLOAD_LIMIT, DiscordPresenter
from ._views import InstructionModal, JobButton

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 15 * 60
# Discord's client holds slash commands to the prompt rule's length; the rule itself
# (services/prompts.py) is checked on every path.
Prompt = Range[str, 1, MAX_PROMPT_CHARS]
# What a mention that asks for nothing gets back: every way in, in a few lines.
HELP = (
    "I edit and make images with FLUX.1 Kontext:\n"
    '- `/edit`: attach an image and say what to change, e.g. "make it a watercolor"\n'
    "- `/imagine`: make images from a description\n"
    "- `/combine`: put several images together into one\n"
    "- **Edit with Kontext**: in the Apps menu of any message with an image\n"
    "- Reply to one of my results (or to your image) mentioning me, with what to change; "
    "the **Edit** button under a result works too"
)
HELP_WORDS = frozenset({"help", "commands", "how", "info", "usage"})


class AttachmentUnreadableError(KontextError):
    default_message = "I couldn't download that attachment from Discord. Please try again."


class NoImageError(KontextError):
    default_message = "That message has no image for me to edit."


class NoInstructionError(KontextError):
    default_message = (
        'Tell me what to change, e.g. "make it a watercolor" or "swap the background for a beach".'
    )


def _is_nsfw(channel: Any) -> bool:
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def _images_of(message: discord.Message) -> list[discord.Attachment]:
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


class KontextCog(commands.Cog, name="Kontext"):
    """FLUX.1 Kontext image editing."""

    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.edits: EditService = services.edits
        self.jobs: JobService = services.jobs
        self.intake: Intake = services.intake
        self.presenter = DiscordPresenter(bot, services)
        self.edit_menu = app_commands.ContextMenu(name=MENU_NAME, callback=self.edit_menu_callback)
        # Whether Discord shows the bot other members' messages (the Message Content intent;
        # start-up fails if it is asked for and not granted).
        self.reads_content = bool(bot.intents.message_content)
        self.hints = HintOnce()
        self._starter: asyncio.Task[None] | None = None

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.edit_menu)
        self.bot.add_dynamic_items(JobButton)
        self._starter = asyncio.create_task(self._start_jobs(), name="start-jobs")

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.edit_menu.name, type=self.edit_menu.type)
        self.bot.remove_dynamic_items(JobButton)
        if self._starter is not None:
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
        await self.jobs.stop()

    async def _start_jobs(self) -> None:
        # Recovered jobs post into channels: wait until the bot can see them.
        await self.bot.wait_until_ready()
        await self.jobs.start(self.presenter)

    # --- Slash commands -------------------------------------------------------------------------

    @app_commands.command(name="edit")
    @app_commands.describe(
        image="The image to edit",
        prompt="What to change, e.g. 'make it a watercolor'",
        model="Which Kontext model (default: Pro)",
        guidance="How closely to follow the instruction (Pro/Max 1-10, Dev 1-20)",
        seed="Same seed + same instruction = same image",
        safety_tolerance="Content filter: 1 strictest, 5 most permissive (Pro, Max)",
        aspect_ratio="Shape of the result (Max only)",
        steps="Inference steps, 1-50 (Dev only)",
        size="Output size as WIDTH*HEIGHT, 256-1536 per side (Dev only)",
        output_format="jpeg, png or webp (Dev only)",
    )
    @app_commands.choices(
        model=EDIT_MODELS, aspect_ratio=ASPECT_RATIO_CHOICES, output_format=FORMAT_CHOICES
    )
    @app_commands.choices(safety_tolerance=SAFETY_CHOICES)  # integers: a list of their own for mypy
    async def edit(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: Prompt,
        model: str = DEFAULT_MODEL,
        guidance: Range[float, 0.0, 20.0] | None = None,
        seed: Range[int, -1, 9_999_999_999] | None = None,
        safety_tolerance: int | None = None,
        aspect_ratio: str | None = None,
        steps: Range[int, 1, 50] | None = None,
        size: str | None = None,
        output_format: str | None = None,
    ) -> None:
        """Edit an image with an instruction."""
        origin = await self._begin(interaction)
        options = {
            "guidance_scale": guidance,
            "seed": seed,
            "safety_tolerance": safety_tolerance,
            "aspect_ratio": aspect_ratio,
            "num_inference_steps": steps,
            "size": size,
            "output_format": output_format,
        }
        async with self.intake.admit():
            await self.edits.new_edit(
                origin,
                await read_attachment(image),
                prompt,
                filename=image.filename,
                model=model,
                options=options,
            )

    @app_commands.command(name="imagine")
    @app_commands.describe(
        prompt="What to make",
        model="Kontext Pro (default) or Max",
        aspect_ratio="Shape of the image (default 1:1)",
        count="How many images, 1-4",
        seed="Same seed + same prompt = same image",
        guidance="How closely to follow the prompt",
        safety_tolerance="1 strictest, 5 most permissive",
    )
    @app_commands.choices(model=IMAGINE_MODELS, aspect_ratio=ASPECT_RATIO_CHOICES)
    @app_commands.choices(safety_tolerance=SAFETY_CHOICES)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        model: str = DEFAULT_MODEL,
        aspect_ratio: str | None = None,
        count: Range[int, 1, 4] = 1,
        seed: Range[int, -1, 2_147_483_647] | None = None,
        guidance: Range[float, 1.0, 20.0] | None = None,
        safety_tolerance: int | None = None,
    ) -> None:
        """Make images from a description."""
        origin = await self._begin(interaction)
        options = {
            "aspect_ratio": aspect_ratio,
            "num_images": count if count > 1 else None,
            "seed": seed,
            "guidance_scale": guidance,
            "safety_tolerance": safety_tolerance,
        }
        await self.edits.imagine(origin, prompt, model=model, options=options)

    @app_commands.command(name="combine")
    @app_commands.describe(
        prompt="How to combine them, e.g. 'put the cat on the sofa'",
        image1="First image",
        image2="Second image",
        image3="Third image (optional)",
        image4="Fourth image (optional)",
        image5="Fifth image (optional; Pro and Max)",
        model="Which Kontext model (default: Pro)",
        aspect_ratio="Shape of the result",
    )
    @app_commands.choices(model=COMBINE_MODELS, aspect_ratio=ASPECT_RATIO_CHOICES)
    async def combine(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        model: str = DEFAULT_MODEL,
        aspect_ratio: str | None = None,
    ) -> None:
        """Combine several images into one."""
        origin = await self._begin(interaction)
        attachments = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        async with self.intake.admit():
            files = [(await read_attachment(a), a.filename) for a in attachments]
            await self.edits.combine(
                origin, files, prompt, model=model, options={"aspect_ratio": aspect_ratio}
            )

    # --- Context menu, buttons, modals ----------------------------------------------------------

    async def edit_menu_callback(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        """Edit with Kontext: ask for the instruction, then edit the message's image."""
        result = await self.edits.result_for_message(message.id)
        if result is None and not _images_of(message):
            raise NoImageError()
        count = len(await self.edits.outputs(result.id)) if result else 1
        await interaction.response.send_modal(
            InstructionModal(title="Edit with Kontext", target=message, image_count=count)
        )

    async def on_instruction(
        self, interaction: discord.Interaction, target: Any, instruction: str, image_number: str
    ) -> None:
        """A submitted instruction modal: from the Edit button (a job id) or the menu."""
        number = _image_number(image_number)
        origin = await self._begin(interaction)
        if isinstance(target, int):
            await self.edits.edit_result(origin, target, instruction, image_number=number)
        else:
            await self._edit_message_image(origin, target, instruction, number)

    async def on_job_button(
        self, interaction: discord.Interaction, action: str, job_id: int
    ) -> None:
        if action == "edit":
            count = len(await self.edits.outputs(job_id))
            await interaction.response.send_modal(
                InstructionModal(title="Edit this image", target=job_id, image_count=count)
            )
        elif action == "reroll":
            origin = await self._begin(interaction)
            await self.edits.reroll(origin, job_id)
        elif action == "undo":
            origin = await self._begin(interaction)
            current = await self.edits.job(job_id)
            previous, outputs = await self.edits.undo(origin, job_id)
            posted = await self.presenter.post_result(previous, outputs, undo_of=current.step)
            await self.edits.record_post(previous, posted)
            await interaction.edit_original_response(
                content=f"↩️ Back to step {previous.step}: {posted.url}"
            )
        elif action == "retry":
            origin = await self._begin(interaction)
            await self.edits.retry(origin, job_id)
        elif action == "details":
            details = await self.edits.details(job_id)
            await interaction.response.send_message(
                embed=render.details_embed(
                    details.job, details.history, simulated=self.services.simulated
                ),
                ephemeral=True,
            )
        elif action == "delete":
            await self.edits.check_may_change(self._origin_of(interaction), job_id)
            await interaction.response.defer(ephemeral=True, thinking=True)
            if interaction.message is not None:
                await interaction.message.delete()
                await self.edits.forget_message(interaction.message.id)
            await interaction.edit_original_response(content="🗑️ Deleted.")
        elif action == "cancel":
            outcome = await self.jobs.cancel(job_id, interaction.user.id)
            if outcome == CancelOutcome.CANCELLED:
                await interaction.response.edit_message(
                    content="🚫 Cancelled. Nothing was charged.", view=None
                )
            elif outcome == CancelOutcome.NOT_YOURS:
                await interaction.response.send_message(
                    "Only the person who asked for this image can cancel it.", ephemeral=True
                )
            else:
                await interaction.response.send_message(
                    "It has already started, so it can't be cancelled any more.", ephemeral=True
                )

    # --- Replies and thread messages ------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or self.bot.user is None:
            return
        mentioned = self.bot.user in message.mentions
        head = None
        if isinstance(message.channel, discord.Thread):
            head = await self.edits.head_of_thread(message.channel.id)
        if not mentioned and not await self._for_me_unmentioned(message, head):
            return
        if mentioned and self._asks_for_help(message):
            await message.reply(HELP, mention_author=False)
            return
        status: discord.Message | None = None
        try:
            plan = await self._plan(message, head)
            instruction = self._instruction(message)
            if not instruction:
                raise NoInstructionError()
            check_prompt(instruction)  # refused before a status line says "Queued"
            status = await message.reply("⏳ Queued…", mention_author=False)
            job = await self._run_plan(self._origin_of_message(message, status), plan, instruction)
        except Exception as exc:  # the one error path, for plain messages
            text = f"❌ {message_for(exc)}"
            if status is None:
                await message.reply(text, mention_author=False)
            else:
                await status.edit(content=text)
            return
        # From here on the job service keeps the status reply up to date.
        log.debug("job %d queued from message %d", job.id, message.id)

    async def _plan(self, message: discord.Message, head: JobRecord | None) -> tuple[str, Any]:
        """What a message asks to edit: ("result", job id) or ("image", message)."""
        reference = message.reference
        if reference is not None and reference.message_id is not None:
            resolved = reference.resolved
            target = (
                resolved
                if isinstance(resolved, discord.Message)
                else await message.channel.fetch_message(reference.message_id)
            )
            result = await self.edits.result_for_message(target.id)
            if result is not None:
                return "result", result.id
            if _images_of(target):
                return "image", target
            if self._hidden(target):
                # It may well have an image: Discord does not show it to the bot.
                raise HiddenImageError()
        if _images_of(message):
            return "image", message
        if head is not None:
            return "result", head.id
        raise NoImageError()

    async def _for_me_unmentioned(self, message: discord.Message, head: JobRecord | None) -> bool:
        """Whether a message that does not mention the bot is for it all the same: one in an
        edit thread, or a reply to one of its results.

        Without the Message Content intent Discord withholds such a message's text. The member
        is then told, once per channel or thread, how to reach the bot, and it goes no further.
        """
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return False  # pins, joins, renames: nobody asked for anything
        if head is None and not await self._replies_to_result(message):
            return False
        if not self._hidden(message):
            return bool(message.content)
        if self.hints.first_time(message.channel.id, message.author.id):
            assert self.bot.user is not None
            error = UnreadMessageError(self.bot.user.mention)
            try:
                await message.reply(f"❌ {message_for(error)}", mention_author=False)
            except discord.HTTPException:
                log.warning("could not tell a member to mention the bot", exc_info=True)
        return False

    async def _replies_to_result(self, message: discord.Message) -> bool:
        reference = message.reference
        resolved = reference.resolved if reference is not None else None
        return (
            isinstance(resolved, discord.Message)
            and self.bot.user is not None
            and resolved.author.id == self.bot.user.id
            and await self.edits.result_for_message(resolved.id) is not None
        )

    def _hidden(self, message: discord.Message) -> bool:
        """Whether Discord emptied `message` for this bot (see `_content`)."""
        assert self.bot.user is not None
        return content_hidden(message, self.bot.user, intent=self.reads_content)

    async def _run_plan(self, origin: Origin, plan: tuple[str, Any], instruction: str) -> JobRecord:
        kind, target = plan
        if kind == "result":
            return await self.edits.edit_result(origin, target, instruction)
        return await self._edit_message_image(origin, target, instruction, 1)

    def _asks_for_help(self, message: discord.Message) -> bool:
        """Whether a mention asks for help ("@Bot help"), or for nothing at all: no
        instruction, no reply, no image."""
        words = self._instruction(message).strip(" ?!.").casefold()
        if words in HELP_WORDS:
            return True
        return not words and message.reference is None and not _images_of(message)

    def _instruction(self, message: discord.Message) -> str:
        assert self.bot.user is not None
        mention = re.compile(rf"<@!?{self.bot.user.id}>")
        return " ".join(mention.sub(" ", message.content).split())

    # --- Helpers --------------------------------------------------------------------------------

    async def _edit_message_image(
        self, origin: Origin, message: discord.Message, instruction: str, number: int
    ) -> JobRecord:
        result = await self.edits.result_for_message(message.id)
        if result is not None:
            return await self.edits.edit_result(origin, result.id, instruction, image_number=number)
        images = _images_of(message)
        if not images:
            raise NoImageError()
        if not 1 <= number <= len(images):
            raise InvalidInputError(
                f"That message has {len(images)} images; pick 1 to {len(images)}."
            )
        attachment = images[number - 1]
        async with self.intake.admit():
            return await self.edits.new_edit(
                origin,
                await read_attachment(attachment),
                instruction,
                filename=attachment.filename,
            )

    async def _begin(self, interaction: discord.Interaction) -> Origin:
        """Acknowledge at once (privately), then describe who asked and where."""
        answer = await interaction.response.defer(ephemeral=True, thinking=True)
        # Discord names the "thinking…" message in its answer; asking again costs a request.
        status_id = answer.message_id if answer is not None else None
        if status_id is None:
            status_id = (await interaction.original_response()).id
        return self._origin_of(interaction, status_message_id=status_id)

    def _origin_of(
        self, interaction: discord.Interaction, *, status_message_id: int | None = None
    ) -> Origin:
        channel = interaction.channel
        return Origin(
            member_id=interaction.user.id,
            channel_id=interaction.channel_id or 0,
            guild_id=interaction.guild_id,
            nsfw_allowed=_is_nsfw(channel),
            upload_limit=interaction.filesize_limit,
            interaction_token=interaction.token,
            token_expires_at=interaction.created_at.timestamp() + TOKEN_LIFETIME_S,
            can_manage=interaction.permissions.manage_messages,
            status_message_id=status_message_id,
        )

    def _origin_of_message(self, message: discord.Message, status: discord.Message) -> Origin:
        channel = message.channel
        guild = message.guild
        author = message.author
        can_manage = (
            isinstance(author, discord.Member) and channel.permissions_for(author).manage_messages
        )
        return Origin(
            member_id=author.id,
            channel_id=channel.id,
            guild_id=guild.id if guild else None,
            nsfw_allowed=_is_nsfw(channel),
            upload_limit=guild.filesize_limit if guild else DEFAULT_UPLOAD_LIMIT,
            can_manage=bool(can_manage),
            status_message_id=status.id,
            status_channel_id=channel.id,
        )


def _image_number(text: str) -> int:
    try:
        return int(text.strip() or "1")
    except ValueError:
        raise InvalidInputError("The image number has to be a number, like 1 or 2.") from None
