"""The WaveSpeed simulator, driven over real loopback sockets with plain aiohttp.

Deliberately not through the project's own client: the simulator must work for any client that
follows the documented contract, so these tests speak the wire format directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from services.simulator import Fault, SimulatorConfig, WaveSpeedSimulator, run_simulator
from services.simulator.__main__ import build_parser, config_from_args
from services.simulator.render import ASPECT_SIZES
from services.wavespeed.catalog import MODELS, ModelKind, ModelSpec, model_for_path
from services.wavespeed.protocol import SYNC_TIMEOUT_TEXT
from services.wavespeed.webhooks import verify

KEY = "sim-test-key"
PREDICTION_KEYS = {
    "id",
    "model",
    "outputs",
    "urls",
    "has_nsfw_contents",
    "status",
    "created_at",
    "error",
    "timings",
}
ENDED = frozenset({"completed", "failed"})
# Test-sized settings: no simulated latency, small renders, quick webhook retries.
FAST: dict[str, Any] = {
    "latency_s": 0.0,
    "sync_wait_s": 5.0,
    "max_output_side": 256,
    "webhook_retry_delay_s": 0.01,
}


# --- Helpers -------------------------------------------------------------------------------------


def image_bytes(
    size: tuple[int, int] = (96, 64), colour: tuple[int, int, int] = (200, 40, 40), fmt: str = "PNG"
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt)
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def opened(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


class FakeClock:
    """A settable unix clock for created_at, retention, rate windows and webhook timestamps."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Api:
    """Plain-aiohttp calls against one simulator, as any WaveSpeed client would make them."""

    def __init__(
        self, session: aiohttp.ClientSession, sim: WaveSpeedSimulator, key: str = KEY
    ) -> None:
        self.session = session
        self.sim = sim
        self.key = key

    @property
    def base(self) -> str:
        assert self.sim.base_url is not None
        return self.sim.base_url

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **(extra or {})}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        headers = self.headers(kwargs.pop("headers", None))
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as response:
            assert response.content_type == "application/json"
            return response.status, await response.json()

    async def submit(self, path: str, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        status, answer, _ = await self.submit_raw(path, body, **kwargs)
        return status, answer

    async def submit_raw(
        self, path: str, body: Any, **kwargs: Any
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """POST a submit; (HTTP status, JSON answer, response headers)."""
        headers = self.headers(kwargs.pop("headers", None))
        async with self.session.post(
            f"{self.base}/api/v3/wavespeed-ai/{path}", json=body, headers=headers, **kwargs
        ) as response:
            assert response.content_type == "application/json"
            return response.status, await response.json(), response.headers

    async def result(self, prediction_id: str) -> tuple[int, dict[str, Any]]:
        return await self.call("GET", f"/api/v3/predictions/{prediction_id}/result")

    async def created(self, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        status, answer = await self.submit(path, body, **kwargs)
        assert status == 200, answer
        return answer["data"]

    async def wait(
        self, prediction_id: str, statuses: frozenset[str] = ENDED, within_s: float = 10.0
    ) -> dict[str, Any]:
        """Poll until the prediction reaches one of `statuses`."""
        async with asyncio.timeout(within_s):
            while True:
                status, answer = await self.result(prediction_id)
                assert status == 200, answer
                if answer["data"]["status"] in statuses:
                    return answer["data"]
                await asyncio.sleep(0.01)

    async def download(self, url: str) -> tuple[str, bytes]:
        async with self.session.get(url) as response:
            assert response.status == 200
            return response.content_type, await response.read()


def body_for(spec: ModelSpec, prompt: str = "make it blue", **extra: Any) -> dict[str, Any]:
    """A valid request for `spec`."""
    body: dict[str, Any] = {"prompt": prompt, **extra}
    if spec.kind is ModelKind.EDIT:
        body.setdefault("image", data_uri(image_bytes()))
    elif spec.kind is ModelKind.MULTI:
        body.setdefault(
            "images", [data_uri(image_bytes()), data_uri(image_bytes((40, 80), (20, 20, 200)))]
        )
    return body


def assert_prediction_shape(data: dict[str, Any]) -> None:
    assert PREDICTION_KEYS <= set(data) <= PREDICTION_KEYS | {"code"}
    assert set(data["urls"]) == {"get"} and data["urls"]["get"].endswith(
        f"/api/v3/predictions/{data['id']}/result"
    )
    assert data["created_at"].endswith("Z")
    datetime.fromisoformat(data["created_at"].replace("Z", "+00:00"))
    assert isinstance(data["timings"]["inference"], int)
    assert isinstance(data["error"], str)
    assert len(data["has_nsfw_contents"]) == len(data["outputs"])


StartSim = Callable[..., Awaitable[WaveSpeedSimulator]]


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll the simulator's (or a receiver's) state until `condition` holds."""
    async with asyncio.timeout(within_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """Starts simulators with FAST settings plus overrides; all stop at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> WaveSpeedSimulator:
            config = SimulatorConfig(**{**FAST, **overrides})
            return await stack.enter_async_context(run_simulator(config))

        yield start


@pytest.fixture
async def api(start_sim: StartSim, session: aiohttp.ClientSession) -> Api:
    return Api(session, await start_sim())


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """A small aiohttp app on loopback (webhook receiver, image host); yields its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


# --- Every model, the documented shape -----------------------------------------------------------


@pytest.mark.parametrize("spec", MODELS, ids=[spec.path for spec in MODELS])
async def test_every_model_completes_with_the_documented_shape(api: Api, spec: ModelSpec) -> None:
    status, answer = await api.submit(spec.path, body_for(spec))
    assert status == 200
    assert answer["code"] == 200 and answer["message"] == "success"
    submitted = answer["data"]
    assert_prediction_shape(submitted)
    assert submitted["model"] == spec.model_id
    assert submitted["outputs"] == [] and "code" not in submitted

    done = await api.wait(submitted["id"])
    assert_prediction_shape(done)
    assert done["status"] == "completed" and done["error"] == ""
    assert done["has_nsfw_contents"] == [False]
    content_type, data = await api.download(done["outputs"][0])
    assert content_type == "image/jpeg" and opened(data).format == "JPEG"
    assert [entry.id for entry in api.sim.billed] == [submitted["id"]]


async def test_result_alias_route_answers_the_same(api: Api) -> None:
    spec = MODELS[0]
    data = await api.created(spec.path, body_for(spec))
    await api.wait(data["id"])
    status, answer = await api.call("GET", f"/api/v3/predictions/{data['id']}")
    assert status == 200 and answer["data"]["status"] == "completed"


# --- Validation, authentication, unknown things --------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "code", "words"),
    [
        ("flux-kontext-pro", {"image": "https://example.invalid/a.png"}, 1400, "needs a prompt"),
        ("flux-kontext-pro", {"prompt": "x"}, 1400, "needs an image"),
        (
            "flux-kontext-pro/text-to-image",
            {"prompt": "x", "guidance_scale": 50},
            1401,
            "guidance must be between 1 and 20",
        ),
        (
            "flux-kontext-max/text-to-image",
            {"prompt": "x", "aspect_ratio": "5:4"},
            1401,
            "aspect ratio must be one of",
        ),
        (
            "flux-kontext-pro/text-to-image",
            {"prompt": "x", "colour": "red"},
            1401,
            "does not take the option",
        ),
        ("flux-kontext-dev", {"prompt": "x", "size": "100*100"}, 1401, "size must look like"),
        (
            "flux-kontext-dev/multi",
            {"prompt": "x", "images": ["https://a.invalid/x.png"] * 5},
            1401,
            "between 1 and 4 images",
        ),
        ("flux-kontext-pro/text-to-image", {"prompt": "   "}, 1401, "needs a prompt"),
    ],
)
async def test_invalid_requests_get_400_with_a_readable_message(
    api: Api, path: str, body: dict[str, Any], code: int, words: str
) -> None:
    status, answer = await api.submit(path, body)
    assert status == 400
    assert answer["code"] == code and words in answer["message"], answer
    assert api.sim.predictions == {}


async def test_bad_json_and_non_object_bodies_are_1401(api: Api) -> None:
    status, answer = await api.call(
        "POST",
        "/api/v3/wavespeed-ai/flux-kontext-pro",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert (status, answer["code"]) == (400, 1401)
    status, answer = await api.submit("flux-kontext-pro", ["a", "list"])
    assert (status, answer["code"]) == (400, 1401)


async def test_sync_and_base64_flags_are_ignored_where_a_model_lacks_them(api: Api) -> None:
    spec = model_for_path("flux-kontext-max")  # takes neither flag
    body = body_for(spec, enable_sync_mode=True, enable_base64_output=True)
    data = await api.created(spec.path, body)
    assert data["status"] == "created"  # not answered synchronously
    done = await api.wait(data["id"])
    assert done["outputs"][0].startswith("http")


async def test_webhook_with_base64_output_is_refused(api: Api) -> None:
    status, answer = await api.submit(
        "flux-kontext-dev",
        {"prompt": "x", "enable_base64_output": True},
        params={"webhook": "http://127.0.0.1:9/hook"},
    )
    assert (status, answer["code"]) == (400, 1401)
    assert "webhook" in answer["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer wrong-key"},
    ],
)
async def test_missing_or_wrong_keys_get_401(
    start_sim: StartSim, session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    sim = await start_sim(api_keys=frozenset({KEY}))
    for method, path in [
        ("POST", "/api/v3/wavespeed-ai/flux-kontext-pro"),
        ("GET", "/api/v3/predictions/abc/result"),
        ("GET", "/api/v3/balance"),
        ("GET", "/api/v3/account/balance"),
    ]:
        async with session.request(
            method, f"{sim.base_url}{path}", headers=headers, json={}
        ) as response:
            answer = await response.json()
        assert response.status == 401
        assert answer["code"] == 401 and answer["message"].startswith("Unauthorized: ")
        assert answer["data"] is None


async def test_any_key_is_accepted_when_none_are_configured(api: Api) -> None:
    api.key = "whatever"
    status, _ = await api.call("GET", "/api/v3/balance")
    assert status == 200


async def test_unknown_model_and_unknown_prediction_are_404(api: Api) -> None:
    status, answer = await api.submit("flux-kontext-ultra", {"prompt": "x"})
    assert (status, answer["code"]) == (404, 404)
    status, answer = await api.result("0" * 32)
    assert (status, answer["code"]) == (404, 404)
    status, answer = await api.call("GET", "/api/v3/no-such-route")
    assert (status, answer["code"]) == (404, 404)


async def test_predictions_and_outputs_expire_after_the_retention(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    api = Api(session, await start_sim(clock=clock, retention_s=3600))
    spec = MODELS[2]
    done = await api.wait((await api.created(spec.path, body_for(spec)))["id"])
    clock.now += 3599
    assert (await api.result(done["id"]))[0] == 200
    clock.now += 2
    assert (await api.result(done["id"]))[0] == 404
    async with session.get(done["outputs"][0]) as response:
        assert response.status == 404


async def test_the_oldest_predictions_are_evicted_beyond_the_cap(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim(max_stored_predictions=2))
    spec = MODELS[2]
    ids = [(await api.created(spec.path, body_for(spec)))["id"] for _ in range(3)]
    assert (await api.result(ids[0]))[0] == 404
    assert [(await api.result(i))[0] for i in ids[1:]] == [200, 200]
    assert list(api.sim.predictions) == ids[1:]


# --- Progression, sync mode -----------------------------------------------------------------------


async def test_created_then_processing_then_completed(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim(latency_s=0.2))
    spec = MODELS[0]
    data = await api.created(spec.path, body_for(spec))
    assert data["status"] == "created"
    seen = [data["status"]]
    async with asyncio.timeout(10):
        while seen[-1] != "completed":
            await asyncio.sleep(0.01)
            status = (await api.result(data["id"]))[1]["data"]["status"]
            if status != seen[-1]:
                seen.append(status)
    assert seen == ["created", "processing", "completed"]
    final = (await api.result(data["id"]))[1]["data"]
    assert final["timings"]["inference"] >= 200


async def test_sync_mode_answers_the_finished_prediction(api: Api) -> None:
    status, answer = await api.submit(
        "flux-kontext-pro/text-to-image", {"prompt": "a lighthouse", "enable_sync_mode": True}
    )
    assert status == 200
    data = answer["data"]
    assert_prediction_shape(data)
    assert data["status"] == "completed" and len(data["outputs"]) == 1


async def test_sync_mode_times_out_with_5004_and_the_task_runs_on(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim(latency_s=0.3, sync_wait_s=0.05))
    status, answer = await api.submit(
        "flux-kontext-dev", {"prompt": "a fox", "enable_sync_mode": True}
    )
    assert status == 200
    data = answer["data"]
    assert_prediction_shape(data)
    assert data["code"] == 5004 and data["status"] == "processing"
    assert SYNC_TIMEOUT_TEXT in data["error"]
    done = await api.wait(data["id"])
    assert done["status"] == "completed" and "code" not in done


async def test_sync_timeout_fault_answers_5004_at_once(api: Api) -> None:
    status, answer = await api.submit(
        "flux-kontext-pro/multi",
        body_for(MODELS[1], enable_sync_mode=True),
        headers={"X-Simulator-Fault": "sync_timeout"},
    )
    assert status == 200 and answer["data"]["code"] == 5004
    assert (await api.wait(answer["data"]["id"]))["status"] == "completed"


async def test_shutdown_wakes_a_waiting_sync_request(session: aiohttp.ClientSession) -> None:
    async with run_simulator(SimulatorConfig(**{**FAST, "latency_s": 30.0})) as sim:
        api = Api(session, sim)
        pending = asyncio.create_task(
            api.submit("flux-kontext-dev", {"prompt": "slow", "enable_sync_mode": True})
        )
        await until(lambda: bool(sim.predictions))
    async with asyncio.timeout(5):
        status, answer = await pending
    assert status == 200 and answer["data"]["code"] == 5004


# --- Outputs --------------------------------------------------------------------------------------


async def test_base64_outputs_decode_to_images_of_the_requested_format(api: Api) -> None:
    data = await api.created(
        "flux-kontext-dev",
        {
            "prompt": "a red kite",
            "enable_base64_output": True,
            "enable_sync_mode": True,
            "num_images": 2,
            "output_format": "png",
            "size": "400*300",
        },
    )
    assert data["status"] == "completed" and len(data["outputs"]) == 2
    for output in data["outputs"]:
        assert not output.startswith("data:")
        picture = opened(base64.b64decode(output, validate=True))
        assert picture.format == "PNG"
        assert picture.size == (256, 192)  # 400*300 clamped to max_output_side, aspect kept
    assert data["outputs"][0] != data["outputs"][1]  # seeds seed and seed + 1


@pytest.mark.parametrize(
    ("path", "extra", "size", "fmt"),
    [
        ("flux-kontext-pro/text-to-image", {"aspect_ratio": "16:9"}, None, "JPEG"),
        ("flux-kontext-pro", {}, (96, 64), "JPEG"),  # an edit keeps its input's size
        ("flux-kontext-max", {"aspect_ratio": "1:1"}, (256, 256), "JPEG"),
        ("flux-kontext-dev", {"size": "512*768", "output_format": "webp"}, (171, 256), "WEBP"),
        ("flux-kontext-dev/multi", {"size": "256*256"}, (256, 256), "JPEG"),
    ],
)
async def test_outputs_are_real_images_of_the_right_size_and_format(
    api: Api, path: str, extra: dict[str, Any], size: tuple[int, int] | None, fmt: str
) -> None:
    spec = next(spec for spec in MODELS if spec.path == path)
    done = await api.wait((await api.created(path, body_for(spec, **extra)))["id"])
    content_type, data = await api.download(done["outputs"][0])
    picture = opened(data)
    expected = size
    if expected is None:
        width, height = ASPECT_SIZES["16:9"]
        expected = (256, round(height * 256 / width))
    assert picture.size == expected and picture.format == fmt
    assert content_type == f"image/{fmt.lower()}"
    assert done["outputs"][0].endswith(f".{fmt.lower()}")


async def test_an_edit_is_deterministic_for_a_seed_and_differs_for_another(api: Api) -> None:
    spec = MODELS[0]
    body = body_for(spec, seed=1234)
    outputs = []
    for seed in (1234, 1234, 99):
        done = await api.wait((await api.created(spec.path, {**body, "seed": seed}))["id"])
        outputs.append((await api.download(done["outputs"][0]))[1])
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


async def test_unseeded_requests_get_a_random_seed_echoed_in_the_state(api: Api) -> None:
    spec = MODELS[2]
    data = await api.created(spec.path, {"prompt": "x", "seed": -1})
    record = api.sim.predictions[data["id"]]
    assert record.seed >= 0 and record.request["seed"] == record.seed


async def test_the_nsfw_trigger_flags_every_output_and_still_completes(api: Api) -> None:
    done = await api.wait(
        (
            await api.created(
                "flux-kontext-max/text-to-image", {"prompt": "something NSFW here", "num_images": 2}
            )
        )["id"]
    )
    assert done["status"] == "completed" and done["has_nsfw_contents"] == [True, True]
    unflagged = await api.wait(
        (
            await api.created(
                "flux-kontext-max/text-to-image", {"prompt": "nsfwish is not the word"}
            )
        )["id"]
    )
    assert unflagged["has_nsfw_contents"] == [False]


async def test_the_moderation_trigger_fails_the_task_with_1200(api: Api) -> None:
    done = await api.wait(
        (await api.created("flux-kontext-pro/text-to-image", {"prompt": "please [moderate] this"}))[
            "id"
        ]
    )
    assert_prediction_shape(done)
    assert done["status"] == "failed" and done["code"] == 1200
    assert "moderation" in done["error"].lower() and done["outputs"] == []
    assert api.sim.billed == []


# --- Input images ---------------------------------------------------------------------------------


async def test_unreadable_images_are_refused_with_1402_naming_which(api: Api) -> None:
    good = data_uri(image_bytes())
    corrupt = data_uri(image_bytes()[:40])  # a PNG signature, then nothing
    cases = [
        ("flux-kontext-pro", {"prompt": "x", "image": "data:image/png;base64,!!!"}, "The image"),
        ("flux-kontext-pro", {"prompt": "x", "image": "ftp://example.com/a.png"}, "The image"),
        ("flux-kontext-pro/multi", {"prompt": "x", "images": [good, corrupt]}, "Image 2 of 2"),
        ("flux-kontext-pro", {"prompt": "x", "image": data_uri(b"just some text")}, "The image"),
    ]
    for path, body, words in cases:
        status, answer = await api.submit(path, body)
        assert (status, answer["code"]) == (400, 1402), answer
        assert answer["message"].startswith(words)
    assert api.sim.predictions == {}


async def test_http_image_urls_are_fetched(api: Api) -> None:
    picture = image_bytes((50, 70), (10, 200, 10), "JPEG")

    async def image(_request: web.Request) -> web.Response:
        return web.Response(body=picture, content_type="image/jpeg")

    host = web.Application()
    host.router.add_get("/cat.jpg", image)
    async with serve(host) as base:
        done = await api.wait(
            (await api.created("flux-kontext-pro", {"prompt": "x", "image": f"{base}/cat.jpg"}))[
                "id"
            ]
        )
        assert opened((await api.download(done["outputs"][0]))[1]).size == (50, 70)
        status, answer = await api.submit(
            "flux-kontext-max/multi",
            {"prompt": "x", "images": [f"{base}/cat.jpg", f"{base}/missing.jpg"]},
        )
    assert (status, answer["code"]) == (400, 1402)
    assert "Image 2 of 2" in answer["message"] and "404" in answer["message"]


async def test_an_output_url_can_feed_the_next_edit(api: Api) -> None:
    first = await api.wait(
        (
            await api.created(
                "flux-kontext-pro/text-to-image", {"prompt": "x", "aspect_ratio": "3:2"}
            )
        )["id"]
    )
    second = await api.wait(
        (await api.created("flux-kontext-pro", {"prompt": "again", "image": first["outputs"][0]}))[
            "id"
        ]
    )
    assert second["status"] == "completed"
    assert api.sim.request_counts["download"] == 0  # served from memory, not fetched over HTTP


# --- Uploads --------------------------------------------------------------------------------------


async def test_binary_upload_gives_a_url_usable_in_a_submit(api: Api) -> None:
    picture = image_bytes((64, 64))
    form = aiohttp.FormData()
    form.add_field("file", picture, filename="my photo.png", content_type="image/png")
    status, answer = await api.call("POST", "/api/v3/media/upload/binary", data=form)
    assert status == 200
    data = answer["data"]
    assert data["type"] == "image" and data["size"] == len(picture)
    assert data["filename"] == "my_photo.png"
    content_type, served = await api.download(data["download_url"])
    assert (content_type, served) == ("image/png", picture)

    done = await api.wait(
        (await api.created("flux-kontext-pro", {"prompt": "x", "image": data["download_url"]}))[
            "id"
        ]
    )
    assert done["status"] == "completed"
    assert api.sim.request_counts["upload"] == 1


async def test_binary_upload_without_a_file_field_is_1400(api: Api) -> None:
    form = aiohttp.FormData()
    form.add_field("other", b"abc", filename="a.bin")
    status, answer = await api.call("POST", "/api/v3/media/upload/binary", data=form)
    assert (status, answer["code"]) == (400, 1400)


async def test_presigned_upload_flow(api: Api, session: aiohttp.ClientSession) -> None:
    picture = image_bytes((80, 40))
    status, answer = await api.call(
        "POST",
        "/api/v3/media/uploads",
        json={"filename": "in.png", "size": len(picture), "content_type": "image/png"},
    )
    assert status == 200
    upload, download_url = answer["data"]["upload"], answer["data"]["download_url"]
    assert upload["method"] == "PUT" and upload["headers"] == {"Content-Type": "image/png"}

    async with session.get(download_url) as response:
        assert response.status == 404  # nothing PUT yet
    status, answer = await api.submit("flux-kontext-pro", {"prompt": "x", "image": download_url})
    assert (status, answer["code"]) == (400, 1402)

    async with session.put(upload["url"], data=picture[:-1], headers=upload["headers"]) as bad:
        assert bad.status == 400  # size does not match what was announced
    # No Authorization header: the URL itself is the credential, as with presigned storage.
    async with session.put(upload["url"], data=picture, headers=upload["headers"]) as good:
        assert good.status == 200
    assert await api.download(download_url) == ("image/png", picture)
    done = await api.wait(
        (await api.created("flux-kontext-pro", {"prompt": "x", "image": download_url}))["id"]
    )
    assert opened((await api.download(done["outputs"][0]))[1]).size == (80, 40)
    assert api.sim.request_counts["upload"] == 3


async def test_presigned_upload_needs_a_size(api: Api) -> None:
    status, answer = await api.call("POST", "/api/v3/media/uploads", json={"filename": "a.png"})
    assert (status, answer["code"]) == (400, 1400)
    status, answer = await api.call(
        "POST", "/api/v3/media/uploads", json={"filename": "a.png", "size": -3}
    )
    assert (status, answer["code"]) == (400, 1401)


# --- Faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [(Fault.SERVER_ERROR, 500, 5000), (Fault.UNAVAILABLE, 503, 5003), (Fault.RATE_LIMIT, 429, 429)],
)
async def test_gateway_faults_answer_an_error_and_create_nothing(
    api: Api, fault: Fault, status: int, code: int
) -> None:
    api.sim.inject(fault)
    spec = MODELS[2]
    got_status, answer, headers = await api.submit_raw(spec.path, body_for(spec))
    assert (got_status, answer["code"]) == (status, code)
    if fault is Fault.RATE_LIMIT:
        assert headers["Retry-After"] == "1"
    assert api.sim.predictions == {}
    # One-shot: the next submit goes through.
    assert (await api.submit(spec.path, body_for(spec)))[0] == 200


async def test_drop_closes_the_connection_but_the_task_exists(api: Api) -> None:
    api.sim.inject(Fault.DROP)
    spec = MODELS[2]
    with pytest.raises(aiohttp.ClientError):
        await api.submit(spec.path, body_for(spec))
    assert len(api.sim.predictions) == 1
    (record,) = api.sim.predictions.values()
    done = await api.wait(record.id)
    assert done["status"] == "completed" and len(api.sim.billed) == 1


async def test_malformed_answers_are_truncated_json(api: Api) -> None:
    api.sim.inject(Fault.MALFORMED, route="result")
    spec = MODELS[2]
    data = await api.created(spec.path, body_for(spec))
    async with api.session.get(data["urls"]["get"], headers=api.headers()) as response:
        assert response.status == 200 and response.content_type == "application/json"
        text = await response.text()
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert (await api.result(data["id"]))[0] == 200


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [(Fault.TASK_FAILED, 1403, "failed"), (Fault.MODERATION, 1200, "moderation")],
)
async def test_task_faults_end_failed_with_their_code(
    api: Api, fault: Fault, code: int, words: str
) -> None:
    api.sim.inject(fault)
    spec = MODELS[0]
    done = await api.wait((await api.created(spec.path, body_for(spec)))["id"])
    assert_prediction_shape(done)
    assert done["status"] == "failed" and done["code"] == code
    assert words in done["error"].lower() and done["outputs"] == []
    assert api.sim.billed == []


async def test_a_stuck_task_stays_processing(api: Api) -> None:
    api.sim.inject(Fault.STUCK)
    spec = MODELS[2]
    data = await api.created(spec.path, body_for(spec))
    await api.wait(data["id"], frozenset({"processing"}))
    # Other tasks still complete (latency is 0), the stuck one does not move.
    other = await api.wait((await api.created(spec.path, body_for(spec)))["id"])
    assert other["status"] == "completed"
    assert (await api.result(data["id"]))[1]["data"]["status"] == "processing"
    assert [entry.id for entry in api.sim.billed] == [other["id"]]


async def test_faults_on_other_routes(api: Api) -> None:
    spec = MODELS[2]
    done = await api.wait((await api.created(spec.path, body_for(spec)))["id"])
    api.sim.inject(Fault.UNAVAILABLE, route="result", times=2)
    assert [(await api.result(done["id"]))[0] for _ in range(3)] == [503, 503, 200]
    # aiohttp quietly retries an idempotent GET once after a disconnect: drop both attempts.
    api.sim.inject(Fault.DROP, route="download", times=2)
    with pytest.raises(aiohttp.ClientError):
        await api.download(done["outputs"][0])
    assert api.sim.request_counts["download"] == 2
    api.sim.inject(Fault.SERVER_ERROR, route="upload")
    status, _ = await api.call(
        "POST", "/api/v3/media/uploads", json={"filename": "a.png", "size": 3}
    )
    assert status == 500
    with pytest.raises(ValueError, match="only applies"):
        api.sim.inject(Fault.STUCK, route="result")
    with pytest.raises(ValueError, match="route"):
        api.sim.inject(Fault.DROP, route="balance")


async def test_a_client_can_choose_a_fault_with_a_header(api: Api) -> None:
    spec = MODELS[2]
    status, answer = await api.submit(
        spec.path, body_for(spec), headers={"X-Simulator-Fault": "unavailable"}
    )
    assert (status, answer["code"]) == (503, 5003)
    data = await api.created(spec.path, body_for(spec), headers={"X-Simulator-Fault": "stuck"})
    assert api.sim.predictions[data["id"]].fault is Fault.STUCK
    status, answer = await api.submit(
        spec.path, body_for(spec), headers={"X-Simulator-Fault": "gremlins"}
    )
    assert (status, answer["code"]) == (400, 1401) and "server_error" in answer["message"]


async def test_fault_rates_are_reproducible_for_a_seed(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    spec = MODELS[2]
    runs = []
    for _ in range(2):
        api = Api(session, await start_sim(fault_rates={Fault.UNAVAILABLE: 0.5}, rng_seed=7))
        runs.append([(await api.submit(spec.path, body_for(spec)))[0] for _ in range(12)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 503}


# --- Limits ---------------------------------------------------------------------------------------


async def test_two_tasks_run_per_key_and_the_third_waits(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim(latency_s=30.0, max_waiting_per_key=1))
    spec = MODELS[2]
    ids = [(await api.created(spec.path, body_for(spec)))["id"] for _ in range(3)]
    for prediction_id in ids[:2]:
        await api.wait(prediction_id, frozenset({"processing"}))
    assert (await api.result(ids[2]))[1]["data"]["status"] == "created"
    # The waiting list is full for this key...
    status, answer, headers = await api.submit_raw(spec.path, body_for(spec))
    assert (status, answer["code"]) == (429, 429) and int(headers["Retry-After"]) >= 1
    # ...but another key has its own slots.
    other = Api(session, api.sim, key="another-key")
    other_id = (await other.created(spec.path, body_for(spec)))["id"]
    await other.wait(other_id, frozenset({"processing"}))


async def test_waiting_tasks_start_in_submit_order(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim(latency_s=0.05, max_concurrent_per_key=1))
    spec = MODELS[2]
    ids = [(await api.created(spec.path, body_for(spec)))["id"] for _ in range(3)]
    for prediction_id in ids:
        await api.wait(prediction_id)
    # One slot: each task starts when the previous one ends, so they finish in submit order.
    assert [entry.id for entry in api.sim.billed] == ids


async def test_images_per_minute_limit_answers_429_with_retry_after(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    api = Api(session, await start_sim(clock=clock, images_per_minute_per_key=3))
    path = "flux-kontext-max/text-to-image"
    assert (await api.submit(path, {"prompt": "x", "num_images": 2}))[0] == 200
    clock.now += 20
    assert (await api.submit(path, {"prompt": "x"}))[0] == 200
    clock.now += 10

    status, answer, headers = await api.submit_raw(path, {"prompt": "x"})
    assert (status, answer["code"]) == (429, 429)
    # The first two images leave the window 60 s after they were counted: 30 s from now.
    assert headers["Retry-After"] == "30"
    assert len(api.sim.predictions) == 2
    assert (await Api(session, api.sim, key="other").submit(path, {"prompt": "x"}))[0] == 200
    clock.now += 30
    assert (await api.submit(path, {"prompt": "x"}))[0] == 200


# --- Webhooks -------------------------------------------------------------------------------------


class Receiver:
    """A webhook endpoint that answers the statuses it is given, in turn, then 200."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.deliveries.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


async def test_a_signed_webhook_is_delivered_and_retried_after_a_500(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    api = Api(session, await start_sim(clock=clock))
    receiver = Receiver(500)
    async with serve(receiver.app) as base:
        image = data_uri(image_bytes())
        data = await api.created(
            "flux-kontext-pro",
            {"prompt": "x", "image": image, "seed": 5},
            params={"webhook": f"{base}/hook"},
        )
        await until(lambda: len(receiver.deliveries) == 2)

    secret = (await api.call("GET", "/api/v3/webhook/secret"))[1]["data"]["secret"]
    assert secret == api.sim.config.webhook_secret and secret.startswith("whsec_")
    (first_headers, _), (headers, body) = receiver.deliveries
    assert first_headers["webhook-id"] == headers["webhook-id"]
    prediction = verify(secret, headers, body, now=clock())
    assert prediction.id == data["id"] and prediction.status == "completed"
    assert prediction.input is not None and prediction.input["seed"] == 5
    assert not prediction.input["image"].startswith("data:image/png;base64,iVBOR")
    assert len(body) < 2000  # the data URI is not echoed back
    outcomes = [(d.attempt, d.outcome) for d in api.sim.webhook_deliveries]
    assert outcomes == [(1, 500), (2, 200)]


async def test_webhook_duplicate_fault_delivers_the_same_id_twice(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim())
    receiver = Receiver()
    async with serve(receiver.app) as base:
        api.sim.inject(Fault.WEBHOOK_DUPLICATE)
        await api.created(
            "flux-kontext-pro/text-to-image", {"prompt": "x"}, params={"webhook": f"{base}/hook"}
        )
        await until(lambda: len(receiver.deliveries) == 2)
    ids = {headers["webhook-id"] for headers, _ in receiver.deliveries}
    assert len(ids) == 1


async def test_failed_tasks_are_delivered_and_retries_give_up(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim(webhook_retries=2))
    receiver = Receiver(500, 502, 503)
    async with serve(receiver.app) as base:
        await api.created(
            "flux-kontext-pro/text-to-image",
            {"prompt": "[moderate] x"},
            params={"webhook": f"{base}/hook"},
        )
        await until(lambda: len(api.sim.webhook_deliveries) == 3)
    assert [d.outcome for d in api.sim.webhook_deliveries] == [500, 502, 503]
    assert json.loads(receiver.deliveries[-1][1])["code"] == 1200


async def test_an_unreachable_webhook_records_the_exception(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim(webhook_retries=0))
    async with serve(web.Application()) as base:
        closed = base  # a port that will be closed by the time the webhook is sent
    await api.created(
        "flux-kontext-pro/text-to-image", {"prompt": "x"}, params={"webhook": f"{closed}/hook"}
    )
    await until(lambda: len(api.sim.webhook_deliveries) == 1)
    assert api.sim.webhook_deliveries[0].outcome == "ClientConnectorError"


# --- Billing and account reads --------------------------------------------------------------------


async def test_completed_predictions_are_billed_and_an_empty_balance_answers_402(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim(balance=Decimal("0.10"), latency_s=0.1))
    edit = body_for(MODELS[0])
    first = await api.created("flux-kontext-pro", edit)
    second = await api.created("flux-kontext-pro", edit)
    # 0.08 is reserved by the two running tasks: 0.02 is left.
    status, answer = await api.submit("flux-kontext-pro", edit)
    assert (status, answer["code"]) == (402, 402)
    assert answer["message"].startswith("Insufficient balance")
    await api.wait(first["id"])
    await api.wait(second["id"])
    # The two ran side by side, so either may have finished (and been charged) first.
    assert sorted((e.id, e.model, e.cost) for e in api.sim.billed) == sorted(
        [
            (first["id"], "wavespeed-ai/flux-kontext-pro", Decimal("0.04")),
            (second["id"], "wavespeed-ai/flux-kontext-pro", Decimal("0.04")),
        ]
    )
    assert api.sim.predictions[first["id"]].billed_cost == Decimal("0.04")
    assert (await api.call("GET", "/api/v3/balance"))[1]["data"]["balance"] == pytest.approx(0.02)
    # A failed task is not charged, and its reservation is given back.
    failed = await api.created(
        "flux-kontext-dev-ultra-fast", {"prompt": "[moderate]", "num_images": 1}
    )
    assert (await api.wait(failed["id"]))["status"] == "failed"
    assert len(api.sim.billed) == 2 and api.sim.billed_total == Decimal("0.08")


async def test_the_balance_goes_down_by_exactly_what_is_billed(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim(balance=Decimal("100.00")))
    for path in ("/api/v3/balance", "/api/v3/account/balance"):
        status, answer = await api.call("GET", path)
        assert (status, answer["code"], answer["message"]) == (200, 200, "success")
        assert answer["data"] == {"balance": 100.0}
    done = await api.wait(
        (await api.created("flux-kontext-dev", {"prompt": "x", "num_images": 3}))["id"]
    )
    assert [(e.id, e.cost) for e in api.sim.billed] == [(done["id"], Decimal("0.075"))]
    assert api.sim.balance == Decimal("99.925")
    assert (await api.call("GET", "/api/v3/account/balance"))[1]["data"]["balance"] == 99.925


async def test_a_submit_the_balance_cannot_cover_is_refused_and_nothing_is_made(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim(balance=Decimal("100.00")))
    # Set from the test side, as a top-up (or a spent account) would change it.
    async with session.post(f"{api.base}/_simulator/balance", json={"balance": "0.07"}) as reply:
        assert reply.status == 200 and (await reply.json())["data"] == {"balance": 0.07}
    status, answer = await api.submit("flux-kontext-max", body_for(MODELS[0]))
    assert (status, answer["code"], answer["data"]) == (402, 402, None)
    assert answer["message"].startswith("Insufficient balance")
    assert api.sim.predictions == {} and api.sim.billed == []
    assert api.sim.balance == Decimal("0.07")
    # What is left still covers a cheaper job, which then leaves exactly the difference.
    done = await api.wait((await api.created("flux-kontext-pro", body_for(MODELS[0])))["id"])
    assert done["status"] == "completed" and api.sim.balance == Decimal("0.03")
    api.sim.set_balance(None)
    assert (await api.submit("flux-kontext-max", body_for(MODELS[0])))[0] == 200


async def test_setting_the_balance_takes_an_amount_or_null_only(api: Api) -> None:
    assert api.sim.base_url is not None
    for bad in ({}, {"balance": True}, {"balance": "lots"}, {"balance": -1}, {"balance": "NaN"}):
        async with api.session.post(f"{api.base}/_simulator/balance", json=bad) as reply:
            answer = await reply.json()
        assert (reply.status, answer["code"]) == (400, 1401), bad
    with pytest.raises(ValueError, match="non-negative"):
        api.sim.set_balance(Decimal("-0.01"))
    with pytest.raises(ValueError, match="non-negative"):
        SimulatorConfig(balance=Decimal(-1))


async def test_exactly_one_prediction_billed_per_completed_job(api: Api) -> None:
    done = await api.wait(
        (await api.created("flux-kontext-dev", {"prompt": "x", "num_images": 3}))["id"]
    )
    assert [(e.id, e.cost) for e in api.sim.billed] == [(done["id"], Decimal("0.075"))]


async def test_models_balance_and_state_reads(api: Api, session: aiohttp.ClientSession) -> None:
    status, answer = await api.call("GET", "/api/v3/models")
    assert status == 200
    models = {entry["model_id"]: entry for entry in answer["data"]}
    assert set(models) == {spec.model_id for spec in MODELS}
    assert models["wavespeed-ai/flux-kontext-dev"] == {
        "model_id": "wavespeed-ai/flux-kontext-dev",
        "name": "Kontext Dev",
        "type": "edit",
        "price": 0.025,
    }
    assert isinstance((await api.call("GET", "/api/v3/balance"))[1]["data"]["balance"], float)

    spec = MODELS[2]
    await api.wait((await api.created(spec.path, body_for(spec)))["id"])
    async with session.get(f"{api.base}/_simulator/state") as response:
        state = (await response.json())["data"]
    assert state["predictions"]["by_status"] == {"completed": 1}
    assert state["billed"] == {"count": 1, "total": 0.04}
    assert state["requests"]["submit"] == 1 and state["requests"]["result"] >= 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"fault_rates": {Fault.DROP: 1.5}},
        {"latency_s": -1},
        {"webhook_secret": "plain"},
        {"max_concurrent_per_key": 0},
    ],
)
def test_the_config_refuses_nonsense(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimulatorConfig(**overrides)


def test_the_config_keeps_a_read_only_copy_of_the_fault_rates() -> None:
    rates = {Fault.DROP: 0.5}
    config = SimulatorConfig(fault_rates=rates)
    rates[Fault.STUCK] = 1.0
    assert dict(config.fault_rates) == {Fault.DROP: 0.5}
    assert SimulatorConfig().webhook_secret.startswith("whsec_")


def test_the_command_line_builds_a_config() -> None:
    args = build_parser().parse_args(
        [
            "--port",
            "0",
            "--latency",
            "0.5",
            "--api-key",
            "a",
            "--api-key",
            "b",
            "--fault-rate",
            "drop=0.1",
            "--fault-rate",
            "STUCK=0.2",
            "--images-per-minute",
            "10",
            "--max-output-side",
            "256",
            "--sync-wait",
            "3",
        ]
    )
    config = config_from_args(args)
    assert config.api_keys == frozenset({"a", "b"})
    assert dict(config.fault_rates) == {Fault.DROP: 0.1, Fault.STUCK: 0.2}
    assert (config.latency_s, config.sync_wait_s, config.max_output_side) == (0.5, 3.0, 256)
    assert config.images_per_minute_per_key == 10
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--fault-rate", "gremlins=0.5"])


# --- Prediction history ---------------------------------------------------------------------------


HISTORY_ITEM_KEYS = {"id", "model", "status", "outputs", "input", "created_at", "executionTime"}
WHOLE_DAY = {"created_after": "2025-06-01T00:00:00Z", "created_before": "2025-06-30T00:00:00Z"}


async def history(api: Api, **query: Any) -> tuple[int, dict[str, Any]]:
    return await api.call("POST", "/api/v3/predictions", json={**WHOLE_DAY, **query})


async def test_history_lists_own_predictions_newest_first_with_the_exact_input(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock(1_750_000_000.0)  # 2025-06-15
    api = Api(session, await start_sim(clock=clock))
    spec = MODELS[0]
    bodies = [body_for(spec, f"edit {n}", seed=n) for n in range(3)]
    ids = []
    for body in bodies:
        ids.append((await api.created(spec.path, body))["id"])
        clock.now += 60
    await api.wait(ids[-1])
    await Api(session, api.sim, key="someone-else").created(spec.path, body_for(spec))

    status, answer = await history(api, page=1, page_size=10)

    assert status == 200 and answer["code"] == 200 and answer["message"] == "success"
    data = answer["data"]
    assert (data["page"], data["page_size"], data["total"]) == (1, 10, 3)
    assert [item["id"] for item in data["items"]] == ids[::-1]
    newest = data["items"][0]
    assert HISTORY_ITEM_KEYS | {"error"} == set(newest)
    # Exactly the body sent, data URI and all, so a client can recognise its own job.
    assert newest["input"] == bodies[2] and newest["input"]["image"].startswith("data:image/png")
    assert newest["model"] == f"wavespeed-ai/{spec.path}"
    assert newest["status"] == "completed" and len(newest["outputs"]) == 1
    assert isinstance(newest["executionTime"], int) and newest["error"] == ""
    assert newest["created_at"] == "2025-06-15T15:08:40.000Z"


async def test_history_filters_by_window_model_and_status(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock(1_750_000_000.0)
    api = Api(session, await start_sim(clock=clock))
    dev, pro = MODELS[0], MODELS[2]
    early = await api.wait((await api.created(dev.path, body_for(dev)))["id"])
    clock.now += 3600
    stuck = await api.created(dev.path, body_for(dev, "[stuck] hold"))
    done = await api.wait((await api.created(pro.path, body_for(pro)))["id"])

    def ids(answer: dict[str, Any]) -> list[str]:
        return [item["id"] for item in answer["data"]["items"]]

    later = {"created_after": "2025-06-15T15:30:00Z", "created_before": "2025-06-15T18:00:00"}
    assert ids((await history(api, **later))[1]) == [done["id"], stuck["id"]]
    assert ids((await history(api, model=f"wavespeed-ai/{dev.path}"))[1]) == [
        stuck["id"],
        early["id"],
    ]
    assert ids((await history(api, status="processing"))[1]) == [stuck["id"]]
    assert ids((await history(api, status="completed", model=pro.model_id))[1]) == [done["id"]]
    # The window's ends count as inside it.
    exact = early["created_at"]
    assert ids((await history(api, created_after=exact, created_before=exact))[1]) == [early["id"]]


async def test_history_pages_and_caps_the_page_size(api: Api) -> None:
    spec = MODELS[2]
    for n in range(5):
        await api.created(spec.path, body_for(spec, f"poster {n}"))
    after, before = "2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z"
    pages = []
    for page in (1, 2, 3, 4):
        status, answer = await history(
            api, page=page, page_size=2, created_after=after, created_before=before
        )
        assert status == 200 and answer["data"]["total"] == 5
        pages.append([item["input"]["prompt"] for item in answer["data"]["items"]])
    assert pages == [["poster 4", "poster 3"], ["poster 2", "poster 1"], ["poster 0"], []]
    _, answer = await history(api, page_size=5000, created_after=after, created_before=before)
    assert answer["data"]["page_size"] == 100 and len(answer["data"]["items"]) == 5


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"created_before": "2025-06-30T00:00:00Z"}, 1400),
        ({**WHOLE_DAY, "created_after": "last tuesday"}, 1401),
        ({**WHOLE_DAY, "created_after": 1750000000}, 1401),
        ({**WHOLE_DAY, "page": 0}, 1401),
        ({**WHOLE_DAY, "page_size": "ten"}, 1401),
        ({**WHOLE_DAY, "status": "finished"}, 1401),
        ({**WHOLE_DAY, "model": ["wavespeed-ai/flux-kontext-pro"]}, 1401),
        ({**WHOLE_DAY, "created_after": "2025-07-01T00:00:00Z"}, 1401),
        ([WHOLE_DAY], 1401),
    ],
)
async def test_history_refuses_bad_queries_in_the_envelope(api: Api, body: Any, code: int) -> None:
    status, answer = await api.call("POST", "/api/v3/predictions", json=body)
    assert status == 400
    assert answer["code"] == code and answer["message"] and answer["data"] is None


