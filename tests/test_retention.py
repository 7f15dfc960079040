"""Retention: image bytes go after [storage] retention_days; jobs, chains and the ledger stay.

The clock is moved instead of waiting: a prune "31 days later" drops what no newer job uses,
keeps what a newer or unfinished job needs, and gives the pages back to the file system. A
member asking for more of a pruned step is told so, in one sentence.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import sqlite3
import time
from pathlib import Path

from PIL import Image

from services.retention import DAY_S, Retention
from services.storage import MIGRATIONS, JobStatus, NewImage, Repository
from tests.e2e import details, first_step, history, reply_step, starts
from tests.images import make_png
from tests.local_discord import RunningBot
from tests.test_storage import job_values

pytest_plugins = ("tests.local_discord.fixtures",)

EXPIRED = (
    "❌ That image is older than 30 days and no longer kept, so I can't work on it any more. "
    "Upload it again with /edit to carry on."
)


def noisy_png(seed: int, side: int = 256) -> bytes:
    """A PNG that does not compress (random pixels), so pruning it frees real pages."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def later(days: float) -> float:
    return time.time() + days * DAY_S


async def test_old_image_bytes_are_pruned_and_everything_else_is_kept(store_location: str) -> None:
    path = Path(store_location)
    repository = await Repository.open(store_location)
    sqlite = repository.dialect == "sqlite"
    try:
        old_input = NewImage(noisy_png(1), "image/png", 256, 256)
        old = await repository.create_job(inputs=[old_input], new_chain=True, **job_values())
        await repository.transition(old.id, JobStatus.QUEUED, JobStatus.FAILED, error="x")
        # Stored 31 days ago by the clock of the prune below; a newer job and an open one are not.
        recent_input = NewImage(noisy_png(2), "image/png", 256, 256)
        recent = await repository.create_job(
            inputs=[recent_input], created_at=later(10), **job_values(member=2)
        )
        await repository.transition(recent.id, JobStatus.QUEUED, JobStatus.FAILED, error="x")
        waiting_input = NewImage(noisy_png(3), "image/png", 256, 256)
        waiting = await repository.create_job(inputs=[waiting_input], **job_values(member=3))
        # An image shared by an old job and a newer one is kept for the newer one.
        shared = NewImage(noisy_png(4), "image/png", 256, 256)
        old_sharer = await repository.create_job(inputs=[shared], **job_values(member=4))
        await repository.transition(old_sharer.id, JobStatus.QUEUED, JobStatus.CANCELLED)
        new_sharer = await repository.create_job(
            inputs=[shared], created_at=later(5), **job_values(member=5)
        )
        await repository.transition(new_sharer.id, JobStatus.QUEUED, JobStatus.CANCELLED)
        await repository._db.reclaim_space()
        size_before = await asyncio.to_thread(os.path.getsize, path) if sqlite else 0

        retention = Retention(repository, 30, clock=lambda: later(31))
        assert await retention.prune_once() == 1
        assert await retention.prune_once() == 0  # nothing twice

        (gone,) = await repository.job_images(old.id, "input")
        assert gone.image.pruned_at is not None and gone.image.data == b""
        assert (gone.image.width, gone.image.height) == (256, 256)  # the row stays
        for job, image in ((recent, recent_input), (waiting, waiting_input)):
            (kept,) = await repository.job_images(job.id, "input")
            assert kept.image.pruned_at is None and kept.image.data == image.data
        (kept,) = await repository.job_images(old_sharer.id, "input")
        assert kept.image.data == shared.data
        # Jobs and chains are all still there.
        assert (await repository.job(old.id)).status == JobStatus.FAILED
        assert old.chain_id is not None and await repository.chain(old.chain_id)

        if sqlite:
            # The freed pages went back to the file system.
            row = await repository._db.fetchone("PRAGMA freelist_count")
            assert row is not None and row[0] == 0
            assert await asyncio.to_thread(os.path.getsize, path) < size_before - 100_000

        # The same bytes stored again (a member uploads the image anew) are whole again.
        again = await repository.create_job(inputs=[old_input], **job_values(member=6))
        (back,) = await repository.job_images(again.id, "input")
        assert back.image.pruned_at is None and back.image.data == old_input.data
        (old_view,) = await repository.job_images(old.id, "input")
        assert old_view.image.data == old_input.data
    finally:
        await repository.close()


