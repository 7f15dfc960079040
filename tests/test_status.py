"""The status updater: coalesced, spaced per job, under one budget that deliveries jump.

Time is a fake clock the tests move by hand, so every count below is exact: while the clock
stands still, nothing more than the budget may be granted however long the test waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.jobs import queued_text
from services.status import Lane, RequestBudget, StatusUpdater

WINDOW_S = 0.05


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sends:
    """What the updater sent, with the (fake) time of each send."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, int, str]] = []
        self.changed = asyncio.Event()

    async def __call__(self, key: int, status: str) -> None:
        self.sent.append((self.clock(), key, status))
        self.changed.set()

    def of(self, key: int) -> list[str]:
        return [status for _, k, status in self.sent if k == key]


async def until(done: Callable[[], bool], changed: asyncio.Event, within_s: float = 5.0) -> None:
    """Wait until `done()`, checked each time `changed` is set."""
    async with asyncio.timeout(within_s):
        while not done():
            changed.clear()
            await changed.wait()


async def settle() -> None:
    """Let every task run until it waits (a budget recheck takes WINDOW_S of real time)."""
    await asyncio.sleep(WINDOW_S * 3)


async def test_a_burst_of_updates_to_one_job_is_one_send_of_the_last() -> None:
    clock = FakeClock()
    sends = Sends(clock)
    updater = StatusUpdater(sends, RequestBudget(30, clock=clock), min_gap_s=2.0, clock=clock)
    updater.start()
    try:
        for n in range(100):
            updater.publish(7, f"Generating… {n} s")
        await until(lambda: bool(sends.sent), sends.changed)
        await settle()
        assert sends.of(7) == ["Generating… 99 s"]
    finally:
        await updater.stop()


async def test_a_job_is_edited_at_most_once_per_gap_and_its_newest_status_wins() -> None:
    clock = FakeClock()
    sends = Sends(clock)
    updater = StatusUpdater(sends, RequestBudget(30, clock=clock), min_gap_s=2.0, clock=clock)
    updater.start()
    try:
        updater.publish(7, "Preparing…")
        await until(
            lambda: bool(sends.sent), sends.changed
        )  # a job's first status is not held back
        for n in range(100):
            updater.publish(7, f"Generating… {n} s")
            await asyncio.sleep(0)  # the updater gets its turn between publishes
        await settle()
        assert sends.of(7) == ["Preparing…"]
        clock.advance(2.0)
        updater.publish(7, "Generating… 100 s")  # (a publish also wakes the updater)
        await until(lambda: len(sends.sent) == 2, sends.changed)
        await settle()
        assert sends.of(7) == ["Preparing…", "Generating… 100 s"]
        # The same line again is no edit at all.
        clock.advance(2.0)
        updater.publish(7, "Generating… 100 s")
        await settle()
        assert len(sends.sent) == 2
    finally:
        await updater.stop()


async def test_many_jobs_never_get_more_edits_than_their_share_of_the_budget() -> None:
    clock = FakeClock()
    sends = Sends(clock)
    # Fifteen requests a window, of which status edits may take a third.
    budget = RequestBudget(15, window_s=WINDOW_S, clock=clock)
    updater = StatusUpdater(sends, budget, min_gap_s=2.0, clock=clock)
    updater.start()
    try:
        for job in range(23):
            updater.publish(job, "Queued: position 1.")
        for window in range(1, 5):
            await until(lambda w=window: len(sends.sent) == 5 * w, sends.changed)  # type: ignore[misc]
            await settle()
            assert len(sends.sent) == 5 * window  # the clock stands still: no sixth
            clock.advance(WINDOW_S)
        await until(lambda: len(sends.sent) == 23, sends.changed)
        per_window: dict[float, int] = {}
        for at, _, _ in sends.sent:
            per_window[at] = per_window.get(at, 0) + 1
        assert max(per_window.values()) == 5
        # Every job's status once, in the order they were published.
        assert [key for _, key, _ in sends.sent] == list(range(23))
    finally:
        await updater.stop()


