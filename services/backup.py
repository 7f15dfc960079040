"""A consistent copy of the job store, safe to take while the bot runs.

    python -m services.backup PATH [--config CONFIG | --database DATABASE]

SQLite's online backup API copies the store as one snapshot while the bot goes on writing (in
WAL mode a reader never blocks the writer). The copy is written next to PATH under a temporary
name, checked, made a single self-contained file, and only then renamed to PATH: a backup that
fails half-way never leaves a broken file where the last good one was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
from pathlib import Path

from .settings import ConfigError, load_settings
from .storage import is_postgres_url


class BackupError(Exception):
    """The backup could not be made. Its message is one line that says why."""


def backup(database: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy `database` to `target` atomically; return the target's path."""
    if is_postgres_url(str(database)):
        raise BackupError("backup error: the store is PostgreSQL: back it up with pg_dump")
    source_path, target_path = Path(database), Path(target)
    if not source_path.is_file():
        raise BackupError(f"backup error: there is no database at {source_path}")
    if target_path.resolve() == source_path.resolve():
        raise BackupError("backup error: the backup must go to another file than the database")
    target_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = target_path.with_name(f".{target_path.name}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()  # left by a backup killed half-way
        # Read only, but not opened read-only: a WAL store's reader may need to create its
        # shared-memory file when the bot is not running.
        source = sqlite3.connect(source_path, timeout=10.0)
        try:
            copy = sqlite3.connect(temporary)
            try:
                # All pages in one step: one read snapshot, so writes meanwhile never restart it.
                source.backup(copy)
                # One file, no -wal beside it; and a copy that does not check out is no backup.
                copy.execute("PRAGMA journal_mode = DELETE")
                (verdict,) = copy.execute("PRAGMA quick_check").fetchone()
                if verdict != "ok":
                    raise BackupError(f"backup error: the copy does not check out ({verdict})")
            finally:
                copy.close()
        finally:
            source.close()
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target_path)
    except sqlite3.Error as exc:
        raise BackupError(f"backup error: cannot copy {source_path} ({exc})") from None
    except OSError as exc:
        raise BackupError(f"backup error: cannot write {target_path} ({exc.strerror})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return target_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.backup",
        description="Copy the job store to PATH, safely while the bot runs.",
    )
    parser.add_argument("path", help="where to write the backup (replaced atomically)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", help="config file naming [storage] database")
    where.add_argument("--database", help="the database file itself (no config needed)")
    args = parser.parse_args(argv)
    try:
        database = args.database or load_settings(args.config).storage.database
        written = backup(database, args.path)
    except (ConfigError, BackupError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"backed up {database} to {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
