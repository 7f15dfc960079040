"""Server errors a test can force on a route: Discord does answer 5xx now and then.

    local.server_errors.fail_next("POST /channels/{channel_id}/messages", status=500, times=2)
    local.fail_message_posts(channel, status=503)          # the same, for one channel

What discord.py 2.7 does with them: 500, 502, 504 and 524 are retried by its HTTP layer
(five tries in all, sleeping 1, 3, 5 and 7 s in between, the same body each time), then
`DiscordServerError` is raised; 503 and every other 5xx are raised at once.

`applied=True` is the nasty case Discord also has: the request took effect (the message was
posted) and only the answer was lost. A retry then posts a second message, unless the body
carried a `nonce` with `enforce_nonce` (discord.py's `send` always does, with a random nonce
per call; a bot that retries by itself across a restart must choose its own stable nonce).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger(__name__)

# What Discord's edge answers with, roughly: JSON from the API itself, text from the proxies.
_BODIES: dict[int, tuple[str, str]] = {
    500: ("application/json", json.dumps({"message": "500: Internal Server Error", "code": 0})),
    502: ("text/html", "<html><head><title>502 Bad Gateway</title></head></html>"),
    503: (
        "text/plain",
        "upstream connect error or disconnect/reset before headers. reset reason: overflow",
    ),
    504: ("text/html", "<html><head><title>504 Gateway Time-out</title></head></html>"),
}


@dataclass(frozen=True)
class ServerErrorHit:
    """One forced 5xx answered."""

    route: str
    major: str
    status: int
    applied: bool


@dataclass
class _Pending:
    route: str | None
    major: str | None
    status: int
    times: int
    applied: bool


class ServerErrors:
    """Forced 5xx answers, consumed in the order they were asked for."""

    def __init__(self) -> None:
        self._pending: list[_Pending] = []
        self.hits: list[ServerErrorHit] = []

    def fail_next(
        self,
        route: str | None = None,
        *,
        status: int = 500,
        times: int = 1,
        major: int | str | None = None,
        applied: bool = False,
    ) -> None:
        """Answer the next `times` requests to `route` (None: any) with `status`.

        `major`: only requests for that channel (guild, webhook...) id, like a rate limit
        bucket. `applied`: let the request take effect first, then answer the error.
        """
        if not 500 <= status <= 599:
            raise ValueError(f"a server error is 5xx, not {status} (429s: RateLimits.fail_next)")
        if times < 1:
            raise ValueError("times must be at least 1")
        self._pending.append(
            _Pending(route, None if major is None else str(major), status, times, applied)
        )

    def take(self, route: str, major: str, *, applied: bool) -> int | None:
        """The status to answer this request with, if a forced error is due (and use it up)."""
        for pending in self._pending:
            if (
                pending.applied is applied
                and pending.route in (None, route)
                and pending.major in (None, major)
            ):
                pending.times -= 1
                if pending.times <= 0:
                    self._pending.remove(pending)
                self.hits.append(ServerErrorHit(route, major, pending.status, applied))
                log.info(
                    "forced %d for %s (%s)%s",
                    pending.status,
                    route,
                    major,
                    " after applying it" if applied else "",
                )
                return pending.status
        return None

    def off(self) -> None:
        self._pending.clear()


def server_error_response(status: int) -> web.Response:
    content_type, body = _BODIES.get(
        status, ("application/json", json.dumps({"message": f"{status}: Server Error", "code": 0}))
    )
    # Set as a header, not `content_type=`: aiohttp would add "; charset=utf-8".
    return web.Response(body=body.encode(), status=status, headers={"Content-Type": content_type})
