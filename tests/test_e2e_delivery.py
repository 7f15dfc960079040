"""End-to-end: a finished image reaches its member exactly once, whatever Discord does.

Rate limits and a lost Send Messages permission on the result post, eight results at once in
one channel under Discord's own limits, a failure after the interaction token died (told
privately, never in the channel), a token Discord ended sooner than the bot counted (dropped
at its first 401), a submit whose answer a proxy swallowed (looked up, then Retry), and a
restart with a post that may have landed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.jobs import NOTHING_MADE_MESSAGE, JobStatus
from services.simulator import Fault
from tests.e2e import (
    add_member,
    against,
    details,
    embed_of,
    field,
    first_step,
    history,
    is_step,
    job_id_of,
    job_status,
    reply_step,
    results_in,
    shared_simulator,
    starts,
)
from tests.images import decoded, make_png
from tests.local_discord import (
    LocalDiscord,
    LocalDiscordConfig,
    Message,
    PremiumType,
    RunningBot,
    start_bot,
)
from tests.local_discord.models import Perm, count_custom_ids

pytest_plugins = ("tests.local_discord.fixtures",)

RESULT_IDS = r"kontext:details:(\d+)"
CHANNEL_POST = "POST /channels/{channel_id}/messages"
# Every route of an interaction's webhook (its followups, edits of `@original`...).
WEBHOOK = ("POST /webhooks/", "GET /webhooks/", "PATCH /webhooks/", "DELETE /webhooks/")


@pytest.mark.parametrize("bot_settings_overrides", [{"simulator": {"latency_s": 0.5}}])
async def test_a_result_waits_out_rate_limits_and_a_lost_permission_then_lands_once(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    general = local_discord.general
    # A moderator takes Send Messages away, and Discord is rate-limiting the channel too.
    local_discord.revoke_bot_permission(general, Perm.SEND_MESSAGES)
    local_discord.fail_message_posts(general, times=2, status=429, retry_after=0.2)
    ix = await alice.slash("edit", image=make_png(), prompt="make it blue")
    await ix.response(starts("📤"), timeout=10)  # made, now trying to post

    await local_discord.violations.wait_for(code=50013, timeout=10)
    assert results_in(alice, general) == []
    assert ix.original is not None and not ix.original.content.startswith("❌")
    local_discord.restore_bot_permissions(general)

    result = await alice.wait_for_message(is_step("Step 1", "make it blue"), timeout=15)
    await ix.response(starts("✅"), timeout=10)
    decoded(await alice.download(result.attachments[0]))
    await job_status(bot, job_id_of(result), JobStatus.DELIVERED)
    posted = count_custom_ids(local_discord.bot_messages(general), RESULT_IDS)
    assert posted == {str(job_id_of(result)): 1}
    while local_discord.violations.find(code=50013):
        local_discord.violations.expect(code=50013)


@pytest.mark.parametrize(
    "bot_settings_overrides",
    # Eight slots: every image is made at once, so the eight results are ready together.
    [{"simulator": {"latency_s": 0.2}, "jobs": {"max_concurrent": 8}}],
)
async def test_eight_edits_at_once_in_one_channel_are_posted_once_each_under_its_limit(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    members = [alice, *(alice.as_user(add_member(local_discord, f"m{n}")) for n in range(7))]
    commands = await asyncio.gather(
        *(
            member.slash("edit", image=make_png(), prompt=f"make it shade {number}")
            for number, member in enumerate(members)
        )
    )
    # Eight posts against Discord's 5 per 5 s in the channel: the last ones wait for the reset.
    await asyncio.gather(*(ix.response(starts("✅"), timeout=30) for ix in commands))

    general = local_discord.general
    results = results_in(alice, general)
    assert sorted(embed_of(r)["description"] for r in results) == sorted(
        f"make it shade {n}" for n in range(8)
    )
    for result in results:
        await job_status(bot, job_id_of(result), JobStatus.DELIVERED)
    posted = count_custom_ids(local_discord.bot_messages(general), RESULT_IDS)
    assert sorted(posted.values()) == [1] * 8, posted
    posts = local_discord.requests_to(CHANNEL_POST)
    assert [p.status for p in posts] == [200] * 8
    # The channel's bucket ran out on the way (the limit shaped the run), and the bot waited
    # for its reset instead of being told to: not one 429, on any route.
    assert 0 in [p.remaining for p in posts]
    assert local_discord.rate_limits.hits == []
    assert not local_discord.violations.find(kind="rate_limit")


@pytest.mark.parametrize(
    "bot_settings_overrides",
    [{"simulator": {"latency_s": 1.0}, "jobs": {"status_interval_s": 60.0}}],
)
async def test_a_failure_after_the_token_died_is_told_privately(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    ix = await alice.slash("edit", image=make_png(), prompt="[moderate] make it blue")
    await ix.response(starts("🎨"))
    local_discord.clock.advance(15 * 60)  # the member's token is dead when the failure comes

    dm = alice.dm()
    told = await dm.wait_for_message(starts("❌"), timeout=10)
    assert "content filter" in told.content
    # Nothing public: the channel has no word of it.
    public = local_discord.bot_messages(local_discord.general)
    assert public == [], public


@pytest.mark.parametrize(
    ("local_discord_config", "bot_settings_overrides"),
    [
        (
            # Discord ends the token 10 minutes in while the bot counts 15, as when the bot's
            # clock runs behind Discord's: the bot can only learn it from Discord's answer.
            LocalDiscordConfig(token_lifetime_s=10 * 60),
            {"simulator": {"latency_s": 2.0}, "jobs": {"status_edit_gap_s": 0.2}},
        )
    ],
)
@pytest.mark.parametrize("prompt", ["make it blue", "[moderate] make it blue"])
async def test_a_token_discord_ended_early_is_not_used_again_after_its_401(
    running_bot: RunningBot, local_discord: LocalDiscord, prompt: str
) -> None:
    alice, bot = running_bot
    ix = await alice.slash("edit", image=make_png(), prompt=prompt)
    await ix.response(starts("🎨"))
    local_discord.clock.advance(11 * 60)
    # The generating clock moves on, and its edit meets Discord's 401.
    refused = await local_discord.violations.wait_for(code=50027, timeout=10)
    assert refused.status == 401

    if prompt.startswith("[moderate]"):
        # The failure goes by DM at once, not through the token first.
        told = await alice.dm().wait_for_message(starts("❌"), timeout=10)
        assert "content filter" in told.content
        assert local_discord.bot_messages(local_discord.general) == []
    else:
        result = await alice.wait_for_message(is_step("Step 1", prompt), timeout=10)
        await job_status(bot, job_id_of(result), JobStatus.DELIVERED)
    through_token = [r for r in local_discord.rest.requests if r.route.startswith(WEBHOOK)]
    # Nothing more went through the token after Discord refused it: no later status, no
    # "Done", no failure report.
    assert through_token[-1].status == 401
    assert [r.status for r in through_token].count(401) == 1
    assert ix.original is not None and ix.original.content.startswith("🎨")


async def test_a_swallowed_submit_is_looked_up_then_retry_sends_it_again(
    local_discord: LocalDiscord,
) -> None:
    async with shared_simulator(latency_s=0.2) as sim:
        overrides = against(sim, jobs={"reconcile_window_s": 1.0, "reconcile_interval_s": 0.2})
        async with start_bot(local_discord, settings_overrides=overrides) as (alice, bot):
            # A proxy in front of WaveSpeed answers 502: nobody knows whether the job exists.
            sim.inject(Fault.BAD_GATEWAY)
            ix = await alice.slash("edit", image=make_png(), prompt="make it blue")
            failed = await ix.response(starts("❌"), timeout=10)
            assert failed.content == f"❌ {NOTHING_MADE_MESSAGE}"
            assert failed.button_labels == ["Retry"]
            assert sim.predictions == {} and sim.request_counts["history"] >= 1

            retry = await alice.click(failed, "Retry")
            await retry.response(starts("✅"), timeout=10)
            (result,) = results_in(alice, local_discord.general)
            assert is_step("Step 1", "make it blue")(result)
            assert len(sim.predictions) == 1
            # Sent again as it was asked for: the same seed.
            (prediction,) = sim.predictions.values()
            first_job = await bot.repository.job(job_id_of(result) - 1)
            assert prediction.request["seed"] == first_job.params["seed"]


async def test_after_a_restart_a_post_that_landed_is_found_not_posted_again(
    local_discord: LocalDiscord, tmp_path: Path
) -> None:
    database = tmp_path / "jobs.sqlite3"
    async with shared_simulator(latency_s=0.2) as sim:
        overrides = against(sim, storage={"database": str(database)})
        async with start_bot(local_discord, settings_overrides=overrides) as (alice, bot):
            ix = await alice.slash("edit", image=make_png(), prompt="make it blue")
            result = await alice.wait_for_message(is_step("Step 1", "make it blue"), timeout=10)
            job_id = job_id_of(result)
            await job_status(bot, job_id, JobStatus.DELIVERED)
        # As a bot killed between the post and its record leaves the store.
        from services.storage import Repository

        repository = await Repository.open(database)
        try:
            async with repository._db.transaction() as db:
                await db.execute(
                    "UPDATE jobs SET status = 'delivering', result_message_id = NULL WHERE id = ?",
                    (job_id,),
                )
                await db.execute("DELETE FROM messages WHERE job_id = ?", (job_id,))
        finally:
            await repository.close()
        # More than Discord's nonce window later: only the channel's history can tell.
        local_discord.clock.advance(10 * 60)

        async with start_bot(local_discord, settings_overrides=overrides) as (alice, bot):
            await job_status(bot, job_id, JobStatus.DELIVERED)
            stored = await bot.repository.job(job_id)
            assert stored.result_message_id == result.id
            assert await bot.repository.job_for_message(result.id) == stored
        posted = count_custom_ids(local_discord.bot_messages(local_discord.general), RESULT_IDS)
        assert posted == {str(job_id): 1}
        assert ix.original is not None


# -- the limits of the place a result is posted in ----------------------------------------------

MiB = 1024 * 1024
# Per-pixel noise on a 2048 x 2048 PNG: an output over the server's 10 MiB (see the simulator).
BIG_EDIT = {"image": make_png((2048, 2048)), "prompt": "add heavy film grain"}
BIG_OPTIONS = {"model": "dev", "output_format": "png"}


async def test_a_nitro_members_big_result_is_fitted_to_the_servers_limit(
    local_discord: LocalDiscord,
) -> None:
    async with (
        shared_simulator(latency_s=0.0, max_output_side=2048) as sim,
        start_bot(local_discord, settings_overrides=against(sim)) as (alice, bot),
    ):
        nina = alice.as_user(add_member(local_discord, "nina", premium_type=PremiumType.NITRO))
        ix = await nina.slash("edit", **BIG_EDIT, **BIG_OPTIONS)
        # Her Nitro lets answers to her interaction carry 500 MiB; the bot's own channel
        # message is held to the server's 10 MiB all the same.
        assert ix.interaction.attachment_size_limit == 500 * MiB
        result = await nina.wait_for_message(is_step("Step 1"), timeout=20)
        await job_status(bot, job_id_of(result), JobStatus.DELIVERED)
        await ix.response(starts("✅"))

    (prediction,) = sim.predictions.values()
    assert len(prediction.output_files[0].data) > 10 * MiB, "the test needs an oversized output"
    assert result.channel_id == local_discord.general.id and result.mentions(nina.user)
    (attachment,) = result.attachments
    assert attachment.size <= 10 * MiB
    assert decoded(await nina.download(attachment)).size == (2048, 2048)
    assert field(embed_of(result), "Notes") == (
        "The image: Re-encoded as WebP to fit Discord's 10 MB upload limit."
    )


@pytest.mark.parametrize("local_discord_config", [LocalDiscordConfig(premium_tier=2)])
async def test_a_result_refused_as_too_large_is_re_encoded_and_posted(
    local_discord: LocalDiscord,
) -> None:
    async with (
        shared_simulator(latency_s=0.5, max_output_side=2048) as sim,
        start_bot(local_discord, settings_overrides=against(sim)) as (alice, bot),
    ):
        ix = await alice.slash("edit", **BIG_EDIT, **BIG_OPTIONS)
        assert ix.interaction.attachment_size_limit == 50 * MiB
        # The server loses its boosts while the bot's gateway is behind: it still believes
        # in 50 MiB, and only Discord's 413 can tell it otherwise.
        local_discord.state.set_premium_tier(local_discord.guild, 0, announce=False)
        result = await alice.wait_for_message(is_step("Step 1"), timeout=20)
        await job_status(bot, job_id_of(result), JobStatus.DELIVERED)

    refused = local_discord.violations.expect(code=40005)
    assert "boost tier 0" in refused.detail
    (prediction,) = sim.predictions.values()
    assert 10 * MiB < len(prediction.output_files[0].data) < 50 * MiB
    (attachment,) = result.attachments
    assert attachment.size <= 10 * MiB
    assert decoded(await alice.download(attachment)).size == (2048, 2048)
    assert "Re-encoded as WebP" in field(embed_of(result), "Notes")
    posted = count_custom_ids(local_discord.bot_messages(local_discord.general), RESULT_IDS)
    assert posted == {str(job_id_of(result)): 1}


# -- threads that are archived or locked --------------------------------------------------------

PATCH_CHANNEL = "PATCH /channels/{channel_id}"


async def test_the_next_step_reopens_an_archived_thread_by_posting_in_it(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    step1, thread = await first_step(alice, "make it blue")
    # A day without a word: the thread archives itself.
    local_discord.clock.advance(24 * 3600 + 60)
    assert thread.archived

    step2 = await reply_step(alice, step1, "add a red hat", thread=thread, step="Step 2")
    assert step2.channel_id == thread.id and step2.mentions(alice.user)
    assert not thread.archived
    # The post itself reopened it, as on Discord: no request to unarchive it first.
    assert local_discord.requests_to(PATCH_CHANNEL) == []


async def test_steps_a_thread_will_not_take_go_to_its_channel_with_a_note(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    general = local_discord.general
    step1, thread = await first_step(alice, "make it blue")

    async def next_step(after: Message, instruction: str, step: str) -> Message:
        reply = await alice.reply(after, instruction)
        result = await alice.wait_for_message(is_step(step, instruction), after=reply)
        # In the channel, a reply to the step it continues, mentioning the member.
        assert result.channel_id == general.id and result.mentions(alice.user)
        assert result.reference is not None and result.reference["message_id"] == str(after.id)
        decoded(await alice.download(result.attachments[0]))
        return result

    # The bot may not post in threads there any more: the step comes to the channel at once.
    local_discord.revoke_bot_permission(general, Perm.SEND_MESSAGES_IN_THREADS)
    step2 = await next_step(step1, "add a red hat", "Step 2")
    assert field(embed_of(step2), "Notes") == (
        f"I may not post in this edit's thread {thread.mention}, so this step is posted here."
    )
    local_discord.restore_bot_permissions(general)

    # A moderator locks the thread: nobody but moderators may post there.
    await local_discord.moderator().edit_thread(thread, locked=True)
    locked = f"This edit's thread {thread.mention} is locked, so this step is posted here."
    step3 = await next_step(step2, "make it night", "Step 3")
    assert field(embed_of(step3), "Notes") == locked

    # Locked and archived: still not reopened (it cannot be), the chain goes on all the same.
    await local_discord.moderator().edit_thread(thread, archived=True)
    step4 = await next_step(step3, "add stars", "Step 4")
    assert field(embed_of(step4), "Notes") == locked
    await job_status(bot, job_id_of(step4), JobStatus.DELIVERED)
    assert history(await details(alice, step4)) == [
        "1. make it blue",
        "2. add a red hat",
        "3. make it night",
        "4. add stars",
    ]
    assert results_in(alice, thread) == []
    assert thread.locked and thread.archived
