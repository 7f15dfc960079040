"""Deterministic image rendering for the local WaveSpeed FLUX.1 Kontext simulator.

The simulator answers the bot's requests with *real* images instead of placeholders, so a person
looking at a test run can see that the requested work happened:

* `render_edit` restyles the input picture (hue rotation, tint, channel swap, posterize, outline,
  pixelate, ...) and prints the instruction on a banner across the bottom;
* `render_text_to_image` paints a gradient with a few shapes and the prompt on top;
* `render_composition` lays every input out in a grid, with the prompt on a banner.

Every choice comes from `random.Random` seeded with a SHA-256 digest of the prompt and seed, so the
same inputs always give byte-identical output (Pillow's encoders are deterministic for the same
pixels). A few words in the prompt steer the style ("red", "black and white", "sketch", "blur",
...), which makes edits look a little like what was asked; anything else falls back to a style
picked by the hash.

This module is pure, synchronous Pillow code with no network or Discord imports; callers run it in
a worker thread. Nothing here keeps state between calls, so concurrent calls are safe.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import (
    Image,
    ImageChops,
    ImageDraw,
    ImageEnhance,
    ImageFilter,
    ImageFont,
    ImageOps,
    UnidentifiedImageError,
)

__all__ = [
    "ASPECT_SIZES",
    "RenderError",
    "output_size",
    "render_composition",
    "render_edit",
    "render_text_to_image",
]

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Size = tuple[int, int]

_LONG_SIDE = 1024
# Edits without an explicit size keep the input's size, long side capped here.
EDIT_MAX_SIDE = 1024
# Refuse absurd canvases outright: the API's own limit is 1536 per side.
MAX_OUTPUT_SIDE = 4096
# Prompts are cut to this many characters before layout; the banner never shows more anyway.
_MAX_TEXT_CHARS = 400
_ELLIPSIS = "\u2026"
_JPEG_QUALITY = 90
_WEBP_QUALITY = 90


def _round16(value: float) -> int:
    return max(16, round(value / 16) * 16)


def _aspect_size(ratio: str) -> Size:
    w_part, h_part = (int(part) for part in ratio.split(":"))
    if w_part >= h_part:
        return _LONG_SIDE, _round16(_LONG_SIDE * h_part / w_part)
    return _round16(_LONG_SIDE * w_part / h_part), _LONG_SIDE


ASPECT_SIZES: dict[str, tuple[int, int]] = {
    ratio: _aspect_size(ratio)
    for ratio in ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
}

_SIZE_RE = re.compile(r"^\s*(\d{1,5})\s*[*xX\u00d7]\s*(\d{1,5})\s*$")


class RenderError(ValueError):
    """An input image could not be decoded (corrupt, truncated, too large or not an image).

    `index` is the 0-based position of the offending input in a composition, None for an edit.
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def output_size(
    aspect_ratio: str | None, size: str | None, default: tuple[int, int] = (1024, 1024)
) -> tuple[int, int]:
    """size "W*H" wins, then aspect_ratio, then default.

    `size` may also be written "WxH". Raises ValueError for a malformed size, a side outside
    1..MAX_OUTPUT_SIDE, or an aspect ratio not in ASPECT_SIZES.
    """
    if size is not None and size.strip():
        match = _SIZE_RE.match(size)
        if not match:
            raise ValueError(f"size must look like 1024*768, got {size!r}")
        return _check_size((int(match.group(1)), int(match.group(2))))
    if aspect_ratio is not None and aspect_ratio.strip():
        try:
            return ASPECT_SIZES[aspect_ratio.strip()]
        except KeyError:
            raise ValueError(
                f"unknown aspect ratio {aspect_ratio!r}; expected one of {', '.join(ASPECT_SIZES)}"
            ) from None
    return default


