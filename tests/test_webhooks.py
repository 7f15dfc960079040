"""Webhook signatures: good, bad, stale, duplicate."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.wavespeed import WebhookInbox, WebhookVerificationError
from services.wavespeed.webhooks import sign, verify

SECRET = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM"
NOW = 1_800_000_000


def delivery(
    prediction_id: str = "pred-1",
    status: str = "completed",
    *,
    at: int = NOW,
    webhook_id: str = "msg-1",
    secret: str = SECRET,
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(
        {
            "id": prediction_id,
            "model": "wavespeed-ai/flux-kontext-pro",
            "status": status,
            "outputs": ["https://example.invalid/out.jpeg"],
            "has_nsfw_contents": [False],
            "input": {"prompt": "hat", "seed": 42},
        }
    ).encode()
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(at),
        "webhook-signature": sign(secret, webhook_id, at, body),
    }
    return headers, body


def test_signature_is_hmac_sha256_over_id_timestamp_body_with_prefix_stripped() -> None:
    import hashlib
    import hmac

    expected = hmac.new(
        b"c2VjcmV0LWtleS1mb3ItdGVzdHM", b"msg-1.1800000000.{}", hashlib.sha256
    ).hexdigest()
    assert sign(SECRET, "msg-1", NOW, b"{}") == f"v3,{expected}"


def test_good_delivery_is_accepted() -> None:
    headers, body = delivery()
    prediction = verify(SECRET, headers, body, now=NOW + 10)
    assert prediction.id == "pred-1"
    assert prediction.input == {"prompt": "hat", "seed": 42}


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b.replace(b"hat", b"cat")),
        lambda h, b: ({**h, "webhook-id": "msg-2"}, b),
        lambda h, b: ({**h, "webhook-signature": "v3," + "0" * 64}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
    ],
    ids=["body", "id", "signature", "missing-header"],
)
def test_tampered_delivery_is_rejected(tamper) -> None:  # type: ignore[no-untyped-def]
    headers, body = tamper(*delivery())
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers, body, now=NOW)


def test_wrong_secret_is_rejected() -> None:
    headers, body = delivery(secret="whsec_another")
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers, body, now=NOW)


@pytest.mark.parametrize("skew", [301, -301, 3600])
def test_stale_or_future_timestamps_are_rejected(skew: int) -> None:
    headers, body = delivery()
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers, body, now=NOW + skew)


def test_any_of_several_signatures_may_match() -> None:
    headers, body = delivery()
    headers["webhook-signature"] = "v3,deadbeef " + headers["webhook-signature"]
    assert verify(SECRET, headers, body, now=NOW).id == "pred-1"


async def test_inbox_wakes_the_waiter_and_takes_duplicates_in_its_stride() -> None:
    inbox = WebhookInbox(SECRET, clock=lambda: NOW)
    waiter = asyncio.create_task(inbox.wait("pred-1", timeout_s=5))
    await asyncio.sleep(0)

    headers, body = delivery()
    first = inbox.deliver(headers, body)
    repeat = inbox.deliver(headers, body)

    assert (await waiter).id == "pred-1"
    assert first.duplicate is False
    assert repeat.duplicate is True
    # A delivery that arrived before anyone waited is still there for a later waiter.
    assert (await inbox.wait("pred-1", timeout_s=0.01)).status == "completed"


async def test_inbox_ignores_non_terminal_updates_and_times_out() -> None:
    inbox = WebhookInbox(SECRET, clock=lambda: NOW)
    inbox.deliver(*delivery(status="processing", webhook_id="msg-9"))
    with pytest.raises(TimeoutError):
        await inbox.wait("pred-1", timeout_s=0.01)


def test_inbox_rejects_bad_signatures() -> None:
    inbox = WebhookInbox(SECRET, clock=lambda: NOW + 1000)
    with pytest.raises(WebhookVerificationError):
        inbox.deliver(*delivery())
