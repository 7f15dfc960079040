"""The async WaveSpeed client: submit a Kontext job, await it, hand back the images as bytes.

One aiohttp session (passed in, owned by the caller), explicit timeouts per kind of request, and
one retry policy for everything that may be repeated. The submit POST is the exception: once it
may have reached the server it is never repeated, because a second POST can bill twice; a lost
answer becomes `SubmissionUnknownError` instead, and `list_predictions` is how the job is found.

Once a job is submitted it is paid for, so waiting for it is patient: transient failures while
polling or downloading are retried until the prediction's own end or a wall-clock deadline
(`deadline_at`, epoch seconds, which a job store can keep across restarts). Only that deadline,
or a failure that retrying cannot cure (a bad key, a deleted or failed prediction), ends it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, ValidationError

from .catalog import KontextRequest, ModelSpec, estimate_cost, model_for_path, validate_request
from .errors import (
    AuthenticationError,
    InsufficientCreditError,
    InvalidInputError,
    KontextError,
    MediaUnreachableError,
    ModeratedError,
    RateLimitedError,
    ServerError,
    SubmissionUnknownError,
    TaskFailedError,
    TimedOutError,
)
from .media import (
    EXTENSIONS,
    InputImage,
    decode_base64,
    decodes_fully,
    sniff_image_type,
    to_data_uri,
)
from .protocol import Balance, Code, Envelope, ListedPrediction, Prediction, Status
from .retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after

if TYPE_CHECKING:
    from ..settings import WaveSpeedSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

RANDOM_SEED_MAX = 2_147_483_647
# Outputs are a few MB at most; anything far larger is not an image we asked for.
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
# Signed, expiring Discord attachment URLs must never be handed to WaveSpeed.
DISCORD_CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net", "cdn.discord.com")
_CREDIT_WORDS = re.compile(r"insufficient|balance|credit|top.?up|payment", re.IGNORECASE)
_MODERATION_WORDS = re.compile(r"moderat|nsfw|content polic|flagged", re.IGNORECASE)
# Envelope codes with which WaveSpeed itself says it did nothing (internal error, unavailable):
# an answer carrying one proves a submit was refused, so sending it again cannot bill twice.
REFUSAL_CODES = frozenset({Code.INTERNAL, Code.UNAVAILABLE})


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    data: bytes = field(repr=False)
    content_type: str
    nsfw: bool
    index: int
    # Where WaveSpeed hosts it (for 7 days); None for base64 outputs.
    url: str | None = None

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.content_type, "bin")


@dataclass(frozen=True, slots=True)
class GenerationResult:
    prediction_id: str
    model: ModelSpec
    images: tuple[GeneratedImage, ...]
    # The seed sent with the request; the client picks one when the caller did not.
    seed: int | None
    inference_ms: int | None
    # Estimated from the published price list; WaveSpeed's answers do not state the charge.
    cost: Decimal | None
    # True when the image came from the built-in simulator, not from WaveSpeed.
    simulated: bool
    created_at: str


@dataclass(frozen=True, slots=True)
class Submission:
    """A job WaveSpeed has accepted: keep `prediction.id` to find it again after a restart."""

    spec: ModelSpec
    request: KontextRequest
    prediction: Prediction
    cost: Decimal | None

    @property
    def prediction_id(self) -> str:
        return self.prediction.id


# Told the kind of each HTTP exchange ("submit", "result", "download", "upload", "history",
# "balance", "account") and its seconds, failed ones included: the bot's latency metrics.
RequestObserver = Callable[[str, float], None]


class _Transient(Exception):
    """A failed attempt that may be tried again."""

    def __init__(self, error: KontextError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def create_session(settings: WaveSpeedSettings) -> aiohttp.ClientSession:
    """The one HTTP session for WaveSpeed. Timeouts are set per request, by kind."""
    connector = aiohttp.TCPConnector(limit=settings.max_connections)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


class WaveSpeedClient:
    """Submits Kontext jobs to WaveSpeed (or the simulator) and awaits their images."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: WaveSpeedSettings,
        *,
        simulated: bool = False,
        observe: RequestObserver | None = None,
    ) -> None:
        if settings.api_key is None:
            raise AuthenticationError("No WaveSpeed API key is configured.")
        self._session = session
        self._settings = settings
        self._base_url = settings.base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}
        self._retry = RetryPolicy(
            attempts=settings.retry_attempts,
            base_s=settings.retry_base_s,
            max_s=settings.retry_max_s,
        )
        self.simulated = simulated
        self._observe = observe

    @property
    def max_connections(self) -> int:
        """How many requests can be open at once (the session's pool)."""
        return self._settings.max_connections

    # --- The job, start to end -----------------------------------------------------------------

    def prepare(self, spec: ModelSpec, **params: Any) -> KontextRequest:
        """Validate the options for `spec` and fix the seed, before anything is sent or paid.

        Raises InvalidInputError with a sentence a member can read. A random seed is chosen here
        when none is given, so every result can say which seed made it (and Reroll can differ).
        """
        request = validate_request(spec, params)
        if request.seed is None or request.seed == -1:
            request = request.model_copy(update={"seed": random.randint(0, RANDOM_SEED_MAX)})
        return request

    def estimate_cost(self, spec: ModelSpec, request: KontextRequest) -> Decimal | None:
        return estimate_cost(spec, request)

    async def generate(
        self,
        spec: ModelSpec,
        request: KontextRequest,
        *,
        on_submitted: Callable[[Submission], Awaitable[None]] | None = None,
        sync: bool = False,
    ) -> GenerationResult:
        """Submit, await completion and download the outputs.

        `on_submitted` runs once WaveSpeed has accepted the job, before waiting: the place to
        record the prediction id so a restart can pick the job up instead of paying again.
        """
        submission = await self.submit(spec, request, sync=sync)
        if on_submitted is not None:
            await on_submitted(submission)
        return await self.finish(submission)

    async def submit(
        self,
        spec: ModelSpec,
        request: KontextRequest,
        *,
        webhook_url: str | None = None,
        sync: bool = False,
    ) -> Submission:
        """Send the job once. Never repeated after it may have reached WaveSpeed.

        With sync mode (where the model has it) the answer is usually the finished prediction:
        one request per job. Without it, or with a webhook, the answer is the accepted job.
        """
        refs = await asyncio.gather(*(self._media_ref(ref) for ref in request.media()))
        body = request.with_media(list(refs)).wire_json()
        sync = sync and spec.supports_sync and webhook_url is None
        if sync:
            body["enable_sync_mode"] = True
        if (
            self._settings.base64_output
            and webhook_url is None
            and "enable_base64_output" in spec.request.model_fields
        ):
            # WaveSpeed refuses base64 output together with a webhook.
            body["enable_base64_output"] = True
        params = {"webhook": webhook_url} if webhook_url else None
        prediction, _ = await self._api_model(
            Prediction,
            "POST",
            f"/api/v3/wavespeed-ai/{spec.path}",
            json=body,
            params=params,
            # A sync submit is held open until the image is made (or WaveSpeed's own time-out).
            timeout_s=self._settings.sync_timeout_s if sync else self._settings.submit_timeout_s,
            repeatable=False,
            kind="submit",
        )
        log.info("submitted %s as prediction %s (%s)", spec.path, prediction.id, prediction.status)
        return Submission(spec, request, prediction, estimate_cost(spec, request))

    async def finish(
        self, submission: Submission, *, deadline_at: float | None = None
    ) -> GenerationResult:
        """Await an accepted job (polling only if sync mode did not already finish it)."""
        until = self._deadline(deadline_at)
        prediction = submission.prediction
        if not prediction.status.terminal:
            if prediction.sync_timed_out:
                log.info("sync mode timed out for %s; polling", prediction.id)
            prediction = await self.wait_for(prediction.id, deadline_at=until)
        return await self.collect(
            submission.spec,
            prediction,
            seed=submission.request.seed,
            cost=submission.cost,
            deadline_at=until,
        )

    async def resume(
        self,
        spec: ModelSpec,
        prediction_id: str,
        *,
        seed: int | None = None,
        cost: Decimal | None = None,
        deadline_at: float | None = None,
        known: Prediction | None = None,
        expected_in_s: float | None = None,
    ) -> GenerationResult:
        """Finish a job submitted earlier (e.g. before a restart). Never submits anything.

        `deadline_at` is wall-clock epoch seconds (`time.time()`), so it means the same after a
        restart; None: `max_wait_s` from now. Past it: TimedOutError with the prediction id.
        `known` is the prediction as last seen (a sync-mode answer): when it has ended already,
        it is not asked for again. `expected_in_s`: see `wait_for`.
        """
        until = self._deadline(deadline_at)
        if known is not None and known.status.terminal:
            prediction = known
        else:
            prediction = await self.wait_for(
                prediction_id, deadline_at=until, expected_in_s=expected_in_s
            )
        return await self.collect(spec, prediction, seed=seed, cost=cost, deadline_at=until)

    async def wait_for(
        self,
        prediction_id: str,
        *,
        deadline_at: float | None = None,
        expected_in_s: float | None = None,
    ) -> Prediction:
        """Poll until the prediction ends, every `poll_interval_s`, from shortly before it is
        expected to end (`expected_in_s` from now, when the caller knows) so the result is
        seen within one interval of being ready. Only a 429 slows the polls down.

        Transient failures (429, 5xx, dropped connections, unreadable answers, time-outs) are
        retried under the retry policy until `deadline_at` (epoch seconds; None: `max_wait_s`
        from now), then TimedOutError. A bad key or a deleted prediction raises at once. A
        deadline already past still gets one look, so a job that finished meanwhile is kept.
        """
        until = self._deadline(deadline_at)
        interval = self._settings.poll_interval_s
        delay = interval if expected_in_s is None else max(interval, expected_in_s - interval)
        while True:
            remaining = until - time.time()
            if remaining > 0:
                await asyncio.sleep(min(delay, remaining))
            prediction, retry_after = await self._fetch_prediction(prediction_id, until=until)
            if prediction.status.terminal:
                return prediction
            if time.time() >= until:
                raise TimedOutError(
                    prediction_id=prediction_id, detail=f"still {prediction.status}"
                )
            delay = interval if retry_after is None else max(interval, retry_after)

    async def get_prediction(self, prediction_id: str) -> Prediction:
        """The prediction as WaveSpeed has it now."""
        prediction, _ = await self._fetch_prediction(prediction_id)
        return prediction

    async def collect(
        self,
        spec: ModelSpec,
        prediction: Prediction,
        *,
        seed: int | None = None,
        cost: Decimal | None = None,
        deadline_at: float | None = None,
    ) -> GenerationResult:
        """The images of an ended prediction, or its failure as a typed error.

        Each output counts only once it decodes completely; a cut-short or damaged download is
        fetched again until `deadline_at` (epoch seconds; None: `max_wait_s` from now).
        """
        if prediction.status != Status.COMPLETED:
            raise _failure(prediction)
        if not prediction.outputs:
            raise TaskFailedError(
                "The image service finished without returning an image.",
                prediction_id=prediction.id,
                status=prediction.status,
            )
        until = self._deadline(deadline_at)
        payloads = await asyncio.gather(
            *(
                self._output_bytes(prediction, index, until)
                for index in range(len(prediction.outputs))
            )
        )
        nsfw = prediction.has_nsfw_contents
        images = tuple(
            GeneratedImage(data, kind, index < len(nsfw) and nsfw[index], index, url)
            for index, (data, kind, url) in enumerate(payloads)
        )
        return GenerationResult(
            prediction_id=prediction.id,
            model=spec,
            images=images,
            seed=_seed_of(prediction, seed),
            inference_ms=prediction.timings.inference,
            cost=cost,
            simulated=self.simulated,
            created_at=prediction.created_at,
        )

    def _deadline(self, deadline_at: float | None) -> float:
        return time.time() + self._settings.max_wait_s if deadline_at is None else deadline_at

    # --- Finding jobs ---------------------------------------------------------------------------

    async def list_predictions(
        self,
        *,
        created_after: datetime,
        created_before: datetime,
        model: str | None = None,
        status: str | None = None,
        page_size: int = 50,
        max_pages: int = 20,
    ) -> list[ListedPrediction]:
        """This account's predictions created in the window (ends included), newest first.

        How a job whose submit answer was lost is found: look in the minutes around the submit
        for the same model and inputs (`ListedPrediction.input` is the body as sent). `model` is
        a model path as elsewhere here ("flux-kontext-pro"); naive datetimes are taken as UTC.
        A read, so repeated under the retry policy; pages are walked until one is empty or
        short, `total` is reached or `max_pages` were read.
        """
        if page_size < 1 or max_pages < 1:
            raise ValueError("page_size and max_pages must be at least 1")
        query: dict[str, Any] = {
            "page_size": page_size,
            "created_after": _iso_utc(created_after),
            "created_before": _iso_utc(created_before),
        }
        if model:
            query["model"] = model_for_path(model).model_id
        if status:
            query["status"] = str(status)
        found: dict[str, ListedPrediction] = {}
        listed = 0
        for page in range(1, max_pages + 1):
            envelope, _ = await self._api(
                "POST", "/api/v3/predictions", json={**query, "page": page}, kind="history"
            )
            items, total, served_size = _history_page(envelope.data, page_size)
            listed += len(items)
            for raw in items:
                try:
                    item = ListedPrediction.model_validate(raw)
                except ValidationError as exc:
                    log.warning(
                        "skipping an unreadable prediction history item: %s",
                        exc.errors()[0]["msg"],
                    )
                    continue
                # Newest first: a prediction created while paging pushes the others down a
                # place, so the next page can repeat one. Keep the first sighting.
                found.setdefault(item.id, item)
            if not items or len(items) < served_size or (total is not None and listed >= total):
                break
        else:
            log.warning("prediction history: stopped after %d pages", max_pages)
        return list(found.values())

    # --- Account reads -------------------------------------------------------------------------

    async def balance(self) -> Decimal:
        """What the WaveSpeed account holds, in US dollars (a free read).

        Retried like every read; an answer without a readable amount counts as malformed and
        ends, once the retries run out, as ServerError, never as a made-up zero.
        """
        data, _ = await self._api_model(Balance, "GET", "/api/v3/balance", kind="balance")
        return data.balance

    async def webhook_secret(self) -> str:
        envelope, _ = await self._api("GET", "/api/v3/webhook/secret", kind="account")
        data = envelope.data if isinstance(envelope.data, dict) else {}
        secret = data.get("secret")
        if not isinstance(secret, str) or not secret:
            raise ServerError(detail="no webhook secret in the answer")
        return secret

    # --- Images in ------------------------------------------------------------------------------

    async def upload(self, image: InputImage) -> str:
        """Host `image` at WaveSpeed and return its URL: the configured flow, then the other."""
        flows = [self._upload_binary, self._upload_ticket]
        if self._settings.upload_flow == "ticket":
            flows.reverse()
        try:
            return await flows[0](image)
        except (AuthenticationError, InsufficientCreditError):
            raise
        except KontextError as first:
            log.warning(
                "image upload via %s failed (%s); trying the other flow", flows[0].__name__, first
            )
            try:
                return await flows[1](image)
            except KontextError as second:
                raise MediaUnreachableError(
                    "The input image could not be uploaded to the image service.",
                    detail=str(second),
                ) from second

    async def _media_ref(self, ref: InputImage | str) -> str:
        if isinstance(ref, str):
            host = (urlsplit(ref).hostname or "").lower()
            if host.endswith(DISCORD_CDN_HOSTS):
                raise InvalidInputError(
                    "Discord attachment links expire; the image has to be sent as bytes."
                )
            return ref
        if ref.size <= self._settings.inline_image_max_bytes:
            return to_data_uri(ref.data, ref.content_type)
        return await self.upload(ref)

    async def _upload_binary(self, image: InputImage) -> str:
        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field(
                "file",
                image.data,
                filename=f"input.{image.extension}",
                content_type=image.content_type,
            )
            return data

        envelope, _ = await self._api(
            "POST",
            "/api/v3/media/upload/binary",
            body=form,
            timeout_s=self._settings.upload_timeout_s,
            kind="upload",
        )
        return _field(envelope, "download_url")

    async def _upload_ticket(self, image: InputImage) -> str:
        envelope, _ = await self._api(
            "POST",
            "/api/v3/media/uploads",
            json={
                "filename": f"input.{image.extension}",
                "size": image.size,
                "content_type": image.content_type,
            },
            timeout_s=self._settings.upload_timeout_s,
            kind="upload",
        )
        ticket = envelope.data.get("upload") if isinstance(envelope.data, dict) else None
        if not isinstance(ticket, dict) or not ticket.get("url"):
            raise ServerError(detail="upload ticket without a URL")
        download_url = _field(envelope, "download_url")
        # The ticket URL is presigned storage, not WaveSpeed's API: it gets no API key.
        await self._call(
            str(ticket.get("method") or "PUT"),
            ticket["url"],
            interpret=_expect_success,
            headers={str(k): str(v) for k, v in (ticket.get("headers") or {}).items()},
            body=lambda: image.data,
            timeout_s=self._settings.upload_timeout_s,
            kind="upload",
        )
        return download_url

    # --- Images out -----------------------------------------------------------------------------

    async def _output_bytes(
        self, prediction: Prediction, index: int, until: float
    ) -> tuple[bytes, str, str | None]:
        """(bytes, MIME type, URL or None) of output `index`, once it decodes completely."""
        output = prediction.outputs[index]
        for attempt in itertools.count():
            if _is_url(output):
                data = await self._call(
                    "GET",
                    output,
                    interpret=_read_image,
                    verify=self._verify_download,
                    timeout_s=self._settings.download_timeout_s,
                    prediction_id=prediction.id,
                    until=until,
                    kind="download",
                )
                return data, _checked_type(data), output
            try:
                data = decode_base64(output)
            except ValueError:
                data = b""
            kind = await asyncio.to_thread(decodes_fully, data) if data else None
            if kind is not None:
                return data, kind, None
            # An inline image cannot be fetched again by itself: read the prediction afresh
            # (under the same deadline) and take its output from there.
            if not self._retry.should_retry(attempt, until=until):
                raise TimedOutError(
                    prediction_id=prediction.id, detail="inline output never decoded"
                )
            wait = self._retry.delay(attempt, until=until)
            log.info("inline output %d of %s does not decode; re-reading it", index, prediction.id)
            await asyncio.sleep(wait)
            prediction, _ = await self._fetch_prediction(prediction.id, until=until)
            if prediction.status != Status.COMPLETED:
                raise _failure(prediction)
            if index >= len(prediction.outputs):
                raise TaskFailedError(
                    "The image service lost an image of this job.",
                    prediction_id=prediction.id,
                    status=prediction.status,
                )
            output = prediction.outputs[index]
        raise AssertionError("unreachable")  # pragma: no cover - the loop only exits by return

    @staticmethod
    async def _verify_download(data: bytes) -> None:
        # Decoding is CPU work on up to megapixels: off the event loop.
        if await asyncio.to_thread(decodes_fully, data) is None:
            raise _Transient(ServerError(detail="downloaded output does not decode completely"))

    # --- HTTP -----------------------------------------------------------------------------------

    async def _fetch_prediction(
        self, prediction_id: str, *, until: float | None = None
    ) -> tuple[Prediction, float | None]:
        prediction, headers = await self._api_model(
            Prediction,
            "GET",
            f"/api/v3/predictions/{prediction_id}/result",
            prediction_id=prediction_id,
            until=until,
            kind="result",
        )
        return prediction, parse_retry_after(headers.get("Retry-After"))

    async def _api_model(
        self, model: type[M], method: str, path: str, **kwargs: Any
    ) -> tuple[M, Mapping[str, str]]:
        """`_api` whose `data` must be a `model`; an answer without one is handled like a
        malformed answer (retried for a read, SubmissionUnknownError for the submit)."""
        envelope, headers = await self._api(method, path, expect=model, **kwargs)
        return cast(M, envelope.data), headers

    async def _api(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: Callable[[], Any] | None = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        repeatable: bool = True,
        prediction_id: str | None = None,
        expect: type[BaseModel] | None = None,
        until: float | None = None,
        kind: str = "account",
    ) -> tuple[Envelope, Mapping[str, str]]:
        """A call to WaveSpeed's API (with the key), answered by an envelope.

        `repeatable=False` is the submit: it is sent again only after an answer that proves
        WaveSpeed refused it (429, or a 5xx whose envelope says it did nothing); an answer that
        may hide an accepted job raises SubmissionUnknownError. With `expect`, `data` is
        parsed into that model. With `until`, retries last until that epoch second.
        """

        def interpret(
            status: int, headers: Mapping[str, str], raw: bytes
        ) -> tuple[Envelope, Mapping[str, str]]:
            envelope = _parse_envelope(raw)
            retry_after = parse_retry_after(headers.get("Retry-After"))
            if status < 400:
                if envelope is None:
                    if not repeatable:
                        # A 2xx we cannot read may well mean "accepted": the job may exist.
                        raise SubmissionUnknownError(detail="unreadable answer to the submit")
                    raise _Transient(
                        ServerError(detail="malformed JSON", prediction_id=prediction_id)
                    )
                _check_envelope(envelope, prediction_id, repeatable, retry_after)
                if expect is not None:
                    envelope.data = _parse_data(envelope, expect, prediction_id, repeatable)
                return envelope, headers
            if not repeatable and status >= 500 and not _is_refusal(envelope):
                # The failure may have come after the job was created (a gateway timing out,
                # a crash while answering): it may exist and be billed, so it is not sent again.
                raise SubmissionUnknownError(detail=f"HTTP {status} without proof of refusal")
            error = _error_for_status(status, envelope, prediction_id, headers)
            # A 429 is a refusal, so even a submit may be repeated after one; so may a submit
            # whose 5xx proved a refusal (the ambiguous ones were turned away just above). Any
            # 5xx counts, not only the usual four: proxies in front of an API invent their own.
            if status == 429 or status >= 500 or (repeatable and status in RETRYABLE_STATUSES):
                raise _Transient(error, retry_after)
            raise error

        return await self._call(
            method,
            f"{self._base_url}{path}",
            interpret=interpret,
            headers=self._auth,
            json=json,
            body=body,
            params=params,
            timeout_s=timeout_s or self._settings.result_timeout_s,
            repeatable=repeatable,
            prediction_id=prediction_id,
            until=until,
            kind=kind,
        )

    async def _call(
        self,
        method: str,
        url: str,
        *,
        interpret: Callable[[int, Mapping[str, str], bytes], T],
        verify: Callable[[T], Awaitable[None]] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        body: Callable[[], Any] | None = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float,
        repeatable: bool = True,
        prediction_id: str | None = None,
        until: float | None = None,
        kind: str = "account",
    ) -> T:
        """One HTTP exchange under the retry policy. Raw aiohttp errors do not get out.

        `verify` may reject an answer that arrived whole but is unusable (raising `_Transient`),
        which is then fetched again. With `until` (epoch seconds) retries are bounded by that
        deadline instead of a number of attempts, and giving up raises TimedOutError.
        """
        client_timeout = aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=self._settings.connect_timeout_s
        )
        for attempt in itertools.count():
            retry_after: float | None = None
            began = time.perf_counter()
            try:
                try:
                    async with self._session.request(
                        method,
                        url,
                        headers=headers,
                        json=json,
                        data=body() if body is not None else None,
                        params=params,
                        timeout=client_timeout,
                    ) as response:
                        if (response.content_length or 0) > MAX_OUTPUT_BYTES:
                            raise ServerError(
                                detail="answer larger than any image we asked for",
                                prediction_id=prediction_id,
                            )
                        raw = await response.read()
                        log.debug("%s %s -> %s", method, urlsplit(url).path, response.status)
                        result = interpret(response.status, response.headers, raw)
                finally:
                    if self._observe is not None:
                        self._observe(kind, time.perf_counter() - began)
                if verify is not None:
                    await verify(result)
                return result
            except _Transient as transient:
                failure, retry_after = transient.error, transient.retry_after
                failure.prediction_id = failure.prediction_id or prediction_id
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # The connection was never made, so not even a submit reached the server.
                failure = ServerError(
                    "The image service cannot be reached right now.",
                    detail=type(exc).__name__,
                    prediction_id=prediction_id,
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                if not repeatable:
                    raise SubmissionUnknownError(detail=type(exc).__name__) from exc
                failure = ServerError(detail=type(exc).__name__, prediction_id=prediction_id)
            if not self._retry.should_retry(attempt, retry_after, until=until):
                if until is not None:
                    # Waiting for a paid job: the deadline, not the failure, is what ends it.
                    raise TimedOutError(
                        prediction_id=prediction_id,
                        detail=f"still failing at the deadline: {failure.detail or failure}",
                    ) from failure
                raise failure
            wait = self._retry.delay(attempt, retry_after, until=until)
            log.info(
                "%s %s failed (%s); retry %d in %.2f s",
                method,
                urlsplit(url).path,
                failure.detail or type(failure).__name__,
                attempt + 1,
                wait,
            )
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover - the loop only exits by return


# --- Interpreting answers ---------------------------------------------------------------------


def _parse_envelope(raw: bytes) -> Envelope | None:
    try:
        return Envelope.model_validate_json(raw)
    except ValidationError:
        return None


def _field(envelope: Envelope, name: str) -> str:
    value = envelope.data.get(name) if isinstance(envelope.data, dict) else None
    if not isinstance(value, str) or not value:
        raise ServerError(detail=f"answer without {name}")
    return value


def _expect_success(status: int, headers: Mapping[str, str], raw: bytes) -> None:
    if status in RETRYABLE_STATUSES or status >= 500:
        raise _Transient(
            ServerError(detail=f"HTTP {status}"), parse_retry_after(headers.get("Retry-After"))
        )
    if status >= 400:
        raise ServerError(detail=f"HTTP {status}")


def _read_image(status: int, headers: Mapping[str, str], raw: bytes) -> bytes:
    _expect_success(status, headers, raw)
    return raw


def _names_prediction(envelope: Envelope) -> bool:
    return isinstance(envelope.data, dict) and bool(envelope.data.get("id"))


def _is_refusal(envelope: Envelope | None) -> bool:
    """Whether an error answer proves WaveSpeed did nothing with the request.

    Only WaveSpeed's own envelope with code 5000 (internal error) or 5003 (unavailable) and no
    prediction in it does. An HTML page from a proxy, an empty body, a 502/504 from a gateway
    or any other code proves nothing: the request may have been handled before the failure.
    """
    return (
        envelope is not None and envelope.code in REFUSAL_CODES and not _names_prediction(envelope)
    )


def _check_envelope(
    envelope: Envelope, prediction_id: str | None, repeatable: bool, retry_after: float | None
) -> None:
    """Raise for a 2xx answer whose envelope still reports an error."""
    if envelope.code in (Code.OK, Code.SUCCESS) or _names_prediction(envelope):
        # A prediction is returned even for sync time-outs (5004): the caller polls it.
        return
    error = _error_for_code(envelope.code, envelope.message, prediction_id)
    server_side = envelope.code >= Code.INTERNAL
    if _is_refusal(envelope) or (repeatable and server_side):
        raise _Transient(error, retry_after)
    if server_side and not repeatable:
        # e.g. 5004 without the prediction: the task runs on, but we do not know its id.
        raise SubmissionUnknownError(detail=f"code {envelope.code} without a prediction")
    raise error


def _parse_data(
    envelope: Envelope, model: type[BaseModel], prediction_id: str | None, repeatable: bool
) -> BaseModel:
    try:
        return model.model_validate(envelope.data)
    except ValidationError:
        if not repeatable:
            # Accepted, but without an id we can read: the job may exist, so do not resubmit.
            raise SubmissionUnknownError(detail="submit answer without a prediction") from None
        raise _Transient(
            ServerError(detail=f"answer without a {model.__name__}", prediction_id=prediction_id)
        ) from None


def _is_url(output: str) -> bool:
    return output.startswith(("http://", "https://"))


def _checked_type(data: bytes) -> str:
    # Only called on bytes `decodes_fully` accepted, so the signature is known.
    kind = sniff_image_type(data)
    if kind is None:  # pragma: no cover - decodes_fully sniffs first
        raise ServerError(detail="output lost its signature")
    return kind


def _iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, as WaveSpeed writes times; naive times are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _history_page(data: Any, asked_size: int) -> tuple[list[Any], int | None, int]:
    """(items, total or None, page size the server used) of a history answer's `data`.

    Accepts `{items, total?, page_size?}` and a bare list of items; a missing or odd `total`
    just means paging stops at an empty or short page.
    """
    if isinstance(data, list):
        return data, None, asked_size
    if not isinstance(data, dict):
        log.warning("prediction history answer without items (%s)", type(data).__name__)
        return [], None, asked_size
    items = data.get("items")
    if not isinstance(items, list):
        items = []
    total = data.get("total")
    served = data.get("page_size")
    # A server that serves smaller pages than asked says so; a page that short is not the last.
    if isinstance(served, int) and not isinstance(served, bool) and 0 < served < asked_size:
        asked_size = served
    if isinstance(total, bool) or not isinstance(total, int):
        total = None
    return items, total, asked_size


def _error_for_code(code: int, message: str, prediction_id: str | None) -> KontextError:
    if code == Code.MODERATED:
        return ModeratedError(prediction_id=prediction_id, detail=message)
    if code == Code.MEDIA_UNREACHABLE:
        return MediaUnreachableError(prediction_id=prediction_id, detail=message)
    if code in (Code.MISSING_PARAMETER, Code.INVALID_PARAMETER):
        return InvalidInputError(
            f"The image service refused the request: {message}" if message else None,
            prediction_id=prediction_id,
            detail=message,
        )
    if code in (Code.TASK_FAILED, Code.TASK_FAILED_ALT):
        return TaskFailedError(prediction_id=prediction_id, detail=message)
    return ServerError(prediction_id=prediction_id, detail=f"code {code}: {message}")


def _error_for_status(
    status: int,
    envelope: Envelope | None,
    prediction_id: str | None,
    headers: Mapping[str, str],
) -> KontextError:
    message = envelope.message if envelope else ""
    if status in (401, 403):
        return AuthenticationError(prediction_id=prediction_id, detail=f"HTTP {status}")
    if status == 402 or _CREDIT_WORDS.search(message):
        return InsufficientCreditError(prediction_id=prediction_id, detail=message)
    if status == 429:
        return RateLimitedError(
            retry_after=parse_retry_after(headers.get("Retry-After")),
            prediction_id=prediction_id,
            detail=message,
        )
    if status == 404 and prediction_id:
        return TaskFailedError(
            "This image is no longer kept by the image service (results last 7 days).",
            prediction_id=prediction_id,
            status=Status.DELETED,
            detail=message,
        )
    if envelope is not None and envelope.code not in (status, Code.OK):
        return _error_for_code(envelope.code, message, prediction_id)
    if status >= 500:
        return ServerError(prediction_id=prediction_id, detail=f"HTTP {status}: {message}")
    return InvalidInputError(
        f"The image service refused the request: {message}" if message else None,
        prediction_id=prediction_id,
        detail=f"HTTP {status}",
    )


def _failure(prediction: Prediction) -> KontextError:
    """The typed error for a prediction that ended without images."""
    code = prediction.code or 0
    text = prediction.error
    pid = prediction.id
    if code == Code.MODERATED or _MODERATION_WORDS.search(text):
        return ModeratedError(prediction_id=pid, detail=text)
    if code in (Code.MEDIA_UNREACHABLE, Code.MISSING_PARAMETER, Code.INVALID_PARAMETER):
        return _error_for_code(code, text, pid)
    messages = {
        Status.CANCELLED: "This image was cancelled at the image service.",
        Status.TIMEOUT: "The image service ran out of time making this image.",
        Status.DELETED: "This image is no longer kept by the image service.",
    }
    return TaskFailedError(
        messages.get(prediction.status),
        prediction_id=pid,
        status=prediction.status,
        detail=text or None,
    )


def _seed_of(prediction: Prediction, sent: int | None) -> int | None:
    echoed = (prediction.input or {}).get("seed")
    if isinstance(echoed, int) and echoed >= 0:
        return echoed
    return sent if sent is not None and sent >= 0 else None
