"""The local Discord's state rendered as Discord's JSON (gateway events and REST answers).

Field for field what discord.py 2.7 reads (and what the OpenAPI spec's response schemas name):
a payload discord.py cannot parse would fail far from its cause, inside the client.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .models import (
    Attachment,
    Channel,
    ChannelType,
    Guild,
    Interaction,
    InteractionType,
    Message,
    MessageType,
    User,
)

if TYPE_CHECKING:
    from .state import DiscordState

log = logging.getLogger(__name__)


def member_payload(
    state: DiscordState,
    guild: Guild,
    user: User,
    *,
    with_user: bool = True,
    permissions: int | None = None,
) -> dict[str, Any]:
    member = guild.members.get(user.id)
    data: dict[str, Any] = {
        "nick": member.nick if member else None,
        "avatar": None,
        "banner": None,
        "roles": [str(r) for r in (member.role_ids if member else []) if r != guild.id],
        "joined_at": member.joined_at if member else state.clock.iso(),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
    }
    if with_user:
        data["user"] = user.payload()
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def channel_payload(state: DiscordState, channel: Channel) -> dict[str, Any]:
    if channel.type is ChannelType.DM:
        return {
            "id": str(channel.id),
            "type": int(channel.type),
            "last_message_id": _opt_id(channel.last_message_id),
            "flags": 0,
            "recipients": [
                state.users[uid].payload()
                for uid in channel.recipient_ids
                if uid != state.bot_user.id
            ],
        }
    data: dict[str, Any] = {
        "id": str(channel.id),
        "type": int(channel.type),
        "guild_id": _opt_id(channel.guild_id),
        "name": channel.name,
        "parent_id": _opt_id(channel.parent_id),
        "last_message_id": _opt_id(channel.last_message_id),
        "rate_limit_per_user": 0,
        "flags": 0,
        "nsfw": channel.nsfw or bool(channel.parent_id and state.channels[channel.parent_id].nsfw),
    }
    if channel.is_thread:
        data.update(
            owner_id=_opt_id(channel.owner_id),
            message_count=channel.message_count,
            member_count=len(channel.thread_member_ids),
            total_message_sent=channel.total_message_sent,
            thread_metadata={
                "archived": channel.archived,
                "auto_archive_duration": channel.auto_archive_duration,
                "archive_timestamp": state.clock.iso(channel.archive_timestamp),
                "locked": channel.locked,
                "create_timestamp": state.clock.iso(channel.created_at),
                "invitable": True,
            },
        )
        if state.bot_user.id in channel.thread_member_ids:
            data["member"] = {
                "id": str(channel.id),
                "user_id": str(state.bot_user.id),
                "join_timestamp": state.clock.iso(channel.created_at),
                "flags": 0,
            }
    else:
        data.update(
            position=channel.position,
            topic=channel.topic,
            permission_overwrites=[o.payload() for o in channel.overwrites.values()],
            default_auto_archive_duration=1440,
            default_thread_rate_limit_per_user=0,
        )
    return data


def attachment_payload(state: DiscordState, attachment: Attachment) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(attachment.id),
        "filename": attachment.filename,
        "size": attachment.size,
        "url": state.cdn.url(attachment),
        "proxy_url": state.cdn.url(attachment, media=True),
    }
    if attachment.content_type:
        data["content_type"] = attachment.content_type
    if attachment.description:
        data["description"] = attachment.description
    if attachment.width is not None and attachment.height is not None:
        data["width"], data["height"] = attachment.width, attachment.height
    if attachment.ephemeral:
        data["ephemeral"] = True
    return data


def message_payload(
    state: DiscordState,
    message: Message,
    *,
    gateway: bool = False,
    nested: bool = False,
    with_nonce: bool = False,
) -> dict[str, Any]:
    """A message as REST returns it, or (gateway=True) as MESSAGE_CREATE carries it.

    `with_nonce`: the create response and MESSAGE_CREATE echo the sender's nonce; nothing else
    does (a later GET never has it), so a bot cannot find its messages by nonce after a restart.
    """
    guild = state.guilds.get(message.guild_id) if message.guild_id else None
    mentions = []
    for user_id in message.mention_ids:
        user = state.users.get(user_id)
        if user is None:
            continue
        mention = user.payload()
        if gateway and guild is not None and user_id in guild.members:
            mention["member"] = member_payload(state, guild, user, with_user=False)
        mentions.append(mention)
    data: dict[str, Any] = {
        "id": str(message.id),
        "channel_id": str(message.channel_id),
        "type": int(message.type),
        "content": message.content,
        "author": message.author.payload(),
        "timestamp": state.clock.iso(message.created_at),
        "edited_timestamp": (
            None if message.edited_at is None else state.clock.iso(message.edited_at)
        ),
        "tts": False,
        "mention_everyone": message.mention_everyone,
        "mentions": mentions,
        "mention_roles": [str(role_id) for role_id in message.mention_role_ids],
        "attachments": [attachment_payload(state, a) for a in message.attachments],
        "embeds": [dict(e) for e in message.embeds],
        "components": [dict(c) for c in message.components],
        "reactions": [
            {
                "emoji": {"id": None, "name": emoji},
                "count": len(users),
                "count_details": {"burst": 0, "normal": len(users)},
                "burst_colors": [],
                "me": state.bot_user.id in users,
                "me_burst": False,
                "burst_me": False,
                "burst_count": 0,
            }
            for emoji, users in message.reactions.items()
            if users
        ],
        "pinned": False,
        "flags": message.flags,
    }
    if message.guild_id is not None:
        data["guild_id"] = str(message.guild_id)
    if with_nonce and message.nonce is not None:
        data["nonce"] = message.nonce
    if (
        gateway
        and guild is not None
        and message.webhook_id is None
        and message.author.id in guild.members
    ):
        data["member"] = member_payload(state, guild, message.author, with_user=False)
    if message.webhook_id is not None:
        data["webhook_id"] = str(message.webhook_id)
    if message.application_id is not None:
        data["application_id"] = str(message.application_id)
    if message.interaction_metadata is not None:
        data["interaction_metadata"] = dict(message.interaction_metadata)
    if message.position is not None:
        data["position"] = message.position
    if message.reference is not None:
        data["message_reference"] = dict(message.reference)
        if not nested and message.type is MessageType.REPLY:
            referenced = state.messages.get(int(message.reference["message_id"]))
            data["referenced_message"] = (
                None
                if referenced is None or referenced.deleted
                else message_payload(state, referenced, gateway=gateway, nested=True)
            )
    if message.thread_id is not None and message.thread_id in state.channels:
        data["thread"] = channel_payload(state, state.channels[message.thread_id])
    return data


def guild_create_payload(state: DiscordState, guild: Guild) -> dict[str, Any]:
    """GUILD_CREATE as a bot without the members intent receives it: only itself as member."""
    channels = [state.channels[cid] for cid in guild.channel_ids]
    threads = [
        c
        for c in state.channels.values()
        if c.guild_id == guild.id and c.is_thread and not c.archived
    ]
    return {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(guild.owner_id),
        "region": "deprecated",
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "nsfw": False,
        "features": [],
        "roles": [role.payload() for role in guild.roles.values()],
        "emojis": [],
        "stickers": [],
        "application_id": None,
        "system_channel_id": _opt_id(guild.channel_ids[0] if guild.channel_ids else None),
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "vanity_url_code": None,
        "premium_tier": guild.premium_tier,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": guild.locale,
        "max_members": 500000,
        "max_video_channel_users": 25,
        "max_stage_video_channel_users": 50,
        "widget_enabled": False,
        "hub_type": None,
        "incidents_data": None,
        "joined_at": guild.members[state.bot_user.id].joined_at,
        "large": False,
        "lazy": True,
        "unavailable": False,
        "member_count": len(guild.members),
        "members": [member_payload(state, guild, state.bot_user)],
        "channels": [channel_payload(state, c) for c in channels],
        "threads": [channel_payload(state, t) for t in threads],
        "voice_states": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "embedded_activities": [],
    }


# What GUILD_CREATE carries beyond the guild object itself (GUILD_UPDATE has none of it).
_GUILD_CREATE_ONLY = (
    "joined_at",
    "large",
    "lazy",
    "unavailable",
    "member_count",
    "members",
    "channels",
    "threads",
    "voice_states",
    "presences",
    "stage_instances",
    "guild_scheduled_events",
    "soundboard_sounds",
    "embedded_activities",
)


def guild_update_payload(state: DiscordState, guild: Guild) -> dict[str, Any]:
    """GUILD_UPDATE: the guild object, without GUILD_CREATE's extra fields."""
    data = guild_create_payload(state, guild)
    for key in _GUILD_CREATE_ONLY:
        data.pop(key, None)
    return data