async def test_a_delivery_finds_a_slot_at_once_while_status_edits_use_their_share() -> None:
    clock = FakeClock()
    sends = Sends(clock)
    budget = RequestBudget(15, window_s=WINDOW_S, clock=clock)
    updater = StatusUpdater(sends, budget, min_gap_s=2.0, clock=clock)
    updater.start()
    try:
        for job in range(50):
            updater.publish(job, "Queued: position 1.")
        await until(lambda: len(sends.sent) == 5, sends.changed)
        # Endings take their share too (a third), and the rest is left for posts. The clock
        # stands still: a post that had to wait for the window would never finish.
        async with asyncio.timeout(1):
            for job in range(50, 55):
                await updater.end(job)
            for _ in range(5):
                await updater.urgent()
        await settle()
        assert len(sends.sent) == 5
    finally:
        await updater.stop()


async def test_deliveries_jump_the_queue_of_status_edits() -> None:
    clock = FakeClock()
    order: list[str] = []
    changed = asyncio.Event()
    budget = RequestBudget(1, window_s=WINDOW_S, clock=clock)

    async def take(name: str, lane: Lane) -> None:
        await budget.take(lane)
        order.append(name)
        changed.set()

    await take("first edit", Lane.STATUS)  # the window is now full
    waiting = [asyncio.create_task(take(f"edit {n}", Lane.STATUS)) for n in range(1, 4)]
    await settle()
    ending = asyncio.create_task(take("a job's ending", Lane.ENDING))
    await settle()
    post = asyncio.create_task(take("result post", Lane.DELIVERY))
    await settle()
    assert order == ["first edit"]
    for _ in range(5):
        clock.advance(WINDOW_S)
        count = len(order)
        await until(lambda c=count: len(order) == c + 1, changed)  # type: ignore[misc]
    await asyncio.gather(post, ending, *waiting)
    assert order == ["first edit", "result post", "a job's ending", "edit 1", "edit 2", "edit 3"]


async def test_an_ending_drops_the_pending_status_and_waits_for_the_one_in_flight() -> None:
    clock = FakeClock()
    events: list[str] = []
    changed = asyncio.Event()
    release = asyncio.Event()

    async def slow_send(key: int, status: str) -> None:
        events.append(f"start {status}")
        changed.set()
        await release.wait()
        events.append(f"landed {status}")

    updater = StatusUpdater(slow_send, RequestBudget(30, clock=clock), min_gap_s=0.0, clock=clock)
    updater.start()
    try:
        updater.publish(7, "Generating… 1 s")
        await until(lambda: events == ["start Generating… 1 s"], changed)
        updater.publish(7, "Posting…")  # waits behind the edit in flight
        ending = asyncio.create_task(updater.end(7))
        await settle()
        assert not ending.done()  # the ending must not be overwritten by the older edit
        release.set()
        await ending
        events.append("ending")
        updater.publish(7, "Generating… 2 s")  # too late: the job has ended
        await settle()
        assert events == ["start Generating… 1 s", "landed Generating… 1 s", "ending"]
    finally:
        await updater.stop()


def test_only_the_first_places_are_exact_and_the_rest_move_in_steps() -> None:
    assert queued_text(1) == "Queued: you're next."
    assert queued_text(10) == "Queued: position 10."
    assert queued_text(11) == "In the queue, about 10 ahead."
    assert queued_text(500) == "In the queue, about 500 ahead."
    # 975 waiting jobs each move up one place: only about one in ten of their lines changes.
    before = [queued_text(p) for p in range(2, 977)]
    after = [queued_text(p) for p in range(1, 976)]
    moved = sum(b != a for b, a in zip(before, after, strict=True))
    assert moved <= 975 // 10 + 10


async def test_a_new_stage_skips_the_gap_and_a_clock_tick_does_not_undo_that() -> None:
    clock = FakeClock()
    sends = Sends(clock)
    updater = StatusUpdater(sends, RequestBudget(30, clock=clock), min_gap_s=2.0, clock=clock)
    updater.start()
    try:
        updater.publish(7, "Preparing…")
        await until(lambda: len(sends.sent) == 1, sends.changed)
        updater.publish(7, "Generating… 0 s", at_once=True)
        updater.publish(7, "Generating… 1 s")  # replaces it unsent, still owed at once
        await until(lambda: len(sends.sent) == 2, sends.changed)
        updater.publish(7, "Generating… 2 s")
        await settle()
        assert sends.of(7) == ["Preparing…", "Generating… 1 s"]  # the tick waits its gap
    finally:
        await updater.stop()
