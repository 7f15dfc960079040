"""One fault scenario, end to end, with real processes; and what came of every command.

    result = await run_scenario(scenario, commands=6, timing=QUICK, workdir=tmp_path)
    assert result.lost == result.duplicates == 0

A run starts a local Discord (in this process), the WaveSpeed simulator (a process of its own,
`SimulatorProcess`) and `bot.py` (a process of its own, `BotProcess`) on a fresh job store. It
issues `/edit` commands from several members, one unique prompt each, at a steady pace, while
the scenario's plan applies its faults: SIGKILL or SIGTERM at moments found by watching the
simulator and the local Discord, then a new bot process on the same job store; outages; Discord
429s and a lost permission. Then it waits until every command has an outcome and the job store
has no open job (or the run's deadline passes), stops the bot with SIGTERM, and counts:

- delivered: exactly one result post shows the command's prompt;
- clear error: the member was told why with a ❌ (the command's own ephemeral answer, or a DM);
- lost: neither;
- paid but undelivered: the simulator completed (billed) a prediction for the prompt, yet no
  result post shows it;
- billed twice: the simulator created more than one prediction for a prompt (each is a charge);
- duplicates: result posts beyond the first for a prompt (deleted ones count: members saw them);
- truncated: a posted attachment that does not fully decode with Pillow.

Each bot process's SIGTERM exit (code 0 within 10 s expected), the tracebacks in its stderr and
whatever the local Discord recorded as refused by real Discord are kept too.

What a fault never hits: a command between its acknowledgement and the bot storing its job.
A bot killed there has nothing stored, so no design could resume it (the member sees Discord's
"did not respond"); the harness holds its kills until the command's answer shows the job (see
`FaultRun.bot_down`). Everything after that point is fair game.
"""

# Waits take a `timeout`: a run must fail, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import logging
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from services.storage import OPEN_STATUSES
from tests.images import make_png
from tests.local_discord import (
    BotProcess,
    InteractionHandle,
    LocalDiscord,
    LocalDiscordConfig,
    Message,
    User,
)
from tests.local_discord.models import ChannelType

from .simulator import SimulatorProcess

log = logging.getLogger(__name__)

T = TypeVar("T")

SIM_KEY = "fault-suite-key"
MEMBERS = ("alice", "bob", "carol", "dave")
# The member whose one job sticks, beside everyone else's.
STUCK_MEMBER = "erin"
STUCK_TRIGGER = "[stuck]"
RESULT_BUTTON = "kontext:reroll:"
# A graceful stop must end the process this soon (systemd and Docker kill after 10 s).
SIGTERM_LIMIT_S = 10.0
# Discord's "Missing Permissions", answered to the bot's posts while a scenario withholds one.
MISSING_PERMISSIONS = 50013


@dataclass(frozen=True)
class Timing:
    """How long things take in a run: short for the default suite, closer to life for the
    benchmark. Every setting here reaches the bot as a SECTION_KEY variable or the simulator
    as a flag."""

    # Simulated inference per image, and the pause between two commands.
    latency_s: float
    pace_s: float
    # The scenarios' faults.
    outage_s: float
    permission_loss_s: float
    forced_429s: int
    retry_after_s: float
    submit_answer_delay_s: float
    # JOBS_SHUTDOWN_GRACE_S of the sigterm-grace scenario, and a submit answer held back
    # longer than that (the others keep the default grace).
    shutdown_grace_s: float
    long_submit_answer_s: float
    # JOBS_JOB_DEADLINE_S of the stuck scenario (the others keep the default).
    stuck_deadline_s: float
    reconcile_window_s: float
    # The bot's patience settings.
    poll_interval_s: float
    retry_max_s: float
    breaker_probe_s: float
    # The local Discord's IDENTIFY spacing: Discord's is 5 s, which a quick restart waits out.
    identify_interval_s: float
    # After the last command and fault, how long the run may take to settle at most.
    settle_s: float
    # How long a command may wait for its first answer (the job stored, or an error).
    answer_timeout_s: float = 20.0


