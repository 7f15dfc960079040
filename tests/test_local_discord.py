"""End-to-end: the real KontextBot (discord.py 2.7, unmodified) against the local Discord.

A test-only probe extension (tests/local_discord/probe_cog.py) supplies commands for every
interaction path; its deliberately broken commands prove the harness catches a bot that breaks
Discord's rules. Every test ends with the `local_discord` fixture asserting that nothing
unexpected was recorded.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import aiohttp
import discord
import pytest
from discord.ext import commands

from tests.images import make_png
from tests.local_discord import (
    PROBE_EXTENSION,
    BotProcess,
    CallbackType,
    Channel,
    LocalDiscord,
    LocalDiscordConfig,
    Message,
    MessageFlag,
    Perm,
    PremiumType,
    RunningBot,
    ViolationLog,
    bot_process,
    count_custom_ids,
    start_bot,
)
from tests.local_discord.models import MiB
from tests.local_discord.probe_cog import ProbeCog
from tests.local_discord.ratelimits import RateLimits

pytest_plugins = ("tests.local_discord.fixtures",)

GLOBAL_SYNC = "PUT /applications/{application_id}/commands"
GUILD_SYNC = "PUT /applications/{application_id}/guilds/{guild_id}/commands"
CHANNEL_POST = "POST /channels/{channel_id}/messages"
FOLLOWUP = "POST /webhooks/{webhook_id}/{webhook_token}"


@pytest.fixture
def bot_extensions() -> tuple[str, ...]:
    return (PROBE_EXTENSION,)


def probe(bot: commands.Bot) -> ProbeCog:
    """The probe cog the bot loaded (its own module instance: load_extension re-imports)."""
    cog = bot.get_cog("ProbeCog")
    assert cog is not None and type(cog).__name__ == "ProbeCog"
    return cast(ProbeCog, cog)


# -- start-up and the gateway ----------------------------------------------------------------


async def test_startup_identifies_and_syncs_commands_globally_and_to_a_guild(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    assert bot.user is not None and bot.user.id == local_discord.bot_user.id
    assert bot.application_id == local_discord.application_id
    assert [g.id for g in bot.guilds] == [local_discord.guild.id]
    assert local_discord.gateway.identifies == 1

    (sync,) = local_discord.requests_to(GLOBAL_SYNC)
    assert sync.status == 200
    names = {command["name"] for command in sync.body}
    assert {"probe-ping", "probe-echo", "Probe: Describe"} <= names

    await bot.sync_commands(local_discord.guild.id)
    (guild_sync,) = local_discord.requests_to(GUILD_SYNC)
    assert guild_sync.status == 200
    guild_commands = local_discord.state.commands[local_discord.guild.id]
    assert {c.name for c in guild_commands} == names
    # A guild copy shadows the global command: the interaction names the guild.
    ix = await alice.slash("probe-ping")
    assert ix.interaction.data["guild_id"] == str(local_discord.guild.id)
    assert (await ix.response()).content.startswith("pong")


async def test_json_answers_carry_the_exact_content_type(local_discord: LocalDiscord) -> None:
    headers = {"Authorization": f"Bot {local_discord.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(local_discord.api_base_url + "/users/@me", headers=headers) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert (await response.json())["id"] == str(local_discord.bot_user.id)


@pytest.mark.parametrize("local_discord_config", [LocalDiscordConfig(heartbeat_interval_ms=50)])
async def test_gateway_compresses_and_answers_heartbeats(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    _, bot = running_bot
    gateway = local_discord.gateway
    (session,) = gateway.sessions.values()
    assert session.connection is not None and session.connection.path == "/gateway"
    # discord.py asked for zlib-stream and decoded every (compressed) frame we sent.
    assert session.connection.compressed
    assert session.seq >= 2  # READY and GUILD_CREATE, numbered
    await local_discord.state.wait_until(
        lambda: gateway.heartbeats >= 4, timeout=5, what="four heartbeats"
    )
    await local_discord.state.wait_until(lambda: bot.latency < 1, timeout=5, what="a heartbeat ACK")


async def test_resume_after_reconnect_keeps_the_bot_working(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    resumed = asyncio.ensure_future(bot.wait_for("resumed", timeout=5))
    await local_discord.gateway.request_reconnect()
    # Sent while the bot is reconnecting: it must arrive exactly once, replayed on RESUME.
    ix = await alice.slash("probe-ping", times=2)
    await local_discord.gateway.wait_for_resume()
    await resumed
    assert local_discord.gateway.identifies == 1
    assert local_discord.gateway.connection_paths == ["/gateway", "/gateway/resume"]
    assert (await ix.response()).content.startswith("pong x2")
    after = await alice.slash("probe-ping", times=3)
    assert (await after.response()).content.startswith("pong x3")


async def test_an_invalid_session_makes_the_bot_identify_again_and_keep_working(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    gateway = local_discord.gateway
    # Discord allows one IDENTIFY per 5 s: the new one comes after the start-up's.
    local_discord.clock.advance(gateway.identify_interval_s)
    gateway.invalidate_sessions(resumable=False)
    await local_discord.state.wait_until(
        lambda: gateway.identifies == 2 and gateway.live_sessions(),
        timeout=10,
        what="a second IDENTIFY",
    )
    ix = await alice.slash("probe-ping", times=2)
    assert (await ix.response()).content.startswith("pong x2")


@pytest.mark.parametrize("local_discord_config", [LocalDiscordConfig(heartbeat_interval_ms=200)])
async def test_a_half_dead_gateway_is_noticed_and_resumed_without_losing_events(
    local_discord: LocalDiscord,
) -> None:
    gateway = local_discord.gateway
    async with start_bot(
        local_discord, extra_extensions=(PROBE_EXTENSION,), heartbeat_timeout=1.0
    ) as (alice, bot):
        resumed = asyncio.ensure_future(bot.wait_for("resumed", timeout=15))
        gateway.go_silent()
        # Sent into the silence: it waits in the session's backlog until the bot resumes.
        ix = await alice.slash("probe-ping", times=2)
        await gateway.wait_for_resume(timeout=15)
        await resumed
        assert gateway.identifies == 1
        assert (await ix.response()).content.startswith("pong x2")


async def test_privileged_intent_refused_by_the_portal_stops_start_up() -> None:
    config = LocalDiscordConfig(message_content_allowed=False)
    async with LocalDiscord(config) as local:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with start_bot(local, settings_overrides={"discord": {"message_content": True}}):
                pass  # pragma: no cover - start-up must fail


# -- interactions ----------------------------------------------------------------------------


async def test_slash_command_is_answered_with_typed_options(running_bot: RunningBot) -> None:
    alice, _ = running_bot
    ix = await alice.slash("probe-ping", times=3, scale=2.5, mood="loud")
    assert await ix.acknowledged() is CallbackType.CHANNEL_MESSAGE
    message = await ix.response()
    assert message.content == "pong x3 scale=2.5 mood=loud for alice"
    assert message.interaction_metadata is not None
    assert message.interaction_metadata["name"] == "probe-ping"
    assert alice.messages()[-1] is message

    # The driver refuses what the Discord client would not send.
    with pytest.raises(ValueError, match="outside"):
        await alice.slash("probe-ping", times=9)
    with pytest.raises(ValueError, match="not one of"):
        await alice.slash("probe-ping", mood="sleepy")
    with pytest.raises(TypeError, match="required"):
        await alice.slash("probe-echo", prompt="no image")
    with pytest.raises(LookupError, match="no slash command"):
        await alice.slash("nope")


async def test_deferred_followup_with_a_file_from_the_cdn(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    png = make_png((32, 24))
    ix = await alice.slash("probe-echo", image=png, prompt="make it blue")
    assert await ix.acknowledged() is CallbackType.DEFERRED_CHANNEL_MESSAGE
    followup = await ix.followup()
    # The first followup after a deferral fills the "thinking..." message.
    assert followup.id == ix.interaction.original_message_id and not followup.loading
    assert followup.content == f"echo 'make it blue': {len(png)} bytes"
    (attachment,) = followup.attachments
    assert attachment.filename == "echo-image.png"
    assert (attachment.width, attachment.height) == (32, 24)
    assert await alice.download(attachment) == png
    # The bot read the user's upload from the local CDN too.
    (uploaded,) = ix.interaction.data["resolved"]["attachments"]
    assert int(uploaded) in local_discord.state.cdn.downloads


async def test_thread_started_on_the_answer_and_written_to(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    ix = await alice.slash("probe-thread", name="blue cats")
    answer = await ix.response()
    thread = await alice.wait_for_thread(answer)
    assert thread.id == answer.id and thread.name == "blue cats"
    inside = await alice.wait_for_message(where=answer)
    assert inside.content == f"inside blue cats, {alice.user.mention}"
    assert inside.mentions(alice.user)
    assert [m.content for m in alice.messages(thread)] == [inside.content]
    # THREAD_CREATE reached the bot's cache.
    assert isinstance(bot.get_channel(thread.id), discord.Thread)


async def test_button_opens_a_modal_whose_submit_edits_the_message(
    running_bot: RunningBot,
) -> None:
    alice, _ = running_bot
    ix = await alice.slash("probe-button")
    message = await ix.response()
    assert message.button_labels == ["Reroll"]
    click = await alice.click(message, "Reroll")
    modal = await click.modal()
    assert modal["title"] == "New prompt"
    submit = await alice.submit_modal(click, prompt="a red fox")
    assert await submit.acknowledged() is CallbackType.UPDATE_MESSAGE
    edited = await submit.response()
    assert edited.id == message.id
    assert edited.content == "rerolled: a red fox"
    assert edited.edited_at is not None


async def test_message_context_menu_reads_the_target(running_bot: RunningBot) -> None:
    alice, _ = running_bot
    png = make_png()
    target = await alice.say("look at this", files=(png,))
    ix = await alice.context_menu("Probe: Describe", target)
    answer = await ix.response()
    assert answer.content == f"alice said 'look at this' with attachments of [{len(png)}] bytes"
    assert answer.flags & MessageFlag.EPHEMERAL
    # Ephemeral: alice sees it, bob does not.
    assert answer in alice.messages()
    assert answer not in alice.stranger.messages()


async def test_reply_with_mention_reaches_on_message(running_bot: RunningBot) -> None:
    alice, bot = running_bot
    ix = await alice.slash("probe-ping")
    answer = await ix.response()
    reply = await alice.reply(answer, "make it blue")
    heard = await alice.wait_for_message(lambda m: m.content.startswith("heard"), after=reply)
    assert heard.content == "heard: 'make it blue'"
    assert heard.reference is not None and heard.reference["message_id"] == str(reply.id)
    (received,) = probe(bot).heard
    assert received.reference is not None and received.reference.message_id == answer.id
    assert isinstance(received.channel, discord.TextChannel)

    # Without the Message Content intent a plain message arrives with its content blanked.
    plain = asyncio.ensure_future(
        bot.wait_for("message", check=lambda m: m.author.id == alice.user.id, timeout=5)
    )
    await alice.say("no mention here")
    assert (await plain).content == ""


def dispatched(local: LocalDiscord, event: str) -> list[dict[str, Any]]:
    """What the bot's newest gateway session was sent for `event`, oldest first."""
    session = local.gateway.identified[-1]
    return [frame["d"] for frame in session.backlog if frame["t"] == event]


