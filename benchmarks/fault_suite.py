"""The end-to-end fault suite at full size: every paid image delivered exactly once?

    python benchmarks/fault_suite.py [--commands 16] [--only NAME ...] [--quick] [--seed 1]

Runs the scenarios of `tests/faults/scenarios.py` one after the other, each against a
fresh local Discord, a fresh WaveSpeed simulator process and `bot.py` as a process of its own
(killed and restarted where the scenario says), with the FULL timings (a 20 s WaveSpeed outage,
Send Messages withheld for 10 s, a 30 s job deadline for the stuck image...). Prints a markdown
table (scenario x commands, delivered, clear errors, lost, paid-undelivered, billed twice,
duplicates, truncated, SIGTERM exits, tracebacks) with totals, then what went wrong and what
happened in each scenario. Exits 1 if any scenario lost a job, left a paid image undelivered,
billed or posted one twice, posted a truncated image, logged a traceback, took more than 10 s
or a non-zero code to stop on SIGTERM, or did what real Discord refuses.

`make faults` runs it; `tests/test_fault_suite.py` runs every scenario small in the default
suite.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults.harness import ScenarioResult, run_scenario  # noqa: E402
from tests.faults.scenarios import FULL, QUICK, SCENARIOS, markdown_table  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--commands", type=int, default=16, help="/edit commands per scenario (default 16)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[s.name for s in SCENARIOS],
        metavar="NAME",
        help="run only this scenario (repeatable): " + ", ".join(s.name for s in SCENARIOS),
    )
    parser.add_argument(
        "--quick", action="store_true", help="the default suite's short timings instead of FULL"
    )
    parser.add_argument("--seed", type=int, default=1, help="the simulator's fault seed")
    parser.add_argument("--verbose", action="store_true", help="log the harness and the bot")
    return parser.parse_args(argv)


async def run_all(args: argparse.Namespace, workdir: Path) -> list[ScenarioResult]:
    timing = QUICK if args.quick else FULL
    results = []
    for scenario in SCENARIOS:
        if args.only and scenario.name not in args.only:
            continue
        print(f"running {scenario.name}: {scenario.faults}...", file=sys.stderr, flush=True)
        result = await run_scenario(
            scenario,
            commands=args.commands,
            timing=timing,
            workdir=workdir / scenario.name,
            seed=args.seed,
        )
        print(f"  {result.wall_s:.0f} s: {', '.join(result.failures) or 'clean'}", file=sys.stderr)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The expected refusals (403s while a permission is withheld) are logged as warnings.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR)
    command = shlex.join(["python", "benchmarks/fault_suite.py", *sys.argv[1:]])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fault-suite-") as workdir:
        results = asyncio.run(run_all(args, Path(workdir)))
    elapsed = time.monotonic() - started

    print(
        f"Produced by: `{command}` ({'QUICK' if args.quick else 'FULL'} timings, {elapsed:.0f} s)\n"
    )
    print(markdown_table(results))
    total = {
        name: sum(getattr(r, name) for r in results)
        for name in (
            "commands",
            "delivered",
            "clear_errors",
            "lost",
            "paid_undelivered",
            "billed_twice",
            "duplicates",
            "truncated",
        )
    }
    print(
        "\nTotals: "
        + ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in total.items())
    )
    print("\nScenarios:\n")
    for result in results:
        print(f"- {result.name} ({result.faults}): {', '.join(result.failures) or 'clean'}")
        for line in result.problems + result.violations:
            print(f"    - problem: {line}")
        for line in result.notes:
            print(f"    - {line}")
    failed = [r.name for r in results if r.failures]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
