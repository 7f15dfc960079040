"""Is the bot healthy? `python -m services.healthcheck` exits 0 if so, 1 with one line if not.

The container's HEALTHCHECK. With `[monitoring] port` set (`MONITORING_PORT`), it asks the bot's
own `GET /healthz` there (gateway, store and WaveSpeed) and wants a 200. Without it, it checks
what the bot cannot run without: its job store is there, readable, and migrated (the bot writes
its schema version at start-up, so a store at version 0 means the bot never got that far).
"""

from __future__ import annotations

import sqlite3
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .settings import ConfigError, load_settings
from .storage import is_postgres_url

HEALTH_PATH = "/healthz"


def check_endpoint(host: str, port: int, *, timeout: float = 10.0) -> str | None:
    """None when the health endpoint answers 200; else why not."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # listening everywhere: ask it on loopback
    url = f"http://{host}:{port}{HEALTH_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return None
            return f"unhealthy: {url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"unhealthy: {url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"unhealthy: {url} does not answer ({exc})"


def check_store(database: str | Path) -> str | None:
    """None when the job store is there and migrated; else why not."""
    if is_postgres_url(str(database)):
        return None  # a server of its own: the bot's /healthz ([monitoring] port) tells
    if not Path(database).is_file():
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
    try:
        settings = load_settings()
    except ConfigError as exc:
        problem: str | None = f"unhealthy: {exc}"
    else:
        monitoring = settings.monitoring
        if monitoring.port:
            problem = check_endpoint(monitoring.host, monitoring.port)
        else:
            problem = check_store(settings.storage.database)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
