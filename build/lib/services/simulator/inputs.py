"""Input images of a submit: data URIs, this simulator's own URLs, or fetched http(s) URLs.

Every input is decoded in full at submit time, so a corrupt image is refused there with HTTP
400 / code 1402 (the "media unreadable" code) rather than failing the task later: the client
learns at once, and nothing is created or billed.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from PIL import Image

from services.wavespeed.media import decode_data_uri

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 5.0
MAX_INPUT_BYTES = 32 * 1024 * 1024
_EXIF_ORIENTATION = 0x0112
_ROTATED = frozenset({5, 6, 7, 8})


class MediaError(ValueError):
    """An input image could not be read; the message names which one and why."""


@dataclass(frozen=True, slots=True)
class SourceImage:
    """A readable input image and its displayed (EXIF-oriented) size."""

    data: bytes = field(repr=False)
    size: tuple[int, int]


# Looks a URL up among this simulator's own uploads and outputs: bytes when it is one of them,
# None when the URL points elsewhere; raises MediaError for one of ours that does not exist.
LocalLookup = Callable[[str], bytes | None]


def probe_image(data: bytes) -> tuple[int, int]:
    """The displayed size of image bytes after decoding them in full; ValueError when unreadable.

    Synchronous Pillow work: run it in a thread.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            width, height = opened.size
            if opened.getexif().get(_EXIF_ORIENTATION) in _ROTATED:
                width, height = height, width
    except Exception as exc:  # Pillow reports bad data with many exception types
        raise ValueError(f"it is not a readable image ({type(exc).__name__})") from exc
    if width < 1 or height < 1:
        raise ValueError("it has no pixels")
    return width, height


def _decode_inline(ref: str) -> SourceImage:
    data, _declared_type = decode_data_uri(ref)  # the declared type is not trusted: probe
    return SourceImage(data, probe_image(data))


def _label(index: int, count: int, field_name: str) -> str:
    if field_name == "image":
        return "The image"
    return f"Image {index + 1} of {count} (images[{index}])"


class InputResolver:
    """Turns the image references of a request into decoded images."""

    def __init__(self, session: Callable[[], aiohttp.ClientSession]) -> None:
        # A getter, since the simulator's session only exists while its app runs.
        self._session = session

    async def resolve(
        self, refs: list[str], field_name: str, local: LocalLookup
    ) -> list[SourceImage]:
        """All images of `refs`, or MediaError naming the first one that cannot be read."""
        results = await asyncio.gather(
            *(self._one(ref, local) for ref in refs), return_exceptions=True
        )
        images: list[SourceImage] = []
        for index, result in enumerate(results):
            if isinstance(result, MediaError):
                raise MediaError(f"{_label(index, len(refs), field_name)} {result}") from None
            if isinstance(result, BaseException):
                raise result
            images.append(result)
        return images

    async def _one(self, ref: str, local: LocalLookup) -> SourceImage:
        try:
            if ref.startswith("data:"):
                return await asyncio.to_thread(_decode_inline, ref)
            if urlsplit(ref).scheme not in {"http", "https"}:
                raise MediaError("is neither an http(s) URL nor a base64 data URI.")
            data = local(ref)
            if data is None:
                data = await self._fetch(ref)
            return SourceImage(data, await asyncio.to_thread(probe_image, data))
        except MediaError:
            raise
        except ValueError as exc:
            raise MediaError(f"could not be read: {exc}.") from exc

    async def _fetch(self, url: str) -> bytes:
        host = urlsplit(url).hostname or "?"
        try:
            timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
            async with self._session().get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise MediaError(f"could not be fetched: HTTP {response.status} from {host}.")
                if (response.content_length or 0) > MAX_INPUT_BYTES:
                    raise MediaError("is too large.")
                data = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > MAX_INPUT_BYTES:
                        raise MediaError("is too large.")
                return bytes(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("fetching an input image from %s failed: %s", host, type(exc).__name__)
            raise MediaError(f"could not be fetched from {host} ({type(exc).__name__}).") from exc
