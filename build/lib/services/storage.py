"""The job store: jobs, edit chains, images and the messages that show them, in SQLite.

All SQL of the project lives here. Schema changes are numbered migrations, applied at start-up
in one transaction each; `PRAGMA user_version` records how far a database has come.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        content_type TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        data BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE chains (
        id INTEGER PRIMARY KEY,
        guild_id INTEGER,
        channel_id INTEGER NOT NULL,
        thread_id INTEGER,
        owner_id INTEGER NOT NULL,
        head_job_id INTEGER,
        created_at REAL NOT NULL
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        chain_id INTEGER REFERENCES chains(id),
        parent_id INTEGER REFERENCES jobs(id),
        step INTEGER NOT NULL DEFAULT 1,
        action TEXT NOT NULL,
        status TEXT NOT NULL,
        requester_id INTEGER NOT NULL,
        guild_id INTEGER,
        channel_id INTEGER NOT NULL,
        thread_id INTEGER,
        interaction_token TEXT,
        token_expires_at REAL,
        upload_limit INTEGER,
        nsfw_allowed INTEGER NOT NULL DEFAULT 0,
        model_path TEXT NOT NULL,
        params TEXT NOT NULL,
        prompt TEXT NOT NULL,
        prediction_id TEXT,
        cost TEXT,
        error TEXT,
        inference_ms INTEGER,
        status_message_id INTEGER,
        status_channel_id INTEGER,
        created_at REAL NOT NULL,
        submitted_at REAL,
        completed_at REAL,
        delivered_at REAL
    );
    CREATE INDEX jobs_by_status ON jobs(status);
    CREATE INDEX jobs_by_chain ON jobs(chain_id);
    CREATE TABLE job_images (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        role TEXT NOT NULL CHECK (role IN ('input', 'output')),
        position INTEGER NOT NULL,
        image_id INTEGER NOT NULL REFERENCES images(id),
        nsfw INTEGER NOT NULL DEFAULT 0,
        source_url TEXT,
        PRIMARY KEY (job_id, role, position)
    );
    CREATE TABLE messages (
        message_id INTEGER PRIMARY KEY,
        channel_id INTEGER NOT NULL,
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        kind TEXT NOT NULL
    );
    CREATE INDEX messages_by_job ON messages(job_id);
    """,
)


@dataclass(frozen=True, slots=True)
class StoredImage:
    id: int
    content_type: str
    width: int
    height: int
    data: bytes = field(repr=False)


class JobImage(NamedTuple):
    image: StoredImage
    nsfw: bool
    # Where WaveSpeed hosts an output (7 days), for results too large to upload to Discord.
    source_url: str | None = None


