"""The job service: owns every generation from the queue to the posted result.

A job is a durable state machine in the store (see `JobStatus`); every step is a conditional
transition, so nothing is true only in memory and a restart resumes each open job from where it
stood:

    queued -> starting -> submitting -> running -> succeeded -> delivering -> delivered
                              |            ^
                              +-> unknown -+   (a lost submit, found again at WaveSpeed)

The rules, each kept in one place below:
- Submit once (`_submit`): the POST is sent at most once per job, after its fingerprint is
  stored; a lost answer makes the job `unknown`, never a second POST.
- Reconcile, don't guess (`_reconcile`): an unknown job is looked up in WaveSpeed's list of
  predictions; adopted if found, reported as "nothing made, nothing charged" once the window
  has safely passed.
- Patience (`_await_result`): waits end at the prediction's own end or the job's deadline; the
  client rides out transient failures. A run of refused submits opens a circuit breaker that
  holds the queue until WaveSpeed answers again.
- Deliver exactly once (`_deliver`): posts are retried with backoff, carry a nonce, and are
  recorded with the DELIVERED mark in one transaction; after a restart a post that may have
  landed is looked for before anything is posted again.

The queue has a global concurrency cap (WaveSpeed's entry tier runs 2 jobs at once) and a
per-member cap; waiting jobs start by fair turns (see `Repository.create_job`). The Discord side
is a `Presenter`: this module never imports discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeVar

from .breaker import CircuitBreaker
from .fingerprint import fingerprint_of, matches
from .images import header_size
from .logs import bind_job, bind_prediction
from .metrics import Metrics
from .modlog import LogEntry, LogNote, ModLog
from .settings import JobSettings
from .status import RequestBudget, StatusUpdater
from .storage import (
    WEBHOOK_NEWS,
    BudgetHold,
    JobImage,
    JobRecord,
    JobStatus,
    NewImage,
    PostedResult,
    Repository,
)
from .wavespeed import (
    AuthenticationError,
    InputImage,
    InsufficientCreditError,
    KontextError,
    ModelSpec,
    Prediction,
    RateLimitedError,
    ServerError,
    SubmissionUnknownError,
    TimedOutError,
    WaveSpeedClient,
    model_for_path,
    validate_request,
)
from .wavespeed.retry import RetryPolicy
from .wavespeed.webhooks import WebhookInbox

log = logging.getLogger(__name__)

T = TypeVar("T")


class Stage(enum.StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"
    PREPARING = "preparing"
    GENERATING = "generating"
    POSTING = "posting"


NOTHING_MADE_MESSAGE = (
    "The connection to the image service broke while sending this job, and the image service "
    "has no record of it: nothing was made and nothing was charged. Press Retry to send it again."
)
STUCK_MESSAGE = (
    "The image service has been working on this image for too long, so I stopped waiting. "
    "If it finishes later, nothing more happens; if it was charged, the image service refunds "
    "time-outs on its own."
)
REFUSED_MESSAGE = (
    "The image service kept refusing new images, so this one was not sent: nothing was "
    "charged. Please try again later."
)
CRASHED_MESSAGE = "Something went wrong on my side with this image. It has been logged."
WAITING_TEXT = "Waiting for the image service to come back…"
CHECKING_TEXT = "The connection broke while sending: checking whether the image was made…"


class ShuttingDownError(KontextError):
    default_message = "I'm restarting right now. Please try again in a minute."


class PostFailedError(Exception):
    """A result post Discord did not take (raised by the presenter).

    `maybe_posted`: the request may have reached Discord (a lost answer, a 5xx), so look for the
    message before posting again. `permanent`: retrying cannot help (the channel is gone).
    """

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        maybe_posted: bool = False,
        permanent: bool = False,
    ) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.maybe_posted = maybe_posted
        self.permanent = permanent


class Presenter(Protocol):
    """What the job service needs from the chat surface. It posts and returns what it posted;
    the job service records it."""

    async def show_progress(self, job: JobRecord, stage: Stage, detail: str) -> None: ...

    async def post_result(
        self, job: JobRecord, outputs: Sequence[JobImage], *, nonce: str
    ) -> PostedResult: ...

    async def find_result(self, job: JobRecord) -> PostedResult | None: ...

    async def finish_status(self, job: JobRecord, posted: PostedResult) -> None: ...

    async def report_failure(self, job: JobRecord, message: str, *, retry: bool = False) -> None:
        """Tell the requester, privately where possible; never a new public message."""
        ...

    async def post_log_entry(self, entry: LogEntry) -> None:
        """Post an ended job's entry in its server's log channel, pinging nobody; raises
        whatever the chat service answered when it did not take it."""
        ...

    async def post_log_note(self, note: LogNote) -> None:
        """Post a note in a server's log channel (as `post_log_entry`)."""
        ...


@dataclass(frozen=True, slots=True)
class _Status:
    """A published status; two are the same when they would show the same line."""

    job: JobRecord = field(compare=False)
    stage: Stage
    detail: str


