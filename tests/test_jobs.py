"""The job service against the WaveSpeed simulator: queue, fairness, cancel, restart safety."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.jobs import CancelOutcome, JobService, JobStatus, NewJob, Stage
from services.settings import JobSettings
from services.simulator import Fault, SimulatorConfig, WaveSpeedSimulator
from services.storage import JobImage, JobRecord, Repository
from services.wavespeed import WaveSpeedClient, model_for_path
from tests.conftest import API_KEY
from tests.images import make_png

PRO = model_for_path("flux-kontext-pro")
ALICE, BOB = 1001, 1002


class RecordingPresenter:
    """The chat surface, reduced to what a member would see."""

    def __init__(self) -> None:
        self.progress: list[tuple[int, Stage, str]] = []
        self.delivered: dict[int, list[JobImage]] = {}
        self.failures: dict[int, str] = {}
        self.changed = asyncio.Event()

    async def show_progress(self, job: JobRecord, stage: Stage, detail: str) -> None:
        self.progress.append((job.id, stage, detail))
        self.changed.set()

    async def deliver(self, job: JobRecord, outputs: list[JobImage]) -> None:
        self.delivered.setdefault(job.id, []).extend(outputs)
        self.changed.set()

    async def report_failure(self, job: JobRecord, message: str) -> None:
        self.failures[job.id] = message
        self.changed.set()

    async def wait_for(self, done: Callable[[], bool], within_s: float = 5) -> None:
        async with asyncio.timeout(within_s):
            while not done():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(
        api_keys=frozenset({API_KEY}), latency_s=0.3, max_output_side=128, max_concurrent_per_key=10
    )


@pytest.fixture
async def repository() -> AsyncIterator[Repository]:
    repository = await Repository.open(":memory:")
    yield repository
    await repository.close()


@pytest.fixture
def make_service(
    repository: Repository, make_client: Callable[..., WaveSpeedClient]
) -> Callable[..., JobService]:
    def build(**settings: Any) -> JobService:
        return JobService(
            repository, make_client(), JobSettings(status_interval_s=0.05, **settings)
        )

    return build


@pytest.fixture
async def service(make_service: Callable[..., JobService]) -> AsyncIterator[JobService]:
    service = make_service()
    yield service
    await service.stop()


def edit(member: int = ALICE, prompt: str = "make it a watercolor", seed: int = 7) -> NewJob:
    return NewJob(
        action="edit",
        requester_id=member,
        channel_id=555,
        model=PRO,
        params={"prompt": prompt, "seed": seed},
        inputs=[(make_png(), "image/png", 64, 48)],
    )


async def test_a_job_runs_from_queue_to_delivery(
    service: JobService, repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    presenter = RecordingPresenter()
    await service.start(presenter)
    job = await service.enqueue(edit())
    await presenter.wait_for(lambda: job.id in presenter.delivered)

    stored = await repository.job(job.id)
    assert stored.status == JobStatus.DELIVERED
    assert stored.prediction_id in simulator.predictions
    assert stored.cost == "0.04"
    ((image, nsfw, url),) = presenter.delivered[job.id]
    assert url is not None and url.startswith(simulator.base_url)
    assert image.content_type == "image/jpeg" and nsfw is False
    stages = [stage for job_id, stage, _ in presenter.progress if job_id == job.id]
    assert stages[0] == Stage.PREPARING
    assert Stage.GENERATING in stages and stages[-1] == Stage.POSTING


async def test_cap_and_fair_order_between_members(
    service: JobService, repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    presenter = RecordingPresenter()
    await service.start(presenter)
    a1 = await service.enqueue(edit(ALICE, "a1"))
    a2 = await service.enqueue(edit(ALICE, "a2"))
    a3 = await service.enqueue(edit(ALICE, "a3"))
    b1 = await service.enqueue(edit(BOB, "b1"))
    c1 = await service.enqueue(edit(1003, "c1"))
    await asyncio.sleep(0.05)

    # Two at once; Alice's burst does not keep Bob waiting behind her.
    assert service.position(a1.id) is None and service.position(b1.id) is None
    assert [service.position(j.id) for j in (c1, a2, a3)] == [1, 2, 3]
    assert len(simulator.predictions) == 2
    assert ("queued", "Queued: position 2.") in [
        (stage, text) for job_id, stage, text in presenter.progress if job_id == a2.id
    ]
    await presenter.wait_for(lambda: len(presenter.delivered) == 5, within_s=10)
    finished = [await repository.job(j.id) for j in (a1, b1, c1, a2, a3)]
    assert [j.prompt for j in sorted(finished, key=lambda j: j.submitted_at or 0)] == [
        "a1",
        "b1",
        "c1",
        "a2",
        "a3",
    ]


async def test_cancel_while_queued_only_by_the_requester(
    service: JobService, repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    presenter = RecordingPresenter()
    await service.start(presenter)
    first = await service.enqueue(edit(ALICE, "first"))
    waiting = await service.enqueue(edit(ALICE, "second"))

    assert await service.cancel(waiting.id, BOB) == CancelOutcome.NOT_YOURS
    assert await service.cancel(waiting.id, ALICE) == CancelOutcome.CANCELLED
    assert await service.cancel(first.id, ALICE) == CancelOutcome.TOO_LATE
    await presenter.wait_for(lambda: first.id in presenter.delivered)

    assert (await repository.job(waiting.id)).status == JobStatus.CANCELLED
    assert len(simulator.predictions) == 1


async def test_restart_between_submit_and_completion_delivers_once_billed_once(
    make_service: Callable[..., JobService],
    repository: Repository,
    simulator: WaveSpeedSimulator,
) -> None:
    before = make_service()
    watcher = RecordingPresenter()
    await before.start(watcher)
    job = await before.enqueue(edit())
    await watcher.wait_for(
        lambda: (
            (job.id, Stage.GENERATING) in {(job_id, stage) for job_id, stage, _ in watcher.progress}
        )
    )
    assert (await repository.job(job.id)).status == JobStatus.RUNNING
    await before.stop()  # the bot goes down with the job running at WaveSpeed

    after = make_service()
    presenter = RecordingPresenter()
    await after.start(presenter)
    try:
        await presenter.wait_for(lambda: job.id in presenter.delivered)
    finally:
        await after.stop()

    assert len(presenter.delivered[job.id]) == 1
    assert simulator.request_counts["submit"] == 1
    assert len(simulator.billed) == 1
    assert (await repository.job(job.id)).status == JobStatus.DELIVERED


async def test_unknown_submission_outcome_is_reported_not_resubmitted(
    service: JobService, repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    presenter = RecordingPresenter()
    await service.start(presenter)
    simulator.inject(Fault.DROP)
    job = await service.enqueue(edit())
    await presenter.wait_for(lambda: job.id in presenter.failures)

    assert "not resubmitted" in presenter.failures[job.id]
    assert (await repository.job(job.id)).status == JobStatus.UNKNOWN
    assert simulator.request_counts["submit"] == 1


async def test_restart_finds_open_jobs_in_every_state(
    make_service: Callable[..., JobService],
    repository: Repository,
    simulator: WaveSpeedSimulator,
) -> None:
    queued = await make_service().enqueue(edit(prompt="was queued"))
    cut_off = await make_service().enqueue(edit(prompt="was submitting"))
    await repository.update_job(cut_off.id, status=JobStatus.SUBMITTING)
    done = await make_service().enqueue(edit(prompt="was finished"))
    image_id = await repository.add_image(make_png(colour=(1, 2, 3)), "image/png", 64, 48)
    await repository.set_job_images(done.id, "output", [(image_id, False)])
    await repository.update_job(done.id, status=JobStatus.SUCCEEDED)

    service = make_service()
    presenter = RecordingPresenter()
    await service.start(presenter)
    try:
        await presenter.wait_for(
            lambda: (
                {queued.id, done.id} <= set(presenter.delivered)
                and cut_off.id in presenter.failures
            )
        )
    finally:
        await service.stop()

    assert "not sent again" in presenter.failures[cut_off.id]
    assert (await repository.job(cut_off.id)).status == JobStatus.UNKNOWN
    assert presenter.delivered[done.id][0][0].id == image_id
    # Only the queued job reached WaveSpeed.
    assert simulator.request_counts["submit"] == 1


async def test_a_failed_job_is_reported_in_words(
    service: JobService, repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    presenter = RecordingPresenter()
    await service.start(presenter)
    simulator.inject(Fault.MODERATION)
    job = await service.enqueue(edit())
    await presenter.wait_for(lambda: job.id in presenter.failures)

    assert "content filter" in presenter.failures[job.id]
    assert (await repository.job(job.id)).status == JobStatus.FAILED
