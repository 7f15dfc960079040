"""The fault scenarios, their two sizes (QUICK for the default suite, FULL for the benchmark)
and the table that sums them up.

Each scenario is faults on one side (WaveSpeed, Discord, or the bot process itself) while
members run /edit; the harness counts what came of every command (see `harness`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from tests.local_discord import Perm

from .harness import (
    FaultRun,
    Scenario,
    ScenarioResult,
    Timing,
    created_within,
)

QUICK = Timing(
    latency_s=0.5,
    pace_s=0.1,
    outage_s=5.0,
    permission_loss_s=2.0,
    forced_429s=6,
    retry_after_s=0.25,
    submit_answer_delay_s=1.5,
    shutdown_grace_s=0.5,
    long_submit_answer_s=2.5,
    stuck_deadline_s=4.0,
    reconcile_window_s=3.0,
    poll_interval_s=0.2,
    retry_max_s=0.5,
    breaker_probe_s=0.5,
    identify_interval_s=1.0,
    settle_s=45.0,
)
FULL = Timing(
    latency_s=2.0,
    pace_s=0.5,
    outage_s=20.0,
    permission_loss_s=10.0,
    forced_429s=8,
    retry_after_s=1.0,
    submit_answer_delay_s=3.0,
    # The bot's default grace, and a submit answer 2 s longer than it.
    shutdown_grace_s=8.0,
    long_submit_answer_s=10.0,
    stuck_deadline_s=30.0,
    reconcile_window_s=10.0,
    poll_interval_s=0.5,
    retry_max_s=2.0,
    breaker_probe_s=2.0,
    identify_interval_s=5.0,
    settle_s=240.0,
)

# -- the plans: what happens while the commands come in ----------------------------------------


async def no_action(run: FaultRun) -> None:
    """The faults are all in the simulator's flags."""


async def outage(run: FaultRun) -> None:
    # Once the first job is at WaveSpeed: it waits through the outage, the next ones are refused.
    await run.sim_until(lambda s: s["predictions"]["created_total"] >= 1, what="a first job")
    await run.sim.outage(run.timing.outage_s)
    run.notes.append(f"outage of {run.timing.outage_s:g}s after {run.issued} commands")


async def discord_refusals(run: FaultRun) -> None:
    local = run.local
    # The first result posts meet 429s (more than discord.py retries on its own)...
    local.fail_message_posts(
        local.general,
        times=run.timing.forced_429s,
        status=429,
        retry_after=run.timing.retry_after_s,
    )
    # ...and once one got through, Send Messages is taken away for a while.
    await run.sim_until(lambda s: s["billed"]["count"] >= 1, what="a first finished job")
    local.revoke_bot_permission(local.general, Perm.SEND_MESSAGES)
    await asyncio.sleep(run.timing.permission_loss_s)
    local.restore_bot_permissions(local.general)
    hits = len(local.rate_limits.hits)
    run.notes.append(
        f"Send Messages withheld for {run.timing.permission_loss_s:g}s; {hits} forced 429s"
    )


async def sigkill_in_delivery_window(run: FaultRun) -> None:
    await run.kill_at_result_post(timeout=run.timing.settle_s)


async def sigkill_during_submit(run: FaultRun) -> None:
    held = run.timing.submit_answer_delay_s - 0.5
    await run.commands_issued(2)
    async with run.bot_down():
        # A prediction exists and its submit's answer is still held back: the POST is in flight.
        state = await run.sim_until(
            lambda s: any(created_within(p, held) for p in s["predictions"]["items"]),
            what="a submit in flight",
        )
        await run.kill()
        in_flight = [p for p in state["predictions"]["items"] if created_within(p, held)]
        run.notes.append(f"SIGKILL with {len(in_flight)} submit answer(s) held back")
        await run.restart()


async def sigterm_mid_batch(run: FaultRun) -> None:
    # Sent while the answer is still held: the bot waits for it within its (default) grace.
    await _sigterm_with_submit_in_flight(run, run.timing.submit_answer_delay_s - 0.5)


async def sigterm_past_grace(run: FaultRun) -> None:
    # Sent so early that the answer comes after the grace: the bot cuts the submit off.
    timing = run.timing
    await _sigterm_with_submit_in_flight(
        run, timing.long_submit_answer_s - timing.shutdown_grace_s - 0.5
    )


