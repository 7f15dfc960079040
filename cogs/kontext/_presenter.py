"""Shows jobs in Discord: progress, results in edit threads, failures.

Everything here works from the stored job alone (never from a live Interaction), so a result
finished after a restart is posted the same way. While the interaction token lives, progress is
shown in the requester's ephemeral answer; results are always ordinary channel or thread
messages that mention the requester, so they arrive even after the token's 15 minutes.

It only presents: it posts and returns what it posted (`PostedResult`), and turns Discord's
refusals into `PostFailedError`; the job service records messages, threads and the chain head.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import discord

from services.bundle import Role, Services
from services.images import fit_to_limit
from services.jobs import PostFailedError, Stage
from services.modlog import LOW_BALANCE_NOTE, LogEntry, LogNote
from services.recent import RecentMap, RecentSet
from services.storage import JobImage, JobRecord, PostedResult

from .._markdown import literal
from . import _render as render
from ._actions import cancel_view, result_view, retry_view

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
# Discord caps a whole request at 25 MiB; leave room for the JSON part.
REQUEST_LIMIT = 25 * 1024 * 1024 - 512 * 1024
# A token that is about to die is treated as dead: a request started now may land too late.
TOKEN_MARGIN_S = 30
# Discord's code for a webhook (here: an interaction token) it does not know.
UNKNOWN_WEBHOOK = 10015
THREAD_ARCHIVE_MINUTES: Literal[60, 1440, 4320, 10080] = 1440
# After a restart, a result that may have been posted is looked for among this many messages.
LOOK_BACK_MESSAGES = 50
# How many interaction tokens Discord refused are remembered; a token matters for 15 minutes.
REFUSED_TOKEN_MEMORY = 10_000
# A worker has no gateway, so no cache Discord keeps current: what it fetched over REST is
# kept a while (a channel's name or a thread's lock may change meanwhile; a refused post
# forgets its channel at once), and a server's upload limit a while longer.
FETCHED_CHANNELS = 2_000
FETCHED_CHANNEL_TTL_S = 60.0
FETCHED_GUILDS = 1_000
FETCHED_GUILD_TTL_S = 600.0

Messageable = discord.TextChannel | discord.Thread | discord.DMChannel | discord.VoiceChannel
# What a bot may upload per file by server boost level (a bot has no Nitro). An upload Discord
# refuses as too large is fitted again to the next limit down, and below the last one linked.
SERVER_UPLOAD_LIMITS = (100 * 1024 * 1024, 50 * 1024 * 1024, DEFAULT_UPLOAD_LIMIT)
REQUEST_ENTITY_TOO_LARGE = 40005


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a result is posted: the channel or thread, the step it replies to, and what
    members are told about the choice."""

    channel: Messageable
    reference: discord.MessageReference | None = None
    notes: tuple[str, ...] = ()


