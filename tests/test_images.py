"""The image service: checking and preparing member images, fitting results to upload limits.

Every input is built here with Pillow (or by hand, for the bombs and the colour profile), so the
tests show exactly which bytes produce which outcome.
"""

from __future__ import annotations

import asyncio
import io
import os
import struct

import pytest
from PIL import Image, ImageCms

from services.images import (
    ACCEPTED,
    MAX_INPUT_BYTES,
    CorruptImageError,
    FittedImage,
    ImageRejectedError,
    ImageTooLargeError,
    ImageTooManyPixelsError,
    NotAnImageError,
    PreparedImage,
    WrongImageCountError,
    fit_to_limit,
    prepare_input,
    prepare_inputs,
)
from services.wavespeed.errors import KontextError
from services.wavespeed.media import InputImage
from tests.images import decoded, png_claiming

MB = 1024 * 1024
RED, BLUE = (220, 20, 20), (20, 20, 220)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def two_halves(size: tuple[int, int] = (120, 80)) -> Image.Image:
    """Red on the left, blue on the right: shows rotations and flips."""
    image = Image.new("RGB", size, RED)
    image.paste(BLUE, (size[0] // 2, 0, size[0], size[1]))
    return image


def noise(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    return Image.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode)))


def close_to(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def swapped_primaries_profile() -> bytes:
    """A minimal ICC v2 RGB profile whose red and blue primaries are swapped.

    Pixels stored as pure red mean blue under it, which makes the conversion to sRGB obvious.
    """

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 563) + bytes(2)  # gamma 2.2 (u8.8)
    text = b"Swapped primaries\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.1431, 0.0606, 0.7141)),  # sRGB's blue, D50
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.4361, 0.2225, 0.0139)),  # sRGB's red, D50
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    start = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", start + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", start + len(body))
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + bytes(48)
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


@pytest.fixture(scope="module")
def noisy_png() -> bytes:
    """3000 x 3000 of random RGB: ~27 MB as PNG, and no codec can squeeze it much."""
    return encode(noise((3000, 3000)), "PNG", compress_level=0)


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """A 4000 x 3000 (12 MP) photo-like JPEG: a gradient with grain."""
    gradient = Image.linear_gradient("L").resize((4000, 3000))
    grain = Image.effect_noise((4000, 3000), 24)
    image = Image.merge(
        "RGB", (gradient, grain, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    )
    return encode(image, "JPEG", quality=90)


# --------------------------------------------------------------------------------------------
# prepare_input: what comes out


@pytest.mark.parametrize("fmt", ACCEPTED)
async def test_every_accepted_format_comes_out_as_a_decodable_rgb_jpeg(fmt: str) -> None:
    source = two_halves()
    data = encode(source if fmt != "GIF" else source.convert("P"), fmt)

    prepared = await prepare_input(data, filename=f"picture.{fmt.lower()}")

    assert isinstance(prepared, PreparedImage)
    assert prepared.source_format == fmt
    assert (prepared.content_type, prepared.width, prepared.height) == ("image/jpeg", 120, 80)
    image = decoded(prepared.data)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (120, 80))
    assert close_to(image.getpixel((10, 40)), RED)
    assert close_to(image.getpixel((110, 40)), BLUE)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("1", "BMP"), ("P", "PNG"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("RGB", "WEBP")],
)
async def test_other_pixel_modes_become_rgb(mode: str, fmt: str) -> None:
    data = encode(two_halves().convert(mode), fmt)

    image = decoded((await prepare_input(data)).data)

    assert (image.mode, image.size) == ("RGB", (120, 80))


async def test_sixteen_bit_greyscale_is_scaled_not_clipped_to_white() -> None:
    data = encode(Image.new("I;16", (32, 32), 32768), "PNG")

    image = decoded((await prepare_input(data)).data)

    assert abs(image.getpixel((16, 16))[0] - 128) <= 3


