"""The WaveSpeed client against the simulator, over real loopback sockets."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from services.simulator import Fault, SimulatorConfig, WaveSpeedSimulator
from services.wavespeed import (
    MODELS,
    AuthenticationError,
    InputImage,
    InsufficientCreditError,
    InvalidInputError,
    MediaUnreachableError,
    ModelKind,
    ModelSpec,
    ModeratedError,
    RateLimitedError,
    ServerError,
    SubmissionUnknownError,
    TaskFailedError,
    TimedOutError,
    WaveSpeedClient,
    WebhookInbox,
    model_for_path,
)
from services.wavespeed.protocol import Balance
from tests.conftest import API_KEY, fast_settings
from tests.images import decoded, make_png

RED = InputImage(make_png(colour=(220, 30, 30)))
BLUE = InputImage(make_png(colour=(30, 30, 220)))
GREEN = InputImage(make_png(colour=(30, 200, 30)))


def params_for(spec: ModelSpec, prompt: str = "make it a watercolor") -> dict[str, object]:
    if spec.kind == ModelKind.EDIT:
        return {"prompt": prompt, "image": RED}
    if spec.kind == ModelKind.MULTI:
        return {"prompt": prompt, "images": [RED, BLUE]}
    return {"prompt": prompt}


@pytest.mark.parametrize("spec", MODELS, ids=lambda spec: spec.path)
async def test_every_kontext_endpoint_returns_real_images(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator, spec: ModelSpec
) -> None:
    request = client.prepare(spec, **params_for(spec))
    result = await client.generate(spec, request)

    assert result.model is spec
    assert result.prediction_id in simulator.predictions
    assert len(result.images) == 1
    assert decoded(result.images[0].data).size[0] > 0
    assert result.images[0].nsfw is False
    assert result.seed == request.seed and result.seed is not None
    assert result.cost == spec.price
    assert result.simulated is True
    assert result.inference_ms is not None


async def test_sync_mode_costs_two_requests_per_job(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    spec = model_for_path("flux-kontext-pro/text-to-image")
    await client.generate(spec, client.prepare(spec, prompt="a lighthouse at dusk"), sync=True)

    assert simulator.request_counts["submit"] == 1
    assert simulator.request_counts["result"] == 0
    assert simulator.request_counts["download"] == 1


async def test_base64_output_needs_a_single_request(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    client = make_client(base64_output=True)
    spec = model_for_path("flux-kontext-dev")
    result = await client.generate(
        spec,
        client.prepare(spec, prompt="paint it", image=RED, num_images=2, output_format="png"),
        sync=True,
    )

    assert sum(simulator.request_counts.values()) == 1
    assert [image.content_type for image in result.images] == ["image/png", "image/png"]
    assert result.cost == Decimal("0.050")


async def test_model_without_sync_mode_is_polled(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    spec = model_for_path("flux-kontext-max")
    assert not spec.supports_sync
    result = await client.generate(
        spec, client.prepare(spec, prompt="add a hat", image=RED), sync=True
    )

    assert simulator.request_counts["submit"] == 1
    assert simulator.request_counts["result"] >= 1
    assert simulator.predictions[result.prediction_id].status == "completed"


async def test_sync_timeout_falls_back_to_polling_the_same_job(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    simulator.inject(Fault.SYNC_TIMEOUT)
    spec = model_for_path("flux-kontext-dev")
    result = await client.generate(spec, client.prepare(spec, prompt="add rain", image=RED))

    assert simulator.request_counts["submit"] == 1
    assert simulator.request_counts["result"] >= 1
    assert len(simulator.predictions) == 1
    assert result.prediction_id in simulator.predictions


@pytest.mark.parametrize("fault", [Fault.DROP, Fault.MALFORMED])
async def test_lost_submit_answer_is_never_resubmitted(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator, fault: Fault
) -> None:
    simulator.inject(fault)
    spec = model_for_path("flux-kontext-pro")

    with pytest.raises(SubmissionUnknownError) as caught:
        await client.generate(spec, client.prepare(spec, prompt="add a hat", image=RED))

    assert simulator.request_counts["submit"] == 1
    # The job was created at WaveSpeed: exactly the case a retry would have billed twice.
    assert len(simulator.predictions) == 1
    assert "not resubmitted" in caught.value.user_message


@pytest.mark.parametrize("fault", [Fault.SERVER_ERROR, Fault.UNAVAILABLE])
async def test_submit_refused_in_wavespeeds_envelope_is_sent_again(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator, fault: Fault
) -> None:
    # 500 code 5000 / 503 code 5003 in WaveSpeed's envelope: it did nothing, so no double bill.
    simulator.inject(fault)
    spec = model_for_path("flux-kontext-pro")
    result = await client.generate(spec, client.prepare(spec, prompt="add a hat", image=RED))

    assert simulator.request_counts["submit"] == 2
    assert list(simulator.predictions) == [result.prediction_id]


async def test_a_refusal_that_outlasts_the_retries_is_a_server_error(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    simulator.inject(Fault.UNAVAILABLE, times=5)
    client = make_client(retry_attempts=2)
    spec = model_for_path("flux-kontext-pro")

    with pytest.raises(ServerError):
        await client.submit(spec, client.prepare(spec, prompt="add a hat", image=RED))
    assert simulator.request_counts["submit"] == 2
    assert simulator.predictions == {}


async def test_submit_refused_with_429_is_retried_once_allowed(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    simulator.inject(Fault.RATE_LIMIT)
    spec = model_for_path("flux-kontext-pro")
    result = await client.generate(spec, client.prepare(spec, prompt="add a hat", image=RED))

    assert simulator.request_counts["submit"] == 2
    assert list(simulator.predictions) == [result.prediction_id]


async def test_rate_limit_that_outlasts_the_retries_is_typed(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    simulator.inject(Fault.RATE_LIMIT, times=5)
    client = make_client(retry_attempts=2)
    spec = model_for_path("flux-kontext-pro")

    with pytest.raises(RateLimitedError) as caught:
        await client.generate(spec, client.prepare(spec, prompt="add a hat", image=RED))
    assert caught.value.retry_after is not None
    assert simulator.predictions == {}


@pytest.mark.parametrize(
    "fault", [Fault.SERVER_ERROR, Fault.UNAVAILABLE, Fault.RATE_LIMIT, Fault.MALFORMED, Fault.DROP]
)
async def test_result_polls_retry_transient_failures(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator, fault: Fault
) -> None:
    simulator.inject(fault, route="result", times=2)
    spec = model_for_path("flux-kontext-pro")
    result = await client.generate(spec, client.prepare(spec, prompt="add a hat", image=RED))

    assert result.images
    assert simulator.request_counts["result"] >= 3
    assert len(simulator.predictions) == 1


async def test_output_download_retries(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    simulator.inject(Fault.SERVER_ERROR, route="download", times=2)
    spec = model_for_path("flux-kontext-dev")
    result = await client.generate(spec, client.prepare(spec, prompt="add a hat", image=RED))

    assert result.images
    assert simulator.request_counts["download"] == 3


async def test_bad_key_is_an_authentication_error_without_the_key(
    make_client: Callable[..., WaveSpeedClient],
    simulator: WaveSpeedSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pydantic import SecretStr

    client = make_client(api_key=SecretStr("wrong-secret-key"))
    spec = model_for_path("flux-kontext-pro")
    caplog.set_level(logging.DEBUG)

    with pytest.raises(AuthenticationError) as caught:
        await client.generate(spec, client.prepare(spec, prompt="add a hat", image=RED))

    assert "wrong-secret-key" not in str(caught.value)
    assert "wrong-secret-key" not in caught.value.user_message
    assert "wrong-secret-key" not in caplog.text
    assert simulator.predictions == {}


async def test_key_never_reaches_logs_of_a_full_job(
    client: WaveSpeedClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    spec = model_for_path("flux-kontext-pro")
    await client.generate(spec, client.prepare(spec, prompt="add a hat", image=RED))

    assert caplog.records
    assert API_KEY not in caplog.text


@pytest.mark.parametrize(
    ("fault", "error"),
    [(Fault.MODERATION, ModeratedError), (Fault.TASK_FAILED, TaskFailedError)],
)
async def test_failed_tasks_carry_their_prediction_id(
    client: WaveSpeedClient,
    simulator: WaveSpeedSimulator,
    fault: Fault,
    error: type[Exception],
) -> None:
    simulator.inject(fault)
    spec = model_for_path("flux-kontext-dev")

    with pytest.raises(error) as caught:
        await client.generate(spec, client.prepare(spec, prompt="add a hat", image=RED))
    assert caught.value.prediction_id in simulator.predictions  # type: ignore[attr-defined]


async def test_moderation_trigger_in_prompt(client: WaveSpeedClient) -> None:
    spec = model_for_path("flux-kontext-pro")
    with pytest.raises(ModeratedError) as caught:
        await client.generate(spec, client.prepare(spec, prompt="[moderate] x", image=RED))
    assert "content filter" in caught.value.user_message


async def test_stuck_task_times_out_with_its_id(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    simulator.inject(Fault.STUCK)
    spec = model_for_path("flux-kontext-pro")
    submission = await client.submit(spec, client.prepare(spec, prompt="add a hat", image=RED))

    with pytest.raises(TimedOutError) as caught:
        await client.wait_for(submission.prediction_id, deadline_at=time.time() + 0.3)
    assert caught.value.prediction_id == submission.prediction_id


async def test_invalid_options_are_refused_before_any_request(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    spec = model_for_path("flux-kontext-pro")
    with pytest.raises(InvalidInputError) as caught:
        client.prepare(spec, prompt="add a hat", image=RED, guidance_scale=12)

    assert caught.value.user_message == "guidance must be between 1 and 10 for Kontext Pro."
    assert sum(simulator.request_counts.values()) == 0


async def test_server_side_validation_error_is_typed(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    spec = model_for_path("flux-kontext-pro")
    # Bypasses local validation, as a request built by an older catalog would.
    request = spec.request.model_construct(prompt="hat", image=RED, guidance_scale=50.0)

    with pytest.raises(InvalidInputError) as caught:
        await client.submit(spec, request)
    assert "guidance" in caught.value.user_message
    assert simulator.predictions == {}


async def test_unreachable_media_url(client: WaveSpeedClient) -> None:
    spec = model_for_path("flux-kontext-pro")
    request = client.prepare(spec, prompt="hat", image="http://127.0.0.1:9/gone.png")
    with pytest.raises(MediaUnreachableError):
        await client.generate(spec, request)


async def test_discord_cdn_url_is_never_sent(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    spec = model_for_path("flux-kontext-pro")
    request = client.prepare(
        spec,
        prompt="hat",
        image="https://cdn.discordapp.com/attachments/1/2/cat.png?ex=1&is=2&hm=3",
    )
    with pytest.raises(InvalidInputError):
        await client.generate(spec, request)
    assert sum(simulator.request_counts.values()) == 0


@pytest.mark.parametrize("flow", ["binary", "ticket"])
async def test_large_images_are_uploaded(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator, flow: str
) -> None:
    client = make_client(inline_image_max_bytes=10, upload_flow=flow)
    spec = model_for_path("flux-kontext-pro/multi")
    request = client.prepare(spec, prompt="put them together", images=[RED, BLUE, GREEN])
    result = await client.generate(spec, request)

    assert result.images
    assert simulator.request_counts["upload"] == 3 * (1 if flow == "binary" else 2)
    sent = simulator.predictions[result.prediction_id].request["images"]
    assert all(ref.startswith(simulator.base_url) for ref in sent)


async def test_upload_falls_back_to_the_other_flow(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    client = make_client(inline_image_max_bytes=10, upload_flow="binary", retry_attempts=2)
    simulator.inject(Fault.SERVER_ERROR, route="upload", times=2)
    spec = model_for_path("flux-kontext-pro")

    result = await client.generate(spec, client.prepare(spec, prompt="hat", image=RED))
    assert result.images
    # Two failed binary uploads, then the ticket and its PUT.
    assert simulator.request_counts["upload"] == 4


async def test_nsfw_flag_per_output(client: WaveSpeedClient) -> None:
    spec = model_for_path("flux-kontext-max/text-to-image")
    result = await client.generate(
        spec, client.prepare(spec, prompt="an NSFW poster", num_images=2)
    )
    assert [image.nsfw for image in result.images] == [True, True]
    assert result.cost == Decimal("0.16")


async def test_same_seed_same_image_new_seed_new_image(client: WaveSpeedClient) -> None:
    spec = model_for_path("flux-kontext-pro")
    first = await client.generate(spec, client.prepare(spec, prompt="hat", image=RED, seed=7))
    again = await client.generate(spec, client.prepare(spec, prompt="hat", image=RED, seed=7))
    other = await client.generate(spec, client.prepare(spec, prompt="hat", image=RED, seed=8))

    assert first.images[0].data == again.images[0].data
    assert first.images[0].data != other.images[0].data


async def test_resume_after_restart_finishes_without_resubmitting(
    make_client: Callable[..., WaveSpeedClient], simulator: WaveSpeedSimulator
) -> None:
    spec = model_for_path("flux-kontext-dev")
    first_process = make_client()
    submission = await first_process.submit(
        spec, first_process.prepare(spec, prompt="hat", image=RED), sync=False
    )

    second_process = make_client()
    result = await second_process.resume(spec, submission.prediction_id, seed=7)

    assert result.prediction_id == submission.prediction_id
    assert simulator.request_counts["submit"] == 1
    assert len(simulator.billed) == 1


@pytest.mark.parametrize(
    "simulator_config",
    [SimulatorConfig(api_keys=frozenset({API_KEY}), latency_s=0, balance=Decimal("100.00"))],
)
async def test_the_balance_goes_down_by_exactly_the_price_of_a_job(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    assert await client.balance() == Decimal("100.00")
    spec = model_for_path("flux-kontext-dev")
    result = await client.generate(
        spec, client.prepare(spec, prompt="add rain", image=RED, num_images=3)
    )

    assert result.cost == Decimal("0.075")
    assert [entry.cost for entry in simulator.billed] == [Decimal("0.075")]
    assert await client.balance() == Decimal("99.925")
    # Reading the balance is free and made nothing.
    assert len(simulator.predictions) == 1


@pytest.mark.parametrize(
    "simulator_config",
    [SimulatorConfig(api_keys=frozenset({API_KEY}), latency_s=0, balance=Decimal("0.05"))],
)
async def test_out_of_credit(client: WaveSpeedClient, simulator: WaveSpeedSimulator) -> None:
    spec = model_for_path("flux-kontext-max")
    assert await client.balance() == Decimal("0.05")
    with pytest.raises(InsufficientCreditError) as caught:
        await client.generate(spec, client.prepare(spec, prompt="hat", image=RED))
    error = caught.value
    assert error.own_words and error.prediction_id is None
    assert "WaveSpeed account is out of credit" in error.user_message
    assert "server owner needs to top it up" in error.user_message
    # WaveSpeed's own words are kept for the logs, not shown to the member.
    assert error.detail is not None and error.detail.startswith("Insufficient balance")
    # Refused outright: sent once, nothing made, nothing billed, the balance untouched.
    assert simulator.request_counts["submit"] == 1
    assert simulator.predictions == {} and simulator.billed == []
    assert await client.balance() == Decimal("0.05")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"balance": 12.5}, Decimal("12.5")),
        ({"balance": 0.1}, Decimal("0.1")),  # exactly, not the float's binary fraction
        ({"balance": "7.25"}, Decimal("7.25")),
        ({"balance": 3, "currency": "USD"}, Decimal(3)),
    ],
)
def test_a_balance_is_read_from_a_number_or_a_string(data: object, expected: Decimal) -> None:
    assert Balance.model_validate(data).balance == expected


@pytest.mark.parametrize(
    "data", [{}, {"balance": None}, {"balance": True}, {"balance": "lots"}, {"balance": "NaN"}]
)
def test_a_balance_that_is_no_amount_is_refused(data: object) -> None:
    with pytest.raises(ValidationError):
        Balance.model_validate(data)


async def test_an_unreadable_balance_is_a_server_error_not_zero(
    http_session: aiohttp.ClientSession,
) -> None:
    reads = 0

    async def balance(_request: web.Request) -> web.Response:
        nonlocal reads
        reads += 1
        return web.json_response({"code": 200, "message": "success", "data": {"credit": 5}})

    app = web.Application()
    app.router.add_get("/api/v3/balance", balance)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        client = WaveSpeedClient(http_session, fast_settings(url))
        with pytest.raises(ServerError):
            await client.balance()
    finally:
        await runner.cleanup()
    # A malformed answer to a read is retried under the one retry policy before giving up.
    assert reads > 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


CLOCK = FakeClock()


@pytest.mark.parametrize(
    "simulator_config",
    [SimulatorConfig(api_keys=frozenset({API_KEY}), latency_s=0, clock=CLOCK)],
)
async def test_results_expire_after_seven_days(client: WaveSpeedClient) -> None:
    spec = model_for_path("flux-kontext-pro")
    result = await client.generate(spec, client.prepare(spec, prompt="hat", image=RED))

    CLOCK.now += 7 * 24 * 3600 + 1
    with pytest.raises(TaskFailedError) as caught:
        await client.resume(spec, result.prediction_id)
    assert caught.value.status == "deleted"
    assert "7 days" in caught.value.user_message


async def test_webhook_mode_delivers_a_verified_result(
    client: WaveSpeedClient, simulator: WaveSpeedSimulator
) -> None:
    inbox = WebhookInbox(await client.webhook_secret())
    app = web.Application()
    app.router.add_post("/hooks/wavespeed", inbox.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        simulator.inject(Fault.WEBHOOK_DUPLICATE)
        spec = model_for_path("flux-kontext-dev")
        request = client.prepare(spec, prompt="add snow", image=RED)
        submission = await client.submit(
            spec, request, webhook_url=f"http://127.0.0.1:{port}/hooks/wavespeed"
        )
        prediction = await inbox.wait(submission.prediction_id, timeout_s=5)
        result = await client.collect(spec, prediction, seed=request.seed)
    finally:
        await runner.cleanup()

    assert result.images
    assert simulator.request_counts["result"] == 0
    statuses = [delivery for delivery in simulator.webhook_deliveries]
    assert len(statuses) == 2  # delivered twice: the inbox took the repeat in its stride
