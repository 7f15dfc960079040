"""End-to-end: a server's rules hold on every way into a job. A role or channel allow list, a
ban, a blocked word and a cooldown each refuse the slash command, the context menu, a reply,
Reroll and the Edit button alike, privately (a reply gets a short reply), and nothing reaches
the image service. What the rules let through still works, and they survive a restart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.community import Community
from services.rules import NsfwPolicy, ServerRules
from tests.e2e import against, answer_to, first_step, is_step, shared_simulator, starts
from tests.images import make_png
from tests.local_discord import DiscordDriver, LocalDiscord, Message, start_bot

pytest_plugins = ("tests.local_discord.fixtures",)

MESSAGE_CONTENT = {"discord": {"message_content": True}}
WAIT = 10.0
ADMIN = 4242
EVERY_PATH = ["/edit", "menu", "reply", "Reroll", "Edit button"]


async def every_path(
    alice: DiscordDriver, result: Message, photo: Message, instruction: str
) -> dict[str, Message]:
    """What alice is told on each way into a job: /edit, the context menu on a photo, a reply
    to her result, and its Reroll and Edit buttons."""
    answers: dict[str, Message] = {}
    ended = starts("✅", "❌")
    ix = await alice.slash("edit", image=make_png(), prompt=instruction)
    answers["/edit"] = await ix.response(ended, timeout=WAIT)
    opened = await alice.context_menu("Edit with Kontext", photo)
    submitted = await alice.submit_modal(opened, **{"What should change?": instruction})
    answers["menu"] = await submitted.response(ended, timeout=WAIT)
    reply = await alice.reply(result, instruction)
    answers["reply"] = await answer_to(alice, reply)
    reroll = await alice.click(result, "Reroll")
    answers["Reroll"] = await reroll.response(ended, timeout=WAIT)
    edit = await alice.click(result, "Edit")
    submitted = await alice.submit_modal(edit, **{"What should change?": instruction})
    answers["Edit button"] = await submitted.response(ended, timeout=WAIT)
    return answers


def refusals(answers: dict[str, Message]) -> dict[str, str]:
    return {path: message.content for path, message in answers.items()}


async def test_every_rule_refuses_every_path_and_nothing_is_sent(
    local_discord: LocalDiscord,
) -> None:
    guild = local_discord.guild.id
    state = local_discord.state
    elsewhere = state.add_text_channel(local_discord.guild, "bot-corner")
    artists = state.create_role(local_discord.guild, "artists")
    async with (
        shared_simulator(latency_s=0) as sim,
        start_bot(local_discord, settings_overrides=against(sim, **MESSAGE_CONTENT)) as (
            alice,
            bot,
        ),
    ):
        community: Community = bot.services.community
        result, _ = await first_step(alice, "a fox in the snow")
        photo = await alice.stranger.say("my garden", files=[make_png()])
        sent = len(sim.predictions)

        async def refused_everywhere(
            change: Callable[[], Awaitable[Any]], expected: str, instruction: str = "make it blue"
        ) -> None:
            await change()
            answers = await every_path(alice, result, photo, instruction)
            assert refusals(answers) == dict.fromkeys(EVERY_PATH, f"❌ {expected}")
            # Interactions are answered privately; a reply is answered with a short reply.
            assert all(answers[path].ephemeral for path in EVERY_PATH if path != "reply")
            assert len(sim.predictions) == sent
            await community.reset(guild, ADMIN, ServerRules.model_fields)
            await community.unban(guild, alice.user.id)

        await refused_everywhere(
            lambda: community.change(guild, ADMIN, roles=[artists.id]),
            f"In this server, only members with one of these roles can use me: <@&{artists.id}>.",
        )
        await refused_everywhere(
            lambda: community.change(guild, ADMIN, channels=[elsewhere.id]),
            f"I don't work in this channel. In this server, use me in <#{elsewhere.id}>.",
        )
        await refused_everywhere(
            lambda: community.ban(guild, alice.user.id, ADMIN),
            "A moderator of this server has stopped you from using me here.",
        )
        # Reroll asks for the first step's instruction again, which holds the word too.
        await refused_everywhere(
            lambda: community.change(guild, ADMIN, blocked_words=["FOX"]),
            "Your instruction contains a word or phrase this server has blocked. "
            "Please rephrase it.",
            instruction="make the fox blue",
        )
        await refused_everywhere(
            lambda: community.change(guild, ADMIN, cooldown_s=3600),
            "Please wait 60 min: this server asks members to wait 60 min between images.",
        )
        # With the rules lifted, the same paths work again.
        reroll = await alice.click(result, "Reroll")
        await reroll.response(starts("✅"), timeout=WAIT)
        assert len(sim.predictions) == sent + 1


async def test_allowed_members_and_channels_go_through_and_rules_survive_a_restart(
    local_discord: LocalDiscord, store_location: str
) -> None:
    guild = local_discord.guild.id
    state = local_discord.state
    artists = state.create_role(local_discord.guild, "artists")
    local_discord.guild.members[local_discord.user.id].role_ids.append(artists.id)
    # On both engines: a SQLite file, and a PostgreSQL database.
    database = {"storage": {"database": store_location}}
    async with shared_simulator(latency_s=0) as sim:
        overrides = against(sim, **database, **MESSAGE_CONTENT)
        async with start_bot(local_discord, settings_overrides=overrides) as (alice, bot):
            community: Community = bot.services.community
            await community.change(
                guild, ADMIN, roles=[artists.id], channels=[local_discord.general.id]
            )
            await community.change(guild, ADMIN, nsfw="withhold", default_model="max")
            await community.ban(guild, alice.stranger.user.id, ADMIN)
            _, thread = await first_step(alice, "a fox in the snow")

        async with start_bot(local_discord, settings_overrides=overrides) as (alice, bot):
            rules = await bot.services.community.rules(guild)
            assert rules.roles == (artists.id,) and rules.nsfw is NsfwPolicy.WITHHOLD
            # Alice has the role, and a thread counts as its channel: her reply in it is made,
            # by the server's default model.
            await alice.in_channel(thread).say("make it night")
            step2 = await alice.wait_for_message(is_step("Step 2"), where=thread, timeout=WAIT)
            assert step2 is not None
            bob = alice.stranger
            ix = await bob.slash("imagine", prompt="a cat")
            answer = await ix.response(starts("✅", "❌"), timeout=WAIT)
            assert (
                answer.content
                == "❌ A moderator of this server has stopped you from using me here."
            )
        models = [p.model_id for p in sim.predictions.values()]
        assert models[0].startswith("wavespeed-ai/flux-kontext-max")


async def test_help_lists_every_way_in_and_the_members_own_limits_here(
    local_discord: LocalDiscord,
) -> None:
    guild = local_discord.guild.id
    overrides = {"budget": {"member_daily_usd": "1.00", "member_daily_images": 25}}
    async with start_bot(local_discord, settings_overrides=overrides) as (alice, bot):
        community: Community = bot.services.community
        await community.change(guild, ADMIN, models=["pro", "max"], cooldown_s=30)
        answer = await (await alice.slash("help")).response(timeout=WAIT)
        assert answer.ephemeral
        for way_in in ("`/edit`", "`/imagine`", "`/combine`", "**Edit with Kontext**", "Reply"):
            assert way_in in answer.content
        assert "**For you in this server:**" in answer.content
        assert "Models: Kontext Pro, Kontext Max (default: Kontext Pro)." in answer.content
        assert "Wait 30 s between images." in answer.content
        assert "Your daily budget: $1.00 ($1.00 left)." in answer.content
        assert "Your daily image limit: 25 (25 left)." in answer.content
        # A banned member is told so, not shown limits they cannot use.
        await community.ban(guild, alice.user.id, ADMIN)
        answer = await (await alice.slash("help")).response(timeout=WAIT)
        assert answer.content.endswith(
            "**For you in this server:**\nA moderator of this server has stopped you from "
            "using me here."
        )