def render_edit(
    image: bytes,
    prompt: str,
    seed: int,
    *,
    size: tuple[int, int] | None = None,
    fmt: str = "jpeg",
) -> bytes:
    """An edit visibly derived from the input.

    The decoded input (EXIF orientation applied, converted to RGB, first frame of an animation)
    is scaled to cover `size` (centre-cropped), or kept at its own size with the long side capped
    at EDIT_MAX_SIDE when size is None. It is then recoloured and stylised from hash(prompt, seed)
    (or from style words in the prompt), the instruction is drawn on a banner across the bottom
    (wrapped, ellipsised if long) and a small "seed N" label goes in the top-right corner.

    Raises RenderError when the input cannot be decoded, ValueError for a bad size or format.
    """
    fmt = _check_format(fmt)
    target = _check_size(size) if size is not None else None

    def scale_for(width: int, height: int) -> float:
        if target is not None:
            return max(target[0] / width, target[1] / height)
        return min(1.0, EDIT_MAX_SIDE / max(width, height))

    picture = _decode(image, "the input image", scale_for)
    if target is not None:
        picture = _cover(picture, target)
    elif max(picture.size) > EDIT_MAX_SIDE:
        picture = _contain(picture, (EDIT_MAX_SIDE, EDIT_MAX_SIDE))

    rng = random.Random(_derive_seed("edit", prompt, seed))
    text = _clean_text(prompt)
    colour, texture = _edit_styles(text, rng)
    picture = _apply_colour(picture, colour, rng)
    picture = _apply_texture(picture, texture, rng)
    if picture.mode != "RGB":
        picture = picture.convert("RGB")

    _draw_banner(picture, text)
    _draw_seed_label(picture, seed)
    return _encode(picture, fmt)


def render_text_to_image(
    prompt: str, seed: int, *, size: tuple[int, int], fmt: str = "jpeg"
) -> bytes:
    """An image made from seed and prompt, exactly `size` pixels.

    A gradient background and a few translucent shapes whose colours and positions come from a
    RNG seeded by hash(prompt, seed) (colour words in the prompt join the palette), with the
    prompt drawn on a panel in the middle and a "seed N" label.
    """
    fmt = _check_format(fmt)
    width, height = _check_size(size)
    rng = random.Random(_derive_seed("t2i", prompt, seed))
    text = _clean_text(prompt)
    palette = _palette(text, rng)

    canvas = _gradient((width, height), rng.choice(palette), rng.choice(palette), rng)
    draw = ImageDraw.Draw(canvas, "RGBA")
    short = min(width, height)
    for _ in range(rng.randint(4, 8)):
        fill = (*_jitter(rng.choice(palette), rng, 40), rng.randint(110, 220))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = short * rng.uniform(0.08, 0.3)
        box = (cx - radius, cy - radius * rng.uniform(0.5, 1.5), cx + radius, cy + radius)
        kind = rng.choice(("ellipse", "rectangle", "rounded", "polygon", "line"))
        if kind == "ellipse":
            draw.ellipse(box, fill=fill)
        elif kind == "rectangle":
            draw.rectangle(box, fill=fill)
        elif kind == "rounded":
            draw.rounded_rectangle(box, radius=radius * 0.3, fill=fill)
        elif kind == "polygon":
            draw.regular_polygon(
                (cx, cy, radius), rng.randint(3, 8), rotation=rng.uniform(0, 360), fill=fill
            )
        else:
            end = (cx + rng.uniform(-2, 2) * radius, cy + rng.uniform(-2, 2) * radius)
            draw.line(((cx, cy), end), fill=fill, width=max(2, round(short * 0.02)))

    _draw_centre_panel(canvas, text)
    _draw_seed_label(canvas, seed)
    return _encode(canvas, fmt)


