"""The job engine against the WaveSpeed simulator: every paid image delivered exactly once.

Each test drives the real JobService, the real client and a real simulator over loopback; the
chat surface is a recording presenter that can refuse posts the way Discord does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest

from services.budget import BudgetLimits, Budgets
from services.jobs import (
    CRASHED_MESSAGE,
    NOTHING_MADE_MESSAGE,
    STUCK_MESSAGE,
    CancelOutcome,
    JobService,
    JobStatus,
    NewJob,
    PostFailedError,
    Stage,
    WebhookMode,
)
from services.settings import JobSettings
from services.simulator import Fault, SimulatorConfig, WaveSpeedSimulator
from services.status import Lane, RequestBudget
from services.storage import JobImage, JobRecord, NewImage, PostedResult, Repository
from services.wavespeed import KontextError, WaveSpeedClient, model_for_path
from services.wavespeed.webhooks import WebhookInbox
from services.webserver import Listener, Route, serve
from tests.conftest import API_KEY
from tests.images import make_png

PRO = model_for_path("flux-kontext-pro")
ALICE, BOB, CAROL = 1001, 1002, 1003


class RecordingPresenter:
    """The chat surface, reduced to what a member would see, with Discord's refusals."""

    def __init__(self) -> None:
        self.progress: list[tuple[int, Stage, str]] = []
        # Every post that reached "Discord", by job: more than one is a duplicate.
        self.posts: dict[int, list[PostedResult]] = {}
        self.images: dict[int, list[JobImage]] = {}
        self.nonces: dict[int, set[str]] = {}
        self.failures: dict[int, str] = {}
        self.retry_offered: set[int] = set()
        self.lookups: list[int] = []
        # Refusals to raise, in order, before posts succeed again.
        self.refusals: list[PostFailedError] = []
        # Posts that land, but whose answer is lost (PostFailedError maybe_posted).
        self.lose_answers = 0
        self.changed = asyncio.Event()
        self._next_id = 5000

    @property
    def delivered(self) -> set[int]:
        return set(self.posts)

    async def show_progress(self, job: JobRecord, stage: Stage, detail: str) -> None:
        self.progress.append((job.id, stage, detail))
        self._poke()

    async def post_result(
        self, job: JobRecord, outputs: Sequence[JobImage], *, nonce: str
    ) -> PostedResult:
        if self.refusals:
            raise self.refusals.pop(0)
        self.nonces.setdefault(job.id, set()).add(nonce)
        self._next_id += 1
        posted = PostedResult(self._next_id, 555, f"https://discord/{self._next_id}", None)
        self.posts.setdefault(job.id, []).append(posted)
        self.images[job.id] = list(outputs)
        self._poke()
        if self.lose_answers:
            self.lose_answers -= 1
            raise PostFailedError("connection reset", maybe_posted=True)
        return posted

    async def find_result(self, job: JobRecord) -> PostedResult | None:
        self.lookups.append(job.id)
        found = self.posts.get(job.id)
        return found[0] if found else None

    async def finish_status(self, job: JobRecord, posted: PostedResult) -> None:
        self._poke()

    async def report_failure(self, job: JobRecord, message: str, *, retry: bool = False) -> None:
        self.failures[job.id] = message
        if retry:
            self.retry_offered.add(job.id)
        self._poke()

    def _poke(self) -> None:
        self.changed.set()

    async def wait_for(self, done: Callable[[], bool], within_s: float = 10) -> None:
        async with asyncio.timeout(within_s):
            while not done():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(
        api_keys=frozenset({API_KEY}),
        latency_s=0.3,
        # A sync submit of a stuck job gives up (5004) soon, as WaveSpeed's does, only sooner.
        sync_wait_s=1.0,
        max_output_side=128,
        max_concurrent_per_key=10,
    )


@pytest.fixture
async def repository() -> AsyncIterator[Repository]:
    repository = await Repository.open(":memory:")
    yield repository
    await repository.close()


