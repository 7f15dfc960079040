"""Small real images for tests, made with Pillow."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def make_png(
    size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 40, 40)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_claiming(width: int, height: int) -> bytes:
    """A genuine 1-bit greyscale PNG of `width` x `height`: a few KB that decode to billions
    of pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    compressor = zlib.compressobj(9)
    rows = (b"\x00" * (1 + (width + 7) // 8)) * 1000  # filter byte + packed pixels, per row
    idat = b"".join(compressor.compress(rows) for _ in range(height // 1000))
    idat += compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def photo_png(side: int = 1024) -> bytes:
    """A 1 MP PNG that compresses like a photo (noise over gradients), not like a flat fill,
    yet stays under the bot's 1 MiB inline limit: what the benchmarks send."""
    noise = Image.effect_noise((side, side), 6)
    gradient = Image.linear_gradient("L").resize((side, side))
    image = Image.merge(
        "RGB",
        (
            Image.blend(gradient, noise, 0.15),
            Image.blend(gradient.rotate(90), noise, 0.15),
            Image.blend(gradient.rotate(180), noise, 0.15),
        ),
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
