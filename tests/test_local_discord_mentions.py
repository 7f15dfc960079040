"""The local Discord's mentions: who a message pings, as Discord parses and allows it.

Raw REST requests as the bot (no client in between), so each rule is seen exactly as sent
(members post through the driver, which waits for a connected bot):
mentions parsed from content (`<@id>`, `<@!id>`, `<@&id>`, @everyone, @here), `allowed_mentions`
on posts, interaction answers, followups and edits, Discord's defaults when it is absent, and
the permission a role or @everyone ping needs.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.local_discord import (
    Channel,
    LocalDiscord,
    LocalDiscordConfig,
    Message,
    Perm,
    RunningBot,
    User,
    payloads,
)
from tests.local_discord.mentions import parse
from tests.local_discord.models import BOT_PERMISSIONS, InteractionType, Role

pytest_plugins = ("tests.local_discord.fixtures",)

# A server that lets the bot mention everyone (as Administrator would): every ping it allows
# goes out, so a bot's loose allowed_mentions show.
MAY_MENTION_EVERYONE = LocalDiscordConfig(
    bot_permissions=int(BOT_PERMISSIONS | Perm.MENTION_EVERYONE)
)
NOBODY: dict[str, Any] = {"parse": []}


async def rest(
    local: LocalDiscord, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """One JSON request as the bot (or, for /interactions and /webhooks, with no token)."""
    headers = {"Authorization": f"Bot {local.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, local.api_base_url + path, headers=headers, json=body) as answer,
    ):
        text = await answer.text()
        return answer.status, json.loads(text) if text else None


async def post(local: LocalDiscord, channel: Channel, body: dict[str, Any]) -> Message:
    status, data = await rest(local, "POST", f"/channels/{channel.id}/messages", body)
    assert status == 200, data
    return local.state.messages[int(data["id"])]


def artists(local: LocalDiscord, *, mentionable: bool = True) -> Role:
    return local.state.create_role(local.guild, "artists", mentionable=mentionable)


def everything(local: LocalDiscord, role: Role) -> str:
    """Content that mentions one of everything: two users, a role, @everyone and @here."""
    return f"hi <@{local.user.id}> <@!{local.stranger.id}> <@&{role.id}> @everyone @here"


def ids(*users: User) -> set[int]:
    return {user.id for user in users}


def test_mentions_are_parsed_as_discord_writes_them() -> None:
    parsed = parse("<@1> <@!2> <@1> <@&3> <#4> <@abc> @here `<@5>` \\@everyone")
    assert parsed.users == (1, 2, 5)
    assert parsed.roles == (3,)
    assert parsed.everyone and parsed.here
    assert parse("a@here.com") == parse("@here")
    assert not parse("@ everyone @every one @\u200beveryone").everyone


@pytest.mark.parametrize("local_discord_config", [MAY_MENTION_EVERYONE])
async def test_without_allowed_mentions_everything_in_the_content_pings(
    local_discord: LocalDiscord,
) -> None:
    role = artists(local_discord, mentionable=False)
    message = await post(
        local_discord, local_discord.general, {"content": everything(local_discord, role)}
    )

    assert message.pinged_users == ids(local_discord.user, local_discord.stranger)
    assert message.pinged_roles == {role.id} and message.pinged_everyone
    data = payloads.message_payload(local_discord.state, message)
    assert [m["id"] for m in data["mentions"]] == [
        str(local_discord.user.id),
        str(local_discord.stranger.id),
    ]
    assert data["mention_roles"] == [str(role.id)] and data["mention_everyone"] is True
    with pytest.raises(AssertionError, match="pinged people it should not have"):
        local_discord.assert_pinged_only(local_discord.user)


@pytest.mark.parametrize("local_discord_config", [MAY_MENTION_EVERYONE])
@pytest.mark.parametrize(
    ("allowed", "users", "role", "everyone"),
    [
        (NOBODY, set(), False, False),
        ({"parse": ["users"]}, {"alice", "bob"}, False, False),
        ({"parse": ["roles"]}, set(), True, False),
        ({"parse": ["everyone"]}, set(), False, True),
        ({"users": ["{alice}"]}, {"alice"}, False, False),
        ({"parse": ["everyone"], "roles": ["{role}"]}, set(), True, True),
    ],
    ids=["nobody", "users", "roles", "everyone", "one-user", "role-listed"],
)
async def test_allowed_mentions_decide_who_is_pinged(
    local_discord: LocalDiscord,
    allowed: dict[str, Any],
    users: set[str],
    role: bool,
    everyone: bool,
) -> None:
    artists_role = artists(local_discord, mentionable=False)
    names = {"alice": local_discord.user.id, "bob": local_discord.stranger.id}
    filled = json.loads(
        json.dumps(allowed)
        .replace("{alice}", str(local_discord.user.id))
        .replace("{role}", str(artists_role.id))
    )
    content = everything(local_discord, artists_role)
    message = await post(
        local_discord, local_discord.general, {"content": content, "allowed_mentions": filled}
    )
    assert message.pinged_users == {names[n] for n in users}
    assert message.pinged_roles == ({artists_role.id} if role else set())
    assert message.pinged_everyone is everyone
    # What the payload says is what was pinged, nothing more.
    data = payloads.message_payload(local_discord.state, message, gateway=True)
    assert {int(m["id"]) for m in data["mentions"]} == message.pinged_users
    assert data["mention_everyone"] is everyone


async def test_roles_and_everyone_need_the_permission_or_a_mentionable_role(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    # The bot as invited: no Mention @everyone. Only the mentionable role pings.
    closed = artists(local_discord, mentionable=False)
    open_role = local_discord.state.create_role(local_discord.guild, "helpers", mentionable=True)
    content = f"<@&{closed.id}> <@&{open_role.id}> @everyone @here <@&{local_discord.guild.id}>"
    message = await post(local_discord, local_discord.general, {"content": content})
    assert message.pinged_roles == {open_role.id}
    assert not message.pinged_everyone
    # A member without the permission cannot ping @everyone either.
    said = await local_discord.driver().say("@everyone look")
    assert not said.pinged_anyone


async def test_replies_ping_their_author_unless_allowed_mentions_say_otherwise(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    target = await local_discord.driver().say("my picture")
    reference = {"message_id": str(target.id)}
    default = await post(
        local_discord, local_discord.general, {"content": "ok", "message_reference": reference}
    )
    assert default.pinged_users == ids(local_discord.user)
    quiet = await post(
        local_discord,
        local_discord.general,
        {"content": "ok", "message_reference": reference, "allowed_mentions": NOBODY},
    )
    assert not quiet.pinged_anyone
    asked = await post(
        local_discord,
        local_discord.general,
        {
            "content": "ok",
            "message_reference": reference,
            "allowed_mentions": {"parse": [], "replied_user": True},
        },
    )
    assert asked.pinged_users == ids(local_discord.user)
    # A member's reply pings the author by default, not when turned off.
    bob = local_discord.driver(local_discord.stranger)
    assert (await bob.reply(target, "nice")).pinged_users == ids(local_discord.user)
    assert not (await bob.reply(target, "nice", mention=False)).pinged_anyone


@pytest.mark.parametrize("local_discord_config", [MAY_MENTION_EVERYONE])
async def test_an_edit_parses_its_content_again_with_its_own_allowed_mentions(
    local_discord: LocalDiscord,
) -> None:
    channel = local_discord.general
    message = await post(local_discord, channel, {"content": "hello", "allowed_mentions": NOBODY})
    path = f"/channels/{channel.id}/messages/{message.id}"
    status, _ = await rest(
        local_discord, "PATCH", path, {"content": "@everyone", "allowed_mentions": NOBODY}
    )
    assert status == 200 and not message.pinged_anyone
    # No allowed_mentions on the edit: Discord's defaults, whatever the post allowed.
    status, data = await rest(
        local_discord, "PATCH", path, {"content": f"<@{local_discord.user.id}>"}
    )
    assert status == 200 and data["mentions"][0]["id"] == str(local_discord.user.id)
    assert message.pinged_users == ids(local_discord.user)
    # An edit that mentions nobody now leaves the payload empty; the ping stays on record.
    status, data = await rest(local_discord, "PATCH", path, {"content": "bye"})
    assert data["mentions"] == [] and message.pinged_users == ids(local_discord.user)
    # Editing only the embeds leaves the mentions alone.
    await rest(local_discord, "PATCH", path, {"embeds": [{"description": "@everyone"}]})
    assert not message.pinged_everyone


@pytest.mark.parametrize("local_discord_config", [MAY_MENTION_EVERYONE])
async def test_interaction_answers_and_followups_obey_allowed_mentions(
    local_discord: LocalDiscord,
) -> None:
    state = local_discord.state
    role = artists(local_discord)
    interaction = state.create_interaction(
        InteractionType.APPLICATION_COMMAND,
        local_discord.user,
        local_discord.general,
        {"id": "1", "name": "edit", "type": 1},
        attachment_size_limit=local_discord.guild.upload_limit,
    )
    content = everything(local_discord, role)
    status, _ = await rest(
        local_discord,
        "POST",
        f"/interactions/{interaction.id}/{interaction.token}/callback",
        {"type": 4, "data": {"content": content, "allowed_mentions": NOBODY}},
    )
    assert status == 204
    original = state.messages[interaction.original_message_id or 0]
    assert not original.pinged_anyone
    webhook = f"/webhooks/{local_discord.application_id}/{interaction.token}"
    status, data = await rest(
        local_discord,
        "POST",
        webhook + "?wait=true",
        {"content": content, "allowed_mentions": {"users": [str(local_discord.user.id)]}},
    )
    assert status == 200
    assert state.messages[int(data["id"])].pinged_users == ids(local_discord.user)
    # An edit of @original without allowed_mentions pings everything it now says.
    status, _ = await rest(
        local_discord, "PATCH", webhook + "/messages/@original", {"content": content}
    )
    assert status == 200 and original.pinged_everyone and original.pinged_roles == {role.id}
    assert original in local_discord.bot_pings()


async def test_parse_and_a_list_of_the_same_kind_is_a_form_error(
    local_discord: LocalDiscord,
) -> None:
    body = {
        "content": f"<@{local_discord.user.id}>",
        "allowed_mentions": {"parse": ["users"], "users": [str(local_discord.user.id)]},
    }
    status, error = await rest(
        local_discord, "POST", f"/channels/{local_discord.general.id}/messages", body
    )
    assert (status, error["code"]) == (400, 50035)
    (entry,) = error["errors"]["allowed_mentions"]["parse"]["_errors"]
    assert entry["code"] == "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE"
    local_discord.violations.expect(code=50035, match="mutually exclusive")
    assert local_discord.bot_messages(local_discord.general) == []


@pytest.mark.parametrize("local_discord_config", [MAY_MENTION_EVERYONE])
async def test_a_dm_pings_users_only(local_discord: LocalDiscord) -> None:
    dm = local_discord.state.dm_channel(local_discord.user)
    role = artists(local_discord)
    message = await post(local_discord, dm, {"content": everything(local_discord, role)})
    assert message.pinged_users == ids(local_discord.user, local_discord.stranger)
    assert not message.pinged_roles and not message.pinged_everyone
