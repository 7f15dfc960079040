"""Budgets: prices from the catalog, the ledger's arithmetic, holds taken with the job in one
transaction, settled at cost, released on failure and cancel, and kept across restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.budget import (
    BudgetExceededError,
    BudgetLimits,
    Budgets,
    Usage,
    check_hold,
    from_micros,
    next_month,
    price_of,
    to_micros,
    usd,
)
from services.settings import BudgetSettings, load_settings
from services.storage import BudgetHold, JobStatus, Repository, Spending
from services.wavespeed import ModelSpec, model_for_path

# 2026-03-31 19:00 UTC: five hours before the daily reset, the last day of a month.
NOW = dt.datetime(2026, 3, 31, 19, 0, tzinfo=dt.UTC)
GUILD, ALICE, BOB = 500, 1, 2
PRO = model_for_path("flux-kontext-pro")
MAX_T2I = model_for_path("flux-kontext-max/text-to-image")


def job_values(member: int = ALICE, guild: int | None = GUILD) -> dict[str, object]:
    return {
        "action": "edit",
        "requester_id": member,
        "guild_id": guild,
        "channel_id": 10,
        "model_path": PRO.path,
        "params": {"prompt": "p", "seed": 1},
        "prompt": "p",
    }


class Ledger:
    """The budgets of a server with these limits."""

    def __init__(
        self, repository: Repository, clock: Callable[[], float], **limits: str | int
    ) -> None:
        self.budgets = Budgets(repository, clock)
        self.limits = BudgetLimits.of(BudgetSettings.model_validate(limits))

    def hold_for(
        self, spec: ModelSpec, params: dict[str, Any], guild: int | None, member: int
    ) -> BudgetHold:
        return self.budgets.hold_for(spec, params, guild, member, self.limits)

    async def usage(self, guild: int | None, member: int) -> Usage:
        return await self.budgets.usage(guild, member, self.limits)


def budgets_on(repository: Repository, **limits: str | int) -> Ledger:
    return Ledger(repository, NOW.timestamp, **limits)


# --- Arithmetic ---------------------------------------------------------------------------------


@given(st.decimals(min_value=0, max_value=10_000, places=6))
def test_micro_dollars_are_exact_both_ways(amount: Decimal) -> None:
    assert from_micros(to_micros(amount)) == amount


def test_an_amount_finer_than_a_micro_dollar_is_refused_not_rounded() -> None:
    with pytest.raises(ValueError):
        to_micros(Decimal("0.0000001"))


@given(st.lists(st.sampled_from(["0.04", "0.08", "0.025", "0.03", "0.02"]), max_size=200))
def test_summed_holds_equal_the_decimal_sum_of_prices(prices: list[str]) -> None:
    assert from_micros(sum(to_micros(Decimal(p)) for p in prices)) == sum(
        (Decimal(p) for p in prices), Decimal(0)
    )


@given(
    limit=st.integers(0, 10_000_000),
    used=st.integers(0, 10_000_000),
    cost=st.integers(0, 1_000_000),
)
def test_a_hold_passes_exactly_when_it_fits(limit: int, used: int, cost: int) -> None:
    spent = Spending(server_day=used)
    try:
        check_hold(BudgetLimits(server_daily=limit), spent, cost, 1, NOW)
    except BudgetExceededError:
        assert used + cost > limit
    else:
        assert used + cost <= limit


def test_money_reads_in_cents_and_more_digits_only_where_needed() -> None:
    assert [usd(to_micros(Decimal(a))) for a in ("0.1", "0.04", "1", "0.025")] == [
        "$0.10",
        "$0.04",
        "$1.00",
        "$0.025",
    ]


def test_prices_come_from_the_catalog_per_request_or_per_image() -> None:
    assert price_of(PRO, {"prompt": "p"}) == (to_micros(Decimal("0.04")), 1)
    # Per-request: four images cost what one does; per-image: four times.
    assert price_of(PRO, {"num_images": 4})[0] == to_micros(Decimal("0.04"))
    assert price_of(MAX_T2I, {"num_images": 4}) == (to_micros(Decimal("0.32")), 4)


def test_the_refusal_names_the_limit_what_is_left_and_the_reset() -> None:
    limits = BudgetLimits(server_daily=to_micros(Decimal("0.10")))
    with pytest.raises(BudgetExceededError) as refused:
        check_hold(limits, Spending(server_day=80_000), 40_000, 1, NOW)
    assert refused.value.user_message == (
        "This server's daily budget of $0.10 is used up ($0.02 left, not enough for this $0.04 "
        "request); it resets at 00:00 UTC (in 5 h)."
    )
    monthly = BudgetLimits(server_monthly=to_micros(Decimal("5")))
    with pytest.raises(BudgetExceededError) as refused:
        check_hold(monthly, Spending(server_month=4_990_000), 40_000, 1, NOW)
    assert refused.value.user_message.endswith("it resets on April 1st at 00:00 UTC (in 5 h).")
    assert next_month(dt.datetime(2026, 12, 15, tzinfo=dt.UTC)) == dt.datetime(
        2027, 1, 1, tzinfo=dt.UTC
    )


def test_the_member_image_cap_counts_images() -> None:
    with pytest.raises(BudgetExceededError, match=r"daily limit of 5 images .* \(1 left"):
        check_hold(BudgetLimits(member_daily_images=5), Spending(member_day_images=4), 0, 4, NOW)


def test_a_direct_message_has_no_server_caps_but_keeps_the_members() -> None:
    budget = BudgetSettings(server_daily_usd=Decimal("1"), member_daily_usd=Decimal("0.5"))
    assert BudgetLimits.of(budget, server=False) == BudgetLimits(member_daily=500_000)
    assert BudgetLimits.of(budget).server_daily == 1_000_000


def test_budget_settings_come_from_the_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[discord]\ntoken = "t"\n[budget]\nserver_daily_usd = "0.10"\n')
    monkeypatch.setenv("BUDGET_MEMBER_DAILY_IMAGES", "7")
    budget = load_settings(path).budget
    assert budget.server_daily_usd == Decimal("0.10")
    assert budget.member_daily_images == 7
    assert budget.member_daily_usd is None and budget.server_monthly_usd is None


# --- The ledger in the store --------------------------------------------------------------------


async def test_holds_are_taken_with_the_job_settled_at_cost_and_released_on_failure_and_cancel(
    store_location: str,
) -> None:
    path = store_location
    repository = await Repository.open(path)
    try:
        budgets = budgets_on(repository, server_daily_usd="0.10")
        hold = budgets.hold_for(PRO, {"prompt": "p"}, GUILD, ALICE)
        made = await repository.create_job(hold=hold, **job_values())
        failed = await repository.create_job(hold=hold, **job_values())
        assert (await budgets.usage(GUILD, ALICE)).spent.server_day == 80_000
        # A third does not fit: refused, and nothing of it is stored.
        with pytest.raises(BudgetExceededError, match=r"\(\$0\.02 left"):
            await repository.create_job(hold=hold, **job_values())
        assert len(await repository.jobs_with_status([JobStatus.QUEUED])) == 2

        # Failure gives its hold back; the made job settles at the cost recorded at submit.
        await repository.transition(failed.id, JobStatus.QUEUED, JobStatus.FAILED)
        await repository.transition(made.id, JobStatus.QUEUED, JobStatus.RUNNING, cost="0.03")
        await repository.transition(made.id, JobStatus.RUNNING, JobStatus.SUCCEEDED)
        assert (await budgets.usage(GUILD, ALICE)).spent.server_day == 30_000
        # A later failure of a made job (it could not be posted) keeps what it cost.
        await repository.transition(made.id, JobStatus.SUCCEEDED, JobStatus.FAILED)
        assert (await budgets.usage(GUILD, ALICE)).spent.server_day == 30_000

        bobs = budgets.hold_for(PRO, {"prompt": "p"}, GUILD, BOB)
        cancelled = await repository.create_job(hold=bobs, **job_values(member=BOB))
        usage = await budgets.usage(GUILD, BOB)
        assert (usage.spent.server_day, usage.spent.member_day) == (70_000, 40_000)
        await repository.transition(cancelled.id, JobStatus.QUEUED, JobStatus.CANCELLED)
        assert (await budgets.usage(GUILD, BOB)).spent.member_day == 0
        held = await repository.create_job(hold=bobs, **job_values(member=BOB))
    finally:
        await repository.close()

    # After a restart the ledger is what it was: Alice's settled $0.03, Bob's held $0.04.
    repository = await Repository.open(path)
    try:
        budgets = budgets_on(repository, server_daily_usd="0.10")
        alice, bob = await budgets.usage(GUILD, ALICE), await budgets.usage(GUILD, BOB)
        assert (alice.spent.member_day, bob.spent.member_day) == (30_000, 40_000)
        assert alice.spent.server_day == 70_000
        assert "$0.03 left of $0.10" in alice.text()
        await repository.transition(held.id, JobStatus.QUEUED, JobStatus.CANCELLED)
        assert (await budgets.usage(GUILD, BOB)).spent.server_day == 30_000
    finally:
        await repository.close()


async def test_yesterdays_spending_does_not_count_today_but_counts_this_month(
    store_location: str,
) -> None:
    repository = await Repository.open(store_location)
    try:
        yesterday = Ledger(
            repository, (NOW - dt.timedelta(days=1)).timestamp, server_daily_usd="0.04"
        )
        await repository.create_job(hold=yesterday.hold_for(PRO, {}, GUILD, ALICE), **job_values())
        today = budgets_on(repository, server_daily_usd="0.04")
        await repository.create_job(hold=today.hold_for(PRO, {}, GUILD, ALICE), **job_values())
        spent = (await today.usage(GUILD, ALICE)).spent
        assert (spent.server_day, spent.server_month, spent.member_month) == (
            40_000,
            80_000,
            80_000,
        )
        # Another server's ledger is its own.
        assert (await today.usage(GUILD + 1, ALICE)).spent == Spending()
    finally:
        await repository.close()


async def test_many_writers_at_once_never_spend_past_a_budget(store_location: str) -> None:
    # Two processes' connections (a fleet's workers share one store) each storing ten jobs at
    # once against a server budget that fits eight: exactly eight are stored.
    stores = [await Repository.open(store_location), await Repository.open(store_location)]
    try:
        ledgers = [budgets_on(store, server_daily_usd="0.32") for store in stores]

        async def store_one(n: int) -> bool:
            ledger, store = ledgers[n % 2], stores[n % 2]
            member = 100 + n
            try:
                await store.create_job(
                    hold=ledger.hold_for(PRO, {"prompt": "p"}, GUILD, member),
                    **job_values(member=member),
                )
            except BudgetExceededError:
                return False
            return True

        stored = await asyncio.gather(*(store_one(n) for n in range(20)))
        assert sum(stored) == 8
        assert (await ledgers[0].usage(GUILD, ALICE)).spent.server_day == 320_000
    finally:
        for store in stores:
            await store.close()
