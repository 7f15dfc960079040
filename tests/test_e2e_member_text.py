"""End-to-end: what members write, as the bot shows it back and as it reaches WaveSpeed.

The real KontextBot against the local Discord, in a server that lets the bot mention everyone
(as one that gives bots Administrator does), so every ping the bot lets through goes out and
shows. Member text that mentions @everyone, @here, a role and another member, and that carries
markdown (a masked link, bold, spoilers, code), is echoed in result embeds, Details, thread
names, status lines and errors: it pings nobody but the member who asked, on the results meant
for them, and it shows as written. A mention is never a text command, and "@Bot help" is
answered. The prompt rule (something visible, 1,000 characters) holds on every path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from services.prompts import MAX_PROMPT_CHARS
from tests.e2e import (
    STATUS_ICONS,
    against,
    answer_to,
    embed_of,
    history,
    is_step,
    shared_simulator,
    shown,
    starts,
)
from tests.images import make_png
from tests.local_discord import (
    DiscordDriver,
    LocalDiscord,
    LocalDiscordConfig,
    Message,
    Perm,
    RunningBot,
    start_bot,
)
from tests.local_discord.models import BOT_PERMISSIONS, Role

pytest_plugins = ("tests.local_discord.fixtures",)

MAY_MENTION_EVERYONE = LocalDiscordConfig(
    bot_permissions=int(BOT_PERMISSIONS | Perm.MENTION_EVERYONE)
)
MESSAGE_CONTENT = {"discord": {"message_content": True}}
NO_IMAGE = "❌ That message has no image for me to edit."
NOTHING_VISIBLE = (
    '❌ That prompt has no visible text: say in words what you want, e.g. "make it a watercolor".'
)
WAIT = 10.0


@pytest.fixture
def local_discord_config() -> LocalDiscordConfig:
    return MAY_MENTION_EVERYONE


@pytest.fixture
def artists(local_discord: LocalDiscord) -> Role:
    """A role members may ping, as servers have for their regulars."""
    return local_discord.state.create_role(local_discord.guild, "artists", mentionable=True)


def loud(local: LocalDiscord, role: Role, instruction: str) -> str:
    """`instruction` behind every kind of mention, with markdown that would plant a link."""
    return (
        f"@everyone @here <@&{role.id}> <@{local.stranger.id}> {instruction} "
        "[free nitro](https://nitro.example/claim) ||x|| `y`"
    )


def replies_to(driver: DiscordDriver, message: Message) -> list[Message]:
    """The bot's replies to `message` (its status lines, its errors), deleted ones included."""
    return [
        m
        for m in driver.state.messages.values()
        if m.author.id == driver.bot_user.id
        and m.reference
        and m.reference.get("message_id") == str(message.id)
    ]


# -- member text in results, Details, thread names and status lines ----------------------------