FAST = {
    "status_interval_s": 0.05,
    # Statuses go out as soon as the updater gets to them, so tests see every stage.
    "status_edit_gap_s": 0.0,
    "reconcile_interval_s": 0.05,
    "reconcile_window_s": 0.5,
    "breaker_probe_s": 0.05,
}


@pytest.fixture
def make_service(
    repository: Repository, make_client: Callable[..., WaveSpeedClient]
) -> Callable[..., JobService]:
    def build(**settings: Any) -> JobService:
        return JobService(repository, make_client(), JobSettings(**{**FAST, **settings}))

    return build


@pytest.fixture
async def service(make_service: Callable[..., JobService]) -> AsyncIterator[JobService]:
    service = make_service()
    yield service
    await service.stop()


# A member's daily budget of $0.04: one Kontext Pro edit.
MEMBER_CAP = BudgetLimits(member_daily=40_000)


def held(budgets: Budgets, job: NewJob) -> NewJob:
    """`job` with its price held against MEMBER_CAP as it is stored."""
    hold = budgets.hold_for(job.model, job.params, job.guild_id, job.requester_id, MEMBER_CAP)
    return dataclasses.replace(job, hold=hold)


def edit(member: int = ALICE, prompt: str = "make it a watercolor", seed: int = 7) -> NewJob:
    return NewJob(
        action="edit",
        requester_id=member,
        channel_id=555,
        model=PRO,
        params={"prompt": prompt, "seed": seed},
        inputs=[NewImage(make_png(), "image/png", 64, 48)],
        new_chain=True,
    )


async def status_of(repository: Repository, job: JobRecord) -> str:
    return (await repository.job(job.id)).status


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
    (posted,) = presenter.posts[job.id]
    assert stored.result_message_id == posted.message_id
    assert await repository.messages_of(job.id, "result") == [(555, posted.message_id)]
    assert (await repository.chain(stored.chain_id or 0)).head_job_id == job.id
    ((image, nsfw, url),) = presenter.images[job.id]
    assert url is not None and url.startswith(simulator.base_url)
    assert image.content_type == "image/jpeg" and nsfw is False
    assert presenter.nonces[job.id] == {f"kontext-{job.id}"}
    stages = [stage for job_id, stage, _ in presenter.progress if job_id == job.id]
    assert Stage.PREPARING in stages and Stage.GENERATING in stages
    assert stages[-1] == Stage.POSTING
    # Sent by a separate task, yet never out of order: no stage comes back after a later one.
    order = [Stage.PREPARING, Stage.GENERATING, Stage.POSTING]
    assert stages == sorted(stages, key=order.index)


async def test_cap_and_fair_order_between_members(
    make_service: Callable[..., JobService],
    repository: Repository,
    simulator: WaveSpeedSimulator,
) -> None:
    service = make_service(max_concurrent=1)
    presenter = RecordingPresenter()
    # Everyone queues before anything starts, so the order is the queue's alone.
    a1 = await service.enqueue(edit(ALICE, "a1"))
    a2 = await service.enqueue(edit(ALICE, "a2"))
    a3 = await service.enqueue(edit(ALICE, "a3"))
    b1 = await service.enqueue(edit(BOB, "b1"))
    c1 = await service.enqueue(edit(CAROL, "c1"))
    assert [await service.position(j.id) for j in (a1, b1, c1, a2, a3)] == [1, 2, 3, 4, 5]
    await service.start(presenter)
    try:
        await presenter.wait_for(lambda: len(presenter.delivered) == 5, within_s=15)
    finally:
        await service.stop()

    # One at a time, so the submits are strictly ordered: Alice's burst waits its turns.
    finished = [await repository.job(j.id) for j in (a1, a2, a3, b1, c1)]
    order = sorted(finished, key=lambda j: j.submit_started_at or 0)
    assert [j.prompt for j in order] == ["a1", "b1", "c1", "a2", "a3"]
    # While a1 ran, waiting members saw where they stood.
    assert ("queued", "Queued: position 2.") in [
        (stage, text) for job_id, stage, text in presenter.progress if job_id == c1.id
    ]


