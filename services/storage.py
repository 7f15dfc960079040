"""The job store: jobs, edit chains, images and the messages that show them, in SQLite.

All SQL of the project lives here. Schema changes are numbered migrations, applied at start-up
in one transaction each; `PRAGMA user_version` records how far a database has come.

One connection, one writer: every statement runs under one lock, and a change of several
statements is one unit of work (`BEGIN IMMEDIATE` ... `COMMIT`), so concurrent jobs can never
interleave half-done writes. A job moves between statuses only by a conditional update
(`... WHERE id = ? AND status IN (...)`): a step whose job has moved on meanwhile changes nothing
and says so, which is what lets several workers share one store later.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import json
import logging
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiosqlite

from .database import (
    Database,
    PostgresDatabase,
    Reader,
    Row,
    SqliteDatabase,
    Transaction,
    as_dict,
)
from .money import to_micros

log = logging.getLogger(__name__)


class JobStatus(enum.StrEnum):
    """Where a job stands. Every change is a conditional update from the statuses it leaves."""

    QUEUED = "queued"
    # Taken from the queue; its request is being prepared. Nothing has been sent.
    STARTING = "starting"
    # The submit POST may be in flight: the fingerprint is stored, the answer is not.
    SUBMITTING = "submitting"
    # The submit's outcome was lost: it is looked up at WaveSpeed, never sent again.
    UNKNOWN = "unknown"
    RUNNING = "running"
    # The images are verified and stored; nothing has been posted yet.
    SUCCEEDED = "succeeded"
    # A post of the result may have reached Discord: check before posting again.
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Made and stored, but Discord refused every post until the delivery deadline.
    UNDELIVERABLE = "undeliverable"
    # A row this version cannot read: kept for an operator, never worked on.
    SET_ASIDE = "set_aside"


# Jobs that still have work to do; a restart resumes each from its status.
OPEN_STATUSES = (
    JobStatus.QUEUED,
    JobStatus.STARTING,
    JobStatus.SUBMITTING,
    JobStatus.UNKNOWN,
    JobStatus.RUNNING,
    JobStatus.SUCCEEDED,
    JobStatus.DELIVERING,
)
# Jobs that hold one of WaveSpeed's concurrency slots (or may: an unknown one may be running).
SLOT_STATUSES = (JobStatus.STARTING, JobStatus.SUBMITTING, JobStatus.UNKNOWN, JobStatus.RUNNING)


class StoreError(Exception):
    """The database cannot be used. Its message is one line that says what to do."""


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
    # 2: the durable job engine. A job's fingerprint and the time its submit began (to find it
    # again at WaveSpeed when the answer was lost), the deadlines it waits and delivers by, its
    # fair-queue turn, and the result message that delivered it (stored with the DELIVERED mark).
    """
    ALTER TABLE jobs ADD COLUMN fingerprint TEXT;
    ALTER TABLE jobs ADD COLUMN submit_started_at REAL;
    ALTER TABLE jobs ADD COLUMN deadline_at REAL;
    ALTER TABLE jobs ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN turn INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN delivery_started_at REAL;
    ALTER TABLE jobs ADD COLUMN result_message_id INTEGER;
    ALTER TABLE jobs ADD COLUMN result_channel_id INTEGER;
    ALTER TABLE jobs ADD COLUMN updated_at REAL;
    CREATE INDEX jobs_by_member ON jobs(requester_id, turn);
    CREATE UNIQUE INDEX jobs_by_prediction ON jobs(prediction_id) WHERE prediction_id IS NOT NULL
    """,
    # 3: the budget ledger. One row per priced job: its price held when it was stored, settled
    # at its cost once made, released (counting nothing) when it failed or was cancelled.
    # Amounts are integer millionths of a dollar.
    """
    CREATE TABLE budget_holds (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id),
        guild_id INTEGER,
        member_id INTEGER NOT NULL,
        amount_micros INTEGER NOT NULL CHECK (amount_micros >= 0),
        images INTEGER NOT NULL CHECK (images >= 0),
        state TEXT NOT NULL CHECK (state IN ('held', 'settled', 'released')),
        created_at REAL NOT NULL,
        ended_at REAL
    );
    CREATE INDEX budget_by_guild ON budget_holds(guild_id, created_at);
    CREATE INDEX budget_by_member ON budget_holds(member_id, guild_id, created_at)
    """,
    # 4: community controls. A server's rules as its admins changed them (only the changed
    # fields, as JSON: the rest follow the config's defaults), its bans, and the notes sent to
    # its log channel (each once per period: a budget at 80 % today, a low WaveSpeed balance).
    """
    CREATE TABLE server_rules (
        guild_id INTEGER PRIMARY KEY,
        changes TEXT NOT NULL,
        changed_by INTEGER NOT NULL,
        changed_at REAL NOT NULL
    );
    CREATE TABLE server_bans (
        guild_id INTEGER NOT NULL,
        member_id INTEGER NOT NULL,
        banned_by INTEGER NOT NULL,
        banned_at REAL NOT NULL,
        PRIMARY KEY (guild_id, member_id)
    );
    CREATE TABLE server_notes (
        guild_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        period_start REAL NOT NULL,
        sent_at REAL NOT NULL,
        PRIMARY KEY (guild_id, kind, period_start)
    )
    """,
    # 5: a fleet of workers sharing one store. Each open job is leased to the worker driving
    # it until `lease_until`; a worker that dies stops renewing, and another takes the job on
    # from where it stood. A role only one worker may hold at a time (announcing queue places)
    # is leased the same way. A webhook delivery that reached a process other than the one
    # awaiting it is kept here for that one (any process may receive any delivery).
    """
    ALTER TABLE jobs ADD COLUMN worker TEXT;
    ALTER TABLE jobs ADD COLUMN lease_until REAL;
    CREATE INDEX jobs_by_worker ON jobs(worker);
    CREATE TABLE fleet_roles (
        name TEXT PRIMARY KEY,
        worker TEXT NOT NULL,
        lease_until REAL NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        prediction_id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        received_at REAL NOT NULL
    )
    """,
    # 6: retention. An image's bytes are dropped once no job newer than [storage]
    # retention_days uses it; its row (size, type, hash) stays for the jobs that name it, with
    # the time its bytes went (`data` is then empty).
    """
    ALTER TABLE images ADD COLUMN pruned_at REAL;
    CREATE INDEX images_by_created ON images(created_at)
    """,
)

# What a relayed webhook delivery's notification says, before the prediction id.
WEBHOOK_NEWS = "webhook:"

# A hold is released (it counts nothing) when its job ends in one of these.
_RELEASING = (JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class StoredImage:
    id: int
    content_type: str
    width: int
    height: int
    data: bytes = field(repr=False)
    # When its bytes were dropped ([storage] retention_days); `data` is empty from then on.
    pruned_at: float | None = None


class JobImage(NamedTuple):
    image: StoredImage
    nsfw: bool
    # Where WaveSpeed hosts an output (7 days), for results too large to upload to Discord.
    source_url: str | None = None


class NewImage(NamedTuple):
    """Image bytes to store with a job: an input as checked, or an output as verified."""

    data: bytes
    content_type: str
    width: int
    height: int
    nsfw: bool = False
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
    # What was sent (model, prompt, seed, input hashes): how a lost submit is found again.
    fingerprint: dict[str, Any] | None = None
    submit_started_at: float | None = None
    # Past this (wall clock), waiting for the prediction ends.
    deadline_at: float | None = None
    # Submits the image service refused outright (nothing made); a few are retried.
    refusals: int = 0
    # Fair-queue turn: jobs start by (turn, id), so members take turns.
    turn: int = 0
    delivery_started_at: float | None = None
    result_message_id: int | None = None
    result_channel_id: int | None = None
    updated_at: float | None = None


@dataclass(frozen=True, slots=True)
class Spending:
    """What the ledger counts (held and settled, not released), in micro-dollars."""

    server_day: int = 0
    server_month: int = 0
    member_day: int = 0
    member_month: int = 0
    member_day_images: int = 0
    # When the member's newest job here that was not given back was stored (for cooldowns).
    member_last_at: float | None = None


class SpendingRow(NamedTuple):
    """One member's spending on one model in a server (`Repository.server_spending`)."""

    member_id: int
    model_path: str
    amount_micros: int
    images: int
    jobs: int


