"""REST routes for who the bot is, its commands, guilds, users and DMs."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .models import Command, Guild
from .payloads import channel_payload, guild_create_payload, member_payload
from .rest import Call, RouteTable, json_response, no_content
from .rules import (
    BOTS_CANNOT_USE_THIS,
    MISSING_ACCESS,
    UNKNOWN_COMMAND,
    UNKNOWN_COMMAND_PERMISSIONS,
    UNKNOWN_GUILD,
    UNKNOWN_MEMBER,
    UNKNOWN_USER,
    DiscordError,
    check_commands,
    form_error,
)
from .state import command_permissions_payload

log = logging.getLogger(__name__)

routes = RouteTable()

# ApplicationFlags: GATEWAY_MESSAGE_CONTENT_LIMITED (the intent is switched on, unverified app).
MESSAGE_CONTENT_LIMITED = 1 << 19


@routes.add("GET", "/users/@me")
async def get_me(call: Call) -> web.Response:
    user = call.state.bot_user
    return json_response(
        {**user.payload(), "verified": True, "mfa_enabled": False, "email": None, "locale": "en-US"}
    )


@routes.add("GET", "/users/{user_id}")
async def get_user(call: Call) -> web.Response:
    user = call.state.users.get(call.snowflake("user_id"))
    if user is None:
        raise DiscordError(404, UNKNOWN_USER, "Unknown User")
    return json_response(user.payload())


def application_payload(call: Call) -> dict[str, Any]:
    state = call.state
    flags = MESSAGE_CONTENT_LIMITED if call.discord.config.message_content_allowed else 0
    return {
        "id": str(state.application_id),
        "name": state.bot_user.username,
        "icon": None,
        "description": "",
        "summary": "",
        "type": None,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "owner": state.owner.payload(),
        "team": None,
        "flags": flags,
        "flags_new": str(flags),
        "bot": state.bot_user.payload(),
        "role_connections_verification_url": None,
        "explicit_content_filter": 0,
        "eligible_oauth2_scopes": ["bot", "applications.commands"],
        "approximate_user_install_count": 0,
        "approximate_user_authorization_count": 0,
        "rpc_origins": [],
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "tags": [],
        "approximate_guild_count": len(state.guilds),
        "integration_types_config": {"0": {}},
    }


@routes.add("GET", "/oauth2/applications/@me")
async def get_oauth_application(call: Call) -> web.Response:
    return json_response(application_payload(call))


@routes.add("GET", "/applications/@me")
async def get_application(call: Call) -> web.Response:
    return json_response(application_payload(call))


@routes.add("GET", "/gateway")
async def get_gateway(call: Call) -> web.Response:
    return json_response({"url": call.discord.gateway.url})


@routes.add("GET", "/gateway/bot")
async def get_gateway_bot(call: Call) -> web.Response:
    """The recommended shard count for the guilds the bot is in now, and what is left of the
    day's IDENTIFYs (see `gateway.Gateway`)."""
    gateway = call.discord.gateway
    return json_response(
        {
            "url": gateway.url,
            "shards": gateway.recommended_shards(),
            "session_start_limit": gateway.session_start_limit(),
        }
    )


# -- application commands --------------------------------------------------------------------


def _scope(call: Call) -> int | None:
    if call.snowflake("application_id") != call.state.application_id:
        raise DiscordError(
            403,
            MISSING_ACCESS,
            "Missing Access",
            violation=True,
            detail="application id in the path is not the bot's",
        )
    if "guild_id" not in call.params:
        return None
    guild = call.state.guilds.get(call.snowflake("guild_id"))
    if guild is None or call.state.bot_user.id not in guild.members:
        raise DiscordError(
            403,
            MISSING_ACCESS,
            "Missing Access",
            violation=True,
            detail="the bot is not in that guild",
        )
    return guild.id


def _find(call: Call, scope: int | None) -> Command:
    command_id = call.snowflake("command_id")
    for command in call.state.commands.get(scope, []):
        if command.id == command_id:
            return command
    raise DiscordError(404, UNKNOWN_COMMAND, "Unknown application command")


@routes.add("GET", "/applications/{application_id}/commands")
@routes.add("GET", "/applications/{application_id}/guilds/{guild_id}/commands")
async def list_commands(call: Call) -> web.Response:
    scope = _scope(call)
    return json_response([c.payload() for c in call.state.commands.get(scope, [])])


@routes.add("PUT", "/applications/{application_id}/commands")
@routes.add("PUT", "/applications/{application_id}/guilds/{guild_id}/commands")
async def bulk_overwrite_commands(call: Call) -> web.Response:
    scope = _scope(call)
    bodies = list(call.body or [])
    errors = check_commands(bodies)
    if errors:
        raise form_error(errors)
    commands = call.state.replace_commands(scope, bodies)
    log.info(
        "synced %d command(s) %s",
        len(commands),
        "globally" if scope is None else f"to guild {scope}",
    )
    return json_response([c.payload() for c in commands])


