"""Signed webhook deliveries with retries, as WaveSpeed sends them."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from services.wavespeed.webhooks import sign

from .state import WebhookDelivery

log = logging.getLogger(__name__)

ATTEMPT_TIMEOUT_S = 10.0


class WebhookSender:
    """POSTs a prediction to its webhook URL; retries failures with a doubling delay."""

    def __init__(
        self,
        *,
        secret: str,
        retries: int,
        retry_delay_s: float,
        clock: Callable[[], float],
        session: Callable[[], aiohttp.ClientSession],
        record: Callable[[WebhookDelivery], None],
    ) -> None:
        self._secret = secret
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._clock = clock
        self._session = session
        self._record = record

    async def deliver(self, url: str, payload: dict[str, Any], *, duplicate: bool = False) -> bool:
        """Deliver `payload` (twice when `duplicate`); True once a delivery was accepted."""
        body = json.dumps(payload).encode()
        # The id names the event, not the attempt: receivers de-duplicate on it.
        webhook_id = f"msg_{uuid.uuid4().hex}"
        delivered = await self._with_retries(url, webhook_id, body)
        if delivered and duplicate:
            log.info("delivering webhook %s a second time (injected fault)", webhook_id)
            await self._with_retries(url, webhook_id, body)
        return delivered

    async def _with_retries(self, url: str, webhook_id: str, body: bytes) -> bool:
        delay = self._retry_delay_s
        for attempt in range(1, self._retries + 2):
            outcome = await self._attempt(url, webhook_id, body)
            self._record(WebhookDelivery(url, webhook_id, attempt, outcome))
            if isinstance(outcome, int) and 200 <= outcome < 300:
                return True
            if attempt <= self._retries:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning(
            "webhook %s to %s failed after %d attempts",
            webhook_id,
            urlsplit(url).hostname,  # the full URL may carry a token: log the host only
            self._retries + 1,
        )
        return False

    async def _attempt(self, url: str, webhook_id: str, body: bytes) -> int | str:
        # Signed per attempt with a fresh timestamp, so a late retry is not rejected as stale.
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": sign(self._secret, webhook_id, timestamp, body),
        }
        try:
            timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)
            async with self._session().post(
                url, data=body, headers=headers, timeout=timeout
            ) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__
