"""Shared fixtures: the WaveSpeed simulator on a loopback port and a client pointed at it, and
where a job store lives: a SQLite file, or a database on a throwaway PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from services.settings import WaveSpeedSettings
from services.simulator import SimulatorConfig, WaveSpeedSimulator, run_simulator
from services.wavespeed import WaveSpeedClient, create_session
from tests.postgres import PostgresServer, postgres_server

API_KEY = "test-key"


def fast_settings(base_url: str, **overrides: object) -> WaveSpeedSettings:
    """Client settings with the production shape but test-sized waits."""
    values: dict[str, object] = {
        "api_key": SecretStr(API_KEY),
        "base_url": base_url,
        "poll_interval_s": 0.02,
        "max_wait_s": 10.0,
        "retry_base_s": 0.01,
        "retry_max_s": 0.05,
        "submit_timeout_s": 10.0,
        "result_timeout_s": 5.0,
    }
    values.update(overrides)
    return WaveSpeedSettings(**values)


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    """Override in a test module (or parametrize) for other latencies and limits."""
    return SimulatorConfig(
        api_keys=frozenset({API_KEY}),
        latency_s=0.0,
        sync_wait_s=2.0,
        max_concurrent_per_key=100,
        max_output_side=256,
        webhook_retry_delay_s=0.01,
    )


@pytest.fixture
async def simulator(simulator_config: SimulatorConfig) -> AsyncIterator[WaveSpeedSimulator]:
    async with run_simulator(simulator_config) as sim:
        yield sim


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    session = create_session(WaveSpeedSettings())
    yield session
    await session.close()


@pytest.fixture
def make_client(
    simulator: WaveSpeedSimulator, http_session: aiohttp.ClientSession
) -> Callable[..., WaveSpeedClient]:
    def build(**overrides: object) -> WaveSpeedClient:
        return WaveSpeedClient(
            http_session, fast_settings(simulator.base_url, **overrides), simulated=True
        )

    return build


@pytest.fixture
def client(make_client: Callable[..., WaveSpeedClient]) -> WaveSpeedClient:
    return make_client()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; each test takes a fresh database on it."""
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
async def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's job store lives, once on each engine (`Repository.open` takes either)."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.sqlite3")
    server: PostgresServer = request.getfixturevalue("postgres")
    return await server.new_database()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="where the end-to-end tests' bots keep their jobs (make test-postgres: postgres)",
    )


@pytest.fixture(scope="session", autouse=True)
def end_to_end_store(request: pytest.FixtureRequest) -> Iterator[None]:
    """With `--store postgres`, every end-to-end bot that names no store runs on PostgreSQL."""
    if request.config.getoption("--store") != "postgres":
        yield
        return
    from tests.local_discord import harness

    server: PostgresServer = request.getfixturevalue("postgres")
    harness.fresh_store = server.new_database
    try:
        yield
    finally:
        harness.fresh_store = None
