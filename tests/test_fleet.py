"""A fleet of workers on one PostgreSQL store: they share one queue and one WaveSpeed cap, take
turns fairly, never drive one job twice, and take on the jobs of a worker that died from where
they stood, never sending them again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from services.jobs import JobService, WebhookMode
from services.settings import JobSettings
from services.simulator import SimulatorConfig, WaveSpeedSimulator
from services.storage import JobStatus, Repository
from services.wavespeed import WaveSpeedClient
from services.wavespeed.webhooks import WebhookInbox
from services.webserver import Listener, Route, serve
from tests.conftest import API_KEY
from tests.postgres import PostgresServer
from tests.test_jobs import FAST, RecordingPresenter, edit

CAP = 3


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(
        api_keys=frozenset({API_KEY}),
        latency_s=0.3,
        max_output_side=64,
        max_concurrent_per_key=50,
    )


@pytest.fixture
async def store(postgres: PostgresServer) -> AsyncIterator[str]:
    yield await postgres.new_database()


async def until(condition: Callable[[], bool], within_s: float) -> None:
    """Wait until `condition` holds: it reads several workers and the simulator, which share
    no one event to wait on."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def worker(
    location: str, make_client: Callable[..., WaveSpeedClient], **settings: float
) -> tuple[JobService, RecordingPresenter, Repository]:
    repository = await Repository.open(location)
    service = JobService(
        repository,
        make_client(),
        JobSettings(**{**FAST, "max_concurrent": CAP, "per_member": 1, **settings}),
    )
    presenter = RecordingPresenter()
    await service.start(presenter)
    return service, presenter, repository


async def test_workers_share_the_queue_and_one_cap_and_drive_each_job_once(
    store: str, make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    fleet = [await worker(store, make_client) for _ in range(3)]
    try:
        # Every job enters through the first worker's store; the others hear of it (NOTIFY).
        first = fleet[0][0]
        jobs = [await first.enqueue(edit(1000 + i % 6, f"job {i}")) for i in range(24)]
        ids = {job.id for job in jobs}

        def delivered() -> set[int]:
            return {i for _, presenter, _ in fleet for i in presenter.delivered}

        await until(lambda: delivered() == ids, within_s=60)
        by_worker = [set(presenter.delivered) for _, presenter, _ in fleet]
        # No job was delivered by two workers, and jobs stored through the first worker were
        # taken by others too (who worked most is up to timing).
        assert sum(len(d) for d in by_worker) == len(ids)
        assert sum(1 for d in by_worker if d) >= 2, [len(d) for d in by_worker]
    finally:
        for service, _, repository in fleet:
            await service.stop()
            await repository.close()
    assert simulator.created_total == len(ids)
    assert simulator.peak_open <= CAP


async def test_a_dead_workers_jobs_are_taken_on_without_sending_them_again(
    store: str, make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    doomed, _, doomed_store = await worker(store, make_client, lease_s=1.0)
    jobs = [await doomed.enqueue(edit(1000 + i, f"job {i}")) for i in range(CAP)]
    # Sent and running at WaveSpeed (0.3 s each) when the worker dies.
    await until(lambda: simulator.created_total == CAP, within_s=10)
    # Dies without a word: its tasks end, its leases are never given back or renewed.
    for task in list(doomed._tasks.values()):
        task.cancel()
    assert doomed._scheduler is not None
    doomed._scheduler.cancel()
    await asyncio.sleep(0.1)

    heir, presenter, heir_store = await worker(store, make_client, lease_s=1.0)
    try:
        await until(lambda: {job.id for job in jobs} <= set(presenter.delivered), within_s=20)
        # The post comes first, the DELIVERED mark right after it.
        statuses: set[str] = set()
        for _ in range(100):
            statuses = {(await heir_store.job(job.id)).status for job in jobs}
            if statuses == {JobStatus.DELIVERED}:
                break
            await asyncio.sleep(0.05)
        assert statuses == {JobStatus.DELIVERED}
    finally:
        await heir.stop()
        await heir_store.close()
        await doomed_store.close()
    # Each job was sent once: the heir found them at WaveSpeed instead of submitting again.
    assert simulator.created_total == CAP
    assert len(simulator.billed) == CAP


@pytest.mark.parametrize(
    "simulator_config",
    [
        SimulatorConfig(
            api_keys=frozenset({API_KEY}),
            # Long enough for the second worker to start while the first one's jobs run.
            latency_s=2.0,
            max_output_side=64,
            max_concurrent_per_key=50,
        )
    ],
)
async def test_a_webhook_delivery_reaches_the_worker_awaiting_it_whoever_receives_it(
    store: str, make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    secret = await make_client().webhook_secret()
    # Every delivery goes to the second worker's server, as a load balancer might send it.
    inboxes = [WebhookInbox(secret), WebhookInbox(secret)]
    route = Route("POST", "/hooks/wavespeed", inboxes[1].handle)
    fleet: list[tuple[JobService, RecordingPresenter, Repository]] = []

    async def start(inbox: WebhookInbox) -> JobService:
        repository = await Repository.open(store)
        # No safety poll within the test: only a relayed delivery can end a job in time.
        service = JobService(
            repository,
            make_client(),
            JobSettings(**{**FAST, "max_concurrent": CAP}),
            webhooks=WebhookMode(inbox, url, safety_poll_s=60.0),
        )
        presenter = RecordingPresenter()
        await service.start(presenter)
        fleet.append((service, presenter, repository))
        return service

    async with serve([Listener("webhooks", "127.0.0.1", 0, [route])]) as ports:
        url = f"http://127.0.0.1:{ports['webhooks']}/hooks/wavespeed"
        try:
            # The first worker takes three jobs alone; their deliveries will reach the second.
            first = await start(inboxes[0])
            jobs = [await first.enqueue(edit(1000 + i, f"job {i}")) for i in range(CAP)]
            await until(lambda: simulator.created_total == CAP, within_s=10)
            second = await start(inboxes[1])
            jobs += [await second.enqueue(edit(2000 + i, f"more {i}")) for i in range(CAP)]
            ids = {job.id for job in jobs}

            def delivered() -> set[int]:
                return {i for _, presenter, _ in fleet for i in presenter.delivered}

            await until(lambda: delivered() == ids, within_s=30)
            # The first worker heard of its jobs' endings from the second, at once.
            assert {job.id for job in jobs[:CAP]} <= fleet[0][1].delivered
        finally:
            for service, _, repository in fleet:
                await service.stop()
                await repository.close()
    assert simulator.request_counts["result"] == 0
