"""End-to-end: /kontext-admin. The server's owner sees and changes every rule, privately; the
changes hold for members and survive a restart; a member without Manage Server is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e import embed_of, field, starts
from tests.images import make_png
from tests.local_discord import DiscordDriver, LocalDiscord, Message, RunningBot, start_bot
from tests.local_discord.command_access import (
    CommandNotAllowedError,
    CommandOverride,
    OverrideType,
)

pytest_plugins = ("tests.local_discord.fixtures",)

ALL_MODELS = "Kontext Pro, Kontext Max, Kontext Dev, Kontext Dev ultra-fast"
NO_CAPS = (
    "Server per day: no cap\nServer per month: no cap\nEach member per day: no cap\n"
    "Images per member per day: no cap"
)
REFUSED = "❌ Only members with the Manage Server permission can use that."


async def ask(driver: DiscordDriver, command: str, **options: Any) -> Message:
    """Run a /kontext-admin command; its answer, which only the one who asked sees."""
    answer = await (await driver.slash(f"kontext-admin {command}", **options)).response()
    assert answer.ephemeral, answer.content
    return answer


async def settings(owner: DiscordDriver) -> dict[str, str]:
    embed = embed_of(await ask(owner, "settings"))
    return {f["name"]: f["value"] for f in embed["fields"]}


async def test_the_owner_sees_the_defaults_and_changes_every_rule(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    owner = local_discord.moderator()
    assert await settings(owner) == {
        "Models offered": ALL_MODELS,
        "Default model": "Kontext Pro",
        "NSFW images": "Shown behind a spoiler in age-restricted channels only",
        "Highest safety tolerance": "Any (1-5)",
        "Cooldown": "None",
        "Channels": "Every channel",
        "Roles": "Everyone",
        "Budgets": NO_CAPS,
        "Blocked words (0)": "None",
        "Log channel": "None",
        "Banned members": "0",
    }

    images = local_discord.images
    artists = local_discord.state.create_role(local_discord.guild, "artists")
    answers = [
        (await ask(owner, "models", offered="pro dev", default="dev")).content,
        (await ask(owner, "channels", action="add", channel=images)).content,
        (await ask(owner, "roles", action="add", role=artists)).content,
        (await ask(owner, "nsfw", policy="withhold")).content,
        (await ask(owner, "safety", highest="2")).content,
        (await ask(owner, "budget", server_daily="5", member_images="3")).content,
        (await ask(owner, "cooldown", seconds=30)).content,
        (await ask(owner, "words", action="add", word="Pineapple   Pizza")).content,
        (await ask(owner, "log-channel", channel=images)).content,
    ]
    assert answers == [
        "Models offered: Kontext Pro, Kontext Dev.\nDefault: Kontext Dev.",
        f"Added <#{images.id}>.\nI work in: <#{images.id}>.",
        f"Added <@&{artists.id}>.\nWho may use me: <@&{artists.id}>.",
        "NSFW images: Never shown.",
        "Highest safety tolerance: 2 (1 is the strictest).",
        "**Budgets** (reset at 00:00 UTC)\nServer per day: $5.00\nServer per month: no cap\n"
        "Each member per day: no cap\nImages per member per day: 3",
        "Cooldown: 30 s between a member's images.",
        "Added `pineapple pizza`.\nBlocked (1): `pineapple pizza`",
        f"Log channel: <#{images.id}>.",
    ]
    shown = await settings(owner)
    assert shown["Models offered"] == "Kontext Pro, Kontext Dev"
    assert shown["Default model"] == "Kontext Dev"
    assert shown["Channels"] == f"<#{images.id}>"
    assert shown["Roles"] == f"<@&{artists.id}>"
    assert shown["NSFW images"] == "Never shown"
    assert shown["Highest safety tolerance"] == "2 (1 is the strictest)"
    assert shown["Cooldown"] == "30 s between a member's images"
    assert shown["Budgets"].splitlines()[0] == "Server per day: $5.00"
    assert shown["Blocked words (1)"] == "`pineapple pizza`"
    assert shown["Log channel"] == f"<#{images.id}>"

    # The rules hold for members: alice is in #general, which is no longer on the list.
    refused = await (await alice.slash("edit", image=make_png(), prompt="a fox")).response(
        starts("❌")
    )
    assert refused.content == (
        f"❌ I don't work in this channel. In this server, use me in <#{images.id}>."
    )

    # Lists shrink and clear; budgets go back to no cap, or to the config's default.
    again = await ask(owner, "channels", action="add", channel=images)
    assert again.content.startswith(f"<#{images.id}> was already on the list.")
    cleared = await ask(owner, "channels", action="clear")
    assert cleared.content == "Cleared.\nI work in: Every channel."
    removed = await ask(owner, "roles", action="remove", role=artists)
    assert removed.content == f"Removed <@&{artists.id}>.\nWho may use me: Everyone."
    gone = await ask(owner, "words", action="remove", word="PINEAPPLE pizza")
    assert gone.content == "Removed `pineapple pizza`.\nBlocked (0): None"
    uncapped = await ask(owner, "budget", server_daily="none", member_images="default")
    assert uncapped.content.endswith(NO_CAPS)
    unlogged = await ask(owner, "log-channel")
    assert unlogged.content == "No log channel."
    anything = await ask(owner, "safety", highest="any")
    assert anything.content == "Highest safety tolerance: Any (1-5)."


async def test_bad_input_is_refused_in_words_and_changes_nothing(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    owner = local_discord.moderator()
    refusals = [
        (await ask(owner, "budget", server_daily="abc")).content,
        (await ask(owner, "budget", member_daily="-2")).content,
        (await ask(owner, "budget", member_images="2.5")).content,
        (await ask(owner, "models", offered="pro turbo")).content,
        (await ask(owner, "models", offered="pro", default="max")).content,
        (await ask(owner, "channels", action="add")).content,
    ]
    assert refusals == [
        "❌ 'abc' is not an amount in US dollars: write it like 5 or 2.50, or none for no cap.",
        "❌ A budget cannot be negative (-2).",
        "❌ '2.5' is not a number of images: write a whole number like 25, or none for no cap.",
        "❌ Name the models to offer from: pro, max, dev, dev-ultra-fast (for example: pro dev).",
        "❌ Kontext Max is not one of the models offered (Kontext Pro): offer it too, or choose "
        "another default.",
        "❌ Name a channel to add.",
    ]
    shown = await settings(owner)
    assert shown["Models offered"] == ALL_MODELS
    assert shown["Budgets"] == NO_CAPS


async def test_a_banned_member_is_refused_until_unbanned(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    owner = local_discord.moderator()
    bob = alice.stranger
    assert (await ask(owner, "ban", member=bob.user)).content == (
        f"<@{bob.user.id}> can no longer use me here."
    )
    assert (await ask(owner, "ban", member=bob.user)).content == (
        f"<@{bob.user.id}> was already banned."
    )
    refused = await (await bob.slash("imagine", prompt="a fox")).response(starts("❌"))
    assert refused.content == "❌ A moderator of this server has stopped you from using me here."
    assert (await settings(owner))["Banned members"] == "1"

    assert (await ask(owner, "ban", member=owner.user)).content == ("❌ You cannot ban yourself.")
    assert (await ask(owner, "ban", member=local_discord.bot_user)).content == (
        "❌ Bots cannot use me, so there is nobody to ban."
    )

    assert (await ask(owner, "unban", member=bob.user)).content == (
        f"<@{bob.user.id}> can use me here again."
    )
    assert (await ask(owner, "unban", member=bob.user)).content == (
        f"<@{bob.user.id}> was not banned."
    )
    made = await (await bob.slash("imagine", prompt="a fox")).response(starts("✅"), timeout=10)
    assert made.ephemeral


async def test_usage_shows_the_servers_spending_by_member_and_model(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    owner = local_discord.moderator()
    empty = embed_of(await ask(owner, "usage"))
    assert field(empty, "Today: $0.00, 0 images") == "Nothing spent."

    pro = await alice.slash("imagine", prompt="a lighthouse")
    await pro.response(starts("✅"), timeout=10)
    maximum = await alice.stranger.slash("imagine", prompt="a harbour", model="max", count=2)
    await maximum.response(starts("✅"), timeout=10)

    usage = embed_of(await ask(owner, "usage"))
    alice_id, bob_id = alice.user.id, alice.stranger.user.id
    for period in ("Today", "This month"):
        assert field(usage, f"{period}: $0.20, 3 images").splitlines() == [
            f"<@{bob_id}>: $0.16 (2 images, 1 job)",
            f"<@{alice_id}>: $0.04 (1 image, 1 job)",
        ]
        assert field(usage, f"{period} by model").splitlines() == [
            "Kontext Max Text-to-Image: $0.16 (2 images, 1 job)",
            "Kontext Pro Text-to-Image: $0.04 (1 image, 1 job)",
        ]
    # Members are named by mention in an answer only the owner sees, and nobody is pinged.
    answer = await ask(owner, "usage")
    assert not answer.mention_ids


async def test_a_member_without_manage_server_is_refused(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    # Discord shows the group to members with Manage Server only, and in servers only.
    (command,) = [
        c for c in local_discord.state.commands.get(None, []) if c.name == "kontext-admin"
    ]
    assert command.payload()["default_member_permissions"] == "32"
    assert command.payload()["contexts"] == [0]
    with pytest.raises(CommandNotAllowedError):
        await ask(alice, "settings")
    # A server may hand the commands to anyone in its Integrations settings: the bot itself
    # still refuses whoever lacks Manage Server.
    local_discord.state.set_command_permissions(
        local_discord.guild, command, [CommandOverride(alice.user.id, OverrideType.USER, True)]
    )
    for name in ("settings", "usage", "cooldown"):
        options = {"seconds": 5} if name == "cooldown" else {}
        refused = await ask(alice, name, **options)
        assert refused.content == REFUSED
    assert (await settings(local_discord.moderator()))["Cooldown"] == "None"


async def test_the_rules_survive_a_restart(local_discord: LocalDiscord, tmp_path: Path) -> None:
    overrides = {"storage": {"database": str(tmp_path / "jobs.sqlite3")}}
    owner = local_discord.moderator()
    async with start_bot(local_discord, settings_overrides=overrides):
        await ask(owner, "cooldown", seconds=90)
        await ask(owner, "words", action="add", word="spiders")
        await ask(owner, "budget", member_daily="0.50")
        await ask(owner, "ban", member=local_discord.stranger)
    async with start_bot(local_discord, settings_overrides=overrides):
        shown = await settings(owner)
    assert shown["Cooldown"] == "90 s between a member's images"
    assert shown["Blocked words (1)"] == "`spiders`"
    assert shown["Budgets"].splitlines()[2] == "Each member per day: $0.50"
    assert shown["Banned members"] == "1"


async def test_balance_shows_what_the_account_has_left_and_warns_when_low(
    local_discord: LocalDiscord,
) -> None:
    owner = local_discord.moderator()
    overrides = {"simulator": {"balance_usd": "5.02"}, "wavespeed": {"low_balance_usd": "5.00"}}
    async with start_bot(local_discord, settings_overrides=overrides):
        ix = await owner.slash("kontext-admin balance")
        answer = await ix.response(starts("The dry run's"))
        assert answer.ephemeral
        assert answer.content == "The dry run's pretend WaveSpeed account has **$5.02** left."
        # An edit costs $0.04, taken from the account when it is billed.
        edit = await owner.slash("edit", image=make_png(), prompt="make it blue")
        await edit.response(starts("✅"))
        ix = await owner.slash("kontext-admin balance")
        answer = await ix.response(starts("The dry run's"))
        assert answer.content == (
            "The dry run's pretend WaveSpeed account has **$4.98** left.\n"
            "⚠️ That is below the low-balance mark of $5.00: top it up at wavespeed.ai, or jobs "
            "will be refused when it runs out."
        )
