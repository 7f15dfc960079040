"""A fleet against one process: jobs per second and completion -> posted latency.

    python benchmarks/fleet.py [--jobs 100] [--members 25] [--latency 1.0] [--cap 8]
                               [--workers 1,2,4] [--quick]

The same jobs (`/imagine` from several members, all issued at once), on the same simulated
inference, through:

- one process (`bot.py`, the default role) on a SQLite store;
- one gateway (`--role gateway`) and 1, 2 and 4 workers (`--role worker`) on PostgreSQL.

Each configuration runs on a fresh local Discord (in this process, Discord's rate limits off:
one channel's pacing is not what is measured), a fresh simulator (a process of its own) and a
fresh store. Jobs per second: jobs / (first command -> last result post). Completion -> posted:
the simulator's completion of a prediction -> the local Discord creating its result post.
WaveSpeed's cap (`--cap`, JOBS_MAX_CONCURRENT) holds across the fleet, so with inference
taking `--latency` seconds no configuration can pass cap / latency jobs per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults.harness import RESULT_BUTTON, poll_until  # noqa: E402
from tests.faults.simulator import SimulatorProcess  # noqa: E402
from tests.local_discord import BotProcess, LocalDiscord, LocalDiscordConfig, User  # noqa: E402
from tests.postgres import PostgresServer, postgres_server  # noqa: E402

SIM_KEY = "fleet-bench-key"


@dataclass(frozen=True)
class Outcome:
    name: str
    jobs: int
    wall_s: float
    latencies: list[float]
    peak_open: int

    @property
    def per_s(self) -> float:
        return self.jobs / self.wall_s

    def row(self) -> str:
        return (
            f"| {self.name} | {self.per_s:.2f} | {ms(statistics.median(self.latencies))} | "
            f"{ms(percentile(self.latencies, 90))} | {self.peak_open} |"
        )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def members(local: LocalDiscord, count: int) -> list[User]:
    found = []
    for number in range(count):
        user = local.state.add_user(f"member{number}")
        local.state.add_member(local.guild, user)
        found.append(user)
    return found


@contextlib.asynccontextmanager
async def processes(
    local: LocalDiscord, workdir: Path, env: dict[str, str], workers: int
) -> AsyncIterator[None]:
    """The bot's processes, ready: one alone (workers == 0), else a gateway and `workers`."""
    if workers == 0:
        started = [BotProcess(local, database=workdir / "jobs.sqlite3", sync=True, env=env)]
    else:
        gateway = ["--role", "gateway", "--shards", "0", "--shard-count", "1"]
        started = [BotProcess(local, database=workdir / "g", sync=True, env=env, args=gateway)]
        started += [
            BotProcess(local, database=workdir / f"w{n}" / "x", env=env, args=["--role", "worker"])
            for n in range(workers)
        ]
    try:
        for process in started:
            await process.start()
        await started[0].wait_ready(timeout=60)
        for process in started[1:]:
            await process.wait_for_output("worker ready", timeout=60)
        yield
    finally:
        for process in started:
            await process.close()
        for number, process in enumerate(started):
            (workdir / f"process{number}.log").write_text(process.stderr)
            if "Traceback" in process.stderr:
                print(f"{workdir.name}: process {number} logged a traceback", file=sys.stderr)


async def measure(
    name: str,
    args: argparse.Namespace,
    workdir: Path,
    *,
    workers: int,
    database: str | None,
) -> Outcome:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    config = LocalDiscordConfig(
        check_own_answers=False,
        rate_limits_off="measures the bot's own time, not one channel's pacing",
    )
    sim_args = ["--max-concurrent", "5000"]
    async with (
        LocalDiscord(config) as local,
        SimulatorProcess(api_key=SIM_KEY, latency_s=args.latency, args=sim_args) as sim,
    ):
        env = {
            "WAVESPEED_BASE_URL": sim.base_url,
            "WAVESPEED_API_KEY": SIM_KEY,
            "JOBS_MAX_CONCURRENT": str(args.cap),
            # INFO: a worker says it is ready in an INFO line.
            "LOGGING_LEVEL": "INFO",
        }
        if database is not None:
            env["STORAGE_DATABASE"] = database
        people = members(local, args.members)
        prompts = [f"{name} #{n}: a lighthouse in fog" for n in range(args.jobs)]
        async with processes(local, workdir, env, workers):
            started = time.time()
            await asyncio.gather(
                *(
                    local.driver(people[n % len(people)]).slash("imagine", prompt=prompt)
                    for n, prompt in enumerate(prompts)
                )
            )

            def posted() -> dict[str, float] | None:
                found: dict[str, float] = {}
                for message in local.bot_messages(local.general):
                    if message.embeds and any(
                        c.startswith(RESULT_BUTTON) for c in message.custom_ids
                    ):
                        prompt = str(message.embeds[0].get("description", ""))
                        found.setdefault(prompt, message.created_at)
                return found if all(p in found for p in prompts) else None

            posts = await poll_until(
                posted, timeout=120 + args.jobs * args.latency, what="every result", interval=0.1
            )
            state = await sim.state()
    predictions = state["predictions"]
    ended = {str(p["prompt"]): float(p["ended_at"]) for p in predictions["items"]}
    return Outcome(
        name=name,
        jobs=args.jobs,
        wall_s=max(posts.values()) - started,
        latencies=[posts[p] - ended[p] for p in prompts],
        peak_open=int(predictions["peak_open"]),
    )


async def run(args: argparse.Namespace, workdir: Path) -> list[Outcome]:
    outcomes = [
        await measure("1 process, SQLite", args, workdir / "single", workers=0, database=None)
    ]
    server: PostgresServer
    with postgres_server() as server:
        for count in args.workers:
            name = f"gateway + {count} worker{'s' if count > 1 else ''}, PostgreSQL"
            database = await server.new_database()
            outcomes.append(
                await measure(
                    name, args, workdir / f"fleet{count}", workers=count, database=database
                )
            )
    return outcomes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="jobs per configuration")
    parser.add_argument("--members", type=int, default=25, help="members issuing them")
    parser.add_argument("--latency", type=float, default=1.0, help="simulated inference, s")
    parser.add_argument("--cap", type=int, default=8, help="JOBS_MAX_CONCURRENT, fleet-wide")
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2, 4],
        help="worker counts to run, comma-separated",
    )
    parser.add_argument("--quick", action="store_true", help="20 jobs: a smoke run")
    parser.add_argument("--keep", type=Path, help="keep every process's log in this directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.members = 20, 10
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as scratch:
        workdir = args.keep or Path(scratch)
        outcomes = asyncio.run(run(args, workdir))
    print(
        f"{args.jobs} /imagine jobs from {args.members} members, {args.latency:g} s inference, "
        f"WaveSpeed cap {args.cap} (at most {args.cap / args.latency:.1f} jobs/s)\n"
    )
    print("| configuration | jobs/s | completion -> posted p50 | p90 | peak open |")
    print("|---|---|---|---|---|")
    for outcome in outcomes:
        print(outcome.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
