"""Member images in, Discord-sized results out: the bot's one image service.

Every image a member sends passes `prepare_input` before it goes anywhere near WaveSpeed: the bytes
are identified by decoding them (never by file name or the content type Discord reports), checked
against size and pixel limits, turned into one upright RGB or RGBA frame in sRGB, scaled to what the
model uses, and re-encoded without metadata (EXIF can carry a member's location). Results go the
other way through `fit_to_limit`, which re-encodes or scales them down until Discord accepts them.

Pillow work is CPU-bound, so it never runs on the event loop: the bot passes its `Intake`, whose
bounded pool runs it (see services/intake.py); without one (scripts, tests) it runs in a worker
thread (`asyncio.to_thread`). The public API is async and the synchronous helpers are private.
Refusals are `ImageRejectedError`s, each with a `user_message` fit to show the member.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import struct
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

# The plugin imports register the six openers `_open_untrusted` looks up.
from PIL import (
    BmpImagePlugin,  # noqa: F401
    ExifTags,
    GifImagePlugin,  # noqa: F401
    Image,
    ImageCms,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    WebPImagePlugin,  # noqa: F401
    features,
)

from .wavespeed.errors import KontextError
from .wavespeed.media import InputImage, sniff_image_type

if TYPE_CHECKING:
    from .intake import Intake

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_INPUT_BYTES = 20 * 1024 * 1024
"""Inputs above this many bytes are refused before any decoding."""

MAX_INPUT_PIXELS = 40_000_000
"""Inputs whose header claims more pixels than this are refused before decoding (bombs)."""

MODEL_MAX_SIDE = 2048
"""Inputs are scaled down so their long side is at most this many pixels."""

ACCEPTED = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
"""Pillow format names of the images members may send."""

_DISPLAY_NAMES = {"WEBP": "WebP"}
# Multi-picture JPEGs (many phone and camera photos) are JPEGs to the member.
_FORMAT_ALIASES = {"MPO": "JPEG"}

# Exceptions Pillow raises while parsing damaged data: the ones `Image.open` itself treats as
# "not this format", plus what the decoders raise on truncated or inconsistent data.
_PILLOW_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
)
# Pillow also warns about some broken metadata (and warnings are errors in the tests).
_METADATA_ERRORS: tuple[type[Exception], ...] = (*_PILLOW_ERRORS, Warning)

_JPEG_QUALITY = 95
# zlib level 1 is ~4x faster than the default 6 on photos for ~15% more bytes; these files only
# travel to WaveSpeed, so the time matters more than the size.
_PNG_COMPRESS_LEVEL = 1

_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Modes a colour profile can be applied to after resizing; everything else becomes RGB(A) first.
_PROFILE_MODES = frozenset({"RGB", "RGBA", "CMYK", "L"})

# The same table as `ImageOps.exif_transpose`; applied after downscaling, where it is cheaper.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# fit_to_limit: qualities tried at full size, in order, then the quality used while scaling down.
_QUALITY_LADDERS = {"WEBP": (90, 80, 70, 60, 50), "JPEG": (90, 80, 70, 60)}
_DOWNSCALE_QUALITY = 80
_DOWNSCALE_FACTOR = 0.75
_MIN_FITTED_SIDE = 512
_MAX_SIDE_FOR = {"WEBP": 16383, "JPEG": 65500}
_CONTENT_TYPES = {"WEBP": "image/webp", "JPEG": "image/jpeg", "PNG": "image/png"}
_WEBP_AVAILABLE = features.check("webp")

# Size estimates: a mosaic of 6x6 tiles of 128 px (aligned to the 16 px blocks both codecs use)
# encodes in a fraction of the time and lands within ~20% of the real size on photos, exactly on
# noise. An attempt estimated above the limit by more than the margin is skipped; every result is
# still a real encoding checked against the limit, so a bad estimate costs time or a little
# quality, never a wrong answer.
_SAMPLE_TILE = 128
_SAMPLE_GRID = 6
_SAMPLE_PIXELS = (_SAMPLE_TILE * _SAMPLE_GRID) ** 2
_ESTIMATE_MIN_PIXELS = 4 * _SAMPLE_PIXELS  # below this, exact encodings are cheap enough
_ESTIMATE_MARGIN = 1.5


# --------------------------------------------------------------------------------------------
# Errors


def _format_list() -> str:
    names = [_DISPLAY_NAMES.get(name, name) for name in ACCEPTED]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _human_size(size_bytes: int) -> str:
    """'20 MB', '9.5 MB', '500 KB': binary units, as Discord counts its upload limits."""
    megabytes = size_bytes / (1024 * 1024)
    if megabytes >= 1:
        return f"{megabytes:.1f}".removesuffix(".0") + " MB"
    return f"{max(1, round(size_bytes / 1024))} KB"


def _display_filename(filename: str | None) -> str | None:
    """A member's file name made safe to quote: base name, no control characters, bounded."""
    if not filename:
        return None
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    if len(name) > 80:
        name = name[:79] + "…"
    return name or None


