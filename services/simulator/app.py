"""The simulated WaveSpeed API: an aiohttp application implementing the documented contract.

Routes, authentication, admission (rate limits, balance) and faults live here; a prediction's
life is in jobs.py, input images in inputs.py, webhook deliveries in delivery.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from services.wavespeed.catalog import (
    MODELS,
    KontextRequest,
    ModelSpec,
    estimate_cost,
    explain,
    model_for_path,
)
from services.wavespeed.errors import InvalidInputError
from services.wavespeed.protocol import SYNC_TIMEOUT_TEXT, Code, Status

from .answers import ApiError, ok, origin, read_json
from .config import (
    ANSWER_FAULTS,
    DOWNLOAD,
    FAULT_ROUTES,
    OTHER,
    Fault,
    SimulatorConfig,
)
from .delivery import WebhookSender
from .faults import FAULT_HEADER, FaultPlan, UnknownFaultError
from .history import history_page, parse_query
from .inputs import InputResolver, LocalLookup, MediaError, SourceImage
from .jobs import JobRunner, plan_render
from .limits import ImageWindow, TaskSlots
from .state import (
    BilledEntry,
    MediaItem,
    OutputFile,
    SimPrediction,
    WebhookDelivery,
    live,
    prune,
)
from .uploads import MediaStore

log = logging.getLogger(__name__)

# Requests carry images as data URIs, so allow far more than aiohttp's 1 MiB default.
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_SEED = 2147483647
# What GET /balance reports for an unlimited account (minus what was charged).
UNLIMITED_BALANCE = Decimal(1_000_000)
_FAULT_KEY = web.RequestKey[Fault | None]("fault")
_OPTIONAL_FLAGS = ("enable_sync_mode", "enable_base64_output")
# Seconds a submit holds back its answer after creating the prediction (overrides the config).
ANSWER_DELAY_HEADER = "X-Simulator-Answer-Delay"


def _money(amount: Decimal) -> str:
    return format(amount.normalize(), "f")


def _route_group(request: web.Request) -> str:
    # Route names are "<group>" or "<group>.<variant>" (aiohttp wants them unique).
    name = request.match_info.route.name
    return name.split(".", 1)[0] if name else OTHER


def _short_ref(ref: Any) -> Any:
    # Webhook deliveries and inspectable state echo the request: keep data URIs out of them.
    if isinstance(ref, str) and ref.startswith("data:"):
        header = ref.split(",", 1)[0]
        return f"<{header} omitted, {len(ref)} characters>"
    return ref


def _shortened(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with its data URIs replaced by a short note of what they were."""
    short = dict(body)
    if "image" in short:
        short["image"] = _short_ref(short["image"])
    if isinstance(short.get("images"), list):
        short["images"] = [_short_ref(ref) for ref in short["images"]]
    return short