def render_composition(
    images: list[bytes], prompt: str, seed: int, *, size: tuple[int, int], fmt: str = "jpeg"
) -> bytes:
    """A composition of the inputs, exactly `size` pixels.

    Each input (decoded like `render_edit` does) is fitted, uncropped and unrecoloured, into a
    tile of a grid chosen to show the inputs as large as possible (meant for 1-5 inputs, any
    positive number works), on a muted gradient background, with a thin accent frame and its
    number. The prompt goes on a banner below the grid, and a "seed N" label top-right.

    Raises ValueError for an empty list, RenderError naming the input that cannot be decoded.
    """
    fmt = _check_format(fmt)
    width, height = _check_size(size)
    if not images:
        raise ValueError("a composition needs at least one input image")
    rng = random.Random(_derive_seed("multi", prompt, seed))
    text = _clean_text(prompt)

    dark = _muted(rng, 20, 70)
    light = _muted(rng, 60, 120)
    canvas = _gradient((width, height), dark, light, rng)

    font, lines, line_height, pad = _banner_layout(canvas, text)
    banner_height = len(lines) * line_height + 2 * pad if lines else 0
    gap = max(2, round(min(width, height) * 0.015))
    area = (gap, gap, width - gap, max(gap + 1, height - banner_height - gap))

    # Headers are cheap to read; use them to pick the grid before decoding anything in full.
    oriented = [_peek_size(data, index, len(images)) for index, data in enumerate(images)]
    cols, rows = _grid(oriented, area[2] - area[0], area[3] - area[1], gap)
    tile_w = (area[2] - area[0] - gap * (cols - 1)) / cols
    tile_h = (area[3] - area[1] - gap * (rows - 1)) / rows
    accent = _jitter(_vivid(rng), rng, 20)
    frame = max(1, round(min(tile_w, tile_h) * 0.01))
    label_font = _font(max(9, round(min(tile_w, tile_h) * 0.07)))
    draw = ImageDraw.Draw(canvas, "RGBA")

    for index, data in enumerate(images):
        row, col = divmod(index, cols)
        in_row = min(cols, len(images) - row * cols)
        offset = (cols - in_row) * (tile_w + gap) / 2  # centre a short last row
        left = area[0] + offset + col * (tile_w + gap)
        top = area[1] + row * (tile_h + gap)
        box_w = max(1, math.floor(tile_w) - 2 * frame)
        box_h = max(1, math.floor(tile_h) - 2 * frame)

        def scale_for(w: int, h: int, box_w: int = box_w, box_h: int = box_h) -> float:
            return min(box_w / w, box_h / h)

        picture = _decode(data, _input_label(index, len(images)), scale_for, index=index)
        picture = _contain(picture, (box_w, box_h))
        x = round(left + (tile_w - picture.width) / 2)
        y = round(top + (tile_h - picture.height) / 2)
        draw.rectangle(
            (x - frame, y - frame, x + picture.width + frame - 1, y + picture.height + frame - 1),
            fill=accent,
        )
        canvas.paste(picture, (x, y))
        if len(images) > 1:
            _draw_tag(draw, (x + frame, y + frame), str(index + 1), label_font)

    if lines:
        _paint_banner(canvas, font, lines, line_height, pad)
    _draw_seed_label(canvas, seed)
    return _encode(canvas, fmt)


# ---------------------------------------------------------------------------------------------
# Validation, hashing, decoding and encoding
# ---------------------------------------------------------------------------------------------


def _check_size(size: Sequence[int]) -> Size:
    if len(size) != 2:
        raise ValueError(f"size must be (width, height), got {size!r}")
    width, height = (int(side) for side in size)
    if not (1 <= width <= MAX_OUTPUT_SIDE and 1 <= height <= MAX_OUTPUT_SIDE):
        raise ValueError(f"each side must be between 1 and {MAX_OUTPUT_SIDE}, got {size!r}")
    return width, height


_FORMATS: dict[str, Literal["jpeg", "png", "webp"]] = {
    "jpeg": "jpeg",
    "jpg": "jpeg",
    "png": "png",
    "webp": "webp",
}


def _check_format(fmt: str) -> Literal["jpeg", "png", "webp"]:
    try:
        return _FORMATS[fmt.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"output format must be jpeg, png or webp, got {fmt!r}") from None


def _derive_seed(kind: str, prompt: str, seed: int) -> int:
    """A stable 64-bit integer from (kind, prompt, seed); never Python's salted hash()."""
    digest = hashlib.sha256()
    for part in (kind.encode(), str(int(seed)).encode(), prompt.encode("utf-8", "surrogatepass")):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return int.from_bytes(digest.digest()[:8], "big")


def _encode(picture: Image.Image, fmt: Literal["jpeg", "png", "webp"]) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpeg":
        picture.save(buffer, "JPEG", quality=_JPEG_QUALITY)
    elif fmt == "png":
        # Level 1 is about twice as fast as the default and still lossless.
        picture.save(buffer, "PNG", compress_level=1)
    else:
        # Method 2 is about three times faster than the default 4 at a similar size.
        picture.save(buffer, "WEBP", quality=_WEBP_QUALITY, method=2)
    return buffer.getvalue()


def _input_label(index: int, count: int) -> str:
    return f"input image {index + 1} of {count}"


_ROTATING_ORIENTATIONS = frozenset({5, 6, 7, 8})