async def _sigterm_with_submit_in_flight(run: FaultRun, within_s: float) -> None:
    """SIGTERM with half the commands in, less than `within_s` after a submit POST reached
    the simulator (which holds its answer back)."""
    await run.commands_issued(len(run.commands) // 2)
    async with run.bot_down():
        state = await run.sim_until(
            lambda s: any(created_within(p, within_s) for p in s["predictions"]["items"]),
            what="a submit in flight",
        )
        await run.terminate()
        code, seconds = run.sigterms[-1]
        # A submit that finished within the grace left its job RUNNING; one cut off, SUBMITTING.
        submitting = run.store_counts()["submitting"]
        run.facts["submitting after SIGTERM"] = submitting
        run.notes.append(
            f"SIGTERM after {run.issued} commands, with {_count_running(state)} jobs at "
            f"WaveSpeed and a submit answer held back; exit {code} in {seconds:.1f}s; "
            f"{submitting} jobs left SUBMITTING"
        )
        await run.restart()


def _count_running(state: dict[str, Any]) -> int:
    return sum(1 for p in state["predictions"]["items"] if p["status"] in ("created", "processing"))


def scenarios() -> list[Scenario]:
    return [
        Scenario(
            "wavespeed-503",
            "503 on 20 % of submits and result GETs",
            no_action,
            simulator_args=lambda t: [
                "--fault-rate",
                "unavailable@submit=0.2",
                "--fault-rate",
                "unavailable@result=0.2",
            ],
        ),
        Scenario(
            "drops-malformed",
            "dropped connections and malformed JSON on result GETs and downloads (15 % each)",
            no_action,
            simulator_args=lambda t: [
                arg
                for fault in (
                    "drop@result",
                    "malformed@result",
                    "drop@download",
                    "malformed@download",
                )
                for arg in ("--fault-rate", f"{fault}=0.15")
            ],
        ),
        Scenario(
            "truncated",
            "30 % of downloads cut short (200, matching Content-Length)",
            no_action,
            simulator_args=lambda t: ["--fault-rate", "truncated@download=0.3"],
        ),
        Scenario("outage", "WaveSpeed answers 503 to everything for a while", outage),
        Scenario(
            "discord-429-perm",
            "forced 429s on result posts, then Send Messages withheld for a while",
            discord_refusals,
            withholds_permissions=True,
        ),
        Scenario(
            "sigkill-delivery",
            "SIGKILL as a result post lands (before its answer), then restart",
            sigkill_in_delivery_window,
        ),
        Scenario(
            "sigkill-submit",
            "SIGKILL while a submit POST's answer is held back, then restart",
            sigkill_during_submit,
            simulator_args=lambda t: ["--submit-answer-delay", str(t.submit_answer_delay_s)],
        ),
        Scenario(
            "sigterm-batch",
            "SIGTERM mid-batch with a submit POST in flight (within the grace), then restart",
            sigterm_mid_batch,
            simulator_args=lambda t: ["--submit-answer-delay", str(t.submit_answer_delay_s)],
        ),
        Scenario(
            "sigterm-grace",
            "SIGTERM mid-batch with a submit POST in flight past the shutdown grace, then restart",
            sigterm_past_grace,
            # Every submit is that slow here: four at once keep the run short.
            simulator_args=lambda t: [
                "--submit-answer-delay",
                str(t.long_submit_answer_s),
                "--max-concurrent",
                "4",
            ],
            bot_env=lambda t: {
                "JOBS_SHUTDOWN_GRACE_S": str(t.shutdown_grace_s),
                "JOBS_MAX_CONCURRENT": "4",
            },
        ),
        Scenario(
            "stuck",
            "one member's prediction never finishes, beside other members' jobs",
            no_action,
            bot_env=lambda t: {"JOBS_JOB_DEADLINE_S": str(t.stuck_deadline_s)},
            # WaveSpeed ends a sync-mode wait on its own clock (the simulator's default is
            # 30 s); held to the deadline here, the stuck job is given up at its deadline
            # rather than when the wait ends, so the small run does not sit out 30 s.
            simulator_args=lambda t: ["--sync-wait", str(t.stuck_deadline_s)],
            stuck=True,
        ),
    ]


SCENARIOS = scenarios()

# -- the table ---------------------------------------------------------------------------------

COLUMNS = (
    "scenario",
    "commands",
    "delivered",
    "clear errors",
    "lost",
    "paid-undelivered",
    "billed twice",
    "duplicates",
    "truncated",
    "SIGTERM exits (code 0 within 10 s)",
    "tracebacks",
    "wall s",
)


def _sigterm_cell(results: Sequence[ScenarioResult]) -> str:
    exits = [e for r in results for e in r.sigterms]
    ok = sum(1 for code, seconds in exits if code == 0 and seconds <= 10)
    slowest = max((seconds for _, seconds in exits), default=0.0)
    return f"{ok}/{len(exits)} (slowest {slowest:.1f} s)"


def _row(name: str, results: Sequence[ScenarioResult]) -> list[str]:
    def total(attribute: str) -> str:
        return str(sum(getattr(r, attribute) for r in results))

    return [
        name,
        total("commands"),
        total("delivered"),
        total("clear_errors"),
        total("lost"),
        total("paid_undelivered"),
        total("billed_twice"),
        total("duplicates"),
        total("truncated"),
        _sigterm_cell(results),
        total("tracebacks"),
        f"{sum(r.wall_s for r in results):.0f}",
    ]


def markdown_table(results: Sequence[ScenarioResult]) -> str:
    """One row per scenario and a total row, as markdown."""
    rows = [_row(r.name, [r]) for r in results]
    rows.append(_row("**total**", results))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