async def test_zero_days_keeps_everything(tmp_path: Path) -> None:
    repository = await Repository.open(tmp_path / "jobs.sqlite3")
    try:
        job = await repository.create_job(
            inputs=[NewImage(make_png(), "image/png", 64, 48)], **job_values()
        )
        await repository.transition(job.id, JobStatus.QUEUED, JobStatus.CANCELLED)
        assert await Retention(repository, 0, clock=lambda: later(3650)).prune_once() == 0
        (kept,) = await repository.job_images(job.id, "input")
        assert kept.image.pruned_at is None
    finally:
        await repository.close()


async def test_a_store_from_before_retention_is_migrated_and_vacuumed_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    # A store as the previous version left it: schema 4, no auto-vacuum, one image.
    with sqlite3.connect(path) as db:
        for script in MIGRATIONS[:4]:
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
        db.execute("PRAGMA user_version = 4")
        db.execute(
            "INSERT INTO images (sha256, content_type, width, height, data, created_at)"
            " VALUES ('abc', 'image/png', 1, 1, x'00', 0)"
        )
    db.close()
    assert sqlite3.connect(path).execute("PRAGMA auto_vacuum").fetchone()[0] == 0

    repository = await Repository.open(path)
    try:
        assert (await repository._db.fetchone("PRAGMA auto_vacuum"))[0] == 2  # type: ignore[index]
        assert (await repository._db.fetchone("PRAGMA user_version"))[0] == len(MIGRATIONS)  # type: ignore[index]
        # The old image, never used by a job, is pruned like any other.
        assert await Retention(repository, 30).prune_once() == 1
    finally:
        await repository.close()
    fresh = await Repository.open(tmp_path / "new.sqlite3")
    try:
        assert (await fresh._db.fetchone("PRAGMA auto_vacuum"))[0] == 2  # type: ignore[index]
    finally:
        await fresh.close()


# -- a member meets a pruned step ----------------------------------------------------------------


async def test_reroll_undo_and_edit_of_a_pruned_step_say_it_is_no_longer_kept(
    running_bot: RunningBot,
) -> None:
    alice, bot = running_bot
    step1, thread = await first_step(alice, "make it blue")
    step2 = await reply_step(alice, step1, "add a red hat", thread=thread, step="Step 2")
    assert bot.repository is not None and bot.retention is not None
    assert bot.retention.days == 30

    pruned = await Retention(bot.repository, 30, clock=lambda: later(31)).prune_once()
    assert pruned >= 3  # step 1's input and output, step 2's output

    reroll = await alice.click(step1, "Reroll")
    answer = await reroll.response(starts("❌"))
    assert answer.content == EXPIRED and answer.ephemeral
    undo = await alice.click(step2, "Undo")
    assert (await undo.response(starts("❌"))).content == EXPIRED
    edit = await alice.click(step2, "Edit")
    submitted = await alice.submit_modal(edit, **{"What should change?": "make it night"})
    assert (await submitted.response(starts("❌"))).content == EXPIRED
    # What needs no image bytes still works: the chain's history.
    assert history(await details(alice, step2)) == ["1. make it blue", "2. add a red hat"]


async def test_relayed_webhook_deliveries_are_forgotten_after_a_day(store_location: str) -> None:
    repository = await Repository.open(store_location)
    try:
        await repository.relay_webhook("p-old", '{"id": "p-old"}', at=time.time())
        await repository.relay_webhook("p-new", '{"id": "p-new"}', at=later(1.5))
        # Even with images kept for good, a relayed delivery is only kept for a day.
        await Retention(repository, 0, clock=lambda: later(2)).prune_once()
        assert await repository.relayed_webhook("p-old") is None
        assert await repository.relayed_webhook("p-new") == '{"id": "p-new"}'
    finally:
        await repository.close()
