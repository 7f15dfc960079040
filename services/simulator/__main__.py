"""Run the WaveSpeed simulator standalone: `python -m services.simulator --port 8080`.

Point a WaveSpeed client (the bot's dry-run mode, curl, the official SDK) at the logged base URL.
Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from decimal import Decimal, InvalidOperation

from .app import run_simulator
from .config import FAULT_ROUTES, Fault, SimulatorConfig

log = logging.getLogger("services.simulator")


def _fault_rate(text: str) -> tuple[Fault, str | None, float]:
    """NAME=P or NAME@ROUTE=P: (fault, route or None for all its routes, probability)."""
    target, sep, value = text.partition("=")
    name, at, route_text = target.partition("@")
    route = route_text.strip().lower() if at else None
    try:
        fault = Fault(name.strip().lower())
        rate = float(value)
    except ValueError:
        fault = None
    if not sep or fault is None or not 0.0 <= rate <= 1.0:
        choices = ", ".join(f.value for f in Fault)
        raise argparse.ArgumentTypeError(
            f"expected NAME=P or NAME@ROUTE=P with P between 0 and 1 and NAME one of: {choices}"
        )
    if route is not None and route not in fault.routes:
        raise argparse.ArgumentTypeError(
            f"{fault} applies to the routes {', '.join(sorted(fault.routes))}, not {route!r}"
        )
    return fault, route, rate


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds (>= 0), got {text!r}")
    return value


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of the standalone simulator."""
    parser = argparse.ArgumentParser(
        prog="python -m services.simulator",
        description="A local simulator of WaveSpeed's FLUX.1 Kontext prediction API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument(
        "--latency", type=float, default=3.0, help="simulated inference seconds per job (default 3)"
    )
    parser.add_argument(
        "--sync-wait",
        type=float,
        default=30.0,
        help="seconds a sync-mode submit waits before answering 5004",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="accepted API key (repeatable; none given: any key is accepted)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=2,
        help="tasks one key runs at once; more wait (default 2, WaveSpeed's entry tier)",
    )
    parser.add_argument(
        "--images-per-minute",
        type=int,
        default=None,
        help="per-key output images per minute (default: unlimited)",
    )
    parser.add_argument(
        "--fault-rate",
        action="append",
        type=_fault_rate,
        default=[],
        metavar="NAME[@ROUTE]=P",
        help=(
            "probability of a fault per request, on every route it applies to or only on ROUTE "
            f"(one of {', '.join(sorted(FAULT_ROUTES))}), e.g. server_error=0.05, "
            "drop@result=0.1, truncated@download=0.1 (repeatable; a routed rate replaces the "
            "unrouted one on its route)"
        ),
    )
    parser.add_argument(
        "--submit-answer-delay",
        type=_seconds,
        default=0.0,
        metavar="S",
        help=(
            "a submit creates its prediction, then answers S seconds later "
            "(per request: header X-Simulator-Answer-Delay)"
        ),
    )
    parser.add_argument(
        "--outage-at",
        type=_seconds,
        default=None,
        metavar="S",
        help=(
            "S seconds after start, every /api/ route and download answers 503 for "
            '--outage-for seconds (any time: POST /_simulator/outage {"seconds": N})'
        ),
    )
    parser.add_argument(
        "--outage-for",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="length of the --outage-at outage in seconds",
    )
    parser.add_argument(
        "--max-output-side",
        type=int,
        default=1024,
        help="long side of rendered outputs, at most (default 1024)",
    )
    parser.add_argument(
        "--balance",
        type=_decimal,
        default=None,
        help="account balance in US dollars (default: unlimited)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault and seed draws")
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """The SimulatorConfig the parsed command line describes."""
    return SimulatorConfig(
        api_keys=frozenset(args.api_keys) if args.api_keys else None,
        latency_s=args.latency,
        sync_wait_s=args.sync_wait,
        max_concurrent_per_key=args.max_concurrent,
        images_per_minute_per_key=args.images_per_minute,
        fault_rates={fault: rate for fault, route, rate in args.fault_rate if route is None},
        route_fault_rates={
            (fault, route): rate for fault, route, rate in args.fault_rate if route is not None
        },
        submit_answer_delay_s=args.submit_answer_delay,
        outage_at_s=args.outage_at,
        outage_for_s=args.outage_for,
        max_output_side=args.max_output_side,
        balance=args.balance,
        rng_seed=args.seed,
    )


async def _serve(config: SimulatorConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    # SIGTERM (docker stop, systemd) ends it as cleanly as Ctrl-C, which cancels this task.
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows loops
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with run_simulator(config, host=host, port=port):
        await stop.wait()
    log.info("WaveSpeed simulator stopped")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise SystemExit(f"invalid settings: {exc}") from None
    # asyncio.run turns Ctrl-C into a cancellation, so run_simulator still cleans up.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, args.host, args.port))


if __name__ == "__main__":
    main()
