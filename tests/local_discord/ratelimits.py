"""Rate limits a test can switch on: per route bucket, global, or "the next N requests".

Answers are what discord.py needs to honour them: status 429, a JSON body with `retry_after`
and `global`, a `Via` header (without it discord.py assumes a Cloudflare ban and gives up) and
the X-RateLimit-* headers. A client that comes back before `retry_after` has passed is recorded
as a violation: that is the whole point of the header.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass, field

from .rules import Violation, ViolationLog

log = logging.getLogger(__name__)

# asyncio may wake a sleeper a hair early and loopback adds no latency to make up for it.
EARLY_TOLERANCE_S = 0.01
# Routes the global limit does not cover (Discord exempts interaction endpoints).
GLOBAL_EXEMPT_PREFIXES = (
    "POST /interactions/",
    "POST /webhooks/",
    "GET /webhooks/",
    "PATCH /webhooks/",
    "DELETE /webhooks/",
)


@dataclass(frozen=True)
class RateLimitHit:
    """One 429 answered."""

    route: str
    major: str
    retry_after: float
    is_global: bool


@dataclass
class Decision:
    """Go ahead (with these headers) or answer 429."""

    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    is_global: bool = False

    @property
    def limited(self) -> bool:
        return self.retry_after is not None

    def body(self) -> dict[str, object]:
        return {
            "message": "You are being rate limited.",
            "retry_after": self.retry_after,
            "global": self.is_global,
            "code": 0,
        }


@dataclass
class _Bucket:
    limit: int
    per: float
    hash: str = field(default_factory=lambda: secrets.token_hex(16))
    window_start: float = 0.0
    count: int = 0


@dataclass
class _Forced:
    route: str | None
    major: str | None
    times: int
    retry_after: float
    is_global: bool


class RateLimits:
    """Off by default; `limit_route`, `limit_global` and `fail_next` switch limits on."""

    def __init__(self, violations: ViolationLog) -> None:
        self._violations = violations
        self._routes: dict[str, _Bucket] = {}
        self._windows: dict[tuple[str, str], _Bucket] = {}
        self._global: _Bucket | None = None
        self._global_window = _Bucket(0, 0.0)
        self._forced: list[_Forced] = []
        self._blocked_until: dict[tuple[str, str], float] = {}
        self.hits: list[RateLimitHit] = []

    def limit_route(self, route: str, *, limit: int, per: float) -> None:
        """At most `limit` requests per `per` seconds on `route` (e.g. "POST
        /channels/{channel_id}/messages"), counted per major parameter like Discord's buckets."""
        self._routes[route] = _Bucket(limit, per)

    def limit_global(self, *, limit: int, per: float = 1.0) -> None:
        self._global = _Bucket(limit, per)

    def fail_next(
        self,
        route: str | None = None,
        *,
        times: int = 1,
        retry_after: float = 0.25,
        is_global: bool = False,
        major: int | str | None = None,
    ) -> None:
        """Answer the next `times` requests to `route` (any route: None) with a 429.

        `major`: only requests for that channel (guild, webhook...) id, as Discord's buckets
        are per major parameter. discord.py sleeps `retry_after` and tries again, five tries
        in all before it raises: `times=5` on one request exhausts it.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        self._forced.append(
            _Forced(route, None if major is None else str(major), times, retry_after, is_global)
        )

    def off(self) -> None:
        self._routes.clear()
        self._windows.clear()
        self._global = None
        self._forced.clear()

    def check(self, route: str, major: str) -> Decision:
        now = time.monotonic()
        early = self._early(route, major, now)
        if early is not None:
            return early
        forced = self._take_forced(route, major)
        if forced is not None:
            return self._limited(
                route, major, now, forced.retry_after, forced.is_global, bucket=None
            )
        if self._global is not None and not route.startswith(GLOBAL_EXEMPT_PREFIXES):
            window = self._global_window
            window.limit, window.per = self._global.limit, self._global.per
            if now >= window.window_start + window.per:
                window.window_start, window.count = now, 0
            window.count += 1
            if window.count > window.limit:
                return self._limited(
                    route, major, now, window.window_start + window.per - now, True, bucket=None
                )
        template = self._routes.get(route)
        if template is None:
            return Decision()
        bucket = self._windows.setdefault(
            (route, major), _Bucket(template.limit, template.per, hash=template.hash)
        )
        if now >= bucket.window_start + bucket.per:
            bucket.window_start, bucket.count = now, 0
        bucket.count += 1
        reset_after = bucket.window_start + bucket.per - now
        if bucket.count > bucket.limit:
            return self._limited(route, major, now, reset_after, False, bucket=bucket)
        return Decision(headers=_bucket_headers(bucket, bucket.limit - bucket.count, reset_after))

    def _early(self, route: str, major: str, now: float) -> Decision | None:
        """A request during a retry_after window it was told about: a violation."""
        for key in ((route, major), ("*", "*")):
            until = self._blocked_until.get(key)
            if until is None:
                continue
            if now < until - EARLY_TOLERANCE_S:
                wait = until - now
                self._violations.record(
                    Violation(
                        "rate_limit",
                        0,
                        route,
                        "request during a rate limit",
                        f"came back {wait:.3f}s before retry_after had passed",
                        status=429,
                    )
                )
                return self._limited(route, major, now, wait, key[0] == "*", bucket=None)
            del self._blocked_until[key]
        return None

    def _take_forced(self, route: str, major: str) -> _Forced | None:
        for forced in self._forced:
            if forced.route in (None, route) and forced.major in (None, major):
                forced.times -= 1
                if forced.times <= 0:
                    self._forced.remove(forced)
                return forced
        return None

    def _limited(
        self,
        route: str,
        major: str,
        now: float,
        retry_after: float,
        is_global: bool,
        *,
        bucket: _Bucket | None,
    ) -> Decision:
        retry_after = max(round(retry_after, 3), 0.001)
        key = ("*", "*") if is_global else (route, major)
        self._blocked_until[key] = max(self._blocked_until.get(key, 0.0), now + retry_after)
        self.hits.append(RateLimitHit(route, major, retry_after, is_global))
        log.info(
            "429 for %s (%s): retry after %.3fs, global=%s", route, major, retry_after, is_global
        )
        headers = {
            # discord.py retries a 429 only when it came through Discord's proxy.
            "Via": "1.1 google",
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Scope": "global" if is_global else "user",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        else:
            headers.update(_bucket_headers(bucket or _Bucket(1, retry_after), 0, retry_after))
        return Decision(headers=headers, retry_after=retry_after, is_global=is_global)


def _bucket_headers(bucket: _Bucket, remaining: int, reset_after: float) -> dict[str, str]:
    # Rounded up: a client waiting exactly this long must not arrive a hair early.
    reset_after = math.ceil(max(reset_after, 0.0) * 1000) / 1000
    return {
        "X-RateLimit-Limit": str(bucket.limit),
        "X-RateLimit-Remaining": str(max(remaining, 0)),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": bucket.hash,
    }
