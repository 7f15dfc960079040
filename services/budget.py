"""Budgets: who may spend what, priced before a job is queued and held in the job store.

A job's price (the catalog's, times its images for per-image models) is held against the
member's and the server's budgets in the transaction that stores the job
(`Repository.create_job`); the hold is settled with the job's cost when its images are made and
released when it fails or is cancelled (`Repository.transition`). So the ledger is exactly what
the store says, and survives restarts. Amounts are integer millionths of a dollar, never floats.

Daily budgets reset at 00:00 UTC, monthly ones on the 1st at 00:00 UTC. The limits that apply in
a server are part of its rules (services/rules.py, `BudgetLimits.of`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from .money import from_micros, to_micros
from .rules import BudgetSettings
from .storage import BudgetHold, Repository, Spending
from .wavespeed import KontextError, ModelSpec
from .wavespeed.catalog import price_for


def usd(micros: int) -> str:
    """Money as members read it: $0.04, $1.00, $0.025 (more than cents only where needed)."""
    amount = from_micros(micros)
    text = (
        f"{amount:.2f}" if amount == amount.quantize(Decimal("0.01")) else f"{amount.normalize():f}"
    )
    return f"${text}"


def price_of(spec: ModelSpec, params: Mapping[str, Any]) -> tuple[int, int]:
    """(what the job will cost in micro-dollars, how many images it makes), from the catalog.

    A model without a published price is held at nothing (its images still count)."""
    images = int(params.get("num_images") or 1)
    price = price_for(spec, images)
    return (0 if price is None else to_micros(price)), images


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """The caps that apply to one job; None is no cap."""

    server_daily: int | None = None
    server_monthly: int | None = None
    member_daily: int | None = None
    member_daily_images: int | None = None

    @classmethod
    def of(cls, budget: BudgetSettings, *, server: bool = True) -> BudgetLimits:
        """The caps of these settings; outside a server (a direct message) only a member's."""
        return cls(
            server_daily=_micros_or_none(budget.server_daily_usd) if server else None,
            server_monthly=_micros_or_none(budget.server_monthly_usd) if server else None,
            member_daily=_micros_or_none(budget.member_daily_usd),
            member_daily_images=budget.member_daily_images,
        )


def _micros_or_none(amount: Decimal | None) -> int | None:
    return None if amount is None else to_micros(amount)


# --- Periods ------------------------------------------------------------------------------------


def day_start(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: dt.datetime) -> dt.datetime:
    return day_start(now).replace(day=1)


def next_day(now: dt.datetime) -> dt.datetime:
    return day_start(now) + dt.timedelta(days=1)


def next_month(now: dt.datetime) -> dt.datetime:
    start = month_start(now)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


def _in(delta: dt.timedelta) -> str:
    minutes = max(1, int(delta.total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"


def resets_text(now: dt.datetime, *, monthly: bool) -> str:
    if monthly:
        at = next_month(now)
        return f"it resets on {at:%B} 1st at 00:00 UTC (in {_in(at - now)})"
    return f"it resets at 00:00 UTC (in {_in(next_day(now) - now)})"


# --- Refusal ------------------------------------------------------------------------------------


class BudgetExceededError(KontextError):
    """A job would go over a budget: refused before it is stored, so nothing is billed."""

    own_words: ClassVar[bool] = True


def check_hold(
    limits: BudgetLimits, spent: Spending, cost: int, images: int, now: dt.datetime
) -> None:
    """Raise BudgetExceededError naming the first limit `cost` (and `images`) would pass."""
    what = f"this {usd(cost)} request"
    checks = (
        ("This server's daily budget of {}", limits.server_daily, spent.server_day, False),
        ("This server's monthly budget of {}", limits.server_monthly, spent.server_month, True),
        ("Your daily budget of {} here", limits.member_daily, spent.member_day, False),
    )
    for name, limit, used, monthly in checks:
        if limit is not None and used + cost > limit:
            left = max(0, limit - used)
            raise BudgetExceededError(
                f"{name.format(usd(limit))} is used up ({usd(left)} left, not enough for {what}); "
                f"{resets_text(now, monthly=monthly)}."
            )
    cap = limits.member_daily_images
    if cap is not None and spent.member_day_images + images > cap:
        left_images = max(0, cap - spent.member_day_images)
        raise BudgetExceededError(
            f"Your daily limit of {_images(cap)} here is used up ({left_images} left, not "
            f"enough for {_images(images)}); {resets_text(now, monthly=False)}."
        )


# --- The service --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """A member's spending in one server, and what the limits leave them."""

    limits: BudgetLimits
    spent: Spending
    now: dt.datetime

    def text(self) -> str:
        spent, limits = self.spent, self.limits
        lines = [f"**Today:** {usd(spent.member_day)} spent, {_images(spent.member_day_images)}."]
        if limits.member_daily is not None:
            left = max(0, limits.member_daily - spent.member_day)
            lines.append(f"Your daily budget: {usd(limits.member_daily)} ({usd(left)} left).")
        if limits.member_daily_images is not None:
            left_images = max(0, limits.member_daily_images - spent.member_day_images)
            lines.append(
                f"Your daily image limit: {limits.member_daily_images} ({left_images} left)."
            )
        if limits.server_daily is not None:
            left = max(0, limits.server_daily - spent.server_day)
            lines.append(f"This server today: {usd(left)} left of {usd(limits.server_daily)}.")
        lines.append(f"Daily budgets: {resets_text(self.now, monthly=False)}.")
        lines.append(f"**This month:** {usd(spent.member_month)} spent.")
        if limits.server_monthly is not None:
            left = max(0, limits.server_monthly - spent.server_month)
            lines.append(
                f"This server this month: {usd(left)} left of {usd(limits.server_monthly)}; "
                f"{resets_text(self.now, monthly=True)}."
            )
        return "\n".join(lines)


def _images(count: int) -> str:
    return "1 image" if count == 1 else f"{count} images"


class Budgets:
    """Prices jobs and holds them against the limits; tells members what they have spent."""

    def __init__(self, repository: Repository, clock: Callable[[], float]) -> None:
        self._repository = repository
        self._clock = clock

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    def hold_for(
        self,
        spec: ModelSpec,
        params: Mapping[str, Any],
        guild_id: int | None,
        member_id: int,
        limits: BudgetLimits,
        *,
        also: Callable[[Spending, dt.datetime], None] | None = None,
    ) -> BudgetHold:
        """The hold a new job takes, checked against `limits` inside `create_job` (with `also`,
        another check on the same reading of the ledger, such as a cooldown)."""
        now = self._now()
        cost, images = price_of(spec, params)

        def check(spent: Spending) -> None:
            if also is not None:
                also(spent, now)
            check_hold(limits, spent, cost, images, now)

        return BudgetHold(
            guild_id=guild_id,
            member_id=member_id,
            amount_micros=cost,
            images=images,
            day_start=day_start(now).timestamp(),
            month_start=month_start(now).timestamp(),
            at=now.timestamp(),
            check=check,
        )

    async def usage(self, guild_id: int | None, member_id: int, limits: BudgetLimits) -> Usage:
        now = self._now()
        spent = await self._repository.spending(
            guild_id,
            member_id,
            day_start=day_start(now).timestamp(),
            month_start=month_start(now).timestamp(),
        )
        return Usage(limits, spent, now)