async def test_png_with_transparency_stays_rgba_png() -> None:
    source = two_halves().convert("RGBA")
    source.putpixel((5, 5), (0, 0, 0, 0))
    source.paste((10, 200, 10, 128), (60, 0, 120, 40))

    prepared = await prepare_input(encode(source, "PNG"))

    assert prepared.content_type == "image/png"
    image = decoded(prepared.data)
    assert (image.format, image.mode) == ("PNG", "RGBA")
    assert image.getpixel((5, 5))[3] == 0
    assert image.getpixel((90, 20)) == (10, 200, 10, 128)
    assert image.getpixel((90, 60)) == (*BLUE, 255)


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (Image.new("P", (40, 40), 3), "GIF"),  # palette with a transparent index
        (Image.new("LA", (40, 40), (128, 0)), "PNG"),
    ],
    ids=["palette-gif", "grey-alpha-png"],
)
async def test_other_transparency_becomes_rgba(image: Image.Image, fmt: str) -> None:
    data = encode(image, fmt, transparency=3) if fmt == "GIF" else encode(image, fmt)

    prepared = await prepare_input(data)

    assert prepared.content_type == "image/png"
    assert decoded(prepared.data).getpixel((0, 0))[3] == 0


async def test_fully_opaque_alpha_is_dropped_and_sent_as_jpeg() -> None:
    data = encode(two_halves().convert("RGBA"), "PNG")

    prepared = await prepare_input(data)

    assert prepared.content_type == "image/jpeg"
    assert decoded(prepared.data).mode == "RGB"


async def test_exif_orientation_is_applied_and_metadata_stripped() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    exif[0x010F] = "Camera Maker"
    exif.get_ifd(0x8825)[2] = (51.0, 30.0, 0.0)  # GPS latitude: what stripping protects
    data = encode(two_halves((120, 80)), "JPEG", exif=exif.tobytes(), quality=95)

    prepared = await prepare_input(data)

    assert (prepared.width, prepared.height) == (80, 120)
    image = decoded(prepared.data)
    assert image.size == (80, 120)
    # Clockwise, the left (red) half ends up on top.
    assert close_to(image.getpixel((40, 20)), RED)
    assert close_to(image.getpixel((40, 100)), BLUE)
    assert not image.getexif()
    assert "exif" not in image.info


async def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (50, 30), colour) for colour in (RED, (20, 220, 20), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 3

    image = decoded((await prepare_input(data)).data)

    assert image.size == (50, 30)
    assert close_to(image.getpixel((25, 15)), RED)


async def test_large_input_is_scaled_to_the_model_side_keeping_aspect(big_jpeg: bytes) -> None:
    prepared = await prepare_input(big_jpeg)

    assert (prepared.width, prepared.height) == (2048, 1536)
    assert decoded(prepared.data).size == (2048, 1536)


async def test_max_side_is_configurable_and_small_images_are_not_enlarged() -> None:
    data = encode(two_halves((400, 100)), "PNG")

    assert (await prepare_input(data, max_side=200)).width == 200
    assert (await prepare_input(data, max_side=200)).height == 50
    assert (await prepare_input(data, max_side=4096)).width == 400


async def test_embedded_colour_profile_is_converted_to_srgb_then_dropped() -> None:
    data = encode(
        Image.new("RGB", (32, 32), (255, 0, 0)), "PNG", icc_profile=swapped_primaries_profile()
    )

    image = decoded((await prepare_input(data)).data)

    # Stored red means blue under that profile, and blue is what the model should see.
    red, _, blue = image.getpixel((16, 16))
    assert blue > 200 and red < 60
    assert "icc_profile" not in image.info


async def test_srgb_profile_leaves_pixels_alone() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.new("RGBA", (32, 32), (200, 100, 50, 128)), "PNG", icc_profile=srgb)

    image = decoded((await prepare_input(data)).data)

    assert image.getpixel((16, 16)) == (200, 100, 50, 128)
    assert "icc_profile" not in image.info


async def test_as_input_hands_the_bytes_to_the_client() -> None:
    prepared = await prepare_input(encode(two_halves(), "PNG"))

    image = prepared.as_input()

    assert isinstance(image, InputImage)
    assert (image.data, image.content_type) == (prepared.data, "image/jpeg")
    assert "data" not in repr(prepared)  # megabytes of bytes stay out of logs


async def test_identification_ignores_the_file_name() -> None:
    prepared = await prepare_input(encode(two_halves(), "WEBP"), filename="holiday.jpg")

    assert prepared.source_format == "WEBP"


