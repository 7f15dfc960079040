"""Health and metrics: /healthz and /metrics on the bot's one HTTP server, with the real bot."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.health import GatewayState, HealthCheck
from services.jobs import JobStatus
from services.settings import Settings
from services.webserver import Listener, Route, serve
from tests.e2e import against, first_step, job_id_of, job_status, shared_simulator
from tests.local_discord import LocalDiscord, start_bot

pytest_plugins = ("tests.local_discord.fixtures",)

MONITORING = {"monitoring": {"port": 0}}


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def health(port: int) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        return response.status, await response.json()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Samples:
    status, text = await get(port, "/metrics")
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def eventually(port: int, ready: Callable[[Samples], bool]) -> Samples:
    """The metrics once `ready` holds (5 s at most): a job's last numbers land just after it."""
    async with asyncio.timeout(5):
        while True:
            samples = await scrape(port)
            if ready(samples):
                return samples
            await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_delivered_edit_shows_in_the_metrics_and_health_is_ok(
    local_discord: LocalDiscord,
) -> None:
    async with start_bot(local_discord, settings_overrides=MONITORING) as (alice, bot):
        port = bot.monitoring_port
        assert port is not None
        status, report = await health(port)
        assert status == 200, report
        assert report["status"] == "ok" and report["failing"] == []
        assert set(report["checks"]) == {"gateway", "store", "wavespeed"}
        assert report["checks"]["wavespeed"]["simulated"] is True

        # Discord rate-limits the first post of the result: discord.py waits it out.
        local_discord.fail_message_posts(local_discord.general, times=1, retry_after=0.1)
        result, _ = await first_step(alice, "make it teal")
        await job_status(bot, job_id_of(result), JobStatus.DELIVERED)

        samples = await eventually(
            port, lambda s: value(s, "kontext_completed_to_posted_seconds_count") == 1
        )
        assert value(samples, "kontext_jobs", status="delivered") == 1
        assert value(samples, "kontext_jobs", status="failed") == 0
        assert value(samples, "kontext_queue_depth") == 0
        assert value(samples, "kontext_spend_usd_total", model="flux-kontext-pro") == 0.04
        # One sync-mode submit answered with the image, then its download.
        assert value(samples, "kontext_wavespeed_request_seconds_count", kind="submit") == 1
        assert value(samples, "kontext_wavespeed_request_seconds_count", kind="download") >= 1
        assert value(samples, "kontext_wavespeed_request_seconds_sum", kind="submit") > 0
        assert value(samples, "kontext_discord_rate_limited_total", scope="user") >= 1


async def test_health_names_the_image_service_when_it_stops_answering(
    local_discord: LocalDiscord,
) -> None:
    simulator = contextlib.AsyncExitStack()
    sim = await simulator.enter_async_context(shared_simulator(latency_s=0.0))
    overrides = against(sim, monitoring={"port": 0, "wavespeed_check_s": 1.0})
    overrides["wavespeed"]["retry_attempts"] = 1
    try:
        async with start_bot(local_discord, settings_overrides=overrides) as (_, bot):
            port = bot.monitoring_port
            assert port is not None
            # Probes in a row ask WaveSpeed once: its answer is reused for wavespeed_check_s.
            for _ in range(3):
                status, report = await health(port)
                assert status == 200, report
                assert report["checks"]["wavespeed"]["simulated"] is False
            samples = await scrape(port)
            assert value(samples, "kontext_wavespeed_request_seconds_count", kind="balance") == 1

            # WaveSpeed goes away; once the reused answer is old, the check fails and says so.
            await simulator.aclose()
            await asyncio.sleep(1.0)
            status, report = await health(port)
            assert status == 503, report
            assert report["status"] == "failing"
            assert report["failing"] == ["wavespeed"]
            assert "cannot be reached" in report["checks"]["wavespeed"]["error"]
            assert report["checks"]["store"]["ok"] is True
            assert report["checks"]["gateway"]["ok"] is True
    finally:
        await simulator.aclose()


