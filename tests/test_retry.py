"""The retry policy's deadline-bounded mode (the attempt-bounded one is in test_settings.py)."""

from __future__ import annotations

from services.wavespeed.retry import RetryPolicy

POLICY = RetryPolicy(attempts=2, base_s=0.5, max_s=8.0, max_retry_after_s=60.0)
NOW = 1_800_000_000.0


def test_a_deadline_replaces_the_attempt_limit() -> None:
    until = NOW + 900
    assert not POLICY.should_retry(1)
    assert POLICY.should_retry(1, until=until, now=NOW)
    assert POLICY.should_retry(10_000, until=until, now=NOW)
    assert not POLICY.should_retry(0, until=until, now=until)
    assert not POLICY.should_retry(0, until=until, now=until + 1)


def test_a_long_retry_after_is_waited_out_within_a_deadline_but_not_past_it() -> None:
    assert not POLICY.should_retry(0, retry_after=120)
    assert POLICY.should_retry(0, retry_after=120, until=NOW + 900, now=NOW)
    assert POLICY.delay(0, retry_after=120, until=NOW + 900, now=NOW) == 120
    assert POLICY.delay(0, retry_after=120, until=NOW + 30, now=NOW) == 30
    assert POLICY.delay(3, until=NOW - 5, now=NOW) == 0


def test_backoff_stays_capped_and_jittered_however_many_attempts() -> None:
    delays = {POLICY.delay(attempt, until=NOW + 900, now=NOW) for attempt in (20, 5_000, 10**6)}
    assert all(4.0 <= delay <= 8.0 for delay in delays)


def test_a_zero_retry_after_still_backs_off() -> None:
    assert POLICY.delay(4, retry_after=0.0) >= 4.0