def _oriented_size(opened: Image.Image) -> Size:
    orientation = opened.getexif().get(0x0112)
    if orientation in _ROTATING_ORIENTATIONS:
        return opened.height, opened.width
    return opened.size


def _peek_size(data: bytes, index: int, count: int) -> Size:
    """The displayed (EXIF-oriented) size of an input, reading only its header."""
    label = _input_label(index, count)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            size = _oriented_size(opened)
    except Exception as exc:  # Pillow signals bad data with many exception types.
        raise RenderError(f"{label} could not be decoded: {_reason(exc)}", index=index) from exc
    if size[0] < 1 or size[1] < 1:
        raise RenderError(f"{label} could not be decoded: it has no pixels", index=index)
    return size


def _decode(
    data: bytes,
    label: str,
    scale_for: Callable[[int, int], float],
    *,
    index: int | None = None,
) -> Image.Image:
    """Decode the first frame as RGB with EXIF orientation applied.

    `scale_for(width, height)` gives the scale the caller will shrink the oriented image by; JPEG
    inputs are then decoded at a reduced DCT scale when that saves work. Image.MAX_IMAGE_PIXELS
    keeps its default, so a decompression bomb ends as a RenderError (between one and two times
    the limit, Pillow also emits a DecompressionBombWarning first).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RenderError(f"{label} is not bytes but {type(data).__name__}", index=index)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.seek(0)
            width, height = _oriented_size(opened)
            if width < 1 or height < 1:
                raise ValueError("it has no pixels")
            scale = scale_for(width, height)
            if opened.format == "JPEG" and scale < 0.5:
                # draft() picks the largest DCT reduction that still leaves at least this size.
                opened.draft(
                    None,
                    (
                        max(1, math.ceil(opened.width * scale)),
                        max(1, math.ceil(opened.height * scale)),
                    ),
                )
            opened.load()
            oriented = ImageOps.exif_transpose(opened)
            picture = _to_rgb(oriented)
    except Exception as exc:  # Pillow signals bad data with many exception types.
        raise RenderError(f"{label} could not be decoded: {_reason(exc)}", index=index) from exc
    return picture


def _cover(picture: Image.Image, size: Size) -> Image.Image:
    """Scale to fill `size` exactly, cropping the overflow evenly from both sides."""
    width, height = picture.size
    scale = max(size[0] / width, size[1] / height)
    crop_w, crop_h = size[0] / scale, size[1] / scale
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return picture.resize(
        size,
        Image.Resampling.BICUBIC,
        box=(left, top, left + crop_w, top + crop_h),
        reducing_gap=2.0,
    )


def _contain(picture: Image.Image, size: Size) -> Image.Image:
    """Scale to fit inside `size`, keeping the aspect ratio (up or down)."""
    width, height = picture.size
    scale = min(size[0] / width, size[1] / height)
    new_size = (
        max(1, min(size[0], round(width * scale))),
        max(1, min(size[1], round(height * scale))),
    )
    if new_size == picture.size:
        return picture
    return picture.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return "it has too many pixels"
    if isinstance(exc, UnidentifiedImageError):
        return "it is not a recognised image format"
    text = str(exc).strip()
    return text[:200] if text else type(exc).__name__


def _to_rgb(picture: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is flattened onto mid grey."""
    if picture.mode == "RGB":
        return picture
    if picture.mode in ("RGBA", "LA", "RGBa", "La", "PA") or (
        picture.mode == "P" and "transparency" in picture.info
    ):
        rgba = picture.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        return Image.alpha_composite(backdrop, rgba).convert("RGB")
    if picture.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # Wide greyscale: stretch the actual range into 8 bits instead of clipping.
        extrema = picture.getextrema()
        low, high = float(extrema[0]), float(extrema[1])  # type: ignore[arg-type]
        span = (high - low) or 1.0
        grey = picture.convert("F").point(lambda v: (v - low) * 255.0 / span).convert("L")
        return grey.convert("RGB")
    return picture.convert("RGB")


# ---------------------------------------------------------------------------------------------
# Colours and backgrounds
# ---------------------------------------------------------------------------------------------

