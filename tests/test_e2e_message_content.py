"""End-to-end: what the bot can do with and without the privileged Message Content intent.

Without it Discord empties every server message that is not the bot's own and does not mention
it, the message a reply points to included: another member's image in a reply is invisible to
the bot (the member is pointed to the Edit with Kontext menu, and nothing is billed), a message
in an edit thread that does not mention the bot arrives without its text (the member is told
once how to continue). Replies that mention the bot, and replies to its own results, work
either way. With the intent (`message_content = true`) the replied-to image is edited.
"""

from __future__ import annotations

import pytest

from tests.e2e import (
    against,
    details,
    first_step,
    history,
    is_step,
    reply_step,
    results_in,
    shared_simulator,
    starts,
    title,
)
from tests.images import decoded, make_png
from tests.local_discord import LocalDiscord, RunningBot, start_bot

pytest_plugins = ("tests.local_discord.fixtures",)

MESSAGE_CONTENT = {"discord": {"message_content": True}}
MENU_HINT = (
    "❌ I can't see the image in that message: Discord only shows me other members' images "
    "when their message mentions me. Right-click the message (long-press on a phone) and "
    "choose **Apps → Edit with Kontext** instead."
)


def mention_hint(bot_mention: str) -> str:
    return (
        f"❌ I can only read messages that mention me. Start with {bot_mention} and say what "
        f'to change, e.g. "{bot_mention} make it a watercolor", or use the **Edit** button '
        "under the result."
    )


async def test_reply_to_another_members_image_without_the_intent_points_to_the_menu(
    local_discord: LocalDiscord,
) -> None:
    async with (
        shared_simulator(latency_s=0.0) as sim,
        start_bot(local_discord, settings_overrides=against(sim)) as (alice, _),
    ):
        bob = alice.stranger
        photo = await alice.say("my garden", files=[("garden.png", make_png((160, 120)))])
        # Bob replies mentioning the bot: his words arrive, alice's image does not.
        ask = await bob.reply(photo, f"{bob.bot_user.mention} make it a watercolor")
        answer = await bob.wait_for_message(
            lambda m: m.reference is not None and m.reference["message_id"] == str(ask.id)
        )
        assert answer.content == MENU_HINT
        assert not answer.mentions(bob.user) and not answer.ephemeral
        # Nothing downloaded, nothing sent to WaveSpeed, nothing billed.
        assert photo.attachments[0].id not in local_discord.state.cdn.downloads
        assert sum(sim.request_counts.values()) == 0 and sim.billed == []
        assert [m.id for m in alice.messages() if m.author.id == alice.bot_user.id] == [answer.id]


@pytest.mark.parametrize("bot_settings_overrides", [MESSAGE_CONTENT])
async def test_with_the_intent_a_reply_edits_another_members_image_and_results_without_a_ping(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    bob = alice.stranger
    photo = await bob.say("my garden", files=[("garden.png", make_png((160, 120)))])
    ask = await alice.reply(photo, f"{alice.bot_user.mention} make it a watercolor")
    step1 = await alice.wait_for_message(is_step("Step 1", "make it a watercolor"), after=ask)
    assert step1.mentions(alice.user)
    assert photo.attachments[0].id in local_discord.state.cdn.downloads
    (attachment,) = step1.attachments
    assert decoded(await alice.download(attachment)).size == (160, 120)

    # The intent also lets a reply to a result that does not ping the bot continue the edit.
    thread = await alice.wait_for_thread(step1)
    quiet = await alice.reply(step1, "add a red hat", mention=False)
    step2 = await alice.wait_for_message(
        is_step("Step 2", "add a red hat"), where=thread, after=quiet
    )
    assert history(await details(alice, step2)) == ["1. make it a watercolor", "2. add a red hat"]


async def test_without_the_intent_results_go_on_by_mention_and_unmentioned_messages_get_one_hint(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    bot_mention = alice.bot_user.mention
    step1, thread = await first_step(alice, "make it blue")
    # A reply to the bot's result pings it by default: its text arrives, the chain goes on.
    await reply_step(alice, step1, "add a red hat", thread=thread, step="Step 2")

    # In the thread a message without a mention arrives empty: one hint, however many there are.
    in_thread = alice.in_channel(thread)
    first = await in_thread.say("now make it night")
    hint = await alice.wait_for_message(starts("❌"), where=thread, after=first)
    assert hint.content == mention_hint(bot_mention)
    assert hint.reference is not None and hint.reference["message_id"] == str(first.id)
    await in_thread.say("hello?")
    # With a mention it works; by the time its result is in, the second message was seen.
    asked = await in_thread.say("now make it night", mention_bot=True)
    step3 = await alice.wait_for_message(
        is_step("Step 3", "now make it night"), where=thread, after=asked
    )
    assert history(await details(alice, step3))[-1] == "3. now make it night"
    hints = [m for m in alice.messages(thread) if m.content.startswith("❌")]
    assert hints == [hint]

    # A reply to a result with its ping turned off arrives empty too: told once, in the channel.
    quiet = await alice.reply(step1, "make it green", mention=False)
    told = await alice.wait_for_message(starts("❌"), where=alice.channel, after=quiet)
    assert told.content == mention_hint(bot_mention)
    assert [title(m) for m in results_in(alice, thread)] == ["Step 2", "Step 3"]
    # Bob, chatting in the thread, is told once as well.
    chat = await alice.stranger.in_channel(thread).say("nice!")
    told_bob = await alice.wait_for_message(starts("❌"), where=thread, after=chat)
    assert told_bob.reference is not None and told_bob.reference["message_id"] == str(chat.id)
