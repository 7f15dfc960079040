"""Run `python bot.py` in a process of its own against a LocalDiscord in the test process.

    async with bot_process(local, database=tmp_path / "jobs.sqlite3", sync=True) as bot:
        ix = await local.driver().slash("imagine", prompt="a red fox")
        ...
        await bot.kill()                      # SIGKILL: no clean-up at all
    async with bot_process(local, database=tmp_path / "jobs.sqlite3") as bot:
        ...                                   # same job store, commands still synced

The bot finds the local Discord through the environment (DISCORD_TOKEN, DISCORD_API_BASE_URL,
DISCORD_GATEWAY_URL) and runs dry (no WAVESPEED_* variable: the built-in simulator, latency 0).
Every variable of the bot's own sections is taken out of the inherited environment first, so a
developer's real token or WaveSpeed key never reaches a test. It runs in its own directory so
no config.toml is read.

The bot's clock is the wall clock (`time.time()`); the local Discord's agrees with it until a
test calls `clock.advance`, which a bot in another process does not see: tokens and CDN URLs
then expire for the local Discord only.

Output: stderr (the bot logs there) and stdout are read as they come, so the bot never blocks
on a full pipe; `wait_for_output` waits for a log line, `stderr` holds all of it for a failure
message.
"""

# Waits take a `timeout` like discord.py's own `wait_for`: a test must fail, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from .gateway import Session
from .server import LocalDiscord

log = logging.getLogger(__name__)

T = TypeVar("T")

BOT_SCRIPT = Path(__file__).resolve().parents[2] / "bot.py"
# Variables the bot's settings read (SECTION_KEY) or that point it at a config file.
BOT_ENV_PREFIXES = (
    "DISCORD_",
    "WAVESPEED_",
    "SIMULATOR_",
    "STORAGE_",
    "JOBS_",
    "LOGGING_",
    "KONTEXT_",
)
COMMAND_SYNCS = (
    "PUT /applications/{application_id}/commands",
    "PUT /applications/{application_id}/guilds/{guild_id}/commands",
)


