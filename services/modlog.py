"""A server's log channel: what moderators are told about jobs and budgets there.

This module decides what is logged; the chat side (the job service's `Presenter`) posts it, and
the job service sends it through its request budget after the fact, so nothing here ever holds
up a result. Two kinds of post:

- `LogEntry`: one per job that ends (delivered, failed, cancelled) in a server whose rules name
  a log channel: who asked, what for, the model, what it cost, and where the result is (or why
  there is none).
- `LogNote`: a note on the server's budgets, sent once per period (`Repository.claim_note`
  makes "once" hold across restarts and jobs crossing the line together): the server has used
  80 % of its daily or monthly budget; or on the WaveSpeed account, once a day in every log
  channel: its balance is below `low_balance_usd`.

A post the chat side cannot make (the channel deleted, a permission taken away) is logged at
warning once per channel and dropped: a log is a courtesy, never retried.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from .account import Account
from .budget import BudgetLimits, day_start, month_start, next_month, usd
from .community import Community
from .money import to_micros
from .storage import JobRecord, JobStatus, Repository
from .wavespeed import KontextError, model_for_path

log = logging.getLogger(__name__)

# Member text in an entry is cut to this many characters (the whole is in the result's Details).
INSTRUCTION_CHARS = 100
REASON_CHARS = 120
# A note when spending reaches this share of a server's budget (numerator, denominator).
NOTE_SHARE = (4, 5)
DAILY_NOTE = "server_daily_80"
MONTHLY_NOTE = "server_monthly_80"
LOW_BALANCE_NOTE = "low_balance"


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


_OUTCOMES = {
    JobStatus.DELIVERED: Outcome.DELIVERED,
    JobStatus.FAILED: Outcome.FAILED,
    JobStatus.UNDELIVERABLE: Outcome.FAILED,
    JobStatus.CANCELLED: Outcome.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One ended job, as its server's moderators read it. `instruction` and `reason` may hold
    member text (cut short, not escaped): the chat side shows them as written."""

    guild_id: int
    channel_id: int
    job_id: int
    member_id: int
    # What was asked: "edit", "imagine", "combine", "reroll", "edit (step 3)".
    action: str
    instruction: str
    model: str
    outcome: Outcome
    # "$0.04", or "nothing billed".
    cost: str
    # The result message (delivered), else None.
    link: str | None = None
    # Why there is no result (failed), in short.
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LogNote:
    """A note for a server's log channel; `text` holds no member text."""

    guild_id: int
    channel_id: int
    # Which note: DAILY_NOTE, MONTHLY_NOTE, LOW_BALANCE_NOTE.
    kind: str
    text: str


