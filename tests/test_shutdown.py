"""SIGTERM and SIGINT stop the real bot process gracefully; the next start finishes the work.

`docker stop` and `systemctl stop` send SIGTERM: the bot stops taking jobs, lets a submit or a
post on its way finish, leaves every wait to the next start, logs one line and exits 0 within
10 s. Nothing is lost, nothing is sent or posted twice.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from services.storage import OPEN_STATUSES, Repository
from tests.e2e import SIM_KEY, shared_simulator
from tests.local_discord import LocalDiscord, bot_process
from tests.local_discord.models import count_custom_ids

pytest_plugins = ("tests.local_discord.fixtures",)

RESULTS = r"kontext:details:(\d+)"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_mid_job_exits_cleanly_and_the_next_start_delivers_once(
    local_discord: LocalDiscord, tmp_path: Path, signum: int
) -> None:
    database = tmp_path / "jobs.sqlite3"
    alice = local_discord.driver()
    # WaveSpeed outlives the bot (a dry run's built-in simulator would not); each image takes a
    # few seconds, long enough to stop the bot mid-job.
    async with shared_simulator(latency_s=4.0) as sim:
        env = {
            "WAVESPEED_API_KEY": SIM_KEY,
            "WAVESPEED_BASE_URL": str(sim.base_url),
            "WAVESPEED_POLL_INTERVAL_S": "0.2",
            "JOBS_STATUS_INTERVAL_S": "0.2",
        }
        await _stop_and_resume(local_discord, alice, database, env, signum)
        assert sim.request_counts["submit"] == 1


async def _stop_and_resume(
    local_discord: LocalDiscord, alice: Any, database: Path, env: dict[str, str], signum: int
) -> None:
    async with bot_process(local_discord, database=database, sync=True, env=env) as first:
        ix = await alice.slash("imagine", prompt="a red fox")
        await ix.response(lambda m: m.content.startswith("🎨"), timeout=20)
        asked = time.monotonic()
        first.send_signal(signum)
        assert await first.wait(timeout=15) == 0
        stopped_in = time.monotonic() - asked
        assert stopped_in < 10, f"took {stopped_in:.1f} s"
        assert "Traceback" not in first.stderr
        assert "stopped: open jobs resume at the next start" in first.stderr
    repository = await Repository.open(database)
    try:
        # Stopped before it was posted: the job waits in the store for the next start.
        (job,) = await repository.jobs_with_status(OPEN_STATUSES)
    finally:
        await repository.close()

    # The next start finishes the same job (never sent again) and posts it once.
    async with bot_process(local_discord, database=database, env=env):
        await alice.wait_for_message(
            lambda m: m.author.id == alice.bot_user.id and bool(m.embeds) and not m.ephemeral,
            timeout=30,
        )
    posts = count_custom_ids(local_discord.bot_messages(local_discord.general), RESULTS)
    assert posts == {str(job.id): 1}
