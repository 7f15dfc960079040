"""What the local Discord remembers: users, guilds, channels, threads, messages, interactions.

Plain dataclasses with the few conveniences a test reads (`message.buttons`, `attachment.data`);
turning them into Discord's JSON lives in `payloads.py`, because that needs the whole state.
"""

from __future__ import annotations

import enum
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MiB = 1024 * 1024


class Perm(enum.IntFlag):
    """The permission bits the local Discord checks or hands out."""

    CREATE_INSTANT_INVITE = 1 << 0
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    USE_APPLICATION_COMMANDS = 1 << 31
    MANAGE_THREADS = 1 << 34
    CREATE_PUBLIC_THREADS = 1 << 35
    CREATE_PRIVATE_THREADS = 1 << 36
    SEND_MESSAGES_IN_THREADS = 1 << 38


ALL_PERMISSIONS = (1 << 50) - 1

# What @everyone may do in a freshly made community server.
EVERYONE_PERMISSIONS = (
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.ADD_REACTIONS
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.CREATE_PUBLIC_THREADS
    | Perm.SEND_MESSAGES_IN_THREADS
)

# The bot's managed role: what its invite link asks for (bot.REQUIRED_PERMISSIONS).
BOT_PERMISSIONS = (
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.SEND_MESSAGES_IN_THREADS
    | Perm.CREATE_PUBLIC_THREADS
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
)


class ChannelType(enum.IntEnum):
    GUILD_TEXT = 0
    DM = 1
    PUBLIC_THREAD = 11
    PRIVATE_THREAD = 12


class OverwriteType(enum.IntEnum):
    ROLE = 0
    MEMBER = 1


class InteractionType(enum.IntEnum):
    PING = 1
    APPLICATION_COMMAND = 2
    MESSAGE_COMPONENT = 3
    AUTOCOMPLETE = 4
    MODAL_SUBMIT = 5


class CallbackType(enum.IntEnum):
    PONG = 1
    CHANNEL_MESSAGE = 4
    DEFERRED_CHANNEL_MESSAGE = 5
    DEFERRED_UPDATE_MESSAGE = 6
    UPDATE_MESSAGE = 7
    AUTOCOMPLETE_RESULT = 8
    MODAL = 9


class MessageType(enum.IntEnum):
    DEFAULT = 0
    THREAD_CREATED = 18
    REPLY = 19
    CHAT_INPUT_COMMAND = 20
    CONTEXT_MENU_COMMAND = 23


class MessageFlag(enum.IntFlag):
    SUPPRESS_EMBEDS = 1 << 2
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_COMPONENTS_V2 = 1 << 15


# Upload limit per file by server boost tier (bots, webhooks and interactions, since 2025-01).
UPLOAD_LIMIT_BY_TIER = {0: 10 * MiB, 1: 10 * MiB, 2: 50 * MiB, 3: 100 * MiB}


class PremiumType(enum.IntEnum):
    """A user's Nitro plan (Discord's `premium_type`); bots never have one."""

    NONE = 0
    NITRO_CLASSIC = 1
    NITRO = 2
    NITRO_BASIC = 3


# What a user's own Nitro lets them upload per file. It reaches a bot only as the
# `attachment_size_limit` of that user's interactions, and only answers to those interactions
# may use it: the bot's own channel and thread messages are held to the server's limit.
NITRO_UPLOAD_LIMIT = {
    PremiumType.NONE: 0,
    PremiumType.NITRO_CLASSIC: 50 * MiB,
    PremiumType.NITRO: 500 * MiB,
    PremiumType.NITRO_BASIC: 50 * MiB,
}


@dataclass(eq=False)
class User:
    id: int
    username: str
    bot: bool = False
    global_name: str | None = None
    # Never in the user's payload (bots cannot read it); see NITRO_UPLOAD_LIMIT.
    premium_type: PremiumType = PremiumType.NONE

    @property
    def nitro_upload_limit(self) -> int:
        """The per-file limit the user's Nitro gives them (0 without Nitro)."""
        return NITRO_UPLOAD_LIMIT[self.premium_type]

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "avatar_decoration_data": None,
            "banner": None,
            "accent_color": None,
            "public_flags": 0,
            "flags": 0,
            "bot": self.bot,
            "system": False,
            "primary_guild": None,
        }


