"""A prediction's life: wait for a slot (created), infer (processing), then completed or failed."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from services.images import scaled_to_fit
from services.wavespeed.catalog import KontextRequest, ModelKind
from services.wavespeed.media import EXTENSIONS, sniff_image_type
from services.wavespeed.protocol import Code, Status

from . import render
from .config import Fault
from .inputs import SourceImage
from .limits import TaskSlots
from .state import OutputFile, SimPrediction

log = logging.getLogger(__name__)

MODERATION_ERROR = (
    "Content moderation: the request was flagged by the safety checker and no image was made."
)
TASK_FAILED_ERROR = "Task failed: the model could not finish this prediction (simulated failure)."


@dataclass(frozen=True)
class RenderPlan:
    """Everything needed to render a prediction's outputs, fixed at submit."""

    kind: ModelKind
    prompt: str
    seed: int
    count: int
    size: tuple[int, int]
    fmt: str
    images: list[SourceImage] = field(repr=False)


def plan_render(
    kind: ModelKind, request: KontextRequest, images: list[SourceImage], seed: int, max_side: int
) -> RenderPlan:
    """How to render `request`: output size from size/aspect_ratio, else the first input's."""
    size_option = getattr(request, "size", None)
    aspect = getattr(request, "aspect_ratio", None)
    # An edit without an explicit size keeps its input's shape; so does a composition, whose
    # first image is its main subject. Text-to-image (and dev without an image) is square.
    default = images[0].size if images else (1024, 1024)
    size = render.output_size(aspect, size_option, default=default)
    if kind is ModelKind.EDIT and not images:
        kind = ModelKind.TEXT_TO_IMAGE  # flux-kontext-dev documents `image` as optional
    return RenderPlan(
        kind=kind,
        prompt=request.prompt or "",
        seed=seed,
        count=request.output_count(),
        size=scaled_to_fit(size, max_side),
        fmt=getattr(request, "output_format", None) or "jpeg",
        images=images,
    )


def render_output(plan: RenderPlan, index: int) -> bytes:
    """Output `index` of `plan` (seed + index). Synchronous Pillow work: run it in a thread."""
    seed = plan.seed + index
    if plan.kind is ModelKind.EDIT:
        image = plan.images[0].data
        return render.render_edit(image, plan.prompt, seed, size=plan.size, fmt=plan.fmt)
    if plan.kind is ModelKind.MULTI:
        images = [source.data for source in plan.images]
        return render.render_composition(images, plan.prompt, seed, size=plan.size, fmt=plan.fmt)
    return render.render_text_to_image(plan.prompt, seed, size=plan.size, fmt=plan.fmt)


def _word_pattern(trigger: str) -> re.Pattern[str]:
    # Word boundaries that also work when the trigger itself starts or ends with punctuation.
    return re.compile(rf"(?<!\w){re.escape(trigger)}(?!\w)", re.IGNORECASE)


class JobRunner:
    """Runs predictions through their statuses; `on_settled` hears when one stops changing."""

    def __init__(
        self,
        slots: TaskSlots,
        *,
        latency_s: float,
        nsfw_trigger: str,
        moderation_trigger: str,
        stuck_trigger: str = "",
        on_settled: Callable[[SimPrediction], None],
    ) -> None:
        self._slots = slots
        self._latency_s = latency_s
        self._nsfw = _word_pattern(nsfw_trigger) if nsfw_trigger else None
        self._moderation = moderation_trigger.lower()
        self._stuck = stuck_trigger.lower()
        self._on_settled = on_settled

    async def run(
        self, record: SimPrediction, plan: RenderPlan, ticket: asyncio.Future[None]
    ) -> None:
        """Drive `record` to its end. `ticket` is its slot claim, made at submit (FIFO order)."""
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self._slots.release(record.key)  # granted just as we were cancelled
            raise
        loop = asyncio.get_running_loop()
        started = loop.time()
        record.status = Status.PROCESSING
        try:
            if record.fault is Fault.STUCK or (self._stuck and self._stuck in plan.prompt.lower()):
                # Stays "processing" for good; the slot is freed so one stuck task does not
                # also block the key's later tasks.
                log.info("prediction %s is stuck (injected fault or prompt)", record.id)
            else:
                await asyncio.sleep(self._latency_s)
                try:
                    await self._infer(record, plan)
                except Exception:
                    # A bug here must not leave the task "processing" with its cost reserved.
                    log.exception("prediction %s crashed", record.id)
                    self._fail(record, Code.INTERNAL, "Internal error while running the task.")
                record.inference_ms = round((loop.time() - started) * 1000)
        finally:
            self._slots.release(record.key)
        self._on_settled(record)

    async def _infer(self, record: SimPrediction, plan: RenderPlan) -> None:
        if record.fault is Fault.MODERATION or (
            self._moderation and self._moderation in plan.prompt.lower()
        ):
            self._fail(record, Code.MODERATED, MODERATION_ERROR)
            return
        if record.fault is Fault.TASK_FAILED:
            self._fail(record, Code.TASK_FAILED, TASK_FAILED_ERROR)
            return
        files: list[OutputFile] = []
        try:
            for index in range(plan.count):
                data = await asyncio.to_thread(render_output, plan, index)
                content_type = sniff_image_type(data) or "application/octet-stream"
                files.append(OutputFile(data, content_type, EXTENSIONS.get(content_type, "bin")))
        except ValueError as exc:  # RenderError included: inputs were checked, so unexpected
            log.warning("rendering prediction %s failed: %s", record.id, exc)
            self._fail(record, Code.TASK_FAILED, f"Task failed: {exc}")
            return
        nsfw = bool(self._nsfw and self._nsfw.search(plan.prompt))
        record.output_files = files
        record.has_nsfw_contents = [nsfw] * len(files)
        if record.base64_output:
            record.outputs = [base64.b64encode(item.data).decode("ascii") for item in files]
        else:
            record.outputs = [
                f"{record.origin}/outputs/{record.id}/{index}.{item.extension}"
                for index, item in enumerate(files)
            ]
        record.status = Status.COMPLETED

    @staticmethod
    def _fail(record: SimPrediction, code: Code, message: str) -> None:
        record.status = Status.FAILED
        record.code = int(code)
        record.error = message
