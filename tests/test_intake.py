"""The intake's limits: downloads and image work never run more at once than configured."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from services import images
from services.images import PreparedImage, prepare_input, prepare_inputs
from services.intake import Intake, open_intake
from services.settings import LimitSettings
from tests.images import make_png


class Gate:
    """Wraps a function: counts the calls inside it and holds each until the test lets it go."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self._func = func
        self._lock = threading.Lock()
        self._release = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)
        self.active = 0
        self.peak = 0

    def __call__(self, *args: Any) -> Any:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        self.entered.release()
        self._release.acquire()
        with self._lock:
            self.active -= 1
        return self._func(*args)

    async def wait_entered(self) -> None:
        await asyncio.to_thread(self.entered.acquire)

    def let_one_go(self) -> None:
        self._release.release()


async def test_at_most_the_limit_of_preparations_run_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = Gate(images._prepare_sync)
    monkeypatch.setattr(images, "_prepare_sync", gate)
    async with open_intake(LimitSettings(image_preparations=2)) as intake:
        data = make_png()
        tasks = [asyncio.create_task(prepare_input(data, intake=intake)) for _ in range(6)]
        await gate.wait_entered()
        await gate.wait_entered()
        # Two are inside; each further one may only enter once one of those has left.
        for _ in range(4):
            gate.let_one_go()
            await gate.wait_entered()
        for _ in range(2):
            gate.let_one_go()
        results = await asyncio.gather(*tasks)
    assert gate.peak == 2
    assert all(isinstance(r, PreparedImage) for r in results)


async def test_several_images_of_one_command_share_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = Gate(images._prepare_sync)
    monkeypatch.setattr(images, "_prepare_sync", gate)
    async with open_intake(LimitSettings(image_preparations=1)) as intake:
        files = [(make_png(), f"{n}.png") for n in range(3)]
        task = asyncio.create_task(prepare_inputs(files, minimum=2, maximum=5, intake=intake))
        for _ in range(3):
            await gate.wait_entered()
            gate.let_one_go()
        prepared = await task
    assert gate.peak == 1
    assert len(prepared) == 3


async def test_at_most_the_limit_of_commands_hold_images_at_once() -> None:
    intake = Intake(LimitSettings(intake_commands=3))
    try:
        active = peak = 0
        inside = asyncio.Semaphore(0)
        release = asyncio.Event()

        async def download() -> None:
            nonlocal active, peak
            async with intake.admit():
                active += 1
                peak = max(peak, active)
                inside.release()
                await release.wait()
                active -= 1

        tasks = [asyncio.create_task(download()) for _ in range(10)]
        for _ in range(3):
            await inside.acquire()
        # Every other download has had its turn at the loop and is still waiting for a slot.
        for _ in range(5):
            await asyncio.sleep(0)
        assert active == 3
        release.set()
        await asyncio.gather(*tasks)
        assert peak == 3
    finally:
        intake.close()


async def test_a_refusal_crosses_the_pool_unchanged() -> None:
    async with open_intake(LimitSettings()) as intake:
        with pytest.raises(images.NotAnImageError):
            await prepare_input(b"not an image at all", filename="a.txt", intake=intake)


async def test_closing_the_intake_stops_its_workers() -> None:
    before = {t.name for t in threading.enumerate()}
    async with open_intake(LimitSettings(image_preparations=2)) as intake:
        await prepare_input(make_png(), intake=intake)
    after = {t.name for t in threading.enumerate()}
    assert not {name for name in after - before if name.startswith("image")}
