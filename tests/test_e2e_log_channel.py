"""End-to-end: a server's log channel. Every job that ends there is logged for its moderators in
one line (who, what, the model, the cost, the result's link or why there is none), pinging
nobody; a server budget at 80 % is noted once a day; a server without a log channel hears
nothing."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from services.simulator import Fault, SimulatorConfig, run_simulator
from tests.e2e import SIM_KEY, against, is_step, job_id_of, says, shared_simulator, starts
from tests.images import make_png
from tests.local_discord import Channel, LocalDiscord, Message, Perm, start_bot

pytest_plugins = ("tests.local_discord.fixtures",)

NOTE = "📊 This server has used $0.08 of its $0.10 daily budget (80 %); it resets at 00:00 UTC."


def add_log_channel(local: LocalDiscord) -> Channel:
    """#mod-log, made before the bot connects (so it is in the guild the bot is sent)."""
    return local.state.add_text_channel(local.guild, "mod-log")


def link_to(message: Message) -> str:
    return f"https://discord.com/channels/{message.guild_id}/{message.channel_id}/{message.id}"


async def test_each_ended_job_is_logged_in_one_line_that_pings_nobody(
    local_discord: LocalDiscord,
) -> None:
    mod_log = add_log_channel(local_discord)
    guild = local_discord.guild
    async with (
        shared_simulator(latency_s=0.5) as sim,
        start_bot(local_discord, settings_overrides=against(sim)) as (alice, bot),
    ):
        await bot.services.community.change(guild.id, guild.owner_id, log_channel_id=mod_log.id)
        moderator = local_discord.moderator(mod_log)
        bob = local_discord.stranger

        # Delivered: who (mentioned, not pinged), what, the model, the cost, the result.
        prompt = "make it blue @everyone <@" + str(bob.id) + "> [free](https://x.example)"
        ix = await alice.slash("edit", image=make_png(), prompt=prompt)
        await ix.response(starts("✅"), timeout=10)
        result = await alice.wait_for_message(is_step("Step 1"))
        entry = await moderator.wait_for_message(starts("✅"), where=mod_log, timeout=10)
        assert entry.content.startswith(f"✅ <@{alice.user.id}> **edit** “make it blue "), (
            entry.content
        )
        assert " · Kontext Pro · $0.04 · " in entry.content, entry.content
        assert entry.content.endswith(link_to(result)), entry.content
        # The member's words are shown as written: no mention, @everyone or masked link works.
        assert "\\@everyone \\<\\@" + str(bob.id) + "> \\[free\\]" in entry.content
        assert not entry.pinged_anyone
        assert not entry.embeds

        # Failed at the image service: its hold is given back.
        sim.inject(Fault.TASK_FAILED)
        failed = await alice.slash("edit", image=make_png(), prompt="fails")
        await failed.response(starts("❌"), timeout=10)
        entry = await moderator.wait_for_message(starts("❌"), where=mod_log, timeout=10)
        assert entry.content.startswith(f"❌ <@{alice.user.id}> **edit** “fails” · Kontext Pro · ")
        assert " · nothing billed · failed: " in entry.content, entry.content
        assert not entry.pinged_anyone

        # Cancelled while waiting: nothing billed either.
        first = await alice.slash("edit", image=make_png(), prompt="one")
        await first.response(starts("🧰", "🎨"), timeout=10)
        waiting = await alice.slash("edit", image=make_png(), prompt="cancelled")
        status = await waiting.response(says("⏳ Queued: you're next."), timeout=10)
        await alice.click(status, "Cancel")
        await waiting.response(starts("🚫"), timeout=10)
        entry = await moderator.wait_for_message(starts("🚫"), where=mod_log, timeout=10)
        assert entry.content == (
            f"🚫 <@{alice.user.id}> **edit** “cancelled” · Kontext Pro · nothing billed · cancelled"
        )
        await alice.wait_for_message(is_step("Step 1", "one"), timeout=10)
        done = await moderator.wait_for_message(
            lambda m: "“one”" in m.content, where=mod_log, timeout=10
        )
        assert done.content.startswith("✅")

        # A reroll is logged as one, with its step.
        reroll = await alice.click(result, "Reroll")
        await reroll.response(starts("✅"), timeout=10)
        rerolled = await alice.wait_for_message(
            is_step("Step 1 · reroll"), where=result, timeout=10
        )
        entry = await moderator.wait_for_message(
            lambda m: "**reroll" in m.content, where=mod_log, timeout=10
        )
        assert entry.content.endswith(link_to(rerolled)), entry.content
        assert job_id_of(rerolled) != job_id_of(result)

        entries = [m for m in moderator.messages(mod_log) if m.author.id == alice.bot_user.id]
        assert len(entries) == 5, [m.content for m in entries]
        assert not any(m.pinged_anyone for m in entries)


