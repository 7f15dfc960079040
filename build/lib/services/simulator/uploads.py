"""Uploaded files: WaveSpeed's two upload flows, the presigned PUT, and the download URLs."""

from __future__ import annotations

import logging
import mimetypes
import re
import uuid
from collections.abc import Callable
from urllib.parse import quote, unquote

import aiohttp
from aiohttp import web

from services.wavespeed.media import sniff_image_type
from services.wavespeed.protocol import Code

from .answers import ApiError, ok, origin, read_json
from .inputs import MAX_INPUT_BYTES
from .state import MediaItem, live, prune

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str) -> str:
    """A plain base name fit for a URL path."""
    # Some clients percent-encode the multipart filename; keep only a plain base name.
    base = unquote(name).replace("\\", "/").rsplit("/", 1)[-1]
    return _SAFE_NAME.sub("_", base).strip("._")[:100] or "upload"


class MediaStore:
    """Uploads by token, with the handlers of their routes.

    `authorize` checks the Bearer key of the API routes; the PUT and the downloads are
    unauthenticated, as presigned storage URLs and WaveSpeed's CDN URLs are.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        retention_s: float,
        keep: int,
        authorize: Callable[[web.Request], str],
    ) -> None:
        self.items: dict[str, MediaItem] = {}
        self._clock = clock
        self._retention_s = retention_s
        self._keep = keep
        self._authorize = authorize

    def get(self, token: str) -> MediaItem | None:
        """The upload `token` names, unless unknown or expired (complete or not)."""
        return live(self.items, token, now=self._clock(), retention_s=self._retention_s)

    def _new(
        self, request: web.Request, filename: str, content_type: str, size: int
    ) -> tuple[MediaItem, str]:
        """A new upload and its download URL."""
        now = self._clock()
        item = MediaItem(uuid.uuid4().hex, safe_filename(filename), content_type, now, size)
        self.items[item.token] = item
        prune(self.items, now=now, retention_s=self._retention_s, keep=self._keep)
        download_url = f"{origin(request)}/media/{item.token}/{quote(item.filename)}"
        return item, download_url

    async def upload_binary(self, request: web.Request) -> web.Response:
        """POST /api/v3/media/upload/binary: multipart field `file`."""
        self._authorize(request)
        if not request.content_type.startswith("multipart/"):
            raise ApiError(
                400,
                Code.INVALID_PARAMETER,
                "Send the file as multipart/form-data in a field named 'file'.",
            )
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, aiohttp.BodyPartReader) and part.name == "file":
                data = await self._read_part(part)
                filename = part.filename or "upload"
                break
        else:
            raise ApiError(
                400, Code.MISSING_PARAMETER, "The upload needs a multipart field named 'file'."
            )
        sniffed = sniff_image_type(data)
        content_type = sniffed or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        item, download_url = self._new(request, filename, content_type, len(data))
        item.data = data
        log.info("binary upload %s stored (%d bytes)", item.token, len(data))
        return ok(
            {
                "type": "image" if sniffed else "file",
                "download_url": download_url,
                "filename": item.filename,
                "size": len(data),
            }
        )

    @staticmethod
    async def _read_part(part: aiohttp.BodyPartReader) -> bytes:
        data = bytearray()
        while chunk := await part.read_chunk():
            data += chunk
            if len(data) > MAX_INPUT_BYTES:
                raise ApiError(
                    400, Code.INVALID_PARAMETER, f"The file is larger than {MAX_INPUT_BYTES} bytes."
                )
        if not data:
            raise ApiError(400, Code.INVALID_PARAMETER, "The file is empty.")
        return bytes(data)

    async def create_upload(self, request: web.Request) -> web.Response:
        """POST /api/v3/media/uploads {filename, size, content_type}: a URL to PUT the bytes to."""
        self._authorize(request)
        body = await read_json(request)
        filename, size = body.get("filename"), body.get("size")
        for name, value in (("filename", filename), ("size", size)):
            if value is None or value == "":
                raise ApiError(400, Code.MISSING_PARAMETER, f"The upload needs a {name}.")
        if not isinstance(filename, str):
            raise ApiError(400, Code.INVALID_PARAMETER, "filename must be a string.")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_INPUT_BYTES:
            raise ApiError(
                400,
                Code.INVALID_PARAMETER,
                f"size must be a whole number of bytes from 1 to {MAX_INPUT_BYTES}.",
            )
        # content_type is what SDK 2.0.5 sends; guessing it keeps other clients working.
        content_type = body.get("content_type") or mimetypes.guess_type(filename)[0]
        if not isinstance(content_type, str):
            content_type = "application/octet-stream"
        item, download_url = self._new(request, filename, content_type, size)
        return ok(
            {
                "upload": {
                    "method": "PUT",
                    "url": f"{origin(request)}/media/upload/{item.token}",
                    "headers": {"Content-Type": content_type},
                },
                "download_url": download_url,
            }
        )

    async def put_upload(self, request: web.Request) -> web.Response:
        """PUT /media/upload/{token}: the bytes announced by create_upload."""
        item = self.get(request.match_info["token"])
        if item is None:
            raise ApiError(404, 404, "Upload URL not found or expired.")
        data = await request.read()
        if len(data) != item.expected_size:
            raise ApiError(
                400,
                Code.INVALID_PARAMETER,
                f"The upload is {len(data)} bytes but {item.expected_size} were announced.",
            )
        item.data = data
        log.info("presigned upload %s stored (%d bytes)", item.token, len(data))
        return ok({"size": len(data)})

    async def download(self, request: web.Request) -> web.Response:
        """GET /media/{token}/{filename}: 404 until the bytes have arrived."""
        item = self.get(request.match_info["token"])
        if item is None or item.data is None:
            raise ApiError(404, 404, "File not found (unknown, expired or not uploaded yet).")
        content_type = sniff_image_type(item.data) or item.content_type
        return web.Response(body=item.data, content_type=content_type)
