"""REST routes for channels: messages (create, fetch, edit, delete), threads, reactions."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .bodies import (
    attachments_for,
    check_files,
    check_limits,
    check_not_empty,
    content_fields,
    pinged,
    requested_flags,
)
from .models import Channel, ChannelType, Message, MessageFlag, MessageType, Perm
from .payloads import channel_payload
from .rest import Call, RouteTable, json_response, no_content
from .rules import (
    ARCHIVED_THREAD,
    CANNOT_EDIT_OTHERS_MESSAGE,
    INVALID_CHANNEL_TYPE,
    INVALID_FORM_BODY,
    THREAD_ALREADY_CREATED,
    UNKNOWN_MESSAGE,
    DiscordError,
    FieldError,
    Violation,
    check_thread_name,
    form_error,
)
from .state import NONCE_WINDOW_S

log = logging.getLogger(__name__)

routes = RouteTable()

HISTORY_LIMIT_MAX = 100
_INTEGER = re.compile(r"-?[0-9]+")
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")


def upload_limit(call: Call, channel: Channel) -> tuple[int, str]:
    """The per-file limit of the bot's own messages here, and where it comes from. A bot has
    no Nitro: a member's larger `attachment_size_limit` applies to answers to their
    interactions, never to channel or thread messages."""
    guild = call.state.guilds.get(channel.guild_id) if channel.guild_id else None
    if guild is None:
        return call.discord.config.dm_upload_limit, "a DM"
    return guild.upload_limit, f"this server (boost tier {guild.premium_tier})"


def require_send(call: Call, channel: Channel) -> None:
    """Sending needs the right permission and, in a thread, one the bot may write in.

    As Discord documents: a message to an archived thread unarchives it, unless the thread is
    locked; a locked thread (archived or not) takes messages only from members with Manage
    Threads, and refuses everyone else with 403 50083. The unarchiving is the poster's
    (`reopen_for_post`), once the message is sure to be posted.
    """
    if not channel.is_thread:
        call.require(channel, Perm.SEND_MESSAGES, "sending a message")
        return
    call.require(channel, Perm.SEND_MESSAGES_IN_THREADS, "sending in a thread")
    require_unlocked(call, channel, "sending a message")


def reopen_for_post(call: Call, channel: Channel) -> None:
    """A message posted to an archived (unlocked) thread unarchives it; THREAD_UPDATE says so."""
    if channel.is_thread and channel.archived:
        log.info("thread %s unarchived by a message posted in it", channel.id)
        call.state.update_thread(channel, archived=False)


def require_unlocked(call: Call, channel: Channel, what: str) -> None:
    """In a locked thread only members with Manage Threads create or edit messages."""
    if not channel.is_thread or not channel.locked:
        return
    if call.state.permissions(call.state.bot_user, channel) & Perm.MANAGE_THREADS:
        return
    state = "archived and locked" if channel.archived else "locked"
    raise DiscordError(
        403,
        ARCHIVED_THREAD,
        "Thread is archived",
        violation=True,
        detail=f"{what}: thread {channel.id} is {state}; only Manage Threads may write in it",
    )


def require_active(call: Call, channel: Channel, what: str) -> None:
    """Archived threads take no edits (a message sent there would reopen it instead)."""
    if channel.is_thread and channel.archived:
        raise DiscordError(
            400,
            ARCHIVED_THREAD,
            "Thread is archived",
            violation=True,
            detail=f"{what}: thread {channel.id} is archived",
        )


@routes.add("GET", "/channels/{channel_id}")
async def get_channel(call: Call) -> web.Response:
    return json_response(channel_payload(call.state, call.channel()))


@routes.add("PATCH", "/channels/{channel_id}")
async def modify_channel(call: Call) -> web.Response:
    channel = call.channel()
    body: dict[str, Any] = call.body or {}
    if not channel.is_thread:
        call.require(channel, Perm.MANAGE_CHANNELS, "editing a channel")
        for key in ("name", "topic"):
            if key in body:
                setattr(channel, key, body[key])
        call.state.dispatch("CHANNEL_UPDATE", channel_payload(call.state, channel))
        return json_response(channel_payload(call.state, channel))
    if channel.owner_id != call.state.bot_user.id or "locked" in body:
        call.require(channel, Perm.MANAGE_THREADS, "editing someone else's thread")
    if channel.locked and body.get("archived") is False:
        # "Threads that have locked set to true can only be unarchived by a user with the
        # MANAGE_THREADS permission", its creator included (Discord's threads topic).
        call.require(channel, Perm.MANAGE_THREADS, "unarchiving a locked thread")
    if "name" in body:
        errors = check_thread_name(body["name"])
        if errors:
            raise form_error(errors)
    changes = {
        k: body[k]
        for k in ("name", "archived", "locked", "auto_archive_duration")
        if k in body and body[k] is not None
    }
    call.state.update_thread(channel, **changes)
    return json_response(channel_payload(call.state, channel))


@routes.add("POST", "/channels/{channel_id}/typing")
async def trigger_typing(call: Call) -> web.Response:
    channel = call.channel()
    call.discord.typing.append(channel.id)
    return no_content()


@routes.add("GET", "/channels/{channel_id}/messages")
async def list_messages(call: Call) -> web.Response:
    """Newest first, whichever of `before`, `after` or `around` is given (Discord's order).

    `after` returns the `limit` messages right after that id (still newest first), `around`
    up to `limit` messages centred on that id (the message itself included). Without Read
    Message History the answer is an empty list, not an error, as Discord's docs say: a bot
    that checks history for its own earlier post learns nothing and must not take that for
    "never posted".
    """
    channel = call.channel()
    query = call.request.query
    limit, anchors = _history_query(query)
    if not call.state.permissions(call.discord.bot_user, channel) & Perm.READ_MESSAGE_HISTORY:
        log.info("history of %s without Read Message History: an empty list", channel.id)
        return json_response([])
    messages = call.state.visible_messages(channel, None)  # oldest first
    if "before" in anchors:
        messages = [m for m in messages if m.id < anchors["before"]][-limit:]
    elif "after" in anchors:
        messages = [m for m in messages if m.id > anchors["after"]][:limit]
    elif "around" in anchors:
        around = anchors["around"]
        newer_count = limit // 2
        older = [m for m in messages if m.id <= around][-(limit - newer_count) :]
        newer = [m for m in messages if m.id > around][:newer_count]
        messages = older + newer
    else:
        messages = messages[-limit:]
    return json_response([call.message_json(m) for m in reversed(messages)])


def _history_query(query: Mapping[str, str]) -> tuple[int, dict[str, int]]:
    """`limit` (1-100, default 50) and at most one of before/after/around, or 400."""
    errors: list[FieldError] = []
    limit = 50
    if "limit" in query:
        raw = query["limit"]
        if not _INTEGER.fullmatch(raw):
            errors.append(
                FieldError(("limit",), "NUMBER_TYPE_COERCE", f'Value "{raw}" is not int.')
            )
        elif int(raw) > HISTORY_LIMIT_MAX:
            errors.append(
                FieldError(
                    ("limit",),
                    "NUMBER_TYPE_MAX",
                    f"int value should be less than or equal to {HISTORY_LIMIT_MAX}.",
                )
            )
        elif int(raw) < 1:
            errors.append(
                FieldError(
                    ("limit",), "NUMBER_TYPE_MIN", "int value should be greater than or equal to 1."
                )
            )
        else:
            limit = int(raw)
    anchors: dict[str, int] = {}
    for key in ("before", "after", "around"):
        if key not in query:
            continue
        raw = query[key]
        if not _SNOWFLAKE.fullmatch(raw):
            errors.append(
                FieldError((key,), "NUMBER_TYPE_COERCE", f'Value "{raw}" is not snowflake.')
            )
        else:
            anchors[key] = int(raw)
    if len(anchors) > 1:
        # Discord's docs: "mutually exclusive, only one may be passed at a time". What Discord
        # does with several is not documented; refusing is the reading that cannot be kinder.
        errors.append(
            FieldError(
                (sorted(anchors)[0],),
                "BASE_TYPE_INVALID",
                f"before, after and around are mutually exclusive; got {sorted(anchors)}",
            )
        )
    if errors:
        raise form_error(errors)
    return limit, anchors


@routes.add("GET", "/channels/{channel_id}/messages/{message_id}")
async def get_message(call: Call) -> web.Response:
    channel = call.channel()
    call.require(channel, Perm.READ_MESSAGE_HISTORY, "fetching a message")
    return json_response(call.message_json(call.message(channel)))


@routes.add("POST", "/channels/{channel_id}/messages")
async def create_message(call: Call) -> web.Response:
    channel = call.channel()
    require_send(call, channel)
    body: dict[str, Any] = call.body or {}
    check_limits(body)
    check_not_empty(body, call.files)
    if call.files:
        call.require(channel, Perm.ATTACH_FILES, "attaching files")
        check_files(call.files, *upload_limit(call, channel))
    reference, replied_author = _reference(call, channel, body.get("message_reference"))
    nonce = body.get("nonce")
    if nonce is not None and body.get("enforce_nonce"):
        earlier = _same_nonce(call, channel, nonce)
        if earlier is not None:
            return json_response(call.message_json(earlier, with_nonce=True))
    fields = content_fields(body)
    reopen_for_post(call, channel)
    message = call.state.post_message(
        channel,
        call.state.bot_user,
        nonce=nonce,
        **fields,
        flags=requested_flags(body) & ~MessageFlag.EPHEMERAL,
        attachments=attachments_for(call.state, channel.id, body, call.files) or [],
        type=MessageType.REPLY if reference else MessageType.DEFAULT,
        reference=reference,
        pings=pinged(
            call.state, channel, fields["content"], body.get("allowed_mentions"), replied_author
        ),
    )
    return json_response(call.message_json(message, with_nonce=True))


def _same_nonce(call: Call, channel: Channel, nonce: int | str) -> Message | None:
    """The bot's message from the last few minutes with this nonce here, if any.

    Discord returns it (200, the same id) and posts nothing. If that message was deleted since,
    Discord does not post again either: it answers 10008 Unknown Message (said by Discord's
    engineer when `enforce_nonce` was documented, discord-api-docs#6647).
    """
    earlier = call.state.recent_with_nonce(call.state.bot_user, nonce)
    here = [m for m in earlier if m.channel_id == channel.id]
    if here:
        first = here[0]
        if first.deleted:
            raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message")
        log.info("nonce %r: returning message %s instead of posting again", nonce, first.id)
        return first
    if earlier:
        # Discord's docs scope the check to the author, not the channel: real Discord may well
        # answer with the message from the other channel and post nothing here. A bot must not
        # depend on either reading, so reusing a nonce elsewhere is reported (the post goes on).
        call.discord.violations.record(
            Violation(
                "rule",
                0,
                call.route,
                "nonce reused in another channel",
                f"nonce {nonce!r} was used {len(earlier)} time(s) in the last "
                f"{NONCE_WINDOW_S / 60:g} minutes in channel {earlier[0].channel_id}; with "
                "enforce_nonce Discord may return that message instead of posting here",
                status=200,
            )
        )
    return None


def _reference(
    call: Call, channel: Channel, ref: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, int | None]:
    """A reply's message_reference, checked; and the author it would ping."""
    if not ref or ref.get("message_id") is None:
        return None, None
    target = call.state.messages.get(int(ref["message_id"]))
    target_channel = int(ref.get("channel_id") or channel.id)
    if target is None or target.deleted or target.channel_id != target_channel:
        if ref.get("fail_if_not_exists", True):
            # Not a violation: the user may have deleted it while the bot was working.
            raise DiscordError(
                400,
                INVALID_FORM_BODY,
                "Invalid Form Body",
                errors={
                    "message_reference": {
                        "_errors": [
                            {
                                "code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                "message": "Unknown message",
                            }
                        ]
                    },
                },
            )
        return None, None
    reference = {"type": 0, "message_id": str(target.id), "channel_id": str(target.channel_id)}
    if target.guild_id is not None:
        reference["guild_id"] = str(target.guild_id)
    return reference, target.author.id


@routes.add("PATCH", "/channels/{channel_id}/messages/{message_id}")
async def edit_message(call: Call) -> web.Response:
    channel = call.channel()
    message = call.message(channel)
    if message.author.id != call.state.bot_user.id:
        raise DiscordError(
            403,
            CANNOT_EDIT_OTHERS_MESSAGE,
            "Cannot edit a message authored by another user",
            violation=True,
        )
    require_unlocked(call, channel, "editing a message")
    require_active(call, channel, "editing a message")
    body: dict[str, Any] = call.body or {}
    check_limits(body)
    if call.files:
        check_files(call.files, *upload_limit(call, channel))
    edit_fields(call, message, body)
    return json_response(call.message_json(message))


def edit_fields(
    call: Call, message: Message, body: dict[str, Any], *, fill_deferred: bool = False
) -> None:
    """Apply an edit body (only the fields it names) to a stored message.

    `fill_deferred`: the message is a deferral's "thinking..." placeholder getting its content;
    it stops loading and does not show as edited.
    """
    changes = content_fields(body, editing=True)
    attachments = attachments_for(
        call.state,
        message.channel_id,
        body,
        call.files,
        existing=message.attachments,
        ephemeral=message.ephemeral,
    )
    if attachments is not None:
        changes["attachments"] = attachments
    if "flags" in body and body["flags"] is not None:
        # Only embed suppression can change on edit; ephemeral/loading are Discord's to set.
        keep = message.flags & ~MessageFlag.SUPPRESS_EMBEDS
        changes["flags"] = keep | (requested_flags(body) & MessageFlag.SUPPRESS_EMBEDS)
    if fill_deferred:
        flags = changes.get("flags", message.flags)
        changes["flags"] = flags & ~MessageFlag.LOADING
    pings = None
    if "content" in changes:
        # New content is parsed for mentions again, under this edit's allowed_mentions.
        channel = call.state.channels[message.channel_id]
        pings = pinged(call.state, channel, changes["content"], body.get("allowed_mentions"), None)
    call.state.edit_message(message, edited=not fill_deferred, pings=pings, **changes)


@routes.add("DELETE", "/channels/{channel_id}/messages/{message_id}")
async def delete_message(call: Call) -> web.Response:
    channel = call.channel()
    message = call.message(channel)
    if message.author.id != call.state.bot_user.id:
        call.require(channel, Perm.MANAGE_MESSAGES, "deleting someone else's message")
    if channel.archived:
        # Deleting is the one thing archived threads allow, unless they are locked too.
        require_unlocked(call, channel, "deleting a message")
    call.state.delete_message(message)
    return no_content()


# -- threads ---------------------------------------------------------------------------------


def _thread_checks(call: Call, parent: Channel, body: dict[str, Any], private: bool) -> None:
    if parent.type is not ChannelType.GUILD_TEXT:
        raise DiscordError(
            400,
            INVALID_CHANNEL_TYPE,
            "Cannot execute action on this channel type",
            violation=True,
            detail=f"threads start in text channels, not type {int(parent.type)}",
        )
    call.require(
        parent,
        Perm.CREATE_PRIVATE_THREADS if private else Perm.CREATE_PUBLIC_THREADS,
        "starting a thread",
    )
    errors = check_thread_name(body.get("name"))
    if errors:
        raise form_error(errors)


@routes.add("POST", "/channels/{channel_id}/messages/{message_id}/threads")
async def thread_from_message(call: Call) -> web.Response:
    parent = call.channel()
    body: dict[str, Any] = call.body or {}
    _thread_checks(call, parent, body, private=False)
    message = call.message(parent)
    if message.thread_id is not None:
        raise DiscordError(
            400,
            THREAD_ALREADY_CREATED,
            "A thread has already been created for this message",
            violation=True,
        )
    thread = call.state.start_thread(
        parent,
        body["name"],
        call.state.bot_user,
        message=message,
        auto_archive_duration=int(body.get("auto_archive_duration") or 1440),
    )
    return json_response(channel_payload(call.state, thread), 201)


@routes.add("POST", "/channels/{channel_id}/threads")
async def thread_in_channel(call: Call) -> web.Response:
    parent = call.channel()
    body: dict[str, Any] = call.body or {}
    private = int(body.get("type") or ChannelType.PRIVATE_THREAD) == ChannelType.PRIVATE_THREAD
    _thread_checks(call, parent, body, private=private)
    thread = call.state.start_thread(
        parent,
        body["name"],
        call.state.bot_user,
        private=private,
        auto_archive_duration=int(body.get("auto_archive_duration") or 1440),
    )
    return json_response(channel_payload(call.state, thread), 201)


@routes.add("PUT", "/channels/{channel_id}/thread-members/@me")
async def join_thread(call: Call) -> web.Response:
    thread = call.channel()
    thread.thread_member_ids.add(call.state.bot_user.id)
    return no_content()


@routes.add("DELETE", "/channels/{channel_id}/thread-members/@me")
async def leave_thread(call: Call) -> web.Response:
    thread = call.channel()
    thread.thread_member_ids.discard(call.state.bot_user.id)
    return no_content()


# -- reactions -------------------------------------------------------------------------------


@routes.add("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me")
async def add_reaction(call: Call) -> web.Response:
    channel = call.channel()
    message = call.message(channel)
    emoji = call.params["emoji_name"]
    if emoji not in message.reactions:
        call.require(channel, Perm.ADD_REACTIONS, "adding a new reaction")
    message.reactions.setdefault(emoji, set()).add(call.state.bot_user.id)
    event: dict[str, Any] = {
        "user_id": str(call.state.bot_user.id),
        "channel_id": str(channel.id),
        "message_id": str(message.id),
        "emoji": {"id": None, "name": emoji},
        "burst": False,
        "type": 0,
    }
    if channel.guild_id is not None:
        # A DM's reaction has no guild_id (and goes to shard 0).
        event["guild_id"] = str(channel.guild_id)
    call.state.dispatch("MESSAGE_REACTION_ADD", event)
    return no_content()


@routes.add("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me")
async def remove_reaction(call: Call) -> web.Response:
    channel = call.channel()
    message = call.message(channel)
    message.reactions.get(call.params["emoji_name"], set()).discard(call.state.bot_user.id)
    call.state.changed()
    return no_content()
