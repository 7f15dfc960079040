"""Shows jobs in Discord: progress, results in edit threads, failures.

Everything here works from the stored job alone (never from a live Interaction), so a result
finished after a restart is posted the same way. While the interaction token lives, progress is
shown in the requester's ephemeral answer; results are always ordinary channel or thread
messages that mention the requester, so they arrive even after the token's 15 minutes.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import discord

from services.edits import EditService
from services.images import fit_to_limit
from services.jobs import JobService, Stage
from services.storage import JobImage, JobRecord

from . import _render as render
from ._views import cancel_view, result_view

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
# Discord caps a whole request at 25 MiB; leave room for the JSON part.
REQUEST_LIMIT = 25 * 1024 * 1024 - 512 * 1024
# A token that is about to die is treated as dead: a request started now may land too late.
TOKEN_MARGIN_S = 30
THREAD_ARCHIVE_MINUTES = 1440

Messageable = discord.TextChannel | discord.Thread | discord.DMChannel | discord.VoiceChannel


class DiscordPresenter:
    def __init__(
        self,
        bot: Any,
        edits: EditService,
        jobs: JobService,
        *,
        simulated: bool,
        status_interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._bot = bot
        self._edits = edits
        self._jobs = jobs
        self._simulated = simulated
        self._interval = status_interval_s
        self._clock = clock
        # job id -> (monotonic time, text) of its last status edit
        self._shown: dict[int, tuple[float, str]] = {}

    # --- Progress -------------------------------------------------------------------------------

    async def show_progress(self, job: JobRecord, stage: Stage, detail: str) -> None:
        now = time.monotonic()
        text = render.status_line(stage, detail)
        last = self._shown.get(job.id)
        # Discord rate-limits message edits: at most one every `interval` per job, and none
        # that would change nothing. A new queue position always goes out: positions change
        # only when the queue does, and a dropped one would stay wrong until the job starts.
        if last is not None and (
            last[1] == text or (stage != Stage.QUEUED and now - last[0] < self._interval)
        ):
            return
        self._shown[job.id] = (now, text)
        view = cancel_view(job.id) if stage == Stage.QUEUED else None
        await self._edit_status(job, text, view)

    async def _edit_status(
        self, job: JobRecord, content: str, view: discord.ui.View | None
    ) -> bool:
        """Show `content` in the job's status message; False when there is none to edit."""
        if job.status_message_id is None:
            return False
        if job.status_channel_id is None:
            if not self._token_alive(job):
                return False
            await self._webhook(job).edit_message(job.status_message_id, content=content, view=view)
            return True
        channel = await self._channel(job.status_channel_id)
        message = channel.get_partial_message(job.status_message_id)
        await message.edit(content=content, view=view)
        return True

    # --- Results --------------------------------------------------------------------------------

    async def deliver(self, job: JobRecord, outputs: list[JobImage]) -> None:
        message = await self.post_result(job, outputs)
        if job.chain_id is not None:
            # The result is visible now: the thread's next plain message must edit it, even
            # while the status edit below is still on its way (or rate-limited).
            await self._edits.set_head(job.chain_id, job.id)
        self._shown.pop(job.id, None)
        await self._finish_status(job, f"✅ Done: {message.jump_url}")

    async def post_result(
        self, job: JobRecord, outputs: Sequence[JobImage], *, undo_of: int | None = None
    ) -> discord.Message:
        """Post the job's images as its chain's newest step, starting the thread if needed."""
        chain = await self._edits.chain(job.chain_id) if job.chain_id else None
        destination, reference = await self._destination(job, chain)
        files, notes = await self._attachments(job, outputs, destination)
        embed = render.result_embed(job, simulated=self._simulated, notes=notes, undo_of=undo_of)
        message = await destination.send(
            content=render.mention(job.requester_id),
            embed=embed,
            files=files,
            view=result_view(job.id),
            allowed_mentions=discord.AllowedMentions(
                users=[discord.Object(job.requester_id)],
                everyone=False,
                roles=False,
                replied_user=False,
            ),
            reference=reference,  # type: ignore[arg-type]
        )
        await self._jobs.record_message(job, message.id, destination.id, "result")
        if (
            chain is not None
            and chain.thread_id is None
            and not isinstance(destination, discord.Thread)
        ):
            thread = await self._start_thread(message, job)
            if thread is not None:
                await self._edits.attach_thread(chain.id, thread.id)
        return message

    async def _destination(
        self, job: JobRecord, chain: Any
    ) -> tuple[Messageable, discord.MessageReference | None]:
        if chain is not None and chain.thread_id is not None:
            thread = await self._channel(chain.thread_id)
            if isinstance(thread, discord.Thread) and thread.archived:
                # Archived threads refuse messages until they are opened again.
                await thread.edit(archived=False)
            return thread, None
        channel = await self._channel(chain.channel_id if chain is not None else job.channel_id)
        reference = None
        if job.parent_id is not None:
            # No thread here (a DM, a forum post, no permission): the chain goes on as replies.
            posted = await self._edits.result_messages(job.parent_id)
            if posted:
                reference = discord.MessageReference(
                    message_id=posted[-1][1], channel_id=posted[-1][0], fail_if_not_exists=False
                )
        return channel, reference

    async def _start_thread(
        self, message: discord.Message, job: JobRecord
    ) -> discord.Thread | None:
        if message.guild is None:
            return None
        try:
            return await message.create_thread(
                name=render.thread_name(job.prompt), auto_archive_duration=THREAD_ARCHIVE_MINUTES
            )
        except (discord.Forbidden, discord.HTTPException) as exc:
            log.info(
                "job %d: no thread on its result (%s); the chain goes on as replies", job.id, exc
            )
            return None

    async def _attachments(
        self, job: JobRecord, outputs: Sequence[JobImage], destination: Messageable
    ) -> tuple[list[discord.File], list[str]]:
        guild = getattr(destination, "guild", None)
        limit = job.upload_limit or (guild.filesize_limit if guild else DEFAULT_UPLOAD_LIMIT)
        per_file = min(limit, REQUEST_LIMIT // max(1, len(outputs)))
        files: list[discord.File] = []
        notes: list[str] = []
        for number, output in enumerate(outputs, start=1):
            label = f"Image {number}" if len(outputs) > 1 else "The image"
            if output.nsfw and not job.nsfw_allowed:
                notes.append(
                    f"{label} was withheld: the image service flagged it as NSFW, and "
                    "this channel is not age-restricted."
                )
                continue
            fitted = await fit_to_limit(output.image.data, per_file)
            if fitted is None:
                where = (
                    f" [Open it here]({output.source_url}) (kept for 7 days)."
                    if output.source_url
                    else ""
                )
                notes.append(f"{label} is too large to upload here, even re-encoded.{where}")
                continue
            if fitted.note:
                notes.append(f"{label}: {fitted.note}")
            if output.nsfw:
                notes.append(f"{label} is behind a spoiler: flagged as NSFW.")
            extension = fitted.content_type.split("/")[-1]
            files.append(
                discord.File(
                    io.BytesIO(fitted.data),
                    filename=f"kontext-{job.id}-{number}.{extension}",
                    spoiler=output.nsfw,
                )
            )
        return files, notes

    # --- Endings --------------------------------------------------------------------------------

    async def report_failure(self, job: JobRecord, message: str) -> None:
        self._shown.pop(job.id, None)
        if job.status_channel_id is None and await self._edit_status(job, f"❌ {message}", None):
            return
        if job.status_channel_id is not None and job.status_message_id is not None:
            await self._edit_status(job, f"❌ {render.mention(job.requester_id)} {message}", None)
            return
        # The token has expired: tell the requester where they asked.
        chain = await self._edits.chain(job.chain_id) if job.chain_id else None
        destination, _ = await self._destination(job, chain)
        await destination.send(
            f"❌ {render.mention(job.requester_id)} {message}",
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.requester_id)]),
        )

    async def _finish_status(self, job: JobRecord, content: str) -> None:
        if job.status_message_id is None:
            return
        try:
            if job.status_channel_id is None:
                await self._edit_status(job, content, None)
            else:
                # A reply saying "working on it" is noise once the result is there.
                channel = await self._channel(job.status_channel_id)
                await channel.get_partial_message(job.status_message_id).delete()
        except discord.HTTPException:
            log.info("job %d: status message already gone", job.id)

    # --- Helpers --------------------------------------------------------------------------------

    def _token_alive(self, job: JobRecord) -> bool:
        return bool(
            job.interaction_token
            and job.token_expires_at
            and self._clock() < job.token_expires_at - TOKEN_MARGIN_S
        )

    def _webhook(self, job: JobRecord) -> discord.Webhook:
        assert job.interaction_token is not None
        return discord.Webhook.partial(
            self._bot.application_id, job.interaction_token, client=self._bot
        )

    async def _channel(self, channel_id: int) -> Any:
        channel = self._bot.get_channel(channel_id)
        if channel is None:
            channel = await self._bot.fetch_channel(channel_id)
        return channel