@dataclass
class Command:
    number: int
    member: User
    prompt: str
    handle: InteractionHandle | None = None


@dataclass
class ScenarioResult:
    name: str
    faults: str
    commands: int
    delivered: int = 0
    clear_errors: int = 0
    lost: int = 0
    paid_undelivered: int = 0
    billed_twice: int = 0
    duplicates: int = 0
    truncated: int = 0
    # (exit code, seconds) of every SIGTERM, the final stop included; None: it had to be killed.
    sigterms: list[tuple[int | None, float]] = field(default_factory=list)
    sigkills: int = 0
    # Requests each simulator fault hit, by "fault@route".
    fault_hits: Counter[str] = field(default_factory=Counter)
    tracebacks: int = 0
    # What the local Discord recorded as refused by real Discord (expected ones taken out).
    violations: list[str] = field(default_factory=list)
    # prompt -> the ❌ its member read, for every command that ended in a clear error.
    errors: dict[str, str] = field(default_factory=dict)
    # One line per thing that went wrong, naming the command.
    problems: list[str] = field(default_factory=list)
    # What happened, for the report (when a kill landed, which errors members read).
    notes: list[str] = field(default_factory=list)
    # Counts a fault plan observed on the way, by name (e.g. jobs left SUBMITTING by a stop).
    facts: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def bad_sigterms(self) -> int:
        return sum(1 for code, seconds in self.sigterms if code != 0 or seconds > SIGTERM_LIMIT_S)

    @property
    def failures(self) -> list[str]:
        """The columns that must be zero and are not, e.g. ["lost=1", "duplicates=2"]."""
        counts = {
            "lost": self.lost,
            "paid-undelivered": self.paid_undelivered,
            "billed-twice": self.billed_twice,
            "duplicates": self.duplicates,
            "truncated": self.truncated,
            "bad-sigterm-exits": self.bad_sigterms,
            "tracebacks": self.tracebacks,
            "discord-violations": len(self.violations),
        }
        return [f"{name}={count}" for name, count in counts.items() if count]

    def describe(self) -> str:
        lines = [f"{self.name}: {', '.join(self.failures) or 'clean'}"]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  violation: {v}" for v in self.violations]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


FaultPlan = Callable[["FaultRun"], Coroutine[Any, Any, None]]


def _nothing(timing: Timing) -> Mapping[str, str]:
    return {}


def _no_args(timing: Timing) -> Sequence[str]:
    return ()


@dataclass(frozen=True)
class Scenario:
    name: str
    # What is done to the bot, one line for the table.
    faults: str
    plan: FaultPlan
    simulator_args: Callable[[Timing], Sequence[str]] = _no_args
    bot_env: Callable[[Timing], Mapping[str, str]] = _nothing
    # Whether the first command asks for an image that never finishes (by its own member).
    stuck: bool = False
    # Whether the bot's posts are refused for missing permissions on purpose (then expected).
    withholds_permissions: bool = False


# -- the run -----------------------------------------------------------------------------------


