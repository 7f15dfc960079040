"""The test's hands: act as a Discord user, then read what the bot did, as that user sees it.

    discord = local_discord.driver()                      # alice in #general
    ix = await discord.slash("edit", image=png_bytes, prompt="make it blue")
    reply = await ix.followup()                           # waits; no sleeps
    await discord.click(reply, "Reroll")
    discord.messages(reply)                               # the thread started on `reply`

Slash options are typed from the command the bot synced (attachments are uploaded to the local
CDN and resolved, choices accept their name or value). Every wait re-checks the state after
each change and times out after a few seconds with a message saying what it waited for.
"""

# Waits take a `timeout` like discord.py's own `wait_for`: a test must fail, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from . import mentions
from .command_access import CommandNotAllowedError
from .interactions import InteractionHandle, command_data, modal_submit_data
from .models import (
    Attachment,
    Channel,
    ChannelType,
    Command,
    Interaction,
    InteractionType,
    Message,
    MessageType,
    Perm,
    Role,
    User,
    iter_components,
)
from .payloads import message_payload

if TYPE_CHECKING:
    from .server import LocalDiscord

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Upload:
    """A file a user attaches: to a message, or as a slash command's attachment option."""

    filename: str
    data: bytes
    content_type: str | None = None


# What a test may pass as a file: raw bytes (named after their type), (filename, bytes), Upload.
FileLike = Upload | bytes | tuple[str, bytes]


def as_upload(value: FileLike) -> Upload:
    if isinstance(value, Upload):
        return value
    if isinstance(value, tuple):
        return Upload(value[0], value[1])
    if isinstance(value, bytes | bytearray):
        return Upload(f"image.{_sniff_extension(bytes(value))}", bytes(value))
    raise TypeError(f"not a file: {type(value).__name__} (give bytes, (name, bytes) or Upload)")


def _sniff_extension(data: bytes) -> str:
    signatures = {b"\x89PNG": "png", b"\xff\xd8\xff": "jpg", b"GIF8": "gif", b"RIFF": "webp"}
    return next((ext for magic, ext in signatures.items() if data.startswith(magic)), "bin")


