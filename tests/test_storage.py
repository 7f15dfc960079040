"""The job store: atomic writes, conditional transitions, and stores that cannot be used."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from services.storage import (
    MIGRATIONS,
    JobStatus,
    NewImage,
    PostedResult,
    Repository,
    StoreError,
    _explain,
)
from tests.images import make_png

ROOT = Path(__file__).resolve().parent.parent


def job_values(member: int = 1, prompt: str = "p") -> dict[str, object]:
    return {
        "action": "edit",
        "requester_id": member,
        "channel_id": 10,
        "model_path": "flux-kontext-pro",
        "params": {"prompt": prompt, "seed": 1},
        "prompt": prompt,
    }


async def test_a_job_is_stored_with_its_images_and_chain_or_not_at_all(store_location: str) -> None:
    repository = await Repository.open(store_location)
    try:
        job = await repository.create_job(
            inputs=[NewImage(make_png(), "image/png", 64, 48)], new_chain=True, **job_values()
        )
        assert job.chain_id is not None and job.status == JobStatus.QUEUED
        assert len(await repository.job_images(job.id, "input")) == 1

        # A failure half-way through the save: neither the job nor its chain remain.
        bad = NewImage("not bytes", "image/png", 1, 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await repository.create_job(inputs=[bad], new_chain=True, **job_values(prompt="x"))
        assert [j.id for j in await repository.jobs_with_status([JobStatus.QUEUED])] == [job.id]
        row = await repository._db.fetchone("SELECT COUNT(*) FROM chains")
        assert row is not None and row[0] == 1
    finally:
        await repository.close()


async def test_a_transition_happens_once_whoever_tries(store_location: str) -> None:
    repository = await Repository.open(store_location)
    try:
        job = await repository.create_job(**job_values())
        results = await asyncio.gather(
            *(
                repository.transition(job.id, JobStatus.QUEUED, JobStatus.STARTING)
                for _ in range(10)
            )
        )
        assert sum(result is not None for result in results) == 1
        assert await repository.transition(job.id, JobStatus.QUEUED, JobStatus.CANCELLED) is None
        assert (await repository.job(job.id)).status == JobStatus.STARTING
    finally:
        await repository.close()


async def test_many_concurrent_jobs_keep_their_own_images(store_location: str) -> None:
    repository = await Repository.open(store_location)
    try:
        jobs = await asyncio.gather(
            *(
                repository.create_job(
                    inputs=[NewImage(make_png(colour=(n, 0, 0)), "image/png", 64, 48)],
                    **job_values(member=n),
                )
                for n in range(100)
            )
        )
        for job in jobs:
            await repository.transition(job.id, JobStatus.QUEUED, JobStatus.RUNNING)

        async def finish(n: int) -> None:
            output = NewImage(make_png(colour=(0, n, 0)), "image/png", 64, 48)
            await repository.transition(
                jobs[n].id, JobStatus.RUNNING, JobStatus.SUCCEEDED, outputs=[output]
            )

        await asyncio.gather(*(finish(n) for n in range(100)))
        for n, job in enumerate(jobs):
            (output,) = await repository.job_images(job.id, "output")
            assert output.image.data == make_png(colour=(0, n, 0))
            assert (await repository.job(job.id)).status == JobStatus.SUCCEEDED
    finally:
        await repository.close()


async def test_delivered_with_its_message_thread_and_head_in_one_step(store_location: str) -> None:
    repository = await Repository.open(store_location)
    try:
        job = await repository.create_job(new_chain=True, **job_values())
        await repository.transition(job.id, JobStatus.QUEUED, JobStatus.DELIVERING)
        posted = PostedResult(777, 10, "https://discord/777", thread_id=777)
        delivered = await repository.mark_delivered(job, posted)
        assert delivered is not None and delivered.result_message_id == 777
        chain = await repository.chain(job.chain_id or 0)
        assert (chain.head_job_id, chain.thread_id) == (job.id, 777)
        assert (await repository.job_for_message(777)) == delivered
        # A second mark (another worker, a replayed step) changes nothing.
        assert await repository.mark_delivered(job, PostedResult(778, 10, "u")) is None
        assert await repository.job_for_message(778) is None
    finally:
        await repository.close()


async def test_fair_turns_survive_a_restart(store_location: str) -> None:
    path = store_location
    repository = await Repository.open(path)
    a1 = await repository.create_job(**job_values(member=1))
    a2 = await repository.create_job(**job_values(member=1))
    await repository.close()
    repository = await Repository.open(path)
    try:
        b1 = await repository.create_job(**job_values(member=2))
        order = [job.id for job in await repository.queued_in_order(limit=10)]
        assert order == [a1.id, b1.id, a2.id]
        assert await repository.queue_position(a2.id) == 3
    finally:
        await repository.close()


# --- Stores that cannot be used: one line, a non-zero exit, within seconds ----------------------


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer than this bot"):
        await Repository.open(path)


async def test_a_damaged_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    path.write_bytes(b"this is not a database, just some bytes" * 200)
    with pytest.raises(StoreError, match="damaged"):
        await Repository.open(path)


def test_a_read_only_store_is_explained_in_one_line() -> None:
    # Tests run as root here, which writes to read-only files: check the wording SQLite gives.
    error = sqlite3.OperationalError("attempt to write a readonly database")
    assert _explain("/data/kontext.sqlite3", error) == (
        "database error: /data/kontext.sqlite3 is read-only: make it writable for the bot's user"
    )


def run_bot(database: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "WAVESPEED_"))},
        "DISCORD_TOKEN": "unused",
        "STORAGE_DATABASE": database,
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "bot.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("damage", ["garbage", "newer", "folder"])
def test_the_bot_stops_in_one_line_on_a_store_it_cannot_use(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "kontext.sqlite3"
    if damage == "garbage":
        path.write_bytes(b"\x00garbage" * 1000)
    elif damage == "newer":
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA user_version = 999")
    else:
        path.mkdir()  # a folder where the file should be
    result = run_bot(str(path), tmp_path)

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("database error:") and "Traceback" not in result.stderr
