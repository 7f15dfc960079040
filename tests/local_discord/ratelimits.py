"""Discord's rate limits: on from the start, as on Discord, plus 429s a test forces.

By default a bot gets what Discord gives it (`DISCORD_ROUTE_LIMITS`, `DISCORD_GLOBAL_LIMIT`):
50 requests a second in all (interaction endpoints exempt), 5 messages per 5 s per channel,
and a bucket of its own for each route that has one, counted per major parameter (the channel,
the guild, the interaction's token). A test changes one bucket with `limit_route`, the global
limit with `limit_global`, forces "the next N requests" with `fail_next`, and only a test that
says why (`LocalDiscordConfig.rate_limits_off`) runs without any.

Answers are what discord.py needs to honour them: status 429, a JSON body with `retry_after`
and `global`, a `Via` header (without it discord.py assumes a Cloudflare ban and gives up) and
the X-RateLimit-* headers, on every answer of a bucketed route. A client that comes back before
`retry_after` has passed is recorded as a violation: that is the whole point of the header.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable
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


# Discord's documented limit on all of a bot's requests, per second.
DISCORD_GLOBAL_LIMIT = 50


@dataclass(frozen=True)
class RouteLimit:
    """`limit` requests per `per` seconds for each major parameter; routes that name the same
    `bucket` share one (one `X-RateLimit-Bucket`, one count), as Discord's buckets do."""

    limit: int
    per: float
    bucket: str | None = None


# Discord publishes the principle, not a table. The channel limit is its own example (5
# messages per 5 s per channel); the others are what bots are commonly answered in the
# X-RateLimit-* headers of these routes, taken at the strict end, since a stand-in may be
# stricter than Discord but never looser. A route missing here still counts toward the global
# limit.
_REACTION = RouteLimit(1, 0.25, bucket="reactions")
_THREAD_START = RouteLimit(5, 5.0, bucket="thread starts")
# Followups and edits through an interaction's token: one bucket per token.
_INTERACTION_WEBHOOK = RouteLimit(5, 2.0, bucket="interaction webhook")
DISCORD_ROUTE_LIMITS: dict[str, RouteLimit] = {
    "POST /channels/{channel_id}/messages": RouteLimit(5, 5.0),
    "PATCH /channels/{channel_id}/messages/{message_id}": RouteLimit(5, 5.0),
    "DELETE /channels/{channel_id}/messages/{message_id}": RouteLimit(5, 1.0),
    "GET /channels/{channel_id}/messages": RouteLimit(5, 5.0),
    "PATCH /channels/{channel_id}": RouteLimit(5, 5.0),
    "POST /channels/{channel_id}/messages/{message_id}/threads": _THREAD_START,
    "POST /channels/{channel_id}/threads": _THREAD_START,
    "PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me": _REACTION,
    "DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me": _REACTION,
    "POST /webhooks/{webhook_id}/{webhook_token}": _INTERACTION_WEBHOOK,
    **{
        f"{method} /webhooks/{{webhook_id}}/{{webhook_token}}/messages/{target}": (
            _INTERACTION_WEBHOOK
        )
        for method in ("GET", "PATCH", "DELETE")
        for target in ("@original", "{message_id}")
    },
}


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
    # What is left of the route's bucket after this request (None: the route has none).
    remaining: int | None = None

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
    """Discord's limits (unless `discord_limits=False`); `limit_route`, `limit_global` and
    `fail_next` change them, `off` drops them all."""

    def __init__(
        self,
        violations: ViolationLog,
        *,
        discord_limits: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._violations = violations
        # The local Discord's clock: a test that jumps it ahead finds windows over, as they
        # would be that much later.
        self._clock = clock
        self._routes: dict[str, _Bucket] = {}
        self._named: dict[str, _Bucket] = {}
        # Counts per (bucket hash, major parameter): routes sharing a bucket share its count.
        self._windows: dict[tuple[str, str], _Bucket] = {}
        self._global: _Bucket | None = None
        self._global_window = _Bucket(0, 0.0)
        self._forced: list[_Forced] = []
        self._blocked_until: dict[tuple[str, str], float] = {}
        self.hits: list[RateLimitHit] = []
        if discord_limits:
            self.use_discord_limits()

    def use_discord_limits(self) -> None:
        """Discord's buckets and global limit, as a fresh local Discord has them."""
        self.limit_global(limit=DISCORD_GLOBAL_LIMIT)
        for route, rule in DISCORD_ROUTE_LIMITS.items():
            self.limit_route(route, limit=rule.limit, per=rule.per, bucket=rule.bucket)

    def limit_route(self, route: str, *, limit: int, per: float, bucket: str | None = None) -> None:
        """At most `limit` requests per `per` seconds on `route` (e.g. "POST
        /channels/{channel_id}/messages"), counted per major parameter like Discord's buckets.
        Routes given the same `bucket` name share one bucket (the last limit given wins)."""
        if bucket is None:
            self._routes[route] = _Bucket(limit, per)
            return
        shared = self._named.get(bucket)
        if shared is None:
            shared = self._named[bucket] = _Bucket(limit, per)
        shared.limit, shared.per = limit, per
        self._routes[route] = shared

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
        self._named.clear()
        self._windows.clear()
        self._global = None
        self._forced.clear()

    def check(self, route: str, major: str) -> Decision:
        now = self._clock()
        early = self._early(route, major, now)
        if early is not None:
            return early
        forced = self._take_forced(route, major)
        if forced is not None:
            # Under the route's own bucket, if it has one: a stray hash would make discord.py
            # think the route moved to another bucket.
            return self._limited(
                route,
                major,
                now,
                forced.retry_after,
                forced.is_global,
                bucket=self._routes.get(route),
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
            (template.hash, major), _Bucket(template.limit, template.per, hash=template.hash)
        )
        # A limit changed since this window began applies from its next request on.
        bucket.limit, bucket.per = template.limit, template.per
        if now >= bucket.window_start + bucket.per:
            bucket.window_start, bucket.count = now, 0
        bucket.count += 1
        reset_after = bucket.window_start + bucket.per - now
        if bucket.count > bucket.limit:
            return self._limited(route, major, now, reset_after, False, bucket=bucket)
        remaining = bucket.limit - bucket.count
        return Decision(
            headers=_bucket_headers(bucket, remaining, reset_after), remaining=remaining
        )

    def _early(self, route: str, major: str, now: float) -> Decision | None:
        """A request during a retry_after window it was told about: a violation."""
        keys = [(route, major)]
        if not route.startswith(GLOBAL_EXEMPT_PREFIXES):
            keys.append(("*", "*"))
        for key in keys:
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
