"""A circuit breaker for submissions: no new job is sent into a WaveSpeed outage.

After `threshold` refused submits in a row the breaker opens; the job service then holds its
queue and probes WaveSpeed with a free read until it answers, and closes the breaker again.
Jobs already running are not affected: their waits are patient on their own.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class CircuitBreaker:
    def __init__(self, threshold: int) -> None:
        self._threshold = threshold
        self._failures = 0

    @property
    def is_open(self) -> bool:
        return self._failures >= self._threshold

    def record_failure(self) -> bool:
        """Count a refused submit; True when this one opened the breaker."""
        self._failures += 1
        if self._failures == self._threshold:
            log.warning(
                "the image service refused %d submits in a row: holding the queue", self._failures
            )
            return True
        return False

    def record_success(self) -> None:
        if self.is_open:
            log.warning("the image service answers again: submitting queued jobs")
        self._failures = 0
