"""A fleet of real processes on one PostgreSQL store, end to end.

Two gateways (`bot.py --role gateway`, shard 0 and shard 1 of 2) take `/imagine` commands from
members of servers on both shards and store the jobs; three workers (`bot.py --role worker`, no
gateway, Discord over REST) run them against the WaveSpeed simulator (a process of its own) and
post the results. One worker is killed with SIGKILL mid-batch. Every job must be delivered
exactly once: one result post each, none lost, none paid or posted twice, and never more
predictions open at once than the fleet-wide cap. The one exception the design makes: a job
whose submit the kill cut off before WaveSpeed had it is never sent again; it ends with its
member told that nothing was made or charged (no prediction, no post), and only such a job may.

The default suite runs 40 jobs from 10 members; `make fleet` runs 200 from 50
(FLEET_JOBS, FLEET_MEMBERS).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.storage import OPEN_STATUSES
from tests.faults.simulator import SimulatorProcess
from tests.local_discord import BotProcess, LocalDiscord, LocalDiscordConfig, Message
from tests.local_discord.clock import shard_of
from tests.local_discord.models import Channel, User
from tests.postgres import PostgresServer

JOBS = int(os.environ.get("FLEET_JOBS", "40"))
MEMBERS = int(os.environ.get("FLEET_MEMBERS", "10"))
SHARDS = 2
# Servers on each shard, besides the local Discord's own. Each process keeps its own account
# of Discord's rate limits: two workers posting into one channel faster than its limit (5
# messages in 5 s) would run into each other's 429s. Jobs spread over many channels, as in
# life, keep each channel well under it.
SERVERS_PER_SHARD = 5
WORKERS = 3
CAP = 4
SIM_KEY = "fleet-key"
LATENCY_S = 0.4
RESULT_BUTTON = "kontext:reroll:"
# A dead worker's jobs are taken on once its leases run out.
LEASE_S = 2.0
SETTLE_S = 60.0 + JOBS * 0.5


@pytest.fixture
async def local() -> AsyncIterator[LocalDiscord]:
    # Shards 0 and 1 are two identify buckets: the two gateways connect at once.
    config = LocalDiscordConfig(max_concurrency=SHARDS, identify_interval_s=0.5)
    async with LocalDiscord(config) as discord:
        yield discord


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorProcess]:
    # WaveSpeed's own per-key limit far above the bot's: what is open at once is the fleet's.
    args = ["--max-concurrent", "100"]
    async with SimulatorProcess(api_key=SIM_KEY, latency_s=LATENCY_S, args=args) as process:
        yield process


def servers(local: LocalDiscord) -> list[Channel]:
    """The #general of every server the bot is in, on both shards."""
    for shard in range(SHARDS):
        for n in range(SERVERS_PER_SHARD):
            local.add_guild(f"Shard {shard} server {n}", on_shard=(shard, SHARDS))
    state = local.state
    return [state.channels[guild.channel_ids[0]] for guild in state.guilds.values()]


def members(local: LocalDiscord, channels: list[Channel]) -> list[tuple[User, Channel]]:
    """MEMBERS members, each in one server, spread over all of them."""
    placed = []
    for n in range(MEMBERS):
        channel = channels[n % len(channels)]
        user = local.state.add_user(f"member{n}")
        local.state.add_member(local.state.guilds[channel.guild_id or 0], user)
        placed.append((user, channel))
    return placed


def result_posts(local: LocalDiscord, channels: list[Channel]) -> list[Message]:
    """Every result post in the servers' channels and their threads, deleted ones too."""
    return [
        message
        for channel in channels
        for message in local.bot_messages(channel, include_deleted=True)
        if any(c.startswith(RESULT_BUTTON) for c in message.custom_ids)
    ]


def prompt_of(message: Message) -> str:
    return str(message.embeds[0].get("description", "")) if message.embeds else ""