def interaction_payload(state: DiscordState, interaction: Interaction) -> dict[str, Any]:
    """INTERACTION_CREATE with everything discord.py 2.7 reads from it."""
    channel = state.channels[interaction.channel_id]
    guild = state.guilds.get(interaction.guild_id) if interaction.guild_id else None
    user_permissions = state.permissions(interaction.user, channel)
    channel_data = channel_payload(state, channel)
    channel_data["permissions"] = str(user_permissions)
    data: dict[str, Any] = {
        "id": str(interaction.id),
        "application_id": str(interaction.application_id),
        "type": int(interaction.type),
        "token": interaction.token,
        "version": 1,
        "channel_id": str(channel.id),
        "channel": channel_data,
        "app_permissions": str(state.permissions(state.bot_user, channel)),
        "locale": "en-US",
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": interaction.attachment_size_limit,
    }
    if interaction.data:
        data["data"] = interaction.data
    if guild is not None:
        data.update(
            guild_id=str(guild.id),
            guild={"id": str(guild.id), "locale": guild.locale, "features": []},
            guild_locale=guild.locale,
            member=member_payload(state, guild, interaction.user, permissions=user_permissions),
            authorizing_integration_owners={"0": str(guild.id)},
            context=0,
        )
    else:
        data.update(
            user=interaction.user.payload(),
            authorizing_integration_owners={"0": str(interaction.user.id)},
            context=1,
        )
    if interaction.message_id is not None:
        message = state.messages[interaction.message_id]
        data["message"] = message_payload(state, message)
    return data