_NAMED_COLOURS: tuple[tuple[str, RGB], ...] = (
    (r"red|crimson|scarlet", (220, 30, 40)),
    (r"orange|autumn", (245, 130, 20)),
    (r"yellow|golden|gold", (240, 205, 30)),
    (r"green|forest|emerald", (40, 170, 70)),
    (r"cyan|teal|turquoise|aqua", (20, 190, 200)),
    (r"blue|navy|ocean|sky", (35, 80, 220)),
    (r"purple|violet|lilac|lavender", (140, 60, 200)),
    (r"pink|magenta|rose", (235, 80, 170)),
    (r"brown|chocolate|wooden", (130, 80, 40)),
)
_COLOUR_WORDS: tuple[tuple[re.Pattern[str], RGB], ...] = tuple(
    (re.compile(rf"\b(?:{words})\b", re.IGNORECASE), rgb) for words, rgb in _NAMED_COLOURS
)


def _mentioned_colours(text: str) -> list[RGB]:
    """Named colours in order of first mention."""
    found: list[tuple[int, RGB]] = []
    for pattern, rgb in _COLOUR_WORDS:
        match = pattern.search(text)
        if match:
            found.append((match.start(), rgb))
    return [rgb for _, rgb in sorted(found)]


def _vivid(rng: random.Random) -> RGB:
    """A saturated colour: one channel high, one low, one anywhere."""
    channels = [rng.randint(190, 255), rng.randint(0, 70), rng.randint(0, 255)]
    rng.shuffle(channels)
    return channels[0], channels[1], channels[2]


def _clamp(value: int) -> int:
    return max(0, min(255, value))


def _muted(rng: random.Random, low: int, high: int) -> RGB:
    """A dull colour: three channels close to one random level."""
    base = rng.randint(low, high)
    return (
        _clamp(base + rng.randint(-18, 18)),
        _clamp(base + rng.randint(-18, 18)),
        _clamp(base + rng.randint(-18, 18)),
    )


def _jitter(colour: RGB, rng: random.Random, amount: int) -> RGB:
    red, green, blue = colour
    return (
        _clamp(red + rng.randint(-amount, amount)),
        _clamp(green + rng.randint(-amount, amount)),
        _clamp(blue + rng.randint(-amount, amount)),
    )


def _palette(text: str, rng: random.Random) -> list[RGB]:
    palette = _mentioned_colours(text)
    while len(palette) < 4:
        palette.append(_vivid(rng))
    return palette


def _gradient(size: Size, start: RGB, end: RGB, rng: random.Random) -> Image.Image:
    """A two-colour gradient (vertical, horizontal, diagonal or radial) of exactly `size`."""
    kind = rng.choice(("vertical", "horizontal", "diagonal", "radial"))
    ramp = Image.linear_gradient("L")  # 256x256, black at the top
    if kind == "horizontal":
        ramp = ramp.transpose(Image.Transpose.ROTATE_90)
    elif kind == "diagonal":
        ramp = ImageChops.add(ramp, ramp.transpose(Image.Transpose.ROTATE_90), scale=2.0)
    elif kind == "radial":
        ramp = Image.radial_gradient("L")
    if rng.random() < 0.5:
        ramp = ImageOps.invert(ramp)
    coloured = ImageOps.colorize(ramp, start, end)
    return coloured.resize(size, Image.Resampling.BILINEAR)


# ---------------------------------------------------------------------------------------------
# Edit styles
# ---------------------------------------------------------------------------------------------

ColourStyle = Literal["hue", "tint", "swap", "invert", "grey", "sepia", "named"]
TextureStyle = Literal["posterize", "outline", "pixelate", "contrast", "blur", "grain", "none"]


@dataclass(frozen=True, slots=True)
class _ColourChoice:
    style: ColourStyle
    colour: RGB | None = None


