"""End-to-end: edit chains as members see them, through the real bot and the local Discord.

/edit to a result in a new thread, the next steps by reply, by a plain thread message and by
the buttons (Edit, Reroll, Undo, Details, Delete), branching from an older step, the shared
queue (positions, fairness, Cancel), a restart between submit and result, and a result that
outlives its interaction token. Every test ends with the `local_discord` fixture failing it if
the bot did anything real Discord refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.jobs import JobStatus
from services.storage import OPEN_STATUSES, Repository
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
    prompts_in_submit_order,
    reply_step,
    results_in,
    says,
    shared_simulator,
    starts,
    title,
)
from tests.images import decoded, make_png
from tests.local_discord import (
    CallbackType,
    LocalDiscord,
    RunningBot,
    start_bot,
)

pytest_plugins = ("tests.local_discord.fixtures",)

MESSAGE_CONTENT = {"discord": {"message_content": True}}
WEBHOOK_EDIT = "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"
ORIGINAL_EDIT = "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original"
REFUSAL = "❌ Only the person who asked for this image (or a moderator) can do that."
CANCELLED = "🚫 Cancelled. Nothing was charged."
RESULT_BUTTONS = ["Edit", "Reroll", "Undo", "Details", "Delete"]


# -- 1. /edit to a result in a new thread --------------------------------------------------------


async def test_edit_posts_the_result_and_starts_a_thread_named_from_the_prompt(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    prompt = "make the   background a starry night"
    ix = await alice.slash("edit", image=make_png((64, 48)), prompt=prompt)
    assert await ix.acknowledged() is CallbackType.DEFERRED_CHANNEL_MESSAGE
    status = await ix.response(starts("✅"))
    assert status.ephemeral and status not in alice.stranger.messages()

    result = await alice.wait_for_message(is_step("Step 1"))
    assert status.content == (
        f"✅ Done: https://discord.com/channels/{local_discord.guild.id}/"
        f"{local_discord.general.id}/{result.id}"
    )
    # An ordinary channel message for everyone, pinging the member who asked.
    assert result.channel_id == local_discord.general.id and not result.ephemeral
    assert result.webhook_id is None
    assert result.content == alice.user.mention and result.mentions(alice.user)
    assert result in alice.stranger.messages()
    embed = embed_of(result)
    assert embed["description"] == prompt
    assert [f["name"] for f in embed["fields"]] == ["Model", "Seed", "Guidance", "Time", "Cost"]
    assert field(embed, "Model") == "Kontext Pro" and field(embed, "Seed").isdigit()
    assert "Dry run" in embed["footer"]["text"]
    assert result.button_labels == RESULT_BUTTONS

    thread = await alice.wait_for_thread(result)
    assert thread.name == "make the background a starry night"
    assert thread.parent_id == local_discord.general.id
    (attachment,) = result.attachments
    image = decoded(await alice.download(attachment))
    assert image.size == (64, 48)


# -- 2. the next steps: a reply, then a plain message in the thread ------------------------------


@pytest.mark.parametrize(
    "bot_settings_overrides",
    [
        {**MESSAGE_CONTENT, "simulator": {"latency_s": 0.3}},
    ],
)
async def test_reply_and_plain_thread_message_continue_the_chain(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    step1, thread = await first_step(alice, "make it blue")

    reply = await alice.reply(step1, "add a red hat")
    # A public "working on it" reply while the job runs...
    status = await alice.wait_for_message(starts("⏳", "🧰", "🎨"), after=reply)
    assert status.reference is not None and status.reference["message_id"] == str(reply.id)
    step2 = await alice.wait_for_message(is_step("Step 2", "add a red hat"), where=thread)
    assert step2.mentions(alice.user) and step2.button_labels == RESULT_BUTTONS
    # ...that goes away once the result is there.
    await local_discord.state.wait_until(
        lambda: status.deleted, timeout=5, what="the status reply deleted"
    )

    in_thread = alice.in_channel(thread)
    plain = await in_thread.say("now make it night")
    step3 = await alice.wait_for_message(
        is_step("Step 3", "now make it night"), where=thread, after=plain
    )
    assert [title(m) for m in results_in(alice, thread)] == ["Step 2", "Step 3"]
    assert history(await details(alice, step3)) == [
        "1. make it blue",
        "2. add a red hat",
        "3. now make it night",
    ]
    for result in (step2, step3):
        (attachment,) = result.attachments
        decoded(await alice.download(attachment))


# -- 3. branching from an older step --------------------------------------------------------------


async def test_reply_to_an_older_step_branches_from_it(running_bot: RunningBot) -> None:
    alice, _ = running_bot
    step1, thread = await first_step(alice, "make it blue")
    step2 = await reply_step(alice, step1, "add a red hat", thread=thread, step="Step 2")

    # Back to step 1 (it is in the channel, the thread hangs off it): a sibling of step 2.
    branch = await reply_step(alice, step1, "make it night", thread=thread, step="Step 2")
    assert branch.id != step2.id
    assert history(await details(alice, branch)) == ["1. make it blue", "2. make it night"]
    assert history(await details(alice, step2)) == ["1. make it blue", "2. add a red hat"]
    assert [embed_of(m)["description"] for m in results_in(alice, thread)] == [
        "add a red hat",
        "make it night",
    ]


# -- 4. the result's buttons --------------------------------------------------------------------


@pytest.mark.parametrize("bot_settings_overrides", [MESSAGE_CONTENT])
async def test_result_buttons_reroll_edit_undo_details_delete(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    bob = alice.stranger
    step1, thread = await first_step(alice, "make it blue")
    seed1 = field(embed_of(step1), "Seed")

    # Reroll: the same instruction with a new seed, posted in the thread.
    reroll = await alice.click(step1, "Reroll")
    await reroll.response(starts("✅"))
    rerolled = await alice.wait_for_message(
        is_step("Step 1 · reroll", "make it blue"), where=thread
    )
    assert field(embed_of(rerolled), "Seed") != seed1

    # Edit asks what should change; the answer becomes step 2, in the thread.
    edit = await alice.click(step1, "Edit")
    assert await edit.acknowledged() is CallbackType.MODAL
    modal = await edit.modal()
    assert modal["title"] == "Edit this image"
    assert "What should change?" in str(modal["components"])
    submitted = await alice.submit_modal(edit, **{"What should change?": "add a red hat"})
    await submitted.response(starts("✅"))
    step2 = await alice.wait_for_message(is_step("Step 2", "add a red hat"), where=thread)

    # Undo: step 1's image again, as the thread's newest message.
    undo = await alice.click(step2, "Undo")
    back = await undo.response(starts("↩️"))
    undone = await alice.wait_for_message(
        is_step("Step 1 · back from step 2", "make it blue"), where=thread, after=step2
    )
    assert back.ephemeral and back.content.endswith(f"/{thread.id}/{undone.id}")
    assert alice.messages(thread)[-1] is undone
    assert undone.mentions(alice.user) and undone.button_labels == RESULT_BUTTONS
    (original,), (again,) = step1.attachments, undone.attachments
    assert await alice.download(again) == await alice.download(original)

    # The next plain message in the thread edits what Undo brought back, not step 2.
    plain = await alice.in_channel(thread).say("make it night")
    night = await alice.wait_for_message(
        is_step("Step 2", "make it night"), where=thread, after=plain
    )

    # Details: private, every parameter, the prediction id and the history.
    shown = await details(alice, night)
    assert bot.repository is not None
    job = await bot.repository.job(job_id_of(night))
    assert job.prediction_id
    assert field(shown, "Prediction") == f"`{job.prediction_id}`"
    assert field(shown, "Seed") == field(embed_of(night), "Seed")
    assert history(shown) == ["1. make it blue", "2. make it night"]

    # Delete: refused to someone else, done for the requester.
    refused = await bob.click(night, "Delete")
    answer = await refused.response()
    assert answer.content == REFUSAL and answer.ephemeral
    assert answer not in alice.messages(thread)
    assert not night.deleted and night in bob.messages(thread)
    deleted = await alice.click(night, "Delete")
    assert (await deleted.response()).content == "🗑️ Deleted."
    assert night.deleted and night not in alice.messages(thread)
    assert not local_discord.violations


# -- 5. the queue: positions, fairness, everyone served ----------------------------------------


async def test_queue_positions_are_fair_between_members(local_discord: LocalDiscord) -> None:
    async with (
        shared_simulator(latency_s=1.5) as sim,
        start_bot(
            local_discord,
            settings_overrides=against(sim, jobs={"max_concurrent": 2, "per_member": 1}),
        ) as (alice, _),
    ):
        bob = alice.stranger
        carol = alice.as_user(add_member(local_discord, "carol"))
        started = starts("🧰", "🎨")

        a1 = await alice.slash("edit", image=make_png(), prompt="alice one")
        await a1.response(started)
        a2 = await alice.slash("edit", image=make_png(), prompt="alice two")
        await a2.response(says("⏳ Queued: you're next."))
        a3 = await alice.slash("edit", image=make_png(), prompt="alice three")
        await a3.response(says("⏳ Queued: position 2."))
        b1 = await bob.slash("edit", image=make_png(), prompt="bob one")
        await b1.response(started)
        # Carol comes last, but alice already has a job running: carol goes first.
        c1 = await carol.slash("edit", image=make_png(), prompt="carol one")
        queued = await c1.response(says("⏳ Queued: you're next."))
        assert queued.button_labels == ["Cancel"]
        await a2.response(says("⏳ Queued: position 2."))
        await a3.response(says("⏳ Queued: position 3."))

        for ix in (a1, b1, c1, a2, a3):
            await ix.response(starts("✅"), timeout=10)
        assert prompts_in_submit_order(sim)[2:] == ["carol one", "alice two", "alice three"]
        assert sorted(embed_of(m)["description"] for m in results_in(alice, alice.channel)) == [
            "alice one",
            "alice three",
            "alice two",
            "bob one",
            "carol one",
        ]
        assert sim.request_counts["submit"] == 5 and len(sim.billed) == 5


# -- 6. Cancel ----------------------------------------------------------------------------------


async def test_cancel_while_queued_spends_nothing_and_only_the_requester_may(
    local_discord: LocalDiscord,
) -> None:
    async with (
        shared_simulator(latency_s=1.5) as sim,
        start_bot(
            local_discord,
            settings_overrides=against(sim),
        ) as (alice, bot),
    ):
        bob = alice.stranger
        carol = alice.as_user(add_member(local_discord, "carol"))
        started = starts("🧰", "🎨")
        a1 = await alice.slash("edit", image=make_png(), prompt="alice one")
        await a1.response(started)
        b1 = await bob.slash("edit", image=make_png(), prompt="bob one")
        await b1.response(started)

        # Alice's second job waits (her first is running): her private status has Cancel.
        a2 = await alice.slash("edit", image=make_png(), prompt="alice two")
        waiting = await a2.response(says("⏳ Queued: you're next."))
        click = await alice.click(waiting, "Cancel")
        assert await click.acknowledged() is CallbackType.UPDATE_MESSAGE
        cancelled = await a2.response(says(CANCELLED))
        assert cancelled.buttons == []

        # Carol asks by mentioning the bot on her image: a public status with Cancel.
        asked = await carol.say("make it green", files=[make_png()], mention_bot=True)
        status = await alice.wait_for_message(says("⏳ Queued: you're next."), after=asked)
        assert status.reference is not None and status.reference["message_id"] == str(asked.id)
        assert status.button_labels == ["Cancel"]
        refused = await bob.click(status, "Cancel")
        refusal = await refused.response()
        assert refusal.ephemeral
        assert refusal.content == "Only the person who asked for this image can cancel it."
        assert status.content == "⏳ Queued: you're next." and status.button_labels == ["Cancel"]
        await carol.click(status, "Cancel")
        await local_discord.state.wait_until(
            lambda: status.content == CANCELLED, timeout=5, what="carol's status cancelled"
        )
        assert status.buttons == []
        assert bot.repository is not None
        assert await bot.repository.jobs_with_status([JobStatus.QUEUED]) == []

        await a1.response(starts("✅"), timeout=10)
        await b1.response(starts("✅"), timeout=10)
        assert sorted(embed_of(m)["description"] for m in results_in(alice, alice.channel)) == [
            "alice one",
            "bob one",
        ]
        assert bot.repository is not None
        for job in await bot.repository.jobs_with_status([JobStatus.CANCELLED]):
            assert job.prediction_id is None
        assert len(await bot.repository.jobs_with_status([JobStatus.CANCELLED])) == 2
    assert prompts_in_submit_order(sim) == ["alice one", "bob one"]
    assert sim.request_counts["submit"] == 2 and len(sim.billed) == 2


# -- 7. a restart between submit and result ----------------------------------------------------


async def test_restart_after_submit_polls_the_same_prediction_and_delivers_once(
    local_discord: LocalDiscord, tmp_path: Path
) -> None:
    database = tmp_path / "jobs.sqlite3"
    async with shared_simulator(latency_s=1.5) as sim:
        overrides = against(sim, storage={"database": str(database)})
        async with start_bot(local_discord, settings_overrides=overrides) as (alice, bot):
            ix = await alice.slash("edit", image=make_png(), prompt="make it blue")
            await ix.response(starts("🎨"))
        # The bot is gone while WaveSpeed still works on the (paid) prediction: its submit
        # finished before the bot stopped, the wait for the result did not.
        repository = await Repository.open(database)
        try:
            (job,) = await repository.jobs_with_status([JobStatus.RUNNING])
        finally:
            await repository.close()
        assert job.prediction_id in sim.predictions
        assert results_in(alice, alice.channel) == []
        assert sim.request_counts["submit"] == 1

        async with start_bot(local_discord, settings_overrides=overrides) as (alice, bot):
            await ix.response(starts("✅"), timeout=10)
            (result,) = results_in(alice, alice.channel)
            assert is_step("Step 1", "make it blue")(result) and result.mentions(alice.user)
            assert job_id_of(result) == job.id
            decoded(await alice.download(result.attachments[0]))
            await alice.wait_for_thread(result)
            await job_status(bot, job.id, JobStatus.DELIVERED)
            assert bot.repository is not None
            assert (await bot.repository.job(job.id)).prediction_id == job.prediction_id
        assert len(results_in(alice, alice.channel)) == 1
        assert sim.request_counts["submit"] == 1 and len(sim.billed) == 1
    # Nothing was left for a third run.
    repository = await Repository.open(database)
    try:
        assert await repository.jobs_with_status(OPEN_STATUSES) == []
    finally:
        await repository.close()


async def test_replies_and_buttons_keep_working_after_a_restart(
    local_discord: LocalDiscord, tmp_path: Path
) -> None:
    overrides_db = {"storage": {"database": str(tmp_path / "jobs.sqlite3")}}
    async with shared_simulator(latency_s=0.0) as sim:
        overrides = against(sim, **overrides_db)
        async with start_bot(local_discord, settings_overrides=overrides) as (alice, _):
            step1, thread = await first_step(alice, "make it blue")
            step2 = await reply_step(alice, step1, "add a red hat", thread=thread, step="Step 2")

        # A new process: the buttons and the chain live on in the job store.
        async with start_bot(local_discord, settings_overrides=overrides) as (alice, _):
            assert history(await details(alice, step2)) == ["1. make it blue", "2. add a red hat"]
            step3 = await reply_step(alice, step2, "make it night", thread=thread, step="Step 3")
            undo = await alice.click(step3, "Undo")
            await undo.response(starts("↩️"))
            await alice.wait_for_message(
                is_step("Step 2 · back from step 3", "add a red hat"), where=thread, after=step3
            )


async def test_where_threads_are_impossible_the_chain_goes_on_as_replies(
    running_bot: RunningBot,
) -> None:
    alice, _ = running_bot
    dm = alice.dm()
    ix = await dm.slash("edit", image=make_png(), prompt="make it blue")
    await ix.response(starts("✅"))
    step1 = await dm.wait_for_message(is_step("Step 1", "make it blue"), where=dm.channel)
    assert dm.thread_of(step1) is None

    reply = await dm.reply(step1, "add a red hat")
    step2 = await dm.wait_for_message(
        is_step("Step 2", "add a red hat"), where=dm.channel, after=reply
    )
    # Posted in the DM as a reply to the step it continues.
    assert step2.reference is not None
    assert step2.reference["message_id"] == str(step1.id)


# -- 8. a result that outlives the interaction token ---------------------------------------------


@pytest.mark.parametrize(
    "bot_settings_overrides",
    [
        {
            "simulator": {"latency_s": 1.0},
            # One edit per stage (no generating clock): nothing is in flight when the clock jumps.
            "jobs": {"status_interval_s": 60.0},
        }
    ],
)
async def test_result_after_the_token_expired_is_a_channel_message(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    ix = await alice.slash("edit", image=make_png(), prompt="make it blue")
    await ix.response(starts("🎨"))

    def status_edits() -> list[Any]:
        return local_discord.requests_to(WEBHOOK_EDIT) + local_discord.requests_to(ORIGINAL_EDIT)

    # Every status edit so far answered ("Generating" is the last until the result).
    await local_discord.state.wait_until(
        lambda: all(r.status for r in status_edits()), timeout=5, what="the status edits answered"
    )
    edits_before = len(status_edits())
    local_discord.clock.advance(15 * 60)

    result = await alice.wait_for_message(is_step("Step 1", "make it blue"), timeout=10)
    assert result.channel_id == local_discord.general.id and result.webhook_id is None
    assert result.content == alice.user.mention and result.mentions(alice.user)
    decoded(await alice.download(result.attachments[0]))
    await alice.wait_for_thread(result)
    await job_status(bot, job_id_of(result), JobStatus.DELIVERED)
    # The dead token was left alone: the private status still says what it last could.
    assert len(status_edits()) == edits_before
    assert ix.original is not None and ix.original.content.startswith("🎨")
