"""The WaveSpeed simulator as a process of its own: `python -m services.simulator`.

    async with SimulatorProcess(api_key="k", args=["--fault-rate", "drop@result=0.1"]) as sim:
        sim.base_url                      # http://127.0.0.1:PORT, for WAVESPEED_BASE_URL
        await sim.state()                 # GET /_simulator/state: predictions, duplicates...
        await sim.outage(20)              # POST /_simulator/outage

It outlives every bot process of a run, so what it created and billed is counted across
restarts. It listens on a free port of its own choosing (`--port 0`) and says which in its log,
so no port is picked here and lost to a race.
"""

# Waits take a `timeout`: a run must fail, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (http://\S+)")
# What the simulator logs for each fault it applies (see services/simulator/app.py).
FAULT_LINE = re.compile(r"(?:answering|spoiling the answer to) (\w+) (\S+) with fault (\w+)")


def route_of(method: str, path: str) -> str:
    """The simulator's route name for a request: submit, result, history, download, upload."""
    if path.startswith("/api/v3/wavespeed-ai/"):
        return "submit"
    if path == "/api/v3/predictions":
        return "history"
    if path.startswith("/api/v3/predictions/"):
        return "result"
    if path.startswith("/api/v3/media/") or method == "PUT":
        return "upload"
    return "download"


class SimulatorProcess:
    def __init__(self, *, api_key: str, latency_s: float = 0.5, args: Sequence[str] = ()) -> None:
        self.api_key = api_key
        self.command = [
            sys.executable,
            "-m",
            "services.simulator",
            "--port",
            "0",
            "--api-key",
            api_key,
            "--latency",
            str(latency_s),
            # Small outputs: the suite counts deliveries, it does not measure image sizes.
            "--max-output-side",
            "256",
            *args,
        ]
        self.base_url = ""
        self._process: asyncio.subprocess.Process | None = None
        self._lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None

    @property
    def log(self) -> str:
        return "".join(self._lines)

    @property
    def args(self) -> list[str]:
        """The command line after `python -m services.simulator`, for a report."""
        return self.command[3:]

    def fault_hits(self) -> Counter[str]:
        """How many requests each fault hit, by "fault@route" (e.g. "truncated@download")."""
        return Counter(
            f"{match[3]}@{route_of(match[1], match[2])}"
            for line in self._lines
            if (match := FAULT_LINE.search(line))
        )

    async def start(self, timeout: float = 30.0) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *self.command,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        exited = asyncio.create_task(self._process.wait())
        listening = asyncio.create_task(self._listening.wait())
        try:
            await asyncio.wait({exited, listening}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            for task in (exited, listening):
                task.cancel()
            await asyncio.gather(exited, listening, return_exceptions=True)
        if not self._listening.is_set():
            await self.stop()
            raise RuntimeError(f"the simulator did not start ({self.command}):\n{self.log}")
        self._http = aiohttp.ClientSession()

    async def _read(self) -> None:
        # Read everything it logs, so it never blocks on a full pipe.
        assert self._process is not None and self._process.stderr is not None
        while line := await self._process.stderr.readline():
            text = line.decode(errors="replace")
            self._lines.append(text)
            if not self.base_url and (match := LISTENING.search(text)):
                self.base_url = match[1]
                self._listening.set()

    async def state(self) -> dict[str, Any]:
        """The simulator's own account of what it made, billed and was asked."""
        return await self._control("GET", "/_simulator/state")

    async def outage(self, seconds: float) -> dict[str, Any]:
        """From now on, every API route and download answers 503 for `seconds`."""
        return await self._control("POST", "/_simulator/outage", {"seconds": seconds})

    async def _control(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        assert self._http is not None, "the simulator is not running"
        async with self._http.request(method, self.base_url + path, json=body) as response:
            response.raise_for_status()
            envelope = await response.json()
        data: dict[str, Any] = envelope["data"]
        return data

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 5)
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