# --------------------------------------------------------------------------------------------
# prepare_input: what is refused


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
        b"just some text, honestly\n" * 20,
        b"",
    ],
    ids=["pdf", "text", "empty"],
)
async def test_non_image_named_png_is_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImageError) as caught:
        await prepare_input(data, filename="cat.png")

    error = caught.value
    assert isinstance(error, ImageRejectedError) and isinstance(error, KontextError)
    assert error.filename == "cat.png"
    assert error.user_message == (
        "cat.png isn't an image I can read. Send a PNG, JPEG, WebP, GIF, BMP or TIFF."
    )


async def test_messages_without_a_file_name_say_that_file() -> None:
    with pytest.raises(NotAnImageError) as caught:
        await prepare_input(b"not an image")

    assert caught.value.user_message.startswith("That file isn't an image I can read.")


async def test_file_names_are_quoted_safely() -> None:
    with pytest.raises(NotAnImageError) as caught:
        await prepare_input(b"nope", filename="../../etc/evil\nname.png")

    assert caught.value.user_message.startswith("evilname.png isn't")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("keep", [0.5, 20], ids=["in-pixels", "in-header"])
async def test_truncated_image_is_corrupt(fmt: str, keep: float) -> None:
    whole = encode(noise((200, 150)), fmt)
    cut = int(len(whole) * keep) if keep < 1 else int(keep)

    with pytest.raises(CorruptImageError) as caught:
        await prepare_input(whole[:cut], filename="holiday.jpg")

    assert caught.value.user_message == (
        "holiday.jpg looks damaged and can't be opened. Try saving it again."
    )


async def test_over_the_byte_limit_is_refused_without_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded an oversized file")

    monkeypatch.setattr("services.images._open_untrusted", no_decoding)

    with pytest.raises(ImageTooLargeError) as caught:
        await prepare_input(bytes(MAX_INPUT_BYTES + 1), filename="huge.png")

    assert caught.value.user_message == "huge.png is over 20 MB. Please send a smaller one."
    assert caught.value.size_bytes == MAX_INPUT_BYTES + 1


async def test_exactly_the_byte_limit_is_decoded() -> None:
    with pytest.raises(NotAnImageError):
        await prepare_input(bytes(MAX_INPUT_BYTES))


@pytest.mark.parametrize(
    "side",
    [7_000, 10_000, 20_000],
    ids=["49MP-ours-only", "100MP-pillow-warns", "400MP-pillow-errors"],
)
async def test_decompression_bomb_is_refused_from_its_header(
    side: int, recwarn: pytest.WarningsRecorder
) -> None:
    bomb = png_claiming(side, side)
    assert len(bomb) < 100_000

    with pytest.raises(ImageTooManyPixelsError) as caught:
        await prepare_input(bomb, filename="bomb.png")

    assert caught.value.user_message == (
        f"bomb.png is too big to work with ({side}×{side} pixels). "
        "Please send one under 40 megapixels."
    )
    assert not recwarn.list, [str(warning.message) for warning in recwarn.list]


# --------------------------------------------------------------------------------------------
# prepare_inputs


async def test_prepare_inputs_keeps_order() -> None:
    files = [(encode(two_halves((30 + 10 * i, 20)), "PNG"), f"{i}.png") for i in range(3)]

    prepared = await prepare_inputs(files, minimum=1, maximum=4)

    assert [image.width for image in prepared] == [30, 40, 50]


@pytest.mark.parametrize(
    ("count", "minimum", "maximum", "message"),
    [
        (0, 1, 1, "This needs at least 1 image."),
        (1, 2, 4, "This needs at least 2 images."),
        (3, 1, 2, "This takes at most 2 images."),
    ],
)
async def test_prepare_inputs_checks_the_count_first(
    count: int, minimum: int, maximum: int, message: str
) -> None:
    # Not images at all: the count is checked before anything is decoded.
    files = [(b"junk", None)] * count

    with pytest.raises(WrongImageCountError) as caught:
        await prepare_inputs(files, minimum=minimum, maximum=maximum)

    assert caught.value.user_message == message


