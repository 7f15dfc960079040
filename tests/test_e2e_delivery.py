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
    embed_of,
    is_step,
    job_id_of,
    job_status,
    results_in,
    shared_simulator,
    starts,
)
from tests.images import decoded, make_png
from tests.local_discord import LocalDiscord, LocalDiscordConfig, RunningBot, start_bot
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
            async with repository._unit_of_work() as db:
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
