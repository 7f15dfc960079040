"""Who may run an application command where, as the Discord client enforces it.

Discord never delivers an invocation the member could not make: the client hides the command,
and the API refuses it. So the local Discord refuses it at the driver, before any
INTERACTION_CREATE, with `CommandNotAllowedError` saying why. The rules, from Discord's
"Application Commands: Permissions" documentation:

- `contexts` (or, when it is null, `dm_permission: false`) decide whether a command exists in a
  DM with the bot at all;
- in a guild the member needs Use Application Commands in that channel;
- a server admin's overrides (Server Settings -> Integrations, `set_command_permissions`) come
  first: channel overrides, then the member's own, their roles', @everyone's; the command's
  own before the whole app's;
- with no override for the member, `default_member_permissions` applies: every bit it names,
  in that channel (roles and overwrites). "0" leaves the command to administrators;
- the server's owner and administrators may always run every command.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .models import Channel, Command, Guild, Perm, User

# Interaction context types (`contexts`): a guild, the bot's DM, another private channel.
CONTEXT_GUILD, CONTEXT_BOT_DM, CONTEXT_PRIVATE_CHANNEL = 0, 1, 2


class CommandNotAllowedError(PermissionError):
    """The member may not run this command here; Discord would not have sent it to the bot."""


class OverrideType(enum.IntEnum):
    """What an Integrations override targets (Discord's `type`)."""

    ROLE = 1
    USER = 2
    CHANNEL = 3


@dataclass(frozen=True, slots=True)
class CommandOverride:
    """One row of Server Settings -> Integrations: allow or deny one role, member or channel.

    The @everyone role's id is the guild's; "all channels" is the guild's id minus one.
    """

    id: int
    type: OverrideType
    permission: bool

    def payload(self) -> dict[str, object]:
        return {"id": str(self.id), "type": int(self.type), "permission": self.permission}


# Overrides per (guild id, command id); the application's id stands for "every command".
Overrides = dict[tuple[int, int], list[CommandOverride]]


def refusal(
    command: Command,
    user: User,
    channel: Channel,
    *,
    guild: Guild | None,
    permissions: int,
    overrides: Overrides,
    application_id: int,
) -> str | None:
    """Why `user` may not run `command` in `channel` (None: they may).

    `permissions` is what the member may do in `channel`, overwrites included.
    """
    label = _label(command)
    if guild is None:
        contexts = command.data.get("contexts")
        if contexts is not None:
            allowed = CONTEXT_BOT_DM in contexts
        else:
            allowed = command.data.get("dm_permission", True) is not False
        return None if allowed else f"{label} cannot be used in direct messages"
    if user.id == guild.owner_id or permissions & Perm.ADMINISTRATOR:
        return None  # the owner and administrators may always
    where = f"#{channel.name}" if channel.name else f"channel {channel.id}"
    contexts = command.data.get("contexts")
    if contexts is not None and CONTEXT_GUILD not in contexts:
        return f"{label} cannot be used in a server"
    if not permissions & Perm.USE_APPLICATION_COMMANDS:
        return f"{user.username} lacks Use Application Commands in {where}"
    scopes = [
        overrides.get((guild.id, command.id), []),
        overrides.get((guild.id, application_id), []),
    ]
    base = channel.parent_id if channel.parent_id is not None else channel.id
    for rows in scopes:
        verdict = _channel_verdict(rows, base, guild.id)
        if verdict is False:
            return f"{label} is switched off in {where} (server settings, Integrations)"
        if verdict is True:
            break
    member = guild.members.get(user.id)
    role_ids = set(member.role_ids) if member is not None else set()
    for rows in scopes:
        verdict = _member_verdict(rows, user.id, role_ids, guild.id)
        if verdict is True:
            return None
        if verdict is False:
            return f"{user.username} may not use {label} (server settings, Integrations)"
    needed = command.data.get("default_member_permissions")
    if needed is None:
        return None
    needed_bits = int(needed)
    if needed_bits == 0:
        return f"{label} is for administrators only"
    missing = Perm(needed_bits & ~permissions)
    if missing:
        names = ", ".join(flag.name or str(int(flag)) for flag in Perm if flag & missing)
        return f"{user.username} lacks {names or hex(missing)} in {where}, which {label} needs"
    return None


def _label(command: Command) -> str:
    return f"/{command.name}" if command.type == 1 else f"the {command.name!r} menu"


def _channel_verdict(rows: list[CommandOverride], channel_id: int, guild_id: int) -> bool | None:
    """This channel's override, else the all-channels one (the guild's id minus one)."""
    channels = {row.id: row.permission for row in rows if row.type is OverrideType.CHANNEL}
    if channel_id in channels:
        return channels[channel_id]
    return channels.get(guild_id - 1)


def _member_verdict(
    rows: list[CommandOverride], user_id: int, role_ids: set[int], guild_id: int
) -> bool | None:
    """The member's own override, else their roles' (any allow wins), else @everyone's."""
    for row in rows:
        if row.type is OverrideType.USER and row.id == user_id:
            return row.permission
    roles = [row.permission for row in rows if row.type is OverrideType.ROLE and row.id in role_ids]
    if roles:
        return any(roles)
    for row in rows:
        if row.type is OverrideType.ROLE and row.id == guild_id:
            return row.permission
    return None