@pytest.mark.parametrize("bot_settings_overrides", [{"simulator": {"latency_s": 0.3}}])
async def test_member_text_is_shown_as_written_and_pings_only_the_requester(
    running_bot: RunningBot, local_discord: LocalDiscord, artists: Role
) -> None:
    alice, _ = running_bot
    first = loud(local_discord, artists, "make it **blue**")
    asked = await alice.say(first, files=[make_png((48, 48))], mention_bot=True)
    # A public status line while it works (a reply, deleted once the result is there).
    await alice.wait_for_message(starts(*STATUS_ICONS), after=asked, timeout=WAIT)
    step1 = await alice.wait_for_message(is_step("Step 1"), timeout=WAIT)
    assert shown(embed_of(step1)["description"]) == first
    # Thread names are plain text on Discord (no markdown, no pings): the words as they are.
    thread = await alice.wait_for_thread(step1)
    assert thread.name == (first if len(first) <= 100 else first[:99] + "…")

    second = loud(local_discord, artists, "now __red__ # please")
    reply = await alice.reply(step1, second)
    step2 = await alice.wait_for_message(is_step("Step 2"), where=thread, timeout=WAIT)
    assert shown(embed_of(step2)["description"]) == second
    details = await alice.click(step2, "Details")
    card = embed_of(await details.response())
    assert [shown(line) for line in history(card)] == [f"1. {first}", f"2. {second}"]

    # The results ping the member who asked; their status lines pinged nobody.
    assert step1.pinged_users == step2.pinged_users == {alice.user.id}

    def status_lines_done() -> list[Message] | None:
        done = [r for m in (asked, reply) for r in replies_to(alice, m) if r.deleted]
        return done if len(done) == 2 else None

    statuses = await local_discord.state.wait_until(
        status_lines_done, timeout=WAIT, what="both status lines deleted"
    )
    assert not any(m.pinged_anyone for m in statuses)

    # A file name is member text too, echoed when the file is not an image.
    name = f"@everyone <@&{artists.id}> **hi**.png"
    sent = await alice.say("make it blue", files=[(name, b"not an image")], mention_bot=True)
    error = await answer_to(alice, sent)
    assert not error.pinged_anyone
    assert shown(error.content) == (
        f"❌ {name} isn't an image I can read. Send a PNG, JPEG, WebP, GIF, BMP or TIFF."
    )
    local_discord.assert_pinged_only(alice.user)


# -- the image service's words, which may quote the member --------------------------------------


@contextlib.asynccontextmanager
async def quoting_wavespeed() -> AsyncIterator[str]:
    """A WaveSpeed that refuses every submit, quoting its prompt (code 1401); its base URL."""

    async def refuse(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {"code": 1401, "message": f"prompt not allowed: {body.get('prompt')}", "data": None},
            status=400,
        )

    app = web.Application()
    app.router.add_post("/api/v3/wavespeed-ai/{model:.+}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def test_the_image_services_refusal_quoting_a_prompt_pings_nobody_and_shows_as_written(
    local_discord: LocalDiscord, artists: Role
) -> None:
    refused = "The image service refused the request: prompt not allowed: "
    async with (
        quoting_wavespeed() as base_url,
        start_bot(
            local_discord,
            settings_overrides={"wavespeed": {"api_key": "any", "base_url": base_url}},
        ) as (alice, _),
    ):
        # A reply: its public status line becomes the error, mentioning the member.
        prompt = loud(local_discord, artists, "make it blue")
        asked = await alice.say(prompt, files=[make_png()], mention_bot=True)
        mention = f"❌ {alice.user.mention} "
        error = await alice.wait_for_message(starts(mention), after=asked, timeout=WAIT)
        assert error.pinged_users == {alice.user.id}
        assert not error.pinged_roles and not error.pinged_everyone
        assert shown(error.content.removeprefix(mention)) == refused + prompt

        # A slash command: the member's own (ephemeral) status becomes the error.
        typed = loud(local_discord, artists, "a lighthouse")
        ix = await alice.slash("imagine", prompt=typed)
        status = await ix.response(starts("❌"), timeout=WAIT)
        assert not status.pinged_anyone
        assert shown(status.content.removeprefix("❌ ")) == refused + typed
    local_discord.assert_pinged_only(alice.user)


# -- mentions are not text commands --------------------------------------------------------------


async def test_a_mention_is_an_instruction_never_a_text_command(
    running_bot: RunningBot, caplog: pytest.LogCaptureFixture
) -> None:
    alice, _ = running_bot
    for text in ("make it blue", "turn it red"):
        asked = await alice.say(text, mention_bot=True)
        assert (await answer_to(alice, asked)).content == NO_IMAGE
    # Both answered, one after the other: anything either message set off has been logged.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_help_or_a_bare_mention_is_answered_with_how_to_use_the_bot(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    photo = await alice.say("my cat", files=[make_png()])
    asks = [
        await alice.say("help", mention_bot=True),
        await alice.say("", mention_bot=True),
        await alice.say("Help?", mention_bot=True),
        # Help as a reply to an image is still help, not an instruction to paint the word.
        await alice.reply(photo, f"{alice.bot_user.mention} help", mention=False),
    ]
    for asked in asks:
        answer = await answer_to(alice, asked)
        assert answer.content.startswith("I edit and make images with FLUX.1 Kontext:")
        for way_in in ("/edit", "/imagine", "/combine", "Edit with Kontext", "Reply to"):
            assert way_in in answer.content
    local_discord.assert_pinged_only()


