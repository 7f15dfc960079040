"""The local Discord's world and every change to it, each announced on the gateway.

All mutation goes through `DiscordState` so that the gateway sees the same events Discord would
send (MESSAGE_CREATE, THREAD_CREATE, ...) and waiters wake up: tests wait on state changes
(`wait_until`), never on sleeps.
"""

# Waits take a `timeout` like discord.py's own `wait_for`: a test must fail, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import io
import logging
import mimetypes
import secrets
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from . import command_access, mentions
from .cdn import Cdn
from .clock import Clock, Snowflakes
from .models import (
    ALL_PERMISSIONS,
    UPLOAD_LIMIT_BY_TIER,
    Attachment,
    Channel,
    ChannelType,
    Command,
    Guild,
    Interaction,
    InteractionType,
    Member,
    Message,
    MessageType,
    Overwrite,
    OverwriteType,
    Perm,
    Pings,
    PremiumType,
    Role,
    User,
)
from .payloads import channel_payload, guild_update_payload, interaction_payload, message_payload

log = logging.getLogger(__name__)

T = TypeVar("T")
Dispatcher = Callable[[str, dict[str, Any]], None]

# A create with `enforce_nonce` returns the sender's earlier message with the same nonce from
# "the past few minutes" (Discord's words, no number given): the local Discord says 5 minutes
# of its own clock, so a test can also step past the window with `clock.advance`.
NONCE_WINDOW_S = 5 * 60.0
NonceKey = tuple[int, str, int | str]
# What a member may do in a DM with the bot.
DM_PERMISSIONS = int(
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.ADD_REACTIONS
    | Perm.USE_APPLICATION_COMMANDS
)


