"""The job service: owns every generation from the queue to the posted result.

A job is stored before anything is spent, so a restart can always finish it: jobs already
submitted are polled to the end (never submitted again), queued ones are submitted, finished but
undelivered results are delivered, and a job whose submission outcome is unknown is reported to
its requester rather than silently resubmitted.

The queue has a global concurrency cap (WaveSpeed's entry tier runs 2 jobs at once) and a
per-member cap; waiting jobs are started in first-come order shared fairly between members, so
one member's burst does not hold everyone else up. The Discord side is a `Presenter`: this module
never imports discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .images import header_size
from .settings import JobSettings
from .storage import JobImage, JobRecord, Repository
from .wavespeed import (
    InputImage,
    KontextError,
    ModelSpec,
    SubmissionUnknownError,
    WaveSpeedClient,
    model_for_path,
    validate_request,
)

log = logging.getLogger(__name__)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    # The submit POST is in flight: if the bot dies now, nobody knows whether the job exists.
    SUBMITTING = "submitting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


class Stage(enum.StrEnum):
    QUEUED = "queued"
    PREPARING = "preparing"
    GENERATING = "generating"
    POSTING = "posting"


OPEN_STATUSES = (JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.RUNNING, JobStatus.SUCCEEDED)
UNKNOWN_OUTCOME_MESSAGE = (
    "The bot restarted while sending this job to the image service, so it cannot tell whether "
    "the image was made. It was not sent again, so you are not charged twice: please try again."
)


class Presenter(Protocol):
    """What the job service needs from the chat surface."""

    async def show_progress(self, job: JobRecord, stage: Stage, detail: str) -> None: ...

    async def deliver(self, job: JobRecord, outputs: list[JobImage]) -> None: ...

    async def report_failure(self, job: JobRecord, message: str) -> None: ...


@dataclass(slots=True)
class NewJob:
    """A job as a member asked for it, validated, before it is stored."""

    action: str
    requester_id: int
    channel_id: int
    model: ModelSpec
    # Every option of the request except its images, seed included.
    params: dict[str, Any]
    inputs: Sequence[tuple[bytes, str, int, int]] = ()  # (data, content type, width, height)
    guild_id: int | None = None
    thread_id: int | None = None
    chain_id: int | None = None
    parent_id: int | None = None
    step: int = 1
    interaction_token: str | None = field(default=None, repr=False)
    token_expires_at: float | None = None
    upload_limit: int | None = None
    nsfw_allowed: bool = False
    status_message_id: int | None = None
    status_channel_id: int | None = None


class CancelOutcome(enum.StrEnum):
    CANCELLED = "cancelled"
    NOT_YOURS = "not yours"
    TOO_LATE = "too late"


class JobService:
    def __init__(
        self,
        repository: Repository,
        client: WaveSpeedClient,
        settings: JobSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._repository = repository
        self._client = client
        self._settings = settings
        self._clock = clock
        self._presenter: Presenter | None = None
        # Waiting jobs, by id, in arrival order.
        self._queue: dict[int, _Ticket] = {}
        self._running: dict[int, int] = {}  # job id -> member id
        # Fair queuing: each job gets a round when it arrives; rounds are served in order.
        self._round = 0
        self._member_round: dict[int, int] = {}
        self._arrivals = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None

    @property
    def repository(self) -> Repository:
        return self._repository

    # --- Life cycle -----------------------------------------------------------------------------

    async def start(self, presenter: Presenter) -> None:
        """Pick up what a previous run left open, then start taking jobs."""
        self._presenter = presenter
        await self._recover()
        self._scheduler = asyncio.create_task(self._schedule(), name="job-scheduler")

    async def stop(self) -> None:
        """Stop working; open jobs stay stored and are picked up by the next start."""
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _recover(self) -> None:
        for job in await self._repository.jobs_with_status(OPEN_STATUSES):
            if job.status == JobStatus.QUEUED:
                self._admit(job)
            elif job.status == JobStatus.SUBMITTING:
                log.warning("job %d: submission outcome unknown after a restart", job.id)
                job = await self._repository.update_job(
                    job.id, status=JobStatus.UNKNOWN, error=UNKNOWN_OUTCOME_MESSAGE
                )
                await self._report(job, UNKNOWN_OUTCOME_MESSAGE)
            elif job.status == JobStatus.RUNNING:
                log.info("job %d: resuming prediction %s", job.id, job.prediction_id)
                self._launch(job, self._resume(job))
            elif job.status == JobStatus.SUCCEEDED:
                log.info("job %d: delivering a result finished before the restart", job.id)
                self._launch(job, self._deliver(job))
        self._wake.set()

    # --- Taking jobs ----------------------------------------------------------------------------

    async def enqueue(self, new: NewJob) -> JobRecord:
        """Store the job and queue it. Nothing is spent until the scheduler starts it."""
        job = await self._repository.create_job(
            action=new.action,
            status=JobStatus.QUEUED,
            requester_id=new.requester_id,
            guild_id=new.guild_id,
            channel_id=new.channel_id,
            thread_id=new.thread_id,
            chain_id=new.chain_id,
            parent_id=new.parent_id,
            step=new.step,
            interaction_token=new.interaction_token,
            token_expires_at=new.token_expires_at,
            upload_limit=new.upload_limit,
            nsfw_allowed=new.nsfw_allowed,
            status_message_id=new.status_message_id,
            status_channel_id=new.status_channel_id,
            model_path=new.model.path,
            params=new.params,
            prompt=str(new.params.get("prompt") or ""),
            created_at=self._clock(),
        )
        image_ids = [await self._repository.add_image(*image) for image in new.inputs]
        await self._repository.set_job_images(job.id, "input", [(i, False) for i in image_ids])
        self._admit(job)
        self._wake.set()
        return job

    def _admit(self, job: JobRecord) -> None:
        # A member's next job waits one round after their previous one, but never in a round
        # already served: so turns alternate between members, and a place once given to a
        # member is never taken by a later job of someone who already had a turn.
        member = job.requester_id
        job_round = max(self._round, self._member_round.get(member, -1) + 1)
        self._member_round[member] = job_round
        self._queue[job.id] = _Ticket(job, job_round, next(self._arrivals))

    def position(self, job_id: int) -> int | None:
        """1 for the next job to start, 2 for the one after...; None once started or gone."""
        order = self._queue_order()
        return order.index(job_id) + 1 if job_id in order else None

    def queued_count(self) -> int:
        return len(self._queue)

    async def cancel(self, job_id: int, member_id: int) -> CancelOutcome:
        """Cancel a job still waiting in the queue; only its requester may."""
        job = await self._repository.job(job_id)
        if job.requester_id != member_id:
            return CancelOutcome.NOT_YOURS
        if job_id not in self._queue:
            return CancelOutcome.TOO_LATE
        del self._queue[job_id]
        await self._repository.update_job(job_id, status=JobStatus.CANCELLED)
        self._wake.set()
        return CancelOutcome.CANCELLED

    async def record_message(
        self, job: JobRecord, message_id: int, channel_id: int, kind: str
    ) -> None:
        await self._repository.record_message(
            message_id, channel_id=channel_id, job_id=job.id, kind=kind
        )

    # --- The queue ------------------------------------------------------------------------------

    def _queue_order(self) -> list[int]:
        """Waiting jobs in the order they will start: by round, then first come."""
        return sorted(self._queue, key=lambda job_id: self._queue[job_id].order)

    def _next_startable(self) -> int | None:
        if len(self._running) >= self._settings.max_concurrent:
            return None
        for job_id in self._queue_order():
            member = self._queue[job_id].member
            running = sum(1 for owner in self._running.values() if owner == member)
            if running < self._settings.per_member:
                return job_id
        return None

    async def _schedule(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (job_id := self._next_startable()) is not None:
                ticket = self._queue.pop(job_id)
                self._round = max(self._round, ticket.round)
                self._running[job_id] = ticket.member
                self._launch(ticket.job, self._run(ticket.job))
            await self._announce_positions()

    async def _announce_positions(self) -> None:
        # Waiting jobs do not change in the store, so their tickets' records are current.
        for position, job_id in enumerate(self._queue_order(), start=1):
            await self._progress(self._queue[job_id].job, Stage.QUEUED, queued_text(position))

    def _launch(self, job: JobRecord, work: Any) -> None:
        self._running.setdefault(job.id, job.requester_id)
        task = asyncio.create_task(work, name=f"job-{job.id}")
        self._tasks.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            self._running.pop(job.id, None)
            self._wake.set()
            if not done.cancelled() and done.exception() is not None:
                log.error("job %d crashed", job.id, exc_info=done.exception())

        task.add_done_callback(finished)

    # --- One job --------------------------------------------------------------------------------

    async def _run(self, job: JobRecord) -> None:
        await self._progress(job, Stage.PREPARING, "Preparing your image…")
        spec = model_for_path(job.model_path)
        try:
            request = validate_request(spec, {**job.params, **await self._inputs(job, spec)})
        except KontextError as exc:
            await self._fail(job, exc.user_message)
            return
        job = await self._repository.update_job(job.id, status=JobStatus.SUBMITTING)
        try:
            # Not sync mode: the prediction id must be stored before waiting, or a restart
            # during a long sync request could not find the (paid) job again.
            submission = await self._client.submit(spec, request, sync=False)
        except SubmissionUnknownError as exc:
            log.warning("job %d: %s", job.id, exc)
            job = await self._repository.update_job(
                job.id, status=JobStatus.UNKNOWN, error=exc.user_message
            )
            await self._report(job, exc.user_message)
            return
        except KontextError as exc:
            log.info("job %d refused at submit: %s", job.id, exc)
            await self._fail(job, exc.user_message)
            return
        job = await self._repository.update_job(
            job.id,
            status=JobStatus.RUNNING,
            prediction_id=submission.prediction_id,
            submitted_at=self._clock(),
            cost=None if submission.cost is None else str(submission.cost),
        )
        await self._await_result(job)

    async def _resume(self, job: JobRecord) -> None:
        await self._await_result(job)

    async def _await_result(self, job: JobRecord) -> None:
        assert job.prediction_id is not None
        spec = model_for_path(job.model_path)
        ticker = asyncio.create_task(self._tick_generating(job))
        try:
            result = await self._client.resume(
                spec,
                job.prediction_id,
                seed=job.params.get("seed"),
            )
        except KontextError as exc:
            log.info("job %d failed: %s", job.id, exc)
            await self._fail(job, exc.user_message)
            return
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        outputs = []
        for image in result.images:
            width, height = header_size(image.data)
            image_id = await self._repository.add_image(
                image.data, image.content_type, width, height
            )
            outputs.append((image_id, image.nsfw, image.url))
        await self._repository.set_job_images(job.id, "output", outputs)
        job = await self._repository.update_job(
            job.id,
            status=JobStatus.SUCCEEDED,
            completed_at=self._clock(),
            inference_ms=result.inference_ms,
        )
        await self._deliver(job)

    async def _tick_generating(self, job: JobRecord) -> None:
        started = job.submitted_at or self._clock()
        while True:
            elapsed = max(0, round(self._clock() - started))
            await self._progress(job, Stage.GENERATING, f"Generating… {elapsed} s")
            await asyncio.sleep(self._settings.status_interval_s)

    async def _deliver(self, job: JobRecord) -> None:
        assert self._presenter is not None
        await self._progress(job, Stage.POSTING, "Posting…")
        outputs = await self._repository.job_images(job.id, "output")
        try:
            await self._presenter.deliver(job, outputs)
        except Exception:
            # The result is stored and stays SUCCEEDED: the next start delivers it again.
            log.exception("job %d: delivery failed; it will be retried at the next start", job.id)
            return
        # The presenter made this step the chain's head when it posted the result (what a plain
        # message in the thread edits next): setting it again here, after the status edit,
        # would undo an Undo clicked in between.
        await self._repository.update_job(
            job.id, status=JobStatus.DELIVERED, delivered_at=self._clock()
        )

    async def _inputs(self, job: JobRecord, spec: ModelSpec) -> dict[str, Any]:
        stored = [entry.image for entry in await self._repository.job_images(job.id, "input")]
        images = [InputImage(image.data, image.content_type) for image in stored]
        if not images:
            return {}
        if "images" in spec.request.model_fields:
            return {"images": images}
        return {"image": images[0]}

    async def _fail(self, job: JobRecord, message: str) -> None:
        job = await self._repository.update_job(job.id, status=JobStatus.FAILED, error=message)
        await self._report(job, message)

    async def _report(self, job: JobRecord, message: str) -> None:
        if self._presenter is None:
            return
        try:
            await self._presenter.report_failure(job, message)
        except Exception:
            log.exception("job %d: could not tell the requester about its failure", job.id)

    async def _progress(self, job: JobRecord, stage: Stage, detail: str) -> None:
        if self._presenter is None:
            return
        try:
            await self._presenter.show_progress(job, stage, detail)
        except Exception:
            # Progress is a courtesy; the job goes on without it.
            log.warning("job %d: progress update failed", job.id, exc_info=True)


@dataclass(frozen=True, slots=True)
class _Ticket:
    job: JobRecord
    round: int
    arrival: int

    @property
    def member(self) -> int:
        return self.job.requester_id

    @property
    def order(self) -> tuple[int, int]:
        return (self.round, self.arrival)


def queued_text(position: int) -> str:
    if position == 1:
        return "Queued: you're next."
    return f"Queued: position {position}."