async def test_prepare_inputs_reports_the_earliest_bad_file() -> None:
    files = [
        (encode(two_halves(), "PNG"), "fine.png"),
        (b"%PDF-1.4 not an image", "second.pdf"),
        (bytes(MAX_INPUT_BYTES + 1), "third.png"),
    ]

    with pytest.raises(NotAnImageError) as caught:
        await prepare_inputs(files, minimum=1, maximum=5)

    assert caught.value.filename == "second.pdf"


# --------------------------------------------------------------------------------------------
# Not blocking the event loop


async def test_prepare_input_runs_off_the_event_loop(big_jpeg: bytes) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # let it start
    before = ticks
    await prepare_input(big_jpeg)
    during = ticks - before
    task.cancel()

    # Decoding 12 MP takes a good fraction of a second; on the loop it would allow no ticks.
    assert during >= 3


# --------------------------------------------------------------------------------------------
# fit_to_limit


async def test_fit_returns_small_results_untouched() -> None:
    data = encode(two_halves(), "PNG")

    fitted = await fit_to_limit(data, 10 * MB)

    assert fitted == FittedImage(
        data=data, content_type="image/png", width=120, height=80, reencoded=False, note=None
    )
    assert fitted.data is data


async def test_fit_reencodes_a_noisy_image_to_fit(noisy_png: bytes) -> None:
    assert len(noisy_png) > 20 * MB

    fitted = await fit_to_limit(noisy_png, 2 * MB)

    assert fitted is not None and fitted.reencoded
    assert len(fitted.data) <= 2 * MB
    image = decoded(fitted.data)
    assert image.size == (fitted.width, fitted.height)
    assert image.format == {"image/webp": "WEBP", "image/jpeg": "JPEG"}[fitted.content_type]
    # Noise can't be squeezed 13x by quality alone: it had to be scaled, in 0.75 steps.
    steps = [round(3000 * 0.75**step) for step in range(1, 7)]
    assert fitted.width in steps
    # ...and it is the largest step that fits (size estimates skip attempts, never answers).
    larger = steps.index(fitted.width) - 1
    if larger >= 0:
        bigger = decoded(noisy_png).resize((steps[larger],) * 2, Image.Resampling.LANCZOS)
        assert len(encode(bigger, image.format, quality=80)) > 2 * MB
    assert fitted.note is not None
    assert "2 MB upload limit" in fitted.note
    assert f"scaled down to {fitted.width}×{fitted.height}" in fitted.note


async def test_fit_lowers_quality_before_scaling() -> None:
    image = Image.linear_gradient("L").resize((1024, 1024)).convert("RGB")
    image = Image.blend(image, noise((1024, 1024)), 0.15)
    data = encode(image, "PNG", compress_level=0)

    # WebP is ~400 KB at quality 90 and ~220 KB at 80 here, ~140 KB at 70.
    fitted = await fit_to_limit(data, 256 * 1024)

    assert fitted is not None
    assert (fitted.content_type, fitted.width, fitted.height) == ("image/webp", 1024, 1024)
    assert 180_000 < len(fitted.data) <= 256 * 1024  # the best quality that fits, not the least
    assert fitted.note == "Re-encoded as WebP to fit Discord's 256 KB upload limit."


async def test_fit_gives_up_when_even_512_pixels_is_too_big(noisy_png: bytes) -> None:
    data = encode(decoded(noisy_png).crop((0, 0, 1000, 1000)), "PNG", compress_level=0)

    assert await fit_to_limit(data, 2048) is None


async def test_fit_keeps_alpha_as_webp() -> None:
    alpha = Image.linear_gradient("L").resize((1200, 1200))
    image = noise((1200, 1200))
    image.putalpha(alpha)
    data = encode(image, "PNG", compress_level=0)

    fitted = await fit_to_limit(data, len(data) // 3)

    assert fitted is not None
    assert fitted.content_type == "image/webp"
    assert len(fitted.data) <= len(data) // 3
    result = decoded(fitted.data)
    assert result.mode == "RGBA"
    assert result.getpixel((0, 0))[3] < 10
    assert result.getpixel((0, result.height - 1))[3] > 245


async def test_fit_gives_up_on_undecodable_bytes() -> None:
    assert await fit_to_limit(b"\x89PNG\r\n\x1a\n" + bytes(5000), 1000) is None