async def test_a_fleet_delivers_every_job_once_though_a_worker_dies(
    local: LocalDiscord, sim: SimulatorProcess, postgres: PostgresServer, tmp_path: Path
) -> None:
    database = await postgres.new_database()
    channels = servers(local)
    assert {shard_of(c.guild_id or 0, SHARDS) for c in channels} == set(range(SHARDS))
    placed = members(local, channels)
    env = {
        "STORAGE_DATABASE": database,
        "WAVESPEED_BASE_URL": sim.base_url,
        "WAVESPEED_API_KEY": SIM_KEY,
        "WAVESPEED_POLL_INTERVAL_S": "0.1",
        "WAVESPEED_RETRY_BASE_S": "0.1",
        "JOBS_MAX_CONCURRENT": str(CAP),
        "JOBS_LEASE_S": str(LEASE_S),
        "JOBS_STATUS_INTERVAL_S": "1",
        # A job whose submit the kill cut off before it reached WaveSpeed is never sent again:
        # once WaveSpeed has had time to show it, it ends as "nothing made, nothing charged".
        "JOBS_RECONCILE_WINDOW_S": "3",
        "JOBS_RECONCILE_INTERVAL_S": "0.5",
    }

    def process(name: str, *args: str, sync: bool = False) -> BotProcess:
        # `database` only places the process's working directory: the store is PostgreSQL.
        return BotProcess(local, database=tmp_path / name / "unused", sync=sync, env=env, args=args)

    gateways = [
        process(
            f"gateway{k}",
            "--role",
            "gateway",
            "--shards",
            str(k),
            "--shard-count",
            "2",
            sync=k == 0,
        )
        for k in range(SHARDS)
    ]
    workers = [process(f"worker{n}", "--role", "worker") for n in range(WORKERS)]
    everyone = [*gateways, *workers]
    try:
        # One at a time: each gateway's session is told from the other's by when it came.
        for gateway in gateways:
            await gateway.start()
            await gateway.wait_ready(timeout=60)
        await asyncio.gather(*(worker.start() for worker in workers))
        for worker in workers:
            await worker.wait_for_output(r"worker ready", timeout=60)

        prompts = [f"fleet job {n}: a lighthouse in fog" for n in range(JOBS)]
        killing = asyncio.create_task(kill_mid_batch(sim, workers, database))
        answers = []
        for n, prompt in enumerate(prompts):
            member, channel = placed[n % len(placed)]
            handle = await local.driver(member, channel).slash("imagine", prompt=prompt)
            answers.append(handle)
        # Every command answered by the gateway of its server's shard (a ❌ here is checked
        # below: only a job whose submit the kill cut off may end so).
        for handle in answers:
            await handle.response(timeout=30)
        killed, orphans = await asyncio.wait_for(killing, timeout=SETTLE_S)
        # It died holding jobs (sent, running or being posted): the others took them on.
        assert orphans, "the killed worker held no job"

        await settle(database)
        # Late duplicates would come now, if any.
        await asyncio.sleep(1.0)
        stopped = [await p.terminate() for p in everyone if p.running]
    except BaseException:
        # What each process said, for the failure's report (pytest shows stdout on failure).
        for p in everyone:
            await p.close()
            print(f"--- {p.args} (pid {p.pid}, exit {p.returncode}):\n{p.stderr[-20_000:]}")
        raise
    finally:
        for p in everyone:
            await p.close()
    assert all(code == 0 for code in stopped), stopped

    posts = Counter(prompt_of(m) for m in result_posts(local, channels))
    twice = {prompt: n for prompt, n in posts.items() if n > 1}
    assert not twice, f"posted more than once: {twice}"
    assert set(posts) <= set(prompts)
    for message in result_posts(local, channels):
        assert message.attachments, f"a result post without its image: {prompt_of(message)!r}"

    state = await sim.state()
    made = Counter(str(p["prompt"]) for p in state["predictions"]["items"])
    assert {p: n for p, n in made.items() if n > 1} == {}, "a job was sent twice"

    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch("SELECT id, status, worker, prompt FROM jobs")
    finally:
        await connection.close()
    assert len(rows) == JOBS
    status = {str(row["prompt"]): str(row["status"]) for row in rows}
    # Each job: delivered (one post, one prediction), or never sent because the kill cut its
    # submit off before WaveSpeed had it (no prediction, nothing billed, the member told why).
    # Anything else is lost.
    delivered = {p for p in prompts if posts[p] == 1 and status[p] == "delivered"}
    never_sent = {
        p
        for p, handle in zip(prompts, answers, strict=True)
        if status[p] == "failed"
        and p not in made
        and p not in posts
        and handle.original is not None
        and handle.original.content.startswith("❌")
    }
    lost = set(prompts) - delivered - never_sent
    assert not lost, {p: (status[p], posts[p], made[p]) for p in sorted(lost)}
    # Only the kill's own submits in flight may end unsent.
    assert len(never_sent) <= orphans.count("submitting"), (never_sent, orphans)
    assert set(made) == delivered
    assert state["predictions"]["created_total"] == len(delivered)
    assert state["billed"]["count"] == len(delivered)
    assert state["predictions"]["peak_open"] <= CAP, state["predictions"]["peak_open"]

    # Every job was driven by a worker: a gateway only stores them.
    worker_pids = {str(p.pid) for p in workers}
    drivers = Counter(str(row["worker"]).rsplit("-", 2)[-2] for row in rows)
    assert set(drivers) <= worker_pids, (drivers, worker_pids)
    survivors = [p for p in workers if p is not killed]
    # The dead worker's jobs were finished by the others.
    assert set(drivers) & {str(p.pid) for p in survivors}, drivers

    for p in [*gateways, *survivors]:
        assert "Traceback" not in p.stderr, p.stderr
    # Each process knows Discord's rate limits only from its own answers: a bucket another
    # process emptied (a channel's 5 posts in 5 s, the bot's 50 requests a second) is found by
    # a 429, then waited out as told. That is a fleet's cost without a shared rate limiter,
    # and stays small; anything else is a fault.
    violations = local.violations.clear()
    crossed = [v for v in violations if v.kind == "rate_limit"]
    assert [v for v in violations if v not in crossed] == []
    assert len(crossed) <= max(2, JOBS // 10), [str(v) for v in crossed]
    print(
        f"fleet: {JOBS} jobs, {len(delivered)} delivered once, {len(never_sent)} never sent "
        f"(the kill cut their submit off), killed holding {Counter(orphans)}; "
        f"{len(crossed)} 429s of a bucket another process emptied "
        f"{dict(Counter(v.route for v in crossed))}"
    )


async def open_jobs(database: str) -> int:
    connection = await asyncpg.connect(database)
    try:
        count = await connection.fetchval(
            "SELECT COUNT(*) FROM jobs WHERE status = ANY($1::text[])",
            [str(s) for s in OPEN_STATUSES],
        )
    finally:
        await connection.close()
    return int(count)


async def settle(database: str) -> None:
    """Until the store holds no open job (each delivered or ended)."""
    try:
        async with asyncio.timeout(SETTLE_S):
            # Other processes change the store: there is no event here to wait on.
            while await open_jobs(database):  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    except TimeoutError:
        left = await open_jobs(database)
        raise TimeoutError(f"{left} jobs still open after {SETTLE_S:g}s") from None


async def kill_mid_batch(
    sim: SimulatorProcess, workers: list[BotProcess], database: str
) -> tuple[BotProcess, list[str]]:
    """SIGKILL the worker driving the most jobs once a third of them were sent; it and the
    statuses of the open jobs it held when it died."""
    connection = await asyncpg.connect(database)
    try:
        while True:
            state = await sim.state()
            rows = await connection.fetch(
                "SELECT worker, status FROM jobs WHERE status = ANY($1::text[])",
                [str(s) for s in OPEN_STATUSES],
            )
            held: dict[BotProcess, list[str]] = {
                worker: [str(r["status"]) for r in rows if f"-{worker.pid}-" in str(r["worker"])]
                for worker in workers
            }
            victim = max(workers, key=lambda worker: len(held[worker]))
            if held[victim] and state["predictions"]["created_total"] >= JOBS // 3:
                break
            await asyncio.sleep(0.05)
        assert victim.running, victim.stderr
        victim.send_signal(signal.SIGKILL)
        assert await victim.wait() == -signal.SIGKILL
    finally:
        await connection.close()
    return victim, held[victim]