@pytest.mark.parametrize(
    ("bot_settings_overrides", "others_words", "others_files"),
    [({}, "", 0), ({"discord": {"message_content": True}}, "my cat", 1)],
    ids=["without-intent", "with-intent"],
)
async def test_message_content_empties_others_messages_in_replies_fetches_and_edits(
    running_bot: RunningBot, local_discord: LocalDiscord, others_words: str, others_files: int
) -> None:
    alice, bot = running_bot
    bob = alice.stranger
    photo = await alice.say("my cat", files=[make_png()])
    heard = asyncio.ensure_future(
        bot.wait_for("message", check=lambda m: m.author.id == bob.user.id, timeout=5)
    )
    # Bob's reply mentions the bot, so it arrives whole; the message it replies to is judged on
    # its own (alice's, no mention) and arrives whole only with the intent.
    reply = await bob.reply(photo, f"{alice.bot_user.mention} make it blue")
    received = await heard
    assert received.content == f"{alice.bot_user.mention} make it blue"
    assert received.reference is not None
    replied_to = received.reference.resolved
    assert isinstance(replied_to, discord.Message) and replied_to.id == photo.id
    assert (replied_to.content, len(replied_to.attachments)) == (others_words, others_files)

    # Over REST too (the portal switch is on: only the bot's own intents hold it back).
    channel = received.channel
    fetched = await channel.fetch_message(photo.id)
    assert (fetched.content, len(fetched.attachments)) == (others_words, others_files)
    listed = {m.id: m async for m in channel.history(limit=10)}
    assert (listed[photo.id].content, len(listed[photo.id].attachments)) == (
        others_words,
        others_files,
    )
    assert listed[reply.id].content == received.content
    assert listed[reply.id].reference is not None
    nested = listed[reply.id].reference.resolved
    assert isinstance(nested, discord.Message) and nested.content == others_words

    # MESSAGE_UPDATE: alice's edit, and bob's (whose reply still carries alice's message).
    local_discord.state.edit_message(photo, content="my dog")
    local_discord.state.edit_message(reply, content=f"{alice.bot_user.mention} make it red")
    await local_discord.state.wait_until(
        lambda: len(dispatched(local_discord, "MESSAGE_UPDATE")) >= 2,
        timeout=5,
        what="two MESSAGE_UPDATEs",
    )
    edited_photo, edited_reply = dispatched(local_discord, "MESSAGE_UPDATE")[-2:]
    assert edited_photo["content"] == ("my dog" if others_words else "")
    assert edited_reply["content"] == f"{alice.bot_user.mention} make it red"
    assert len(edited_reply["referenced_message"]["attachments"]) == others_files

    # A message context menu's target comes whole either way; what it replies to does not.
    menu = await alice.context_menu("Probe: Describe", reply)
    await menu.response()
    (interaction,) = dispatched(local_discord, "INTERACTION_CREATE")[-1:]
    (target,) = interaction["data"]["resolved"]["messages"].values()
    assert target["content"] == f"{alice.bot_user.mention} make it red"
    assert len(target["referenced_message"]["attachments"]) == others_files


