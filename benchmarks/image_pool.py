"""Image work on a thread pool against a process pool: event-loop lag and throughput (issue 8).

    python benchmarks/image_pool.py [--images 64] [--workers 2] [--rounds 3]

Each round runs N concurrent `prepare_input` calls on 1 MP PNGs through an `Intake` built on
each kind of executor (same number of workers, started before the round and warmed up), while a
sampler task sleeps 10 ms and records how much each sleep overshoots. Printed: medians over the
rounds of the lag p50/p99 and of the images prepared per second.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.images import prepare_input  # noqa: E402
from services.intake import Intake  # noqa: E402
from services.settings import LimitSettings  # noqa: E402
from tests.images import photo_png  # noqa: E402

PERIOD_S = 0.010


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def sample_lag(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(PERIOD_S)
        lags.append((loop.time() - before - PERIOD_S) * 1000)


async def one_round(executor: Executor, workers: int, images: list[bytes]) -> tuple[float, ...]:
    intake = Intake(
        LimitSettings(intake_commands=len(images), image_preparations=workers),
        executor=executor,
    )
    # Workers start (and a process pool's import Pillow) before anything is measured.
    await asyncio.gather(*(prepare_input(images[0], intake=intake) for _ in range(workers)))
    lags: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_lag(lags, stop))
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    await asyncio.gather(*(prepare_input(data, intake=intake) for data in images))
    elapsed = time.perf_counter() - started
    stop.set()
    await sampler
    return percentile(lags, 50), percentile(lags, 99), len(images) / elapsed


def executors(workers: int) -> dict[str, Callable[[], Executor]]:
    # forkserver: forking a process that runs threads can deadlock, and the bot has threads.
    context = multiprocessing.get_context("forkserver")
    return {
        "threads": lambda: ThreadPoolExecutor(max_workers=workers),
        "processes": lambda: ProcessPoolExecutor(max_workers=workers, mp_context=context),
    }


async def main_async(args: argparse.Namespace) -> None:
    images = [photo_png()] * args.images
    kib = statistics.mean(len(d) for d in images) / 1024
    print(f"{args.images} concurrent prepare_input calls on 1024x1024 PNGs (~{kib:.0f} KiB),")
    print(f"{args.workers} workers, medians of {args.rounds} rounds; lag = 10 ms sleep overshoot")
    results: dict[str, list[tuple[float, ...]]] = {}
    for _ in range(args.rounds):
        # Interleaved, so a noisy moment on the machine does not land on one kind only.
        for name, make in executors(args.workers).items():
            executor = make()
            try:
                results.setdefault(name, []).append(await one_round(executor, args.workers, images))
            finally:
                executor.shutdown(wait=True)
    print(f"{'executor':<10} {'lag p50':>9} {'lag p99':>9} {'images/s':>9}")
    for name, rounds in results.items():
        p50, p99, rate = (statistics.median(r[i] for r in rounds) for i in range(3))
        print(f"{name:<10} {p50:>6.1f} ms {p99:>6.1f} ms {rate:>9.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