async def test_health_names_the_store_when_it_cannot_be_read(local_discord: LocalDiscord) -> None:
    async with start_bot(local_discord, settings_overrides=MONITORING) as (_, bot):
        port = bot.monitoring_port
        assert port is not None
        assert (await health(port))[0] == 200
        await bot.repository.close()
        status, report = await health(port)
        assert status == 503, report
        assert report["failing"] == ["store"]
        assert report["checks"]["store"]["error"]
        # /metrics still answers, without the store's numbers.
        samples = await scrape(port)
        assert ("kontext_queue_depth", ()) not in samples


async def test_webhooks_and_monitoring_on_one_port_are_one_server(
    local_discord: LocalDiscord,
) -> None:
    port = free_port()
    overrides = {
        "wavespeed": {
            "webhook_url": f"http://127.0.0.1:{port}/hooks/wavespeed",
            "webhook_host": "127.0.0.1",
            "webhook_port": port,
        },
        "monitoring": {"port": port},
    }
    async with start_bot(local_discord, settings_overrides=overrides) as (alice, bot):
        assert bot.monitoring_port == port
        result, _ = await first_step(alice, "make it amber")
        await job_status(bot, job_id_of(result), JobStatus.DELIVERED)
        samples = await eventually(
            port, lambda s: value(s, "kontext_jobs", status="delivered") == 1
        )
        # Completed by the webhook delivery: a plain submit, never a sync one, no result polls.
        assert value(samples, "kontext_wavespeed_request_seconds_count", kind="submit") == 1
        assert value(samples, "kontext_wavespeed_request_seconds_count", kind="result") == 0
        assert (await health(port))[0] == 200


async def test_listeners_on_two_ports_each_answer_only_their_own_routes() -> None:
    async def answer(name: str) -> Any:
        async def handler(request: Any) -> aiohttp.web.Response:
            return aiohttp.web.Response(text=name)

        return handler

    hooks = Listener("webhooks", "127.0.0.1", 0, [Route("POST", "/hook", await answer("hook"))])
    # Port 0 on another host name: a second site of the same server.
    metrics = Listener("monitoring", "localhost", 0, [Route("GET", "/m", await answer("m"))])
    async with serve([hooks, metrics]) as ports, aiohttp.ClientSession() as session:
        assert ports["webhooks"] != ports["monitoring"]
        async with session.post(f"http://127.0.0.1:{ports['webhooks']}/hook") as response:
            assert (response.status, await response.text()) == (200, "hook")
        async with session.get(f"http://localhost:{ports['monitoring']}/m") as response:
            assert (response.status, await response.text()) == (200, "m")
        async with session.get(f"http://127.0.0.1:{ports['webhooks']}/m") as response:
            assert response.status == 404
        async with session.post(f"http://localhost:{ports['monitoring']}/hook") as response:
            assert response.status == 404


async def test_a_gateway_down_fails_health_and_an_unknown_latency_reads_null() -> None:
    class Store:
        async def ping(self) -> None:
            return None

    class Client:
        simulated = True
        balances = 0

        async def balance(self) -> int:
            self.balances += 1
            return 100

    client = Client()
    state = GatewayState(connected=False, latency_s=float("inf"))
    check = HealthCheck(lambda: state, Store(), client, wavespeed_every_s=60)  # type: ignore[arg-type]
    report = await check.report()
    assert report["failing"] == ["gateway"]
    assert report["checks"]["gateway"] == {"ok": False, "latency_ms": None}
    state = GatewayState(connected=True, latency_s=0.0425)
    report = await check.report()
    assert report["status"] == "ok"
    assert report["checks"]["gateway"] == {"ok": True, "latency_ms": 42.5}
    assert client.balances == 1


def test_monitoring_is_off_unless_a_port_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(discord={"token": "t"}).monitoring.port is None
    monkeypatch.setenv("MONITORING_PORT", "9108")
    monkeypatch.setenv("LOGGING_FORMAT", "json")
    settings = Settings(discord={"token": "t"})
    assert (settings.monitoring.port, settings.monitoring.host) == (9108, "127.0.0.1")
    assert settings.logging.format == "json"