def bot_environment(
    local: LocalDiscord, *, database: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a bot process pointed at `local`, dry, with its job store in
    `database`; `extra` adds or overrides variables (e.g. JOBS_STATUS_INTERVAL_S)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(BOT_ENV_PREFIXES)}
    env.update(
        DISCORD_TOKEN=local.token,
        DISCORD_API_BASE_URL=local.api_base_url,
        DISCORD_GATEWAY_URL=local.gateway_url,
        STORAGE_DATABASE=str(database),
        SIMULATOR_LATENCY_S="0",
        LOGGING_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


class BotProcess:
    """One `python bot.py` process: start it, wait for READY, signal it, read its output."""

    def __init__(
        self,
        local: LocalDiscord,
        *,
        database: Path,
        sync: bool | int = False,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        args: Sequence[str] = (),
    ) -> None:
        """`sync`: True runs `--sync` (global commands), a guild id `--sync GUILD_ID`."""
        self.local = local
        self.database = database
        self.sync = sync
        self.cwd = cwd or database.parent
        self.env = bot_environment(local, database=database, extra=env)
        self.args = list(args)
        if sync is True:
            self.args.append("--sync")
        elif sync is not False:
            self.args += ["--sync", str(sync)]
        self._process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._stderr: list[str] = []
        self._stdout: list[str] = []
        self._output_changed = asyncio.Event()
        # What the local Discord had seen before this process started, to tell its IDENTIFY
        # and command sync from an earlier process's.
        self._identified_before = 0
        self._requests_before = 0

    def __repr__(self) -> str:
        return f"<BotProcess pid={self.pid} returncode={self.returncode}>"

    # -- state -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        """None while it runs; negative for a signal (-9 SIGKILL, -15 SIGTERM)."""
        return self._process.returncode if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    def sessions(self) -> list[Session]:
        """Gateway sessions this process identified (after it started), oldest first."""
        return self.local.gateway.identified[self._identified_before :]

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("a BotProcess starts once; make a new one to restart the bot")
        self._identified_before = len(self.local.gateway.identified)
        self._requests_before = len(self.local.rest.requests)
        self.cwd.mkdir(parents=True, exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BOT_SCRIPT),
            *self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # A debug log line can be long; readline must not give up on it.
            limit=16 * 1024 * 1024,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(self._process.stdout, self._stdout)),
            asyncio.create_task(self._read(self._process.stderr, self._stderr)),
        ]
        log.info("bot process %s started: bot.py %s", self.pid, " ".join(self.args))

    async def _read(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode(errors="replace"))
            self._output_changed.set()
            self._output_changed = asyncio.Event()
        self._output_changed.set()

    async def wait_ready(self, timeout: float = 30.0) -> Session:
        """Until this process has identified on the gateway (READY and GUILD_CREATE sent) and,
        when started with --sync, its command sync was accepted. Fails at once, with the
        bot's stderr, if the process exits first."""
        requests = self.local.rest.requests

        def ready() -> Session | None:
            if self.sync is not False and not any(
                r.route in COMMAND_SYNCS and r.status == 200
                for r in requests[self._requests_before :]
            ):
                return None
            live = [s for s in self.sessions() if s.connection is not None and s.seq >= 2]
            return live[-1] if live else None

        return await self._until(ready, timeout=timeout, what="the bot process to be READY")

    async def _until(self, predicate: Callable[[], T | None], *, timeout: float, what: str) -> T:
        """`predicate()`'s first truthy value, or an error if the process ends first."""
        process = self._require_started()
        waiting = asyncio.create_task(
            self.local.state.wait_until(predicate, timeout=timeout, what=what)
        )
        exited = asyncio.create_task(process.wait())
        try:
            await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                return waiting.result()
            await self._drain()
            raise AssertionError(
                f"the bot process exited ({process.returncode}) before {what}:\n{self.stderr}"
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; the bot's stderr:\n{self.stderr}") from None
        finally:
            for task in (waiting, exited):
                task.cancel()
            await asyncio.gather(waiting, exited, return_exceptions=True)

    async def wait_for_output(self, pattern: str, *, timeout: float = 30.0) -> re.Match[str]:
        """The first line of stderr (or stdout) matching `pattern`, waiting for it if needed."""
        regex = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for line in [*self._stderr, *self._stdout]:
                if match := regex.search(line):
                    return match
            if not self.running and all(r.done() for r in self._readers):
                raise AssertionError(
                    f"the bot process exited ({self.returncode}) without printing "
                    f"{pattern!r}:\n{self.stderr}"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"the bot process printed nothing matching {pattern!r} within {timeout}s:\n"
                    f"{self.stderr}"
                )
            event = self._output_changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    def send_signal(self, signum: int) -> None:
        process = self._require_started()
        if process.returncode is None:
            process.send_signal(signum)

    async def wait(self, timeout: float = 30.0) -> int:
        """Until the process exits; its return code."""
        process = self._require_started()
        code = await asyncio.wait_for(process.wait(), timeout)
        await self._drain()
        return code

    async def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, and SIGKILL if it has not exited within `timeout`; the return code.

        Today bot.py installs no SIGTERM handler, so Python's default ends it at once
        (return code -15) with no clean-up: no gateway close, no job store close.
        """
        self.send_signal(signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            log.warning("bot process %s ignored SIGTERM for %ss: killing it", self.pid, timeout)
            return await self.kill()

    async def kill(self) -> int:
        """SIGKILL: the process ends wherever it was, as in a crash or an OOM kill."""
        self.send_signal(signal.SIGKILL)
        return await self.wait()

    async def _drain(self) -> None:
        """Let the readers take in the last output of an exited process."""
        await asyncio.wait(self._readers, timeout=5)

    def _require_started(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise RuntimeError("the bot process was not started")
        return self._process

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Make sure the process is gone (SIGTERM, then SIGKILL) and its pipes are read."""
        if self._process is None:
            return
        if self.running:
            await self.terminate()
        await self._drain()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


@contextlib.asynccontextmanager
async def bot_process(
    local: LocalDiscord,
    *,
    database: Path,
    sync: bool | int = False,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 30.0,
) -> AsyncIterator[BotProcess]:
    """A bot process, READY against `local` when the block starts and gone when it ends."""
    process = BotProcess(local, database=database, sync=sync, env=env)
    async with process:
        await process.wait_ready(ready_timeout)
        yield process
