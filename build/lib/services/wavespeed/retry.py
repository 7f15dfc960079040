"""The one retry policy for WaveSpeed requests that are safe to repeat.

Exponential backoff with jitter, honouring the server's Retry-After. The submit POST never goes
through here once it may have reached the server: repeating it could bill twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    base_s: float = 0.5
    max_s: float = 8.0
    # A Retry-After longer than this is not waited out; the caller gets the error instead.
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt number `attempt + 1` (attempt counts from 0)."""
        if retry_after is not None:
            return retry_after
        ceiling = min(self.max_s, self.base_s * (2**attempt))
        # "Equal jitter": never less than half the backoff, so retries still spread out.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def should_retry(self, attempt: int, retry_after: float | None = None) -> bool:
        if attempt + 1 >= self.attempts:
            return False
        return retry_after is None or retry_after <= self.max_retry_after_s


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After in seconds, from either of its forms (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
