"""The two engines the job store runs on: SQLite (embedded, the default) and PostgreSQL (a fleet).

The repository (services/storage.py) writes its SQL once, in what both engines understand:
`?` placeholders, `IS NOT DISTINCT FROM`, `ON CONFLICT ... DO NOTHING`, `RETURNING`. A driver
runs it on its engine, numbering the placeholders for PostgreSQL, and translates the schema's
column types (`INTEGER` ids are 64-bit there, as Discord's snowflakes need).

A unit of work is a `transaction()`: all of it is written, or none. Where a change reads before
it writes (a budget checked, then a hold taken), `Transaction.lock(name)` keeps other writers
of the same name out until it commits: a no-op on SQLite, whose one connection already writes
alone, and a transaction-scoped advisory lock on PostgreSQL, where many processes write at once.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Protocol

import aiosqlite

log = logging.getLogger(__name__)


class Row(Protocol):
    """A row of a result, read by column name (`row["id"]`) or position (`row[0]`): what
    sqlite3.Row and asyncpg's Record both are."""

    def __getitem__(self, key: str | int, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...


def as_dict(row: Row) -> dict[str, Any]:
    return {name: row[name] for name in row.keys()}  # noqa: SIM118 (a row, not a dict)


class Reader(Protocol):
    """What reads: a database, or a transaction."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


class Transaction(Protocol):
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; how many rows it changed."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def lock(self, name: str) -> None:
        """Keep other writers that lock `name` out until this transaction ends."""


class Database(abc.ABC):
    """One engine: reads, units of work, the schema's version."""

    dialect: str

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement, a unit of work of its own; how many rows it changed."""
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async with self.transaction() as tx:
            return await tx.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self.transaction() as tx:
            return await tx.fetchall(sql, params)

    async def schema_version(self) -> int:
        async with self.transaction() as tx:
            return await self.schema_version_in(tx)

    @abc.abstractmethod
    async def schema_version_in(self, tx: Transaction) -> int: ...

    @abc.abstractmethod
    async def set_schema_version(self, tx: Transaction, version: int) -> None: ...

    @abc.abstractmethod
    def schema(self, script: str) -> list[str]:
        """A migration's statements, in this engine's column types."""

    @abc.abstractmethod
    async def reclaim_space(self) -> None:
        """Give the space of deleted data back to the file system."""

    @abc.abstractmethod
    async def notify(self, tx: Transaction, news: str = "") -> None:
        """Tell the store's other processes, once `tx` commits, that something changed
        (`news`: what, if more than "the queue")."""

    @abc.abstractmethod
    async def listen(self, hear: Callable[[str], None]) -> None:
        """Call `hear` with the news whenever another process tells of a change."""

    @abc.abstractmethod
    async def close(self) -> None: ...


def statements(script: str) -> list[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]


# --- SQLite -------------------------------------------------------------------------------------


class _SqliteTransaction:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._connection.execute(sql, params) as cursor:
            return cursor.rowcount

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async with self._connection.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._connection.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def lock(self, name: str) -> None:
        # One connection, and every unit of work holds it alone (BEGIN IMMEDIATE).
        return None


class SqliteDatabase(Database):
    """One connection and one writer at a time: every unit of work is `BEGIN IMMEDIATE`."""

    dialect = "sqlite"

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            try:
                await self._connection.execute("BEGIN IMMEDIATE")
                yield _SqliteTransaction(self._connection)
            except BaseException:
                # Cancelled even while BEGIN was on its way: never leave a transaction open
                # for the next unit of work to trip over.
                if self._connection.in_transaction:
                    await self._connection.rollback()
                raise
            await self._connection.commit()

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        # A read needs no transaction of its own: it sees what is committed.
        async with self._lock:
            return await _SqliteTransaction(self._connection).fetchone(sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._lock:
            return await _SqliteTransaction(self._connection).fetchall(sql, params)

    async def schema_version_in(self, tx: Transaction) -> int:
        row = await tx.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def set_schema_version(self, tx: Transaction, version: int) -> None:
        await tx.execute(f"PRAGMA user_version = {int(version)}")

    def schema(self, script: str) -> list[str]:
        return statements(script)

    async def reclaim_space(self) -> None:
        # Each step of the pragma frees one page and `execute` steps once: a script runs it to
        # the end. The checkpoint then truncates the write-ahead log, and the file shrinks.
        async with self._lock:
            async with self._connection.execute("PRAGMA auto_vacuum") as cursor:
                row = await cursor.fetchone()
            if row is None or int(row[0]) != 2:  # not INCREMENTAL: a store made before it
                log.info("database: turning on incremental vacuum (a one-time VACUUM)")
                await self._connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
                await self._connection.execute("VACUUM")
            await self._connection.executescript("PRAGMA incremental_vacuum;")
            async with self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
                await cursor.fetchall()

    # A SQLite store has one process, which wakes itself: nobody else to tell or hear from.
    async def notify(self, tx: Transaction, news: str = "") -> None:
        return None

    async def listen(self, hear: Callable[[str], None]) -> None:
        return None

    async def close(self) -> None:
        await self._connection.close()


# --- PostgreSQL ---------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\?")
# Where processes sharing a store tell each other the queue changed.
CHANGES_CHANNEL = "kontext_jobs"
_TYPES = (
    # An `id INTEGER PRIMARY KEY` is SQLite's auto-numbered row id.
    (
        re.compile(r"\bid INTEGER PRIMARY KEY\b"),
        "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
)


def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...` (the store's SQL has no `?` in strings)."""
    counter = iter(range(1, 1 << 16))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def postgres_schema(script: str) -> list[str]:
    translated = []
    for statement in statements(script):
        for pattern, replacement in _TYPES:
            statement = pattern.sub(replacement, statement)
        translated.append(statement)
    return translated


class _PostgresTransaction:
    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        status: str = await self._connection.execute(numbered(sql), *params)
        # "UPDATE 3", "INSERT 0 1", "DELETE 0": the count is the last word.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = await self._connection.fetchrow(numbered(sql), *params)
        return row

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self._connection.fetch(numbered(sql), *params))

    async def lock(self, name: str) -> None:
        await self._connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)