class FaultRun:
    """A running scenario: what its fault plan can do and watch. One per scenario."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        local: LocalDiscord,
        sim: SimulatorProcess,
        timing: Timing,
        database: Path,
        commands: Sequence[Command],
    ) -> None:
        self.scenario = scenario
        self.local = local
        self.sim = sim
        self.timing = timing
        self.database = database
        self.commands = list(commands)
        self.bots: list[BotProcess] = []
        self.sigterms: list[tuple[int | None, float]] = []
        self.sigkills = 0
        self.notes: list[str] = []
        self.facts: dict[str, int] = {}
        self.issued = 0
        # The result posts SIGKILLs landed on (see `kill_at_result_post`).
        self.killed_posts: list[Message] = []
        # Held while a command is being issued and until its answer shows; a kill takes it
        # first (see the module's docstring).
        self._issuing = asyncio.Lock()
        self._bot_up = asyncio.Event()
        self._image = make_png((96, 64), (40, 120, 200))
        self._env = self._bot_env()

    @property
    def bot(self) -> BotProcess:
        return self.bots[-1]

    def _bot_env(self) -> dict[str, str]:
        timing = self.timing
        env = {
            "WAVESPEED_BASE_URL": self.sim.base_url,
            "WAVESPEED_API_KEY": SIM_KEY,
            "WAVESPEED_POLL_INTERVAL_S": str(timing.poll_interval_s),
            "WAVESPEED_RETRY_BASE_S": "0.1",
            "WAVESPEED_RETRY_MAX_S": str(timing.retry_max_s),
            "JOBS_RECONCILE_WINDOW_S": str(timing.reconcile_window_s),
            "JOBS_RECONCILE_INTERVAL_S": "0.5",
            "JOBS_STATUS_INTERVAL_S": "1",
            "JOBS_BREAKER_PROBE_S": str(timing.breaker_probe_s),
        }
        env.update(self.scenario.bot_env(timing))
        return env

    # -- bot processes ------------------------------------------------------------------------

    async def start_bot(self, *, sync: bool = False) -> BotProcess:
        bot = BotProcess(self.local, database=self.database, sync=sync, env=self._env)
        self.bots.append(bot)
        await bot.start()
        await bot.wait_ready(timeout=60)
        self._bot_up.set()
        return bot

    async def kill(self) -> None:
        """SIGKILL the bot (inside `bot_down`)."""
        self._bot_up.clear()
        await self.bot.kill()
        self.sigkills += 1

    async def terminate(self) -> int | None:
        """SIGTERM the bot; its exit code and how long it took are recorded."""
        self._bot_up.clear()
        bot = self.bot
        started = time.monotonic()
        bot.send_signal(signal.SIGTERM)
        try:
            code: int | None = await bot.wait(timeout=3 * SIGTERM_LIMIT_S)
        except TimeoutError:
            await bot.kill()
            code = None
        self.sigterms.append((code, time.monotonic() - started))
        return code

    async def restart(self) -> None:
        """A new bot process on the same job store (inside `bot_down`)."""
        await self.start_bot()

    @contextlib.asynccontextmanager
    async def bot_down(self) -> AsyncIterator[None]:
        """No command is issued inside: kill, stop and restart the bot here."""
        async with self._issuing:
            self._bot_up.clear()
            try:
                yield
            finally:
                if self.bots and self.bot.running:
                    self._bot_up.set()

    async def kill_at_result_post(self, timeout: float) -> Message:
        """SIGKILL the bot the moment the local Discord creates a result post, before its
        answer leaves: the post is there, the bot never heard so. Then restart it."""
        fired: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        state = self.local.state

        def watch(event: str, data: dict[str, Any]) -> None:
            # Not while a command is on its way (see the module's docstring).
            if fired.done() or event != "MESSAGE_CREATE" or self._issuing.locked():
                return
            message = state.messages.get(int(data["id"]))
            if message is None or not _is_result(message, self.local):
                return
            self._bot_up.clear()
            pid = self.bot.pid
            assert pid is not None
            with contextlib.suppress(ProcessLookupError):  # it may have died on its own
                os.kill(pid, signal.SIGKILL)
            fired.set_result(message)

        state.subscribe(watch)
        message = await asyncio.wait_for(fired, timeout)
        self.killed_posts.append(message)
        self.sigkills += 1
        posted = len(self.result_posts())
        self.notes.append(
            f"SIGKILL as result post {posted} was created, {self.issued} commands issued"
        )
        async with self.bot_down():
            await self.bot.wait()
            await self.restart()
        return message

    # -- watching ---------------------------------------------------------------------------

    async def commands_issued(self, count: int, timeout: float = 60.0) -> None:
        wanted = min(count, len(self.commands))
        await poll_until(lambda: self.issued >= wanted, timeout=timeout, what=f"{wanted} commands")

    async def sim_until(
        self, predicate: Callable[[dict[str, Any]], bool], *, what: str, timeout: float = 60.0
    ) -> dict[str, Any]:
        """The simulator's state once `predicate` holds (polled every 50 ms)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            state = await self.sim.state()
            if predicate(state):
                return state
            if loop.time() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.05)

    def result_posts(self, *, include_deleted: bool = False) -> list[Message]:
        posts = self.local.bot_messages(self.local.general, include_deleted=include_deleted)
        return [m for m in posts if _is_result(m, self.local)]

    # -- commands ---------------------------------------------------------------------------

    async def issue_commands(self) -> None:
        for command in self.commands:
            while True:
                await self._bot_up.wait()
                async with self._issuing:
                    if not self._bot_up.is_set():
                        continue  # the bot went down while this waited for its turn
                    await self._issue(command)
                    break
            await asyncio.sleep(self.timing.pace_s)

    async def _issue(self, command: Command) -> None:
        driver = self.local.driver(command.member)
        command.handle = await driver.slash("edit", image=self._image, prompt=command.prompt)
        try:
            # Filled once the job is stored (its first status) or refused (a ❌).
            await command.handle.response(timeout=self.timing.answer_timeout_s)
        except TimeoutError:
            log.warning("command %d got no answer", command.number)
        self.issued += 1

    # -- outcomes ---------------------------------------------------------------------------

    def open_jobs(self) -> list[tuple[int, str, str]]:
        """(job id, status, prompt) of every job the store still works on."""
        if not self.database.exists():
            return []
        marks = ",".join("?" for _ in OPEN_STATUSES)
        with contextlib.closing(
            sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5)
        ) as db:
            rows = db.execute(
                f"SELECT id, status, prompt FROM jobs WHERE status IN ({marks})",
                [str(s) for s in OPEN_STATUSES],
            ).fetchall()
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def store_counts(self) -> Counter[str]:
        """How many jobs the store has in each status."""
        if not self.database.exists():
            return Counter()
        with contextlib.closing(
            sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5)
        ) as db:
            rows = db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return Counter({str(status): int(count) for status, count in rows})

    def store_statuses(self) -> dict[str, list[str]]:
        """prompt -> statuses of its jobs, for the report of a lost command."""
        if not self.database.exists():
            return {}
        with contextlib.closing(
            sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5)
        ) as db:
            rows = db.execute("SELECT id, status, prompt, error FROM jobs ORDER BY id").fetchall()
        found: dict[str, list[str]] = {}
        for job_id, status, prompt, error in rows:
            found.setdefault(prompt, []).append(
                f"job {job_id} {status}" + (f" ({error})" if error else "")
            )
        return found

    def error_of(self, command: Command) -> str | None:
        """The ❌ the member read about this command in its own answer, if any."""
        original = command.handle.original if command.handle else None
        if original is not None and not original.deleted and original.content.startswith("❌"):
            return original.content
        return None

    def dm_errors(self, member: User) -> list[Message]:
        """The ❌ direct messages the bot sent `member` (when an answer could not be edited)."""
        state = self.local.state
        return [
            message
            for channel in state.channels.values()
            if channel.type is ChannelType.DM and member.id in channel.recipient_ids
            for message in state.visible_messages(channel, member)
            if message.author.id == state.bot_user.id and message.content.startswith("❌")
        ]

    def outcomes_known(self) -> bool:
        posted = {_prompt_of(m) for m in self.result_posts()}
        dms = Counter(c.member.id for c in self.commands)
        for member_id in list(dms):
            dms[member_id] = len(self.dm_errors(self.local.state.users[member_id]))
        for command in self.commands:
            if command.prompt in posted or self.error_of(command) is not None:
                continue
            if dms[command.member.id] > 0:
                dms[command.member.id] -= 1
                continue
            return False
        return True

    async def settle(self) -> None:
        """Until every command has an outcome and no job is open, or `settle_s` passes."""
        try:
            await poll_until(
                lambda: self.outcomes_known() and not self.open_jobs(),
                timeout=self.timing.settle_s,
                what="every command's outcome",
                interval=0.2,
            )
        except TimeoutError:
            self.notes.append(
                f"not settled after {self.timing.settle_s:g}s; open jobs: {self.open_jobs()}"
            )

    async def measure(self) -> ScenarioResult:
        result = ScenarioResult(self.scenario.name, self.scenario.faults, len(self.commands))
        sim = await self.sim.state()
        predictions = sim["predictions"]["items"]
        all_posts = self.result_posts(include_deleted=True)
        shown = [m for m in all_posts if not m.deleted]
        posts_by_prompt = Counter(_prompt_of(m) for m in all_posts)
        shown_prompts = {_prompt_of(m) for m in shown}
        statuses = self.store_statuses()
        dm_left = {
            c.member.id: len(self.dm_errors(c.member)) for c in self.commands
        }  # ❌ DMs not yet matched to a command
        ours = {c.prompt for c in self.commands}

        for command in self.commands:
            posts = posts_by_prompt.get(command.prompt, 0)
            error = self.error_of(command)
            if error is None and posts == 0 and dm_left[command.member.id] > 0:
                dm_left[command.member.id] -= 1
                error = "❌ (direct message)"
            if command.prompt in shown_prompts:
                result.delivered += 1
                if error is not None:
                    result.problems.append(f"{command.prompt!r}: delivered, yet told {error!r}")
            elif error is not None:
                result.clear_errors += 1
                result.errors[command.prompt] = error
                result.notes.append(f"{command.prompt!r}: {_first_line(error)}")
            else:
                result.lost += 1
                result.problems.append(
                    f"lost: {command.prompt!r} (store: {statuses.get(command.prompt, 'no job')})"
                )
            if posts > 1:
                result.duplicates += posts - 1
                result.problems.append(f"posted {posts} times: {command.prompt!r}")
        stray = sorted({p for p in posts_by_prompt if p not in ours})
        if stray:
            result.problems.append(f"result posts for prompts nobody asked for: {stray}")

        made = Counter(str(p["prompt"]) for p in predictions)
        for prompt, count in made.items():
            if count > 1:
                result.billed_twice += count - 1
                result.problems.append(f"{count} predictions for {prompt!r}")
        for prediction in predictions:
            if prediction["billed"] and prediction["prompt"] not in shown_prompts:
                result.paid_undelivered += 1
                result.problems.append(
                    f"paid, not delivered: {prediction['prompt']!r} ({prediction['id']}; "
                    f"store: {statuses.get(prediction['prompt'], 'no job')})"
                )
        # The simulator's own duplicate check (same model, inputs and seed) must agree.
        for group in sim["predictions"]["duplicates"]:
            if made[str(group["prompt"])] < 2:
                result.billed_twice += group["count"] - 1
                result.problems.append(f"billed twice by fingerprint: {group}")

        driver = self.local.driver()
        for message in shown:
            for attachment in message.attachments:
                data = await driver.download(attachment)
                if not _decodes(data):
                    result.truncated += 1
                    result.problems.append(
                        f"truncated image posted for {_prompt_of(message)!r}: "
                        f"{attachment.filename}, {len(data)} bytes"
                    )
            if not message.attachments:
                result.problems.append(f"a result post without an image: {_prompt_of(message)!r}")
                result.truncated += 1

        for killed in self.killed_posts:
            prompt = _prompt_of(killed)
            again = [m.id for m in all_posts if _prompt_of(m) == prompt and m is not killed]
            self.notes.append(
                f"the post a SIGKILL landed on ({prompt!r}) stayed the only one for its job"
                if not again and not killed.deleted
                else f"the post a SIGKILL landed on ({prompt!r}) was followed by {again}"
            )
        result.fault_hits = self.sim.fault_hits()
        if result.fault_hits:
            hits = ", ".join(f"{name} x{n}" for name, n in sorted(result.fault_hits.items()))
            self.notes.append(f"simulator faults hit: {hits}")
        result.sigterms = list(self.sigterms)
        result.sigkills = self.sigkills
        for number, bot in enumerate(self.bots, start=1):
            if "Traceback" in bot.stderr:
                result.tracebacks += 1
                result.problems.append(f"bot process {number} logged a traceback:\n{bot.stderr}")
        for code, seconds in self.sigterms:
            if code != 0 or seconds > SIGTERM_LIMIT_S:
                result.problems.append(f"SIGTERM ended a bot with {code} after {seconds:.1f}s")
        violations = self.local.violations.clear()
        if self.scenario.withholds_permissions:
            expected = [v for v in violations if v.code == MISSING_PERMISSIONS]
            violations = [v for v in violations if v.code != MISSING_PERMISSIONS]
            result.notes.append(f"{len(expected)} posts refused for Missing Permissions")
        result.violations = [str(v) for v in violations]
        result.notes = self.notes + result.notes
        result.facts = dict(self.facts)
        return result