class DiscordDriver:
    """Acts as one member in one channel; `as_user`, `in_channel`, `stranger`, `dm` switch."""

    def __init__(self, discord: LocalDiscord, user: User, channel: Channel) -> None:
        self.discord = discord
        self.state = discord.state
        self.user = user
        self.channel = channel

    def __repr__(self) -> str:
        return f"<DiscordDriver {self.user.username} in {self.channel.name or 'DM'}>"

    # -- who and where ---------------------------------------------------------------------

    @property
    def bot_user(self) -> User:
        return self.state.bot_user

    @property
    def guild_id(self) -> int | None:
        return self.channel.guild_id

    def as_user(self, user: User) -> DiscordDriver:
        return DiscordDriver(self.discord, user, self.channel)

    def in_channel(self, channel: Channel) -> DiscordDriver:
        return DiscordDriver(self.discord, self.user, channel)

    @property
    def stranger(self) -> DiscordDriver:
        """Another member of the guild (bob), in the same channel."""
        return self.as_user(self.discord.stranger)

    def dm(self) -> DiscordDriver:
        """This user in their DM with the bot."""
        return self.in_channel(self.state.dm_channel(self.user))

    def give_roles(self, *roles: Role) -> None:
        """Add `roles` to this member, as a server admin would (GUILD_MEMBER_UPDATE)."""
        guild = self.state.guilds[self._require_guild()]
        self.state.add_member_roles(guild, self.user, roles)

    def set_permissions(self, permissions: int) -> None:
        """What this member's own role grants (on top of @everyone)."""
        guild = self.state.guilds[self._require_guild()]
        self.state.set_member_permissions(guild, self.user, permissions)

    def _require_guild(self) -> int:
        if self.channel.guild_id is None:
            raise ValueError("this driver is in a DM, not a guild")
        return self.channel.guild_id

    @property
    def _upload_limit(self) -> int:
        """The `attachment_size_limit` of this member's interactions: the place's limit, or
        their own Nitro's when that is larger. It holds for answers to the interaction only."""
        guild = self.state.guilds.get(self.channel.guild_id or 0)
        place = guild.upload_limit if guild else self.discord.config.dm_upload_limit
        return max(place, self.user.nitro_upload_limit)

    async def _bot_connected(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Events sent before the bot identified would be lost; wait for its session (with
        shards, the session of the shard this channel's guild, or a DM's shard 0, is on)."""
        guild_id = self.channel.guild_id
        await self.state.wait_until(
            lambda: [s for s in self.discord.gateway.live_sessions() if s.receives(guild_id)],
            timeout=timeout,
            what="the bot's gateway session for this channel's shard",
        )

    # -- interactions ----------------------------------------------------------------------

    async def slash(self, name: str, /, **options: Any) -> InteractionHandle:
        """Run the synced slash command `name` ("group sub" for subcommands) with `options`."""
        await self._bot_connected()
        command = self.state.find_command(name.split()[0], 1, self.channel.guild_id)
        if command is not None:  # else command_data says what was synced
            self._check_may_run(command, self.channel)
        data = command_data(self.state, self.channel, name, options, upload=self._upload_option)
        return self._interact(InteractionType.APPLICATION_COMMAND, data)

    async def context_menu(self, name: str, message: Message) -> InteractionHandle:
        """Run the synced message context-menu command `name` on `message`."""
        await self._bot_connected()
        command = self.state.find_command(name, 3, self.channel.guild_id)
        if command is None:
            raise LookupError(f"no message command {name!r} was synced")
        self._check_may_run(command, self.state.channels[message.channel_id])
        data: dict[str, Any] = {
            "id": str(command.id),
            "name": command.name,
            "type": 3,
            "target_id": str(message.id),
            # Context menus get the message in full, whatever the bot's intents.
            "resolved": {"messages": {str(message.id): message_payload(self.state, message)}},
        }
        if command.guild_id is not None:
            data["guild_id"] = str(command.guild_id)
        return self._interact(
            InteractionType.APPLICATION_COMMAND,
            data,
            channel=self.state.channels[message.channel_id],
        )

    async def click(self, message: Message, button: str) -> InteractionHandle:
        """Click the button labelled `button` (or with that custom_id) on `message`."""
        await self._bot_connected()
        self._check_can_see(message)
        candidates = message.buttons
        found = next((b for b in candidates if b.get("label") == button), None) or next(
            (b for b in candidates if b.get("custom_id") == button), None
        )
        if found is None:
            raise LookupError(
                f"no button {button!r} on message {message.id}; buttons: {message.button_labels}"
            )
        if found.get("disabled"):
            raise ValueError(f"button {button!r} is disabled")
        if found.get("style") == 5 or "custom_id" not in found:
            raise ValueError(f"button {button!r} is a link, it sends no interaction")
        data = {"custom_id": found["custom_id"], "component_type": 2, "id": found.get("id")}
        return self._interact(InteractionType.MESSAGE_COMPONENT, data, message=message)

    async def select(self, message: Message, menu: str, values: list[str]) -> InteractionHandle:
        """Pick `values` in the string select whose custom_id or placeholder is `menu`."""
        await self._bot_connected()
        self._check_can_see(message)
        selects = [c for c in iter_components(message.components) if c.get("type") == 3]
        found = next(
            (s for s in selects if menu in (s.get("custom_id"), s.get("placeholder"))), None
        )
        if found is None:
            raise LookupError(f"no select menu {menu!r} on message {message.id}")
        offered = {o["value"] for o in found.get("options") or []}
        if not set(values) <= offered:
            raise ValueError(f"{values} not among the options {sorted(offered)}")
        data = {
            "custom_id": found["custom_id"],
            "component_type": 3,
            "values": list(values),
            "id": found.get("id"),
        }
        return self._interact(InteractionType.MESSAGE_COMPONENT, data, message=message)

    async def submit_modal(
        self, opened: InteractionHandle, /, *, timeout: float = DEFAULT_TIMEOUT, **values: str
    ) -> InteractionHandle:
        """Fill in and submit the modal the bot opened in answer to `opened`.

        Fields are named by custom_id or label (`prompt=` fills a "Prompt" text input)."""
        modal = await opened.modal(timeout=timeout)
        data = modal_submit_data(modal, values)
        origin = opened.interaction
        message = self.state.messages.get(origin.message_id) if origin.message_id else None
        return self._interact(InteractionType.MODAL_SUBMIT, data, message=message, parent=origin)

    def _check_may_run(self, command: Command, channel: Channel) -> None:
        """Refuse what the Discord client would not even offer this member there: a command
        closed to DMs, one needing permissions they lack, one an override denies them."""
        reason = self.state.command_refusal(self.user, channel, command)
        if reason is not None:
            log.info("refused before reaching the bot: %s", reason)
            raise CommandNotAllowedError(reason)

    def _interact(
        self,
        kind: InteractionType,
        data: dict[str, Any],
        *,
        channel: Channel | None = None,
        message: Message | None = None,
        parent: Interaction | None = None,
    ) -> InteractionHandle:
        where = channel or (self.state.channels[message.channel_id] if message else self.channel)
        if not self.state.permissions(self.user, where) & Perm.VIEW_CHANNEL:
            raise PermissionError(f"{self.user.username} cannot see #{where.name}")
        interaction = self.state.create_interaction(
            kind,
            self.user,
            where,
            data,
            attachment_size_limit=self._upload_limit,
            message=message,
            parent=parent,
        )
        return InteractionHandle(self, interaction)

    def _upload_option(self, value: FileLike | Attachment) -> Attachment:
        if isinstance(value, Attachment):
            return value
        upload = as_upload(value)
        # Slash command attachments are ephemeral uploads until a message uses them.
        return self.state.upload(
            self.channel.id,
            upload.filename,
            upload.data,
            content_type=upload.content_type,
            ephemeral=True,
        )

    # -- plain messages --------------------------------------------------------------------

    async def say(
        self, content: str = "", *, files: Sequence[FileLike] = (), mention_bot: bool = False
    ) -> Message:
        """Post a message in this channel (`mention_bot` prefixes the bot's mention)."""
        if mention_bot:
            content = f"{self.bot_user.mention} {content}".strip()
        return await self._post(content, files=files, reference=None)

    async def reply(
        self,
        message: Message,
        content: str,
        *,
        mention: bool = True,
        files: Sequence[FileLike] = (),
    ) -> Message:
        """Reply to `message`; `mention` pings its author (the Discord client's default)."""
        return await self._post(content, files=files, reference=message, mention=mention)

    async def _post(
        self,
        content: str,
        *,
        files: Sequence[FileLike],
        reference: Message | None,
        mention: bool = False,
    ) -> Message:
        await self._bot_connected()
        channel = self.state.channels[reference.channel_id] if reference else self.channel
        needed = Perm.SEND_MESSAGES_IN_THREADS if channel.is_thread else Perm.SEND_MESSAGES
        permissions = self.state.permissions(self.user, channel)
        if not permissions & needed:
            raise PermissionError(f"{self.user.username} may not post in {channel.name}")
        if channel.is_thread and channel.locked and not permissions & Perm.MANAGE_THREADS:
            raise PermissionError(f"{channel.name} is locked: only moderators may post in it")
        if channel.is_thread and channel.archived:
            # A message unarchives the thread, as Discord does.
            self.state.update_thread(channel, archived=False)
        attachments = [
            self.state.upload(channel.id, u.filename, u.data, content_type=u.content_type)
            for u in map(as_upload, files)
        ]
        fields: dict[str, Any] = {"type": MessageType.DEFAULT}
        if reference is not None:
            fields["type"] = MessageType.REPLY
            fields["reference"] = {
                "type": 0,
                "message_id": str(reference.id),
                "channel_id": str(reference.channel_id),
            }
            if reference.guild_id is not None:
                fields["reference"]["guild_id"] = str(reference.guild_id)
        # The Discord client sends no allowed_mentions: whatever the text mentions pings (as
        # far as this member may ping it), and a reply pings its author unless turned off.
        pings = mentions.resolve(
            self.state,
            channel,
            self.user,
            content,
            None,
            replied_author=reference.author.id if reference is not None and mention else None,
        )
        return self.state.post_message(
            channel, self.user, content=content, attachments=attachments, pings=pings, **fields
        )

    async def delete(self, message: Message) -> None:
        """Delete one of this user's messages (MESSAGE_DELETE reaches the bot)."""
        if message.author.id != self.user.id:
            raise PermissionError("members delete only their own messages here")
        self.state.delete_message(message)

    async def start_thread(self, name: str, *, message: Message | None = None) -> Channel:
        """Start a public thread, on `message` or standalone in this channel."""
        await self._bot_connected()
        parent = self.state.channels[message.channel_id] if message else self.channel
        return self.state.start_thread(parent, name, self.user, message=message)

    async def edit_thread(
        self, thread: Channel, *, archived: bool | None = None, locked: bool | None = None
    ) -> Channel:
        """Archive or lock a thread (or undo either), as this member would in the Discord
        client: locking, and anything on someone else's thread, needs Manage Threads (a
        moderator: `local_discord.moderator()`). THREAD_UPDATE tells the bot."""
        await self._bot_connected()
        if not thread.is_thread:
            raise ValueError(f"channel {thread.id} is not a thread")
        moderator = bool(self.state.permissions(self.user, thread) & Perm.MANAGE_THREADS)
        if not moderator and (
            locked is not None or thread.locked or thread.owner_id != self.user.id
        ):
            raise PermissionError(f"{self.user.username} may not do that without Manage Threads")
        changes = {k: v for k, v in (("archived", archived), ("locked", locked)) if v is not None}
        return self.state.update_thread(thread, **changes)

    # -- reading -----------------------------------------------------------------------------

    def messages(self, where: Channel | Message | None = None) -> list[Message]:
        """A channel (default: this one), or the thread started on a message, oldest first,
        as this user sees it (their own ephemeral messages included)."""
        channel = self._resolve(where)
        return self.state.visible_messages(channel, self.user)

    def thread_of(self, message: Message) -> Channel | None:
        return self.state.channels.get(message.thread_id) if message.thread_id else None

    def _resolve(self, where: Channel | Message | None) -> Channel:
        if where is None:
            return self.channel
        if isinstance(where, Message):
            thread = self.thread_of(where)
            if thread is None:
                raise LookupError(f"message {where.id} has no thread")
            return thread
        return where

    def _check_can_see(self, message: Message) -> None:
        if message.ephemeral_to not in (None, self.user.id) or message.deleted:
            raise LookupError(f"{self.user.username} cannot see message {message.id}")

    async def wait_for_message(
        self,
        predicate: Callable[[Message], bool] | None = None,
        *,
        where: Channel | Message | None = None,
        author: User | None = None,
        after: Message | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Message:
        """The first message (by default the bot's, anywhere this user can see) that matches.

        `where`: a channel, or a message meaning the thread on it (waited for if not there yet).
        """
        author = author or self.bot_user

        def find() -> Message | None:
            if isinstance(where, Message) and self.thread_of(where) is None:
                return None  # the thread is not there yet: keep waiting
            scope = [self._resolve(where)] if where is not None else self.state.channels.values()
            for channel in list(scope):
                if channel.type is ChannelType.DM and self.user.id not in channel.recipient_ids:
                    continue
                for message in self.state.visible_messages(channel, self.user):
                    if message.author.id != author.id or message.loading:
                        continue
                    if after is not None and message.id <= after.id:
                        continue
                    if predicate is None or predicate(message):
                        return message
            return None

        return await self.state.wait_until(
            find, timeout=timeout, what=f"a message from {author.username}"
        )

    async def wait_for_thread(
        self, message: Message, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Channel:
        return await self.state.wait_until(
            lambda: self.thread_of(message),
            timeout=timeout,
            what=f"a thread on message {message.id}",
        )

    async def download(self, attachment: Attachment) -> bytes:
        """Fetch an attachment over HTTP from the local CDN, through a fresh signed URL."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.state.cdn.url(attachment)) as response,
        ):
            response.raise_for_status()
            return await response.read()