@dataclass(eq=False)
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    # Anyone may ping a mentionable role; others only with Mention @everyone.
    mentionable: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": self.mentionable,
            "flags": 0,
        }


@dataclass(eq=False)
class Member:
    user: User
    joined_at: str
    role_ids: list[int] = field(default_factory=list)
    nick: str | None = None


@dataclass(eq=False)
class Guild:
    id: int
    name: str
    owner_id: int
    created_at: str
    premium_tier: int = 0
    locale: str = "en-US"
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    channel_ids: list[int] = field(default_factory=list)

    @property
    def upload_limit(self) -> int:
        """The largest file anyone may upload here, boosts included."""
        return UPLOAD_LIMIT_BY_TIER[self.premium_tier]


@dataclass(eq=False)
class Overwrite:
    """A channel permission overwrite for one role (@everyone's id is the guild's) or member."""

    id: int
    type: OverwriteType
    allow: int = 0
    deny: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": int(self.type),
            "allow": str(self.allow),
            "deny": str(self.deny),
        }


@dataclass(eq=False)
class Channel:
    """A guild text channel, a thread (`parent_id` set) or a DM."""

    id: int
    type: ChannelType
    name: str | None
    guild_id: int | None
    created_at: float
    parent_id: int | None = None
    owner_id: int | None = None
    position: int = 0
    topic: str | None = None
    # Age-restricted; threads take it from their parent channel.
    nsfw: bool = False
    recipient_ids: list[int] = field(default_factory=list)
    # Permission overwrites by role or member id (text channels; threads use their parent's).
    overwrites: dict[int, Overwrite] = field(default_factory=dict)
    # Thread state.
    archived: bool = False
    locked: bool = False
    auto_archive_duration: int = 1440
    archive_timestamp: float = 0.0
    last_activity: float = 0.0
    message_count: int = 0
    total_message_sent: int = 0
    thread_member_ids: set[int] = field(default_factory=set)
    last_message_id: int | None = None

    @property
    def is_thread(self) -> bool:
        return self.type in (ChannelType.PUBLIC_THREAD, ChannelType.PRIVATE_THREAD)

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"


@dataclass(eq=False)
class Attachment:
    """A file on the local CDN; `data` is what a download returns."""

    id: int
    channel_id: int
    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None
    width: int | None = None
    height: int | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Pings:
    """Who one post or edit of a message pings: users and roles by id, @everyone / @here."""

    users: tuple[int, ...] = ()
    roles: tuple[int, ...] = ()
    everyone: bool = False

    def __bool__(self) -> bool:
        return bool(self.users or self.roles or self.everyone)