@dataclass(slots=True)
class NewJob:
    """A job as a member asked for it, validated, before it is stored. Its fields, but for
    `model`, `inputs` and `new_chain`, are stored as the job's columns of the same names."""

    action: str
    requester_id: int
    channel_id: int
    model: ModelSpec
    # Every option of the request except its images, seed included.
    params: dict[str, Any]
    inputs: Sequence[NewImage] = ()
    guild_id: int | None = None
    thread_id: int | None = None
    # A new chain is stored with the job; otherwise the job continues `chain_id`.
    new_chain: bool = False
    chain_id: int | None = None
    parent_id: int | None = None
    step: int = 1
    interaction_token: str | None = field(default=None, repr=False)
    token_expires_at: float | None = None
    upload_limit: int | None = None
    nsfw_allowed: bool = False
    status_message_id: int | None = None
    status_channel_id: int | None = None
    # Its price, held against the budgets as it is stored (services/community.py); None: free.
    hold: BudgetHold | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class WebhookMode:
    """Completion by webhook: WaveSpeed calls `url` when a job ends, `inbox` receives it."""

    inbox: WebhookInbox
    url: str
    # A poll this often stays as a safety net for deliveries that never come.
    safety_poll_s: float

    def url_for(self, job_id: int) -> str:
        # The job's id rides along, so any process receiving the delivery knows the job.
        return f"{self.url}{'&' if '?' in self.url else '?'}job={job_id}"


class CancelOutcome(enum.StrEnum):
    CANCELLED = "cancelled"
    NOT_YOURS = "not yours"
    TOO_LATE = "too late"


def delivery_nonce(job_id: int) -> str:
    """The same nonce for every post of a job's result: Discord keeps only the first."""
    return f"kontext-{job_id}"


Step = Callable[[JobRecord], Awaitable[JobRecord | None]]


