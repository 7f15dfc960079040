"""The one retry policy for WaveSpeed requests that are safe to repeat.

Exponential backoff with jitter, honouring the server's Retry-After. The submit POST never goes
through here once it may have reached the server: repeating it could bill twice.

Two ways to bound the retries, one policy: a number of attempts (account reads, uploads, the
history), or a wall-clock deadline (`until`, epoch seconds) for waiting on a prediction that is
already paid for, where giving up early would lose the image, so only the deadline ends it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# 2**30 backoff steps is far beyond any cap; the bound keeps a long deadline from overflowing.
_MAX_EXPONENT = 30


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    base_s: float = 0.5
    max_s: float = 8.0
    # A Retry-After longer than this is not waited out; the caller gets the error instead.
    # Deadline-bounded retries wait out any Retry-After that ends before the deadline.
    max_retry_after_s: float = 60.0

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        *,
        until: float | None = None,
        now: float | None = None,
    ) -> float:
        """Seconds to wait before attempt number `attempt + 1` (attempt counts from 0).

        Never sooner than the server's Retry-After, and never sooner than the backoff either:
        a server answering `Retry-After: 0` in a loop must not be hammered. With `until`, the
        wait ends at the deadline at the latest.
        """
        ceiling = min(self.max_s, self.base_s * (2 ** min(attempt, _MAX_EXPONENT)))
        # "Equal jitter": never less than half the backoff, so retries still spread out.
        wait = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            wait = max(wait, retry_after)
        if until is not None:
            wait = min(wait, max(0.0, until - (time.time() if now is None else now)))
        return wait

    def should_retry(
        self,
        attempt: int,
        retry_after: float | None = None,
        *,
        until: float | None = None,
        now: float | None = None,
    ) -> bool:
        """Whether a failed attempt number `attempt` may be tried again.

        With `until` (wall-clock epoch seconds) only the deadline counts: attempts are not
        limited, and a long Retry-After is waited out as far as the deadline allows.
        """
        if until is not None:
            return (time.time() if now is None else now) < until
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