def interaction_metadata(
    interaction: Interaction, *, followup_of: int | None = None, parent: Interaction | None = None
) -> dict[str, Any]:
    """What a message sent in answer to an interaction says about it.

    A modal submit also describes the interaction that opened the modal (`parent`), as
    Discord's spec requires (`triggering_interaction_metadata`).
    """
    owners = (
        {"0": str(interaction.guild_id)}
        if interaction.guild_id
        else {"0": str(interaction.user.id)}
    )
    data: dict[str, Any] = {
        "id": str(interaction.id),
        "type": int(interaction.type),
        "user": interaction.user.payload(),
        "authorizing_integration_owners": owners,
    }
    if interaction.type is InteractionType.APPLICATION_COMMAND:
        data["name"] = interaction.data.get("name")
        data["command_type"] = interaction.data.get("type", 1)
        if interaction.data.get("type") == 3:
            data["target_message_id"] = interaction.data.get("target_id")
    if interaction.type is InteractionType.MESSAGE_COMPONENT and interaction.message_id:
        data["interacted_message_id"] = str(interaction.message_id)
    if followup_of is not None:
        data["original_response_message_id"] = str(followup_of)
    if interaction.type is InteractionType.MODAL_SUBMIT and parent is not None:
        data["triggering_interaction_metadata"] = interaction_metadata(parent)
    return data


def without_content(data: dict[str, Any], bot_id: int) -> dict[str, Any]:
    """A message as an app without Message Content gets it: content, embeds, attachments,
    components and poll only in its own messages, DMs and messages that mention it.

    Judged message by message for the app receiving it: a reply that mentions the bot arrives
    whole, but the message it replies to (`referenced_message`) is emptied unless that one is
    the bot's own, mentions the bot or is in a DM. On the gateway this follows the session's
    intents; over REST see `Gateway.content_over_rest`.
    """
    referenced = data.get("referenced_message")
    if isinstance(referenced, dict):
        data = dict(data, referenced_message=_emptied(referenced, bot_id))
    return _emptied(data, bot_id)


def interaction_without_content(data: dict[str, Any], bot_id: int) -> dict[str, Any]:
    """INTERACTION_CREATE for an app without Message Content.

    The message a component sits on follows the usual rule (it is usually the bot's own, but
    what it replies to need not be). The target of a message context-menu command is the one
    exception Discord makes: it comes whole, though not the message *it* replies to.
    """
    data = dict(data)
    if isinstance(data.get("message"), dict):
        data["message"] = without_content(data["message"], bot_id)
    resolved = (data.get("data") or {}).get("resolved") or {}
    if resolved.get("messages"):
        targets = {
            key: _target_whole(message, bot_id) for key, message in resolved["messages"].items()
        }
        data["data"] = {**data["data"], "resolved": {**resolved, "messages": targets}}
    return data


def _target_whole(message: dict[str, Any], bot_id: int) -> dict[str, Any]:
    referenced = message.get("referenced_message")
    if not isinstance(referenced, dict):
        return message
    return dict(message, referenced_message=_emptied(referenced, bot_id))


def _emptied(data: dict[str, Any], bot_id: int) -> dict[str, Any]:
    author_id = int((data.get("author") or {}).get("id") or 0)
    mentioned = any(int(m["id"]) == bot_id for m in data.get("mentions") or [])
    if author_id == bot_id or mentioned or "guild_id" not in data:
        return data
    stripped = dict(data, content="", embeds=[], attachments=[], components=[])
    stripped.pop("poll", None)
    return stripped


def _opt_id(value: int | None) -> str | None:
    return None if value is None else str(value)
