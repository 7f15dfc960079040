"""Image bytes on their way to and from WaveSpeed: type sniffing and data URIs.

Types are told from the bytes' signatures, never from a file name: this layer only needs to label
what it sends. Checking images members send is the job of the bot's image service; the one check
made here is whether a downloaded output is a whole image (`decodes_fully`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io

from PIL import Image

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
)

EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
}


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of image bytes, from their signature; None when not a known image."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, offset, mime in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return mime
    return None


# Pillow's name for each type `sniff_image_type` tells; only that decoder is tried.
_PILLOW_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}


def decodes_fully(data: bytes) -> str | None:
    """The MIME type of `data` if it decodes completely as the type it claims; else None.

    A cut-short or damaged file usually still has its signature and header, so only decoding
    every pixel tells. Synchronous Pillow work: run it in a thread.
    """
    claimed = sniff_image_type(data)
    if claimed is None:
        return None
    try:
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[claimed]]) as image:
            image.load()
    except Exception:
        # Pillow reports broken files with many exception types (OSError, SyntaxError,
        # ValueError, zlib and struct errors...): each means "not a whole image".
        return None
    return claimed


def to_data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_uri(uri: str) -> tuple[bytes, str]:
    """(bytes, MIME type) of a base64 `data:` URI; ValueError when it is not one."""
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise ValueError("not a base64 data URI")
    content_type = header[5 : -len(";base64")] or "application/octet-stream"
    return decode_base64(payload), content_type


def decode_base64(payload: str) -> bytes:
    """Bytes of a base64 string (bare, or a data URI's payload); ValueError when malformed."""
    if payload.startswith("data:"):
        return decode_data_uri(payload)[0]
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise ValueError("malformed base64") from exc


class InputImage:
    """Image bytes a request still has to send (as a data URI or an upload).

    A plain class on purpose: pydantic accepts it only as an instance, so JSON arriving over HTTP
    can never pose as one.
    """

    __slots__ = ("content_type", "data")

    def __init__(self, data: bytes, content_type: str | None = None) -> None:
        sniffed = sniff_image_type(data)
        if content_type is None and sniffed is None:
            raise ValueError("not a recognised image")
        self.data = data
        self.content_type = content_type or sniffed or "application/octet-stream"

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.content_type, "bin")

    def describe(self) -> str:
        """A short stand-in used only when a request with unsent bytes is printed."""
        digest = hashlib.sha256(self.data).hexdigest()[:12]
        return f"<{self.content_type} {self.size} bytes sha256:{digest}>"

    def __repr__(self) -> str:
        return f"InputImage{self.describe()}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InputImage) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)
