"""`WaveSpeedClient.list_predictions`: finding jobs by time, model and inputs (a lost submit)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.simulator import Fault, SimulatorConfig, WaveSpeedSimulator
from services.wavespeed import (
    InputImage,
    ListedPrediction,
    SubmissionUnknownError,
    WaveSpeedClient,
    model_for_path,
)
from services.wavespeed.media import to_data_uri
from tests.conftest import API_KEY, fast_settings
from tests.images import make_png

RED = InputImage(make_png(colour=(220, 30, 30)))
EDIT = model_for_path("flux-kontext-pro")
DEV = model_for_path("flux-kontext-dev")


def around_now(minutes: int = 5) -> dict[str, datetime]:
    now = datetime.now(UTC)
    return {
        "created_after": now - timedelta(minutes=minutes),
        "created_before": now + timedelta(minutes=minutes),
    }


async def test_lists_own_jobs_newest_first_with_what_was_sent(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    sent = [client.prepare(EDIT, prompt=f"hat {n}", image=RED) for n in range(2)]
    ids = [(await client.submit(EDIT, request, sync=False)).prediction_id for request in sent]
    dev = await client.submit(DEV, client.prepare(DEV, prompt="rain", image=RED), sync=False)
    await client.wait_for(ids[0])

    listed = await client.list_predictions(**around_now())

    assert [item.id for item in listed] == [dev.prediction_id, ids[1], ids[0]]
    oldest = listed[-1]
    assert isinstance(oldest, ListedPrediction)
    assert oldest.model == "wavespeed-ai/flux-kontext-pro" and oldest.status == "completed"
    assert oldest.outputs and oldest.error == "" and oldest.created_at.endswith("Z")
    # Enough to recognise a lost submit: the prompt, the seed and the very image sent.
    assert oldest.input["prompt"] == "hat 0" and oldest.input["seed"] == sent[0].seed
    assert oldest.input["image"] == to_data_uri(RED.data, RED.content_type)


async def test_filters_by_model_path_and_status(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    pro = await client.submit(EDIT, client.prepare(EDIT, prompt="a hat", image=RED), sync=False)
    stuck = await client.submit(
        DEV, client.prepare(DEV, prompt="[stuck] a hat", image=RED), sync=False
    )
    await client.wait_for(pro.prediction_id)

    by_model = await client.list_predictions(**around_now(), model="flux-kontext-dev")
    by_status = await client.list_predictions(**around_now(), status="completed")
    earlier = await client.list_predictions(
        created_after=datetime(2020, 1, 1), created_before=datetime(2020, 1, 2)
    )

    assert [item.id for item in by_model] == [stuck.prediction_id]
    assert [item.id for item in by_status] == [pro.prediction_id]
    assert earlier == []


@pytest.mark.parametrize(("jobs", "requests"), [(5, 3), (4, 2), (0, 1)])
async def test_walks_pages_until_short_or_total(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator, jobs: int, requests: int
) -> None:
    for n in range(jobs):
        await client.submit(EDIT, client.prepare(EDIT, prompt=f"p{n}", image=RED), sync=False)

    listed = await client.list_predictions(**around_now(), page_size=2)

    assert [item.input["prompt"] for item in listed] == [f"p{n}" for n in reversed(range(jobs))]
    # 4 jobs: two full pages reach `total`, so no third (empty) page is asked for.
    assert simulator.request_counts["history"] == requests


async def test_max_pages_bounds_the_walk(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    for n in range(3):
        await client.submit(EDIT, client.prepare(EDIT, prompt=f"p{n}", image=RED), sync=False)
    listed = await client.list_predictions(**around_now(), page_size=1, max_pages=2)
    assert len(listed) == 2 and simulator.request_counts["history"] == 2


async def test_a_history_read_is_retried(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    await client.submit(EDIT, client.prepare(EDIT, prompt="a hat", image=RED), sync=False)
    simulator.inject(Fault.UNAVAILABLE, route="history")
    simulator.inject(Fault.DROP, route="history")
    assert len(await client.list_predictions(**around_now())) == 1


@pytest.mark.parametrize(
    "simulator_config",
    [
        SimulatorConfig(
            api_keys=frozenset({API_KEY}),
            latency_s=0,
            max_concurrent_per_key=100,
            max_output_side=256,
            submit_answer_delay_s=600,
        )
    ],
)
async def test_a_lost_submit_answer_is_found_in_the_history(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    client = make_client(submit_timeout_s=0.2)
    request = client.prepare(EDIT, prompt="a hat", image=RED)
    with pytest.raises(SubmissionUnknownError):
        await client.submit(EDIT, request, sync=False)

    listed = await client.list_predictions(**around_now(), model=EDIT.path)

    matches = [
        item
        for item in listed
        if item.input.get("prompt") == request.prompt and item.input.get("seed") == request.seed
    ]
    assert [item.id for item in matches] == list(simulator.predictions)
    assert simulator.request_counts["submit"] == 1


# --- Defensive parsing against other shapes of the answer ----------------------------------------


@pytest.fixture
async def odd_history(http_session: aiohttp.ClientSession) -> AsyncIterator[Callable[..., Any]]:
    """A server answering the history with the given `data` per page (then an empty page)."""
    runners: list[web.AppRunner] = []

    async def start(*pages: Any) -> tuple[WaveSpeedClient, list[dict[str, Any]]]:
        asked: list[dict[str, Any]] = []

        async def answer(request: web.Request) -> web.Response:
            body = await request.json()
            asked.append(body)
            data = pages[body["page"] - 1] if body["page"] <= len(pages) else {"items": []}
            return web.json_response({"code": 200, "message": "success", "data": data})

        app = web.Application()
        app.router.add_post("/api/v3/predictions", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return WaveSpeedClient(http_session, fast_settings(base_url)), asked

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_items_are_read_leniently_and_broken_ones_skipped(
    odd_history: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    items = [
        {
            "id": "a1",
            "model": "wavespeed-ai/flux-kontext-pro",
            "status": "completed",
            "outputs": ["https://cdn.example/a1.png"],
            "inputs": {"prompt": "hat", "seed": 7},
            "created_at": "2025-06-15T15:06:40Z",
            "executionTime": 1234,
            "error": None,
            "something_new": {"nested": True},
        },
        {"model": "no id at all"},
        "not even an object",
        {"id": "b2", "status": "failed", "outputs": None, "input": None, "error": "boom"},
    ]
    client, asked = await odd_history(items)  # `data` is the list itself, without `total`
    caplog.set_level(logging.WARNING)

    listed = await client.list_predictions(
        created_after=datetime(2025, 6, 15, 15, 0), created_before=datetime(2025, 6, 15, 16, 0)
    )

    assert [(item.id, item.status, item.outputs, item.input) for item in listed] == [
        ("a1", "completed", ["https://cdn.example/a1.png"], {"prompt": "hat", "seed": 7}),
        ("b2", "failed", [], {}),
    ]
    assert listed[1].error == "boom" and listed[0].error == ""
    assert caplog.text.count("unreadable prediction history item") == 2
    assert asked[0] == {
        "page": 1,
        "page_size": 50,
        "created_after": "2025-06-15T15:00:00.000Z",
        "created_before": "2025-06-15T16:00:00.000Z",
    }


async def test_pages_repeating_an_item_and_a_smaller_served_page_size(
    odd_history: Callable[..., Any],
) -> None:
    client, asked = await odd_history(
        {"items": [{"id": "c"}, {"id": "b"}], "page_size": 2},
        # A job created meanwhile pushed "b" onto the second page as well.
        {"items": [{"id": "b"}, {"id": "a"}], "page_size": 2},
        {"items": [], "page_size": 2},
    )
    listed = await client.list_predictions(**around_now(), page_size=10, status="completed")
    assert [item.id for item in listed] == ["c", "b", "a"]
    assert [body["page"] for body in asked] == [1, 2, 3]
    assert asked[0]["status"] == "completed" and "model" not in asked[0]
