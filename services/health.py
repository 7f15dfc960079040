"""Health checks and the monitoring routes: GET /healthz and GET /metrics.

/healthz answers JSON with one entry per check and HTTP 200 when all pass, 503 naming the
failing ones otherwise:

- gateway: connected to Discord's gateway and ready (reported by a callable the bot passes in:
  this module knows nothing of discord), with the heartbeat latency;
- store: the job store answers a SELECT;
- wavespeed: WaveSpeed (or, in a dry run, the built-in simulator) answers a free read, the
  account balance, through the client's one session. Its answer is reused for
  `wavespeed_every_s`, so probes every few seconds cost WaveSpeed one request now and then.

Each check is bounded by `timeout_s`: a hung store or a silent WaveSpeed fails its check, it
never hangs the probe.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .webserver import Route

if TYPE_CHECKING:
    from .metrics import Metrics
    from .storage import Repository
    from .wavespeed import WaveSpeedClient


@dataclass(frozen=True, slots=True)
class GatewayState:
    """What the chat client says of its gateway connection."""

    connected: bool
    # Seconds between a heartbeat and its acknowledgement; None before the first one.
    latency_s: float | None


class HealthCheck:
    def __init__(
        self,
        gateway: Callable[[], GatewayState],
        repository: Repository,
        client: WaveSpeedClient,
        *,
        wavespeed_every_s: float = 30.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gateway = gateway
        self._repository = repository
        self._client = client
        self._wavespeed_every_s = wavespeed_every_s
        self._timeout_s = timeout_s
        self._clock = clock
        # The last WaveSpeed check (when, what); one check at a time, the others reuse it.
        self._wavespeed_checked: tuple[float, dict[str, Any]] | None = None
        self._wavespeed_lock = asyncio.Lock()

    async def report(self) -> dict[str, Any]:
        """{"status": "ok" | "failing", "failing": [names], "checks": {name: {"ok", ...}}}."""
        store, wavespeed = await asyncio.gather(self._store(), self._wavespeed())
        checks = {"gateway": self._gateway_check(), "store": store, "wavespeed": wavespeed}
        failing = [name for name, check in checks.items() if not check["ok"]]
        return {"status": "failing" if failing else "ok", "failing": failing, "checks": checks}

    def _gateway_check(self) -> dict[str, Any]:
        state = self._gateway()
        latency = state.latency_s
        known = latency is not None and math.isfinite(latency)
        return {
            "ok": state.connected,
            "latency_ms": round(latency * 1000, 1) if known and latency is not None else None,
        }

    async def _store(self) -> dict[str, Any]:
        return await self._bounded(self._repository.ping())

    async def _wavespeed(self) -> dict[str, Any]:
        async with self._wavespeed_lock:
            now = self._clock()
            if self._wavespeed_checked is None or (
                now - self._wavespeed_checked[0] >= self._wavespeed_every_s
            ):
                result = await self._bounded(self._client.balance())
                result["simulated"] = self._client.simulated
                self._wavespeed_checked = (self._clock(), result)
            checked_at, result = self._wavespeed_checked
        return {**result, "checked_s_ago": round(self._clock() - checked_at, 1)}

    async def _bounded(self, check: Awaitable[object]) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self._timeout_s):
                await check
        except TimeoutError:
            return {"ok": False, "error": f"no answer within {self._timeout_s:g} s"}
        except Exception as exc:
            # The exception's type and message: never a request's headers, so never a key.
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        return {"ok": True}


def monitoring_routes(health: HealthCheck, metrics: Metrics, repository: Repository) -> list[Route]:
    async def healthz(request: web.Request) -> web.Response:
        report = await health.report()
        return web.json_response(report, status=200 if report["status"] == "ok" else 503)

    async def scrape(request: web.Request) -> web.Response:
        body, content_type = await metrics.scrape(repository, request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    return [Route("GET", "/healthz", healthz), Route("GET", "/metrics", scrape)]
