"""End-to-end: what a member sends in, and what they see come back.

The real KontextBot against the local Discord, with its built-in WaveSpeed simulator (no key is
configured in tests). Every assertion is about what the member sees: the ephemeral status
message, the result message in the channel (mention, embed, buttons), its attachments decoded
with Pillow, and the thread started on it. The simulator's request counter proves that refused
inputs never reach the image service.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from PIL import Image

from services import runtime
from services.simulator import SimulatorConfig, WaveSpeedSimulator
from tests.images import decoded, make_png, png_claiming
from tests.local_discord import (
    Channel,
    DiscordDriver,
    InteractionHandle,
    LocalDiscord,
    LocalDiscordConfig,
    Message,
    MessageFlag,
    RunningBot,
    payloads,
)

pytest_plugins = ("tests.local_discord.fixtures",)

MiB = 1024 * 1024
DRY_RUN_FOOTER = "Dry run: made by the built-in WaveSpeed simulator. Nothing was billed."
RESULT_BUTTONS = ["Edit", "Reroll", "Undo", "Details", "Delete"]
RED, GREEN, BLUE = (220, 30, 30), (30, 190, 40), (30, 60, 220)
# Results a member should never have to wait long for: the simulator has no latency here.
WAIT = 10.0


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _started_simulators(monkeypatch: pytest.MonkeyPatch) -> list[WaveSpeedSimulator]:
    """Every simulator the bot starts for its dry run (the bot keeps no handle on it).

    Autouse, so the recorder is in place before `running_bot` starts the bot.
    """
    started: list[WaveSpeedSimulator] = []
    original = runtime.run_simulator

    @contextlib.asynccontextmanager
    async def recording(
        config: SimulatorConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[WaveSpeedSimulator]:
        async with original(config, **kwargs) as simulator:
            started.append(simulator)
            yield simulator

    monkeypatch.setattr(runtime, "run_simulator", recording)
    return started


@pytest.fixture
def simulator(
    running_bot: RunningBot, _started_simulators: list[WaveSpeedSimulator]
) -> WaveSpeedSimulator:
    """The WaveSpeed simulator the running bot talks to."""
    (simulator,) = _started_simulators
    assert running_bot.bot.wavespeed is not None and running_bot.bot.wavespeed.simulated
    return simulator


@pytest.fixture
def age_restricted(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> Callable[[str], Awaitable[Channel]]:
    """Creates an age-restricted (NSFW) text channel, announced to the bot by CHANNEL_CREATE."""

    async def create(name: str) -> Channel:
        state, bot = local_discord.state, running_bot.bot
        channel = state.add_text_channel(local_discord.guild, name, nsfw=True)
        seen = asyncio.ensure_future(
            bot.wait_for("guild_channel_create", check=lambda c: c.id == channel.id, timeout=WAIT)
        )
        await asyncio.sleep(0)  # the listener is in place before the event goes out
        state.dispatch("CHANNEL_CREATE", payloads.channel_payload(state, channel))
        assert (await seen).is_nsfw(), "the bot sees the channel as age-restricted"
        return channel

    return create


# -- helpers ------------------------------------------------------------------------------------


async def final_status(ix: InteractionHandle) -> Message:
    """The member's ephemeral status message once it says how things ended."""
    status = await ix.response(lambda m: m.content.startswith(("✅", "❌")), timeout=WAIT)
    assert status.flags & MessageFlag.EPHEMERAL, "the status is for the member's eyes only"
    return status


async def result_message(discord: DiscordDriver, status: Message) -> Message:
    """The result the "✅ Done: <link>" status points to."""
    match = re.fullmatch(
        r"✅ Done: https://discord\.com/channels/(\d+|@me)/(\d+)/(\d+)", status.content
    )
    assert match, status.content
    message = discord.state.messages[int(match[3])]
    assert message.channel_id == int(match[2])
    assert not message.ephemeral and not message.deleted, "results are ordinary messages"
    assert message.author.id == discord.bot_user.id
    return message


def job_of(result: Message) -> int:
    """The job id a result's buttons carry (custom_id "kontext:<action>:<job id>")."""
    (job_id,) = {int(b["custom_id"].rsplit(":", 1)[1]) for b in result.buttons}
    return job_id


def embed_fields(message: Message) -> dict[str, str]:
    (embed,) = message.embeds
    return {field["name"]: field["value"] for field in embed.get("fields") or []}


