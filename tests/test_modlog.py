"""What a server's log channel is told: entries for ended jobs, and the 80 % budget notes, each
once per period even across a restart (against a real store on disk)."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.account import Account
from services.community import Community
from services.modlog import DAILY_NOTE, LOW_BALANCE_NOTE, ModLog, Outcome
from services.origin import Origin
from services.storage import JobRecord, JobStatus, Repository
from services.wavespeed import ServerError, model_for_path
from services.wavespeed.catalog import validate_request
from tests.test_community import community_on

GUILD, CHANNEL, LOG_CHANNEL = 500, 10, 99
ALICE, ADMIN = 1, 3
PRO = model_for_path("flux-kontext-pro")
# 2026-12-02 12:00 UTC.
NOON = dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC).timestamp()


class Clock:
    def __init__(self) -> None:
        self.now = NOON

    def __call__(self) -> float:
        return self.now


def services_on(repository: Repository, clock: Clock) -> tuple[Community, ModLog]:
    community = community_on(repository, clock)
    return community, ModLog(repository, community, clock)


async def store_job(repository: Repository, community: Community, **values: Any) -> JobRecord:
    """A $0.04 Kontext Pro edit, its price held as a command would hold it."""
    request = validate_request(PRO, {"prompt": "a red fox", "image": "https://example.com/fox.png"})
    admitted = await community.admit(
        Origin(member_id=ALICE, channel_id=CHANNEL, guild_id=GUILD), PRO, request
    )
    return await repository.create_job(
        hold=admitted.hold,
        action="edit",
        requester_id=ALICE,
        guild_id=GUILD,
        channel_id=CHANNEL,
        model_path=PRO.path,
        params={"prompt": "a red fox"},
        prompt=values.pop("prompt", "a red fox"),
        **values,
    )


async def test_the_80_percent_note_is_due_once_a_day_even_across_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.sqlite3"
    clock = Clock()
    repository = await Repository.open(path)
    community, modlog = services_on(repository, clock)
    await community.change(GUILD, ADMIN, log_channel_id=LOG_CHANNEL, server_daily_usd="0.10")
    first = await store_job(repository, community)
    assert await modlog.budget_notes(first) == []
    second = await store_job(repository, community)
    (note,) = await modlog.budget_notes(second)
    assert (note.guild_id, note.channel_id) == (GUILD, LOG_CHANNEL)
    assert note.text == (
        "This server has used $0.08 of its $0.10 daily budget (80 %); it resets at 00:00 UTC."
    )
    # The same job looked at twice (two workers) gets one note between them.
    assert await modlog.budget_notes(second) == []
    await repository.close()

    # After a restart, the day's note is not sent again.
    repository = await Repository.open(path)
    try:
        community, modlog = services_on(repository, clock)
        clock.now += 60
        third = await repository.job(second.id)
        assert await modlog.budget_notes(third) == []
        # The next day is a new period.
        clock.now += 86_400
        await store_job(repository, community)
        fourth = await store_job(repository, community)
        (again,) = await modlog.budget_notes(fourth)
        assert again.text.startswith("This server has used $0.08 of its $0.10 daily budget")
        assert not await repository.claim_note(
            GUILD,
            DAILY_NOTE,
            period_start=dt.datetime(2026, 12, 3, tzinfo=dt.UTC).timestamp(),
            at=clock.now,
        )
    finally:
        await repository.close()


async def test_a_monthly_budget_note_names_when_it_resets(tmp_path: Path) -> None:
    clock = Clock()
    repository = await Repository.open(tmp_path / "jobs.sqlite3")
    try:
        community, modlog = services_on(repository, clock)
        await community.change(GUILD, ADMIN, log_channel_id=LOG_CHANNEL, server_monthly_usd="0.05")
        (note,) = await modlog.budget_notes(await store_job(repository, community))
        assert note.text == (
            "This server has used $0.04 of its $0.05 monthly budget (80 %); "
            "it resets on January 1st at 00:00 UTC."
        )
    finally:
        await repository.close()


async def test_entries_only_for_ended_jobs_in_servers_with_a_log_channel(
    tmp_path: Path,
) -> None:
    clock = Clock()
    repository = await Repository.open(tmp_path / "jobs.sqlite3")
    try:
        community, modlog = services_on(repository, clock)
        job = await store_job(repository, community, prompt="  a   very long fox " * 20)
        assert await modlog.entry_for(job) is None  # still queued
        failed = await repository.transition(
            job.id,
            JobStatus.QUEUED,
            JobStatus.FAILED,
            error="The image service refused it. Try again later.",
        )
        assert failed is not None
        assert await modlog.entry_for(failed) is None  # no log channel here
        await community.change(GUILD, ADMIN, log_channel_id=LOG_CHANNEL)
        entry = await modlog.entry_for(failed)
        assert entry is not None
        assert entry.outcome is Outcome.FAILED
        assert (entry.channel_id, entry.member_id, entry.action) == (LOG_CHANNEL, ALICE, "edit")
        assert (entry.model, entry.cost) == ("Kontext Pro", "nothing billed")
        assert entry.reason == "The image service refused it."
        assert len(entry.instruction) == 100 and entry.instruction.endswith("…")
        assert "  " not in entry.instruction
    finally:
        await repository.close()


def test_a_log_channel_that_refuses_posts_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    modlog = ModLog(None, None, Clock())  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG, logger="services.modlog"):
        for _ in range(3):
            modlog.not_posted(LOG_CHANNEL, PermissionError("Missing Permissions"))
        modlog.posted(LOG_CHANNEL)
        modlog.not_posted(LOG_CHANNEL, PermissionError("Unknown Channel"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "Missing Permissions" in warnings[0] and "Unknown Channel" in warnings[1]


class Balance:
    """The WaveSpeed account's balance as the bot would read it, counting the reads."""

    simulated = False

    def __init__(self, amount: str) -> None:
        self.amount = Decimal(amount)
        self.reads = 0
        self.fail = False

    async def balance(self) -> Decimal:
        self.reads += 1
        if self.fail:
            raise ServerError(detail="503")
        return self.amount


