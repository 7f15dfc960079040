"""The simulator's renderer: real, deterministic pictures that visibly show what was asked."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, ImageChops, ImageStat

from services.simulator.render import (
    ASPECT_SIZES,
    RenderError,
    output_size,
    render_composition,
    render_edit,
    render_text_to_image,
)

RED = (220, 30, 30)
GREEN = (30, 190, 60)
BLUE = (30, 60, 220)
PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


def encode(picture: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **params)
    return buffer.getvalue()


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    return encode(Image.new("RGB", size, colour))


def decode(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


def mean(picture: Image.Image) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(picture.convert("RGB")).mean)


def luminance(picture: Image.Image) -> float:
    return float(ImageStat.Stat(picture.convert("L")).mean[0])


def share_near(picture: Image.Image, colour: tuple[int, int, int], tolerance: int = 40) -> float:
    """Fraction of pixels whose every channel is within `tolerance` of `colour`."""
    diff = ImageChops.difference(picture.convert("RGB"), Image.new("RGB", picture.size, colour))
    red, green, blue = diff.split()
    worst = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    return sum(worst.histogram()[: tolerance + 1]) / (picture.width * picture.height)


def mean_y(picture: Image.Image, colour: tuple[int, int, int]) -> float:
    """Mean row of the pixels close to `colour`."""
    rows = [
        y
        for y in range(0, picture.height, 4)
        for x in range(0, picture.width, 4)
        if max(abs(a - b) for a, b in zip(picture.getpixel((x, y)), colour, strict=True)) < 40
    ]
    assert rows, f"no pixel near {colour}"
    return sum(rows) / len(rows)


# --- sizes -------------------------------------------------------------------------------------


def test_aspect_sizes_have_long_side_1024_and_multiples_of_16() -> None:
    assert set(ASPECT_SIZES) == {"21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"}
    assert ASPECT_SIZES["1:1"] == (1024, 1024)
    for ratio, (width, height) in ASPECT_SIZES.items():
        assert max(width, height) == 1024
        assert width % 16 == 0 and height % 16 == 0
        w_part, h_part = (int(part) for part in ratio.split(":"))
        assert width / height == pytest.approx(w_part / h_part, rel=0.03)
    assert ASPECT_SIZES["16:9"] == (1024, 576)
    assert ASPECT_SIZES["9:16"] == (576, 1024)


def test_output_size_prefers_size_then_aspect_then_default() -> None:
    assert output_size("16:9", "800*600") == (800, 600)
    assert output_size(None, "640x480") == (640, 480)
    assert output_size("16:9", None) == (1024, 576)
    assert output_size("16:9", "") == (1024, 576)
    assert output_size(None, None) == (1024, 1024)
    assert output_size(None, None, default=(512, 768)) == (512, 768)


@pytest.mark.parametrize(
    ("aspect_ratio", "size"), [(None, "big"), (None, "0*100"), ("5:4", None), (None, "1024*")]
)
def test_output_size_rejects_nonsense(aspect_ratio: str | None, size: str | None) -> None:
    with pytest.raises(ValueError):
        output_size(aspect_ratio, size)


@pytest.mark.parametrize("size", [*ASPECT_SIZES.values(), (256, 256), (1536, 640), (300, 1001)])
def test_text_to_image_and_composition_are_exactly_the_requested_size(
    size: tuple[int, int],
) -> None:
    assert decode(render_text_to_image("a lighthouse at dusk", 1, size=size)).size == size
    inputs = [solid(RED), solid(GREEN, (100, 400))]
    assert decode(render_composition(inputs, "side by side", 1, size=size)).size == size


@pytest.mark.parametrize("size", [(1024, 576), (576, 1024), (256, 256), (333, 777)])
def test_edit_with_a_size_is_exactly_that_size(size: tuple[int, int]) -> None:
    assert decode(render_edit(solid(RED), "add a hat", 1, size=size)).size == size


@pytest.mark.parametrize(
    ("input_size", "expected"),
    [((640, 360), (640, 360)), ((90, 300), (90, 300)), ((3000, 1500), (1024, 512))],
)
def test_edit_without_size_keeps_the_input_aspect(
    input_size: tuple[int, int], expected: tuple[int, int]
) -> None:
    out = decode(render_edit(solid(BLUE, input_size), "add a hat", 5))
    assert out.size == expected


# --- determinism and variation -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_same_inputs_and_seed_give_identical_bytes(fmt: str) -> None:
    picture = solid(RED)
    assert render_edit(picture, "make it night", 7, fmt=fmt) == render_edit(
        picture, "make it night", 7, fmt=fmt
    )
    assert render_text_to_image("a red fox", 7, size=(320, 200), fmt=fmt) == render_text_to_image(
        "a red fox", 7, size=(320, 200), fmt=fmt
    )
    inputs = [picture, solid(BLUE)]
    assert render_composition(
        inputs, "both together", 7, size=(400, 300), fmt=fmt
    ) == render_composition(inputs, "both together", 7, size=(400, 300), fmt=fmt)


def test_a_different_seed_or_prompt_gives_a_different_image() -> None:
    picture = solid(RED)
    inputs = [picture, solid(BLUE)]
    edit = render_edit(picture, "make it night", 1, fmt="png")
    assert render_edit(picture, "make it night", 2, fmt="png") != edit
    assert render_edit(picture, "make it day", 1, fmt="png") != edit

    t2i = render_text_to_image("a red fox", 1, size=(320, 200), fmt="png")
    assert render_text_to_image("a red fox", 2, size=(320, 200), fmt="png") != t2i
    assert render_text_to_image("a grey wolf", 1, size=(320, 200), fmt="png") != t2i

    multi = render_composition(inputs, "both", 1, size=(400, 300), fmt="png")
    assert render_composition(inputs, "both", 2, size=(400, 300), fmt="png") != multi
    assert render_composition(inputs, "neither", 1, size=(400, 300), fmt="png") != multi


def test_seeds_pick_visibly_different_styles() -> None:
    picture = encode(Image.linear_gradient("L").resize((256, 256)).convert("RGB"))
    means = {
        tuple(round(c / 8) for c in mean(decode(render_edit(picture, "add a boat", seed))))
        for seed in range(8)
    }
    assert len(means) >= 4

    backgrounds = {
        tuple(round(c / 8) for c in mean(decode(render_text_to_image("boat", seed, size=(64, 64)))))
        for seed in range(8)
    }
    assert len(backgrounds) >= 4


# --- edits are derived from the input ----------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_edit_colour_follows_the_input(seed: int) -> None:
    red = mean(decode(render_edit(solid(RED), "add a small boat", seed)))
    blue = mean(decode(render_edit(solid(BLUE), "add a small boat", seed)))
    assert sum(abs(a - b) for a, b in zip(red, blue, strict=True)) > 30


def test_edit_keeps_the_input_layout_and_obeys_black_and_white() -> None:
    picture = Image.new("RGB", (400, 300), (240, 240, 240))
    picture.paste((20, 20, 20), (200, 0, 400, 300))  # left light, right dark
    out = decode(render_edit(encode(picture), "make it black and white", 3))
    top = out.crop((0, 30, 400, 200))
    left, right = top.crop((0, 0, 190, 170)), top.crop((210, 0, 400, 170))
    assert luminance(left) > luminance(right) + 100
    red, green, blue = mean(top)
    assert abs(red - green) < 3 and abs(green - blue) < 3  # greyscale


def test_edit_obeys_a_colour_word() -> None:
    grey = solid((128, 128, 128))
    red, _, blue = mean(decode(render_edit(grey, "make everything red", 1)))
    assert red > blue + 40
    red, _, blue = mean(decode(render_edit(grey, "make everything blue", 1)))
    assert blue > red + 40


def test_edit_with_grain_is_a_large_png_yet_deterministic() -> None:
    flat = solid((90, 120, 200), (512, 512))
    raw = 512 * 512 * 3
    grainy = render_edit(flat, "add heavy film grain", 3, fmt="png")
    assert len(grainy) > 0.8 * raw  # noise barely compresses
    assert render_edit(flat, "add heavy film grain", 3, fmt="png") == grainy
    assert render_edit(flat, "add heavy film grain", 4, fmt="png") != grainy
    assert len(render_edit(flat, "make it blue", 3, fmt="png")) < 0.2 * raw


def test_edit_prints_the_instruction_on_a_dark_banner() -> None:
    white = solid((255, 255, 255), (600, 400))
    with_text = decode(render_edit(white, "make it black and white", 1, fmt="png"))
    without_text = decode(render_edit(white, "", 1, fmt="png"))
    bottom = (0, 385, 600, 400)
    assert luminance(with_text.crop(bottom)) < 150
    assert luminance(without_text.crop(bottom)) > 200
    # The top-right "seed" label is there in both.
    assert luminance(without_text.crop((540, 0, 600, 20))) < 200


# --- formats and input kinds -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_output_is_encoded_in_the_requested_format(fmt: str) -> None:
    outputs = [
        render_edit(solid(RED), "x", 1, fmt=fmt),
        render_text_to_image("x", 1, size=(128, 96), fmt=fmt),
        render_composition([solid(RED)], "x", 1, size=(128, 96), fmt=fmt),
    ]
    for data in outputs:
        picture = decode(data)
        assert picture.format == PIL_FORMATS[fmt]
        assert picture.mode == "RGB"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        render_text_to_image("x", 1, size=(64, 64), fmt="bmp")


def test_composition_shows_every_input() -> None:
    inputs = [solid(RED), solid(GREEN, (200, 300)), solid(BLUE, (400, 150))]
    for size in [(1024, 1024), (1024, 432), (432, 1024)]:
        out = decode(render_composition(inputs, "a family portrait", 11, size=size, fmt="png"))
        for colour in (RED, GREEN, BLUE):
            assert share_near(out, colour) > 0.03, (size, colour)


def test_composition_of_five_inputs() -> None:
    colours = [RED, GREEN, BLUE, (240, 220, 40), (240, 240, 240)]
    out = decode(
        render_composition([solid(c) for c in colours], "all at once", 2, size=(1024, 768))
    )
    for colour in colours:
        assert share_near(out, colour) > 0.02, colour


def test_composition_needs_an_input() -> None:
    with pytest.raises(ValueError):
        render_composition([], "nothing", 1, size=(64, 64))


def test_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (120, 80), RED), Image.new("RGB", (120, 80), BLUE)]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    out = decode(render_composition([gif], "x", 1, size=(240, 160), fmt="png"))
    assert share_near(out, RED) > 0.3
    assert share_near(out, BLUE) < 0.01
    assert decode(render_edit(gif, "x", 1)).size == (120, 80)


def test_exif_orientation_is_applied() -> None:
    stored = Image.new("RGB", (200, 100), RED)
    stored.paste(BLUE, (100, 0, 200, 100))  # stored: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: red on top, blue below
    rotated = encode(stored, "JPEG", exif=exif.tobytes(), quality=95)

    assert decode(render_edit(rotated, "x", 1)).size == (100, 200)
    out = decode(render_composition([rotated], "x", 1, size=(300, 600), fmt="png"))
    assert mean_y(out, RED) + 100 < mean_y(out, BLUE)


@pytest.mark.parametrize(
    "picture",
    [
        Image.new("RGBA", (64, 48), (255, 0, 0, 128)),
        Image.new("LA", (64, 48), (100, 200)),
        Image.new("L", (64, 48), 90),
        Image.new("1", (64, 48), 1),
        Image.new("I;16", (64, 48), 40000),
        Image.new("RGB", (1, 1), RED),
    ],
    ids=lambda picture: picture.mode,
)
def test_any_image_mode_is_accepted(picture: Image.Image) -> None:
    out = decode(render_edit(encode(picture), "x", 1, fmt="png"))
    assert out.size == picture.size
    assert out.mode == "RGB"


def test_cmyk_jpeg_is_accepted() -> None:
    data = encode(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG")
    assert decode(render_edit(data, "x", 1)).size == (64, 48)


# --- bad inputs and awkward prompts ------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not an image",
        encode(Image.new("RGB", (64, 64), RED), "JPEG")[:200],
        encode(Image.new("RGB", (64, 64), RED))[:-30],
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png"],
)
def test_corrupt_input_raises_render_error(data: bytes) -> None:
    with pytest.raises(RenderError):
        render_edit(data, "x", 1)
    with pytest.raises(RenderError, match="input image 2 of 3") as caught:
        render_composition([solid(RED), data, solid(BLUE)], "x", 1, size=(64, 64))
    assert caught.value.index == 1
    assert isinstance(caught.value, ValueError)


def test_decompression_bomb_raises_render_error() -> None:
    # A few bytes of PNG whose header claims far more pixels than Pillow will ever decode.
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    with pytest.raises(RenderError, match="too many pixels"):
        render_edit(bomb, "x", 1)


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "   ",
        "tabs\tand\nnew\r\nlines\x00nul",
        "emoji 🦄🏳️‍🌈👩🏽‍🚀 everywhere",
        "مرحبا بالعالم — Arabic right to left",
        "日本語のテキストには空白がないので文字ごとに折り返す必要があります" * 4,
        "lone \ud800 surrogate",
        "Z̷̧̛a̸̢l̴g̵o̶ " * 40,
        "supercalifragilistic" * 30,
        "word " * 3000,
    ],
    ids=[
        "empty",
        "blank",
        "controls",
        "emoji",
        "arabic",
        "cjk",
        "surrogate",
        "zalgo",
        "long-word",
        "very-long",
    ],
)
def test_any_prompt_renders(prompt: str) -> None:
    for size in [(1024, 576), (64, 64)]:
        assert decode(render_text_to_image(prompt, 3, size=size)).size == size
        assert decode(render_edit(solid(RED), prompt, 3, size=size)).size == size
        assert decode(render_composition([solid(RED)] * 2, prompt, 3, size=size)).size == size


@pytest.mark.parametrize("seed", [-1, 0, 2**31 - 1, 9_999_999_999])
def test_any_seed_renders(seed: int) -> None:
    assert decode(render_text_to_image("x", seed, size=(64, 64))).size == (64, 64)
