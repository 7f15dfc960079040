"""Plain messages: replies to results or to images that mention the bot, messages in edit
threads, and "@Bot help". What Discord shows the bot of them is in `_content`."""

from __future__ import annotations

import logging
import re
from typing import Any

import discord
from discord.ext import commands

from services.bundle import Services
from services.origin import Origin
from services.prompts import check_prompt
from services.storage import JobRecord
from services.wavespeed import KontextError

from .._errors import message_for
from .._help import HELP
from ._common import NoImageError, edit_message_image, images_of, is_nsfw, parent_of, roles_of
from ._content import HiddenImageError, HintOnce, UnreadMessageError, content_hidden
from ._presenter import DEFAULT_UPLOAD_LIMIT

log = logging.getLogger(__name__)

HELP_WORDS = frozenset({"help", "commands", "how", "info", "usage"})


class NoInstructionError(KontextError):
    default_message = (
        'Tell me what to change, e.g. "make it a watercolor" or "swap the background for a beach".'
    )


class KontextReplies(commands.Cog):
    """Edits asked for in plain messages."""

    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.edits = services.edits
        # Whether Discord shows the bot other members' messages (the Message Content intent;
        # start-up fails if it is asked for and not granted).
        self.reads_content = bool(bot.intents.message_content)
        self.hints = HintOnce()

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
            job = await self._run_plan(origin_of_message(message, status), plan, instruction)
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
            if images_of(target):
                return "image", target
            if self._hidden(target):
                # It may well have an image: Discord does not show it to the bot.
                raise HiddenImageError()
        if images_of(message):
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
        return await edit_message_image(self.services, origin, target, instruction, 1)

    def _asks_for_help(self, message: discord.Message) -> bool:
        """Whether a mention asks for help ("@Bot help"), or for nothing at all: no
        instruction, no reply, no image."""
        words = self._instruction(message).strip(" ?!.").casefold()
        if words in HELP_WORDS:
            return True
        return not words and message.reference is None and not images_of(message)

    def _instruction(self, message: discord.Message) -> str:
        assert self.bot.user is not None
        mention = re.compile(rf"<@!?{self.bot.user.id}>")
        return " ".join(mention.sub(" ", message.content).split())


def origin_of_message(message: discord.Message, status: discord.Message) -> Origin:
    """Who sent a plain message, and where; its job's progress shows in `status`."""
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
        parent_channel_id=parent_of(channel),
        role_ids=roles_of(author),
        age_restricted=is_nsfw(channel),
        upload_limit=guild.filesize_limit if guild else DEFAULT_UPLOAD_LIMIT,
        can_manage=bool(can_manage),
        status_message_id=status.id,
        status_channel_id=channel.id,
    )