_COLOUR_STYLE_WORDS: tuple[tuple[str, ColourStyle], ...] = (
    (r"black\s*(?:and|&)\s*white|b\s*&\s*w|gr[ae]y\s*scale|monochrome|desaturate\w*", "grey"),
    (r"sepia|vintage|old\s+photo\w*|antique", "sepia"),
    (r"invert\w*|negative", "invert"),
)
_COLOUR_KEYWORDS = tuple(
    (re.compile(rf"\b(?:{words})\b", re.IGNORECASE), style) for words, style in _COLOUR_STYLE_WORDS
)
_TEXTURE_WORDS: tuple[tuple[str, TextureStyle], ...] = (
    (r"sketch\w*|drawing|outlines?|line\s*art|pencil|ink|comic\w*", "outline"),
    (r"cartoon\w*|poster\w*|pop\s*art|anime|flat|cel[\s-]*shad\w*", "posterize"),
    (r"pixel\w*|8[\s-]*bit|mosaic|retro\s+game", "pixelate"),
    (r"blur\w*|soft|dreamy|bokeh|fog|foggy|haze|hazy|out\s+of\s+focus", "blur"),
    (r"sharp\w*|vivid|vibrant|dramatic|hdr|contrast\w*", "contrast"),
    # Per-pixel noise barely compresses: the way to ask for an output of many megabytes.
    (r"grain\w*|film\s+grain|nois[ey]\w*|static", "grain"),
)
_TEXTURE_KEYWORDS = tuple(
    (re.compile(rf"\b(?:{words})\b", re.IGNORECASE), style) for words, style in _TEXTURE_WORDS
)
# How much of a "grain" texture is noise: enough that a 2048 x 2048 PNG is over 10 MiB.
_GRAIN_STRENGTH = 0.35
_HASH_COLOURS: tuple[ColourStyle, ...] = ("hue", "hue", "tint", "swap", "invert", "sepia")
_HASH_TEXTURES: tuple[TextureStyle, ...] = ("posterize", "outline", "pixelate", "contrast")


def _edit_styles(text: str, rng: random.Random) -> tuple[_ColourChoice, TextureStyle]:
    """Style words in the prompt win; otherwise the hash picks both styles."""
    # Draw from the RNG unconditionally so later random choices do not depend on the keywords.
    hashed_colour = rng.choice(_HASH_COLOURS)
    hashed_texture = rng.choice(_HASH_TEXTURES)

    colour = _ColourChoice(hashed_colour)
    for pattern, style in _COLOUR_KEYWORDS:
        if pattern.search(text):
            colour = _ColourChoice(style)
            break
    else:
        named = _mentioned_colours(text)
        if named:
            colour = _ColourChoice("named", named[0])

    texture = hashed_texture
    for pattern, texture_style in _TEXTURE_KEYWORDS:
        if pattern.search(text):
            texture = texture_style
            break
    return colour, texture