async def test_without_message_content_the_bots_own_and_mentioning_messages_stay_whole(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    channel = bot.get_channel(local_discord.general.id)
    assert isinstance(channel, discord.TextChannel)
    own = await channel.send("mine", file=discord.File(io.BytesIO(make_png()), "own.png"))
    asked = await alice.say("hello", mention_bot=True)
    # A reply without any ping to the bot's message: its own words are emptied, but the bot's
    # message it replies to is the bot's own.
    heard = asyncio.ensure_future(
        bot.wait_for("message", check=lambda m: m.reference is not None, timeout=5)
    )
    quiet = await alice.reply(local_discord.state.messages[own.id], "thanks", mention=False)
    received = await heard
    assert (received.content, received.attachments) == ("", [])
    assert received.reference is not None
    assert isinstance(received.reference.resolved, discord.Message)
    assert received.reference.resolved.content == "mine"
    assert len(received.reference.resolved.attachments) == 1
    for message_id, words in ((own.id, "mine"), (asked.id, asked.content), (quiet.id, "")):
        assert (await channel.fetch_message(message_id)).content == words
    # In a DM everything comes whole.
    dm = alice.dm()
    in_dm = asyncio.ensure_future(
        bot.wait_for("message", check=lambda m: m.guild is None, timeout=5)
    )
    await dm.say("hello in private")
    assert (await in_dm).content == "hello in private"


async def test_user_events_reach_the_bot(running_bot: RunningBot) -> None:
    alice, bot = running_bot
    own = await alice.say("short-lived")
    deleted = asyncio.ensure_future(
        bot.wait_for("raw_message_delete", check=lambda e: e.message_id == own.id, timeout=5)
    )
    await alice.delete(own)
    await deleted
    created = asyncio.ensure_future(bot.wait_for("thread_create", timeout=5))
    thread = await alice.start_thread("made by alice")
    assert (await created).id == thread.id
    # A standalone thread is announced in the parent channel.
    assert alice.messages()[-1].type == 18


# -- rate limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("is_global", [False, True])
async def test_429_retry_after_is_honoured(
    running_bot: RunningBot, local_discord: LocalDiscord, is_global: bool
) -> None:
    alice, bot = running_bot
    channel = bot.get_channel(local_discord.general.id)
    assert isinstance(channel, discord.TextChannel)
    local_discord.rate_limits.fail_next(CHANNEL_POST, retry_after=0.3, is_global=is_global)
    started = time.monotonic()
    sent = await channel.send("after the wait")
    assert time.monotonic() - started >= 0.3
    assert [(h.retry_after, h.is_global) for h in local_discord.rate_limits.hits] == [
        (0.3, is_global)
    ]
    assert [r.status for r in local_discord.requests_to(CHANNEL_POST)] == [429, 200]
    assert alice.messages()[-1].id == sent.id


async def test_429_on_a_followup_is_honoured(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    local_discord.rate_limits.fail_next(FOLLOWUP, retry_after=0.2)
    ix = await alice.slash("probe-echo", image=make_png(), prompt="later")
    assert (await ix.followup()).content.startswith("echo 'later'")
    assert [r.status for r in local_discord.requests_to(FOLLOWUP)] == [429, 200]


async def test_bucket_headers_pace_the_bot(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    channel = bot.get_channel(local_discord.general.id)
    assert isinstance(channel, discord.TextChannel)
    local_discord.rate_limits.limit_route(CHANNEL_POST, limit=2, per=0.3)
    for number in range(5):
        await channel.send(f"paced {number}")
    assert [m.content for m in alice.messages()][-5:] == [f"paced {n}" for n in range(5)]
    # discord.py read X-RateLimit-Remaining: 0 and waited instead of hitting the limit.
    assert local_discord.rate_limits.hits == []


async def test_coming_back_before_retry_after_is_a_violation(local_discord: LocalDiscord) -> None:
    local_discord.rate_limits.fail_next("GET /users/@me", retry_after=2.0)
    headers = {"Authorization": f"Bot {local_discord.token}"}
    url = local_discord.api_base_url + "/users/@me"
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.get(url, headers=headers) as response:
                assert response.status == 429
                assert response.headers["Via"]
                body: dict[str, Any] = await response.json()
                assert body["retry_after"] > 1 and body["global"] is False
    violation = local_discord.violations.expect(kind="rate_limit")
    assert "before retry_after" in violation.detail


async def test_a_client_that_ignores_the_channel_limit_and_retry_after_is_caught(
    local_discord: LocalDiscord,
) -> None:
    """Discord's limits are on without asking: a careless client posts as fast as it can, then
    comes straight back after its 429."""
    headers = {"Authorization": f"Bot {local_discord.token}"}
    answers: list[tuple[int, Any, dict[str, Any]]] = []
    async with aiohttp.ClientSession() as session:
        for number in range(7):
            url = local_discord.api_base_url + post_path(local_discord.general)
            async with session.post(url, headers=headers, json={"content": f"{number}"}) as got:
                answers.append((got.status, got.headers, await got.json()))
        # Another channel is another bucket.
        url = local_discord.api_base_url + post_path(local_discord.images)
        async with session.post(url, headers=headers, json={"content": "elsewhere"}) as got:
            assert got.status == 200 and got.headers["X-RateLimit-Remaining"] == "4"

    assert [status for status, _, _ in answers] == [200] * 5 + [429, 429]
    accepted = [h for status, h, _ in answers if status == 200]
    assert [h["X-RateLimit-Remaining"] for h in accepted] == ["4", "3", "2", "1", "0"]
    assert {h["X-RateLimit-Limit"] for h in accepted} == {"5"}
    assert len({h["X-RateLimit-Bucket"] for h in accepted}) == 1
    assert all(0 < float(h["X-RateLimit-Reset-After"]) <= 5 for h in accepted)
    _, limited, body = answers[5]
    assert set(body) == {"message", "retry_after", "global", "code"}
    assert body["global"] is False and 0 < body["retry_after"] <= 5
    assert limited["Via"] and limited["X-RateLimit-Scope"] == "user"
    assert limited["X-RateLimit-Remaining"] == "0" and "X-RateLimit-Global" not in limited
    assert limited["X-RateLimit-Bucket"] == accepted[0]["X-RateLimit-Bucket"]
    assert int(limited["Retry-After"]) >= body["retry_after"]
    assert len(local_discord.bot_messages(local_discord.general)) == 5
    # The 429 alone is Discord doing its job; coming back before retry_after is the client's
    # fault.
    violation = local_discord.violations.expect(kind="rate_limit")
    assert "before retry_after" in violation.detail
    assert len(local_discord.rate_limits.hits) == 2


INTERACTION_CALLBACK = "POST /interactions/{interaction_id}/{interaction_token}/callback"
ORIGINAL_EDIT = "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original"
REACTION = "PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me"
UNREACTION = "DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me"


def test_discords_global_limit_spares_interaction_endpoints() -> None:
    now = [1000.0]
    violations = ViolationLog()
    limits = RateLimits(violations, clock=lambda: now[0])
    answers = [limits.check("GET /users/@me", "") for _ in range(51)]
    assert [a.limited for a in answers] == [False] * 50 + [True]
    hit = answers[-1]
    assert hit.body()["global"] is True and hit.retry_after is not None
    assert hit.headers["X-RateLimit-Global"] == "true"
    assert hit.headers["X-RateLimit-Scope"] == "global" and hit.headers["Via"]
    # Interactions are answered whatever the bot's other traffic, as on Discord.
    assert not limits.check(INTERACTION_CALLBACK, "1").limited
    assert not limits.check(FOLLOWUP, "app+token").limited
    assert not violations
    # Every other route waits out the global retry_after.
    assert limits.check(CHANNEL_POST, "7").limited
    assert violations.expect(kind="rate_limit").route == CHANNEL_POST
    now[0] += 1.0
    assert not limits.check("GET /users/@me", "").limited


def test_routes_of_one_bucket_share_its_count_for_each_major_parameter() -> None:
    now = [1000.0]
    limits = RateLimits(ViolationLog(), clock=lambda: now[0])
    # An interaction's followups and edits: one bucket per token.
    token = [limits.check(r, "app+a") for r in [FOLLOWUP, ORIGINAL_EDIT] * 3]
    assert [a.remaining for a in token[:5]] == [4, 3, 2, 1, 0] and token[5].limited
    assert len({a.headers["X-RateLimit-Bucket"] for a in token}) == 1
    assert limits.check(ORIGINAL_EDIT, "app+b").remaining == 4
    # Reactions: one a quarter second per channel, adding and removing alike.
    assert not limits.check(REACTION, "7").limited
    assert limits.check(UNREACTION, "7").limited
    assert not limits.check(REACTION, "8").limited
    now[0] += 0.25
    assert not limits.check(UNREACTION, "7").limited
    # A forced 429 names the route's own bucket, or discord.py would think the route moved.
    posted = limits.check(CHANNEL_POST, "7")
    limits.fail_next(CHANNEL_POST)
    forced = limits.check(CHANNEL_POST, "7")
    assert forced.limited
    assert forced.headers["X-RateLimit-Bucket"] == posted.headers["X-RateLimit-Bucket"]


async def test_a_test_turns_rate_limits_off_only_by_saying_why() -> None:
    with pytest.raises(ValueError, match="reason"):
        LocalDiscordConfig(rate_limits_off=" ")
    config = LocalDiscordConfig(rate_limits_off="counts requests, not pacing")
    async with LocalDiscord(config) as local:
        for number in range(7):
            status, _ = await rest(
                local, "POST", post_path(local.general), body={"content": f"{number}"}
            )
            assert status == 200
        assert local.rate_limits.hits == [] and not local.violations


# -- the rules a naive bot breaks --------------------------------------------------------------


async def test_late_acknowledgement_is_unknown_interaction(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    await alice.slash("probe-late")
    violation = await local_discord.violations.wait_for(code=10062, timeout=8)
    assert "allows 3s" in violation.detail
    await local_discord.state.wait_until(lambda: probe(bot).errors, timeout=5, what="the error")
    assert probe(bot).errors[0].code == 10062


async def test_file_over_the_attachment_size_limit_is_refused(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    ix = await alice.slash("probe-huge")
    assert ix.interaction.attachment_size_limit == 10 * 1024 * 1024
    violation = await local_discord.violations.wait_for(code=40005, timeout=10)
    assert violation.status == 413 and "huge.bin" in violation.detail
    await local_discord.state.wait_until(lambda: probe(bot).errors, timeout=5, what="the error")
    assert probe(bot).errors[0].code == 40005


async def test_invalid_body_is_a_schema_error_with_its_path(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    await alice.slash("probe-invalid")
    violation = await local_discord.violations.wait_for(kind="schema")
    assert violation.code == 50035
    assert "data.embeds[0].title: Must be 256 or fewer in length." in violation.detail
    await local_discord.state.wait_until(lambda: probe(bot).errors, timeout=5, what="the error")
    error = probe(bot).errors[0]
    assert error.code == 50035 and "data.embeds.0.title" in str(error)


async def test_expired_token_is_invalid_webhook_token(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    ix = await alice.slash("probe-expired")
    assert await ix.acknowledged() is CallbackType.DEFERRED_CHANNEL_MESSAGE
    local_discord.clock.advance(15 * 60 + 1)
    probe(bot).release.set()
    violation = await local_discord.violations.wait_for(code=50027)
    assert violation.status == 401 and "15 min" in violation.detail
    await local_discord.state.wait_until(lambda: probe(bot).errors, timeout=5, what="the error")
    error = probe(bot).errors[0]
    assert (error.status, error.code, error.text) == (401, 50027, "Invalid Webhook Token")


async def test_a_token_discord_never_issued_is_unknown_webhook(
    local_discord: LocalDiscord,
) -> None:
    path = f"/webhooks/{local_discord.application_id}/no-such-token/messages/@original"
    status, body = await rest(local_discord, "PATCH", path, body={"content": "hello"})
    assert (status, body["code"], body["message"]) == (404, 10015, "Unknown Webhook")
    local_discord.violations.expect(code=10015)


async def test_content_over_2000_characters_is_refused(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    ix = await alice.slash("probe-long")
    await ix.followup()
    violation = local_discord.violations.expect(code=50035, kind="rule")
    assert violation.route == CHANNEL_POST
    assert "content: Must be 2000 or fewer in length." in violation.detail
    assert probe(bot).errors[0].code == 50035


async def test_limits_the_spec_is_silent_on(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    _, bot = running_bot
    channel = bot.get_channel(local_discord.general.id)
    assert isinstance(channel, discord.TextChannel)
    embeds = [discord.Embed(description="d" * 4000), discord.Embed(description="d" * 4000)]
    with pytest.raises(discord.HTTPException):
        await channel.send(embeds=embeds)
    assert "6000" in local_discord.violations.expect(code=50035).detail

    rows = [
        {"type": 1, "components": [{"type": 2, "style": 1, "label": str(n), "custom_id": f"b{n}"}]}
        for n in range(6)
    ]
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=channel.id)
    with pytest.raises(discord.HTTPException):
        await bot.http.request(route, json={"content": "rows", "components": rows})
    assert "components: Must be 5 or fewer" in local_discord.violations.expect(code=50035).detail

    message = await channel.send("thread me")
    with pytest.raises(discord.HTTPException):
        await message.create_thread(name="n" * 101)
    assert "name: Must be 100 or fewer" in local_discord.violations.expect(kind="schema").detail


async def test_a_message_to_an_auto_archived_thread_reopens_it(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    answer = await (await alice.slash("probe-thread", name="short-lived")).response()
    await alice.wait_for_message(where=answer)
    thread = bot.get_channel(answer.id)
    assert isinstance(thread, discord.Thread) and not thread.archived
    # The probe asked for a 60-minute auto-archive; an hour later the thread is archived,
    # and THREAD_UPDATE tells the bot.
    updated = asyncio.ensure_future(
        bot.wait_for("thread_update", check=lambda _, after: after.id == thread.id, timeout=5)
    )
    local_discord.clock.advance(61 * 60)
    assert (await updated)[1].archived
    # As on Discord, a message to an archived (unlocked) thread is posted and reopens it
    # (discord.py dropped the archived thread from its cache: it hears of it as a join).
    reopened = asyncio.ensure_future(
        bot.wait_for("thread_join", check=lambda joined: joined.id == thread.id, timeout=5)
    )
    message = await thread.send("still here?")
    assert not (await reopened).archived
    local_thread = local_discord.state.channels[thread.id]
    assert not local_thread.archived
    assert local_discord.state.messages[message.id].channel_id == thread.id
    # An archived thread takes no edits, though: only a new message reopens it.
    await local_discord.moderator().edit_thread(local_thread, archived=True)
    with pytest.raises(discord.HTTPException) as raised:
        await message.edit(content="edited")
    assert raised.value.code == 50083
    local_discord.violations.expect(code=50083, match="editing")


async def test_a_locked_thread_refuses_the_bot_and_members_without_manage_threads(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    answer = await (await alice.slash("probe-thread", name="heated")).response()
    inside = await alice.wait_for_message(where=answer)
    local_thread = local_discord.state.channels[answer.id]
    with pytest.raises(PermissionError):
        await alice.edit_thread(local_thread, locked=True)  # alice is no moderator
    updated = asyncio.ensure_future(
        bot.wait_for("thread_update", check=lambda _, after: after.id == answer.id, timeout=5)
    )
    await local_discord.moderator().edit_thread(local_thread, locked=True)
    thread = (await updated)[1]
    assert thread.locked and not thread.archived

    # Open but locked: nothing new from the bot, nor from alice; the moderator may.
    with pytest.raises(discord.Forbidden) as raised:
        await thread.send("may I?")
    assert raised.value.code == 50083
    assert "locked" in local_discord.violations.expect(code=50083).detail
    with pytest.raises(discord.Forbidden):
        await thread.get_partial_message(inside.id).edit(content="edited")
    local_discord.violations.expect(code=50083, match="editing")
    with pytest.raises(PermissionError):
        await alice.in_channel(local_thread).say("me neither?")
    await local_discord.moderator(local_thread).say("mods only")

    # Archived and locked: the bot, its creator, may not reopen it either.
    await local_discord.moderator().edit_thread(local_thread, archived=True)
    with pytest.raises(discord.Forbidden) as raised:
        await thread.edit(archived=False)
    assert raised.value.code == 50013
    local_discord.violations.expect(code=50013, match="unarchiving a locked thread")
    with pytest.raises(discord.Forbidden) as raised:
        await thread.send("and now?")
    assert raised.value.code == 50083
    assert "archived and locked" in local_discord.violations.expect(code=50083).detail
    with pytest.raises(discord.Forbidden):
        await thread.get_partial_message(inside.id).delete()
    local_discord.violations.expect(code=50083, match="deleting")
    assert local_thread.archived and local_thread.locked
    assert [m.content for m in alice.messages(local_thread)] == [inside.content, "mods only"]

    # With Manage Threads the bot may write there (and its message reopens the thread).
    local_discord.state.set_member_permissions(
        local_discord.guild,
        local_discord.bot_user,
        local_discord.config.bot_permissions | Perm.MANAGE_THREADS,
    )
    await thread.send("moderating")
    assert not local_thread.archived and local_thread.locked


async def test_nitro_raises_an_interactions_limit_but_never_the_bots_own_messages(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    nina = local_discord.state.add_user("nina", premium_type=PremiumType.NITRO)
    local_discord.state.add_member(local_discord.guild, nina)
    big = bytes(11 * MiB)  # over the server's 10 MiB, well within Nitro's 500 MiB

    # An answer to her interaction may carry it...
    ix = await alice.as_user(nina).slash("probe-echo", image=("big.bin", big), prompt="big")
    assert ix.interaction.attachment_size_limit == 500 * MiB
    echoed = await ix.followup(timeout=10)
    assert echoed.attachments[0].size == len(big)
    # ...alice's (no Nitro) gets the server's limit...
    plain = await alice.slash("probe-ping")
    assert plain.interaction.attachment_size_limit == 10 * MiB

    # ...and the bot's own channel message is held to the server's limit whoever asked.
    channel = bot.get_channel(local_discord.general.id)
    assert isinstance(channel, discord.TextChannel) and channel.guild.filesize_limit == 10 * MiB
    with pytest.raises(discord.HTTPException) as raised:
        await channel.send(file=discord.File(io.BytesIO(big), "big.bin"))
    assert (raised.value.status, raised.value.code) == (413, 40005)
    assert "boost tier 0" in local_discord.violations.expect(code=40005).detail

    # Boosts raise it for every message there; GUILD_UPDATE tells the bot.
    updated = asyncio.ensure_future(bot.wait_for("guild_update", timeout=5))
    local_discord.state.set_premium_tier(local_discord.guild, 2)
    assert (await updated)[1].filesize_limit == 50 * MiB
    posted = await channel.send(file=discord.File(io.BytesIO(big), "big.bin"))
    assert posted.attachments[0].size == len(big)


# -- more of the REST surface ------------------------------------------------------------------


async def test_original_response_edited_and_followups_deleted(running_bot: RunningBot) -> None:
    alice, _ = running_bot
    ix = await alice.slash("probe-progress")
    done = await ix.response(lambda m: m.content.startswith("done"))
    assert done.content == "done (was 'half way')"
    (note,) = await ix.followups(1)
    assert note.content == "a passing note" and note.deleted
    assert [m.content for m in alice.messages()] == [done.content]

    vanish = await alice.slash("probe-vanish")
    await alice.state.wait_until(
        lambda: vanish.original is not None and vanish.original.deleted,
        timeout=5,
        what="the deleted answer",
    )
    assert alice.messages() == [done]


async def test_channel_messages_and_threads_through_the_bot(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    channel = bot.get_channel(local_discord.images.id)
    assert isinstance(channel, discord.TextChannel)
    png = make_png((8, 8))
    sent = await channel.send("first", file=discord.File(io.BytesIO(png), "a.png"))
    edited = await sent.edit(
        content="second", attachments=[*sent.attachments, discord.File(io.BytesIO(png), "b.png")]
    )
    assert [a.filename for a in edited.attachments] == ["a.png", "b.png"]
    fetched = await channel.fetch_message(sent.id)
    assert fetched.content == "second" and fetched.edited_at is not None
    assert await fetched.attachments[1].read() == png
    assert [m.id async for m in channel.history(limit=5)] == [sent.id]
    await fetched.delete()
    assert alice.in_channel(local_discord.images).messages() == []

    thread = await channel.create_thread(name="standalone", type=discord.ChannelType.public_thread)
    await thread.send("in the standalone thread")
    viewer = alice.in_channel(local_discord.state.channels[thread.id])
    assert [m.content for m in viewer.messages()] == ["in the standalone thread"]

    # A member's mention inside the thread reaches on_message, and the bot answers there.
    question = await viewer.say("are you there?", mention_bot=True)
    answer = await viewer.wait_for_message(
        lambda m: m.content.startswith("heard"), where=local_discord.state.channels[thread.id]
    )
    assert answer.reference is not None and answer.reference["message_id"] == str(question.id)


async def test_direct_messages_both_ways(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, bot = running_bot
    user = await bot.fetch_user(alice.user.id)
    await user.send("your image is ready")
    dm = alice.dm()
    assert [m.content for m in dm.messages()] == ["your image is ready"]
    # In a DM the bot sees the content without the Message Content intent.
    received = asyncio.ensure_future(
        bot.wait_for("message", check=lambda m: m.author.id == alice.user.id, timeout=5)
    )
    await dm.say("thanks!")
    assert (await received).content == "thanks!"
    assert isinstance((await received).channel, discord.DMChannel)


async def test_second_acknowledgement_is_refused(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    ix = await alice.slash("probe-ping")
    await ix.response()
    url = (
        f"{local_discord.api_base_url}/interactions/{ix.id}/{ix.interaction.token}"
        "/callback?with_response=true"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"type": 4, "data": {"content": "again"}}) as response,
    ):
        assert response.status == 400
        assert (await response.json())["code"] == 40060
    local_discord.violations.expect(code=40060)


@pytest.mark.parametrize(
    "local_discord_config",
    [
        LocalDiscordConfig(
            everyone_permissions=int(
                Perm.VIEW_CHANNEL
                | Perm.SEND_MESSAGES
                | Perm.READ_MESSAGE_HISTORY
                | Perm.USE_APPLICATION_COMMANDS
            ),
            bot_permissions=int(Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES),
        )
    ],
)
async def test_missing_permission_is_refused(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    ix = await alice.slash("probe-thread", name="not allowed")
    answer = await ix.response()
    violation = await local_discord.violations.wait_for(code=50013)
    assert violation.route == "POST /channels/{channel_id}/messages/{message_id}/threads"
    assert alice.thread_of(answer) is None


# -- idempotent posts: nonce + enforce_nonce -------------------------------------------------


async def rest(
    local: LocalDiscord,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    files: dict[str, bytes] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request as the bot, JSON or (with `files`) multipart with payload_json.

    A 429 is waited out as a client must, but on the local Discord's clock: these tests run
    no bot, so moving it ahead by `retry_after` is the wait, without the seconds."""
    headers = {"Authorization": f"Bot {local.token}"}
    for _ in range(3):
        data: aiohttp.FormData | None = None
        if files is not None:
            data = aiohttp.FormData(quote_fields=False)
            data.add_field("payload_json", json.dumps(body or {}), content_type="application/json")
            for index, (name, content) in enumerate(files.items()):
                data.add_field(f"files[{index}]", content, filename=name, content_type="image/png")
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method,
                local.api_base_url + path,
                headers=headers,
                params=params,
                json=body if files is None else None,
                data=data,
            ) as response,
        ):
            text = await response.text()
            if response.content_type != "application/json":
                return response.status, text or None
            answer = json.loads(text)
            if response.status != 429:
                return response.status, answer
        local.clock.advance(answer["retry_after"])
    raise AssertionError(f"{method} {path} still rate limited after three waits")


def post_path(channel: Channel) -> str:
    return f"/channels/{channel.id}/messages"


@pytest.mark.parametrize("nonce", ["job-42:result", 4242])
@pytest.mark.parametrize("multipart", [False, True])
async def test_enforce_nonce_returns_the_first_message_and_posts_nothing(
    local_discord: LocalDiscord, nonce: int | str, multipart: bool
) -> None:
    channel = local_discord.images
    files = {"result.png": make_png()} if multipart else None
    first_body = {"content": "first", "nonce": nonce, "enforce_nonce": True}
    status, first = await rest(
        local_discord, "POST", post_path(channel), body=first_body, files=files
    )
    assert status == 200 and first["nonce"] == nonce  # echoed as sent, int or string
    again = {"content": "second try", "nonce": nonce, "enforce_nonce": True}
    status, second = await rest(local_discord, "POST", post_path(channel), body=again, files=files)
    assert status == 200
    assert second["id"] == first["id"] and second["content"] == "first"
    (only,) = local_discord.bot_messages(channel)
    assert only.id == int(first["id"]) and len(only.attachments) == (1 if multipart else 0)
    # Later fetches do not carry the nonce, as on Discord.
    status, fetched = await rest(local_discord, "GET", f"{post_path(channel)}/{first['id']}")
    assert status == 200 and "nonce" not in fetched
    status, listed = await rest(local_discord, "GET", post_path(channel))
    assert [m["id"] for m in listed] == [first["id"]] and "nonce" not in listed[0]


async def test_nonce_without_enforce_is_only_echoed_and_the_window_ends(
    local_discord: LocalDiscord,
) -> None:
    channel = local_discord.general
    plain = {"content": "plain", "nonce": "n-1"}
    ids = [(await rest(local_discord, "POST", post_path(channel), body=plain))[1] for _ in range(2)]
    assert ids[0]["id"] != ids[1]["id"] and ids[0]["nonce"] == "n-1"
    # An integer nonce and the same digits as a string are not the same nonce.
    for nonce in (77, "77"):
        body = {"content": str(type(nonce)), "nonce": nonce, "enforce_nonce": True}
        assert (await rest(local_discord, "POST", post_path(channel), body=body))[0] == 200
    assert len(local_discord.bot_messages(channel)) == 4
    # Five minutes on, the nonce is free again.
    enforced = {"content": "once", "nonce": "n-2", "enforce_nonce": True}
    _, first = await rest(local_discord, "POST", post_path(channel), body=enforced)
    local_discord.clock.advance(5 * 60 + 1)
    _, later = await rest(local_discord, "POST", post_path(channel), body=enforced)
    assert later["id"] != first["id"]


async def test_nonce_of_a_deleted_message_is_unknown_message(local_discord: LocalDiscord) -> None:
    channel = local_discord.general
    body = {"content": "short-lived", "nonce": "n-3", "enforce_nonce": True}
    _, first = await rest(local_discord, "POST", post_path(channel), body=body)
    status, _ = await rest(local_discord, "DELETE", f"{post_path(channel)}/{first['id']}")
    assert status == 204
    status, error = await rest(local_discord, "POST", post_path(channel), body=body)
    assert (status, error["code"]) == (404, 10008)
    assert local_discord.bot_messages(channel, include_deleted=True) == [
        local_discord.state.messages[int(first["id"])]
    ]


async def test_nonce_reused_in_another_channel_is_reported(local_discord: LocalDiscord) -> None:
    body = {"content": "here", "nonce": "n-4", "enforce_nonce": True}
    _, first = await rest(local_discord, "POST", post_path(local_discord.general), body=body)
    _, other = await rest(local_discord, "POST", post_path(local_discord.images), body=body)
    # Posted (the channel-scoped reading), but Discord may answer otherwise: a violation.
    assert other["id"] != first["id"]
    assert "another channel" in local_discord.violations.expect(kind="rule").message


async def test_discord_py_sends_a_nonce_and_message_create_echoes_it(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    _, bot = running_bot
    channel = bot.get_channel(local_discord.general.id)
    assert isinstance(channel, discord.TextChannel)
    received = asyncio.ensure_future(
        bot.wait_for("message", check=lambda m: m.author.id == bot.user.id, timeout=5)
    )
    sent = await channel.send("hello", nonce="kontext-1")
    assert sent.nonce == "kontext-1" and (await received).nonce == "kontext-1"
    (request,) = local_discord.requests_to(CHANNEL_POST)
    assert request.body["enforce_nonce"] is True
    # The same nonce again through discord.py: the first message comes back.
    again = await channel.send("hello again", nonce="kontext-1")
    assert again.id == sent.id and again.content == "hello"
    assert [m.id for m in local_discord.bot_messages(local_discord.general)] == [sent.id]


# -- counting what the bot posted ------------------------------------------------------------


def result_body(job_id: int, text: str) -> dict[str, Any]:
    """A result as Kontext posts it: buttons whose custom_ids carry the job id."""
    buttons = [
        {"type": 2, "style": 2, "label": label, "custom_id": f"kontext:{action}:{job_id}"}
        for action, label in (("reroll", "Reroll"), ("delete", "Delete"))
    ]
    return {"content": text, "components": [{"type": 1, "components": buttons}]}


async def test_bot_messages_in_a_channel_and_its_threads_count_per_job(
    local_discord: LocalDiscord,
) -> None:
    channel = local_discord.images
    _, first = await rest(local_discord, "POST", post_path(channel), body=result_body(1, "one"))
    status, _ = await rest(
        local_discord,
        "POST",
        f"{post_path(channel)}/{first['id']}/threads",
        body={"name": "chain"},
    )
    assert status == 201
    thread = local_discord.state.channels[int(first["id"])]
    await rest(local_discord, "POST", post_path(thread), body=result_body(2, "two"))
    await rest(local_discord, "POST", post_path(thread), body=result_body(1, "one again"))
    _, gone = await rest(local_discord, "POST", post_path(channel), body=result_body(3, "three"))
    await rest(local_discord, "DELETE", f"{post_path(channel)}/{gone['id']}")
    await rest(local_discord, "POST", post_path(local_discord.general), body=result_body(4, "x"))
    local_discord.state.post_message(channel, local_discord.user, content="not the bot's")

    posts = local_discord.bot_messages(channel)
    assert [m.content for m in posts] == ["one", "two", "one again"]
    assert [m.content for m in local_discord.bot_messages(channel, include_threads=False)] == [
        "one"
    ]
    pattern = r"kontext:reroll:(\d+)"
    assert count_custom_ids(posts, pattern) == {"1": 2, "2": 1}
    everything = local_discord.bot_messages(channel, include_deleted=True)
    assert count_custom_ids(everything, pattern) == {"1": 2, "2": 1, "3": 1}
    assert posts[0].custom_ids == ["kontext:reroll:1", "kontext:delete:1"]


# -- reading history: GET /channels/{id}/messages ----------------------------------------------


def history_ids(listed: list[dict[str, Any]]) -> list[int]:
    return [int(m["id"]) for m in listed]


async def test_history_is_newest_first_and_pages_like_discord(local_discord: LocalDiscord) -> None:
    channel = local_discord.general
    posted = [
        local_discord.state.post_message(channel, local_discord.user, content=f"m{n}").id
        for n in range(7)
    ]

    async def listed(**params: str) -> list[int]:
        status, body = await rest(local_discord, "GET", post_path(channel), params=params)
        assert status == 200, body
        return history_ids(body)

    assert await listed() == posted[::-1]
    assert await listed(limit="3") == posted[:3:-1]
    assert await listed(before=str(posted[4]), limit="2") == [posted[3], posted[2]]
    # `after` gives the messages right after the id, still newest first.
    assert await listed(after=str(posted[1]), limit="2") == [posted[3], posted[2]]
    assert await listed(after=str(posted[6])) == []
    assert await listed(around=str(posted[3]), limit="3") == [posted[4], posted[3], posted[2]]
    assert await listed(around=str(posted[3]), limit="1") == [posted[3]]


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"limit": "0"}, "limit", "NUMBER_TYPE_MIN"),
        ({"limit": "101"}, "limit", "NUMBER_TYPE_MAX"),
        ({"limit": "ten"}, "limit", "NUMBER_TYPE_COERCE"),
        ({"before": "yesterday"}, "before", "NUMBER_TYPE_COERCE"),
        ({"before": "1", "after": "2"}, "after", "BASE_TYPE_INVALID"),
    ],
)
async def test_history_query_out_of_range_is_a_form_error(
    local_discord: LocalDiscord, params: dict[str, str], field: str, code: str
) -> None:
    status, body = await rest(local_discord, "GET", post_path(local_discord.general), params=params)
    assert (status, body["code"]) == (400, 50035)
    assert body["errors"][field]["_errors"][0]["code"] == code
    assert local_discord.violations.expect(code=50035).route == (
        "GET /channels/{channel_id}/messages"
    )


async def test_history_brings_the_bots_results_back_whole(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    _, bot = running_bot
    channel = bot.get_channel(local_discord.images.id)
    assert isinstance(channel, discord.TextChannel)
    body = result_body(42, "✅ done")
    body["embeds"] = [{"title": "Step 1", "description": "a red fox"}]
    status, _ = await rest(
        local_discord,
        "POST",
        post_path(local_discord.images),
        body=body,
        files={"r.png": make_png()},
    )
    assert status == 200
    posted = [
        local_discord.state.post_message(local_discord.images, local_discord.user, content=str(n))
        for n in range(120)
    ]

    # discord.py pages through 121 messages (two requests) and finds the result by custom_id.
    found = [
        m
        async for m in channel.history(limit=None)
        if any(
            getattr(child, "custom_id", None) == "kontext:reroll:42"
            for row in m.components
            for child in getattr(row, "children", [])
        )
    ]
    assert len(local_discord.requests_to("GET /channels/{channel_id}/messages")) == 2
    (result,) = found
    assert result.author.id == bot.user.id and result.embeds[0].title == "Step 1"
    assert [a.filename for a in result.attachments] == ["r.png"]
    oldest = [(m.id, m.content) async for m in channel.history(limit=3, oldest_first=True)]
    # Alice's messages come back empty: this bot did not ask for the Message Content intent.
    assert oldest == [(result.id, "✅ done"), (posted[0].id, ""), (posted[1].id, "")]


@pytest.mark.parametrize(
    "local_discord_config", [LocalDiscordConfig(message_content_allowed=False)]
)
async def test_history_without_message_content_or_read_history(
    local_discord: LocalDiscord,
) -> None:
    channel = local_discord.general
    local_discord.state.post_message(channel, local_discord.user, content="alice's words")
    await rest(local_discord, "POST", post_path(channel), body=result_body(7, "mine"))
    _, listed = await rest(local_discord, "GET", post_path(channel))
    # An app without the intent reads other people's messages empty; its own stay whole.
    assert [(m["content"], len(m["components"])) for m in listed] == [("mine", 1), ("", 0)]
    _, fetched = await rest(local_discord, "GET", f"{post_path(channel)}/{listed[1]['id']}")
    assert fetched["content"] == ""

    guild = local_discord.guild
    local_discord.state.set_member_permissions(
        guild, local_discord.bot_user, int(Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES)
    )
    guild.roles[guild.id].permissions &= ~Perm.READ_MESSAGE_HISTORY
    # Discord's docs: without Read Message History the list is empty, not an error.
    assert await rest(local_discord, "GET", post_path(channel)) == (200, [])


# -- permissions withdrawn and restored at run time ----------------------------------------------


async def test_revoked_send_permission_refuses_posts_and_reaches_the_bot(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    _, bot = running_bot
    channel = bot.get_channel(local_discord.images.id)
    assert isinstance(channel, discord.TextChannel)
    thread = await (await channel.send("chain")).create_thread(name="chain")
    me = channel.guild.me

    def channel_update() -> asyncio.Future[Any]:
        return asyncio.ensure_future(
            bot.wait_for("guild_channel_update", check=lambda _, c: c.id == channel.id, timeout=5)
        )

    updated = channel_update()
    local_discord.revoke_bot_permission(local_discord.images, Perm.SEND_MESSAGES)
    await updated
    # The bot's cache learnt it from CHANNEL_UPDATE (files and embeds go with it, implicitly).
    assert not channel.permissions_for(me).send_messages
    assert not channel.permissions_for(me).attach_files
    with pytest.raises(discord.Forbidden) as refused:
        await channel.send("result")
    assert refused.value.code == 50013
    local_discord.violations.expect(code=50013)
    # Threads need Send Messages in Threads instead: still granted.
    await thread.send("still allowed in the thread")

    updated = channel_update()
    local_discord.revoke_bot_permission(local_discord.images, Perm.SEND_MESSAGES_IN_THREADS)
    await updated
    with pytest.raises(discord.Forbidden):
        await thread.send("not any more")
    assert "in a thread" in local_discord.violations.expect(code=50013).detail
    status, data = await rest(local_discord, "GET", f"/channels/{local_discord.images.id}")
    assert status == 200
    assert data["permission_overwrites"] == [
        {
            "id": str(local_discord.bot_user.id),
            "type": 1,
            "allow": "0",
            "deny": str(int(Perm.SEND_MESSAGES | Perm.SEND_MESSAGES_IN_THREADS)),
        }
    ]

    updated = channel_update()
    local_discord.restore_bot_permissions(local_discord.images)
    await updated
    assert channel.permissions_for(me).send_messages
    await channel.send("back")
    await thread.send("back in the thread")
    assert [m.content for m in local_discord.bot_messages(local_discord.images)] == [
        "chain",
        "still allowed in the thread",
        "back",
        "back in the thread",
    ]


async def test_overwrites_apply_in_discords_order(local_discord: LocalDiscord) -> None:
    state, guild, channel = local_discord.state, local_discord.guild, local_discord.general
    alice = local_discord.user
    everyone = guild.roles[guild.id]
    assert state.permissions(alice, channel) & Perm.SEND_MESSAGES
    state.set_overwrite(channel, everyone, deny=Perm.SEND_MESSAGES)
    assert not state.permissions(alice, channel) & Perm.SEND_MESSAGES
    # A member's own allow beats @everyone's deny.
    state.set_overwrite(channel, alice, allow=Perm.SEND_MESSAGES)
    assert state.permissions(alice, channel) & Perm.SEND_MESSAGES
    assert not state.permissions(local_discord.stranger, channel) & Perm.SEND_MESSAGES
    # Without View Channel nothing else counts.
    state.set_overwrite(channel, alice, deny=Perm.VIEW_CHANNEL, allow=Perm.SEND_MESSAGES)
    assert state.permissions(alice, channel) == 0
    # The owner is above overwrites.
    state.set_overwrite(channel, everyone, deny=Perm.VIEW_CHANNEL)
    assert state.permissions(state.owner, channel) & Perm.VIEW_CHANNEL
    with pytest.raises(ValueError, match="threads"):
        thread = state.start_thread(channel, "t", alice)
        state.set_overwrite(thread, alice, deny=Perm.SEND_MESSAGES_IN_THREADS)


# -- forced failures on message posts -------------------------------------------------------------


async def test_429s_for_one_channel_are_waited_out_by_discord_py(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    _, bot = running_bot
    images, general = (bot.get_channel(c.id) for c in (local_discord.images, local_discord.general))
    assert isinstance(images, discord.TextChannel) and isinstance(general, discord.TextChannel)
    local_discord.fail_message_posts(local_discord.images, times=2, retry_after=0.1)
    await general.send("another channel is not limited")
    sent = await images.send("after two 429s")
    statuses = [(r.path, r.status) for r in local_discord.requests_to(CHANNEL_POST)]
    images_path = f"/api/v10/channels/{local_discord.images.id}/messages"
    assert [s for p, s in statuses if p == images_path] == [429, 429, 200]
    assert [s for p, s in statuses if p != images_path] == [200]
    assert [m.id for m in local_discord.bot_messages(local_discord.images)] == [sent.id]


async def test_500_is_retried_by_discord_py_and_503_is_raised(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    _, bot = running_bot
    channel = bot.get_channel(local_discord.general.id)
    assert isinstance(channel, discord.TextChannel)
    local_discord.fail_message_posts(local_discord.general, status=500)
    sent = await channel.send("after one 500")
    assert [r.status for r in local_discord.requests_to(CHANNEL_POST)] == [500, 200]

    local_discord.fail_message_posts(local_discord.general, status=503)
    with pytest.raises(discord.DiscordServerError) as raised:
        await channel.send("never posted")
    assert raised.value.status == 503
    assert [m.id for m in local_discord.bot_messages(local_discord.general)] == [sent.id]
    assert [h.status for h in local_discord.server_errors.hits] == [500, 503]


async def test_a_lost_answer_duplicates_a_post_unless_the_nonce_is_enforced(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    _, bot = running_bot
    channel = bot.get_channel(local_discord.images.id)
    assert isinstance(channel, discord.TextChannel)
    # Posted, then answered 500: discord.py retries with the same nonce and gets it back.
    local_discord.fail_message_posts(local_discord.images, status=500, applied=True)
    sent = await channel.send("exactly once", nonce="job-9")
    assert [r.status for r in local_discord.requests_to(CHANNEL_POST)] == [500, 200]
    assert [m.id for m in local_discord.bot_messages(local_discord.images)] == [sent.id]

    # A client that retries without a nonce posts twice: the fault is real.
    local_discord.fail_message_posts(local_discord.images, status=502, applied=True)
    body = {"content": "twice"}
    status, _ = await rest(local_discord, "POST", post_path(local_discord.images), body=body)
    assert status == 502
    assert (await rest(local_discord, "POST", post_path(local_discord.images), body=body))[0] == 200
    contents = [m.content for m in local_discord.bot_messages(local_discord.images)]
    assert contents == ["exactly once", "twice", "twice"]
    with pytest.raises(ValueError, match="5xx"):
        local_discord.fail_message_posts(local_discord.images, applied=True)


# -- gateway sessions when a bot process dies and another takes over ---------------------------


async def receive_frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    frame: dict[str, Any] = json.loads(message.data)
    return frame


async def receive_until(
    ws: aiohttp.ClientWebSocketResponse, *, op: int = 0, event: str | None = None
) -> dict[str, Any]:
    while True:
        frame = await receive_frame(ws)
        if frame["op"] == op and (event is None or frame["t"] == event):
            return frame


async def identify(ws: aiohttp.ClientWebSocketResponse, local: LocalDiscord) -> dict[str, Any]:
    """HELLO, then IDENTIFY; the first answer: READY (op 0) or INVALID_SESSION (op 9)."""
    assert (await receive_frame(ws))["op"] == 10
    await ws.send_json(
        {"op": 2, "d": {"token": local.token, "intents": 1 | 1 << 9, "properties": {}}}
    )
    frame = await receive_frame(ws)
    assert frame["op"] in (0, 9), frame
    return frame


@pytest.mark.parametrize("local_discord_config", [LocalDiscordConfig(heartbeat_interval_ms=60_000)])
async def test_a_new_identify_gets_a_session_of_its_own(local_discord: LocalDiscord) -> None:
    gateway = local_discord.gateway
    async with aiohttp.ClientSession() as http:
        old = await http.ws_connect(local_discord.gateway_url)
        assert (await identify(old, local_discord))["t"] == "READY"
        new = await http.ws_connect(local_discord.gateway_url)
        # Within 5 s of the last IDENTIFY: invalid session, identify again later.
        refused = await identify(new, local_discord)
        assert (refused["op"], refused["d"]) == (9, False)
        assert gateway.identify_refusals == 1
        local_discord.clock.advance(5)
        await new.close()
        new = await http.ws_connect(local_discord.gateway_url)
        ready = await identify(new, local_discord)
        assert ready["t"] == "READY"
        # Both sessions are live and both get every event, as on Discord.
        assert len(gateway.live_sessions()) == 2
        local_discord.state.post_message(local_discord.general, local_discord.user, content="hi")
        for ws in (old, new):
            created = await receive_until(ws, event="MESSAGE_CREATE")
            assert created["d"]["content"] == ""  # no Message Content intent asked for
        # A clean close (1000) ends the old session; the new one carries on.
        await old.close(code=1000)
        await local_discord.state.wait_until(
            lambda: len(gateway.sessions) == 1, timeout=5, what="the old session to end"
        )
        assert list(gateway.sessions) == [ready["d"]["session_id"]]
        await new.close()


@pytest.mark.parametrize(
    "local_discord_config",
    [LocalDiscordConfig(heartbeat_interval_ms=100, heartbeat_timeout_ms=300)],
)
async def test_a_silent_connection_is_closed_and_its_session_stays_resumable(
    local_discord: LocalDiscord,
) -> None:
    gateway = local_discord.gateway
    async with aiohttp.ClientSession() as http:
        frozen = await http.ws_connect(local_discord.gateway_url)
        ready = await identify(frozen, local_discord)
        session_id = ready["d"]["session_id"]
        await receive_until(frozen, event="GUILD_CREATE")
        # No heartbeat ever: the local Discord gives up on the connection.
        closed = await frozen.receive(timeout=5)
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 4000
        assert gateway.heartbeat_timeouts == 1 and gateway.live_sessions() == []
        local_discord.state.post_message(local_discord.general, local_discord.user, content="away")

        resumed = await http.ws_connect(ready["d"]["resume_gateway_url"])
        await receive_frame(resumed)  # HELLO
        await resumed.send_json(
            {"op": 6, "d": {"token": local_discord.token, "session_id": session_id, "seq": 2}}
        )
        missed = await receive_until(resumed, event="MESSAGE_CREATE")
        assert missed["s"] == 3
        await receive_until(resumed, event="RESUMED")
        await resumed.close(code=4000)  # not 1000: the session stays resumable

        # "A few minutes" later it is gone.
        local_discord.clock.advance(local_discord.config.session_resume_window_s + 1)
        late = await http.ws_connect(ready["d"]["resume_gateway_url"])
        await receive_frame(late)
        await late.send_json(
            {"op": 6, "d": {"token": local_discord.token, "session_id": session_id, "seq": 3}}
        )
        assert (await receive_frame(late))["op"] == 9
        assert gateway.sessions == {}
        await late.close()


# -- the bot in a process of its own -------------------------------------------------------------


def result_jobs(local: LocalDiscord) -> Counter[str]:
    """Result posts per job id in #general and its threads: results carry Reroll."""
    return count_custom_ids(local.bot_messages(local.general), r"kontext:reroll:(\d+)")


def is_result(message: Message) -> bool:
    return any(c.startswith("kontext:reroll:") for c in message.custom_ids)


async def test_bot_py_in_another_process_syncs_delivers_and_comes_back(
    local_discord: LocalDiscord, tmp_path: Path
) -> None:
    database = tmp_path / "jobs.sqlite3"
    alice = local_discord.driver()
    async with bot_process(local_discord, database=database, sync=True) as first:
        assert [r.status for r in local_discord.requests_to(GLOBAL_SYNC)] == [200]
        await alice.slash("imagine", prompt="a red fox")
        result = await alice.wait_for_message(is_result, timeout=30)
        assert result.attachments and result.attachments[0].width
        # SIGTERM: a clean shutdown, not a kill after 10 s.
        assert await first.terminate() == 0
    (job,) = result_jobs(local_discord)
    await local_discord.state.wait_until(
        lambda: not local_discord.gateway.live_sessions(),
        timeout=5,
        what="the first process's connection to end",
    )

    # A new process on the same token and job store, without --sync: the commands stayed.
    async with bot_process(local_discord, database=database) as second:
        assert len(local_discord.requests_to(GLOBAL_SYNC)) == 1
        (session,) = second.sessions()
        assert session.connection is not None and len(local_discord.gateway.live_sessions()) == 1
        await alice.slash("imagine", prompt="a blue fox")
        await alice.wait_for_message(
            lambda m: is_result(m) and job not in result_jobs_of(m), after=result, timeout=30
        )
        assert await second.kill() == -signal.SIGKILL
    assert len(result_jobs(local_discord)) == 2
    assert "DRY RUN" in second.stderr


def result_jobs_of(message: Message) -> Counter[str]:
    return count_custom_ids([message], r"kontext:reroll:(\d+)")


async def test_a_bot_process_that_exits_early_fails_the_wait_with_its_stderr(
    local_discord: LocalDiscord, tmp_path: Path
) -> None:
    process = BotProcess(
        local_discord, database=tmp_path / "jobs.sqlite3", env={"DISCORD_TOKEN": "not-the-token"}
    )
    async with process:
        with pytest.raises(AssertionError, match="refused the token") as raised:
            await process.wait_ready(timeout=30)
    assert "exited (1)" in str(raised.value) and process.returncode == 1
    assert [r.status for r in local_discord.requests_to("GET /users/@me")] == [401]
