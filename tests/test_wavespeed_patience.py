"""Waiting for a paid job: transient failures never fail it, only its own end or the deadline.

Also the submit's side of the same promise: an error answer is sent again only when it proves
WaveSpeed did nothing; one that may hide an accepted job is never repeated.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.simulator import Fault, WaveSpeedSimulator
from services.wavespeed import (
    AuthenticationError,
    InputImage,
    ServerError,
    SubmissionUnknownError,
    TimedOutError,
    WaveSpeedClient,
    model_for_path,
)
from services.wavespeed.media import decodes_fully
from tests.conftest import fast_settings
from tests.images import decoded, make_png

RED = InputImage(make_png(colour=(220, 30, 30)))
EDIT = model_for_path("flux-kontext-pro")  # no sync mode: always polled
DEV = model_for_path("flux-kontext-dev")


async def submitted(client: WaveSpeedClient, spec: Any = EDIT, **params: Any) -> str:
    params = {"prompt": "add a hat", "image": RED, **params}
    submission = await client.submit(spec, client.prepare(spec, **params), sync=False)
    return submission.prediction_id


# --- Polling -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", [Fault.SERVER_ERROR, Fault.UNAVAILABLE, Fault.MALFORMED, Fault.DROP]
)
async def test_polling_outlasts_any_number_of_transient_failures(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator, fault: Fault
) -> None:
    # One attempt per request: only the deadline-bounded mode can get through six failures.
    client = make_client(retry_attempts=1)
    prediction_id = await submitted(client)
    simulator.inject(fault, route="result", times=6)

    result = await client.resume(EDIT, prediction_id, deadline_at=time.time() + 30)

    assert result.prediction_id == prediction_id and decoded(result.images[0].data)
    assert simulator.request_counts["result"] >= 7
    assert simulator.request_counts["submit"] == 1


async def test_polling_rides_out_an_outage(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    client = make_client(retry_attempts=1)
    prediction_id = await submitted(client)
    simulator.start_outage(0.3)

    result = await client.resume(EDIT, prediction_id)

    assert result.images and len(simulator.billed) == 1


async def test_past_the_deadline_the_error_is_a_time_out_with_the_id(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    client = make_client(retry_attempts=1)
    prediction_id = await submitted(client)
    simulator.inject(Fault.UNAVAILABLE, route="result", times=10_000)

    with pytest.raises(TimedOutError) as caught:
        await client.wait_for(prediction_id, deadline_at=time.time() + 0.2)
    assert caught.value.prediction_id == prediction_id
    assert "5003" in (caught.value.detail or "")


async def test_a_deadline_already_past_still_collects_a_finished_job(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    prediction_id = await submitted(client)
    await client.wait_for(prediction_id)
    before = simulator.request_counts["result"]

    result = await client.resume(EDIT, prediction_id, deadline_at=time.time() - 3600)

    assert result.images and simulator.request_counts["result"] == before + 1


async def test_a_bad_key_while_waiting_raises_at_once(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    from pydantic import SecretStr

    prediction_id = await submitted(make_client())
    other = make_client(api_key=SecretStr("revoked"))
    with pytest.raises(AuthenticationError):
        await other.resume(EDIT, prediction_id, deadline_at=time.time() + 600)
    assert simulator.request_counts["result"] == 1


async def test_any_5xx_while_polling_is_waited_out(http_session: aiohttp.ClientSession) -> None:
    # Proxies in front of an API answer codes of their own (Cloudflare's 520-524).
    failures = [(522, b"<html>origin timed out</html>"), (520, b""), (501, b"")]
    done = {"id": "p1", "status": "completed", "outputs": [base64.b64encode(RED.data).decode()]}

    async def result(_request: web.Request) -> web.Response:
        if failures:
            status, body = failures.pop(0)
            return web.Response(status=status, body=body, content_type="text/html")
        return web.json_response({"code": 200, "message": "success", "data": done})

    app = web.Application()
    app.router.add_get("/api/v3/predictions/{id}/result", result)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        client = WaveSpeedClient(http_session, fast_settings(base_url, retry_attempts=1))
        finished = await client.resume(EDIT, "p1", deadline_at=time.time() + 30)
    finally:
        await runner.cleanup()
    assert failures == [] and finished.images[0].data == RED.data


# --- Verified outputs ----------------------------------------------------------------------------


async def test_a_truncated_download_is_fetched_again(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    client = make_client(retry_attempts=1)
    prediction_id = await submitted(client)
    simulator.inject(Fault.TRUNCATED, route="download", times=2)

    result = await client.resume(EDIT, prediction_id)

    assert simulator.request_counts["download"] == 3
    (image,) = result.images
    assert decoded(image.data).size == decoded(RED.data).size
    assert image.data == simulator.predictions[prediction_id].output_files[0].data


async def test_downloads_outlast_dropped_connections_and_5xx(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    client = make_client(retry_attempts=1)
    prediction_id = await submitted(client)
    prediction = await client.wait_for(prediction_id)
    simulator.inject(Fault.DROP, route="download", times=3)
    simulator.inject(Fault.SERVER_ERROR, route="download", times=1)

    result = await client.collect(EDIT, prediction)

    assert decoded(result.images[0].data)


@pytest.mark.parametrize("spoil", ["truncate", "not base64"])
async def test_an_inline_output_that_does_not_decode_is_read_again(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator, spoil: str
) -> None:
    client = make_client(base64_output=True)
    prediction = await client.wait_for(
        await submitted(client, DEV, output_format="png", num_images=2)
    )
    good = base64.b64decode(prediction.outputs[1])
    broken = base64.b64encode(good[: len(good) // 2]).decode() if spoil == "truncate" else "%%%"
    damaged = prediction.model_copy(update={"outputs": [prediction.outputs[0], broken]})
    before = simulator.request_counts["result"]

    result = await client.collect(DEV, damaged)

    assert [image.data for image in result.images] == [
        base64.b64decode(output) for output in prediction.outputs
    ]
    assert simulator.request_counts["result"] == before + 1


def test_only_whole_images_decode_fully() -> None:
    png = make_png()
    assert decodes_fully(png) == "image/png"
    assert decodes_fully(png[: len(png) // 2]) is None
    assert decodes_fully(png[:8] + b"\0" * 200) is None
    assert decodes_fully(b"<html>not found</html>") is None


# --- The submit ----------------------------------------------------------------------------------


@pytest.fixture
async def fake_wavespeed() -> AsyncIterator[Callable[..., Any]]:
    """A WaveSpeed stand-in that answers every submit with one fixed (error) answer."""
    runners: list[web.AppRunner] = []

    async def start(status: int, body: bytes, content_type: str) -> tuple[str, list[int]]:
        calls: list[int] = []

        async def answer(_request: web.Request) -> web.Response:
            calls.append(status)
            return web.Response(status=status, body=body, content_type=content_type)

        app = web.Application()
        app.router.add_post("/api/v3/wavespeed-ai/{path:.+}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}", calls

    yield start
    for runner in runners:
        await runner.cleanup()


def _envelope(code: int, data: Any = None) -> bytes:
    return json.dumps({"code": code, "message": "something broke", "data": data}).encode()


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (500, b"<html><body>Internal Server Error</body></html>", "text/html"),
        (503, b"", "text/plain"),
        (502, b"Bad Gateway", "text/plain"),
        (504, _envelope(5004), "application/json"),
        (500, _envelope(500), "application/json"),
        (500, b'{"code": 5000, "mess', "application/json"),
    ],
    ids=["html-500", "empty-503", "text-502", "5004-504", "code-500", "cut-json"],
)
async def test_a_5xx_that_does_not_prove_a_refusal_is_never_repeated(
    fake_wavespeed: Callable[..., Any],
    http_session: aiohttp.ClientSession,
    status: int,
    body: bytes,
    content_type: str,
) -> None:
    base_url, calls = await fake_wavespeed(status, body, content_type)
    client = WaveSpeedClient(http_session, fast_settings(base_url))

    with pytest.raises(SubmissionUnknownError):
        await client.submit(EDIT, client.prepare(EDIT, prompt="add a hat", image=RED))
    assert calls == [status]


@pytest.mark.parametrize(("status", "code"), [(500, 5000), (503, 5003), (502, 5000)])
async def test_a_5xx_in_wavespeeds_refusal_envelope_may_be_repeated(
    fake_wavespeed: Callable[..., Any],
    http_session: aiohttp.ClientSession,
    status: int,
    code: int,
) -> None:
    base_url, calls = await fake_wavespeed(status, _envelope(code), "application/json")
    client = WaveSpeedClient(http_session, fast_settings(base_url, retry_attempts=3))

    with pytest.raises(ServerError):
        await client.submit(EDIT, client.prepare(EDIT, prompt="add a hat", image=RED))
    assert calls == [status] * 3
