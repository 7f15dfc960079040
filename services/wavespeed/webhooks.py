"""WaveSpeed's signed webhook deliveries: signing, verifying, and an inbox that awaits them.

A delivery carries `webhook-id`, `webhook-timestamp` (unix seconds) and
`webhook-signature: v3,<hex>`, the hex being HMAC-SHA256 over `{id}.{timestamp}.{raw body}` keyed
with the account's webhook secret minus its `whsec_` prefix, used as-is (not base64-decoded).
WaveSpeed retries failed deliveries up to 3 times, so the inbox treats a repeat as harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from .errors import WebhookVerificationError
from .protocol import Prediction

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v3"
TOLERANCE_S = 300


def _key(secret: str) -> bytes:
    return secret.removeprefix(SECRET_PREFIX).encode()


def sign(secret: str, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """The `webhook-signature` header value for a delivery."""
    message = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION},{digest}"


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: float = TOLERANCE_S,
) -> Prediction:
    """The prediction a delivery reports, or WebhookVerificationError when it does not check out."""
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (webhook_id and timestamp and signatures):
        raise WebhookVerificationError(detail="missing webhook headers")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError(detail="timestamp is not a number") from None
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_s:
        # Too old is a replay; too far ahead is a forged or badly skewed clock.
        raise WebhookVerificationError(detail=f"timestamp outside {tolerance_s:.0f} s")
    expected = sign(secret, webhook_id, timestamp, body)
    # The header may list several space-separated signatures (during key rotation).
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures.split()):
        raise WebhookVerificationError(detail="signature mismatch")
    try:
        return Prediction.model_validate_json(body)
    except ValidationError:
        raise WebhookVerificationError(detail="body is not a prediction") from None


@dataclass(frozen=True, slots=True)
class Delivery:
    prediction: Prediction
    duplicate: bool
    # A job of this process was waiting for it and has it now.
    awaited: bool = False


class WebhookInbox:
    """Verified deliveries, kept by prediction id, for whoever awaits them.

    Deliveries that arrive before anyone waits (or after a restart) are remembered, up to
    `remember` of them, so `wait` returns at once for a job that has already ended.
    """

    def __init__(
        self,
        secret: str,
        *,
        tolerance_s: float = TOLERANCE_S,
        clock: Callable[[], float] = time.time,
        remember: int = 10_000,
        relay: Callable[[Prediction], Awaitable[None]] | None = None,
    ) -> None:
        self._secret = secret
        # Where an ended prediction nobody here awaits is passed on: to the process of a fleet
        # whose job awaits it (any process may receive any delivery).
        self.relay = relay
        self._tolerance_s = tolerance_s
        self._clock = clock
        self._remember = remember
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self._results: OrderedDict[str, Prediction] = OrderedDict()
        self._waiters: dict[str, asyncio.Future[Prediction]] = {}

    def deliver(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        prediction = verify(
            self._secret, headers, body, now=self._clock(), tolerance_s=self._tolerance_s
        )
        webhook_id = headers["webhook-id"]
        duplicate = webhook_id in self._seen_ids or prediction.id in self._results
        _remember(self._seen_ids, webhook_id, None, self._remember)
        if duplicate:
            log.debug("duplicate webhook delivery %s for %s ignored", webhook_id, prediction.id)
            return Delivery(prediction, duplicate=True)
        return Delivery(prediction, duplicate=False, awaited=self.accept(prediction))

    def accept(self, prediction: Prediction) -> bool:
        """Take an ended prediction (verified here, or by the process that relayed it); whether
        a job here was waiting for it."""
        if not prediction.status.terminal:
            return False
        _remember(self._results, prediction.id, prediction, self._remember)
        waiter = self._waiters.pop(prediction.id, None)
        if waiter is None or waiter.done():
            return False
        waiter.set_result(prediction)
        return True

    def awaits(self, prediction_id: str) -> bool:
        return prediction_id in self._waiters

    async def wait(self, prediction_id: str, timeout_s: float) -> Prediction:
        """The prediction's final state once delivered; TimeoutError after `timeout_s`."""
        if prediction_id in self._results:
            return self._results[prediction_id]
        waiter = self._waiters.get(prediction_id)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[prediction_id] = waiter
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        finally:
            if waiter.done():
                self._waiters.pop(prediction_id, None)

    async def handle(self, request: web.Request) -> web.Response:
        """aiohttp handler for the webhook URL: 2xx for good deliveries and repeats, 401 else."""
        body = await request.read()
        try:
            delivery = self.deliver(request.headers, body)
        except WebhookVerificationError as exc:
            log.warning("rejected a webhook delivery: %s", exc.detail)
            return web.Response(status=401, text="invalid signature")
        ended = delivery.prediction.status.terminal
        if self.relay is not None and ended and not (delivery.duplicate or delivery.awaited):
            # Answered only once passed on: a failure here makes WaveSpeed deliver again.
            await self.relay(delivery.prediction)
        return web.Response(status=200, text="duplicate" if delivery.duplicate else "ok")


def _remember(store: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > limit:
        store.popitem(last=False)