async def test_per_member_cap_lets_others_pass(
    make_service: Callable[..., JobService], simulator: WaveSpeedSimulator
) -> None:
    service = make_service(max_concurrent=2, per_member=1)
    presenter = RecordingPresenter()
    await service.enqueue(edit(ALICE, "a1"))
    a2 = await service.enqueue(edit(ALICE, "a2"))
    b1 = await service.enqueue(edit(BOB, "b1"))
    await service.start(presenter)
    try:
        await presenter.wait_for(lambda: (b1.id, Stage.PREPARING) in _stages(presenter))
        # Alice is at her cap, so Bob's later job took the second slot.
        assert await service.position(a2.id) == 1
        await presenter.wait_for(lambda: len(presenter.delivered) == 3)
    finally:
        await service.stop()


def _stages(presenter: RecordingPresenter) -> set[tuple[int, Stage]]:
    return {(job_id, stage) for job_id, stage, _ in presenter.progress}


async def test_cancel_while_queued_only_by_the_requester(
    make_service: Callable[..., JobService],
    repository: Repository,
    simulator: WaveSpeedSimulator,
) -> None:
    service = make_service(max_concurrent=1)
    presenter = RecordingPresenter()
    first = await service.enqueue(edit(ALICE, "first"))
    waiting = await service.enqueue(edit(ALICE, "second"))
    await service.start(presenter)
    try:
        assert await service.cancel(waiting.id, BOB) == CancelOutcome.NOT_YOURS
        assert await service.cancel(waiting.id, ALICE) == CancelOutcome.CANCELLED
        await presenter.wait_for(lambda: (first.id, Stage.PREPARING) in _stages(presenter))
        assert await service.cancel(first.id, ALICE) == CancelOutcome.TOO_LATE
        await presenter.wait_for(lambda: first.id in presenter.delivered)
    finally:
        await service.stop()

    assert await status_of(repository, waiting) == JobStatus.CANCELLED
    assert len(simulator.predictions) == 1


async def test_restart_while_running_delivers_once_billed_once(
    make_service: Callable[..., JobService],
    repository: Repository,
    simulator: WaveSpeedSimulator,
) -> None:
    before = make_service()
    watcher = RecordingPresenter()
    await before.start(watcher)
    job = await before.enqueue(edit())
    await watcher.wait_for(lambda: (job.id, Stage.GENERATING) in _stages(watcher))
    await before.stop()  # the bot goes down with the job running at WaveSpeed
    # The submit on its way was let finish; the wait for the result was left to the next start.
    assert await status_of(repository, job) == JobStatus.RUNNING

    after = make_service()
    presenter = RecordingPresenter()
    await after.start(presenter)
    try:
        await _until(lambda: status_of(repository, job), JobStatus.DELIVERED)
    finally:
        await after.stop()

    assert len(presenter.posts[job.id]) == 1
    assert simulator.request_counts["submit"] == 1
    assert len(simulator.billed) == 1
    assert await status_of(repository, job) == JobStatus.DELIVERED