async def test_a_server_budget_at_80_percent_is_noted_once(local_discord: LocalDiscord) -> None:
    mod_log = add_log_channel(local_discord)
    guild = local_discord.guild
    overrides = {"simulator": {"latency_s": 0.1}}
    async with start_bot(local_discord, settings_overrides=overrides) as (alice, bot):
        await bot.services.community.change(
            guild.id, guild.owner_id, log_channel_id=mod_log.id, server_daily_usd="0.10"
        )
        moderator = local_discord.moderator(mod_log)

        # $0.04 of $0.10: no note yet.
        first = await alice.slash("edit", image=make_png(), prompt="one")
        await first.response(starts("✅"), timeout=10)
        await moderator.wait_for_message(lambda m: "“one”" in m.content, where=mod_log)
        # $0.08: the line is crossed.
        second = await alice.slash("edit", image=make_png(), prompt="two")
        await second.response(starts("✅"), timeout=10)
        note = await moderator.wait_for_message(starts("📊"), where=mod_log, timeout=10)
        assert note.content == NOTE
        assert not note.pinged_anyone
        # $0.10: still the same day, so no second note.
        third = await alice.slash("edit", image=make_png(), prompt="three", model="dev-ultra-fast")
        await third.response(starts("✅"), timeout=10)
        await moderator.wait_for_message(
            lambda m: "“three”" in m.content and "$0.02" in m.content, where=mod_log, timeout=10
        )

        notes = [m for m in moderator.messages(mod_log) if m.content.startswith("📊")]
        assert [m.content for m in notes] == [NOTE]


async def test_a_server_without_a_log_channel_hears_nothing(local_discord: LocalDiscord) -> None:
    state = local_discord.state
    # A second server, without a log channel, beside one that has one.
    other = state.add_guild(
        "Other Guild", state.owner, everyone_permissions=local_discord.config.everyone_permissions
    )
    state.add_member(other, state.bot_user, permissions=local_discord.config.bot_permissions)
    state.add_member(other, local_discord.user)
    lounge = state.add_text_channel(other, "lounge")
    quiet = state.add_text_channel(other, "quiet")
    mod_log = add_log_channel(local_discord)
    guild = local_discord.guild
    async with start_bot(local_discord) as (alice, bot):
        await bot.services.community.change(guild.id, guild.owner_id, log_channel_id=mod_log.id)
        await bot.services.community.change(other.id, other.owner_id, server_daily_usd="0.05")
        elsewhere = alice.in_channel(lounge)
        ix = await elsewhere.slash("edit", image=make_png(), prompt="elsewhere")
        await ix.response(starts("✅"), timeout=10)
        await elsewhere.wait_for_message(is_step("Step 1", "elsewhere"), where=lounge)

        # The logged server's job is logged; by then the other one's would have been too.
        ix = await alice.slash("edit", image=make_png(), prompt="here")
        await ix.response(starts("✅"), timeout=10)
        moderator = local_discord.moderator(mod_log)
        await moderator.wait_for_message(lambda m: "“here”" in m.content, where=mod_log)

        assert ["here" in m.content for m in moderator.messages(mod_log)] == [True]
        assert not elsewhere.messages(quiet)
        bot_posts = [m for m in elsewhere.messages(lounge) if m.author.id == alice.bot_user.id]
        assert all(is_step("Step 1", "elsewhere")(m) or m.ephemeral for m in bot_posts), [
            m.content for m in bot_posts
        ]


