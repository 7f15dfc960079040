"""What members can ask for: new edits, images from text, compositions, and edit chains.

Each use case checks the prompt (services/prompts.py) and the images, picks the model, validates
the options (fixing the seed) and hands a stored job to the job service. Nothing is sent to
WaveSpeed here, and nothing here knows about Discord: the cogs describe the member and the place
in an `Origin`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .community import Community
from .images import PreparedImage, prepare_input, prepare_inputs
from .intake import Intake
from .jobs import JobService, NewJob
from .origin import Origin
from .prompts import check_prompt
from .storage import Chain, JobImage, JobRecord, NewImage, PostedResult, Repository, StoredImage
from .wavespeed import (
    InvalidInputError,
    KontextError,
    KontextRequest,
    ModelKind,
    ModelSpec,
    WaveSpeedClient,
    model_for_path,
    pick_model,
)

log = logging.getLogger(__name__)

IMAGE_FIELDS = {"image", "images"}
# How many of a member's results `/kontext history` lists.
HISTORY_LENGTH = 8


class NotAllowedError(KontextError):
    default_message = "Only the person who asked for this image (or a moderator) can do that."


class NothingToUndoError(KontextError):
    default_message = "This is the first step of the edit: there is nothing to undo."


class ResultGoneError(KontextError):
    default_message = "I can't find that image any more; it may have been deleted."


class ImageExpiredError(KontextError):
    """A step whose image bytes were dropped by retention ([storage] retention_days)."""

    own_words = True

    def __init__(self, days: int) -> None:
        super().__init__(
            f"That image is older than {days} days and no longer kept, so I can't work on it "
            "any more. Upload it again with /edit to carry on."
        )


@dataclass(frozen=True, slots=True)
class Details:
    job: JobRecord
    # The chain's steps from the first to this one.
    history: list[JobRecord]


class EditService:
    def __init__(
        self,
        repository: Repository,
        jobs: JobService,
        client: WaveSpeedClient,
        intake: Intake,
        community: Community,
        *,
        retention_days: int = 30,
    ) -> None:
        self._repository = repository
        # For the answer about a step whose images were pruned (services/retention.py).
        self._retention_days = retention_days
        self._jobs = jobs
        self._client = client
        self._intake = intake
        # Every job passes its server's rules on its way into the queue (`_enqueue`).
        self._community = community

    # --- Starting a chain -----------------------------------------------------------------------

    async def new_edit(
        self,
        origin: Origin,
        image: bytes,
        prompt: str,
        *,
        filename: str | None = None,
        model: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Edit a member's image: the first step of a new chain."""
        prompt = check_prompt(prompt)
        spec = await self._pick(origin, model, ModelKind.EDIT)
        prepared = await prepare_input(image, filename=filename, intake=self._intake)
        request = self._prepare(spec, prompt, [prepared], options)
        return await self._start_chain(origin, "edit", spec, request, [prepared])

    async def imagine(
        self,
        origin: Origin,
        prompt: str,
        *,
        model: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Make images from text: the first step of a new chain."""
        prompt = check_prompt(prompt)
        spec = await self._pick(origin, model, ModelKind.TEXT_TO_IMAGE)
        request = self._prepare(spec, prompt, [], options)
        return await self._start_chain(origin, "imagine", spec, request, [])

    async def combine(
        self,
        origin: Origin,
        images: Sequence[tuple[bytes, str | None]],
        prompt: str,
        *,
        model: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Compose several images into one: the first step of a new chain."""
        prompt = check_prompt(prompt)
        spec = await self._pick(origin, model, ModelKind.MULTI)
        prepared = await prepare_inputs(
            images, minimum=2, maximum=spec.max_input_images, intake=self._intake
        )
        request = self._prepare(spec, prompt, prepared, options)
        return await self._start_chain(origin, "combine", spec, request, prepared)

    # --- Continuing one -------------------------------------------------------------------------

    async def edit_result(
        self, origin: Origin, job_id: int, prompt: str, *, image_number: int = 1
    ) -> JobRecord:
        """Edit one of a result's images: the next step, branching from that result."""
        prompt = check_prompt(prompt)
        parent = await self._repository.job(job_id)
        outputs = await self._repository.job_images(job_id, "output")
        if not outputs:
            raise ResultGoneError()
        if not 1 <= image_number <= len(outputs):
            raise InvalidInputError(
                f"That result has {len(outputs)} image{'s' if len(outputs) > 1 else ''}; "
                f"pick a number from 1 to {len(outputs)}."
            )
        prepared = self._kept(outputs[image_number - 1].image)
        spec = pick_model(model_for_path(parent.model_path).family, ModelKind.EDIT)
        request = self._prepare(spec, prompt, [prepared], None)
        if not self._may_change(origin, parent, await self._chain(parent)):
            # Someone else's result: they remix it in a chain of their own.
            return await self._start_chain(origin, "edit", spec, request, [prepared])
        return await self._enqueue(
            origin,
            "edit",
            spec,
            request,
            [prepared],
            chain_id=parent.chain_id,
            parent_id=parent.id,
            step=parent.step + 1,
        )

    async def reroll(self, origin: Origin, job_id: int) -> JobRecord:
        """The same inputs and instruction again with a new seed: a sibling of the step."""
        original = await self._repository.job(job_id)
        self._check_may_change(origin, original, await self._chain(original))
        spec = model_for_path(original.model_path)
        prepared = [
            self._kept(entry.image) for entry in await self._repository.job_images(job_id, "input")
        ]
        options = {k: v for k, v in original.params.items() if k not in {"prompt", "seed"}}
        request = self._prepare(spec, original.prompt, prepared, options)
        return await self._enqueue(
            origin,
            "reroll",
            spec,
            request,
            prepared,
            chain_id=original.chain_id,
            parent_id=original.parent_id,
            step=original.step,
        )

    async def undo(self, origin: Origin, job_id: int) -> tuple[JobRecord, list[JobImage]]:
        """The step before `job_id`, to be shown again as the chain's head (not regenerated)."""
        job = await self._repository.job(job_id)
        self._check_may_change(origin, job, await self._chain(job))
        if job.parent_id is None:
            raise NothingToUndoError()
        previous = await self._repository.job(job.parent_id)
        outputs = await self._repository.job_images(previous.id, "output")
        for entry in outputs:
            self._kept(entry.image)
        return previous, outputs

    async def record_post(self, job: JobRecord, posted: PostedResult) -> None:
        """A step shown again (by Undo) is its chain's head, and its message a result."""
        await self._repository.record_post(job, posted)

    async def retry(self, origin: Origin, job_id: int) -> JobRecord:
        """A job that made nothing, sent again exactly as it was asked for (same seed)."""
        original = await self._repository.job(job_id)
        if original.requester_id != origin.member_id:
            raise NotAllowedError()
        spec = model_for_path(original.model_path)
        inputs = [self._kept(e.image) for e in await self._repository.job_images(job_id, "input")]
        options = {k: v for k, v in original.params.items() if k != "prompt"}
        request = self._prepare(spec, original.prompt, inputs, options)
        return await self._enqueue(
            origin,
            original.action,
            spec,
            request,
            inputs,
            new_chain=original.chain_id is None,
            chain_id=original.chain_id,
            parent_id=original.parent_id,
            step=original.step,
        )

    async def check_may_change(self, origin: Origin, job_id: int) -> JobRecord:
        """The job, if `origin`'s member may edit, reroll, undo or delete it; else refused."""
        job = await self._repository.job(job_id)
        self._check_may_change(origin, job, await self._chain(job))
        return job

    # --- Reading --------------------------------------------------------------------------------

    async def details(self, job_id: int) -> Details:
        job = await self._repository.job(job_id)
        return Details(job, await self._repository.lineage(job_id))

    async def job(self, job_id: int) -> JobRecord:
        return await self._repository.job(job_id)

    async def recent_results(
        self, member_id: int, guild_id: int | None, *, limit: int = HISTORY_LENGTH
    ) -> list[JobRecord]:
        """A member's newest results here (their message and channel are recorded)."""
        return await self._repository.delivered_to(member_id, guild_id, limit=limit)

    async def chain(self, chain_id: int) -> Chain:
        return await self._repository.chain(chain_id)

    async def outputs(self, job_id: int) -> list[JobImage]:
        return await self._repository.job_images(job_id, "output")

    async def result_for_message(self, message_id: int) -> JobRecord | None:
        """The job whose result (or status) this message shows, if it is one of ours."""
        return await self._repository.job_for_message(message_id)

    async def result_messages(self, job_id: int) -> list[tuple[int, int]]:
        """(channel id, message id) of every message showing the job's result."""
        return await self._repository.messages_of(job_id, "result")

    async def head_of_thread(self, thread_id: int) -> JobRecord | None:
        chain = await self._repository.chain_for_thread(thread_id)
        if chain is None or chain.head_job_id is None:
            return None
        return await self._repository.job(chain.head_job_id)

    async def forget_message(self, message_id: int) -> None:
        await self._repository.forget_message(message_id)

    # --- Helpers --------------------------------------------------------------------------------

    def _prepare(
        self,
        spec: ModelSpec,
        prompt: str,
        images: Sequence[PreparedImage],
        options: dict[str, Any] | None,
    ) -> KontextRequest:
        params: dict[str, Any] = {"prompt": prompt, **(options or {})}
        if "images" in spec.request.model_fields:
            params["images"] = [image.as_input() for image in images]
        elif images:
            params["image"] = images[0].as_input()
        return self._client.prepare(spec, **params)

    async def _start_chain(
        self,
        origin: Origin,
        action: str,
        spec: ModelSpec,
        request: KontextRequest,
        inputs: Sequence[PreparedImage],
    ) -> JobRecord:
        return await self._enqueue(origin, action, spec, request, inputs, new_chain=True)

    async def _pick(self, origin: Origin, model: str | None, kind: ModelKind) -> ModelSpec:
        """The model the member named, or their server's default."""
        if model is None:
            model = (await self._community.rules(origin.guild_id)).default_for(kind)
        return pick_model(model, kind)

    async def _enqueue(
        self,
        origin: Origin,
        action: str,
        spec: ModelSpec,
        request: KontextRequest,
        inputs: Sequence[PreparedImage],
        *,
        new_chain: bool = False,
        chain_id: int | None = None,
        parent_id: int | None = None,
        step: int = 1,
    ) -> JobRecord:
        """Every new job's way into the queue: through its server's rules (which may refuse
        it), its price held against the budgets as it is stored."""
        admission = await self._community.admit(origin, spec, request)
        params = admission.request.model_dump(mode="json", exclude_none=True, exclude=IMAGE_FIELDS)
        return await self._jobs.enqueue(
            NewJob(
                action=action,
                requester_id=origin.member_id,
                channel_id=origin.channel_id,
                guild_id=origin.guild_id,
                model=spec,
                params=params,
                inputs=[NewImage(i.data, i.content_type, i.width, i.height) for i in inputs],
                new_chain=new_chain,
                chain_id=chain_id,
                parent_id=parent_id,
                step=step,
                interaction_token=origin.interaction_token,
                token_expires_at=origin.token_expires_at,
                upload_limit=origin.upload_limit,
                nsfw_allowed=admission.nsfw_allowed,
                status_message_id=origin.status_message_id,
                status_channel_id=origin.status_channel_id,
                hold=admission.hold,
            )
        )

    def _kept(self, image: StoredImage) -> PreparedImage:
        """A stored image as an input again, if its bytes are still kept."""
        if image.pruned_at is not None:
            raise ImageExpiredError(self._retention_days)
        return _prepared(image)

    async def _chain(self, job: JobRecord) -> Chain | None:
        return await self._repository.chain(job.chain_id) if job.chain_id else None

    @staticmethod
    def _may_change(origin: Origin, job: JobRecord, chain: Chain | None) -> bool:
        owners = {job.requester_id} | ({chain.owner_id} if chain else set())
        return origin.member_id in owners or origin.can_manage

    def _check_may_change(self, origin: Origin, job: JobRecord, chain: Chain | None) -> None:
        if not self._may_change(origin, job, chain):
            raise NotAllowedError()


def _prepared(image: StoredImage) -> PreparedImage:
    """A stored image (already checked and re-encoded once) as an input for a new job."""
    return PreparedImage(
        image.data,
        image.content_type,
        image.width,
        image.height,
        source_format=image.content_type.split("/")[-1].upper(),
    )