def _hue_matrix(degrees: float) -> tuple[float, ...]:
    """The CSS/SVG hue-rotate matrix: a fast linear stand-in for an HSV round trip."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return (
        0.213 + c * 0.787 - s * 0.213, 0.715 - c * 0.715 - s * 0.715, 0.072 - c * 0.072 + s * 0.928,
        0.0,
        0.213 - c * 0.213 + s * 0.143, 0.715 + c * 0.285 + s * 0.140, 0.072 - c * 0.072 - s * 0.283,
        0.0,
        0.213 - c * 0.213 - s * 0.787, 0.715 - c * 0.715 + s * 0.715, 0.072 + c * 0.928 + s * 0.072,
        0.0,
    )  # fmt: skip


def _apply_colour(picture: Image.Image, choice: _ColourChoice, rng: random.Random) -> Image.Image:
    style = choice.style
    if style == "hue":
        rotated = picture.convert("RGB", _hue_matrix(rng.uniform(60, 300)))
        return ImageEnhance.Color(rotated).enhance(1.3)
    if style == "swap":
        bands = picture.split()
        order = rng.choice(((1, 2, 0), (2, 0, 1), (2, 1, 0), (1, 0, 2), (0, 2, 1)))
        return Image.merge("RGB", [bands[i] for i in order])
    if style == "invert":
        return ImageOps.invert(picture)
    grey = ImageOps.autocontrast(picture.convert("L"), cutoff=1)
    if style == "grey":
        return grey.convert("RGB")
    if style == "sepia":
        return ImageOps.colorize(grey, (35, 20, 8), (255, 240, 200), mid=(165, 120, 70))
    if style == "named" and choice.colour is not None:
        target = choice.colour
        dark = (target[0] // 5, target[1] // 5, target[2] // 5)
        light = (
            target[0] + (255 - target[0]) * 3 // 4,
            target[1] + (255 - target[1]) * 3 // 4,
            target[2] + (255 - target[2]) * 3 // 4,
        )
        tinted = ImageOps.colorize(grey, dark, light, mid=target)
        return Image.blend(picture, tinted, 0.8)
    # "tint": a random duotone, blended so some of the original colour survives.
    dark = _jitter((30, 20, 50), rng, 30)
    vivid = _jitter(_vivid(rng), rng, 20)
    light = (_clamp(vivid[0] + 60), _clamp(vivid[1] + 60), _clamp(vivid[2] + 60))
    return Image.blend(picture, ImageOps.colorize(grey, dark, light), 0.75)


def _apply_texture(picture: Image.Image, style: TextureStyle, rng: random.Random) -> Image.Image:
    short = min(picture.size)
    if style == "posterize":
        return ImageOps.posterize(picture, rng.choice((2, 3)))
    if style == "outline":
        edges = picture.convert("L").filter(ImageFilter.FIND_EDGES)
        threshold = rng.randint(24, 48)
        mask = edges.point(lambda v: 255 if v > threshold else 0)
        if short >= 256:
            mask = mask.filter(ImageFilter.MaxFilter(3))
        flat = ImageOps.posterize(picture, 4)
        ink = Image.new("RGB", picture.size, (15, 15, 20))
        return Image.composite(ink, flat, mask)
    if style == "pixelate":
        block = max(2, round(max(picture.size) / rng.choice((48, 64, 80))))
        small = picture.resize(
            (max(1, picture.width // block), max(1, picture.height // block)),
            Image.Resampling.BOX,
        )
        return small.resize(picture.size, Image.Resampling.NEAREST)
    if style == "blur":
        return picture.filter(ImageFilter.GaussianBlur(max(1.0, short / 120)))
    if style == "grain":
        # From the seeded RNG, so the bytes stay deterministic.
        noise = Image.frombytes(
            "RGB", picture.size, rng.randbytes(picture.width * picture.height * 3)
        )
        return Image.blend(picture.convert("RGB"), noise, _GRAIN_STRENGTH)
    if style == "contrast":
        punchy = ImageEnhance.Contrast(picture).enhance(1.6)
        return ImageEnhance.Color(punchy).enhance(1.5).filter(ImageFilter.SHARPEN)
    return picture


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def _clean_text(text: str) -> str:
    """One line of drawable text: controls become spaces, lone surrogates U+FFFD, runs collapse."""
    cut = len(text) > _MAX_TEXT_CHARS
    chars: list[str] = []
    for ch in text[:_MAX_TEXT_CHARS]:
        category = unicodedata.category(ch)
        if category in ("Cc", "Zl", "Zp") or ch.isspace():
            chars.append(" ")
        elif category == "Cs":
            chars.append("\ufffd")
        else:
            chars.append(ch)
    cleaned = " ".join("".join(chars).split())
    return cleaned + _ELLIPSIS if cut and cleaned else cleaned


def _font(pixels: int) -> Font:
    # load_default() is cheap (the font bytes are cached) and a fresh object per call keeps
    # FreeType faces out of reach of other threads.
    return ImageFont.load_default(size=max(1, pixels))


def _text_width(font: Font, text: str) -> float:
    if not text:
        return 0.0
    return float(font.getlength(text))


def _line_height(font: Font) -> int:
    box = font.getbbox("Ag")
    return max(1, round((box[3] - min(0, box[1])) * 1.25))


def _fit_prefix(text: str, font: Font, max_width: float, suffix: str = "") -> int:
    """Largest n with text[:n] + suffix no wider than max_width (binary search)."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if _text_width(font, text[:middle] + suffix) <= max_width:
            low = middle
        else:
            high = middle - 1
    return low


def _wrap(text: str, font: Font, max_width: float, max_lines: int) -> list[str]:
    """Greedy word wrap; words wider than a line are broken; overflow ends in an ellipsis."""
    if not text or max_lines < 1:
        return []
    words = text.split(" ")
    lines: list[str] = []
    current = ""
    index = 0
    truncated = False
    while index < len(words):
        word = words[index]
        candidate = f"{current} {word}" if current else word
        if _text_width(font, candidate) <= max_width:
            current = candidate
            index += 1
            continue
        if len(lines) == max_lines - 1:
            truncated = True
            break
        if current:
            lines.append(current)
            current = ""
            continue
        cut = max(1, _fit_prefix(word, font, max_width))
        lines.append(word[:cut])
        words[index] = word[cut:]
        if not words[index]:
            index += 1
    if truncated:
        tail = f"{current} {' '.join(words[index:])}" if current else " ".join(words[index:])
        keep = _fit_prefix(tail, font, max_width, _ELLIPSIS)
        lines.append(tail[:keep].rstrip() + _ELLIPSIS)
    elif current:
        lines.append(current)
    return lines


