"""Who a message pings: mentions parsed from its content, filtered by `allowed_mentions`.

As Discord's docs describe it (Message Formatting, Allowed Mentions):

- `<@id>` and `<@!id>` mention a user, `<@&id>` a role, `@everyone` and `@here` the channel.
  They are found anywhere in `content`, code blocks and backslashes included (the stricter
  reading: escaping text is no substitute for `allowed_mentions`). Mentions in embeds never
  ping.
- Without `allowed_mentions` everything parsed pings, and a reply pings the replied-to author.
- With it, users ping if `parse` has "users" or they are listed in `users`, roles likewise with
  "roles" / `roles`, @everyone and @here only with "everyone"; the replied-to author only with
  `replied_user: true`.
- A role pings only if it is mentionable or the author may Mention @everyone, @here and All
  Roles; @everyone and @here ping only with that permission (a server that grants it, e.g.
  through Administrator, is what a test models to see a bot's mistake).
- An edit that changes `content` parses it again with the edit's own `allowed_mentions`, or
  with the defaults when the edit has none (whatever the original post allowed). A mention
  added by an edit counts as a ping here: the message is highlighted for them and listed
  among their mentions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .models import Perm, Pings

if TYPE_CHECKING:
    from .models import Channel, User
    from .state import DiscordState

_USER = re.compile(r"<@!?([0-9]{1,20})>")
_ROLE = re.compile(r"<@&([0-9]{1,20})>")
_EVERYONE = re.compile(r"@(everyone|here)")


@dataclass(frozen=True)
class Parsed:
    """The mentions written in a text, in order of first appearance."""

    users: tuple[int, ...] = ()
    roles: tuple[int, ...] = ()
    everyone: bool = False
    here: bool = False


def parse(content: str | None) -> Parsed:
    text = content or ""
    words = {m.group(1) for m in _EVERYONE.finditer(text)}
    return Parsed(
        users=tuple(dict.fromkeys(int(m) for m in _USER.findall(text))),
        roles=tuple(dict.fromkeys(int(m) for m in _ROLE.findall(text))),
        everyone="everyone" in words,
        here="here" in words,
    )


def resolve(
    state: DiscordState,
    channel: Channel,
    author: User,
    content: str | None,
    allowed: dict[str, Any] | None,
    *,
    replied_author: int | None = None,
) -> Pings:
    """Who `author` pings in `channel` with `content` under `allowed` (None: not sent)."""
    written = parse(content)
    if allowed is None:
        parse_all = {"users", "roles", "everyone"}
        listed_users: set[int] = set()
        listed_roles: set[int] = set()
        replied = True
    else:
        parse_all = {str(p) for p in allowed.get("parse") or [] if p is not None}
        listed_users = _ids(allowed.get("users"))
        listed_roles = _ids(allowed.get("roles"))
        replied = bool(allowed.get("replied_user"))
    may_mention_all = bool(state.permissions(author, channel) & Perm.MENTION_EVERYONE)
    users = [
        user_id
        for user_id in written.users
        if user_id in state.users and ("users" in parse_all or user_id in listed_users)
    ]
    if replied_author is not None and replied and replied_author not in users:
        users.append(replied_author)
    guild = state.guilds.get(channel.guild_id) if channel.guild_id is not None else None
    if guild is None:
        # Roles, @everyone and @here mean nothing in a DM.
        return Pings(tuple(users))
    roles = []
    for role_id in written.roles:
        role = guild.roles.get(role_id)
        # The @everyone role's id is the guild's; <@&guild_id> is not how @everyone is pinged.
        if role is None or role_id == guild.id:
            continue
        if "roles" not in parse_all and role_id not in listed_roles:
            continue
        if role.mentionable or may_mention_all:
            roles.append(role_id)
    everyone = (written.everyone or written.here) and "everyone" in parse_all and may_mention_all
    return Pings(tuple(users), tuple(roles), everyone)


def _ids(values: Iterable[Any] | None) -> set[int]:
    return {int(v) for v in values or [] if v is not None}