class DiscordState:
    """Users, guilds, channels, messages, commands and interactions, plus change notification."""

    def __init__(self, clock: Clock, *, bot_name: str = "Kontext Bot") -> None:
        self.clock = clock
        self.ids = Snowflakes(clock)
        self.users: dict[int, User] = {}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.attachments: dict[int, Attachment] = {}
        self.interactions: dict[int, Interaction] = {}
        self.interactions_by_token: dict[str, Interaction] = {}
        # Synced commands: None holds the global ones, a guild id that guild's.
        self.commands: dict[int | None, list[Command]] = {None: []}
        # Integrations overrides a server admin set, by (guild id, command id or app id).
        self.command_overrides: command_access.Overrides = {}
        self.channel_messages: dict[int, list[int]] = {}
        # Messages created with a nonce, by (author id, nonce type, nonce): an integer nonce and
        # the same digits as a string are different nonces here (Discord does not promise
        # otherwise, and the stricter reading dedups less).
        self._nonces: dict[NonceKey, list[Message]] = {}
        self.cdn = Cdn(clock, self.attachments.get)
        self.bot_user = self.add_user(bot_name, bot=True)
        self.application_id = self.bot_user.id
        self.owner = self.add_user("owner")
        self._dispatchers: list[Dispatcher] = []
        self._changed = asyncio.Event()
        # Threads archive when the test moves the clock past their idle time, not later.
        clock.on_advance(self.sweep_archives)

    # -- change notification -------------------------------------------------------------

    def subscribe(self, dispatcher: Dispatcher) -> None:
        self._dispatchers.append(dispatcher)

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        for dispatcher in self._dispatchers:
            dispatcher(event, data)
        self.changed()

    def changed(self) -> None:
        """Wake every `wait_until`; each re-checks its own condition."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self, predicate: Callable[[], T | None], *, timeout: float, what: str
    ) -> T:
        """The first truthy value of `predicate()`, re-evaluated after every state change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
            event = self._changed
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                continue

    # -- the world -----------------------------------------------------------------------

    def add_user(
        self, username: str, *, bot: bool = False, premium_type: PremiumType = PremiumType.NONE
    ) -> User:
        """A user; `premium_type` gives them Nitro (bots cannot have it)."""
        if bot and premium_type is not PremiumType.NONE:
            raise ValueError("bots have no Nitro")
        user = User(
            self.ids.next(),
            username,
            bot=bot,
            global_name=username.title(),
            premium_type=premium_type,
        )
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str,
        owner: User,
        *,
        everyone_permissions: int,
        premium_tier: int = 0,
        on_shard: tuple[int, int] | None = None,
    ) -> Guild:
        """A guild; `on_shard=(k, count)` gives it an id that puts it on shard k of `count`
        (`(id >> 22) % count == k`), so a test knows which shard receives its events."""
        guild_id = self.ids.next(on_shard=on_shard)
        guild = Guild(guild_id, name, owner.id, self.clock.iso(), premium_tier=premium_tier)
        # @everyone's role id is the guild id.
        guild.roles[guild_id] = Role(guild_id, "@everyone", int(everyone_permissions))
        self.guilds[guild_id] = guild
        self.add_member(guild, owner)
        return guild

    def set_premium_tier(self, guild: Guild, tier: int, *, announce: bool = True) -> None:
        """The server's boost level changes, and with it the upload limit of every message
        posted there. `announce=False` holds back GUILD_UPDATE, as when the bot's gateway is
        behind: its cached limit is then stale and Discord alone knows the new one."""
        if tier not in UPLOAD_LIMIT_BY_TIER:
            raise ValueError(f"no boost tier {tier}")
        guild.premium_tier = tier
        if announce:
            self.dispatch("GUILD_UPDATE", guild_update_payload(self, guild))
        else:
            self.changed()

    def add_role(
        self,
        guild: Guild,
        name: str,
        permissions: int,
        *,
        managed: bool = False,
        mentionable: bool = False,
    ) -> Role:
        role = Role(
            self.ids.next(),
            name,
            int(permissions),
            position=len(guild.roles),
            managed=managed,
            mentionable=mentionable,
        )
        guild.roles[role.id] = role
        return role

    def create_role(
        self, guild: Guild, name: str, *, permissions: int = 0, mentionable: bool = False
    ) -> Role:
        """A role a server admin adds (GUILD_ROLE_CREATE tells the bot), held by nobody yet."""
        role = self.add_role(guild, name, permissions, mentionable=mentionable)
        self.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": role.payload()})
        return role

    def add_member(self, guild: Guild, user: User, *, permissions: int | None = None) -> Member:
        """`permissions`: granted through a role of the member's own, on top of @everyone."""
        member = Member(user, self.clock.iso(), role_ids=[])
        if permissions is not None:
            role = self.add_role(guild, f"{user.username} role", permissions, managed=user.bot)
            member.role_ids.append(role.id)
        guild.members[user.id] = member
        return member

    def set_member_permissions(self, guild: Guild, user: User, permissions: int) -> None:
        """Replace what the member's own role grants (the @everyone part stays)."""
        member = guild.members[user.id]
        for role_id in member.role_ids:
            guild.roles.pop(role_id, None)
        role = self.add_role(guild, f"{user.username} role", permissions, managed=user.bot)
        member.role_ids = [role.id]
        self.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": role.payload()})
        self._member_updated(guild, member)

    def add_member_roles(self, guild: Guild, user: User, roles: Iterable[Role]) -> None:
        """Give the member `roles` of this guild (made with `create_role`)."""
        member = guild.members[user.id]
        for role in roles:
            if guild.roles.get(role.id) is not role:
                raise ValueError(f"role {role.name!r} is not a role of {guild.name}")
            if role.id not in member.role_ids:
                member.role_ids.append(role.id)
        self._member_updated(guild, member)

    def _member_updated(self, guild: Guild, member: Member) -> None:
        self.dispatch(
            "GUILD_MEMBER_UPDATE",
            {
                "guild_id": str(guild.id),
                "user": member.user.payload(),
                "roles": [str(role_id) for role_id in member.role_ids],
                "joined_at": member.joined_at,
                "nick": None,
                "avatar": None,
                "flags": 0,
                "deaf": False,
                "mute": False,
                "pending": False,
                "premium_since": None,
                "communication_disabled_until": None,
            },
        )

    def add_text_channel(
        self, guild: Guild, name: str, *, topic: str | None = None, nsfw: bool = False
    ) -> Channel:
        """A new text channel (`nsfw`: age-restricted). Announce it with `dispatch` if the
        bot is already connected (CHANNEL_CREATE with `channel_payload`)."""
        channel = Channel(
            self.ids.next(),
            ChannelType.GUILD_TEXT,
            name,
            guild.id,
            self.clock.now(),
            position=len(guild.channel_ids),
            topic=topic,
            nsfw=nsfw,
        )
        self.channels[channel.id] = channel
        self.channel_messages[channel.id] = []
        guild.channel_ids.append(channel.id)
        return channel

    def dm_channel(self, user: User) -> Channel:
        """The DM between the bot and `user`, opened on first use."""
        for channel in self.channels.values():
            if channel.type is ChannelType.DM and user.id in channel.recipient_ids:
                return channel
        channel = Channel(
            self.ids.next(),
            ChannelType.DM,
            None,
            None,
            self.clock.now(),
            recipient_ids=[self.bot_user.id, user.id],
        )
        self.channels[channel.id] = channel
        self.channel_messages[channel.id] = []
        return channel

    def permissions(self, user: User, channel: Channel) -> int:
        """What `user` may do in `channel`, computed as Discord documents it: @everyone and the
        member's roles, then the channel's overwrites (@everyone, roles, member; deny before
        allow), then the implicit rules. Threads take their parent's overwrites; in a thread
        Send Messages in Threads stands in for Send Messages.
        """
        if channel.guild_id is None:
            return DM_PERMISSIONS
        guild = self.guilds[channel.guild_id]
        if user.id == guild.owner_id:
            return ALL_PERMISSIONS
        member = guild.members.get(user.id)
        if member is None:
            return 0
        value = guild.roles[guild.id].permissions
        for role_id in member.role_ids:
            role = guild.roles.get(role_id)
            value |= role.permissions if role else 0
        if value & Perm.ADMINISTRATOR:
            return ALL_PERMISSIONS
        base = self.channels[channel.parent_id] if channel.parent_id is not None else channel
        value = _apply_overwrites(value, guild, member, base)
        # Implicit denials: nothing without View Channel; no files, embeds or @everyone
        # without the right to send at all.
        if not value & Perm.VIEW_CHANNEL:
            return 0
        send = Perm.SEND_MESSAGES_IN_THREADS if channel.is_thread else Perm.SEND_MESSAGES
        if not value & send:
            value &= ~(Perm.ATTACH_FILES | Perm.EMBED_LINKS | Perm.MENTION_EVERYONE)
        return value

    def set_overwrite(
        self, channel: Channel, target: User | Role, *, allow: int = 0, deny: int = 0
    ) -> Overwrite:
        """Set (replace) the overwrite for a role or member on a guild channel, as a server
        admin would; CHANNEL_UPDATE tells the bot. Threads have none: set it on the parent."""
        self._check_overwritable(channel)
        kind = OverwriteType.ROLE if isinstance(target, Role) else OverwriteType.MEMBER
        overwrite = Overwrite(target.id, kind, allow=int(allow), deny=int(deny))
        channel.overwrites[target.id] = overwrite
        self.dispatch("CHANNEL_UPDATE", channel_payload(self, channel))
        return overwrite

    def remove_overwrite(self, channel: Channel, target_id: int) -> None:
        self._check_overwritable(channel)
        if channel.overwrites.pop(target_id, None) is not None:
            self.dispatch("CHANNEL_UPDATE", channel_payload(self, channel))

    def _check_overwritable(self, channel: Channel) -> None:
        if channel.guild_id is None or channel.is_thread:
            raise ValueError(
                f"channel {channel.id} takes no overwrites (DMs have none; threads use their "
                "parent's)"
            )

    # -- attachments -----------------------------------------------------------------------

    def upload(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        *,
        content_type: str | None = None,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> Attachment:
        """Put a file on the local CDN."""
        if content_type is None:
            content_type = mimetypes.guess_type(filename)[0]
        width, height = _image_size(data)
        attachment = Attachment(
            self.ids.next(),
            channel_id,
            filename,
            data,
            content_type=content_type,
            description=description,
            width=width,
            height=height,
            ephemeral=ephemeral,
        )
        self.attachments[attachment.id] = attachment
        return attachment

    # -- messages --------------------------------------------------------------------------

    def post_message(
        self, channel: Channel, author: User, *, pings: Pings | None = None, **fields: Any
    ) -> Message:
        """A new message in `channel`; MESSAGE_CREATE goes out unless it is ephemeral.

        `pings`: who it pings (see `mentions.resolve`); without it, whatever its content
        mentions pings, as when no `allowed_mentions` is sent.
        """
        self.sweep_archives()
        message = Message(
            self.ids.next(), channel.id, channel.guild_id, author, self.clock.now(), **fields
        )
        if pings is None:
            pings = mentions.resolve(self, channel, author, message.content, None)
        message.apply_pings(pings)
        self.messages[message.id] = message
        self.channel_messages.setdefault(channel.id, []).append(message.id)
        if message.nonce is not None:
            self._nonces.setdefault(_nonce_key(author, message.nonce), []).append(message)
        if message.ephemeral_to is None:
            channel.last_message_id = message.id
            if channel.is_thread:
                message.position = channel.total_message_sent
                channel.message_count += 1
                channel.total_message_sent += 1
                channel.last_activity = self.clock.now()
                channel.thread_member_ids.add(author.id)
            self.dispatch(
                "MESSAGE_CREATE", message_payload(self, message, gateway=True, with_nonce=True)
            )
        else:
            self.changed()
        return message

    def recent_with_nonce(self, author: User, nonce: int | str) -> list[Message]:
        """Messages `author` created with `nonce` within `NONCE_WINDOW_S`, oldest first
        (deleted ones included: Discord still remembers them)."""
        now = self.clock.now()
        return [
            m
            for m in self._nonces.get(_nonce_key(author, nonce), [])
            if now - m.created_at <= NONCE_WINDOW_S
        ]

    def edit_message(
        self,
        message: Message,
        *,
        edited: bool = True,
        pings: Pings | None = None,
        **changes: Any,
    ) -> Message:
        """Apply `changes`; `edited=False` for a deferral being filled (it shows as unedited).

        A new `content` is parsed for mentions again: `pings` says who it pings (the edit's
        `allowed_mentions` applied); without it, everything it mentions, as Discord does with
        an edit that sends no `allowed_mentions`.
        """
        for key, value in changes.items():
            setattr(message, key, value)
        if edited:
            message.edited_at = self.clock.now()
        if "content" in changes:
            if pings is None:
                channel = self.channels[message.channel_id]
                pings = mentions.resolve(self, channel, message.author, message.content, None)
            message.apply_pings(self._keep_reply_ping(message, pings))
        if message.ephemeral_to is None:
            self.dispatch("MESSAGE_UPDATE", message_payload(self, message, gateway=True))
        else:
            self.changed()
        return message

    def _keep_reply_ping(self, message: Message, pings: Pings) -> Pings:
        """A reply that pinged its replied-to author still mentions them after an edit: that
        ping belongs to the reply, not to its content."""
        reference = message.reference or {}
        target = self.messages.get(int(reference.get("message_id") or 0))
        if target is None or target.author.id not in message.mention_ids:
            return pings
        if target.author.id in pings.users:
            return pings
        return Pings((*pings.users, target.author.id), pings.roles, pings.everyone)

    def delete_message(self, message: Message) -> None:
        message.deleted = True
        data = {"id": str(message.id), "channel_id": str(message.channel_id)}
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
        channel = self.channels.get(message.channel_id)
        if channel is not None and channel.is_thread:
            channel.message_count = max(0, channel.message_count - 1)
        if message.ephemeral_to is None:
            self.dispatch("MESSAGE_DELETE", data)
        else:
            self.changed()

    def visible_messages(self, channel: Channel, viewer: User | None) -> list[Message]:
        """The channel as `viewer` sees it, oldest first (ephemerals only their own)."""
        found = []
        for message_id in self.channel_messages.get(channel.id, []):
            message = self.messages[message_id]
            if message.deleted:
                continue
            if message.ephemeral_to is not None and (
                viewer is None or message.ephemeral_to != viewer.id
            ):
                continue
            found.append(message)
        return found

    # -- threads ---------------------------------------------------------------------------

    def start_thread(
        self,
        parent: Channel,
        name: str,
        owner: User,
        *,
        message: Message | None = None,
        auto_archive_duration: int = 1440,
        private: bool = False,
    ) -> Channel:
        """A thread on `message` (same id) or standalone; THREAD_CREATE goes out."""
        thread_id = message.id if message is not None else self.ids.next()
        now = self.clock.now()
        thread = Channel(
            thread_id,
            ChannelType.PRIVATE_THREAD if private else ChannelType.PUBLIC_THREAD,
            name,
            parent.guild_id,
            now,
            parent_id=parent.id,
            owner_id=owner.id,
            auto_archive_duration=auto_archive_duration,
            archive_timestamp=now,
            last_activity=now,
            thread_member_ids={owner.id},
        )
        self.channels[thread.id] = thread
        self.channel_messages[thread.id] = []
        if message is not None:
            message.thread_id = thread.id
        data = channel_payload(self, thread)
        data["newly_created"] = True
        self.dispatch("THREAD_CREATE", data)
        if message is None and not private:
            # A standalone public thread is announced in its parent, as in the Discord client.
            self.post_message(
                parent,
                owner,
                type=MessageType.THREAD_CREATED,
                content=name,
                # A system message: the thread's name pings nobody.
                pings=Pings(),
                reference={
                    "type": 0,
                    "channel_id": str(thread.id),
                    "guild_id": str(parent.guild_id),
                },
            )
        if message is not None:
            self.dispatch("MESSAGE_UPDATE", message_payload(self, message, gateway=True))
        return thread

    def update_thread(self, thread: Channel, **changes: Any) -> Channel:
        for key, value in changes.items():
            setattr(thread, key, value)
        if "archived" in changes:
            thread.archive_timestamp = self.clock.now()
            if not changes["archived"]:
                thread.last_activity = self.clock.now()
        self.dispatch("THREAD_UPDATE", channel_payload(self, thread))
        return thread

    def sweep_archives(self) -> None:
        """Archive threads idle for longer than their auto-archive duration (test clock)."""
        now = self.clock.now()
        for channel in list(self.channels.values()):
            idle = now - channel.last_activity
            if (
                channel.is_thread
                and not channel.archived
                and idle > channel.auto_archive_duration * 60
            ):
                log.info("thread %s auto-archived after %.0f s idle", channel.id, idle)
                self.update_thread(channel, archived=True)

    # -- application commands -------------------------------------------------------------

    def replace_commands(
        self, guild_id: int | None, bodies: Iterable[dict[str, Any]]
    ) -> list[Command]:
        """Bulk overwrite: commands keep their id when name and type are unchanged."""
        existing = {(c.name, c.type): c for c in self.commands.get(guild_id, [])}
        version = self.ids.next()
        commands = []
        for body in bodies:
            key = (str(body["name"]), int(body.get("type") or 1))
            old = existing.get(key)
            command_id = old.id if old is not None else self.ids.next()
            commands.append(Command(command_id, self.application_id, guild_id, version, dict(body)))
        self.commands[guild_id] = commands
        self.changed()
        return commands

    def find_command(self, name: str, command_type: int, guild_id: int | None) -> Command | None:
        """Guild commands shadow global ones of the same name, as in the Discord client."""
        scopes = ([guild_id] if guild_id is not None else []) + [None]
        for scope in scopes:
            for command in self.commands.get(scope, []):
                if command.name == name and command.type == command_type:
                    return command
        return None

    def set_command_permissions(
        self,
        guild: Guild,
        command: Command | None,
        overrides: Iterable[command_access.CommandOverride],
    ) -> None:
        """Replace the Integrations overrides a server admin set for `command` (None: for
        the whole app) in `guild`; APPLICATION_COMMAND_PERMISSIONS_UPDATE tells the bot."""
        target = command.id if command is not None else self.application_id
        rows = list(overrides)
        if rows:
            self.command_overrides[(guild.id, target)] = rows
        else:
            self.command_overrides.pop((guild.id, target), None)
        self.dispatch(
            "APPLICATION_COMMAND_PERMISSIONS_UPDATE",
            command_permissions_payload(self, guild, target),
        )

    def command_refusal(self, user: User, channel: Channel, command: Command) -> str | None:
        """Why Discord would not let `user` run `command` in `channel` (None: it would)."""
        return command_access.refusal(
            command,
            user,
            channel,
            guild=self.guilds[channel.guild_id] if channel.guild_id is not None else None,
            permissions=self.permissions(user, channel),
            overrides=self.command_overrides,
            application_id=self.application_id,
        )

    # -- interactions ----------------------------------------------------------------------

    def create_interaction(
        self,
        kind: InteractionType,
        user: User,
        channel: Channel,
        data: dict[str, Any],
        *,
        attachment_size_limit: int,
        message: Message | None = None,
        parent: Interaction | None = None,
    ) -> Interaction:
        """Record an interaction and send INTERACTION_CREATE to the bot."""
        self.sweep_archives()
        interaction = Interaction(
            id=self.ids.next(),
            type=kind,
            token="aW50ZXJhY3Rpb24" + secrets.token_urlsafe(96),
            application_id=self.application_id,
            created_at=self.clock.now(),
            user=user,
            guild_id=channel.guild_id,
            channel_id=channel.id,
            data=data,
            attachment_size_limit=attachment_size_limit,
            message_id=message.id if message is not None else None,
            parent_id=parent.id if parent is not None else None,
        )
        self.interactions[interaction.id] = interaction
        self.interactions_by_token[interaction.token] = interaction
        self.dispatch("INTERACTION_CREATE", interaction_payload(self, interaction))
        return interaction


def _apply_overwrites(value: int, guild: Guild, member: Member, channel: Channel) -> int:
    """Discord's order: @everyone's overwrite, the member's roles' (combined), the member's."""
    overwrites = channel.overwrites
    everyone = overwrites.get(guild.id)
    if everyone is not None:
        value = (value & ~everyone.deny) | everyone.allow
    allow = deny = 0
    for role_id in member.role_ids:
        role_overwrite = overwrites.get(role_id)
        if role_overwrite is not None and role_overwrite.type is OverwriteType.ROLE:
            allow |= role_overwrite.allow
            deny |= role_overwrite.deny
    value = (value & ~deny) | allow
    own = overwrites.get(member.user.id)
    if own is not None and own.type is OverwriteType.MEMBER:
        value = (value & ~own.deny) | own.allow
    return value


def command_permissions_payload(state: DiscordState, guild: Guild, target: int) -> dict[str, Any]:
    """GuildApplicationCommandPermissions: the overrides for one command (or the app)."""
    rows = state.command_overrides.get((guild.id, target), [])
    return {
        "id": str(target),
        "application_id": str(state.application_id),
        "guild_id": str(guild.id),
        "permissions": [row.payload() for row in rows],
    }


def _nonce_key(author: User, nonce: int | str) -> NonceKey:
    return (author.id, type(nonce).__name__, nonce)


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    """Width and height if the bytes are an image Pillow can read, as Discord reports them."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow is a dependency of the bot
        return None, None
    try:
        with warnings.catch_warnings():
            # Size is all that is read; a huge test image is no decompression bomb here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.width, image.height
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None, None