@routes.add("POST", "/applications/{application_id}/commands")
@routes.add("POST", "/applications/{application_id}/guilds/{guild_id}/commands")
async def upsert_command(call: Call) -> web.Response:
    scope = _scope(call)
    body = dict(call.body or {})
    kind = int(body.get("type") or 1)
    others = [
        c.data
        for c in call.state.commands.get(scope, [])
        if (c.name, c.type) != (body.get("name"), kind)
    ]
    existed = len(others) != len(call.state.commands.get(scope, []))
    errors = check_commands([*others, body])
    if errors:
        raise form_error(errors)
    commands = call.state.replace_commands(scope, [*others, body])
    return json_response(commands[-1].payload(), 200 if existed else 201)


@routes.add("GET", "/applications/{application_id}/commands/{command_id}")
@routes.add("GET", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}")
async def get_command(call: Call) -> web.Response:
    return json_response(_find(call, _scope(call)).payload())


@routes.add("DELETE", "/applications/{application_id}/commands/{command_id}")
@routes.add("DELETE", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}")
async def delete_command(call: Call) -> web.Response:
    scope = _scope(call)
    command = _find(call, scope)
    remaining = [c.data for c in call.state.commands[scope] if c is not command]
    call.state.replace_commands(scope, remaining)
    return no_content()


# Integrations overrides: only a server admin sets them (Server Settings -> Integrations, or
# a Bearer token of theirs); the bot may read them. Tests set them with
# `state.set_command_permissions`.


@routes.add("GET", "/applications/{application_id}/guilds/{guild_id}/commands/permissions")
async def list_command_permissions(call: Call) -> web.Response:
    guild = _guild(call)
    targets = [target for guild_id, target in call.state.command_overrides if guild_id == guild.id]
    return json_response(
        [command_permissions_payload(call.state, guild, target) for target in targets]
    )


@routes.add(
    "GET", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}/permissions"
)
async def get_command_permissions(call: Call) -> web.Response:
    guild = _guild(call)
    target = call.snowflake("command_id")
    if (guild.id, target) not in call.state.command_overrides:
        raise DiscordError(
            404, UNKNOWN_COMMAND_PERMISSIONS, "Unknown application command permissions"
        )
    return json_response(command_permissions_payload(call.state, guild, target))


@routes.add(
    "PUT", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}/permissions"
)
async def edit_command_permissions(call: Call) -> web.Response:
    # Discord takes this only from a member's own OAuth2 token: never from a bot.
    raise DiscordError(
        403,
        BOTS_CANNOT_USE_THIS,
        "Bots cannot use this endpoint",
        violation=True,
        detail="command permissions are set by a member's own OAuth2 token, never a bot's",
    )


# -- guilds and users ------------------------------------------------------------------------


def _guild(call: Call) -> Guild:
    guild = call.state.guilds.get(call.snowflake("guild_id"))
    if guild is None or call.state.bot_user.id not in guild.members:
        raise DiscordError(404, UNKNOWN_GUILD, "Unknown Guild")
    return guild


@routes.add("GET", "/guilds/{guild_id}")
async def get_guild(call: Call) -> web.Response:
    data = guild_create_payload(call.state, _guild(call))
    for key in (
        "members",
        "channels",
        "threads",
        "voice_states",
        "presences",
        "joined_at",
        "large",
        "member_count",
        "stage_instances",
        "guild_scheduled_events",
        "soundboard_sounds",
        "embedded_activities",
        "lazy",
        "unavailable",
    ):
        data.pop(key, None)
    # A REST guild has these too (none set here), where the gateway's GUILD_CREATE leaves
    # them out.
    data.update(home_header=None, widget_channel_id=None, max_presences=None)
    return json_response(data)


@routes.add("GET", "/guilds/{guild_id}/channels")
async def get_guild_channels(call: Call) -> web.Response:
    guild = _guild(call)
    return json_response(
        [channel_payload(call.state, call.state.channels[c]) for c in guild.channel_ids]
    )


@routes.add("GET", "/guilds/{guild_id}/threads/active")
async def get_active_threads(call: Call) -> web.Response:
    guild = _guild(call)
    call.state.sweep_archives()
    threads = [
        channel_payload(call.state, c)
        for c in call.state.channels.values()
        if c.guild_id == guild.id and c.is_thread and not c.archived
    ]
    return json_response({"threads": threads, "members": []})


@routes.add("GET", "/guilds/{guild_id}/members/{user_id}")
async def get_member(call: Call) -> web.Response:
    guild = _guild(call)
    user = call.state.users.get(call.snowflake("user_id"))
    if user is None or user.id not in guild.members:
        raise DiscordError(404, UNKNOWN_MEMBER, "Unknown Member")
    return json_response(member_payload(call.state, guild, user))


@routes.add("POST", "/users/@me/channels")
async def open_dm(call: Call) -> web.Response:
    user = call.state.users.get(int((call.body or {}).get("recipient_id") or 0))
    if user is None:
        raise DiscordError(400, UNKNOWN_USER, "Unknown User")
    return json_response(channel_payload(call.state, call.state.dm_channel(user)))
