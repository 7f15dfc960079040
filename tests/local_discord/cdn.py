"""The local CDN: attachments served from signed, expiring URLs, like cdn.discordapp.com.

Discord signs attachment URLs (`ex` expiry and `is` issue time in hex seconds, `hm` an HMAC)
and they stop working after about a day; a bot that stores a URL and fetches it much later
gets "This content is no longer available". The expiry is measured on the test's clock.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from urllib.parse import quote

from aiohttp import web

from .clock import Clock
from .models import Attachment

log = logging.getLogger(__name__)

URL_LIFETIME_S = 24 * 3600


class Cdn:
    """Signs attachment URLs and serves the bytes behind them."""

    def __init__(self, clock: Clock, lookup: Callable[[int], Attachment | None]) -> None:
        self._clock = clock
        self._lookup = lookup
        self._secret = secrets.token_bytes(32)
        self.base_url = ""
        self.downloads: list[int] = []

    def _signature(self, path: str, expires: str, issued: str) -> str:
        message = f"{path}{expires}{issued}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def url(self, attachment: Attachment, *, media: bool = False) -> str:
        """A freshly signed URL, valid for a day from now on the test clock."""
        path = f"/attachments/{attachment.channel_id}/{attachment.id}/{quote(attachment.filename)}"
        now = int(self._clock.now())
        expires, issued = f"{now + URL_LIFETIME_S:x}", f"{now:x}"
        signature = self._signature(path, expires, issued)
        prefix = "/media" if media else "/cdn"
        return f"{self.base_url}{prefix}{path}?ex={expires}&is={issued}&hm={signature}&"

    def add_routes(self, app: web.Application) -> None:
        for prefix in ("/cdn", "/media"):
            app.router.add_get(
                prefix + "/attachments/{channel_id}/{attachment_id}/{filename}", self._serve
            )

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        gone = web.Response(status=404, text="This content is no longer available.")
        try:
            attachment_id = int(request.match_info["attachment_id"])
        except ValueError:
            return gone
        attachment = self._lookup(attachment_id)
        path = request.path.removeprefix("/cdn").removeprefix("/media")
        expires = request.query.get("ex", "")
        issued = request.query.get("is", "")
        signature = request.query.get("hm", "")
        if attachment is None or str(attachment.channel_id) != request.match_info["channel_id"]:
            return gone
        expected = self._signature(quote_path(path), expires, issued)
        if not hmac.compare_digest(expected, signature):
            log.info("CDN refused a badly signed URL for attachment %s", attachment_id)
            return gone
        try:
            expired = int(expires, 16) < self._clock.now()
        except ValueError:
            return gone
        if expired:
            log.info("CDN refused an expired URL for attachment %s", attachment_id)
            return gone
        self.downloads.append(attachment_id)
        return web.Response(
            body=attachment.data, content_type=attachment.content_type or "application/octet-stream"
        )


def quote_path(path: str) -> str:
    """The request path as it was signed (aiohttp hands it back unquoted)."""
    head, _, filename = path.rpartition("/")
    return f"{head}/{quote(filename)}"