async def test_stored_inputs_keep_whole_only_the_newest_data_uris_beyond_a_budget(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    body = body_for(MODELS[0], seed=5)
    api = Api(session, await start_sim(max_stored_input_bytes=len(body["image"]) * 3 // 2))
    old = await api.created(MODELS[0].path, body)
    new = await api.created(MODELS[0].path, body)

    _, answer = await history(api, created_before="2999-01-01T00:00:00Z")
    inputs = {item["id"]: item["input"] for item in answer["data"]["items"]}
    assert inputs[new["id"]] == body
    assert inputs[old["id"]]["image"].startswith("<data:image/png;base64 omitted")
    assert inputs[old["id"]]["prompt"] == body["prompt"]
    # Still recognisably the same job twice.
    _, state = await api.call("GET", "/_simulator/state")
    assert state["data"]["predictions"]["duplicates"][0]["count"] == 2


async def test_history_needs_a_key_and_forgets_expired_predictions(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock(1_750_000_000.0)
    api = Api(session, await start_sim(clock=clock, api_keys=frozenset({KEY})))
    spec = MODELS[2]
    await api.created(spec.path, body_for(spec))
    assert (await history(Api(session, api.sim, key="wrong")))[0] == 401
    assert (await history(api))[1]["data"]["total"] == 1
    clock.now += 7 * 24 * 3600 + 1
    status, answer = await history(api, created_before="2030-01-01T00:00:00Z")
    assert status == 200 and answer["data"]["total"] == 0 and api.sim.predictions == {}


async def test_history_is_subject_to_the_gateway_faults(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim())
    api.sim.inject(Fault.SERVER_ERROR, route="history")
    assert (await history(api)) == (
        500,
        {"code": 5000, "message": "Internal server error (simulated).", "data": None},
    )
    assert (await history(api))[0] == 200
    status, answer = await api.call(
        "POST", "/api/v3/predictions", json=WHOLE_DAY, headers={"X-Simulator-Fault": "rate_limit"}
    )
    assert (status, answer["code"]) == (429, 429)
    assert api.sim.request_counts["history"] == 3
    # A rate scoped to the history leaves the other routes alone.
    scoped = Api(session, await start_sim(route_fault_rates={(Fault.UNAVAILABLE, "history"): 1.0}))
    spec = MODELS[2]
    await scoped.wait((await scoped.created(spec.path, body_for(spec)))["id"])
    assert (await history(scoped))[0] == 503


# --- Faults for end-to-end suites -----------------------------------------------------------------


async def test_a_truncated_download_is_a_complete_transfer_of_half_a_file(api: Api) -> None:
    spec = MODELS[2]
    done = await api.wait((await api.created(spec.path, body_for(spec)))["id"])
    api.sim.inject(Fault.TRUNCATED, route="download")
    async with api.session.get(done["outputs"][0]) as response:
        assert response.status == 200
        cut = await response.read()
        assert response.content_length == len(cut)
    _, whole = await api.download(done["outputs"][0])
    assert 0 < len(cut) < len(whole) and whole.startswith(cut)
    with pytest.raises(OSError):
        opened(cut)
    assert opened(whole).size[0] > 0
    with pytest.raises(ValueError, match="only applies"):
        api.sim.inject(Fault.TRUNCATED, route="result")


def test_route_scoped_rates_are_checked_and_replace_the_unscoped_rate() -> None:
    with pytest.raises(ValueError, match="only applies"):
        SimulatorConfig(route_fault_rates={(Fault.TRUNCATED, "submit"): 0.5})
    with pytest.raises(ValueError, match="between 0 and 1"):
        SimulatorConfig(route_fault_rates={(Fault.DROP, "result"): 2.0})
    from services.simulator.faults import FaultPlan

    plan = FaultPlan({Fault.SERVER_ERROR: 1.0}, 0, {(Fault.SERVER_ERROR, "result"): 0.0})
    assert [plan.choose(route, None) for route in ("submit", "result", "download")] == [
        Fault.SERVER_ERROR,
        None,
        Fault.SERVER_ERROR,
    ]


async def test_an_outage_answers_503_everywhere_but_the_controls(api: Api) -> None:
    spec = MODELS[2]
    done = await api.wait((await api.created(spec.path, body_for(spec)))["id"])
    status, answer = await api.call("POST", "/_simulator/outage", json={"seconds": 600})
    assert status == 200 and answer["data"]["outage"]["active"] is True

    assert (await api.submit(spec.path, body_for(spec)))[1]["code"] == 5003
    assert (await api.result(done["id"]))[0] == 503
    assert (await history(api))[0] == 503
    async with api.session.get(done["outputs"][0]) as response:
        assert response.status == 503
    assert len(api.sim.predictions) == 1  # nothing was done
    _, state = await api.call("GET", "/_simulator/state")
    assert state["data"]["outage"]["active"] is True

    assert (await api.call("POST", "/_simulator/outage", json={"seconds": -1}))[0] == 400
    assert (await api.call("POST", "/_simulator/outage", json={"seconds": "x"}))[0] == 400
    await api.call("POST", "/_simulator/outage", json={"seconds": 0})
    assert (await api.submit(spec.path, body_for(spec)))[0] == 200


async def test_an_outage_can_be_scheduled_at_start(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    api = Api(session, await start_sim(outage_at_s=0.0, outage_for_s=600.0))
    await until(lambda: api.sim.outage_remaining_s > 0)
    spec = MODELS[2]
    assert (await api.submit(spec.path, body_for(spec)))[0] == 503


async def test_a_held_submit_answer_comes_after_the_job_exists(api: Api) -> None:
    spec = MODELS[2]
    submit = asyncio.ensure_future(
        api.submit(spec.path, body_for(spec), headers={"X-Simulator-Answer-Delay": "600"})
    )
    try:
        await until(lambda: len(api.sim.predictions) == 1)
        (record,) = api.sim.predictions.values()
        await until(lambda: record.status == "completed")
        assert not submit.done()
    finally:
        submit.cancel()  # the client "dies" with its submit in flight
        with contextlib.suppress(asyncio.CancelledError):
            await submit
    status, answer = await api.submit(
        spec.path, body_for(spec), headers={"X-Simulator-Answer-Delay": "soon"}
    )
    assert (status, answer["code"]) == (400, 1401) and len(api.sim.predictions) == 1
    # A zero delay answers at once.
    assert (await api.submit(spec.path, body_for(spec), headers={"X-Simulator-Answer-Delay": "0"}))[
        0
    ] == 200


async def test_a_stuck_prompt_sticks_only_its_own_job(api: Api) -> None:
    spec = MODELS[2]
    stuck = await api.created(spec.path, body_for(spec, "a boat [STUCK]"))
    other = await api.wait((await api.created(spec.path, body_for(spec, "a boat")))["id"])
    assert other["status"] == "completed"
    await api.wait(stuck["id"], frozenset({"processing"}))
    assert api.sim.predictions[stuck["id"]].fault is None


async def test_the_state_lists_every_job_and_the_ones_submitted_twice(api: Api) -> None:
    spec = MODELS[0]
    twice = body_for(spec, "add a hat", seed=42)
    first = await api.wait((await api.created(spec.path, twice))["id"])
    # The same job again (sync flag or not), then the same prompt with another seed.
    again = await api.created(spec.path, {**twice, "enable_sync_mode": True})
    other = await api.created(spec.path, {**twice, "seed": 43})

    _, answer = await api.call("GET", "/_simulator/state")
    predictions = answer["data"]["predictions"]
    assert predictions["created_total"] == 3
    items = predictions["items"]
    assert [item["id"] for item in items] == [first["id"], again["id"], other["id"]]
    ended_at = items[0]["ended_at"]
    assert items[0] | {"fingerprint": "?"} == {
        "id": first["id"],
        "model": f"wavespeed-ai/{spec.path}",
        "prompt": "add a hat",
        "seed": 42,
        "status": "completed",
        "created_at": first["created_at"],
        "ended_at": ended_at,
        "billed": True,
        "fingerprint": "?",
    }
    # When it ended (outputs stored): after it was made, and only once it has ended.
    created = datetime.fromisoformat(first["created_at"].replace("Z", "+00:00")).timestamp()
    assert isinstance(ended_at, float) and ended_at >= created - 0.001
    (duplicate,) = predictions["duplicates"]
    assert duplicate["ids"] == [first["id"], again["id"]] and duplicate["count"] == 2
    assert (duplicate["prompt"], duplicate["seed"]) == ("add a hat", 42)


def test_the_command_line_takes_routed_rates_outages_and_held_answers() -> None:
    args = build_parser().parse_args(
        [
            "--fault-rate",
            "server_error@submit=0.2",
            "--fault-rate",
            "Truncated@Download=0.1",
            "--fault-rate",
            "drop=0.05",
            "--submit-answer-delay",
            "2.5",
            "--outage-at",
            "5",
            "--outage-for",
            "20",
        ]
    )
    config = config_from_args(args)
    assert dict(config.fault_rates) == {Fault.DROP: 0.05}
    assert dict(config.route_fault_rates) == {
        (Fault.SERVER_ERROR, "submit"): 0.2,
        (Fault.TRUNCATED, "download"): 0.1,
    }
    assert (config.submit_answer_delay_s, config.outage_at_s, config.outage_for_s) == (2.5, 5, 20)
    for bad in ("truncated@submit=0.1", "drop@balance=0.1", "drop@result=2"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--fault-rate", bad])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--submit-answer-delay", "-1"])


async def test_the_simulator_runs_as_its_own_process(session: aiohttp.ClientSession) -> None:
    import re
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.simulator",
        "--port",
        "0",
        "--api-key",
        KEY,
        "--latency",
        "0",
        "--fault-rate",
        "server_error@history=1",
        "--submit-answer-delay",
        "0",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(30):  # a guard against hanging, not a measurement
            while not (found := re.search(rb"listening on (\S+)", await process.stderr.readline())):
                assert process.returncode is None
        base = found.group(1).decode()
        async with session.get(f"{base}/_simulator/state") as response:
            assert (await response.json())["data"]["outage"]["active"] is False
        for key, status in ((KEY, 500), ("not-the-key", 500)):
            # The routed fault answers before the key is looked at, as a gateway would.
            async with session.post(
                f"{base}/api/v3/predictions",
                json=WHOLE_DAY,
                headers={"Authorization": f"Bearer {key}"},
            ) as response:
                assert response.status == status
        async with session.get(
            f"{base}/api/v3/balance", headers={"Authorization": "Bearer not-the-key"}
        ) as response:
            assert response.status == 401
    finally:
        process.terminate()
        assert await process.wait() == 0