class LedgerEntry(NamedTuple):
    """A job's row in the ledger: its amount and whether it is held, settled or released."""

    amount_micros: int
    state: str

    @property
    def billed(self) -> bool:
        return self.state != "released" and self.amount_micros > 0


@dataclass(frozen=True, slots=True)
class BudgetHold:
    """A new job's hold: taken in `create_job` if `check` (given what is spent) does not raise."""

    guild_id: int | None
    member_id: int
    amount_micros: int
    images: int
    # Where the current day and month began (UTC), and when the hold is taken.
    day_start: float
    month_start: float
    at: float
    check: Callable[[Spending], None] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class PostedResult:
    """A result message as Discord has it: where it is, and the thread started on it."""

    message_id: int
    channel_id: int
    url: str
    thread_id: int | None = None


_JOB_COLUMNS = tuple(f.name for f in dataclasses.fields(JobRecord))
_JOB_JSON = {"params", "fingerprint"}
_JOB_BOOL = {"nsfw_allowed"}
_SELECT_JOB = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"


def _job_from_row(row: Row) -> JobRecord:
    values = as_dict(row)
    for name in _JOB_JSON:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    values["nsfw_allowed"] = bool(values["nsfw_allowed"])
    return JobRecord(**values)


def _to_column(name: str, value: Any) -> Any:
    if name in _JOB_JSON:
        return None if value is None else json.dumps(value, sort_keys=True)
    if name in _JOB_BOOL:
        return int(bool(value))
    return value