async def test_a_lost_submit_answer_is_found_again_and_delivered(
    service: JobService, repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    presenter = RecordingPresenter()
    await service.start(presenter)
    # The simulator makes the prediction, then drops the connection: the answer is lost.
    simulator.inject(Fault.DROP)
    job = await service.enqueue(edit())
    await presenter.wait_for(lambda: job.id in presenter.delivered)

    stored = await repository.job(job.id)
    assert stored.status == JobStatus.DELIVERED
    assert simulator.request_counts["submit"] == 1
    assert list(simulator.predictions) == [stored.prediction_id]
    assert job.id not in presenter.failures


async def test_a_submit_that_never_arrived_is_reported_with_retry(
    make_service: Callable[..., JobService],
    repository: Repository,
    simulator: WaveSpeedSimulator,
) -> None:
    # The bot died with the POST in flight, before WaveSpeed saw it: nothing exists.
    job = await make_service().enqueue(edit())
    await _as_if_cut_off_during_submit(repository, job)

    service = make_service()
    presenter = RecordingPresenter()
    await service.start(presenter)
    try:
        await presenter.wait_for(lambda: job.id in presenter.failures)
    finally:
        await service.stop()

    assert presenter.failures[job.id] == NOTHING_MADE_MESSAGE
    assert job.id in presenter.retry_offered
    assert await status_of(repository, job) == JobStatus.FAILED
    assert simulator.request_counts["submit"] == 0


async def test_a_submit_cut_off_by_a_restart_is_adopted_not_sent_again(
    make_service: Callable[..., JobService],
    make_client: Callable[..., WaveSpeedClient],
    repository: Repository,
    simulator: WaveSpeedSimulator,
) -> None:
    job = await make_service().enqueue(edit(BOB, "a lighthouse at dusk", seed=42))
    await _as_if_cut_off_during_submit(repository, job)
    # ...and the POST had reached WaveSpeed: the prediction exists, its id never stored.
    request = make_client().prepare(
        PRO, prompt="a lighthouse at dusk", seed=42, image=_input_of(make_png())
    )
    await make_client().submit(PRO, request, sync=False)
    # A look-alike from another request must not be taken for it.
    other = make_client().prepare(PRO, prompt="a lighthouse at dusk", seed=43, image=request.image)
    await make_client().submit(PRO, other, sync=False)

    service = make_service()
    presenter = RecordingPresenter()
    await service.start(presenter)
    try:
        await presenter.wait_for(lambda: job.id in presenter.delivered)
    finally:
        await service.stop()

    stored = await repository.job(job.id)
    assert simulator.predictions[stored.prediction_id or ""].request["seed"] == 42
    assert simulator.request_counts["submit"] == 2  # the two above; the job sent none


def _input_of(data: bytes) -> Any:
    from services.wavespeed import InputImage

    return InputImage(data, "image/png")


async def _as_if_cut_off_during_submit(repository: Repository, job: JobRecord) -> None:
    """Leave the job as a bot killed during its submit POST leaves it."""
    from services.fingerprint import fingerprint_of
    from services.wavespeed import validate_request

    (stored,) = await repository.job_images(job.id, "input")
    request = validate_request(PRO, {**job.params, "image": _input_of(stored.image.data)})
    now = job.created_at
    await repository.transition(job.id, JobStatus.QUEUED, JobStatus.STARTING)
    await repository.transition(
        job.id,
        JobStatus.STARTING,
        JobStatus.SUBMITTING,
        fingerprint=fingerprint_of(PRO, request, at=now),
        submit_started_at=now,
    )


async def test_refused_submits_wait_out_an_outage_and_nothing_is_lost(
    make_service: Callable[..., JobService],
    repository: Repository,
    simulator: WaveSpeedSimulator,
) -> None:
    service = make_service(breaker_threshold=2, max_refusals=5)
    presenter = RecordingPresenter()
    # The client tries a refused submit 4 times: two refused jobs' worth, then a third try.
    simulator.inject(Fault.UNAVAILABLE, times=8)
    await service.start(presenter)
    try:
        job = await service.enqueue(edit())
        await presenter.wait_for(lambda: job.id in presenter.delivered)
    finally:
        await service.stop()

    assert job.id not in presenter.failures
    stored = await repository.job(job.id)
    assert stored.refusals == 2 and stored.status == JobStatus.DELIVERED
    # Refused twice (nothing made), then sent once: billed once.
    assert len(simulator.predictions) == 1
    assert "waiting" in {stage for _, stage, _ in presenter.progress}


async def test_a_stuck_prediction_ends_and_frees_its_slot(
    make_service: Callable[..., JobService],
    repository: Repository,
    simulator: WaveSpeedSimulator,
) -> None:
    service = make_service(max_concurrent=1, job_deadline_s=1.0)
    presenter = RecordingPresenter()
    simulator.inject(Fault.STUCK)
    stuck = await service.enqueue(edit(ALICE, "stuck"))
    other = await service.enqueue(edit(BOB, "fine"))
    await service.start(presenter)
    try:
        await presenter.wait_for(lambda: other.id in presenter.delivered)
    finally:
        await service.stop()

    assert presenter.failures[stuck.id] == STUCK_MESSAGE
    assert await status_of(repository, stuck) == JobStatus.FAILED


async def test_refused_posts_are_retried_until_they_land_once(
    service: JobService, repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    presenter = RecordingPresenter()
    presenter.refusals = [
        PostFailedError("rate limited", retry_after=0.05),
        PostFailedError("forbidden (50013)"),
    ]
    presenter.lose_answers = 1
    await service.start(presenter)
    job = await service.enqueue(edit())
    await presenter.wait_for(lambda: job.id in presenter.delivered and job.id in presenter.lookups)
    await _until(lambda: status_of(repository, job), JobStatus.DELIVERED)

    # The post whose answer was lost is found, not posted again.
    assert len(presenter.posts[job.id]) == 1
    assert (await repository.job(job.id)).result_message_id == presenter.posts[job.id][0].message_id


async def test_posts_refused_past_the_deadline_say_where_the_image_is(
    make_service: Callable[..., JobService], repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    service = make_service(delivery_deadline_s=0.3)
    presenter = RecordingPresenter()
    presenter.refusals = [PostFailedError("forbidden (50013)", retry_after=0.1)] * 10
    await service.start(presenter)
    try:
        job = await service.enqueue(edit())
        await presenter.wait_for(lambda: job.id in presenter.failures)
    finally:
        await service.stop()

    assert await status_of(repository, job) == JobStatus.UNDELIVERABLE
    assert simulator.base_url in presenter.failures[job.id]


async def test_a_restart_mid_delivery_looks_before_posting_again(
    make_service: Callable[..., JobService], repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    before = make_service()
    first = RecordingPresenter()
    first.lose_answers = 1
    first.refusals = []
    await before.start(first)
    job = await before.enqueue(edit())
    await first.wait_for(lambda: job.id in first.delivered)
    await before.stop()  # killed with the post made but not recorded
    assert await status_of(repository, job) == JobStatus.DELIVERING

    after = make_service()
    second = RecordingPresenter()
    second.posts = dict(first.posts)  # what Discord has
    await after.start(second)
    try:
        await _until(lambda: status_of(repository, job), JobStatus.DELIVERED)
    finally:
        await after.stop()
    assert len(second.posts[job.id]) == 1
    assert second.lookups == [job.id]


async def test_stop_lets_a_submit_in_flight_finish(
    make_service: Callable[..., JobService], repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    service = make_service()
    presenter = RecordingPresenter()
    simulator.config = dataclasses.replace(simulator.config, submit_answer_delay_s=0.5)
    await service.start(presenter)
    job = await service.enqueue(edit())
    await _until(lambda: status_of(repository, job), JobStatus.SUBMITTING)
    await service.stop()

    # The POST was not cut off: its answer was stored, so the next start only waits.
    stored = await repository.job(job.id)
    assert stored.status == JobStatus.RUNNING and stored.prediction_id in simulator.predictions


async def test_stop_past_its_grace_leaves_no_submit_running_behind_it(
    make_service: Callable[..., JobService], repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    service = make_service(shutdown_grace_s=0.1)
    presenter = RecordingPresenter()
    # The submit's answer comes long after the grace: stop must not wait for it...
    simulator.config = dataclasses.replace(simulator.config, submit_answer_delay_s=1.0)
    await service.start(presenter)
    job = await service.enqueue(edit())
    await _until(lambda: status_of(repository, job), JobStatus.SUBMITTING)
    await service.stop()

    # ...nor leave it running: right after stop the bot closes the HTTP session and the job
    # store, and a submit still on its way would then fail writing its outcome (a traceback).
    running = [
        task
        for task in asyncio.all_tasks()
        if not task.done() and task.get_coro().__qualname__.startswith("JobService.")
    ]
    assert running == []
    # Cut off mid-POST, the job may exist: the next start looks it up instead of sending it.
    assert await status_of(repository, job) == JobStatus.SUBMITTING


async def test_an_unreadable_row_is_set_aside_and_the_rest_go_on(
    make_service: Callable[..., JobService], repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    broken = await make_service().enqueue(edit(ALICE, "broken"))
    fine = await make_service().enqueue(edit(BOB, "fine"))
    async with repository._db.transaction() as db:  # a row damaged by hand, or by a bug
        await db.execute("UPDATE jobs SET params = '{not json' WHERE id = ?", (broken.id,))

    service = make_service()
    presenter = RecordingPresenter()
    await service.start(presenter)
    try:
        await presenter.wait_for(lambda: fine.id in presenter.delivered)
    finally:
        await service.stop()
    row = await repository._db.fetchone("SELECT status FROM jobs WHERE id = ?", (broken.id,))
    assert row is not None and row[0] == JobStatus.SET_ASIDE


async def _until(read: Callable[[], Any], wanted: str, within_s: float = 10) -> None:
    async with asyncio.timeout(within_s):
        # The store has no change feed: poll it.
        while await read() != wanted:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_proxy_error_on_submit_is_looked_up_then_reported_with_retry(
    service: JobService, repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    presenter = RecordingPresenter()
    await service.start(presenter)
    # A 502 page from a proxy: the job may or may not exist. Here it does not.
    simulator.inject(Fault.BAD_GATEWAY)
    job = await service.enqueue(edit())
    await presenter.wait_for(lambda: job.id in presenter.failures)

    assert presenter.failures[job.id] == NOTHING_MADE_MESSAGE and job.id in presenter.retry_offered
    assert simulator.request_counts["submit"] == 1 and simulator.request_counts["history"] >= 1
    assert simulator.predictions == {}


async def test_a_lost_submit_that_made_nothing_gives_its_hold_back_and_a_made_one_keeps_it(
    repository: Repository,
    make_client: Callable[..., WaveSpeedClient],
    simulator: WaveSpeedSimulator,
) -> None:
    budgets = Budgets(repository, time.time)
    service = JobService(repository, make_client(), JobSettings(**FAST))

    presenter = RecordingPresenter()
    await service.start(presenter)
    try:
        # A 502 from a proxy: looked up, found nowhere, so nothing was made or charged.
        simulator.inject(Fault.BAD_GATEWAY)
        lost = await service.enqueue(held(budgets, edit()))
        await presenter.wait_for(lambda: lost.id in presenter.failures)
        assert presenter.failures[lost.id] == NOTHING_MADE_MESSAGE
        # Its $0.04 is free again: a new job fits, is made, and keeps the budget spent.
        made = await service.enqueue(held(budgets, edit()))
        await presenter.wait_for(lambda: made.id in presenter.delivered)
        assert (await budgets.usage(None, ALICE, MEMBER_CAP)).spent.member_day == 40_000
        with pytest.raises(KontextError, match=r"Your daily budget of \$0\.04 here is used up"):
            await service.enqueue(held(budgets, edit()))
    finally:
        await service.stop()
    assert simulator.billed_total == Decimal("0.04")


@pytest.mark.parametrize(
    "simulator_config",
    [
        SimulatorConfig(
            api_keys=frozenset({API_KEY}), latency_s=0, max_output_side=128, balance=Decimal("0.03")
        )
    ],
)
async def test_an_account_out_of_credit_fails_the_job_in_plain_words_and_holds_nothing(
    repository: Repository,
    make_client: Callable[..., WaveSpeedClient],
    simulator: WaveSpeedSimulator,
) -> None:
    budgets = Budgets(repository, time.time)
    service = JobService(repository, make_client(), JobSettings(**FAST))
    presenter = RecordingPresenter()
    await service.start(presenter)
    try:
        # $0.03 left at WaveSpeed, and an edit costs $0.04: refused, nothing made.
        refused = await service.enqueue(held(budgets, edit()))
        await presenter.wait_for(lambda: refused.id in presenter.failures)
        message = presenter.failures[refused.id]
        assert "WaveSpeed account is out of credit" in message
        assert "nothing was charged" in message and "server owner" in message
        assert "top it up" in message and refused.id not in presenter.retry_offered
        assert await status_of(repository, refused) == JobStatus.FAILED
        assert simulator.predictions == {} and simulator.billed == []
        # The member's $0.04 was given back: after a top-up the same budget pays for an edit.
        assert (await budgets.usage(None, ALICE, MEMBER_CAP)).spent.member_day == 0
        simulator.set_balance("1.00")
        made = await service.enqueue(held(budgets, edit()))
        await presenter.wait_for(lambda: made.id in presenter.delivered)
    finally:
        await service.stop()
    assert simulator.balance == Decimal("0.96")


async def test_a_crashed_job_is_logged_its_member_told_and_the_rest_go_on(
    service: JobService,
    repository: Repository,
    simulator: WaveSpeedSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    presenter = RecordingPresenter()
    crashes = [RuntimeError("a bug in the chat surface")]
    real_post = presenter.post_result

    async def post_result(job: JobRecord, outputs: Sequence[JobImage], *, nonce: str) -> Any:
        if crashes:
            raise crashes.pop()
        return await real_post(job, outputs, nonce=nonce)

    presenter.post_result = post_result  # type: ignore[method-assign]
    await service.start(presenter)
    crashed = await service.enqueue(edit(ALICE, "crashes"))
    await presenter.wait_for(lambda: crashed.id in presenter.failures)
    fine = await service.enqueue(edit(BOB, "fine"))
    await presenter.wait_for(lambda: fine.id in presenter.delivered)

    assert presenter.failures[crashed.id] == CRASHED_MESSAGE
    assert f"job {crashed.id} crashed" in caplog.text
    # Made and stored: it stays open, so the next start posts it.
    assert await status_of(repository, crashed) == JobStatus.DELIVERING


async def test_a_slow_prediction_stops_holding_others_up_long_before_its_deadline(
    make_service: Callable[..., JobService],
    repository: Repository,
    simulator: WaveSpeedSimulator,
) -> None:
    service = make_service(max_concurrent=1, slow_after_s=0.5, job_deadline_s=60.0)
    presenter = RecordingPresenter()
    simulator.inject(Fault.STUCK)
    stuck = await service.enqueue(edit(ALICE, "stuck"))
    other = await service.enqueue(edit(BOB, "fine"))
    await service.start(presenter)
    try:
        await presenter.wait_for(lambda: other.id in presenter.delivered)
        # The stuck one still waits for its own end (or its deadline); it was not given up.
        assert await status_of(repository, stuck) in (JobStatus.SUBMITTING, JobStatus.RUNNING)
    finally:
        await service.stop()


@pytest.fixture
async def webhooks(
    make_client: Callable[..., WaveSpeedClient],
) -> AsyncIterator[WebhookMode]:
    """Webhook mode: an inbox served on loopback, as bot.py sets it up."""
    inbox = WebhookInbox(await make_client().webhook_secret())
    route = Route("POST", "/hooks/wavespeed", inbox.handle)
    async with serve([Listener("webhooks", "127.0.0.1", 0, [route])]) as ports:
        port = ports["webhooks"]
        yield WebhookMode(inbox, f"http://127.0.0.1:{port}/hooks/wavespeed", safety_poll_s=30.0)


async def test_webhook_mode_needs_no_polls_and_shrugs_off_repeats(
    repository: Repository,
    make_client: Callable[..., WaveSpeedClient],
    simulator: WaveSpeedSimulator,
    webhooks: WebhookMode,
) -> None:
    service = JobService(repository, make_client(), JobSettings(**FAST), webhooks=webhooks)
    presenter = RecordingPresenter()
    simulator.inject(Fault.WEBHOOK_DUPLICATE)
    await service.start(presenter)
    try:
        jobs = [await service.enqueue(edit(member, f"job {member}")) for member in (ALICE, BOB)]
        await presenter.wait_for(lambda: {j.id for j in jobs} <= presenter.delivered)
    finally:
        await service.stop()

    # Submit and download, nothing else: two WaveSpeed requests per job.
    assert simulator.request_counts["submit"] == 2 and simulator.request_counts["result"] == 0
    assert simulator.request_counts["download"] == 2
    assert len(simulator.webhook_deliveries) == 3  # one delivered twice
    assert all(len(posts) == 1 for posts in presenter.posts.values())


async def test_webhook_mode_polls_slowly_when_deliveries_never_come(
    repository: Repository,
    make_client: Callable[..., WaveSpeedClient],
    simulator: WaveSpeedSimulator,
) -> None:
    # Deliveries go to a port nobody listens on: only the safety net finds the result.
    inbox = WebhookInbox(await make_client().webhook_secret())
    lost = WebhookMode(inbox, "http://127.0.0.1:9/hooks/wavespeed", safety_poll_s=0.2)
    service = JobService(repository, make_client(), JobSettings(**FAST), webhooks=lost)
    presenter = RecordingPresenter()
    await service.start(presenter)
    try:
        job = await service.enqueue(edit())
        await presenter.wait_for(lambda: job.id in presenter.delivered)
    finally:
        await service.stop()
    assert 1 <= simulator.request_counts["result"] <= 5


class SlowPresenter(RecordingPresenter):
    """Each status edit takes as long as a request to a distant Discord."""

    def __init__(self) -> None:
        super().__init__()
        self.edits_landed: list[float] = []
        self.posted_at: dict[int, float] = {}

    async def show_progress(self, job: JobRecord, stage: Stage, detail: str) -> None:
        await asyncio.sleep(0.05)
        await super().show_progress(job, stage, detail)
        self.edits_landed.append(time.time())

    async def post_result(
        self, job: JobRecord, outputs: Sequence[JobImage], *, nonce: str
    ) -> PostedResult:
        self.posted_at[job.id] = time.time()
        return await super().post_result(job, outputs, nonce=nonce)


async def test_a_freed_slot_is_filled_at_once_however_slow_status_edits_are(
    make_service: Callable[..., JobService], repository: Repository, simulator: WaveSpeedSimulator
) -> None:
    # The service's clock is time.time, the one the presenter stamps its edits with.
    service = make_service(max_concurrent=1)
    presenter = SlowPresenter()
    # 51 members, one job each: the first runs, 50 wait, and every one of them has a status.
    jobs = [await service.enqueue(edit(2000 + n, f"job {n}")) for n in range(51)]
    first, second = jobs[0], jobs[1]
    await service.start(presenter)
    try:
        await presenter.wait_for(lambda: second.id in presenter.delivered, within_s=15)
    finally:
        await service.stop()

    freed = presenter.posted_at[first.id]
    started = (await repository.job(second.id)).submit_started_at
    assert started is not None
    # Fifty waiting statuses, 50 ms each, were being edited when the slot came free; sent one
    # after another by the scheduler, dozens would land before the next job could start.
    landed_meanwhile = [t for t in presenter.edits_landed if freed <= t <= started]
    assert len(landed_meanwhile) <= 3
    # Not by dropping them: the budget let its status share of a window through meanwhile.
    share = RequestBudget.LANE_SHARES[Lane.STATUS]
    assert len(presenter.edits_landed) >= int(JobSettings().discord_requests_per_s * share)


async def test_sync_submits_never_take_the_whole_connection_pool(
    repository: Repository,
    make_client: Callable[..., WaveSpeedClient],
    simulator: WaveSpeedSimulator,
) -> None:
    # Two connections: one may be held by a sync submit, the other job is submitted and polled.
    client = make_client(max_connections=2)
    service = JobService(repository, client, JobSettings(**FAST, max_concurrent=2, per_member=2))
    presenter = RecordingPresenter()
    await service.start(presenter)
    try:
        jobs = [await service.enqueue(edit(ALICE, f"job {n}")) for n in range(2)]
        await presenter.wait_for(lambda: {j.id for j in jobs} <= presenter.delivered)
    finally:
        await service.stop()
    sync_flags = [p.request.get("enable_sync_mode") for p in simulator.predictions.values()]
    assert sorted(map(bool, sync_flags)) == [False, True]