async def test_a_low_balance_is_noted_once_a_day_in_every_log_channel(tmp_path: Path) -> None:
    clock = Clock()
    balance = Balance("4.999")
    path = tmp_path / "jobs.sqlite3"
    repository = await Repository.open(path)
    community, _ = services_on(repository, clock)

    def watching(repository: Repository) -> ModLog:
        community, _ = services_on(repository, clock)
        return ModLog(
            repository,
            community,
            clock,
            account=Account(balance, Decimal("5.00")),
            balance_check_s=300,
        )

    modlog = watching(repository)
    await community.change(GUILD, ADMIN, log_channel_id=LOG_CHANNEL)
    await community.change(GUILD + 1, ADMIN, log_channel_id=LOG_CHANNEL + 1)
    await community.change(GUILD + 2, ADMIN, server_daily_usd="1.00")  # no log channel
    notes = await modlog.balance_notes()
    assert [(n.guild_id, n.channel_id, n.kind) for n in notes] == [
        (GUILD, LOG_CHANNEL, LOW_BALANCE_NOTE),
        (GUILD + 1, LOG_CHANNEL + 1, LOW_BALANCE_NOTE),
    ]
    assert notes[0].text == "The WaveSpeed balance is down to $4.99; top it up at wavespeed.ai."
    # Not asked again within balance_check_s; asked after, but today's notes are sent.
    assert await modlog.balance_notes() == [] and balance.reads == 1
    clock.now += 300
    assert await modlog.balance_notes() == [] and balance.reads == 2
    await repository.close()

    # A restart the same day sends nothing new; the next day does, once the balance is asked.
    repository = await Repository.open(path)
    try:
        modlog = watching(repository)
        assert await modlog.balance_notes() == []
        clock.now += 86_400
        balance.fail = True
        assert await modlog.balance_notes() == []  # a failed read: nothing, and no note claimed
        balance.fail = False
        clock.now += 300
        assert len(await modlog.balance_notes()) == 2
        # A balance at or above the line: nothing.
        clock.now += 86_400
        balance.amount = Decimal("5.00")
        assert await modlog.balance_notes() == []
    finally:
        await repository.close()


async def test_no_balance_is_asked_without_a_threshold(tmp_path: Path) -> None:
    clock = Clock()
    balance = Balance("0")
    repository = await Repository.open(tmp_path / "jobs.sqlite3")
    try:
        community, _ = services_on(repository, clock)
        await community.change(GUILD, ADMIN, log_channel_id=LOG_CHANNEL)
        modlog = ModLog(repository, community, clock, account=Account(balance, None))
        assert await modlog.balance_notes() == [] and balance.reads == 0
    finally:
        await repository.close()
