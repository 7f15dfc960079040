"""Is the bot healthy? `python -m services.healthcheck` exits 0 if so, 1 with one line if not.

The container's HEALTHCHECK. With `HEALTH_PORT` set (the bot's optional health endpoint), it asks
`GET http://127.0.0.1:$HEALTH_PORT/healthz` and wants a 200. Without it, it checks what the bot
cannot run without: its job store is there, readable, and migrated (the bot writes its schema
version at start-up, so a store at version 0 means the bot never got that far).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .settings import ConfigError, load_settings

HEALTH_PORT_ENV = "HEALTH_PORT"
HEALTH_PATH = "/healthz"


def check_endpoint(port: int, *, timeout: float = 5.0) -> str | None:
    """None when the health endpoint answers 200; else why not."""
    url = f"http://127.0.0.1:{port}{HEALTH_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return None
            return f"unhealthy: {url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"unhealthy: {url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"unhealthy: {url} does not answer ({exc})"


def check_store(database: Path) -> str | None:
    """None when the job store is there and migrated; else why not."""
    if str(database).startswith(("postgresql:", "postgres:")):
        return None  # a server of its own: the bot's health endpoint (HEALTH_PORT) tells
    if not database.is_file():
        return f"unhealthy: no job store at {database}"
    try:
        db = sqlite3.connect(database, timeout=5.0)
        try:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            db.execute("SELECT 1 FROM jobs LIMIT 1").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"unhealthy: cannot read {database} ({exc})"
    if version < 1:
        return f"unhealthy: {database} was never migrated (the bot did not start)"
    return None


def main() -> int:
    port = os.environ.get(HEALTH_PORT_ENV, "").strip()
    if port:
        if not port.isdigit():
            problem: str | None = f"unhealthy: {HEALTH_PORT_ENV}={port!r} is not a port number"
        else:
            problem = check_endpoint(int(port))
    else:
        try:
            problem = check_store(load_settings().storage.database)
        except ConfigError as exc:
            problem = f"unhealthy: {exc}"
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