# -- the prompt rule on every path -------------------------------------------------------------


async def test_a_prompt_with_nothing_visible_is_refused_on_every_path_and_never_sent(
    local_discord: LocalDiscord,
) -> None:
    invisible = "\u200b\u200d \u0301\u2800"
    async with (
        shared_simulator(latency_s=0) as sim,
        start_bot(local_discord, settings_overrides=against(sim)) as (alice, _),
    ):
        commands: list[tuple[str, dict[str, Any]]] = [
            ("edit", {"image": make_png()}),
            ("imagine", {}),
            ("combine", {"image1": make_png(), "image2": make_png((32, 32))}),
        ]
        for name, options in commands:
            ix = await alice.slash(name, prompt=invisible, **options)
            ended = await ix.response(starts("✅", "❌"), timeout=WAIT)
            assert ended.content == NOTHING_VISIBLE, name

        photo = await alice.stranger.say("my garden", files=[make_png()])
        opened = await alice.context_menu("Edit with Kontext", photo)
        submit = await alice.submit_modal(opened, **{"What should change?": invisible})
        ended = await submit.response(starts("✅", "❌"), timeout=WAIT)
        assert ended.content == NOTHING_VISIBLE

        asked = await alice.say(invisible, files=[make_png()], mention_bot=True)
        assert (await answer_to(alice, asked)).content == NOTHING_VISIBLE
    assert sum(sim.request_counts.values()) == 0, dict(sim.request_counts)


async def test_one_length_cap_on_every_path(local_discord: LocalDiscord) -> None:
    async with (
        shared_simulator(latency_s=0) as sim,
        start_bot(local_discord, settings_overrides=against(sim, **MESSAGE_CONTENT)) as (alice, _),
    ):
        # Discord's client holds slash commands and the form to the same cap.
        for command in local_discord.state.commands[None]:
            for option in command.data.get("options") or []:
                if option["name"] == "prompt":
                    assert option["max_length"] == MAX_PROMPT_CHARS, command.name
        photo = await alice.stranger.say("my garden", files=[make_png()])
        modal = await (await alice.context_menu("Edit with Kontext", photo)).modal()
        (text_input,) = [
            c
            for row in modal["components"]
            for c in row.get("components") or [row.get("component")]
        ]
        assert text_input["max_length"] == MAX_PROMPT_CHARS

        # Replies and thread messages get no such help from Discord: the bot holds them to it.
        longest = "a" * MAX_PROMPT_CHARS
        await alice.say(longest, files=[make_png()], mention_bot=True)
        step1 = await alice.wait_for_message(is_step("Step 1"), timeout=WAIT)
        thread = alice.in_channel(await alice.wait_for_thread(step1))
        too_long = (
            f"❌ That prompt is {MAX_PROMPT_CHARS + 1:,} characters long; the limit is "
            f"{MAX_PROMPT_CHARS:,}. Please shorten it."
        )
        reply = await alice.reply(step1, longest + "b")
        assert (await answer_to(alice, reply)).content == too_long
        plain = await thread.say(longest + "c")
        assert (await answer_to(thread, plain)).content == too_long
        blank = await thread.say("\u200b\u2060")
        assert (await answer_to(thread, blank)).content == NOTHING_VISIBLE
    # Only the first reached the image service.
    assert [len(p.request["prompt"]) for p in sim.predictions.values()] == [MAX_PROMPT_CHARS]