def _placeholders(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


class Repository:
    """Async access to the job store. Use `await Repository.open(where)`; `close()` at the end.

    `where` is a SQLite file (the default, embedded), or a `postgresql://` URL for a fleet of
    processes sharing one store; the SQL is the same (services/database.py runs it on either).
    """

    def __init__(self, database: Database) -> None:
        self._db = database

    @property
    def dialect(self) -> str:
        return self._db.dialect

    @classmethod
    async def open(cls, where: str | Path) -> Repository:
        """Open (creating and migrating) the store; StoreError says in one line what is wrong."""
        if is_postgres_url(str(where)):
            database: Database = await _open_postgres(str(where))
        else:
            database = await _open_sqlite(where)
        repository = cls(database)
        try:
            await repository.migrate()
            # A write now, not at the first job: a read-only file fails at start-up.
            await repository._probe_write()
            # Space freed since the last run goes back (the first start of a store made before
            # retention turns SQLite's incremental vacuum on, with one VACUUM).
            await database.reclaim_space()
        except BaseException as exc:
            # The connection's thread would keep the process alive (a hang at exit): close it.
            await database.close()
            if isinstance(exc, StoreError):
                raise
            if isinstance(exc, sqlite3.Error):
                raise StoreError(_explain(str(where), exc)) from None
            raise
        return repository

    async def close(self) -> None:
        await self._db.close()

    @property
    def shared(self) -> bool:
        """Whether other processes may use this store at once (a PostgreSQL fleet)."""
        return self._db.dialect == "postgres"

    async def listen(self, hear: Callable[[str], None]) -> None:
        """Call `hear` when another process changes the queue ("") or relays a webhook
        delivery ("webhook:<prediction id>"): PostgreSQL's LISTEN."""
        await self._db.listen(hear)

    async def relay_webhook(self, prediction_id: str, body: str, *, at: float) -> None:
        """Keep a verified webhook delivery for the process whose job awaits it, and tell it."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO webhook_deliveries (prediction_id, body, received_at)"
                " VALUES (?,?,?) ON CONFLICT DO NOTHING",
                (prediction_id, body, at),
            )
            await self._db.notify(tx, f"{WEBHOOK_NEWS}{prediction_id}")

    async def relayed_webhook(self, prediction_id: str) -> str | None:
        """A delivery another process kept for this prediction (its verified body), if any."""
        row = await self._db.fetchone(
            "SELECT body FROM webhook_deliveries WHERE prediction_id = ?", (prediction_id,)
        )
        return None if row is None else str(row["body"])

    async def migrate(self) -> int:
        """Apply the migrations this database lacks; return its version afterwards."""
        version = await self._db.schema_version()
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database error: the database is at schema version {version}, newer than this "
                f"bot understands ({len(MIGRATIONS)}): upgrade the bot, or restore a backup"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            async with self._db.transaction() as tx:
                # Two processes starting together: the second waits, then finds it done.
                await tx.lock("migrations")
                if await self._db.schema_version_in(tx) >= number:
                    continue
                for statement in self._db.schema(script):
                    await tx.execute(statement)
                await self._db.set_schema_version(tx, number)
            log.info("database migrated to schema version %d", number)
        return len(MIGRATIONS)

    async def _probe_write(self) -> None:
        async with self._db.transaction() as tx:
            await self._db.set_schema_version(tx, len(MIGRATIONS))

    # --- Images ---------------------------------------------------------------------------------

    @staticmethod
    async def _add_image(tx: Transaction, image: NewImage) -> int:
        """Store image bytes once (by content hash) and return their id, inside a unit of work."""
        digest = hashlib.sha256(image.data).hexdigest()
        # The same bytes again bring back an image whose bytes were pruned.
        await tx.execute(
            "INSERT INTO images (sha256, content_type, width, height, data, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO UPDATE SET"
            " data = excluded.data, created_at = excluded.created_at, pruned_at = NULL"
            " WHERE images.pruned_at IS NOT NULL",
            (digest, image.content_type, image.width, image.height, image.data, time.time()),
        )
        row = await tx.fetchone("SELECT id FROM images WHERE sha256 = ?", (digest,))
        assert row is not None
        return int(row["id"])

    @classmethod
    async def _set_job_images(
        cls, tx: Transaction, job_id: int, role: str, images: Sequence[NewImage]
    ) -> None:
        await tx.execute("DELETE FROM job_images WHERE job_id = ? AND role = ?", (job_id, role))
        for position, image in enumerate(images):
            image_id = await cls._add_image(tx, image)
            await tx.execute(
                "INSERT INTO job_images (job_id, role, position, image_id, nsfw, source_url)"
                " VALUES (?,?,?,?,?,?)",
                (job_id, role, position, image_id, int(image.nsfw), image.source_url),
            )

    async def job_images(self, job_id: int, role: str) -> list[JobImage]:
        rows = await self._db.fetchall(
            "SELECT i.id, i.content_type, i.width, i.height, i.data, i.pruned_at, j.nsfw,"
            " j.source_url FROM job_images j JOIN images i ON i.id = j.image_id"
            " WHERE j.job_id = ? AND j.role = ? ORDER BY j.position",
            (job_id, role),
        )
        return [
            JobImage(
                StoredImage(
                    r["id"],
                    r["content_type"],
                    r["width"],
                    r["height"],
                    bytes(r["data"]),
                    r["pruned_at"],
                ),
                bool(r["nsfw"]),
                r["source_url"],
            )
            for r in rows
        ]

    # --- Chains ---------------------------------------------------------------------------------

    async def chain(self, chain_id: int) -> Chain:
        row = await self._db.fetchone("SELECT * FROM chains WHERE id = ?", (chain_id,))
        if row is None:
            raise LookupError(f"chain {chain_id}")
        return Chain(**as_dict(row))

    async def chain_for_thread(self, thread_id: int) -> Chain | None:
        row = await self._db.fetchone("SELECT * FROM chains WHERE thread_id = ?", (thread_id,))
        return Chain(**as_dict(row)) if row else None

    # --- Jobs -----------------------------------------------------------------------------------

    async def create_job(
        self,
        *,
        inputs: Sequence[NewImage] = (),
        new_chain: bool = False,
        hold: BudgetHold | None = None,
        **values: Any,
    ) -> JobRecord:
        """Store a queued job with its input images (and its new chain) in one transaction.

        With a `hold`, what is spent is read and checked, and the hold taken, in that same
        transaction: a refused check stores nothing, and two jobs can never both pass a budget
        only one of them fits.

        Its fair-queue turn is the member's previous turn plus one, but never a turn already
        served: so members alternate, and a place once given is never taken by a later job of
        someone who already had a turn.
        """
        now = values.setdefault("created_at", time.time())
        values.setdefault("status", JobStatus.QUEUED)
        values["updated_at"] = now
        unknown = set(values) - set(_JOB_COLUMNS) | ({"id", "turn"} & set(values))
        if unknown:
            raise ValueError(f"not job columns: {sorted(unknown)}")
        if hold is not None and (hold.member_id, hold.guild_id) != (
            values["requester_id"],
            values.get("guild_id"),
        ):
            raise ValueError("a hold is for the job's own member and server")
        async with self._db.transaction() as tx:
            # Budgets and turns are read, then written: one writer of jobs at a time.
            await tx.lock("jobs")
            if hold is not None:
                hold.check(
                    await self._spent(
                        tx,
                        hold.guild_id,
                        hold.member_id,
                        day_start=hold.day_start,
                        month_start=hold.month_start,
                    )
                )
            if new_chain:
                chain = await tx.fetchone(
                    "INSERT INTO chains (guild_id, channel_id, owner_id, created_at)"
                    " VALUES (?,?,?,?) RETURNING id",
                    (values.get("guild_id"), values["channel_id"], values["requester_id"], now),
                )
                assert chain is not None
                values["chain_id"] = int(chain["id"])
            served = _starting_statuses()
            row = await tx.fetchone(
                "SELECT"
                f" (SELECT COALESCE(MAX(turn), 0) FROM jobs WHERE status IN ({served})),"
                " (SELECT COALESCE(MAX(turn), -1) FROM jobs WHERE requester_id = ?)",
                (values["requester_id"],),
            )
            assert row is not None
            values["turn"] = max(int(row[0]), int(row[1]) + 1)
            names = list(values)
            inserted = await tx.fetchone(
                f"INSERT INTO jobs ({', '.join(names)}) VALUES ({_placeholders(names)})"
                " RETURNING id",
                [_to_column(name, values[name]) for name in names],
            )
            assert inserted is not None
            job_id = int(inserted["id"])
            await self._set_job_images(tx, job_id, "input", inputs)
            if hold is not None:
                await tx.execute(
                    "INSERT INTO budget_holds (job_id, guild_id, member_id, amount_micros,"
                    " images, state, created_at) VALUES (?,?,?,?,?,'held',?)",
                    (
                        job_id,
                        hold.guild_id,
                        hold.member_id,
                        hold.amount_micros,
                        hold.images,
                        hold.at,
                    ),
                )
            # Workers in other processes wake to a new job at once.
            await self._db.notify(tx)
        return await self.job(job_id)

    async def transition(
        self,
        job_id: int,
        from_status: str | Iterable[str],
        to_status: str,
        *,
        outputs: Sequence[NewImage] | None = None,
        **values: Any,
    ) -> JobRecord | None:
        """Move the job to `to_status` if it is still in `from_status`; None if it is not.

        `values` are written in the same update; `outputs` (the verified result images) in the
        same transaction, so a job is SUCCEEDED with all its images or not at all.
        """
        sources = [from_status] if isinstance(from_status, str) else list(from_status)
        self._check_columns(values)
        values = {**values, "status": to_status, "updated_at": time.time()}
        assignments = ", ".join(f"{name} = ?" for name in values)
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ? AND status IN"
                f" ({_placeholders(sources)})",
                [*(_to_column(n, v) for n, v in values.items()), job_id, *sources],
            )
            if changed != 1:
                return None
            if outputs is not None:
                await self._set_job_images(tx, job_id, "output", outputs)
            await self._end_hold(tx, job_id, to_status, values["updated_at"])
            if to_status not in OPEN_STATUSES:
                # A place at WaveSpeed may have freed: other workers look at the queue again.
                await self._db.notify(tx)
        return await self.job(job_id)

    # --- The budget ledger ----------------------------------------------------------------------

    @staticmethod
    async def _end_hold(tx: Transaction, job_id: int, status: str, now: float) -> None:
        """Settle a job's hold at its cost once made; release it when it failed or was
        cancelled. Inside the transition's transaction; a hold already ended stays as it is."""
        if status in _RELEASING:
            await tx.execute(
                "UPDATE budget_holds SET state = 'released', ended_at = ?"
                " WHERE job_id = ? AND state = 'held'",
                (now, job_id),
            )
        elif status == JobStatus.SUCCEEDED:
            row = await tx.fetchone("SELECT cost FROM jobs WHERE id = ?", (job_id,))
            cost = None if row is None or row["cost"] is None else to_micros(row["cost"])
            await tx.execute(
                "UPDATE budget_holds SET state = 'settled', ended_at = ?,"
                " amount_micros = COALESCE(?, amount_micros) WHERE job_id = ? AND state = 'held'",
                (now, cost, job_id),
            )

    @staticmethod
    async def _spent(
        reader: Reader,
        guild_id: int | None,
        member_id: int,
        *,
        day_start: float,
        month_start: float,
    ) -> Spending:
        row = await reader.fetchone(
            "SELECT"
            " COALESCE(SUM(CASE WHEN created_at >= ? THEN amount_micros END), 0),"
            " COALESCE(SUM(amount_micros), 0),"
            " COALESCE(SUM(CASE WHEN member_id = ? AND created_at >= ? THEN amount_micros END), 0),"
            " COALESCE(SUM(CASE WHEN member_id = ? THEN amount_micros END), 0),"
            " COALESCE(SUM(CASE WHEN member_id = ? AND created_at >= ? THEN images END), 0),"
            " (SELECT MAX(created_at) FROM budget_holds WHERE member_id = ?"
            "  AND guild_id IS NOT DISTINCT FROM ? AND state != 'released')"
            " FROM budget_holds WHERE guild_id IS NOT DISTINCT FROM ? AND created_at >= ?"
            " AND state != 'released'",
            (
                day_start,
                member_id,
                day_start,
                member_id,
                member_id,
                day_start,
                member_id,
                guild_id,
                guild_id,
                month_start,
            ),
        )
        assert row is not None
        server_day, server_month, member_day, member_month, member_day_images, last_at = (
            row[i] for i in range(6)
        )
        return Spending(
            server_day=int(server_day),
            server_month=int(server_month),
            member_day=int(member_day),
            member_month=int(member_month),
            member_day_images=int(member_day_images),
            member_last_at=last_at,
        )

    async def spending(
        self, guild_id: int | None, member_id: int, *, day_start: float, month_start: float
    ) -> Spending:
        """What the ledger counts for this server and member since the given day and month."""
        # A plain read: only `create_job` needs it inside the transaction that writes.
        return await self._spent(
            self._db, guild_id, member_id, day_start=day_start, month_start=month_start
        )

    async def hold_of(self, job_id: int) -> LedgerEntry | None:
        """What the ledger holds for a job (its amount and state); None for a job not priced."""
        row = await self._db.fetchone(
            "SELECT amount_micros, state FROM budget_holds WHERE job_id = ?", (job_id,)
        )
        return None if row is None else LedgerEntry(int(row[0]), str(row[1]))

    async def server_spending(self, guild_id: int, *, since: float) -> list[SpendingRow]:
        """What a server's ledger counts since `since`, by member and model, largest first."""
        rows = await self._db.fetchall(
            "SELECT h.member_id, j.model_path, SUM(h.amount_micros), SUM(h.images), COUNT(*)"
            " FROM budget_holds h JOIN jobs j ON j.id = h.job_id"
            " WHERE h.guild_id = ? AND h.created_at >= ? AND h.state != 'released'"
            " GROUP BY h.member_id, j.model_path ORDER BY SUM(h.amount_micros) DESC",
            (guild_id, since),
        )
        # SUM is NUMERIC on PostgreSQL: counted in Python as the integers they are.
        return [SpendingRow(int(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]

    # --- Community controls ---------------------------------------------------------------------

    async def server_rule_changes(self, guild_id: int) -> dict[str, Any]:
        """The rules a server's admins changed (field -> value as JSON), or nothing."""
        row = await self._db.fetchone(
            "SELECT changes FROM server_rules WHERE guild_id = ?", (guild_id,)
        )
        return dict(json.loads(row["changes"])) if row else {}

    async def servers_with_rules(self) -> list[int]:
        """Every server whose admins changed a rule (the others follow the defaults)."""
        rows = await self._db.fetchall("SELECT guild_id FROM server_rules ORDER BY guild_id")
        return [int(row[0]) for row in rows]

    async def set_server_rule_changes(
        self, guild_id: int, changes: dict[str, Any], *, by: int, at: float
    ) -> None:
        """Store a server's changed rules (all of them: this replaces what was stored)."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO server_rules (guild_id, changes, changed_by, changed_at)"
                " VALUES (?,?,?,?) ON CONFLICT (guild_id) DO UPDATE SET"
                " changes = excluded.changes, changed_by = excluded.changed_by,"
                " changed_at = excluded.changed_at",
                (guild_id, json.dumps(changes, sort_keys=True), by, at),
            )

    async def ban(self, guild_id: int, member_id: int, *, by: int, at: float) -> bool:
        """Ban a member from the bot in a server; False if they already were."""
        changed = await self._db.execute(
            "INSERT INTO server_bans (guild_id, member_id, banned_by, banned_at)"
            " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
            (guild_id, member_id, by, at),
        )
        return changed == 1

    async def unban(self, guild_id: int, member_id: int) -> bool:
        """Lift a ban; False if the member was not banned."""
        changed = await self._db.execute(
            "DELETE FROM server_bans WHERE guild_id = ? AND member_id = ?",
            (guild_id, member_id),
        )
        return changed == 1

    async def is_banned(self, guild_id: int, member_id: int) -> bool:
        row = await self._db.fetchone(
            "SELECT 1 FROM server_bans WHERE guild_id = ? AND member_id = ?", (guild_id, member_id)
        )
        return row is not None

    async def banned(self, guild_id: int) -> list[int]:
        rows = await self._db.fetchall(
            "SELECT member_id FROM server_bans WHERE guild_id = ? ORDER BY banned_at", (guild_id,)
        )
        return [int(row[0]) for row in rows]

    async def claim_note(self, guild_id: int, kind: str, *, period_start: float, at: float) -> bool:
        """True the first time a note of `kind` is claimed for this server and period: so a
        note is sent once, even when two jobs cross the line together or the bot restarts."""
        changed = await self._db.execute(
            "INSERT INTO server_notes (guild_id, kind, period_start, sent_at)"
            " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
            (guild_id, kind, period_start, at),
        )
        return changed == 1

    async def mark_delivered(self, job: JobRecord, posted: PostedResult) -> JobRecord | None:
        """DELIVERING -> DELIVERED with the message that shows it, its thread and the chain's
        new head: all in one transaction, so a restart never posts a recorded result again."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE jobs SET status = ?, delivered_at = ?, updated_at = ?,"
                " result_message_id = ?, result_channel_id = ? WHERE id = ? AND status = ?",
                (
                    JobStatus.DELIVERED,
                    time.time(),
                    time.time(),
                    posted.message_id,
                    posted.channel_id,
                    job.id,
                    JobStatus.DELIVERING,
                ),
            )
            if changed != 1:
                return None
            await self._record_post(tx, job, posted)
        return await self.job(job.id)

    async def record_post(self, job: JobRecord, posted: PostedResult) -> None:
        """A result shown again (an Undo): its message, and the thread started on it."""
        async with self._db.transaction() as tx:
            await self._record_post(tx, job, posted)

    @classmethod
    async def _record_post(cls, tx: Transaction, job: JobRecord, posted: PostedResult) -> None:
        # The posted step becomes its chain's head: what a plain message in the thread edits.
        await cls._insert_message(tx, posted.message_id, posted.channel_id, job.id, "result")
        if job.chain_id is not None:
            await tx.execute(
                "UPDATE chains SET head_job_id = ?, thread_id = COALESCE(thread_id, ?)"
                " WHERE id = ?",
                (job.id, posted.thread_id, job.chain_id),
            )

    async def update_job(self, job_id: int, **values: Any) -> JobRecord:
        """Bookkeeping that is not a change of status (use `transition` for those)."""
        self._check_columns(values)
        if not values:
            raise ValueError("nothing to update")
        assignments = ", ".join(f"{name} = ?" for name in values)
        async with self._db.transaction() as tx:
            await tx.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ?",
                [*(_to_column(name, value) for name, value in values.items()), job_id],
            )
        return await self.job(job_id)

    @staticmethod
    def _check_columns(values: dict[str, Any]) -> None:
        unknown = set(values) - set(_JOB_COLUMNS) | ({"id", "status"} & set(values))
        if unknown:
            raise ValueError(f"not updatable job columns: {sorted(unknown)}")

    async def job(self, job_id: int) -> JobRecord:
        row = await self._db.fetchone(f"{_SELECT_JOB} WHERE id = ?", (job_id,))
        if row is None:
            raise LookupError(f"job {job_id}")
        return _job_from_row(row)

    async def delivered_to(
        self, member_id: int, guild_id: int | None, *, limit: int
    ) -> list[JobRecord]:
        """A member's newest delivered results in one server (or in DMs), newest first."""
        rows = await self._db.fetchall(
            f"{_SELECT_JOB} WHERE requester_id = ? AND status = ?"
            " AND guild_id IS NOT DISTINCT FROM ? AND result_message_id IS NOT NULL"
            " ORDER BY delivered_at DESC, id DESC LIMIT ?",
            (member_id, JobStatus.DELIVERED, guild_id, limit),
        )
        return [_job_from_row(row) for row in rows]

    async def jobs_with_status(self, statuses: Iterable[str]) -> list[JobRecord]:
        wanted = list(statuses)
        rows = await self._db.fetchall(
            f"{_SELECT_JOB} WHERE status IN ({_placeholders(wanted)}) ORDER BY id", wanted
        )
        return [_job_from_row(row) for row in rows]

    async def open_jobs(self) -> tuple[list[JobRecord], list[int]]:
        """Every job with work left, and the ids of rows that could not be read (set aside)."""
        rows = await self._db.fetchall(
            f"{_SELECT_JOB} WHERE status IN ({_placeholders(OPEN_STATUSES)}) ORDER BY id",
            OPEN_STATUSES,
        )
        jobs: list[JobRecord] = []
        broken: list[int] = []
        for row in rows:
            try:
                jobs.append(_job_from_row(row))
            except (TypeError, ValueError) as exc:
                log.error("job %s: unreadable row (%s); set aside", row["id"], exc)
                broken.append(int(row["id"]))
        for job_id in broken:
            async with self._db.transaction() as tx:
                await tx.execute(
                    "UPDATE jobs SET status = ? WHERE id = ?", (JobStatus.SET_ASIDE, job_id)
                )
        return jobs, broken

    async def queued_in_order(self, limit: int) -> list[JobRecord]:
        """Waiting jobs in the order they start: by turn, then first come."""
        return await _queued_in_order(self._db, limit)

    async def queue_position(self, job_id: int) -> int | None:
        """1 for the next job to start, 2 for the one after...; None once started or gone."""
        row = await self._db.fetchone(
            "SELECT (SELECT COUNT(*) FROM jobs q WHERE q.status = ? AND"
            " (q.turn < j.turn OR (q.turn = j.turn AND q.id <= j.id)))"
            " FROM jobs j WHERE j.id = ? AND j.status = ?",
            (JobStatus.QUEUED, job_id, JobStatus.QUEUED),
        )
        return int(row[0]) if row else None

    async def slots_in_use(self, *, running_since: float) -> dict[int, int]:
        """Member id -> their jobs holding a place at WaveSpeed now (by every worker).

        A job sent before `running_since` no longer counts: it may be stuck, and it must not
        hold everyone else up while it waits out its deadline.
        """
        return await _slots_in_use(self._db, running_since)

    # --- A fleet of workers ---------------------------------------------------------------------

    async def claim_startable(
        self,
        worker: str,
        *,
        max_concurrent: int,
        per_member: int,
        running_since: float,
        lease_until: float,
    ) -> list[JobRecord]:
        """Take from the queue what fits now, across every worker: in turn order, at most
        `max_concurrent` holding a place at WaveSpeed and `per_member` for one member. Each job
        taken is STARTING and leased to `worker`. One transaction under one lock, so two
        workers never take the same job, nor together more than fits."""
        taken: list[JobRecord] = []
        async with self._db.transaction() as tx:
            await tx.lock("scheduler")
            in_use = await _slots_in_use(tx, running_since)
            free = max_concurrent - sum(in_use.values())
            if free <= 0:
                return []
            # Enough waiting jobs to fill the free slots even when some members are at their cap.
            for job in await _queued_in_order(tx, free * 20 + 50):
                if free <= 0:
                    break
                if in_use.get(job.requester_id, 0) >= per_member:
                    continue
                row = await tx.fetchone(
                    "UPDATE jobs SET status = ?, worker = ?, lease_until = ?, updated_at = ?"
                    f" WHERE id = ? AND status = ? RETURNING {', '.join(_JOB_COLUMNS)}",
                    (
                        JobStatus.STARTING,
                        worker,
                        lease_until,
                        time.time(),
                        job.id,
                        JobStatus.QUEUED,
                    ),
                )
                if row is None:
                    continue  # cancelled meanwhile
                in_use[job.requester_id] = in_use.get(job.requester_id, 0) + 1
                free -= 1
                taken.append(_job_from_row(row))
            await self._db.notify(tx)
        return taken

    async def claim_orphans(
        self, worker: str, *, now: float, lease_until: float, everything: bool = False
    ) -> list[int]:
        """Lease to `worker` the open jobs nobody drives: taken from the queue but whose
        worker's lease ran out (it died, or stopped). `everything`: every open job that has
        left the queue, as one process on its own store does at start-up."""
        moving = [s for s in OPEN_STATUSES if s != JobStatus.QUEUED]
        condition = "" if everything else " AND (lease_until IS NULL OR lease_until < ?)"
        params: list[Any] = [worker, lease_until, *moving]
        if not everything:
            params.append(now)
        async with self._db.transaction() as tx:
            rows = await tx.fetchall(
                "UPDATE jobs SET worker = ?, lease_until = ?"
                f" WHERE status IN ({_placeholders(moving)}){condition} RETURNING id",
                params,
            )
        return sorted(int(row["id"]) for row in rows)

    async def renew_leases(self, worker: str, *, lease_until: float) -> int:
        """Keep the open jobs `worker` drives leased to it; how many it holds."""
        return await self._db.execute(
            "UPDATE jobs SET lease_until = ?"
            f" WHERE worker = ? AND status IN ({_placeholders(OPEN_STATUSES)})",
            (lease_until, worker, *OPEN_STATUSES),
        )

    async def release_leases(self, worker: str) -> None:
        """A worker stopping on purpose: its open jobs may be taken on at once."""
        async with self._db.transaction() as tx:
            await tx.execute("UPDATE jobs SET lease_until = NULL WHERE worker = ?", (worker,))
            await tx.execute("DELETE FROM fleet_roles WHERE worker = ?", (worker,))
            await self._db.notify(tx)

    async def hold_role(self, name: str, worker: str, *, now: float, lease_until: float) -> bool:
        """Whether `worker` holds the fleet-wide role `name` (taken, or renewed, now)."""
        changed = await self._db.execute(
            "INSERT INTO fleet_roles (name, worker, lease_until) VALUES (?,?,?)"
            " ON CONFLICT (name) DO UPDATE SET worker = excluded.worker,"
            " lease_until = excluded.lease_until"
            " WHERE fleet_roles.worker = excluded.worker OR fleet_roles.lease_until < ?",
            (name, worker, lease_until, now),
        )
        return changed == 1

    async def set_aside(self, job_id: int) -> None:
        """A row this version cannot read: kept for an operator, never worked on."""
        await self._db.execute(
            "UPDATE jobs SET status = ? WHERE id = ?", (JobStatus.SET_ASIDE, job_id)
        )

    async def typical_inference_s(self, model_path: str) -> float | None:
        """The median inference time of the model's recent jobs, in seconds (None: no history).

        WaveSpeed's own inference timing, not our round trips, so slow polling cannot feed
        back into later estimates."""
        rows = await self._db.fetchall(
            "SELECT inference_ms FROM jobs WHERE model_path = ? AND inference_ms IS NOT NULL"
            " ORDER BY id DESC LIMIT 20",
            (model_path,),
        )
        if not rows:
            return None
        return float(statistics.median(int(row[0]) for row in rows)) / 1000

    async def prediction_taken(self, prediction_id: str) -> bool:
        """Whether a job already owns this prediction (so a lost submit cannot adopt it)."""
        row = await self._db.fetchone(
            "SELECT 1 FROM jobs WHERE prediction_id = ?", (prediction_id,)
        )
        return row is not None

    # --- What monitoring reads ------------------------------------------------------------------

    async def ping(self) -> None:
        """The cheapest read there is; raises when the store cannot answer (closed, broken)."""
        await self._db.fetchone("SELECT 1")

    async def job_counts(self) -> dict[str, int]:
        """How many jobs the store holds in each status (statuses without jobs left out)."""
        rows = await self._db.fetchall("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {str(row[0]): int(row[1]) for row in rows}

    async def settled_by_model(self) -> dict[str, int]:
        """What the ledger settled (images made and charged), by model path, in micro-dollars."""
        rows = await self._db.fetchall(
            "SELECT j.model_path, SUM(h.amount_micros) FROM budget_holds h"
            " JOIN jobs j ON j.id = h.job_id WHERE h.state = 'settled' GROUP BY j.model_path"
        )
        return {str(row[0]): int(row[1]) for row in rows}

    async def lineage(self, job_id: int) -> list[JobRecord]:
        """The job and its ancestors, oldest first: a chain's history up to this step."""
        rows = await self._db.fetchall(
            f"""
            WITH RECURSIVE lineage(id, depth) AS (
                SELECT CAST(? AS BIGINT), 0
                UNION ALL
                SELECT jobs.parent_id, lineage.depth + 1 FROM jobs
                JOIN lineage ON jobs.id = lineage.id WHERE jobs.parent_id IS NOT NULL
            )
            SELECT {", ".join("jobs." + c for c in _JOB_COLUMNS)} FROM lineage
            JOIN jobs ON jobs.id = lineage.id ORDER BY lineage.depth DESC
            """,
            (job_id,),
        )
        return [_job_from_row(row) for row in rows]

    # --- Messages -------------------------------------------------------------------------------

    @staticmethod
    async def _insert_message(
        tx: Transaction, message_id: int, channel_id: int, job_id: int, kind: str
    ) -> None:
        await tx.execute(
            "INSERT INTO messages (message_id, channel_id, job_id, kind) VALUES (?,?,?,?)"
            " ON CONFLICT (message_id) DO UPDATE SET channel_id = excluded.channel_id,"
            " job_id = excluded.job_id, kind = excluded.kind",
            (message_id, channel_id, job_id, kind),
        )

    async def job_for_message(self, message_id: int) -> JobRecord | None:
        row = await self._db.fetchone(
            "SELECT job_id FROM messages WHERE message_id = ?", (message_id,)
        )
        return await self.job(int(row["job_id"])) if row else None

    async def messages_of(self, job_id: int, kind: str | None = None) -> list[tuple[int, int]]:
        """(channel id, message id) of what was posted for the job, oldest first."""
        query = "SELECT channel_id, message_id FROM messages WHERE job_id = ?"
        params: list[Any] = [job_id]
        if kind is not None:
            query += " AND kind = ?"
            params.append(kind)
        rows = await self._db.fetchall(query + " ORDER BY message_id", params)
        return [(int(r["channel_id"]), int(r["message_id"])) for r in rows]

    async def forget_message(self, message_id: int) -> None:
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM messages WHERE message_id = ?", (message_id,))

    # --- Retention ------------------------------------------------------------------------------

    async def forget_relayed_webhooks(self, *, before: float) -> int:
        """Drop webhook deliveries relayed between processes before `before`."""
        return await self._db.execute(
            "DELETE FROM webhook_deliveries WHERE received_at < ?", (before,)
        )

    async def prune_images(self, *, before: float, at: float, batch: int = 200) -> int:
        """Drop the bytes of images no job since `before` uses, and no job with work left; keep
        their rows (and every job, chain and ledger row). Return how many were pruned.

        In batches, each its own short transaction, so jobs never wait long behind a prune;
        the freed space is then given back (`Database.reclaim_space`).
        """
        pruned = 0
        while True:
            async with self._db.transaction() as tx:
                count = await tx.execute(
                    "UPDATE images SET data = ?, pruned_at = ? WHERE id IN ("
                    " SELECT i.id FROM images i WHERE i.pruned_at IS NULL AND i.created_at < ?"
                    " AND NOT EXISTS (SELECT 1 FROM job_images ji JOIN jobs j ON j.id = ji.job_id"
                    "  WHERE ji.image_id = i.id AND (j.created_at >= ? OR j.status IN"
                    f"  ({_placeholders(OPEN_STATUSES)})))"
                    " LIMIT ?)",
                    (b"", at, before, before, *OPEN_STATUSES, batch),
                )
            pruned += count
            if count < batch:
                break
        if pruned:
            await self._db.reclaim_space()
        return pruned


async def _queued_in_order(reader: Reader, limit: int) -> list[JobRecord]:
    rows = await reader.fetchall(
        f"{_SELECT_JOB} WHERE status = ? ORDER BY turn, id LIMIT ?", (JobStatus.QUEUED, limit)
    )
    return [_job_from_row(row) for row in rows]


async def _slots_in_use(reader: Reader, running_since: float) -> dict[int, int]:
    rows = await reader.fetchall(
        "SELECT requester_id, COUNT(*) FROM jobs"
        f" WHERE status IN ({_placeholders(SLOT_STATUSES)})"
        " AND NOT (status IN (?, ?) AND COALESCE(submitted_at, submit_started_at) < ?)"
        " GROUP BY requester_id",
        (*SLOT_STATUSES, JobStatus.RUNNING, JobStatus.SUBMITTING, running_since),
    )
    return {int(row[0]): int(row[1]) for row in rows}


def _starting_statuses() -> str:
    """SQL list of the statuses of jobs that have left the queue (their turn was served)."""
    left = [s for s in JobStatus if s not in (JobStatus.QUEUED, JobStatus.CANCELLED)]
    return ", ".join(f"'{s.value}'" for s in left)


def is_postgres_url(where: str) -> bool:
    return where.startswith(("postgresql://", "postgres://"))


async def _open_sqlite(path: str | Path) -> SqliteDatabase:
    where = str(path)
    if where != ":memory:":
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"database error: cannot create the folder of {where} ({exc.strerror}): "
                "set [storage] database to a writable path"
            ) from None
    try:
        # Opened once plainly first: a failed aiosqlite connect leaves its thread behind.
        await asyncio.to_thread(_try_open, where)
        connection = await aiosqlite.connect(path, timeout=5.0)
    except sqlite3.Error as exc:
        raise StoreError(
            f"database error: cannot open {where} ({exc}): "
            "set [storage] database to a writable path"
        ) from None
    try:
        connection.row_factory = aiosqlite.Row
        await connection.execute("PRAGMA foreign_keys = ON")
        # Before anything is written: a new file gives pruned pages back as it goes.
        await connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        await connection.execute("PRAGMA journal_mode = WAL")
        await connection.execute("PRAGMA busy_timeout = 5000")
    except BaseException as exc:
        await connection.close()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(_explain(where, exc)) from None
        raise
    return SqliteDatabase(connection)


async def _open_postgres(url: str) -> PostgresDatabase:
    shown = _without_password(url)
    try:
        return await PostgresDatabase.connect(url)
    except (TimeoutError, OSError) as exc:
        raise StoreError(
            f"database error: cannot reach PostgreSQL at {shown} ({exc}): start it, or check "
            "[storage] database"
        ) from None
    except Exception as exc:  # asyncpg's errors: a refused login, a missing database...
        raise StoreError(
            f"database error: PostgreSQL at {shown} refused the connection "
            f"({type(exc).__name__}: {exc}): check [storage] database"
        ) from None


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _try_open(where: str) -> None:
    sqlite3.connect(where, timeout=5.0).close()


def _explain(where: str, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return f"database error: {where} is read-only: make it writable for the bot's user"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            f"database error: {where} is damaged ({text}): restore a backup, or move it aside "
            "to start with an empty store"
        )
    if "locked" in text or "busy" in text:
        return f"database error: {where} is locked by another process: stop it first"
    return f"database error: cannot use {where} ({text}): set [storage] database to a usable path"
