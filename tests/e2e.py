"""What end-to-end tests read and do as members: results, steps, statuses, simulators."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from bot import KontextBot
from services.simulator import SimulatorConfig, WaveSpeedSimulator, run_simulator
from tests.images import make_png
from tests.local_discord import Channel, DiscordDriver, LocalDiscord, Message, PremiumType, User

SIM_KEY = "e2e-chains-key"


# -- reading what members see ------------------------------------------------------------------


def embed_of(message: Message) -> dict[str, Any]:
    assert message.embeds, f"message {message.id} has no embed: {message.content!r}"
    return message.embeds[0]


def title(message: Message) -> str:
    return str(message.embeds[0].get("title", "")) if message.embeds else ""


def field(embed: dict[str, Any], name: str) -> str:
    values = [f["value"] for f in embed.get("fields", []) if f["name"] == name]
    assert values, f"no field {name!r} in {[f['name'] for f in embed.get('fields', [])]}"
    return str(values[0])


def history(embed: dict[str, Any]) -> list[str]:
    return field(embed, "History").splitlines()


def job_id_of(message: Message) -> int:
    """The job a result (or a status) belongs to: its buttons carry `kontext:<action>:<id>`."""
    ids = {
        int(m[1])
        for b in message.buttons
        if (m := re.fullmatch(r"kontext:\w+:(\d+)", b.get("custom_id", "")))
    }
    assert len(ids) == 1, f"buttons of message {message.id}: {message.buttons}"
    return ids.pop()


# What Discord renders as markup (emphasis, spoilers, code, masked links, mentions) unless a
# backslash comes first.
MARKUP = frozenset("\\*_~|`[]<@")


def shown(text: str) -> str:
    """What Discord shows for `text` (a backslash before punctuation shows that character),
    failing if any markup in it is not escaped."""
    out: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        following = text[position + 1 : position + 2]
        if char == "\\" and following and not following.isalnum() and not following.isspace():
            out.append(following)
            position += 2
            continue
        assert char not in MARKUP, f"{char!r} would be markup at {position} in {text!r}"
        out.append(char)
        position += 1
    return "".join(out)


def is_step(name: str, prompt: str | None = None) -> Callable[[Message], bool]:
    """A result whose embed title is `name` (and description `prompt`, when given)."""

    def matches(message: Message) -> bool:
        if title(message) != name:
            return False
        return prompt is None or embed_of(message).get("description") == prompt

    return matches


def starts(*prefixes: str) -> Callable[[Message], bool]:
    return lambda message: message.content.startswith(prefixes)


def says(text: str) -> Callable[[Message], bool]:
    return lambda message: message.content == text


def results_in(driver: DiscordDriver, where: Channel) -> list[Message]:
    """The bot's result messages there (not the private Details answers)."""
    return [
        m
        for m in driver.messages(where)
        if m.embeds and m.author.id == driver.bot_user.id and not m.ephemeral
    ]


async def job_status(bot: KontextBot, job_id: int, wanted: str) -> None:
    """Wait (5 s at most) until the bot's job store says `wanted` (it is written last)."""
    repository = bot.repository
    assert repository is not None
    async with asyncio.timeout(5):
        while True:
            if (await repository.job(job_id)).status == wanted:
                return
            await asyncio.sleep(0.02)


def add_member(
    local: LocalDiscord, name: str, *, premium_type: PremiumType = PremiumType.NONE
) -> User:
    """A new member of the local guild (`premium_type`: with Nitro)."""
    user = local.state.add_user(name, premium_type=premium_type)
    local.state.add_member(local.guild, user)
    return user


# -- doing what members do ---------------------------------------------------------------------


async def first_step(
    alice: DiscordDriver, prompt: str, *, image: bytes | None = None
) -> tuple[Message, Channel]:
    """/edit an image to its Step 1 result; (the result, the thread started on it)."""
    ix = await alice.slash("edit", image=image or make_png(), prompt=prompt)
    await ix.response(starts("✅"))
    result = await alice.wait_for_message(is_step("Step 1", prompt))
    return result, await alice.wait_for_thread(result)


async def reply_step(
    driver: DiscordDriver, target: Message, instruction: str, *, thread: Channel, step: str
) -> Message:
    """Reply to a result: the next step in the thread, once the public status reply is gone
    (the bot's last word on the job, as a member can tell)."""
    reply = await driver.reply(target, instruction)
    result = await driver.wait_for_message(is_step(step, instruction), where=thread, after=reply)

    def status_gone() -> bool:
        replies = [
            m
            for m in driver.state.messages.values()
            if m.author.id == driver.bot_user.id
            and m.reference
            and m.reference.get("message_id") == str(reply.id)
        ]
        return bool(replies) and all(m.deleted for m in replies)

    await driver.state.wait_until(status_gone, timeout=5, what="the status reply deleted")
    return result


async def details(driver: DiscordDriver, result: Message) -> dict[str, Any]:
    ix = await driver.click(result, "Details")
    answer = await ix.response()
    assert answer.ephemeral
    assert answer not in driver.as_user(driver.discord.stranger).messages(
        driver.state.channels[result.channel_id]
    )
    return embed_of(answer)


@contextlib.asynccontextmanager
async def shared_simulator(
    latency_s: float, *, max_output_side: int = 256
) -> AsyncIterator[WaveSpeedSimulator]:
    """One WaveSpeed simulator outside the bot, so it outlives a bot run and can be counted."""
    config = SimulatorConfig(
        api_keys=frozenset({SIM_KEY}), latency_s=latency_s, max_output_side=max_output_side
    )
    async with run_simulator(config) as sim:
        yield sim


def against(sim: WaveSpeedSimulator, **sections: Any) -> dict[str, Any]:
    """Settings overrides pointing the bot at `sim` (a real-looking key: no built-in simulator)."""
    assert sim.base_url is not None
    return {"wavespeed": {"api_key": SIM_KEY, "base_url": sim.base_url}, **sections}


def prompts_in_submit_order(sim: WaveSpeedSimulator) -> list[str]:
    return [p.request["prompt"] for p in sim.predictions.values()]


# A status line of the bot's, not its last word on a job.
STATUS_ICONS = ("⏳", "🧰", "🎨", "📤")


async def answer_to(driver: DiscordDriver, message: Message) -> Message:
    """The bot's reply to `message` once it says more than a status line (an error, help)."""
    return await driver.wait_for_message(
        lambda m: (
            (m.reference or {}).get("message_id") == str(message.id)
            and not m.content.startswith(STATUS_ICONS)
        ),
        where=driver.state.channels[message.channel_id],
        after=message,
        timeout=10.0,
    )