class PostgresDatabase(Database):
    """A pool of connections; many processes write at once, each change one transaction."""

    dialect = "postgres"

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        # The connection kept for LISTEN (a pooled one would be handed to others).
        self._listener: Any = None
        self._callbacks: list[Callable[..., None]] = []

    @classmethod
    async def connect(cls, dsn: str, *, max_connections: int = 10) -> PostgresDatabase:
        import asyncpg  # only a fleet needs it loaded

        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_connections)
        return cls(pool)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._pool.acquire() as connection, connection.transaction():
            yield _PostgresTransaction(connection)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async with self._pool.acquire() as connection:
            return await _PostgresTransaction(connection).fetchone(sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._pool.acquire() as connection:
            return await _PostgresTransaction(connection).fetchall(sql, params)

    async def schema_version_in(self, tx: Transaction) -> int:
        await tx.lock("schema_version")
        await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        row = await tx.fetchone("SELECT MAX(version) AS version FROM schema_version")
        return int(row["version"]) if row and row["version"] is not None else 0

    async def set_schema_version(self, tx: Transaction, version: int) -> None:
        await tx.execute("DELETE FROM schema_version")
        await tx.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def schema(self, script: str) -> list[str]:
        return postgres_schema(script)

    async def reclaim_space(self) -> None:
        # PostgreSQL's autovacuum does this on its own.
        return None

    async def notify(self, tx: Transaction, news: str = "") -> None:
        # Delivered at commit, and not at all on rollback.
        await tx.execute("SELECT pg_notify(?, ?)", (CHANGES_CHANNEL, news))

    async def listen(self, hear: Callable[[str], None]) -> None:
        if self._listener is None:
            self._listener = await self._pool.acquire()

        def callback(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            hear(payload)

        self._callbacks.append(callback)
        await self._listener.add_listener(CHANGES_CHANNEL, callback)

    async def close(self) -> None:
        if self._listener is not None:
            for callback in self._callbacks:
                await self._listener.remove_listener(CHANGES_CHANNEL, callback)
            self._callbacks.clear()
            await self._pool.release(self._listener)
            self._listener = None
        await self._pool.close()