@dataclass(frozen=True, slots=True)
class Chain:
    id: int
    guild_id: int | None
    channel_id: int
    thread_id: int | None
    owner_id: int
    head_job_id: int | None
    created_at: float


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job: a generation asked for by a member, and everything needed to finish it."""

    id: int
    action: str
    status: str
    requester_id: int
    channel_id: int
    model_path: str
    params: dict[str, Any]
    prompt: str
    created_at: float
    chain_id: int | None = None
    parent_id: int | None = None
    step: int = 1
    guild_id: int | None = None
    thread_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    token_expires_at: float | None = None
    upload_limit: int | None = None
    nsfw_allowed: bool = False
    prediction_id: str | None = None
    cost: str | None = None
    error: str | None = None
    inference_ms: int | None = None
    # The message showing the job's progress: the interaction's (ephemeral) answer, or a
    # reply the bot posted in `status_channel_id`.
    status_message_id: int | None = None
    status_channel_id: int | None = None
    submitted_at: float | None = None
    completed_at: float | None = None
    delivered_at: float | None = None


_JOB_COLUMNS = tuple(f.name for f in dataclasses.fields(JobRecord))
_JOB_JSON = {"params"}
_JOB_BOOL = {"nsfw_allowed"}


def _job_from_row(row: aiosqlite.Row) -> JobRecord:
    values = dict(zip(row.keys(), row, strict=True))
    values["params"] = json.loads(values["params"])
    values["nsfw_allowed"] = bool(values["nsfw_allowed"])
    return JobRecord(**values)


def _to_column(name: str, value: Any) -> Any:
    if name in _JOB_JSON:
        return json.dumps(value, sort_keys=True)
    if name in _JOB_BOOL:
        return int(bool(value))
    return value


class Repository:
    """Async access to the job store. Use `await Repository.open(path)`; `close()` at the end."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    @classmethod
    async def open(cls, path: str | Path) -> Repository:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        connection.row_factory = aiosqlite.Row
        await connection.execute("PRAGMA foreign_keys = ON")
        await connection.execute("PRAGMA journal_mode = WAL")
        repository = cls(connection)
        await repository.migrate()
        return repository

    async def close(self) -> None:
        await self._db.close()

    async def migrate(self) -> int:
        """Apply the migrations this database lacks; return its version afterwards."""
        async with self._db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"the database is at schema version {version}, newer than this bot "
                f"({len(MIGRATIONS)}); upgrade the bot"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript would commit on its own; run the statements inside one transaction.
            await self._db.execute("BEGIN")
            try:
                for statement in filter(str.strip, script.split(";")):
                    await self._db.execute(statement)
                await self._db.execute(f"PRAGMA user_version = {number}")
                await self._db.commit()
            except BaseException:
                await self._db.rollback()
                raise
            log.info("database migrated to schema version %d", number)
        return len(MIGRATIONS)

    # --- Images ---------------------------------------------------------------------------------

    async def add_image(self, data: bytes, content_type: str, width: int, height: int) -> int:
        """Store image bytes once (by content hash) and return their id."""
        digest = hashlib.sha256(data).hexdigest()
        await self._db.execute(
            "INSERT OR IGNORE INTO images (sha256, content_type, width, height, data, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (digest, content_type, width, height, data, time.time()),
        )
        await self._db.commit()
        async with self._db.execute("SELECT id FROM images WHERE sha256 = ?", (digest,)) as cur:
            row = await cur.fetchone()
        assert row is not None
        return int(row["id"])

    async def image(self, image_id: int) -> StoredImage:
        async with self._db.execute(
            "SELECT id, content_type, width, height, data FROM images WHERE id = ?", (image_id,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise LookupError(f"image {image_id}")
        return StoredImage(
            row["id"], row["content_type"], row["width"], row["height"], bytes(row["data"])
        )

    async def set_job_images(
        self, job_id: int, role: str, images: Sequence[tuple[int, bool] | tuple[int, bool, str]]
    ) -> None:
        """The job's input or output images, in order: (image id, nsfw[, hosted URL])."""
        await self._db.execute(
            "DELETE FROM job_images WHERE job_id = ? AND role = ?", (job_id, role)
        )
        await self._db.executemany(
            "INSERT INTO job_images (job_id, role, position, image_id, nsfw, source_url)"
            " VALUES (?,?,?,?,?,?)",
            [
                (job_id, role, n, entry[0], int(entry[1]), entry[2] if len(entry) > 2 else None)
                for n, entry in enumerate(images)
            ],
        )
        await self._db.commit()

    async def job_images(self, job_id: int, role: str) -> list[JobImage]:
        async with self._db.execute(
            "SELECT i.id, i.content_type, i.width, i.height, i.data, j.nsfw, j.source_url"
            " FROM job_images j JOIN images i ON i.id = j.image_id"
            " WHERE j.job_id = ? AND j.role = ? ORDER BY j.position",
            (job_id, role),
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            JobImage(
                StoredImage(r["id"], r["content_type"], r["width"], r["height"], bytes(r["data"])),
                bool(r["nsfw"]),
                r["source_url"],
            )
            for r in rows
        ]

    # --- Chains ---------------------------------------------------------------------------------

    async def create_chain(self, *, guild_id: int | None, channel_id: int, owner_id: int) -> int:
        cursor = await self._db.execute(
            "INSERT INTO chains (guild_id, channel_id, owner_id, created_at) VALUES (?,?,?,?)",
            (guild_id, channel_id, owner_id, time.time()),
        )
        await self._db.commit()
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def chain(self, chain_id: int) -> Chain:
        async with self._db.execute("SELECT * FROM chains WHERE id = ?", (chain_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise LookupError(f"chain {chain_id}")
        return Chain(**dict(zip(row.keys(), row, strict=True)))

    async def chain_for_thread(self, thread_id: int) -> Chain | None:
        async with self._db.execute(
            "SELECT * FROM chains WHERE thread_id = ?", (thread_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return Chain(**dict(zip(row.keys(), row, strict=True))) if row else None

    async def update_chain(self, chain_id: int, **values: Any) -> None:
        allowed = {"thread_id", "head_job_id"}
        if not values or not set(values) <= allowed:
            raise ValueError(f"chains can only update {sorted(allowed)}")
        assignments = ", ".join(f"{name} = ?" for name in values)
        await self._db.execute(
            f"UPDATE chains SET {assignments} WHERE id = ?", (*values.values(), chain_id)
        )
        await self._db.commit()

    # --- Jobs -----------------------------------------------------------------------------------

    async def create_job(self, **values: Any) -> JobRecord:
        values.setdefault("created_at", time.time())
        unknown = set(values) - set(_JOB_COLUMNS)
        if unknown or "id" in values:
            raise ValueError(f"not job columns: {sorted(unknown | ({'id'} & set(values)))}")
        names = list(values)
        cursor = await self._db.execute(
            f"INSERT INTO jobs ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
            [_to_column(name, values[name]) for name in names],
        )
        await self._db.commit()
        assert cursor.lastrowid is not None
        return await self.job(cursor.lastrowid)

    async def update_job(self, job_id: int, **values: Any) -> JobRecord:
        unknown = set(values) - set(_JOB_COLUMNS) | ({"id"} & set(values))
        if unknown or not values:
            raise ValueError(f"not updatable job columns: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in values)
        await self._db.execute(
            f"UPDATE jobs SET {assignments} WHERE id = ?",
            [*(_to_column(name, value) for name, value in values.items()), job_id],
        )
        await self._db.commit()
        return await self.job(job_id)

    async def job(self, job_id: int) -> JobRecord:
        async with self._db.execute(
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise LookupError(f"job {job_id}")
        return _job_from_row(row)

    async def jobs_with_status(self, statuses: Iterable[str]) -> list[JobRecord]:
        wanted = list(statuses)
        async with self._db.execute(
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"
            f" WHERE status IN ({', '.join('?' for _ in wanted)}) ORDER BY id",
            wanted,
        ) as cursor:
            rows = await cursor.fetchall()
        return [_job_from_row(row) for row in rows]

    async def lineage(self, job_id: int) -> list[JobRecord]:
        """The job and its ancestors, oldest first: a chain's history up to this step."""
        async with self._db.execute(
            f"""
            WITH RECURSIVE lineage(id, depth) AS (
                SELECT ?, 0
                UNION ALL
                SELECT jobs.parent_id, lineage.depth + 1 FROM jobs
                JOIN lineage ON jobs.id = lineage.id WHERE jobs.parent_id IS NOT NULL
            )
            SELECT {", ".join("jobs." + c for c in _JOB_COLUMNS)} FROM lineage
            JOIN jobs ON jobs.id = lineage.id ORDER BY lineage.depth DESC
            """,
            (job_id,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [_job_from_row(row) for row in rows]

    # --- Messages -------------------------------------------------------------------------------

    async def record_message(
        self, message_id: int, *, channel_id: int, job_id: int, kind: str
    ) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO messages (message_id, channel_id, job_id, kind)"
            " VALUES (?,?,?,?)",
            (message_id, channel_id, job_id, kind),
        )
        await self._db.commit()

    async def job_for_message(self, message_id: int) -> JobRecord | None:
        async with self._db.execute(
            "SELECT job_id FROM messages WHERE message_id = ?", (message_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return await self.job(int(row["job_id"])) if row else None

    async def messages_of(self, job_id: int, kind: str | None = None) -> list[tuple[int, int]]:
        """(channel id, message id) of what was posted for the job, oldest first."""
        query = "SELECT channel_id, message_id FROM messages WHERE job_id = ?"
        params: list[Any] = [job_id]
        if kind is not None:
            query += " AND kind = ?"
            params.append(kind)
        async with self._db.execute(query + " ORDER BY message_id", params) as cursor:
            rows = await cursor.fetchall()
        return [(int(r["channel_id"]), int(r["message_id"])) for r in rows]

    async def forget_message(self, message_id: int) -> None:
        await self._db.execute("DELETE FROM messages WHERE message_id = ?", (message_id,))
        await self._db.commit()