class JobService:
    def __init__(
        self,
        repository: Repository,
        client: WaveSpeedClient,
        settings: JobSettings,
        *,
        clock: Callable[[], float] = time.time,
        webhooks: WebhookMode | None = None,
        metrics: Metrics | None = None,
        modlog: ModLog | None = None,
    ) -> None:
        self._repository = repository
        # This process among a fleet's workers: who holds a job's lease.
        self.worker = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._leases_checked_at = 0.0
        self._role_checked_at = 0.0
        self._announcer = False
        self._metrics = metrics
        # What servers' log channels are told; posted by `_aside` tasks, never waited for.
        self._modlog = modlog
        self._aside_tasks: set[asyncio.Task[None]] = set()
        self._webhooks = webhooks
        self._client = client
        self._settings = settings
        self._clock = clock
        self._presenter: Presenter | None = None
        self._breaker = CircuitBreaker(settings.breaker_threshold)
        # Backoff between result posts: the one retry policy, bounded by the delivery deadline.
        self._post_retry = RetryPolicy(base_s=0.5, max_s=30.0)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._reports: set[asyncio.Task[None]] = set()
        # Sync-mode answers that already hold the finished prediction, by job: a cache that
        # saves one request; a restart simply asks WaveSpeed again.
        self._answered: dict[int, Prediction] = {}
        self._sync_in_flight = 0
        self._sync_limit = max(1, client.max_connections // 2)
        self._submit_slots = asyncio.Semaphore(settings.submits_at_once)
        # Steps that are never cut in half (see `_unbroken`): a shutdown waits for them.
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._closing = False
        # What each waiting job's status last said, so unchanged positions are not re-sent.
        self._announced: dict[int, str] = {}
        # Statuses are published here and sent by its own task: no step of a job, and never
        # the scheduler, waits on the chat service. Result posts share its request budget.
        self._status: StatusUpdater[_Status] = StatusUpdater(
            self._show,
            RequestBudget(settings.discord_requests_per_s),
            min_gap_s=settings.status_edit_gap_s,
        )
        self._steps: dict[str, Step] = {
            JobStatus.STARTING: self._submit,
            JobStatus.UNKNOWN: self._reconcile,
            JobStatus.RUNNING: self._await_result,
            JobStatus.SUCCEEDED: self._deliver,
            JobStatus.DELIVERING: self._deliver,
        }

    # --- Life cycle -----------------------------------------------------------------------------

    async def start(self, presenter: Presenter, *, schedule: bool = True) -> None:
        """Pick up what a previous run left open, then start taking jobs.

        Without `schedule` (a fleet's gateway) jobs are only stored here: the workers start,
        drive and deliver them; `presenter` is what this process's own notes are posted with
        (a cancelled job's ending, a budget's note in a log channel).
        """
        self._presenter = presenter
        self._status.start()
        if not schedule:
            return
        _, broken = await self._repository.open_jobs()
        if broken:
            log.error("set aside %d unreadable job rows: %s", len(broken), broken)
        # One process on its own store takes on everything a previous run left; a worker of a
        # fleet only what no live worker holds (the others renew their leases).
        await self._take_on_orphans(everything=not self._repository.shared)
        await self._repository.listen(self._hear)
        if self._webhooks is not None and self._repository.shared:
            self._webhooks.inbox.relay = self._relay_webhook
        self._scheduler = asyncio.create_task(self._schedule(), name="job-scheduler")
        self._wake.set()

    def _hear(self, news: str) -> None:
        """Another process of the fleet changed the queue, or relays a webhook delivery."""
        if not news.startswith(WEBHOOK_NEWS):
            self._wake.set()
            return
        prediction_id = news.removeprefix(WEBHOOK_NEWS)
        if self._webhooks is not None and self._webhooks.inbox.awaits(prediction_id):
            self._aside(self._take_relayed(prediction_id), f"relayed-{prediction_id}")

    async def _relay_webhook(self, prediction: Prediction) -> None:
        await self._repository.relay_webhook(
            prediction.id, prediction.model_dump_json(), at=time.time()
        )

    async def _take_relayed(self, prediction_id: str) -> None:
        body = await self._repository.relayed_webhook(prediction_id)
        if body is not None and self._webhooks is not None:
            self._webhooks.inbox.accept(Prediction.model_validate_json(body))

    def _lease_end(self) -> float:
        # Leases are compared by every process of a fleet: wall-clock time, never a test clock.
        return time.time() + self._settings.lease_s

    async def _take_on_orphans(self, *, everything: bool = False) -> None:
        """Drive the open jobs whose worker is gone, from where they stood."""
        taken = await self._repository.claim_orphans(
            self.worker, now=time.time(), lease_until=self._lease_end(), everything=everything
        )
        for job_id in taken:
            if job_id in self._tasks:
                continue
            try:
                job = await self._repository.job(job_id)
            except (TypeError, ValueError) as exc:
                log.error("job %d: unreadable row (%s); set aside", job_id, exc)
                await self._repository.set_aside(job_id)
                continue
            await self._recover(job)

    async def _keep_leases(self) -> None:
        """Renew this worker's leases and take on jobs other workers left, now and then."""
        now = time.time()
        if now < self._leases_checked_at + self._settings.lease_s / 3:
            return
        self._leases_checked_at = now
        await self._repository.renew_leases(self.worker, lease_until=self._lease_end())
        await self._take_on_orphans()

    async def _recover(self, job: JobRecord) -> None:
        with bind_job(job.id, job.prediction_id):
            await self._recover_job(job)

    async def _recover_job(self, job: JobRecord) -> None:
        if job.status == JobStatus.STARTING:
            # Taken from the queue but never sent: it goes back in its place.
            await self._repository.transition(job.id, JobStatus.STARTING, JobStatus.QUEUED)
            return
        if job.status == JobStatus.SUBMITTING:
            log.warning("job %d: the bot stopped during its submit; looking it up", job.id)
            unknown = await self._repository.transition(
                job.id, JobStatus.SUBMITTING, JobStatus.UNKNOWN
            )
            if unknown is not None:
                self._launch(unknown)
            return
        if job.status != JobStatus.QUEUED:
            log.info("job %d: resuming (%s)", job.id, job.status)
            self._launch(job)

    async def stop(self) -> None:
        """Stop working: take no new jobs, let submit POSTs in flight finish, leave every wait
        to be resumed at the next start (its state is stored)."""
        self._closing = True
        for task in (self._scheduler, self._prober):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._in_flight:
            log.info("waiting for %d submits and posts in flight", len(self._in_flight))
            _, late = await asyncio.wait(self._in_flight, timeout=self._settings.shutdown_grace_s)
            # Past the grace they are cut off here, not left running into the HTTP session and
            # the job store the bot closes next. Their jobs stay SUBMITTING or DELIVERING, which
            # the next start looks up before sending or posting anything again.
            for future in late:
                future.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        # Job tasks wait or sleep (their state is stored); work an in-flight step started
        # after the wait above is cut off with them.
        remaining: list[asyncio.Future[Any]] = [
            *self._tasks.values(),
            *self._in_flight,
            *self._aside_tasks,
        ]
        for work in remaining:
            work.cancel()
        await asyncio.gather(*remaining, return_exceptions=True)
        await self._status.stop()
        # Stopping on purpose: other workers need not wait for the leases to run out.
        with contextlib.suppress(Exception):
            await self._repository.release_leases(self.worker)

    # --- Taking jobs ----------------------------------------------------------------------------

    async def enqueue(self, new: NewJob) -> JobRecord:
        """Store the job and its images and queue it, its price held against the budgets in
        the same transaction. Nothing is spent until it starts; BudgetExceededError when it
        does not fit a budget (nothing is stored)."""
        if self._closing:
            raise ShuttingDownError()
        # NewJob's own fields are job columns by the same names; the rest are derived.
        columns = {
            f.name: getattr(new, f.name)
            for f in fields(new)
            if f.name not in ("model", "inputs", "new_chain", "hold")
        }
        job = await self._repository.create_job(
            inputs=new.inputs,
            new_chain=new.new_chain,
            hold=new.hold,
            **columns,
            model_path=new.model.path,
            prompt=str(new.params.get("prompt") or ""),
            created_at=self._clock(),
        )
        self._wake.set()
        if self._modlog is not None and new.hold is not None and job.guild_id is not None:
            # Spending grew: a budget may have reached the line its moderators hear of.
            self._aside(
                self._post_notes(functools.partial(self._modlog.budget_notes, job)),
                f"notes-{job.id}",
            )
        return job

    async def position(self, job_id: int) -> int | None:
        """1 for the next job to start, 2 for the one after...; None once started or gone."""
        return await self._repository.queue_position(job_id)

    async def cancel(self, job_id: int, member_id: int) -> CancelOutcome:
        """Cancel a job still waiting in the queue; only its requester may."""
        job = await self._repository.job(job_id)
        if job.requester_id != member_id:
            return CancelOutcome.NOT_YOURS
        cancelled = await self._repository.transition(job_id, JobStatus.QUEUED, JobStatus.CANCELLED)
        if cancelled is None:
            return CancelOutcome.TOO_LATE
        self._announced.pop(job_id, None)
        # The caller shows the cancellation next: no queue position may land after it.
        await self._status.end(job_id)
        self._wake.set()
        self._log_ending(cancelled)
        return CancelOutcome.CANCELLED

    # --- The queue ------------------------------------------------------------------------------

    async def _schedule(self) -> None:
        # Woken by every change, and now and then anyway: a job turning slow frees its place
        # without any event, and a fleet's worker renews its leases in time.
        tick = min(5.0, self._settings.slow_after_s / 2, self._settings.lease_s / 3)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._keep_leases()
                if not self._breaker.is_open:
                    await self._start_what_fits()
                await self._announce_positions()
            except Exception:
                # One bad pass (a database hiccup) must not stop the queue for good.
                log.exception("the scheduler failed a pass; trying again")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _start_what_fits(self) -> None:
        # Fleet-wide: the store decides what fits among every worker's jobs.
        started = await self._repository.claim_startable(
            self.worker,
            max_concurrent=self._settings.max_concurrent,
            per_member=self._settings.per_member,
            running_since=self._clock() - self._settings.slow_after_s,
            lease_until=self._lease_end(),
        )
        for job in started:
            self._announced.pop(job.id, None)
            self._launch(job)

    async def _announcing(self) -> bool:
        """Whether this worker tells waiting members their place: one worker of a fleet does
        (the others would repeat it), asking the store at most every third of a lease rather
        than at every pass of the scheduler; one process on its own store always does."""
        if not self._repository.shared:
            return True
        now = time.time()
        if now >= self._role_checked_at + self._settings.lease_s / 3:
            self._role_checked_at = now
            self._announcer = await self._repository.hold_role(
                "announcer", self.worker, now=now, lease_until=now + self._settings.lease_s
            )
        return self._announcer

    async def _announce_positions(self) -> None:
        if not await self._announcing():
            self._announced.clear()
            return
        waiting = await self._repository.queued_in_order(limit=self._settings.announce_limit)
        for position, job in enumerate(waiting, start=1):
            stage, text = (
                (Stage.WAITING, WAITING_TEXT)
                if self._breaker.is_open
                else (
                    Stage.QUEUED,
                    queued_text(
                        position,
                        exact=self._settings.exact_positions,
                        step=self._settings.position_step,
                    ),
                )
            )
            if self._announced.get(job.id) == text:
                continue
            self._announced[job.id] = text
            # An exact place is worth showing at once; "about K ahead" can wait its turn.
            exact = position <= self._settings.exact_positions
            await self._progress(job, stage, text, at_once=exact or stage != Stage.QUEUED)

    def _launch(self, job: JobRecord) -> None:
        if job.id in self._tasks:
            return
        task = asyncio.create_task(self._drive(job), name=f"job-{job.id}")
        self._tasks[job.id] = task

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.pop(job.id, None)
            self._wake.set()
            if done.cancelled() or done.exception() is None:
                return
            log.error(
                "job %d crashed",
                job.id,
                exc_info=done.exception(),
                extra={"job_id": job.id, "prediction_id": job.prediction_id},
            )
            if not self._closing:
                report = asyncio.create_task(self._after_crash(job.id))
                self._reports.add(report)
                report.add_done_callback(self._reports.discard)

        task.add_done_callback(finished)

    async def _drive(self, job: JobRecord) -> None:
        """The job's own task: every line logged while it runs carries the job's id, and its
        prediction's once it has one (services/logs.py)."""
        with bind_job(job.id, job.prediction_id):
            await self._steps_of(job)

    async def _steps_of(self, job: JobRecord | None) -> None:
        """Take the job through its steps until it ends, or another worker owns the next."""
        while job is not None and (step := self._steps.get(job.status)) is not None:
            if self._closing:
                return  # stopping: the next start takes the job on from here
            began, job_id, status = time.perf_counter(), job.id, job.status
            job = await step(job)
            if job is not None:
                bind_prediction(job.prediction_id)
            log.debug(
                "job %d: %s -> %s in %.0f ms",
                job_id,
                status,
                job.status if job is not None else "(elsewhere)",
                (time.perf_counter() - began) * 1000,
            )
            self._wake.set()

    async def _after_crash(self, job_id: int) -> None:
        # The job keeps its stored status: if it was never sent it fails (nothing charged);
        # otherwise the next start resumes it. Either way its member hears of it now.
        with bind_job(job_id), contextlib.suppress(Exception):
            job = await self._repository.transition(
                job_id,
                (JobStatus.QUEUED, JobStatus.STARTING),
                JobStatus.FAILED,
                error=CRASHED_MESSAGE,
            ) or await self._repository.job(job_id)
            await self._report(job, CRASHED_MESSAGE)
            self._log_ending(job)

    # --- Submit once ----------------------------------------------------------------------------

    async def _submit(self, job: JobRecord) -> JobRecord | None:
        """STARTING -> SUBMITTING -> RUNNING (or UNKNOWN, or back to QUEUED if refused)."""
        await self._progress(job, Stage.PREPARING, "Preparing your image…")
        spec = model_for_path(job.model_path)
        # The images are read from the store and encoded only once the submit has a slot.
        async with self._submit_slot(spec) as sync:
            try:
                request = validate_request(spec, {**job.params, **await self._inputs(job, spec)})
            except KontextError as exc:
                return await self._fail(job, exc.user_message)
            now = self._clock()
            cost = self._client.estimate_cost(spec, request)
            submitting = await self._repository.transition(
                job.id,
                JobStatus.STARTING,
                JobStatus.SUBMITTING,
                fingerprint=fingerprint_of(spec, request, at=now),
                submit_started_at=now,
                cost=None if cost is None else str(cost),
            )
            if submitting is None:
                return None
            # A sync-mode submit lasts as long as the image takes: show it as generating.
            ticker = asyncio.create_task(self._tick_generating(submitting))
            try:
                return await self._unbroken(self._send(submitting, spec, request, sync=sync))
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker

    @contextlib.asynccontextmanager
    async def _submit_slot(self, spec: ModelSpec) -> AsyncIterator[bool]:
        """A slot to build and send one submit in; yields whether to use sync mode.

        Completion is by webhook when one is set up; else by sync mode where the model has it
        (the answer is the finished prediction; a restart during it is reconciled); else the job
        is polled. A sync submit holds a connection for as long as the image takes: past half
        the pool, jobs are submitted plainly and polled, so the pool never runs dry. Plain
        submits take one of `submits_at_once` slots, so encoded images never pile up waiting
        for a connection.
        """
        if (
            self._webhooks is None
            and spec.supports_sync
            and self._sync_in_flight < self._sync_limit
        ):
            self._sync_in_flight += 1
            try:
                yield True
            finally:
                self._sync_in_flight -= 1
        else:
            async with self._submit_slots:
                yield False

    async def _send(
        self, job: JobRecord, spec: ModelSpec, request: Any, *, sync: bool
    ) -> JobRecord | None:
        try:
            webhook = self._webhooks.url_for(job.id) if self._webhooks else None
            submission = await self._client.submit(spec, request, sync=sync, webhook_url=webhook)
        except SubmissionUnknownError as exc:
            log.warning("job %d: %s; looking it up instead of sending it again", job.id, exc)
            return await self._repository.transition(
                job.id, JobStatus.SUBMITTING, JobStatus.UNKNOWN
            )
        except (ServerError, RateLimitedError) as exc:
            # Refused outright (nothing was made): the job goes back to its place in the queue.
            return await self._refused(job, exc)
        except (AuthenticationError, InsufficientCreditError) as exc:
            log.error("job %d: the image service refused the account: %s", job.id, exc)
            return await self._fail(job, exc.user_message)
        except KontextError as exc:
            log.info("job %d refused at submit: %s", job.id, exc)
            return await self._fail(job, exc.user_message)
        self._breaker.record_success()
        if submission.prediction.status.terminal:
            self._answered[job.id] = submission.prediction
        sent_at = job.submit_started_at or self._clock()
        return await self._repository.transition(
            job.id,
            JobStatus.SUBMITTING,
            JobStatus.RUNNING,
            prediction_id=submission.prediction_id,
            submitted_at=sent_at,
            # From when it was sent: a sync submit may already have used some of it up.
            deadline_at=sent_at + self._settings.job_deadline_s,
        )

    async def _refused(self, job: JobRecord, error: KontextError) -> JobRecord | None:
        log.warning("job %d: submit refused (%s); it waits in the queue", job.id, error)
        if self._breaker.record_failure():
            self._start_probing()
        if job.refusals + 1 >= self._settings.max_refusals:
            return await self._fail(job, REFUSED_MESSAGE)
        return await self._repository.transition(
            job.id,
            JobStatus.SUBMITTING,
            JobStatus.QUEUED,
            refusals=job.refusals + 1,
            fingerprint=None,
            submit_started_at=None,
        )

    def _start_probing(self) -> None:
        if self._prober is None or self._prober.done():
            self._prober = asyncio.create_task(self._probe(), name="wavespeed-probe")
        self._wake.set()  # waiting members now read "waiting for the image service"

    async def _probe(self) -> None:
        """Ask WaveSpeed a free question until it answers; then let the queue go on."""
        while self._breaker.is_open:
            await asyncio.sleep(self._settings.breaker_probe_s)
            try:
                await self._client.balance()
            except KontextError as exc:
                log.info("the image service is still unavailable (%s)", exc)
                continue
            self._breaker.record_success()
            self._wake.set()

    # --- Reconcile, don't guess -----------------------------------------------------------------

    async def _reconcile(self, job: JobRecord) -> JobRecord | None:
        """UNKNOWN -> RUNNING (the prediction was found) or FAILED (nothing was made)."""
        await self._progress(job, Stage.GENERATING, CHECKING_TEXT)
        spec = model_for_path(job.model_path)
        sent_at = job.submit_started_at or job.updated_at or job.created_at
        if job.fingerprint is None:
            # Written in the same update as SUBMITTING, so this is a row from an older version.
            log.error("job %d: unknown outcome without a fingerprint; reported as failed", job.id)
            return await self._fail(job, NOTHING_MADE_MESSAGE, retry=True)
        while True:
            checked_at = self._clock()
            try:
                found = await self._find_lost(job, spec, sent_at, checked_at)
            except KontextError as exc:
                log.info("job %d: looking it up failed (%s); trying again", job.id, exc)
                found, checked_at = None, 0.0
            if found is not None:
                log.warning("job %d: its lost submit made prediction %s; adopted", job.id, found)
                return await self._repository.transition(
                    job.id,
                    JobStatus.UNKNOWN,
                    JobStatus.RUNNING,
                    prediction_id=found,
                    submitted_at=sent_at,
                    deadline_at=sent_at + self._settings.job_deadline_s,
                )
            if checked_at >= sent_at + self._settings.reconcile_window_s:
                log.warning("job %d: no prediction matches its lost submit; nothing made", job.id)
                return await self._fail(job, NOTHING_MADE_MESSAGE, retry=True)
            await asyncio.sleep(self._settings.reconcile_interval_s)

    async def _find_lost(
        self, job: JobRecord, spec: ModelSpec, sent_at: float, now: float
    ) -> str | None:
        # A margin either side: WaveSpeed's clock and ours may disagree by a little.
        margin = 300.0
        listed = await self._client.list_predictions(
            created_after=_utc(sent_at - margin),
            created_before=_utc(now + margin),
            model=spec.path,
        )
        assert job.fingerprint is not None
        for prediction in listed:
            if not matches(job.fingerprint, prediction.model, prediction.input):
                continue
            if await self._repository.prediction_taken(prediction.id):
                continue  # another job's (the same request, sent twice by a member)
            return prediction.id
        return None

    # --- Patience while waiting -----------------------------------------------------------------

    async def _await_result(self, job: JobRecord) -> JobRecord | None:
        """RUNNING -> SUCCEEDED with verified images, or FAILED (its own failure, or stuck)."""
        assert job.prediction_id is not None
        spec = model_for_path(job.model_path)
        deadline = job.deadline_at or (
            (job.submitted_at or self._clock()) + self._settings.job_deadline_s
        )
        known = self._answered.pop(job.id, None)
        if known is None and self._webhooks is not None:
            known = await self._await_delivery(job.prediction_id, deadline)
        expected = await self._repository.typical_inference_s(job.model_path)
        elapsed = self._clock() - (job.submitted_at or self._clock())
        ticker = asyncio.create_task(self._tick_generating(job))
        try:
            result = await self._client.resume(
                spec,
                job.prediction_id,
                seed=job.params.get("seed"),
                deadline_at=deadline,
                known=known,
                expected_in_s=None if expected is None else expected - elapsed,
            )
        except TimedOutError:
            log.warning("job %d: prediction %s is stuck; given up", job.id, job.prediction_id)
            return await self._fail(job, STUCK_MESSAGE)
        except KontextError as exc:
            log.info("job %d failed: %s", job.id, exc)
            return await self._fail(job, exc.user_message)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        outputs = [
            NewImage(
                image.data,
                image.content_type,
                *header_size(image.data),
                nsfw=image.nsfw,
                source_url=image.url,
            )
            for image in result.images
        ]
        return await self._repository.transition(
            job.id,
            JobStatus.RUNNING,
            JobStatus.SUCCEEDED,
            outputs=outputs,
            completed_at=self._clock(),
            inference_ms=result.inference_ms,
        )

    async def _await_delivery(self, prediction_id: str, deadline: float) -> Prediction | None:
        """The webhook's word that the prediction ended, with a slow poll as the safety net;
        None at the deadline (the caller looks once more, then gives up)."""
        assert self._webhooks is not None
        inbox = self._webhooks.inbox
        while (remaining := deadline - self._clock()) > 0:
            waiting = asyncio.ensure_future(
                inbox.wait(prediction_id, timeout_s=min(self._webhooks.safety_poll_s, remaining))
            )
            try:
                await asyncio.sleep(0)  # the wait is registered: a relay from now on finds it
                if self._repository.shared:
                    # Delivered to another process of the fleet before this one waited for it.
                    await self._take_relayed(prediction_id)
                with contextlib.suppress(TimeoutError):
                    return await waiting
            finally:
                waiting.cancel()
            try:
                prediction = await self._client.get_prediction(prediction_id)
            except KontextError as exc:
                log.info("prediction %s: safety poll failed (%s)", prediction_id, exc)
                continue
            if prediction.status.terminal:
                log.warning("prediction %s ended without a webhook delivery", prediction_id)
                return prediction
        return None

    async def _tick_generating(self, job: JobRecord) -> None:
        started = job.submit_started_at or job.submitted_at or self._clock()
        first = True
        while True:
            elapsed = max(0, round(self._clock() - started))
            # The new stage shows at once; the clock's later steps keep the per-job gap.
            await self._progress(job, Stage.GENERATING, f"Generating… {elapsed} s", at_once=first)
            first = False
            await asyncio.sleep(self._settings.status_interval_s)

    # --- Deliver exactly once -------------------------------------------------------------------

    async def _deliver(self, job: JobRecord) -> JobRecord | None:
        """SUCCEEDED -> DELIVERING -> DELIVERED (or UNDELIVERABLE past the deadline)."""
        assert self._presenter is not None
        # A job found DELIVERING was being posted when the bot stopped: look before posting.
        look_first = job.status == JobStatus.DELIVERING
        if job.status == JobStatus.SUCCEEDED:
            delivering = await self._repository.transition(
                job.id,
                JobStatus.SUCCEEDED,
                JobStatus.DELIVERING,
                delivery_started_at=self._clock(),
            )
            if delivering is None:
                return None
            job = delivering
        # Not at once: a post usually lands within the per-job gap, and then the member's
        # status goes straight to its ending without an edit nobody had time to read.
        await self._progress(job, Stage.POSTING, "Posting…", at_once=False)
        outputs = await self._repository.job_images(job.id, "output")
        deadline = (job.delivery_started_at or self._clock()) + self._settings.delivery_deadline_s
        attempt = 0
        while True:
            try:
                posted, delivered = await self._unbroken(
                    self._post_and_record(job, outputs, look_first=look_first)
                )
                break
            except PostFailedError as exc:
                now = self._clock()
                if exc.permanent or not self._post_retry.should_retry(
                    attempt, exc.retry_after, until=deadline, now=now
                ):
                    log.error("job %d: result not posted (%s); given up", job.id, exc)
                    return await self._undeliverable(job, outputs)
                wait = self._post_retry.delay(attempt, exc.retry_after, until=deadline, now=now)
                log.warning("job %d: result post failed (%s); again in %.1f s", job.id, exc, wait)
                look_first = look_first or exc.maybe_posted
                attempt += 1
                await asyncio.sleep(wait)
        if delivered is not None and self._metrics is not None and job.completed_at is not None:
            self._metrics.observe_posted(self._clock() - job.completed_at)
        if delivered is not None:
            try:
                await self._status.end(job.id)
                await self._presenter.finish_status(delivered, posted)
            except Exception:
                log.warning("job %d: the status line was not updated", job.id, exc_info=True)
            self._log_ending(delivered)
        return delivered

    async def _post_and_record(
        self, job: JobRecord, outputs: Sequence[JobImage], *, look_first: bool
    ) -> tuple[PostedResult, JobRecord | None]:
        assert self._presenter is not None
        posted = None
        if look_first:
            await self._status.urgent()
            posted = await self._presenter.find_result(job)
        if posted is None:
            # One slot per post: a thread start or a channel fetch now and then fits in the
            # room the budget leaves under Discord's limit.
            await self._status.urgent()
            posted = await self._presenter.post_result(job, outputs, nonce=delivery_nonce(job.id))
        return posted, await self._repository.mark_delivered(job, posted)

    async def _undeliverable(self, job: JobRecord, outputs: Sequence[JobImage]) -> JobRecord | None:
        links = [o.source_url for o in outputs if o.source_url]
        where = (
            "The image service keeps it for 7 days: " + " ".join(f"<{u}>" for u in links)
            if links
            else "It is kept: ask a moderator to check my permissions, then press Retry."
        )
        message = (
            "Your image was made, but I could not post it in that channel (I may be missing a "
            f"permission there). {where}"
        )
        failed = await self._repository.transition(
            job.id, JobStatus.DELIVERING, JobStatus.UNDELIVERABLE, error=message
        )
        if failed is not None:
            await self._report(failed, message)
            self._log_ending(failed)
        return failed

    # --- Helpers --------------------------------------------------------------------------------

    async def _unbroken(self, work: Awaitable[T]) -> T:
        """Run `work` to its end even if its job's task is cancelled; `stop` waits for it.

        For the steps a shutdown must never cut in half: a submit POST and its answer's
        record, a result post and its DELIVERED mark.
        """
        future = asyncio.ensure_future(work)
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        return await asyncio.shield(future)

    async def _inputs(self, job: JobRecord, spec: ModelSpec) -> dict[str, Any]:
        stored = [entry.image for entry in await self._repository.job_images(job.id, "input")]
        images = [InputImage(image.data, image.content_type) for image in stored]
        if not images:
            return {}
        if "images" in spec.request.model_fields:
            return {"images": images}
        return {"image": images[0]}

    async def _fail(self, job: JobRecord, message: str, *, retry: bool = False) -> JobRecord | None:
        """The job ends as failed (from the status it is in) and its member hears of it."""
        failed = await self._repository.transition(
            job.id, job.status, JobStatus.FAILED, error=message
        )
        if failed is not None:
            await self._report(failed, message, retry=retry)
            self._log_ending(failed)
        return failed

    async def _report(self, job: JobRecord, message: str, *, retry: bool = False) -> None:
        if self._presenter is None:
            return
        try:
            await self._status.end(job.id)
            await self._presenter.report_failure(job, message, retry=retry)
        except Exception:
            log.exception("job %d: could not tell the requester about its failure", job.id)

    # --- Log channels: after the fact, best effort ----------------------------------------------

    def _aside(self, work: Awaitable[None], name: str) -> None:
        """Run `work` on its own: nobody waits for it, and a stop cancels it."""
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._aside_tasks.add(task)
        task.add_done_callback(self._aside_tasks.discard)

    def _log_ending(self, job: JobRecord) -> None:
        """Log a job whose ending is stored in its server's log channel, if it has one."""
        if self._modlog is None:
            return
        if job.guild_id is not None:
            self._aside(self._post_log_entry(job), f"log-{job.id}")
        if job.status == JobStatus.DELIVERED:
            # Images were paid for: the account's balance may have run low.
            self._aside(self._post_notes(self._modlog.balance_notes), f"balance-{job.id}")

    async def _post_log_entry(self, job: JobRecord) -> None:
        assert self._modlog is not None
        try:
            entry = await self._modlog.entry_for(job)
        except Exception:
            log.exception("job %d: its log entry could not be made", job.id)
            return
        if entry is not None and self._presenter is not None:
            presenter = self._presenter
            await self._post_aside(entry.channel_id, lambda: presenter.post_log_entry(entry))

    async def _post_notes(self, due: Callable[[], Awaitable[list[LogNote]]]) -> None:
        try:
            notes = await due()
        except Exception:
            log.exception("the notes due for log channels could not be checked")
            return
        presenter = self._presenter
        for note in notes:
            log.info("server %d: %s", note.guild_id, note.text)
            if presenter is not None:
                await self._post_aside(
                    note.channel_id, functools.partial(presenter.post_log_note, note)
                )

    async def _post_aside(self, channel_id: int, post: Callable[[], Awaitable[None]]) -> None:
        """One log channel post, in the request budget's status lane: behind every delivery
        and ending. Tried once; a failure is the modlog's to report."""
        assert self._modlog is not None
        try:
            await self._status.aside()
            await post()
        except Exception as exc:
            self._modlog.not_posted(channel_id, exc)
        else:
            self._modlog.posted(channel_id)

    async def _progress(
        self, job: JobRecord, stage: Stage, detail: str, *, at_once: bool = True
    ) -> None:
        """Publish the job's status; the updater sends it. Returns at once. A new stage is
        shown `at_once`; repeated updates within one (a clock) keep the per-job gap."""
        self._status.publish(job.id, _Status(job, stage, detail), at_once=at_once)

    async def _show(self, job_id: int, status: _Status) -> None:
        if self._presenter is not None:
            with bind_job(job_id, status.job.prediction_id):
                await self._presenter.show_progress(status.job, status.stage, status.detail)


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)


def queued_text(position: int, *, exact: int = 10, step: int = 10) -> str:
    """A waiting job's line. Past the first `exact` places the count is rounded to `step`, so
    most lines stay the same when one job starts (each change costs an edit)."""
    if position == 1:
        return "Queued: you're next."
    if position <= exact:
        return f"Queued: position {position}."
    ahead = max(step, (position - 1 + step // 2) // step * step)
    return f"In the queue, about {ahead} ahead."