def check_result_card(message: Message, discord: DiscordDriver, *, step: int = 1) -> None:
    """What every result shows: the mention, the embed with its dry-run footer, the buttons."""
    assert message.content == discord.user.mention and message.mentions(discord.user)
    (embed,) = message.embeds
    assert embed["title"] == f"Step {step}"
    assert embed["footer"]["text"] == DRY_RUN_FOOTER
    fields = embed_fields(message)
    assert {"Model", "Seed", "Guidance", "Time", "Cost"} <= set(fields)
    assert message.button_labels == RESULT_BUTTONS


async def images_of(discord: DiscordDriver, message: Message) -> list[Image.Image]:
    """Each attachment, downloaded from the CDN as a member's client would, and decoded."""
    return [decoded(await discord.download(a)) for a in message.attachments]


def has_colour(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=rgb.width * rgb.height) or []
    return any(
        all(abs(p - c) <= tolerance for p, c in zip(pixel, colour, strict=True))
        for _, pixel in colours
    )


# -- /imagine, /combine -------------------------------------------------------------------------


async def test_imagine_four_images_in_one_result(
    running_bot: RunningBot, simulator: WaveSpeedSimulator
) -> None:
    alice, _ = running_bot
    ix = await alice.slash("imagine", prompt="a lighthouse at dusk", count=4)
    status = await final_status(ix)
    result = await result_message(alice, status)

    check_result_card(result, alice)
    fields = embed_fields(result)
    assert fields["Model"] == "Kontext Pro Text-to-Image"
    assert fields["Cost"] == "$0.16"  # 4 images x $0.04
    assert "Notes" not in fields
    job_id = job_of(result)
    assert [a.filename for a in result.attachments] == [
        f"kontext-{job_id}-{n}.jpeg" for n in range(1, 5)
    ]
    images = await images_of(alice, result)
    assert [(i.format, i.size) for i in images] == [("JPEG", (1024, 1024))] * 4
    # Four different pictures, not one posted four times.
    assert len({a.data for a in result.attachments}) == 4

    thread = await alice.wait_for_thread(result)
    assert thread.name == "a lighthouse at dusk"
    assert simulator.request_counts["submit"] == 1
    assert [str(entry.cost) for entry in simulator.billed] == ["0.16"]


async def test_combine_three_images_into_one(
    running_bot: RunningBot, simulator: WaveSpeedSimulator
) -> None:
    alice, _ = running_bot
    ix = await alice.slash(
        "combine",
        prompt="put them side by side",
        image1=("red.png", make_png((256, 256), RED)),
        image2=("green.png", make_png((256, 256), GREEN)),
        image3=("blue.png", make_png((256, 256), BLUE)),
    )
    result = await result_message(alice, await final_status(ix))

    check_result_card(result, alice)
    assert embed_fields(result)["Model"] == "Kontext Pro Multi"
    assert embed_fields(result)["Cost"] == "$0.04"
    (composed,) = await images_of(alice, result)
    for colour in (RED, GREEN, BLUE):
        assert has_colour(composed, colour), f"{colour} is not in the composition"
    assert (await alice.wait_for_thread(result)).name == "put them side by side"
    assert simulator.request_counts["submit"] == 1


# -- the "Edit with Kontext" context menu -------------------------------------------------------


async def test_context_menu_edits_a_members_image_in_a_new_thread(
    running_bot: RunningBot, local_discord: LocalDiscord, simulator: WaveSpeedSimulator
) -> None:
    alice, _ = running_bot
    bob = alice.stranger
    photo = make_png((160, 120), GREEN)
    target = await bob.say("my garden", files=[("garden.png", photo)])

    opened = await alice.context_menu("Edit with Kontext", target)
    modal = await opened.modal()
    assert modal["title"] == "Edit with Kontext"
    submit = await alice.submit_modal(opened, **{"What should change?": "make it a watercolor"})
    result = await result_message(alice, await final_status(submit))

    check_result_card(result, alice)
    assert embed_fields(result)["Model"] == "Kontext Pro"
    assert result.channel_id == local_discord.general.id
    thread = await alice.wait_for_thread(result)
    assert thread.name == "make it a watercolor"
    (edited,) = await images_of(alice, result)
    assert edited.size == (160, 120)  # an edit keeps its input's shape
    # The bot read bob's image from the CDN, and bob's message is untouched.
    assert target.attachments[0].id in local_discord.state.cdn.downloads
    assert simulator.request_counts["submit"] == 1
    # Bob sees the result in the channel, not alice's status.
    assert result in bob.messages() and all(not m.ephemeral for m in bob.messages())


