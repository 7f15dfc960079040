"""Throughput of the WaveSpeed client against the simulator (zero latency), N jobs at once.

    python benchmarks/client_throughput.py [--jobs 1000] [--mode sync|poll|base64] [--rounds 3]

The simulator runs in its own process so the figures are the client's alone: jobs per second,
HTTP requests per job, and the client process's peak RSS. Each round is a fresh batch of N
concurrent jobs; medians over the rounds are printed, with every round's figures beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import aiohttp
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.settings import WaveSpeedSettings  # noqa: E402
from services.wavespeed import InputImage, WaveSpeedClient, model_for_path  # noqa: E402
from tests.images import make_png  # noqa: E402

KEY = "bench-key"
MODES = {
    # mode: (model path, client settings, sync mode)
    "sync": ("flux-kontext-dev", {}, True),
    "base64": ("flux-kontext-dev", {"base64_output": True}, True),
    "poll": ("flux-kontext-pro", {}, False),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def simulator_process(port: int) -> Iterator[str]:
    command = [
        sys.executable,
        "-m",
        "services.simulator",
        "--port",
        str(port),
        "--latency",
        "0",
        "--api-key",
        KEY,
        "--max-output-side",
        "256",
        "--max-concurrent",
        "100000",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the simulator did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def one_round(base_url: str, mode: str, jobs: int) -> SimpleNamespace:
    path, overrides, sync = MODES[mode]
    spec = model_for_path(path)
    settings = WaveSpeedSettings(
        api_key=SecretStr(KEY),
        base_url=base_url,
        poll_interval_s=0.05,
        submit_timeout_s=300,
        result_timeout_s=60,
        download_timeout_s=60,
        max_connections=200,
        **overrides,
    )
    requests = 0

    async def count(*_: object) -> None:
        nonlocal requests
        requests += 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(count)
    connector = aiohttp.TCPConnector(limit=settings.max_connections)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        client = WaveSpeedClient(session, settings, simulated=True)
        image = InputImage(make_png((96, 64)))
        request = client.prepare(spec, prompt="make it a watercolor", image=image)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(client.generate(spec, request, sync=sync) for _ in range(jobs))
        )
        elapsed = time.perf_counter() - started
    assert all(result.images for result in results)
    return SimpleNamespace(
        jobs_per_s=jobs / elapsed, requests_per_job=requests / jobs, seconds=elapsed
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--mode", choices=sorted(MODES), default="sync")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with simulator_process(free_port()) as base_url:
        rounds = [
            asyncio.run(one_round(base_url, args.mode, args.jobs)) for _ in range(args.rounds)
        ]
    rates = [r.jobs_per_s for r in rounds]
    per_job = [r.requests_per_job for r in rounds]
    print(
        f"mode={args.mode} model={MODES[args.mode][0]} jobs={args.jobs} "
        f"in flight at once, rounds={args.rounds}"
    )
    print(
        f"jobs/s            median {statistics.median(rates):8.1f}   "
        f"rounds {', '.join(f'{r:.1f}' for r in rates)}"
    )
    print(
        f"requests per job  median {statistics.median(per_job):8.2f}   "
        f"rounds {', '.join(f'{r:.2f}' for r in per_job)}"
    )
    print(f"client peak RSS   {peak_rss_mb():8.1f} MB")


if __name__ == "__main__":
    main()