class ImageRejectedError(KontextError):
    """A member's image can't be used; `user_message` says why in words they can act on."""

    default_message = "That image can't be used. Please try a different one."

    def __init__(
        self,
        user_message: str | None = None,
        *,
        filename: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(user_message, detail=detail)
        self.filename = filename

    @staticmethod
    def _subject(filename: str | None, fallback: str) -> str:
        return _display_filename(filename) or fallback


class NotAnImageError(ImageRejectedError):
    """The bytes don't decode as any accepted image format, whatever the file is called."""

    def __init__(self, *, filename: str | None = None, detail: str | None = None) -> None:
        subject = self._subject(filename, "That file")
        super().__init__(
            f"{subject} isn't an image I can read. Send a {_format_list()}.",
            filename=filename,
            detail=detail,
        )


class CorruptImageError(ImageRejectedError):
    """The data starts like an image but is truncated or damaged."""

    def __init__(self, *, filename: str | None = None, detail: str | None = None) -> None:
        subject = self._subject(filename, "That image")
        super().__init__(
            f"{subject} looks damaged and can't be opened. Try saving it again.",
            filename=filename,
            detail=detail,
        )


class ImageTooLargeError(ImageRejectedError):
    """The file is over the byte limit; refused without decoding anything."""

    def __init__(
        self, size_bytes: int, *, limit_bytes: int = MAX_INPUT_BYTES, filename: str | None = None
    ) -> None:
        subject = self._subject(filename, "That image")
        super().__init__(
            f"{subject} is over {_human_size(limit_bytes)}. Please send a smaller one.",
            filename=filename,
            detail=f"{size_bytes} bytes > {limit_bytes}",
        )
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class ImageTooManyPixelsError(ImageRejectedError):
    """The header claims more pixels than the limit (a decompression bomb, or just huge)."""

    def __init__(
        self,
        width: int,
        height: int,
        *,
        limit_pixels: int = MAX_INPUT_PIXELS,
        filename: str | None = None,
    ) -> None:
        subject = self._subject(filename, "That image")
        super().__init__(
            f"{subject} is too big to work with ({width}×{height} pixels). "
            f"Please send one under {limit_pixels / 1_000_000:g} megapixels.",
            filename=filename,
            detail=f"{width}x{height} = {width * height} pixels > {limit_pixels}",
        )
        self.width = width
        self.height = height
        self.limit_pixels = limit_pixels


class WrongImageCountError(ImageRejectedError):
    """A command got fewer or more images than it takes."""

    def __init__(self, count: int, *, minimum: int, maximum: int) -> None:
        if count < minimum:
            message = f"This needs at least {minimum} image{'s' if minimum != 1 else ''}."
        else:
            message = f"This takes at most {maximum} image{'s' if maximum != 1 else ''}."
        super().__init__(message, detail=f"got {count}, takes {minimum}..{maximum}")
        self.count = count
        self.minimum = minimum
        self.maximum = maximum


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """A member's image, checked and re-encoded for the model: JPEG, or PNG when it has alpha."""

    data: bytes = field(repr=False)
    content_type: str
    width: int
    height: int
    source_format: str
    """The Pillow format the member sent, e.g. 'WEBP'."""

    def as_input(self) -> InputImage:
        """The bytes as the WaveSpeed client takes them."""
        return InputImage(self.data, self.content_type)


@dataclass(frozen=True, slots=True)
class FittedImage:
    """A result that fits the upload limit, and what was done to it (`note`, for the member)."""

    data: bytes = field(repr=False)
    content_type: str
    width: int
    """0 (with `height`) only when bytes that already fitted could not be read as an image."""
    height: int
    reencoded: bool
    note: str | None


# --------------------------------------------------------------------------------------------
# Public API


async def _off_loop(intake: Intake | None, func: Callable[..., T], *args: object) -> T:
    """Pillow work away from the event loop: on the intake's bounded pool when there is one."""
    if intake is None:
        return await asyncio.to_thread(func, *args)
    return await intake.run(func, *args)


async def prepare_input(
    data: bytes,
    *,
    filename: str | None = None,
    max_side: int = MODEL_MAX_SIDE,
    intake: Intake | None = None,
) -> PreparedImage:
    """Check one member image and prepare it for the model.

    Raises an `ImageRejectedError` subclass when the image can't be used.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be positive, not {max_side}")
    # Checked here, before a thread is even taken: oversized bytes are never parsed.
    if len(data) > MAX_INPUT_BYTES:
        log.info("rejected %r: %d bytes is over the limit", filename, len(data))
        raise ImageTooLargeError(len(data), filename=filename)
    return await _off_loop(intake, _prepare_sync, data, filename, max_side)


async def prepare_inputs(
    files: Sequence[tuple[bytes, str | None]],
    *,
    minimum: int,
    maximum: int,
    max_side: int = MODEL_MAX_SIDE,
    intake: Intake | None = None,
) -> list[PreparedImage]:
    """Check the number of images, then prepare each, in the order given.

    The images are prepared concurrently; when several are rejected, the error raised is the one
    for the earliest, so the member hears about the same file every time.
    """
    if not 0 <= minimum <= maximum:
        raise ValueError(f"bad image count range {minimum}..{maximum}")
    if not minimum <= len(files) <= maximum:
        raise WrongImageCountError(len(files), minimum=minimum, maximum=maximum)
    results = await asyncio.gather(
        *(
            prepare_input(data, filename=name, max_side=max_side, intake=intake)
            for data, name in files
        ),
        return_exceptions=True,
    )
    prepared: list[PreparedImage] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        prepared.append(result)
    return prepared


async def fit_to_limit(
    data: bytes, limit_bytes: int, *, intake: Intake | None = None
) -> FittedImage | None:
    """The result as is when it fits `limit_bytes`, else re-encoded (and scaled) until it does.

    WebP at falling qualities comes first, then JPEG when there is no alpha, then 0.75x steps at
    quality 80 in whichever of the two is smaller. None when nothing fits with the long side at
    512 px or more (or the bytes can't be decoded): the caller then links the result instead.
    """
    if limit_bytes < 1:
        raise ValueError(f"limit_bytes must be positive, not {limit_bytes}")
    if len(data) <= limit_bytes:
        # Only the header is read: no reason to queue a finished result behind image work.
        return _as_is(data)
    return await _off_loop(intake, _fit_sync, data, limit_bytes)


# --------------------------------------------------------------------------------------------
# Decoding (worker thread)


def _open_untrusted(data: bytes, filename: str | None) -> ImageFile.ImageFile:
    """Identify `data` as an accepted format and read its header, without decoding pixels.

    `Image.open` runs Pillow's own decompression-bomb check, which warns from 89 MP up through the
    process-global warnings machinery; calling the registered openers directly leaves the pixel
    check to us. A known signature whose header won't parse means a damaged file, not a non-image.
    """
    prefix = data[:16]
    for name in ACCEPTED:
        factory, accept = Image.OPEN[name]
        # As in `Image.open`: a string means "recognised, but this codec isn't built in".
        verdict = accept(prefix) if accept is not None else True
        if isinstance(verdict, str) or not verdict:
            continue
        try:
            image = factory(io.BytesIO(data), "")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Only a GIF whose first frame spills far outside its own canvas gets here.
            raise CorruptImageError(filename=filename, detail=str(exc)) from exc
        except _PILLOW_ERRORS as exc:
            raise CorruptImageError(filename=filename, detail=f"{name} header: {exc}") from exc
        if _FORMAT_ALIASES.get(image.format or "", image.format) not in ACCEPTED:
            image.close()
            break
        return image
    raise NotAnImageError(filename=filename, detail=f"unrecognised signature {prefix[:8].hex()}")


def _source_format(image: Image.Image) -> str:
    return _FORMAT_ALIASES.get(image.format or "", image.format or "UNKNOWN")


def _check_pixels(image: Image.Image, filename: str | None) -> None:
    width, height = image.size
    if width * height > MAX_INPUT_PIXELS:
        raise ImageTooManyPixelsError(width, height, filename=filename)


def _load(image: ImageFile.ImageFile, filename: str | None) -> None:
    """Decode the first frame (Pillow opens every multi-frame format at frame 0)."""
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # TIFF tiles and GIF frames can claim more than the header did.
        raise ImageTooManyPixelsError(*image.size, filename=filename) from exc
    except _PILLOW_ERRORS as exc:
        raise CorruptImageError(filename=filename, detail=f"{image.format} data: {exc}") from exc


def _orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation; 1 when there is none or the metadata is unreadable."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
        return int(value) if value in _ORIENTATION_TRANSPOSE else 1
    except _METADATA_ERRORS as exc:
        # Broken metadata is common and harmless: the pixels are what matter. (Pillow warns
        # about some of it; where warnings are errors, that must not cost the member the image.)
        log.debug("ignoring unreadable EXIF: %s", exc)
        return 1


def scaled_to_fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled down, aspect kept, so neither side exceeds `max_side`."""
    width, height = size
    long_side = max(width, height)
    if long_side <= max_side:
        return size
    scale = max_side / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale scaled into 8 bits; a plain convert would clip most of it."""
    if image.mode not in _HIGH_BIT_DEPTH_MODES:
        return image
    wide = image if image.mode in ("I", "F") else image.convert("I")
    # A single-band image's extrema are two numbers (the typing covers multi-band tuples too).
    low, high = cast(tuple[float, float], wide.getextrema())
    if image.mode == "F" and low >= 0 and high <= 1.0:
        scale = 255.0
    elif high <= 255:
        scale = 1.0
    elif high <= 65535:
        scale = 255 / 65535
    else:
        scale = 255 / high
    narrow = wide.point(lambda value: value * scale).convert("L")
    # A tRNS colour key is in 16-bit units and no longer matches anything.
    narrow.info.pop("transparency", None)
    return narrow


def _settle_alpha(image: Image.Image) -> Image.Image:
    """RGBA when any pixel is see-through; otherwise a mode a profile can still apply to."""
    if image.has_transparency_data:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        lowest_alpha, _ = cast(tuple[int, int], rgba.getchannel("A").getextrema())
        return rgba if lowest_alpha < 255 else rgba.convert("RGB")
    if image.mode in _PROFILE_MODES:
        return image
    return image.convert("RGB")


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Pixels moved from their embedded colour profile into sRGB.

    The profile is dropped with the rest of the metadata, so without this a Display P3 phone photo
    would look washed out to the model. Unusable or mismatched profiles are ignored.
    """
    if not icc:
        return image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower():
            return image
        # A profile per call: lcms loads profile tags lazily, so sharing one across threads races.
        srgb = ImageCms.createProfile("sRGB")
        mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, profile, srgb, outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.debug("ignoring unusable colour profile: %s", exc)
        return image
    return converted if converted is not None else image


def _normalise(image: Image.Image, target: tuple[int, int], orientation: int) -> Image.Image:
    """One upright RGB or RGBA frame of `target` size (before rotation) in sRGB, no metadata."""
    icc = image.info.get("icc_profile")
    frame = _settle_alpha(_eight_bit(image))
    if frame.size != target:
        frame = frame.resize(target, Image.Resampling.LANCZOS)
    if frame.mode in _PROFILE_MODES:
        frame = _to_srgb(frame, icc)
    if frame.mode not in ("RGB", "RGBA"):
        frame = frame.convert("RGB")
    if orientation in _ORIENTATION_TRANSPOSE:
        frame = frame.transpose(_ORIENTATION_TRANSPOSE[orientation])
    if frame is image:
        frame = image.copy()
    # Encoders copy some of `info` (PNG keeps the ICC profile): start from nothing.
    frame.info = {}
    return frame


def _decode(data: bytes, filename: str | None, max_side: int | None) -> tuple[Image.Image, str]:
    """The normalised first frame of `data` and its format; rejects what can't be used."""
    with _open_untrusted(data, filename) as image:
        source_format = _source_format(image)
        _check_pixels(image, filename)
        target = image.size if max_side is None else scaled_to_fit(image.size, max_side)
        if isinstance(image, JpegImagePlugin.JpegImageFile) and target != image.size:
            # libjpeg can decode at 1/2, 1/4 or 1/8 scale for a fraction of the work; draft()
            # never picks a scale that goes below the target, so LANCZOS still finishes the job.
            image.draft(None, target)
        _load(image, filename)
        orientation = _orientation(image)
        try:
            frame = _normalise(image, target, orientation)
        except ValueError as exc:
            # A pixel mode Pillow can't convert to RGB (e.g. premultiplied greyscale).
            raise NotAnImageError(filename=filename, detail=f"mode {image.mode}: {exc}") from exc
    return frame, source_format


def _prepare_sync(data: bytes, filename: str | None, max_side: int) -> PreparedImage:
    started = time.perf_counter()
    try:
        frame, source_format = _decode(data, filename, max_side)
    except ImageRejectedError as exc:
        log.info("rejected %r: %s", filename, exc)
        raise
    buffer = io.BytesIO()
    if frame.mode == "RGBA":
        frame.save(buffer, "PNG", compress_level=_PNG_COMPRESS_LEVEL)
        content_type = "image/png"
    else:
        frame.save(buffer, "JPEG", quality=_JPEG_QUALITY, optimize=False)
        content_type = "image/jpeg"
    prepared = PreparedImage(
        data=buffer.getvalue(),
        content_type=content_type,
        width=frame.width,
        height=frame.height,
        source_format=source_format,
    )
    log.debug(
        "prepared %r: %s %d bytes -> %s %dx%d %d bytes in %.0f ms",
        filename,
        source_format,
        len(data),
        content_type,
        prepared.width,
        prepared.height,
        len(prepared.data),
        (time.perf_counter() - started) * 1000,
    )
    return prepared


# --------------------------------------------------------------------------------------------
# Fitting results to the upload limit (worker thread)


def header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone, no pixels decoded; (0, 0) when unreadable."""
    try:
        with _open_untrusted(data, None) as image:
            return image.size
    except ImageRejectedError:
        return 0, 0


def _as_is(data: bytes) -> FittedImage:
    width, height = header_size(data)
    return FittedImage(
        data=data,
        content_type=sniff_image_type(data) or "application/octet-stream",
        width=width,
        height=height,
        reencoded=False,
        note=None,
    )


def _fit_sync(data: bytes, limit: int) -> FittedImage | None:
    if len(data) <= limit:
        return _as_is(data)
    started = time.perf_counter()
    try:
        frame, source_format = _decode(data, None, None)
    except ImageRejectedError as exc:
        log.warning("can't re-encode a %d-byte result to fit %d bytes: %s", len(data), limit, exc)
        return None
    fitted = _FitSearch(frame, limit).run()
    elapsed_ms = (time.perf_counter() - started) * 1000
    if fitted is None:
        log.info(
            "%s result of %d bytes (%dx%d) can't fit %d bytes (%.0f ms)",
            source_format,
            len(data),
            frame.width,
            frame.height,
            limit,
            elapsed_ms,
        )
    else:
        log.info(
            "%s result of %d bytes (%dx%d) re-encoded to %s %dx%d, %d bytes, to fit %d (%.0f ms)",
            source_format,
            len(data),
            frame.width,
            frame.height,
            fitted.content_type,
            fitted.width,
            fitted.height,
            len(fitted.data),
            limit,
            elapsed_ms,
        )
    return fitted


class _FitSearch:
    """The encodings tried for one decoded result, each made at most once.

    Scaled copies are made from the decoded frame, never by decoding again, and are cached per
    step, as are encodings and size estimates.
    """

    def __init__(self, frame: Image.Image, limit: int) -> None:
        self._frame = frame
        self._limit = limit
        self._formats: tuple[str, ...] = ("WEBP",) if frame.mode == "RGBA" else ("WEBP", "JPEG")
        if not _WEBP_AVAILABLE:
            self._formats = tuple(name for name in self._formats if name != "WEBP")
        self._scaled: dict[int, Image.Image] = {0: frame}
        self._samples: dict[int, Image.Image | None] = {}
        self._encoded: dict[tuple[str, int, int], bytes] = {}
        self._estimates: dict[tuple[str, int, int], int] = {}

    def run(self) -> FittedImage | None:
        """The first attempt that fits, in the documented order; None when none does."""
        for name in self._formats:
            top, *rest = _QUALITY_LADDERS[name]
            if self._worth_trying(name, top, 0) and self._fits(name, top, 0):
                return self._result(name, top, 0)
            # Size falls with quality, so when even the lowest is far off the format is dropped
            # without trying the ones in between.
            if not self._worth_trying(name, rest[-1], 0):
                continue
            for quality in rest:
                if self._worth_trying(name, quality, 0) and self._fits(name, quality, 0):
                    return self._result(name, quality, 0)

        steps = self._step_count()
        if steps == 0 or not self._formats:
            return None
        # "Best" is judged once, at the first step, and kept: it depends on the content.
        name = min(
            self._formats,
            key=lambda n: (
                self._estimate(n, _DOWNSCALE_QUALITY, 1) if self._encodable(n, 1) else math.inf
            ),
        )
        for step in range(1, steps + 1):
            # The smallest step is always really encoded before giving up.
            if (step == steps or self._worth_trying(name, _DOWNSCALE_QUALITY, step)) and (
                self._fits(name, _DOWNSCALE_QUALITY, step)
            ):
                return self._result(name, _DOWNSCALE_QUALITY, step)
        return None

    def _step_count(self) -> int:
        """How many 0.75x steps keep the long side at 512 px or more."""
        long_side = max(self._frame.size)
        steps = 0
        while round(long_side * _DOWNSCALE_FACTOR ** (steps + 1)) >= _MIN_FITTED_SIDE:
            steps += 1
        return steps

    def _image(self, step: int) -> Image.Image:
        if step not in self._scaled:
            scale = _DOWNSCALE_FACTOR**step
            width, height = self._frame.size
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            # LANCZOS costs about one pass over its source whatever the ratio, so each step is
            # made from the largest one below it rather than from the full frame every time.
            source = self._scaled[max(known for known in self._scaled if known < step)]
            self._scaled[step] = source.resize(size, Image.Resampling.LANCZOS)
        return self._scaled[step]

    def _encodable(self, name: str, step: int) -> bool:
        return max(self._image(step).size) <= _MAX_SIDE_FOR[name]

    def _fits(self, name: str, quality: int, step: int) -> bool:
        return self._encodable(name, step) and len(self._encode(name, quality, step)) <= self._limit

    def _worth_trying(self, name: str, quality: int, step: int) -> bool:
        if not self._encodable(name, step):
            return False
        return self._estimate(name, quality, step) <= self._limit * _ESTIMATE_MARGIN

    def _encode(self, name: str, quality: int, step: int) -> bytes:
        key = (name, quality, step)
        if key not in self._encoded:
            self._encoded[key] = _encode(self._image(step), name, quality)
            log.debug(
                "fit attempt %s q%d step %d: %d bytes", name, quality, step, len(self._encoded[key])
            )
        return self._encoded[key]

    def _estimate(self, name: str, quality: int, step: int) -> int:
        """Roughly how many bytes this attempt would take; exact for small images."""
        key = (name, quality, step)
        if key in self._encoded:
            return len(self._encoded[key])
        if key not in self._estimates:
            sample = self._sample(step)
            if sample is None:
                self._estimates[key] = len(self._encode(name, quality, step))
            else:
                image = self._image(step)
                ratio = (image.width * image.height) / (sample.width * sample.height)
                self._estimates[key] = round(len(_encode(sample, name, quality)) * ratio)
        return self._estimates[key]

    def _sample(self, step: int) -> Image.Image | None:
        """A mosaic of tiles spread over the image; None when the image is small enough."""
        if step not in self._samples:
            image = self._image(step)
            span = _SAMPLE_TILE * _SAMPLE_GRID
            if image.width * image.height < _ESTIMATE_MIN_PIXELS or min(image.size) < span:
                self._samples[step] = None
            else:
                self._samples[step] = _mosaic(image)
        return self._samples[step]

    def _result(self, name: str, quality: int, step: int) -> FittedImage:
        image = self._image(step)
        label = _DISPLAY_NAMES.get(name, name)
        scaled = f" and scaled down to {image.width}×{image.height}" if step else ""
        return FittedImage(
            data=self._encode(name, quality, step),
            content_type=_CONTENT_TYPES[name],
            width=image.width,
            height=image.height,
            reencoded=True,
            note=(
                f"Re-encoded as {label}{scaled} to fit Discord's "
                f"{_human_size(self._limit)} upload limit."
            ),
        )


def _mosaic(image: Image.Image) -> Image.Image:
    """Tiles from an even grid over `image`, block-aligned, pasted side by side."""
    tile, grid = _SAMPLE_TILE, _SAMPLE_GRID
    mosaic = Image.new(image.mode, (tile * grid, tile * grid))
    for row in range(grid):
        top = (image.height - tile) * row // (grid - 1) // 16 * 16
        for column in range(grid):
            left = (image.width - tile) * column // (grid - 1) // 16 * 16
            patch = image.crop((left, top, left + tile, top + tile))
            mosaic.paste(patch, (column * tile, row * tile))
    return mosaic


def _encode(image: Image.Image, name: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if name == "WEBP":
        image.save(buffer, "WEBP", quality=quality)
    else:
        # Huffman optimisation costs little next to WebP and buys a few percent here.
        image.save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