def _banner_layout(picture: Image.Image, text: str) -> tuple[Font, list[str], int, int]:
    """Font, wrapped lines, line height and padding of a bottom banner for `text`."""
    width, height = picture.size
    pixels = max(9, min(round(height * 0.04), round(width * 0.06)))
    font = _font(pixels)
    line_height = _line_height(font)
    pad = max(2, pixels // 3)
    max_lines = max(1, min(3, (height // 3 - 2 * pad) // line_height))
    lines = _wrap(text, font, width - 2 * pad, max_lines)
    return font, lines, line_height, pad


def _paint_banner(
    picture: Image.Image, font: Font, lines: list[str], line_height: int, pad: int
) -> None:
    width, height = picture.size
    top = max(0, height - len(lines) * line_height - 2 * pad)
    region = picture.crop((0, top, width, height))
    picture.paste(ImageEnhance.Brightness(region).enhance(0.3), (0, top))
    draw = ImageDraw.Draw(picture)
    for number, line in enumerate(lines):
        draw.text((pad, top + pad + number * line_height), line, font=font, fill=(250, 250, 250))


def _draw_banner(picture: Image.Image, text: str) -> None:
    font, lines, line_height, pad = _banner_layout(picture, text)
    if lines:
        _paint_banner(picture, font, lines, line_height, pad)


def _draw_tag(draw: ImageDraw.ImageDraw, origin: tuple[int, int], text: str, font: Font) -> None:
    """Light text on a translucent dark box whose top-left corner is `origin`."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 4)
    x, y = origin
    draw.rectangle(
        (x, y, x + right - left + 2 * pad, y + bottom - top + 2 * pad), fill=(0, 0, 0, 160)
    )
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=(255, 255, 255, 255))


def _draw_seed_label(picture: Image.Image, seed: int) -> None:
    width, height = picture.size
    font = _font(max(8, round(min(height, width) * 0.025)))
    text = f"seed {seed}"
    draw = ImageDraw.Draw(picture, "RGBA")
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 4)
    box_width = right - left + 2 * pad
    margin = max(1, round(min(width, height) * 0.01))
    _draw_tag(draw, (max(0, round(width - box_width - margin)), margin), text, font)


def _draw_centre_panel(picture: Image.Image, text: str) -> None:
    """The prompt, wrapped to at most five lines, centred on a translucent panel."""
    if not text:
        return
    width, height = picture.size
    pixels = max(9, min(round(height * 0.055), round(width * 0.07)))
    font = _font(pixels)
    line_height = _line_height(font)
    pad = max(3, pixels // 2)
    max_lines = max(1, min(5, (height * 2 // 3) // line_height))
    lines = _wrap(text, font, width * 0.8 - 2 * pad, max_lines)
    widths = [_text_width(font, line) for line in lines]
    panel_w = max(widths) + 2 * pad
    panel_h = len(lines) * line_height + 2 * pad
    left, top = (width - panel_w) / 2, (height - panel_h) / 2
    draw = ImageDraw.Draw(picture, "RGBA")
    draw.rounded_rectangle(
        (left, top, left + panel_w, top + panel_h), radius=pad, fill=(0, 0, 0, 150)
    )
    for number, (line, line_width) in enumerate(zip(lines, widths, strict=True)):
        x = (width - line_width) / 2
        draw.text((x, top + pad + number * line_height), line, font=font, fill=(255, 255, 255))


# ---------------------------------------------------------------------------------------------
# Composition layout
# ---------------------------------------------------------------------------------------------


def _grid(sizes: list[Size], area_w: int, area_h: int, gap: int) -> tuple[int, int]:
    """Columns and rows that show the inputs largest; (near) ties go to fewer rows."""
    count = len(sizes)
    best: tuple[float, int, int] | None = None
    for cols in range(1, count + 1):
        rows = math.ceil(count / cols)
        tile_w = max(1.0, (area_w - gap * (cols - 1)) / cols)
        tile_h = max(1.0, (area_h - gap * (rows - 1)) / rows)
        shown = sum(min(tile_w / w, tile_h / h) ** 2 * w * h for w, h in sizes)
        if best is None or shown >= best[0] * 0.9999:
            best = (shown, cols, rows)
    assert best is not None
    return best[1], best[2]