class DiscordPresenter:
    def __init__(self, bot: discord.Client, services: Services) -> None:
        self._bot = bot
        self._edits = services.edits
        self._intake = services.intake
        self._simulated = services.simulated
        self._clock = services.clock
        # Tokens Discord called dead before our count of their 15 minutes ran out (our clock
        # behind Discord's): never used again, since every further 401 is one more toward
        # Discord's limit on invalid requests, and the member is better told some other way.
        self._refused_tokens: RecentSet[str] = RecentSet(REFUSED_TOKEN_MEMORY)
        # Only a process without a gateway keeps what it fetched: with one, discord.py's own
        # cache (kept current by the gateway's events) is asked first.
        self._rest_only = services.role is Role.WORKER
        self._channels: RecentMap[int, Any] = RecentMap(FETCHED_CHANNELS, FETCHED_CHANNEL_TTL_S)
        self._upload_limits: RecentMap[int, int] = RecentMap(FETCHED_GUILDS, FETCHED_GUILD_TTL_S)

    # --- Progress -------------------------------------------------------------------------------

    async def show_progress(self, job: JobRecord, stage: Stage, detail: str) -> None:
        # Whether and how often a status is shown is decided by the job service's status
        # updater (services/status.py), under one request budget: this only edits.
        waiting = stage in (Stage.QUEUED, Stage.WAITING)
        text = render.status_line(stage, detail)
        await self._edit_status(job, text, cancel_view(job.id) if waiting else None)

    async def _edit_status(
        self, job: JobRecord, content: str, view: discord.ui.View | None
    ) -> bool:
        """Show `content` in the job's status message; False when there is none to edit.

        A failure in a public status line mentions the requester and pings them; nothing
        else in it pings anyone (the bot's default, on every other message, pings nobody).
        """
        if job.status_message_id is None:
            return False
        if job.status_channel_id is None:
            if not self._token_alive(job):
                return False
            try:
                await self._webhook(job).edit_message(
                    job.status_message_id, content=content, view=view
                )
            except discord.HTTPException as exc:
                if not _token_refused(exc):
                    raise
                self._refuse_token(job)
                return False
            return True
        channel = await self._channel(job.status_channel_id)
        message = channel.get_partial_message(job.status_message_id)
        await message.edit(content=content, view=view, allowed_mentions=_only(job.requester_id))
        return True

    # --- Results --------------------------------------------------------------------------------

    async def post_result(
        self,
        job: JobRecord,
        outputs: Sequence[JobImage],
        *,
        nonce: str | None = None,
        undo_of: int | None = None,
    ) -> PostedResult:
        """Post the job's images as its chain's newest step, starting the thread if needed.

        With a `nonce`, Discord keeps only the first post of it (for a few minutes), so a post
        repeated after a lost answer does not show the result twice. An upload Discord refuses
        as too large is fitted again to a smaller limit, and at last linked: a paid image is
        never lost to it.
        """
        with _post_errors(job):
            chain = await self._edits.chain(job.chain_id) if job.chain_id else None
            place = await self._destination(job, chain)
            try:
                message = await self._send_fitted(job, outputs, place, nonce=nonce, undo_of=undo_of)
            except discord.HTTPException:
                # What was fetched of it may be what changed (a thread locked or gone).
                self._channels.discard(place.channel.id)
                raise
        destination = place.channel
        thread_id = None
        if (
            chain is not None
            and chain.thread_id is None
            and not isinstance(destination, discord.Thread)
        ):
            thread = await self._start_thread(message, job)
            thread_id = thread.id if thread is not None else None
        return PostedResult(message.id, destination.id, message.jump_url, thread_id)

    async def _send_fitted(
        self,
        job: JobRecord,
        outputs: Sequence[JobImage],
        place: _Place,
        *,
        nonce: str | None,
        undo_of: int | None,
    ) -> discord.Message:
        """Send the result card with the images fitted to the place's upload limit; if Discord
        refuses them as too large anyway (its limit changed before the bot heard of it), fit
        them to the next limit down, and below the last one link them."""
        limit: int | None = _upload_limit(job, place.channel, await self._guild_limit(place))
        while True:
            files, notes = await self._attachments(job, outputs, limit)
            embed = render.result_embed(
                job, simulated=self._simulated, notes=[*place.notes, *notes], undo_of=undo_of
            )
            try:
                return await place.channel.send(
                    content=render.mention(job.requester_id),
                    embed=embed,
                    files=files,
                    view=result_view(job.id),
                    allowed_mentions=_only(job.requester_id),
                    reference=place.reference,  # type: ignore[arg-type]
                    nonce=nonce,  # type: ignore[arg-type]
                )
            except discord.HTTPException as exc:
                if exc.code != REQUEST_ENTITY_TOO_LARGE or not files:
                    raise
                smaller = _smaller_limit(limit)
                log.warning(
                    "job %d: Discord refused its images as too large for %s bytes each; %s",
                    job.id,
                    limit,
                    f"fitting them to {smaller}" if smaller else "linking them instead",
                )
                limit = smaller

    async def find_result(self, job: JobRecord) -> PostedResult | None:
        """The job's result message, if an earlier post of it reached Discord.

        Looked for where it would be: the chain's thread, or the channel (where the post that
        started the thread is, and where a step goes when the bot may not post in the thread).
        """
        wanted = result_view(job.id).children[0].custom_id  # type: ignore[attr-defined]
        since = discord.Object(
            discord.utils.time_snowflake(
                dt.datetime.fromtimestamp((job.delivery_started_at or job.created_at) - 60, dt.UTC)
            )
        )
        with _post_errors(job):
            chain = await self._edits.chain(job.chain_id) if job.chain_id else None
            places = []
            if chain is not None and chain.thread_id is not None:
                # Even a thread the bot may no longer post in: an earlier post may be there.
                with contextlib.suppress(discord.NotFound):
                    places.append(await self._channel(chain.thread_id))
            places.append(
                await self._channel(chain.channel_id if chain is not None else job.channel_id)
            )
            me = self._bot.user
            assert me is not None, "results are looked for once the bot is logged in"
            for place in places:
                async for message in place.history(limit=LOOK_BACK_MESSAGES, after=since):
                    if message.author.id == me.id and wanted in _custom_ids(message):
                        thread = message.thread
                        return PostedResult(
                            message.id,
                            place.id,
                            message.jump_url,
                            thread.id if thread is not None else None,
                        )
        return None

    async def _destination(self, job: JobRecord, chain: Any) -> _Place:
        """Where the job's result goes: its chain's thread, else the chain's channel.

        A message to an archived thread reopens it (Discord does that itself), so an archived
        thread is posted to as it is. A locked thread takes messages only from moderators, and
        a thread may be gone or closed to the bot: then the step goes to the thread's channel,
        as a reply to the step it continues, with a note saying why.
        """
        if chain is not None and chain.thread_id is not None:
            thread, why = await self._usable_thread(chain.thread_id)
            if thread is not None:
                return _Place(thread)
            channel = await self._channel(chain.channel_id)
            log.info(
                "job %d: posted in channel %d instead of its thread (%s)", job.id, channel.id, why
            )
            return _Place(channel, await self._reply_to(job, channel), (why,))
        channel = await self._channel(chain.channel_id if chain is not None else job.channel_id)
        # No thread here (a DM, a forum post, no permission): the chain goes on as replies.
        return _Place(channel, await self._reply_to(job, channel))

    async def _usable_thread(self, thread_id: int) -> tuple[discord.Thread | None, str]:
        """The chain's thread if the bot may post in it; else None and the reason, for members."""
        try:
            thread = await self._channel(thread_id)
        except discord.NotFound:
            return None, "This edit's thread is gone, so this step is posted here."
        if not isinstance(thread, discord.Thread):
            return None, "This edit's thread is gone, so this step is posted here."
        me = thread.guild.me
        try:
            allowed = thread.permissions_for(me) if me is not None else None
        except discord.ClientException:
            allowed = None
        if allowed is None:
            # Its channel (or the bot's member) is not cached: nothing to go by but trying.
            return thread, ""
        if thread.locked and not allowed.manage_threads:
            return (
                None,
                f"This edit's thread {thread.mention} is locked, so this step is posted here.",
            )
        if not allowed.send_messages_in_threads:
            return None, (
                f"I may not post in this edit's thread {thread.mention}, so this step is "
                "posted here."
            )
        return thread, ""

    async def _reply_to(
        self, job: JobRecord, channel: Messageable
    ) -> discord.MessageReference | None:
        """The newest message in `channel` showing the step this job continues, if any."""
        if job.parent_id is None:
            return None
        posted = [m for m in await self._edits.result_messages(job.parent_id) if m[0] == channel.id]
        if not posted:
            return None
        channel_id, message_id = posted[-1]
        return discord.MessageReference(
            message_id=message_id, channel_id=channel_id, fail_if_not_exists=False
        )

    async def _start_thread(
        self, message: discord.Message, job: JobRecord
    ) -> discord.Thread | None:
        if message.guild is None:
            return None
        try:
            return await message.create_thread(
                name=render.thread_name(job.prompt), auto_archive_duration=THREAD_ARCHIVE_MINUTES
            )
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.info(
                "job %d: no thread on its result (%s); the chain goes on as replies", job.id, exc
            )
            return None

    async def _attachments(
        self, job: JobRecord, outputs: Sequence[JobImage], limit: int | None
    ) -> tuple[list[discord.File], list[str]]:
        """The job's images as files of at most `limit` bytes each (None: links only)."""
        per_file = None if limit is None else min(limit, REQUEST_LIMIT // max(1, len(outputs)))
        files: list[discord.File] = []
        notes: list[str] = []
        for number, output in enumerate(outputs, start=1):
            label = f"Image {number}" if len(outputs) > 1 else "The image"
            if output.nsfw and not job.nsfw_allowed:
                notes.append(
                    f"{label} was withheld: the image service flagged it as NSFW, and "
                    "this server does not show such images in this channel."
                )
                continue
            fitted = None
            if per_file is not None:
                fitted = await fit_to_limit(output.image.data, per_file, intake=self._intake)
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

    async def finish_status(self, job: JobRecord, posted: PostedResult) -> None:
        if job.status_message_id is None:
            return
        try:
            if job.status_channel_id is None:
                await self._edit_status(job, f"✅ Done: {posted.url}", None)
            else:
                # A reply saying "working on it" is noise once the result is there.
                channel = await self._channel(job.status_channel_id)
                await channel.get_partial_message(job.status_message_id).delete()
        except discord.HTTPException:
            log.info("job %d: status message already gone", job.id)

    async def report_failure(self, job: JobRecord, message: str, *, retry: bool = False) -> None:
        """Tell the requester privately: in their ephemeral answer while its token lives, in
        the job's own status reply, or else by direct message; never a new public post."""
        view = retry_view(job.id) if retry else None
        # It may quote the image service, which may quote the member: shown as written.
        message = literal(message)
        public_status = job.status_channel_id is not None
        text = (
            f"❌ {render.mention(job.requester_id)} {message}" if public_status else f"❌ {message}"
        )
        try:
            if await self._edit_status(job, text, view):
                return
        except discord.HTTPException as exc:
            log.info("job %d: status message not editable (%s); sending a DM", job.id, exc)
        user = self._bot.get_user(job.requester_id) or await self._bot.fetch_user(job.requester_id)
        try:
            if view is None:
                await user.send(f"❌ {message}")
            else:
                await user.send(f"❌ {message}", view=view)
        except discord.HTTPException as exc:
            # Direct messages closed: the log is all that is left.
            log.warning("job %d: could not tell the requester (%s): %s", job.id, exc, message)

    # --- Log channels ---------------------------------------------------------------------------

    async def post_log_entry(self, entry: LogEntry) -> None:
        # Who asked is mentioned so moderators can tell, never pinged.
        await self._post_in_log(entry.guild_id, entry.channel_id, render.log_line(entry))

    async def post_log_note(self, note: LogNote) -> None:
        icon = "💳" if note.kind == LOW_BALANCE_NOTE else "📊"
        await self._post_in_log(note.guild_id, note.channel_id, f"{icon} {note.text}")

    async def _post_in_log(self, guild_id: int, channel_id: int, content: str) -> None:
        channel = await self._channel(channel_id)
        # A server's jobs are told in that server only, whatever id its rules hold.
        if getattr(getattr(channel, "guild", None), "id", None) != guild_id or not isinstance(
            channel, discord.abc.Messageable
        ):
            raise LookupError(f"channel {channel_id} is not a text channel of server {guild_id}")
        await channel.send(content=content, allowed_mentions=discord.AllowedMentions.none())

    # --- Helpers --------------------------------------------------------------------------------

    def _token_alive(self, job: JobRecord) -> bool:
        return bool(
            job.interaction_token
            and job.token_expires_at
            and self._clock() < job.token_expires_at - TOKEN_MARGIN_S
            and job.interaction_token not in self._refused_tokens
        )

    def _refuse_token(self, job: JobRecord) -> None:
        assert job.interaction_token is not None
        log.info("job %d: Discord ended its interaction token early; not used again", job.id)
        self._refused_tokens.add(job.interaction_token)

    def _webhook(self, job: JobRecord) -> discord.Webhook:
        assert job.interaction_token is not None
        assert self._bot.application_id is not None, "known once the bot is logged in"
        return discord.Webhook.partial(
            self._bot.application_id, job.interaction_token, client=self._bot
        )

    async def _channel(self, channel_id: int) -> Any:
        channel = self._bot.get_channel(channel_id)
        if channel is not None:
            return channel
        if self._rest_only and (kept := self._channels.get(channel_id)) is not None:
            return kept
        channel = await self._bot.fetch_channel(channel_id)
        if self._rest_only:
            self._channels.put(channel_id, channel)
        return channel

    async def _guild_limit(self, place: _Place) -> int | None:
        """The upload limit of the place's server when only REST knows it (a worker's channel
        has a stand-in for its server, without its boost level): fetched once a while per
        server; Discord's default if the server cannot be read. None: the channel's own."""
        guild = getattr(place.channel, "guild", None)
        if not self._rest_only or guild is None:
            return None
        limit = self._upload_limits.get(guild.id)
        if limit is None:
            try:
                limit = (await self._bot.fetch_guild(guild.id)).filesize_limit
            except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
                log.info("server %d: upload limit unknown (%s); using the default", guild.id, exc)
                return DEFAULT_UPLOAD_LIMIT
            self._upload_limits.put(guild.id, limit)
        return limit


def _upload_limit(job: JobRecord, channel: Messageable, server_limit: int | None = None) -> int:
    """The largest file the bot may post in `channel`: its server's limit (by boost level;
    `server_limit` when fetched apart), Discord's default outside servers. The job's own
    limit comes from the member's interaction and may reflect their Nitro, which only answers
    to that interaction may use: it can lower this, never raise it."""
    guild = getattr(channel, "guild", None)
    if server_limit is not None:
        place = server_limit
    else:
        place = guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT
    return min(place, job.upload_limit) if job.upload_limit else place


def _smaller_limit(limit: int | None) -> int | None:
    """The next upload limit to try after Discord refused `limit` as too large (None: link)."""
    if limit is None:
        return None
    return next((smaller for smaller in SERVER_UPLOAD_LIMITS if smaller < limit), None)


def _custom_ids(message: discord.Message) -> set[str]:
    return {
        str(getattr(child, "custom_id", ""))
        for row in message.components
        for child in getattr(row, "children", [])
    }


def _token_refused(exc: discord.HTTPException) -> bool:
    """Discord's word that an interaction token is dead: 401 50027 Invalid Webhook Token once
    its 15 minutes are over (by Discord's clock), 404 10015 Unknown Webhook for one it no
    longer knows at all."""
    return exc.status == 401 or (exc.status == 404 and exc.code == UNKNOWN_WEBHOOK)


def _only(user_id: int) -> discord.AllowedMentions:
    """Mentions that ping the requester and nobody else, whatever the text says."""
    return discord.AllowedMentions(
        users=[discord.Object(user_id)], everyone=False, roles=False, replied_user=False
    )


@contextlib.contextmanager
def _post_errors(job: JobRecord) -> Iterator[None]:
    """Discord's refusals of a result post, as the job service's PostFailedError."""
    try:
        yield
    except discord.RateLimited as exc:
        raise PostFailedError("rate limited", retry_after=exc.retry_after) from exc
    except discord.Forbidden as exc:
        # Missing permissions can be given back: worth retrying until the deadline.
        raise PostFailedError(f"forbidden ({exc.code})") from exc
    except discord.NotFound as exc:
        raise PostFailedError(f"not found ({exc.code})", permanent=True) from exc
    except discord.DiscordServerError as exc:
        raise PostFailedError(f"Discord error {exc.status}", maybe_posted=True) from exc
    except discord.HTTPException as exc:
        if exc.status == 429:
            raise PostFailedError("rate limited") from exc
        raise PostFailedError(f"refused ({exc.status} {exc.code})", permanent=True) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # The request may have reached Discord and only its answer got lost.
        raise PostFailedError(type(exc).__name__, maybe_posted=True) from exc