def _rough_size(value: Any) -> int:
    """About how many bytes a JSON value holds in memory; its strings (data URIs) dominate."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_rough_size(item) for item in value.values()) + 8 * len(value)
    if isinstance(value, list):
        return sum(_rough_size(item) for item in value) + 8 * len(value)
    return 8


def _fingerprint(model_path: str, body: dict[str, Any], seed: int) -> str:
    """Equal for two submits of the same model, inputs and seed (whatever flags they carry)."""
    same = {k: v for k, v in body.items() if k not in _OPTIONAL_FLAGS}
    same["seed"] = seed
    canonical = json.dumps([model_path, same], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


GATEWAY_ANSWERS: dict[Fault, ApiError] = {
    Fault.SERVER_ERROR: ApiError(500, Code.INTERNAL, "Internal server error (simulated)."),
    Fault.UNAVAILABLE: ApiError(503, Code.UNAVAILABLE, "Service unavailable (simulated)."),
    Fault.RATE_LIMIT: ApiError(
        429, 429, "Too many requests (simulated); retry later.", {"Retry-After": "1"}
    ),
}
BAD_GATEWAY_PAGE = "<html><body><h1>502 Bad Gateway</h1></body></html>"
OUTAGE_ANSWER = ApiError(503, Code.UNAVAILABLE, "Service unavailable (simulated outage).")


class WaveSpeedSimulator:
    """A local, faithful WaveSpeed API for tests and the bot's dry-run mode.

    `app` is the aiohttp application; run it with `run_simulator` or `web.run_app`. The public
    attributes are live state for tests to inspect.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.predictions: dict[str, SimPrediction] = {}
        self.billed: list[BilledEntry] = []
        self.request_counts: Counter[str] = Counter()
        self.webhook_deliveries: list[WebhookDelivery] = []
        # Every prediction ever created, evicted ones included: what a double submit would add to.
        self.created_total = 0
        # The most predictions ever open (created, not yet ended) at once: what a fleet's
        # fleet-wide concurrency cap must keep down.
        self.peak_open = 0
        # What the stored submit bodies hold, about (see `_keep_inputs_bounded`).
        self._input_bytes = 0
        # "http://host:port" while run_simulator runs it; None otherwise.
        self.base_url: str | None = None

        cfg = self.config
        self._clock = cfg.clock
        self._faults = FaultPlan(cfg.fault_rates, cfg.rng_seed, cfg.route_fault_rates)
        # time.monotonic() until which every API route and download answers 503; real time,
        # not `clock`, because an outage is waited out, not dated.
        self._outage_until = 0.0
        # Seeds have their own generator so fault draws stay reproducible whatever is submitted.
        self._seeds = random.Random(f"seeds-{cfg.rng_seed}")
        self._slots = TaskSlots(cfg.max_concurrent_per_key)
        self._window = ImageWindow(cfg.images_per_minute_per_key)
        self._charged = Decimal(0)
        # What the account holds (None: unlimited); a completed task takes its cost off it.
        self._balance: Decimal | None = cfg.balance
        # Costs of tasks still running: not charged yet, but no longer available to spend.
        self._reserved = Decimal(0)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._inputs = InputResolver(self._client_session)
        self._uploads = MediaStore(
            clock=cfg.clock,
            retention_s=cfg.retention_s,
            keep=cfg.max_stored_predictions,
            authorize=self._authorize,
        )
        # Uploads by token, for inspection like `predictions`.
        self.media: dict[str, MediaItem] = self._uploads.items
        self._jobs = JobRunner(
            self._slots,
            latency_s=cfg.latency_s,
            nsfw_trigger=cfg.nsfw_trigger,
            moderation_trigger=cfg.moderation_trigger,
            stuck_trigger=cfg.stuck_trigger,
            on_settled=self._settled,
        )
        self._webhooks = WebhookSender(
            secret=cfg.webhook_secret,
            retries=cfg.webhook_retries,
            retry_delay_s=cfg.webhook_retry_delay_s,
            clock=cfg.clock,
            session=self._client_session,
            record=self.webhook_deliveries.append,
        )
        self.app = self._build_app()

    # --- Public controls ----------------------------------------------------------------------

    def inject(self, fault: Fault, *, route: str = "submit", times: int = 1) -> None:
        """Make the next `times` requests on `route` hit `fault`.

        Routes: "submit", "result", "history" (the prediction list), "upload" (both upload
        flows, the PUT included) and "download" (output and media GETs). Task faults only apply
        to "submit", `truncated` only to "download".
        """
        self._faults.inject(fault, route, times)

    def start_outage(self, seconds: float) -> None:
        """For `seconds` from now every /api/ route and download answers 503 (0: end it).

        Like a gateway in front of a WaveSpeed that is down: nothing is done, nothing is created.
        The presigned upload PUT is storage, not the API, and stays up.
        """
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("an outage lasts a finite, non-negative number of seconds")
        self._outage_until = time.monotonic() + seconds
        if seconds:
            log.info("outage for %.1f s", seconds)
        else:
            log.info("outage ended")

    @property
    def outage_remaining_s(self) -> float:
        """Seconds the current outage still lasts (0: none)."""
        return max(0.0, self._outage_until - time.monotonic())

    @property
    def billed_total(self) -> Decimal:
        """What all completed predictions cost together."""
        return self._charged

    @property
    def balance(self) -> Decimal:
        """What GET /api/v3/balance reports now, in US dollars."""
        return self._remaining()

    def set_balance(self, usd: Decimal | int | str | None) -> None:
        """Make the account hold `usd` from now on (None: unlimited), like a top-up would.

        Later charges come off it; tasks already running keep their reservation.
        """
        if usd is None:
            self._balance = None
            log.info("balance set to unlimited")
            return
        try:
            amount = Decimal(usd)
        except ArithmeticError:
            raise ValueError(f"a balance is an amount of US dollars, got {usd!r}") from None
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"a balance is a finite, non-negative amount, got {usd}")
        self._balance = amount
        log.info("balance set to $%s", _money(amount))

    # --- Application wiring -------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_BODY_BYTES)
        router = app.router
        router.add_post("/api/v3/wavespeed-ai/{path:.+}", self._submit, name="submit")
        router.add_post("/api/v3/predictions", self._history, name="history")
        router.add_get("/api/v3/predictions/{id}/result", self._result, name="result")
        router.add_get("/api/v3/predictions/{id}", self._result, name="result.alias")
        uploads = self._uploads
        router.add_post("/api/v3/media/upload/binary", uploads.upload_binary, name="upload.binary")
        router.add_post("/api/v3/media/uploads", uploads.create_upload, name="upload.create")
        router.add_put("/media/upload/{token}", uploads.put_upload, name="upload.put")
        router.add_get("/media/{token}/{filename}", uploads.download, name="download.media")
        router.add_get("/outputs/{id}/{name}", self._output, name="download.output")
        router.add_get("/api/v3/balance", self._balance_read, name="other.balance")
        # One of WaveSpeed's how-to pages names this path for the same read.
        router.add_get("/api/v3/account/balance", self._balance_read, name="other.balance.account")
        router.add_get("/api/v3/models", self._models, name="other.models")
        router.add_get("/api/v3/webhook/secret", self._secret, name="other.secret")
        router.add_get("/_simulator/state", self._state, name="other.state")
        router.add_post("/_simulator/outage", self._outage, name="other.outage")
        router.add_post("/_simulator/balance", self._set_balance, name="other.set_balance")
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self._closing.clear()
        self._session = aiohttp.ClientSession()
        if self.config.outage_at_s is not None:
            self._spawn(self._scheduled_outage(self.config.outage_at_s, self.config.outage_for_s))

    async def _scheduled_outage(self, at_s: float, for_s: float) -> None:
        await asyncio.sleep(at_s)
        self.start_outage(for_s)

    async def _on_shutdown(self, _app: web.Application) -> None:
        # Before aiohttp waits for open requests: wake sync-mode waiters, stop every task.
        self._closing.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_cleanup(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the simulator's application is not running")
        return self._session

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._closing.is_set():
            coro.close()  # shutting down: nothing new starts
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a simulator task crashed", exc_info=task.exception())

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        group = _route_group(request)
        self.request_counts[group] += 1
        if self.outage_remaining_s > 0 and (request.path.startswith("/api/") or group == DOWNLOAD):
            return OUTAGE_ANSWER.response()
        fault: Fault | None = None
        if group in FAULT_ROUTES:
            try:
                fault = self._faults.choose(group, request.headers.get(FAULT_HEADER))
            except UnknownFaultError:
                choices = ", ".join(f.value for f in Fault)
                return ApiError(
                    400, Code.INVALID_PARAMETER, f"{FAULT_HEADER} must be one of: {choices}."
                ).response()
        if fault is Fault.BAD_GATEWAY:
            log.info("answering %s %s with fault %s", request.method, request.path, fault)
            return web.Response(status=502, text=BAD_GATEWAY_PAGE, content_type="text/html")
        if fault in GATEWAY_ANSWERS:
            log.info("answering %s %s with fault %s", request.method, request.path, fault)
            return GATEWAY_ANSWERS[fault].response()
        request[_FAULT_KEY] = fault
        try:
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # Unknown routes, wrong methods, bodies over the limit: still the JSON envelope.
            response = ApiError(exc.status, exc.status, exc.reason).response()
        if fault in ANSWER_FAULTS or fault is Fault.TRUNCATED:
            log.info(
                "spoiling the answer to %s %s with fault %s", request.method, request.path, fault
            )
            return self._spoil(request, response, fault)
        return response

    @staticmethod
    def _spoil(
        request: web.Request, response: web.StreamResponse, fault: Fault
    ) -> web.StreamResponse:
        body = response.body if isinstance(response, web.Response) else b""
        data = body if isinstance(body, bytes) else b""
        if fault is Fault.TRUNCATED:
            if response.status != 200 or not data:
                return response  # an error answer has no file to cut short
            # Content-Length matches the cut body: the transfer looks complete and successful.
            return web.Response(
                status=200, body=data[: len(data) // 2], content_type=response.content_type
            )
        if fault is Fault.DROP:
            # The request was handled; close the connection so its answer never arrives.
            request.protocol.force_close()
            return web.Response(status=204)
        truncated = data[: max(1, len(data) // 2)]
        if response.content_type == "application/json" or not data:
            return web.Response(status=200, body=truncated, content_type="application/json")
        # A binary answer (an output image) arrives cut short, with its own type.
        return web.Response(status=200, body=truncated, content_type=response.content_type)

    # --- Authentication and request parsing ---------------------------------------------------

    def _authorize(self, request: web.Request) -> str:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, 401, "Unauthorized: send 'Authorization: Bearer <API key>'.")
        if self.config.api_keys is not None and key not in self.config.api_keys:
            raise ApiError(401, 401, "Unauthorized: the API key is not valid.")
        return key

    @staticmethod
    def _validate(spec: ModelSpec, body: dict[str, Any]) -> KontextRequest:
        fields = spec.request.model_fields
        # Clients send these flags to every model; WaveSpeed ignores them where not offered.
        data = {k: v for k, v in body.items() if k in fields or k not in _OPTIONAL_FLAGS}
        try:
            return spec.request.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            _, message = explain(error, spec)
            code = Code.MISSING_PARAMETER if error["type"] == "missing" else Code.INVALID_PARAMETER
            raise ApiError(400, code, message) from None

    # --- Submit -------------------------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.Response:
        key = self._authorize(request)
        answer_delay = self._answer_delay(request)
        try:
            spec = model_for_path(request.match_info["path"])
        except InvalidInputError:
            model = request.match_info["path"]
            raise ApiError(404, 404, f"Model not found: wavespeed-ai/{model}.") from None
        body = await read_json(request)
        req = self._validate(spec, body)
        webhook = self._webhook_target(request, req)
        images = await self._resolve_inputs(request, req)
        seed = req.seed if req.seed not in (None, -1) else self._seeds.randint(0, MAX_SEED)
        try:
            plan = plan_render(spec.kind, req, images, seed, self.config.max_output_side)
        except ValueError as exc:
            raise ApiError(400, Code.INVALID_PARAMETER, f"{exc}.") from None
        cost = estimate_cost(spec, req) or Decimal(0)  # unpriced models (LoRA) cost nothing here
        now = self._clock()
        # Admission and creation run without awaiting, so concurrent submits cannot both pass.
        self._admit(key, plan.count, cost, now)
        record = SimPrediction(
            id=uuid.uuid4().hex,
            model_path=spec.path,
            kind=spec.kind,
            request=self._describe(req, seed),
            seed=seed,
            cost=cost,
            created_ts=now,
            origin=origin(request),
            key=key,
            webhook=webhook,
            fault=request[_FAULT_KEY],
            input=body,
            input_bytes=_rough_size(body),
            fingerprint=_fingerprint(spec.path, body, seed),
            base64_output=bool(getattr(req, "enable_base64_output", False)),
            sync=spec.supports_sync and bool(getattr(req, "enable_sync_mode", False)),
        )
        self._store(record, now)
        self.created_total += 1
        self.peak_open = max(
            self.peak_open,
            sum(not p.status.terminal for p in self.predictions.values()),
        )
        self._window.record(key, plan.count, now)
        self._reserved += cost
        self._spawn(self._jobs.run(record, plan, self._slots.claim(key)))
        log.info(
            "prediction %s created: %s, %d output(s), $%s",
            record.id,
            spec.path,
            plan.count,
            _money(cost),
        )
        answer = await self._sync_answer(record) if record.sync else record.to_json()
        if answer_delay > 0:
            # The job exists (and will be billed); only its answer is late.
            log.info("holding the answer for prediction %s %.1f s", record.id, answer_delay)
            await self._pause(answer_delay)
        return ok(answer)

    def _answer_delay(self, request: web.Request) -> float:
        header = request.headers.get(ANSWER_DELAY_HEADER)
        if header is None:
            return self.config.submit_answer_delay_s
        try:
            delay = float(header)
        except ValueError:
            delay = -1.0
        if not 0 <= delay < math.inf:
            raise ApiError(
                400, Code.INVALID_PARAMETER, f"{ANSWER_DELAY_HEADER} must be seconds (>= 0)."
            )
        return delay

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake when the simulator shuts down."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    @staticmethod
    def _webhook_target(request: web.Request, req: KontextRequest) -> str | None:
        webhook = request.query.get("webhook")
        if not webhook:
            return None
        if urlsplit(webhook).scheme not in {"http", "https"}:
            raise ApiError(400, Code.INVALID_PARAMETER, "The webhook must be an http(s) URL.")
        if getattr(req, "enable_base64_output", False):
            raise ApiError(
                400,
                Code.INVALID_PARAMETER,
                "enable_base64_output cannot be combined with a webhook.",
            )
        return webhook

    async def _resolve_inputs(self, request: web.Request, req: KontextRequest) -> list[SourceImage]:
        refs = [ref for ref in req.media() if isinstance(ref, str)]
        if not refs:
            return []
        field_name = "image" if getattr(req, "image", None) is not None else "images"
        try:
            return await self._inputs.resolve(refs, field_name, self._local_lookup(request))
        except MediaError as exc:
            raise ApiError(400, Code.MEDIA_UNREACHABLE, str(exc)) from None

    def _local_lookup(self, request: web.Request) -> LocalLookup:
        """Serve our own upload and output URLs from memory instead of fetching them."""
        origins = {origin(request), self.base_url}

        def lookup(url: str) -> bytes | None:
            parts = urlsplit(url)
            segments = parts.path.split("/")
            if f"{parts.scheme}://{parts.netloc}" not in origins or len(segments) != 4:
                return None
            if segments[1] == "media":
                item = self._uploads.get(segments[2])
                if item is None or item.data is None:
                    raise MediaError("is an upload that does not exist, expired or was never PUT.")
                return item.data
            if segments[1] == "outputs":
                output = self._output_file(segments[2], segments[3])
                if output is None:
                    raise MediaError("is an output that does not exist or expired.")
                return output.data
            return None

        return lookup

    @staticmethod
    def _describe(req: KontextRequest, seed: int) -> dict[str, Any]:
        """The request as JSON, with the seed used and data URIs shortened."""
        described = req.model_dump(mode="json", exclude_none=True)
        described["seed"] = seed
        return _shortened(described)

    def _admit(self, key: str, images: int, cost: Decimal, now: float) -> None:
        """Raise the 429 or 402 this submit gets, if any."""
        retry_after = self._window.retry_after(key, images, now)
        if retry_after is not None:
            raise ApiError(
                429,
                429,
                f"Too many requests: this API key may create "
                f"{self.config.images_per_minute_per_key} images per minute; "
                f"retry in {retry_after} s.",
                {"Retry-After": str(retry_after)},
            )
        if self._slots.waiting(key) >= self.config.max_waiting_per_key:
            retry = max(1, math.ceil(self.config.latency_s))
            raise ApiError(
                429,
                429,
                "Too many requests: too many tasks are already waiting for this API key.",
                {"Retry-After": str(retry)},
            )
        if self._balance is not None:
            available = self._balance - self._reserved
            if cost > available:
                # WaveSpeed documents no code for an empty balance. HTTP 402 Payment Required
                # says it plainly to any client, and the envelope code repeats the status as it
                # does for the other account-level refusals here (401, 404, 429). Nothing is
                # created, so nothing is billed.
                raise ApiError(
                    402,
                    402,
                    f"Insufficient balance: this request costs ${_money(cost)} but only "
                    f"${_money(max(available, Decimal(0)))} is available. Top up to continue.",
                )

    def _store(self, record: SimPrediction, now: float) -> None:
        self.predictions[record.id] = record
        self._input_bytes += record.input_bytes
        for evicted in prune(
            self.predictions,
            now=now,
            retention_s=self.config.retention_s,
            keep=self.config.max_stored_predictions,
        ):
            self._input_bytes -= evicted.input_bytes
            log.debug("prediction %s evicted", evicted.id)
        if self._input_bytes > self.config.max_stored_input_bytes:
            self._keep_inputs_bounded()

    def _keep_inputs_bounded(self) -> None:
        """Shorten the data URIs of the oldest stored inputs until they fit the budget.

        Submit bodies carry images as data URIs of up to megabytes, and a dry run may store
        thousands; a client looking for a lost submit looks minutes back, so the newest stay whole.
        """
        # Recount: predictions also leave through the result route's expiry, uncounted.
        self._input_bytes = sum(record.input_bytes for record in self.predictions.values())
        for record in self.predictions.values():  # oldest first
            if self._input_bytes <= self.config.max_stored_input_bytes:
                break
            if record.input_bytes:
                record.input = _shortened(record.input)
                self._input_bytes -= record.input_bytes
                record.input_bytes = 0

    async def _sync_answer(self, record: SimPrediction) -> dict[str, Any]:
        if record.fault is not Fault.SYNC_TIMEOUT:
            await self._wait_finished(record, self.config.sync_wait_s)
        if record.status.terminal:
            return record.to_json()
        # Like WaveSpeed: the task keeps running; the client keeps the id and polls.
        data = record.to_json()
        data.update(
            status=str(Status.PROCESSING),
            code=int(Code.SYNC_TIMEOUT),
            error=f"{SYNC_TIMEOUT_TEXT}; the task is still running, poll urls.get for it.",
        )
        return data

    async def _wait_finished(self, record: SimPrediction, wait_s: float) -> None:
        """Until `record` ends, `wait_s` passes, or the simulator shuts down."""
        waiters = [
            asyncio.ensure_future(record.finished.wait()),
            asyncio.ensure_future(self._closing.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    def _settled(self, record: SimPrediction) -> None:
        """Called by the job runner when a task ends or gets stuck for good."""
        self._reserved -= record.cost
        if record.status is Status.COMPLETED:
            record.billed_cost = record.cost
            self._charged += record.cost
            if self._balance is not None:
                self._balance -= record.cost
            self.billed.append(BilledEntry(record.id, record.model_id, record.cost))
        if not record.status.terminal:
            return
        record.ended_ts = self.config.clock()
        record.finished.set()
        log.info("prediction %s %s in %d ms", record.id, record.status, record.inference_ms)
        if record.webhook:
            payload = {**record.to_json(), "input": record.request}
            duplicate = record.fault is Fault.WEBHOOK_DUPLICATE
            self._spawn(self._webhooks.deliver(record.webhook, payload, duplicate=duplicate))

    # --- Results and files --------------------------------------------------------------------

    def _prediction(self, prediction_id: str) -> SimPrediction:
        record = live(
            self.predictions, prediction_id, now=self._clock(), retention_s=self.config.retention_s
        )
        if record is None:
            raise ApiError(404, 404, f"Prediction not found: {prediction_id}.")
        return record

    async def _result(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return ok(self._prediction(request.match_info["id"]).to_json())

    async def _history(self, request: web.Request) -> web.Response:
        """POST /api/v3/predictions: the caller's predictions in a time window, newest first."""
        key = self._authorize(request)
        query = parse_query(await read_json(request))
        now = self._clock()
        # Expired predictions are forgotten here as the result route forgets them.
        prune(
            self.predictions,
            now=now,
            retention_s=self.config.retention_s,
            keep=self.config.max_stored_predictions,
        )
        own = [
            record
            for record in self.predictions.values()
            if record.key == key and now - record.created_ts <= self.config.retention_s
        ]
        return ok(history_page(own, query))

    def _output_file(self, prediction_id: str, name: str) -> OutputFile | None:
        record = live(
            self.predictions, prediction_id, now=self._clock(), retention_s=self.config.retention_s
        )
        stem = name.split(".", 1)[0]
        if record is None or not stem.isdigit() or int(stem) >= len(record.output_files):
            return None
        return record.output_files[int(stem)]

    async def _output(self, request: web.Request) -> web.Response:
        output = self._output_file(request.match_info["id"], request.match_info["name"])
        if output is None:
            raise ApiError(404, 404, "Output not found (unknown, not finished or expired).")
        return web.Response(body=output.data, content_type=output.content_type)

    # --- Account reads ------------------------------------------------------------------------

    def _remaining(self) -> Decimal:
        if self._balance is None:
            return UNLIMITED_BALANCE - self._charged
        return self._balance

    async def _balance_read(self, request: web.Request) -> web.Response:
        """GET /api/v3/balance: free, like WaveSpeed's; a JSON number, as WaveSpeed sends it."""
        self._authorize(request)
        return ok({"balance": float(self._remaining())})

    async def _models(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return ok(
            [
                {
                    "model_id": spec.model_id,
                    "name": spec.name,
                    "type": str(spec.kind),
                    "price": float(spec.price) if spec.price is not None else None,
                }
                for spec in MODELS
            ]
        )

    async def _secret(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return ok({"secret": self.config.webhook_secret})

    # --- Test control (loopback, no key, like the state) ----------------------------------------

    async def _outage(self, request: web.Request) -> web.Response:
        """POST /_simulator/outage {"seconds": S}: an outage from now (0 ends one)."""
        seconds = (await read_json(request)).get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ApiError(400, Code.INVALID_PARAMETER, "seconds must be a number.")
        try:
            self.start_outage(float(seconds))
        except ValueError as exc:
            raise ApiError(400, Code.INVALID_PARAMETER, f"{exc}.") from None
        return ok({"outage": self._outage_state()})

    async def _set_balance(self, request: web.Request) -> web.Response:
        """POST /_simulator/balance {"balance": "12.50"}: the account holds that from now on.

        A number or a decimal string (exact); null makes it unlimited.
        """
        body = await read_json(request)
        value = body.get("balance")
        if "balance" not in body or isinstance(value, bool | dict | list):
            raise ApiError(
                400, Code.INVALID_PARAMETER, "balance must be a number, a string or null."
            )
        try:
            # Through str: a JSON number arrives as a float, and 12.3 must mean exactly 12.3.
            self.set_balance(None if value is None else str(value))
        except ValueError as exc:
            raise ApiError(400, Code.INVALID_PARAMETER, f"balance is not valid: {exc}.") from None
        return ok({"balance": float(self._remaining())})

    def _outage_state(self) -> dict[str, Any]:
        remaining = self.outage_remaining_s
        return {"active": remaining > 0, "remaining_s": round(remaining, 3)}

    def _created(self) -> list[dict[str, Any]]:
        """Every stored prediction in creation order, as a test needs it to count jobs."""
        return [
            {
                "id": record.id,
                "model": record.model_id,
                "prompt": record.prompt,
                "seed": record.seed,
                "status": str(record.status),
                "created_at": record.to_json()["created_at"],
                "ended_at": record.ended_ts,
                "billed": record.billed_cost is not None,
                "fingerprint": record.fingerprint,
            }
            for record in self.predictions.values()
        ]

    def _duplicates(self) -> list[dict[str, Any]]:
        """Groups of stored predictions with the same model, inputs and seed: jobs paid twice."""
        groups: dict[str, list[SimPrediction]] = {}
        for record in self.predictions.values():
            groups.setdefault(record.fingerprint, []).append(record)
        return [
            {
                "fingerprint": fingerprint,
                "model": records[0].model_id,
                "prompt": records[0].prompt,
                "seed": records[0].seed,
                "count": len(records),
                "ids": [record.id for record in records],
            }
            for fingerprint, records in groups.items()
            if len(records) > 1
        ]

    async def _state(self, _request: web.Request) -> web.Response:
        by_status = Counter(str(record.status) for record in self.predictions.values())
        return ok(
            {
                "predictions": {
                    "stored": len(self.predictions),
                    "created_total": self.created_total,
                    "peak_open": self.peak_open,
                    "by_status": dict(by_status),
                    "items": self._created(),
                    "duplicates": self._duplicates(),
                },
                "billed": {"count": len(self.billed), "total": float(self._charged)},
                "balance": float(self._remaining()),
                "requests": dict(self.request_counts),
                "uploads": len(self.media),
                "webhook_deliveries": len(self.webhook_deliveries),
                "running_tasks": len(self._tasks),
                "outage": self._outage_state(),
            }
        )


@asynccontextmanager
async def run_simulator(
    config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[WaveSpeedSimulator]:
    """Serve a new simulator on `host:port` (0: a free port); `sim.base_url` says where."""
    sim = WaveSpeedSimulator(config)
    # Tasks are cancelled in on_shutdown, so open requests end quickly: no long grace period.
    runner = web.AppRunner(sim.app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        netloc = f"[{host}]" if ":" in host else host  # an IPv6 literal needs brackets
        sim.base_url = f"http://{netloc}:{bound_port}"
        log.info("WaveSpeed simulator listening on %s", sim.base_url)
        yield sim
    finally:
        sim.base_url = None
        await runner.cleanup()