# -- running a scenario ------------------------------------------------------------------------


def make_commands(
    local: LocalDiscord, scenario: Scenario, count: int, *, run_id: str
) -> list[Command]:
    """`count` commands from several members, one unique prompt each."""
    members = [local.user, local.stranger]
    members += [_add_member(local, name) for name in MEMBERS[len(members) :]]
    commands = []
    for number in range(count):
        if scenario.stuck and number == 0:
            member = _add_member(local, STUCK_MEMBER)
            prompt = f"{scenario.name} {run_id} #{number}: paint it gold {STUCK_TRIGGER}"
        else:
            member = members[number % len(members)]
            prompt = f"{scenario.name} {run_id} #{number}: make it a watercolor"
        commands.append(Command(number, member, prompt))
    return commands


async def run_scenario(
    scenario: Scenario, *, commands: int, timing: Timing, workdir: Path, seed: int = 1
) -> ScenarioResult:
    """Run `scenario` with `commands` /edit commands; what came of them."""
    started = time.monotonic()
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    config = LocalDiscordConfig(identify_interval_s=timing.identify_interval_s)
    sim_args = [*scenario.simulator_args(timing), "--seed", str(seed)]
    async with (
        LocalDiscord(config) as local,
        SimulatorProcess(api_key=SIM_KEY, latency_s=timing.latency_s, args=sim_args) as sim,
    ):
        run = FaultRun(
            scenario,
            local=local,
            sim=sim,
            timing=timing,
            database=workdir / "jobs.sqlite3",
            commands=make_commands(local, scenario, commands, run_id=f"s{seed}"),
        )
        try:
            await run.start_bot(sync=True)
            issuing = asyncio.create_task(run.issue_commands(), name="commands")
            faults = asyncio.create_task(scenario.plan(run), name="faults")
            try:
                await asyncio.gather(issuing, faults)
            finally:
                for task in (issuing, faults):
                    task.cancel()
                await asyncio.gather(issuing, faults, return_exceptions=True)
            await run.settle()
            if run.bot.running:
                await run.terminate()
            result = await run.measure()
        finally:
            for bot in run.bots:
                await bot.close()
    result.wall_s = time.monotonic() - started
    log.info("%s", result.describe())
    return result


# -- helpers -----------------------------------------------------------------------------------


async def poll_until(
    predicate: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05
) -> T:
    """`predicate()`'s first truthy value, checked every `interval` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def created_within(item: Mapping[str, Any], seconds: float) -> bool:
    """Whether the simulator created this prediction less than `seconds` ago."""
    created = dt.datetime.fromisoformat(str(item["created_at"]).replace("Z", "+00:00"))
    return (dt.datetime.now(dt.UTC) - created).total_seconds() < seconds


def _add_member(local: LocalDiscord, name: str) -> User:
    user = local.state.add_user(name)
    local.state.add_member(local.guild, user)
    return user


def _is_result(message: Message, local: LocalDiscord) -> bool:
    return message.author.id == local.bot_user.id and any(
        c.startswith(RESULT_BUTTON) for c in message.custom_ids
    )


def _prompt_of(message: Message) -> str:
    return str(message.embeds[0].get("description", "")) if message.embeds else ""


def _first_line(text: str) -> str:
    return text.splitlines()[0][:120]


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError):
        return False
    return True