async def test_context_menu_on_a_message_without_an_image_is_refused(
    running_bot: RunningBot, simulator: WaveSpeedSimulator
) -> None:
    alice, _ = running_bot
    target = await alice.stranger.say("no picture here, just words")
    ix = await alice.context_menu("Edit with Kontext", target)
    answer = await ix.response()
    assert answer.content == "❌ That message has no image for me to edit."
    assert answer.flags & MessageFlag.EPHEMERAL
    assert ix.interaction.modal is None
    assert answer not in alice.stranger.messages()
    assert sum(simulator.request_counts.values()) == 0


# -- bad input ----------------------------------------------------------------------------------


def _text_as_png() -> dict[str, Any]:
    return {"image": ("cat.png", b"I am a cat, honest. Meow.\n" * 40)}


def _pdf_as_png() -> dict[str, Any]:
    pdf = (
        b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )
    return {"image": ("cat.png", pdf)}


def _truncated_png() -> dict[str, Any]:
    png = make_png((256, 256))
    return {"image": ("holiday.png", png[: len(png) // 2])}


def _bomb() -> dict[str, Any]:
    return {"image": ("bomb.png", png_claiming(20_000, 20_000))}


def _over_20_mb() -> dict[str, Any]:
    png = make_png()
    # A real PNG with padding after IEND: 20 MiB + 1 byte in all.
    return {"image": ("big.png", png + b"\0" * (20 * MiB + 1 - len(png)))}


def _steps_on_pro() -> dict[str, Any]:
    return {"image": make_png(), "steps": 20}


def _guidance_on_pro() -> dict[str, Any]:
    return {"image": make_png(), "guidance": 15.0}


def _five_images_on_dev() -> dict[str, Any]:
    colours = [RED, GREEN, BLUE, (240, 240, 40), (240, 240, 240)]
    return {
        f"image{n}": (f"{n}.png", make_png((64, 64), colour))
        for n, colour in enumerate(colours, start=1)
    } | {"model": "dev"}


def _one_bad_image_among_good() -> dict[str, Any]:
    return {"image1": ("ok.png", make_png()), "image2": ("notes.png", b"just some notes\n")}


BAD_INPUTS = {
    "text named .png": (
        "edit",
        _text_as_png,
        "cat.png isn't an image I can read. Send a PNG, JPEG, WebP, GIF, BMP or TIFF.",
    ),
    "pdf named .png": (
        "edit",
        _pdf_as_png,
        "cat.png isn't an image I can read. Send a PNG, JPEG, WebP, GIF, BMP or TIFF.",
    ),
    "truncated png": (
        "edit",
        _truncated_png,
        "holiday.png looks damaged and can't be opened. Try saving it again.",
    ),
    "decompression bomb": (
        "edit",
        _bomb,
        "bomb.png is too big to work with (20000×20000 pixels). "
        "Please send one under 40 megapixels.",
    ),
    "over 20 MB": ("edit", _over_20_mb, "big.png is over 20 MB. Please send a smaller one."),
    "option the model does not take": (
        "edit",
        _steps_on_pro,
        "Kontext Pro does not take the option 'steps'.",
    ),
    "value out of range": (
        "edit",
        _guidance_on_pro,
        "guidance must be between 1 and 10 for Kontext Pro.",
    ),
    "too many images for dev": ("combine", _five_images_on_dev, "This takes at most 4 images."),
    "one bad image in a combine": (
        "combine",
        _one_bad_image_among_good,
        "notes.png isn't an image I can read. Send a PNG, JPEG, WebP, GIF, BMP or TIFF.",
    ),
}


@pytest.mark.parametrize(
    ("command", "options", "expected"), list(BAD_INPUTS.values()), ids=list(BAD_INPUTS)
)
async def test_bad_input_is_refused_before_anything_is_sent(
    running_bot: RunningBot,
    local_discord: LocalDiscord,
    simulator: WaveSpeedSimulator,
    command: str,
    options: Callable[[], dict[str, Any]],
    expected: str,
) -> None:
    alice, _ = running_bot
    ix = await alice.slash(command, prompt="make it blue", **options())
    status = await final_status(ix)

    assert status.content == f"❌ {expected}"
    assert status.embeds == [] and status.components == [] and status.attachments == []
    # Nothing else was posted: the member's own status is all there is, and only they see it.
    assert alice.messages() == [status]
    assert alice.stranger.messages() == []
    # Nothing reached WaveSpeed: no submit, no upload, not even a poll.
    assert sum(simulator.request_counts.values()) == 0, dict(simulator.request_counts)
    assert simulator.predictions == {}


async def test_file_over_20_mb_is_refused_without_downloading_it(
    running_bot: RunningBot, local_discord: LocalDiscord, simulator: WaveSpeedSimulator
) -> None:
    alice, _ = running_bot
    ix = await alice.slash("edit", prompt="make it blue", **_over_20_mb())
    (attachment_id,) = ix.interaction.data["resolved"]["attachments"]
    assert ix.interaction.data["resolved"]["attachments"][attachment_id]["size"] == 20 * MiB + 1
    status = await final_status(ix)
    assert status.content == "❌ big.png is over 20 MB. Please send a smaller one."
    # The size in the attachment was enough: the 20 MB never left the CDN.
    assert int(attachment_id) not in local_discord.state.cdn.downloads


# -- results that do not fit the upload limit ---------------------------------------------------

# In a DM the interaction's attachment_size_limit is the local Discord's `dm_upload_limit`, and
# the same limit is enforced on what the bot uploads there. /imagine with this prompt and seed
# makes a 1024x1024 JPEG of about 46 KB.
FIT_PROMPT, FIT_SEED = "a lighthouse at dusk", 7


@pytest.mark.parametrize("local_discord_config", [LocalDiscordConfig(dm_upload_limit=24 * 1024)])
async def test_oversized_result_is_re_encoded_to_fit(
    running_bot: RunningBot, local_discord: LocalDiscord, simulator: WaveSpeedSimulator
) -> None:
    alice, _ = running_bot
    dm = alice.dm()
    ix = await dm.slash("imagine", prompt=FIT_PROMPT, seed=FIT_SEED)
    assert ix.interaction.attachment_size_limit == 24 * 1024
    result = await result_message(dm, await final_status(ix))

    check_result_card(result, dm)
    (original,) = simulator.predictions.values()
    assert len(original.output_files[0].data) > 24 * 1024, "the test needs an oversized output"
    (attachment,) = result.attachments
    assert attachment.size <= 24 * 1024
    assert attachment.filename.endswith(".webp")
    (image,) = await images_of(dm, result)
    assert image.format == "WEBP" and image.size == (1024, 1024)
    assert embed_fields(result)["Notes"] == (
        "The image: Re-encoded as WebP to fit Discord's 24 KB upload limit."
    )


@pytest.mark.parametrize("local_discord_config", [LocalDiscordConfig(dm_upload_limit=2 * 1024)])
async def test_result_too_large_even_re_encoded_is_linked(
    running_bot: RunningBot, local_discord: LocalDiscord, simulator: WaveSpeedSimulator
) -> None:
    alice, _ = running_bot
    dm = alice.dm()
    ix = await dm.slash("imagine", prompt=FIT_PROMPT, seed=FIT_SEED)
    result = await result_message(dm, await final_status(ix))

    check_result_card(result, dm)
    assert result.attachments == []
    notes = embed_fields(result)["Notes"]
    match = re.fullmatch(
        r"The image is too large to upload here, even re-encoded\. "
        r"\[Open it here\]\((\S+)\) \(kept for 7 days\)\.",
        notes,
    )
    assert match, notes
    # The link works: it is the simulator's copy of the full-size result.
    async with aiohttp.ClientSession() as session, session.get(match[1]) as response:
        assert response.status == 200
        linked = decoded(await response.read())
    assert linked.size == (1024, 1024)


# -- NSFW ---------------------------------------------------------------------------------------

NSFW_PROMPT = "an nsfw figure study"


async def test_nsfw_result_is_withheld_outside_age_restricted_channels(
    running_bot: RunningBot, simulator: WaveSpeedSimulator
) -> None:
    alice, _ = running_bot
    ix = await alice.slash("imagine", prompt=NSFW_PROMPT)
    result = await result_message(alice, await final_status(ix))

    check_result_card(result, alice)
    assert result.attachments == []
    assert embed_fields(result)["Notes"] == (
        "The image was withheld: the image service flagged it as NSFW, and this server does "
        "not show such images in this channel."
    )
    (prediction,) = simulator.predictions.values()
    assert prediction.has_nsfw_contents == [True]


async def test_nsfw_result_is_a_spoiler_in_an_age_restricted_channel(
    running_bot: RunningBot,
    local_discord: LocalDiscord,
    age_restricted: Callable[[str], Awaitable[Channel]],
) -> None:
    alice, _ = running_bot
    channel = await age_restricted("after-dark")
    there = alice.in_channel(channel)
    ix = await there.slash("imagine", prompt=NSFW_PROMPT)
    result = await result_message(there, await final_status(ix))

    check_result_card(result, there)
    assert result.channel_id == channel.id
    (attachment,) = result.attachments
    assert attachment.filename.startswith("SPOILER_kontext-")
    (image,) = await images_of(there, result)
    assert image.size == (1024, 1024)
    assert embed_fields(result)["Notes"] == "The image is behind a spoiler: flagged as NSFW."
