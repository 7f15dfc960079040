"""Backups: a consistent, openable copy of the store, taken while the bot is writing to it."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from services.backup import BackupError, backup, main
from services.storage import MIGRATIONS, JobStatus, NewImage, Repository
from tests.images import make_png
from tests.test_storage import job_values

ROOT = Path(__file__).resolve().parent.parent


def jobs_in(path: Path) -> int:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        count = int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    db.close()
    return count


async def test_a_backup_while_jobs_are_being_written_is_consistent(tmp_path: Path) -> None:
    database = tmp_path / "live.sqlite3"
    repository = await Repository.open(database)
    stop, warmed_up = asyncio.Event(), asyncio.Event()
    written = 0

    async def writer() -> None:
        nonlocal written
        while not stop.is_set():
            job = await repository.create_job(
                inputs=[
                    NewImage(
                        make_png(colour=(written % 256, written // 256 % 256, 0)),
                        "image/png",
                        64,
                        48,
                    )
                ],
                new_chain=True,
                **job_values(member=written % 7),
            )
            await repository.transition(job.id, JobStatus.QUEUED, JobStatus.STARTING)
            written += 1
            if written == 20:
                warmed_up.set()
            await asyncio.sleep(0)

    busy = asyncio.create_task(writer())
    try:
        await warmed_up.wait()
        counts = []
        for number in range(3):
            before = written
            target = tmp_path / "backups" / "kontext.sqlite3"
            await asyncio.to_thread(backup, database, target)
            counts.append(jobs_in(target))
            assert counts[-1] >= before, f"backup {number} lost committed jobs"
        assert written > counts[0], "the writer was not busy during the backups"
    finally:
        stop.set()
        await busy
    # Every job of the copy is whole: its chain and its input image came with it.
    with sqlite3.connect(tmp_path / "backups" / "kontext.sqlite3") as db:
        orphans = db.execute(
            "SELECT COUNT(*) FROM jobs j LEFT JOIN job_images i ON i.job_id = j.id"
            " LEFT JOIN chains c ON c.id = j.chain_id WHERE i.image_id IS NULL OR c.id IS NULL"
        ).fetchone()[0]
    db.close()
    assert orphans == 0
    await repository.close()
    # No temporary file is left beside the backup, and the bot can open it as its store.
    assert [p.name for p in (tmp_path / "backups").iterdir()] == ["kontext.sqlite3"]
    restored = await Repository.open(tmp_path / "backups" / "kontext.sqlite3")
    try:
        # The newest job may be in the copy still queued: it was stored, not yet started.
        copied = await restored.jobs_with_status([JobStatus.QUEUED, JobStatus.STARTING])
        assert len(copied) == counts[-1]
    finally:
        await restored.close()


async def test_a_write_in_progress_neither_blocks_the_backup_nor_gets_into_it(
    tmp_path: Path,
) -> None:
    database = tmp_path / "live.sqlite3"
    repository = await Repository.open(database)
    try:
        await repository.create_job(**job_values())
    finally:
        await repository.close()
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(
            "INSERT INTO jobs (action, status, requester_id, channel_id, model_path, params,"
            " prompt, created_at) VALUES ('edit', 'queued', 2, 10, 'm', '{}', 'half', 0)"
        )
        target = await asyncio.wait_for(
            asyncio.to_thread(backup, database, tmp_path / "copy.sqlite3"), timeout=10
        )
        assert jobs_in(target) == 1
        writer.execute("COMMIT")
    finally:
        writer.close()


def test_a_failed_backup_leaves_the_last_good_one_alone(tmp_path: Path) -> None:
    target = tmp_path / "kontext.sqlite3"
    target.write_bytes(b"the last good backup")
    with pytest.raises(BackupError, match="no database at"):
        backup(tmp_path / "missing.sqlite3", target)
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(b"not a database at all" * 100)
    with pytest.raises(BackupError, match="cannot copy"):
        backup(damaged, target)
    assert target.read_bytes() == b"the last good backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "damaged.sqlite3",
        "kontext.sqlite3",
    ]


def test_the_command_backs_up_the_configured_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "kontext.sqlite3"
    asyncio.run(_one_job(database))
    assert main([str(tmp_path / "out.sqlite3"), "--database", str(database)]) == 0
    assert jobs_in(tmp_path / "out.sqlite3") == 1
    assert main([str(tmp_path / "x.sqlite3"), "--database", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"backup error: there is no database at {tmp_path / 'nope'}"
    )

    # As an operator runs it: the database named by the config (the environment here).
    config = tmp_path / "config.toml"
    config.write_text(f'[discord]\ntoken = "t"\n[storage]\ndatabase = "{database}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "services.backup", str(tmp_path / "cli.sqlite3")],
        cwd=ROOT,
        env={"KONTEXT_CONFIG": str(config), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"backed up {database} to {tmp_path / 'cli.sqlite3'}"
    assert jobs_in(tmp_path / "cli.sqlite3") == 1


async def _one_job(database: Path) -> None:
    repository = await Repository.open(database)
    try:
        await repository.create_job(**job_values())
    finally:
        await repository.close()