async def test_a_log_channel_the_bot_cannot_post_in_never_holds_up_a_result(
    local_discord: LocalDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    mod_log = add_log_channel(local_discord)
    guild = local_discord.guild
    # A moderator took Send Messages away in #mod-log.
    local_discord.revoke_bot_permission(mod_log, Perm.SEND_MESSAGES)
    async with start_bot(local_discord) as (alice, bot):
        await bot.services.community.change(guild.id, guild.owner_id, log_channel_id=mod_log.id)
        with caplog.at_level(logging.WARNING, logger="services.modlog"):
            for prompt in ("one", "two"):
                ix = await alice.slash("edit", image=make_png(), prompt=prompt)
                await ix.response(starts("✅"), timeout=10)
                await alice.wait_for_message(is_step("Step 1", prompt))
                await local_discord.violations.wait_for(code=50013, timeout=10)
        # Each entry was tried once; the channel was warned about once.
        warned = [r for r in caplog.records if r.name == "services.modlog"]
        assert len(warned) == 1, [r.getMessage() for r in warned]
        assert f"log channel {mod_log.id}" in warned[0].getMessage()
        assert not local_discord.bot_messages(mod_log)


async def test_a_low_wavespeed_balance_is_noted_once_a_day_in_every_log_channel(
    local_discord: LocalDiscord,
) -> None:
    state = local_discord.state
    mod_log = add_log_channel(local_discord)
    # Another server with a log channel, where nobody makes anything.
    other = state.add_guild(
        "Other Guild", state.owner, everyone_permissions=local_discord.config.everyone_permissions
    )
    state.add_member(other, state.bot_user, permissions=local_discord.config.bot_permissions)
    other_log = state.add_text_channel(other, "bot-log")
    guild = local_discord.guild
    config = SimulatorConfig(
        api_keys=frozenset({SIM_KEY}), latency_s=0.1, max_output_side=256, balance=Decimal("0.10")
    )
    async with run_simulator(config) as sim:
        overrides = against(sim)
        overrides["wavespeed"] |= {"low_balance_usd": "0.05", "balance_check_s": 0}
        async with start_bot(local_discord, settings_overrides=overrides) as (alice, bot):
            community = bot.services.community
            await community.change(guild.id, guild.owner_id, log_channel_id=mod_log.id)
            await community.change(other.id, other.owner_id, log_channel_id=other_log.id)
            moderator = local_discord.moderator(mod_log)

            # $0.06 left: enough.
            first = await alice.slash("edit", image=make_png(), prompt="one")
            await first.response(starts("✅"), timeout=10)
            await moderator.wait_for_message(lambda m: "“one”" in m.content, where=mod_log)
            # $0.02 left: every log channel hears of it.
            second = await alice.slash("edit", image=make_png(), prompt="two")
            await second.response(starts("✅"), timeout=10)
            for channel in (mod_log, other_log):
                note = await moderator.wait_for_message(starts("💳"), where=channel, timeout=10)
                assert note.content == (
                    "💳 The WaveSpeed balance is down to $0.02; top it up at wavespeed.ai."
                )
            # $0.00 left, the same day: not again.
            third = await alice.slash(
                "edit", image=make_png(), prompt="three", model="dev-ultra-fast"
            )
            await third.response(starts("✅"), timeout=10)
            await moderator.wait_for_message(lambda m: "“three”" in m.content, where=mod_log)
        for channel in (mod_log, other_log):
            notes = [m for m in local_discord.bot_messages(channel) if m.content.startswith("💳")]
            assert len(notes) == 1, [m.content for m in notes]