class ModLog:
    """Decides what each server's log channel is told, and remembers channels that refused."""

    def __init__(
        self,
        repository: Repository,
        community: Community,
        clock: Callable[[], float],
        *,
        account: Account | None = None,
        balance_check_s: float = 300.0,
    ) -> None:
        self._repository = repository
        self._community = community
        self._clock = clock
        # The WaveSpeed account, its balance asked at most every `balance_check_s`; no note
        # without a low-balance mark.
        self._account = account if account is not None and account.low_mark is not None else None
        self._balance_check_s = balance_check_s
        self._balance_asked_at: float | None = None
        # Log channels whose last post failed: warned about once, until one gets through.
        self._failing: set[int] = set()

    async def entry_for(self, job: JobRecord) -> LogEntry | None:
        """The entry for a job that ended; None outside a server, for a server without a log
        channel, or for a job that has not ended."""
        outcome = _OUTCOMES.get(JobStatus(job.status))
        if job.guild_id is None or outcome is None:
            return None
        channel_id = (await self._community.rules(job.guild_id)).log_channel_id
        if channel_id is None:
            return None
        held = await self._repository.hold_of(job.id)
        if held is not None:
            cost = usd(held.amount_micros) if held.billed else "nothing billed"
        else:
            cost = "nothing billed" if outcome is not Outcome.DELIVERED else _unpriced(job)
        link = None
        if outcome is Outcome.DELIVERED and job.result_message_id and job.result_channel_id:
            link = message_link(job.guild_id, job.result_channel_id, job.result_message_id)
        reason = None
        if outcome is Outcome.FAILED:
            reason = short(first_sentence(job.error or "failed"), REASON_CHARS)
        return LogEntry(
            guild_id=job.guild_id,
            channel_id=channel_id,
            job_id=job.id,
            member_id=job.requester_id,
            action=job.action if job.step <= 1 else f"{job.action} (step {job.step})",
            instruction=short(job.prompt, INSTRUCTION_CHARS),
            model=_model_name(job.model_path),
            outcome=outcome,
            cost=cost,
            link=link,
            reason=reason,
        )

    async def budget_notes(self, job: JobRecord) -> list[LogNote]:
        """Notes due now that `job`'s hold is taken: each server budget it brought to 80 %,
        once per period (claimed in the store as it is decided)."""
        if job.guild_id is None:
            return []
        rules = await self._community.rules(job.guild_id)
        if rules.log_channel_id is None:
            return []
        limits = BudgetLimits.of(rules)
        if not limits.server_daily and not limits.server_monthly:
            return []
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        spent = await self._repository.spending(
            job.guild_id,
            job.requester_id,
            day_start=day_start(now).timestamp(),
            month_start=month_start(now).timestamp(),
        )
        due = (
            (DAILY_NOTE, limits.server_daily, spent.server_day, day_start(now), "daily"),
            (MONTHLY_NOTE, limits.server_monthly, spent.server_month, month_start(now), "monthly"),
        )
        notes = []
        for kind, limit, used, start, period in due:
            if not limit or used * NOTE_SHARE[1] < limit * NOTE_SHARE[0]:
                continue
            if not await self._repository.claim_note(
                job.guild_id, kind, period_start=start.timestamp(), at=now.timestamp()
            ):
                continue
            resets = (
                "it resets at 00:00 UTC"
                if period == "daily"
                else f"it resets on {next_month(now):%B} 1st at 00:00 UTC"
            )
            notes.append(
                LogNote(
                    job.guild_id,
                    rules.log_channel_id,
                    kind,
                    f"This server has used {usd(used)} of its {usd(limit)} {period} budget "
                    f"({used * 100 // limit} %); {resets}.",
                )
            )
        return notes

    async def balance_notes(self) -> list[LogNote]:
        """Notes due when the WaveSpeed balance is below the threshold: one a day for each
        server with a log channel. The balance is asked at most every `balance_check_s`."""
        if self._account is None:
            return []
        now = self._clock()
        asked = self._balance_asked_at
        if asked is not None and now - asked < self._balance_check_s:
            return []
        # Set before asking: jobs ending meanwhile do not ask again.
        self._balance_asked_at = now
        try:
            balance = await self._account.balance()
        except KontextError as exc:
            log.info("the WaveSpeed balance could not be read (%s)", exc)
            return []
        if not balance.low:
            return []
        shown = usd(
            to_micros(max(balance.amount, Decimal(0)).quantize(Decimal("0.01"), ROUND_DOWN))
        )
        today = day_start(dt.datetime.fromtimestamp(now, dt.UTC)).timestamp()
        notes = []
        for guild_id, channel_id in (await self._community.log_channels()).items():
            if await self._repository.claim_note(
                guild_id, LOW_BALANCE_NOTE, period_start=today, at=now
            ):
                notes.append(
                    LogNote(
                        guild_id,
                        channel_id,
                        LOW_BALANCE_NOTE,
                        f"The WaveSpeed balance is down to {shown}; top it up at wavespeed.ai.",
                    )
                )
        return notes

    # --- What came of a post --------------------------------------------------------------------

    def posted(self, channel_id: int) -> None:
        self._failing.discard(channel_id)

    def not_posted(self, channel_id: int, error: BaseException) -> None:
        """A post the chat side could not make: warned about once per channel, not retried."""
        if channel_id in self._failing:
            log.debug("log channel %d: still not posting (%s)", channel_id, error)
            return
        self._failing.add(channel_id)
        log.warning(
            "log channel %d: could not post there (%s: %s); its entries are dropped until a "
            "post gets through",
            channel_id,
            type(error).__name__,
            error,
        )


def message_link(guild_id: int, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id}/{channel_id}/{message_id}"


def short(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis where it was cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def first_sentence(text: str) -> str:
    """The first sentence of a message ("The image service refused it. Try..." -> its first)."""
    flat = " ".join(text.split())
    at = flat.find(". ")
    return flat if at < 0 else flat[: at + 1]


def _model_name(path: str) -> str:
    try:
        return model_for_path(path).name
    except KontextError:
        return path


def _unpriced(job: JobRecord) -> str:
    return f"${job.cost}" if job.cost else "no price"


__all__ = [
    "DAILY_NOTE",
    "LOW_BALANCE_NOTE",
    "MONTHLY_NOTE",
    "LogEntry",
    "LogNote",
    "ModLog",
    "Outcome",
    "message_link",
]