@dataclass(eq=False)
class Message:
    id: int
    channel_id: int
    guild_id: int | None
    author: User
    created_at: float
    content: str = ""
    type: MessageType = MessageType.DEFAULT
    flags: int = 0
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    # What the message mentions now (its payload's `mentions`, `mention_roles`,
    # `mention_everyone`): only those its latest post or edit actually pinged.
    mention_ids: list[int] = field(default_factory=list)
    mention_role_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    # Everyone the message ever pinged, its post and every edit: a ping cannot be taken back.
    pinged_users: set[int] = field(default_factory=set)
    pinged_roles: set[int] = field(default_factory=set)
    # @everyone or @here.
    pinged_everyone: bool = False
    reference: dict[str, Any] | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    interaction_id: int | None = None
    edited_at: float | None = None
    # Set when a thread was started from this message (its id equals the message id).
    thread_id: int | None = None
    # An ephemeral message is seen by this user only, and never reaches the gateway.
    ephemeral_to: int | None = None
    reactions: dict[str, set[int]] = field(default_factory=dict)
    position: int | None = None
    deleted: bool = False
    # What the sender passed as `nonce` (int or str, kept as sent); only the create response and
    # MESSAGE_CREATE carry it, as on Discord: later fetches do not.
    nonce: int | str | None = None

    @property
    def loading(self) -> bool:
        """A deferred interaction's "thinking..." placeholder, not yet filled."""
        return bool(self.flags & MessageFlag.LOADING)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & MessageFlag.EPHEMERAL)

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Every button on the message, in reading order."""
        return [c for c in iter_components(self.components) if c.get("type") == 2]

    @property
    def button_labels(self) -> list[str]:
        return [b.get("label") or "" for b in self.buttons]

    @property
    def custom_ids(self) -> list[str]:
        """The custom_id of every interactive component (buttons, selects), in reading order."""
        return [
            c["custom_id"]
            for c in iter_components(self.components)
            if isinstance(c.get("custom_id"), str)
        ]

    def mentions(self, user: User) -> bool:
        """Whether the message pings `user` now (allowed_mentions applied)."""
        return user.id in self.mention_ids

    @property
    def pinged_anyone(self) -> bool:
        return bool(self.pinged_users or self.pinged_roles or self.pinged_everyone)

    def apply_pings(self, pings: Pings) -> None:
        """What a post or an edit of the content pinged: the message mentions them now."""
        self.mention_ids = list(pings.users)
        self.mention_role_ids = list(pings.roles)
        self.mention_everyone = pings.everyone
        self.pinged_users.update(pings.users)
        self.pinged_roles.update(pings.roles)
        self.pinged_everyone = self.pinged_everyone or pings.everyone


@dataclass(eq=False)
class Command:
    """An application command as the bot synced it, with the ids Discord adds."""

    id: int
    application_id: int
    guild_id: int | None
    version: int
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def type(self) -> int:
        return int(self.data.get("type") or 1)

    def payload(self) -> dict[str, Any]:
        data = dict(self.data)
        data.setdefault("type", 1)
        # Context menus have no description; Discord echoes an empty string.
        data["description"] = data.get("description") or ""
        data.setdefault("options", [])
        # Sent as a number or a string (discord.py sends a number); Discord echoes a string.
        permissions = data.get("default_member_permissions")
        data["default_member_permissions"] = None if permissions is None else str(permissions)
        data.setdefault("nsfw", False)
        data.setdefault("contexts", None)
        # Not given (or null): installable to guilds only, which Discord then echoes.
        data["integration_types"] = data.get("integration_types") or [0]
        data.update(
            id=str(self.id),
            application_id=str(self.application_id),
            version=str(self.version),
        )
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        return data


@dataclass(eq=False)
class Interaction:
    """One interaction, from INTERACTION_CREATE through its 15 minutes of token life."""

    id: int
    type: InteractionType
    token: str
    application_id: int
    created_at: float
    user: User
    guild_id: int | None
    channel_id: int
    data: dict[str, Any]
    attachment_size_limit: int
    # The message a component sits on (component interactions, and modals opened from them).
    message_id: int | None = None
    callback_type: CallbackType | None = None
    acknowledged_at: float | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    # A deferral's first followup fills the "thinking..." message instead of adding one.
    awaiting_first_followup: bool = False
    modal: dict[str, Any] | None = None
    # The interaction whose modal this submit answers.
    parent_id: int | None = None

    @property
    def acknowledged(self) -> bool:
        return self.callback_type is not None


def count_custom_ids(messages: Iterable[Message], pattern: str) -> Counter[str]:
    """How many of `messages` carry a custom_id matching `pattern`, by its first group (or the
    whole id): `count_custom_ids(posts, r"kontext:reroll:(\\d+)")` counts result posts per job.
    A message counts once per value, however many of its components match."""
    regex = re.compile(pattern)
    counts: Counter[str] = Counter()
    for message in messages:
        values = set()
        for custom_id in message.custom_ids:
            match = regex.fullmatch(custom_id)
            if match:
                values.add(match.group(1) if regex.groups else match.group(0))
        counts.update(values)
    return counts


def iter_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every component in a tree (action rows, sections, containers, labels), depth first."""
    found: list[dict[str, Any]] = []
    for component in components:
        found.append(component)
        found.extend(iter_components(component.get("components") or []))
        if isinstance(component.get("component"), dict):
            found.extend(iter_components([component["component"]]))
        if isinstance(component.get("accessory"), dict):
            found.extend(iter_components([component["accessory"]]))
    return found
