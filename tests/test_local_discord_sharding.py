"""Sharding on the local Discord, driven by discord.py's own AutoShardedClient.

Discord's rules, as its gateway docs give them: IDENTIFY carries `shard: [shard_id, num_shards]`;
a guild lives on shard `(guild_id >> 22) % num_shards` and only that shard gets its
GUILD_CREATE, events and interactions; DMs go to shard 0; an invalid shard is closed with 4010,
a shard holding too many guilds with 4011; IDENTIFYs are paced by `max_concurrency` buckets;
`GET /gateway/bot` recommends a shard count. An unsharded connection (no `shard`) is shard 0
of 1 and gets everything, as the other end-to-end tests rely on.
"""

# Waits take a `timeout` like discord.py's own `wait_for`: a test must fail, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import aiohttp
import discord
import pytest
import yarl
from discord.ext import commands

from tests.local_discord import Channel, LocalDiscord, LocalDiscordConfig, Message
from tests.local_discord.clock import Snowflakes, shard_of
from tests.local_discord.gateway import Session
from tests.local_discord.models import Guild

pytest_plugins = ("tests.local_discord.fixtures",)

C = TypeVar("C", bound=discord.Client)

# Two shards identify at once only in two buckets (shard_id % max_concurrency).
TWO_BUCKETS = LocalDiscordConfig(max_concurrency=2)


class ShardedProbe(commands.AutoShardedBot):
    """A small sharded bot: a /where command, and every message it receives, in order."""

    def __init__(self, *, pace_identifies: bool = False, **options: Any) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            guild_ready_timeout=0.05,
            **options,
        )
        self.pace_identifies = pace_identifies
        self.received: list[discord.Message] = []

    async def setup_hook(self) -> None:
        @self.tree.command(name="where", description="Which guild and shard this is")
        async def where(interaction: discord.Interaction) -> None:
            guild = interaction.guild
            assert guild is not None
            await interaction.response.send_message(f"{guild.name} on shard {guild.shard_id}")

        await self.tree.sync()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # discord.py waits 5 s before every IDENTIFY but the first, as max_concurrency 1
        # requires. Tests with two buckets (max_concurrency 2) let shards 0 and 1 identify at
        # once, as a large bot's own pacing would.
        if self.pace_identifies:
            await super().before_identify_hook(shard_id, initial=initial)

    async def on_message(self, message: discord.Message) -> None:
        self.received.append(message)


@contextlib.contextmanager
def pointed_at(local: LocalDiscord) -> Iterator[None]:
    """discord.py's two globals for where Discord is, set for the block and put back."""
    saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    discord.http.Route.BASE = local.api_base_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(local.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


@contextlib.asynccontextmanager
async def connected(local: LocalDiscord, client: C, *, timeout: float = 20.0) -> AsyncIterator[C]:
    """`client` started against `local` and READY (every shard), closed after the block."""
    with pointed_at(local):
        async with client:
            runner = asyncio.create_task(client.start(local.token), name="sharded-client")
            ready = asyncio.create_task(client.wait_until_ready(), name="sharded-ready")
            done, _ = await asyncio.wait(
                {ready, runner}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if ready not in done:
                ready.cancel()
                await asyncio.gather(ready, return_exceptions=True)
                if runner in done:
                    runner.result()
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
                raise TimeoutError(f"the client was not READY within {timeout}s")
            try:
                yield client
            finally:
                await client.close()
                await asyncio.wait_for(runner, timeout=10)


async def start_failure(local: LocalDiscord, client: discord.Client) -> BaseException:
    """What `client.start()` raises against `local` (it must fail)."""
    with pointed_at(local):
        async with client:
            try:
                await asyncio.wait_for(client.start(local.token), timeout=20)
            except (discord.ConnectionClosed, discord.HTTPException) as exc:
                return exc
    raise AssertionError("the client started, though it should have been refused")


def live_session(local: LocalDiscord, shard: tuple[int, int] | None) -> Session:
    (session,) = [s for s in local.gateway.live_sessions() if s.shard == shard]
    return session


def guild_ids(session: Session, event: str) -> set[int]:
    """The guilds of every `event` the session was sent (GUILD_CREATE: the guild itself)."""
    key = "id" if event == "GUILD_CREATE" else "guild_id"
    return {int(data[key]) for data in session.events(event)}


def guilds_on(local: LocalDiscord, shard: tuple[int, int]) -> set[int]:
    return {g.id for g in local.gateway.bot_guilds(shard)}


def general_of(local: LocalDiscord, guild: Guild) -> Channel:
    return local.state.channels[guild.channel_ids[0]]


def message_ids(session: Session) -> set[int]:
    return {int(data["id"]) for data in session.events("MESSAGE_CREATE")}


def interaction_ids(session: Session) -> set[int]:
    return {int(data["id"]) for data in session.events("INTERACTION_CREATE")}


async def delivered(bot: ShardedProbe, message: Message) -> None:
    """Until discord.py has dispatched `message` to `bot`'s on_message."""
    if not any(m.id == message.id for m in bot.received):
        await bot.wait_for("message", check=lambda m: m.id == message.id, timeout=5)


def one_guild_on_each_shard(local: LocalDiscord) -> tuple[Guild, Guild]:
    zero, _ = local.add_guild("Shard Zero", on_shard=(0, 2))
    one, _ = local.add_guild("Shard One", on_shard=(1, 2))
    return zero, one


# -- ids --------------------------------------------------------------------------------------


def test_ids_made_for_a_shard_land_on_it_and_still_rise(local_discord: LocalDiscord) -> None:
    ids = Snowflakes(local_discord.clock)
    made = []
    for shard in [(0, 2), (1, 2), (1, 2), (3, 5), (0, 1), (4, 7), (0, 2)]:
        snowflake = ids.next(on_shard=shard)
        assert shard_of(snowflake, shard[1]) == shard[0]
        made.append(snowflake)
    made.append(ids.next())
    assert made == sorted(made) and len(set(made)) == len(made)
    for wrong in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError):
            ids.next(on_shard=wrong)
    guild, general = local_discord.add_guild("Placed", on_shard=(1, 3))
    assert shard_of(guild.id, 3) == 1
    assert general.guild_id == guild.id
    assert local_discord.bot_user.id in guild.members


# -- one client, two shards -------------------------------------------------------------------


@pytest.mark.parametrize("local_discord_config", [TWO_BUCKETS])
async def test_each_shard_receives_only_its_guilds(local_discord: LocalDiscord) -> None:
    zero, one = one_guild_on_each_shard(local_discord)
    bot = ShardedProbe(shard_ids=[0, 1], shard_count=2)
    async with connected(local_discord, bot):
        for shard_id in (0, 1):
            session = live_session(local_discord, (shard_id, 2))
            mine = guilds_on(local_discord, (shard_id, 2))
            (ready,) = session.events("READY")
            assert ready["shard"] == [shard_id, 2]
            assert {int(g["id"]) for g in ready["guilds"]} == mine
            assert guild_ids(session, "GUILD_CREATE") == mine
        assert zero.id in guilds_on(local_discord, (0, 2))
        assert one.id in guilds_on(local_discord, (1, 2))
        # discord.py put each guild on the shard Discord did, and has them all.
        assert {g.id: g.shard_id for g in bot.guilds} == {
            g.id: shard_of(g.id, 2) for g in local_discord.gateway.bot_guilds()
        }

        # A guild's events too: a message in Shard One reaches shard 1 only.
        said = await local_discord.driver(channel=general_of(local_discord, one)).say("hello")
        await delivered(bot, said)
        assert said.id in message_ids(live_session(local_discord, (1, 2)))
        assert said.id not in message_ids(live_session(local_discord, (0, 2)))
        assert [m.id for m in bot.received].count(said.id) == 1


@pytest.mark.parametrize("local_discord_config", [TWO_BUCKETS])
async def test_a_slash_command_in_a_guild_on_shard_1_is_delivered_on_shard_1(
    local_discord: LocalDiscord,
) -> None:
    _, one = one_guild_on_each_shard(local_discord)
    async with connected(local_discord, ShardedProbe(shard_ids=[0, 1], shard_count=2)):
        ix = await local_discord.driver(channel=general_of(local_discord, one)).slash("where")
        assert (await ix.response()).content == "Shard One on shard 1"
        assert ix.id in interaction_ids(live_session(local_discord, (1, 2)))
        assert ix.id not in interaction_ids(live_session(local_discord, (0, 2)))


@pytest.mark.parametrize("local_discord_config", [TWO_BUCKETS])
async def test_direct_messages_reach_shard_0_only(local_discord: LocalDiscord) -> None:
    one_guild_on_each_shard(local_discord)
    bot = ShardedProbe(shard_ids=[0, 1], shard_count=2)
    async with connected(local_discord, bot):
        said = await local_discord.driver().dm().say("hi in private")
        await delivered(bot, said)
        assert said.id in message_ids(live_session(local_discord, (0, 2)))
        assert said.id not in message_ids(live_session(local_discord, (1, 2)))
        assert [m.id for m in bot.received].count(said.id) == 1
        assert bot.received[-1].guild is None


# -- two processes, one shard each ------------------------------------------------------------


@pytest.mark.parametrize("local_discord_config", [TWO_BUCKETS])
async def test_two_clients_with_one_shard_each_see_only_their_guilds(
    local_discord: LocalDiscord,
) -> None:
    zero, one = one_guild_on_each_shard(local_discord)
    first = ShardedProbe(shard_ids=[0], shard_count=2)
    second = ShardedProbe(shard_ids=[1], shard_count=2)
    async with connected(local_discord, first), connected(local_discord, second):
        assert {g.id for g in first.guilds} == guilds_on(local_discord, (0, 2))
        assert {g.id for g in second.guilds} == guilds_on(local_discord, (1, 2))
        assert first.get_guild(one.id) is None and second.get_guild(zero.id) is None
        to_zero = await local_discord.driver(channel=general_of(local_discord, zero)).say("0")
        to_one = await local_discord.driver(channel=general_of(local_discord, one)).say("1")
        await delivered(first, to_zero)
        await delivered(second, to_one)
        assert [m.id for m in first.received] == [to_zero.id]
        assert [m.id for m in second.received] == [to_one.id]
        # Each answers the commands of its own guilds.
        ix = await local_discord.driver(channel=general_of(local_discord, one)).slash("where")
        assert (await ix.response()).content == "Shard One on shard 1"


# -- refusals ---------------------------------------------------------------------------------


async def test_an_invalid_shard_is_closed_with_4010(local_discord: LocalDiscord) -> None:
    # discord.py does not check shard_ids against shard_count: Discord does.
    refused = await start_failure(local_discord, ShardedProbe(shard_ids=[2], shard_count=2))
    assert isinstance(refused, discord.ConnectionClosed) and refused.code == 4010
    assert local_discord.gateway.identifies == 0


@pytest.mark.parametrize("shard", [[0, 0], [2, 2], [-1, 2], [0], [0, 1, 2], "0,1", [0.0, 1]])
async def test_every_malformed_shard_is_closed_with_4010(
    local_discord: LocalDiscord, shard: Any
) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(local_discord.gateway_url) as ws:
        answer = await identify(ws, local_discord, shard=shard)
        assert answer["op"] == "close" and answer["code"] == 4010, answer
    assert local_discord.gateway.identifies == 0
    assert local_discord.gateway.shard_refusals == [(4010, repr(shard))]


@pytest.mark.parametrize("local_discord_config", [LocalDiscordConfig(max_guilds_per_shard=2)])
async def test_too_many_guilds_for_one_shard_is_closed_with_4011(
    local_discord: LocalDiscord,
) -> None:
    # Three guilds, two a shard at most: one connection cannot hold them.
    home = shard_of(local_discord.guild.id, 2)
    local_discord.add_guild("Same Shard", on_shard=(home, 2))
    local_discord.add_guild("Other Shard", on_shard=(1 - home, 2))
    unsharded = discord.Client(intents=discord.Intents.default())
    refused = await start_failure(local_discord, unsharded)
    assert isinstance(refused, discord.ConnectionClosed) and refused.code == 4011

    # A shard holding three of them is refused too...
    local_discord.add_guild("Crowded", on_shard=(home, 2))
    crowded = await start_failure(local_discord, ShardedProbe(shard_ids=[home], shard_count=2))
    assert isinstance(crowded, discord.ConnectionClosed) and crowded.code == 4011
    assert [code for code, _ in local_discord.gateway.shard_refusals] == [4011, 4011]
    # ...while the other one, holding one, connects.
    other = ShardedProbe(shard_ids=[1 - home], shard_count=2)
    async with connected(local_discord, other):
        assert [g.name for g in other.guilds] == ["Other Shard"]


@pytest.mark.parametrize("local_discord_config", [LocalDiscordConfig(max_guilds_per_shard=2)])
async def test_gateway_bot_recommends_enough_shards_and_discord_py_follows_it(
    local_discord: LocalDiscord,
) -> None:
    home = shard_of(local_discord.guild.id, 2)
    local_discord.add_guild("Same Shard", on_shard=(home, 2))
    local_discord.add_guild("Other Shard", on_shard=(1 - home, 2))
    answer = await gateway_bot(local_discord)
    assert answer["url"] == local_discord.gateway_url
    assert answer["shards"] == 2  # three guilds, two a shard
    assert answer["session_start_limit"] == {
        "total": 1000,
        "remaining": 1000,
        "reset_after": 0,
        "max_concurrency": 1,
    }

    # No shard_count: discord.py asks GET /gateway/bot, connects that many shards and paces
    # their IDENTIFYs 5 s apart itself, as max_concurrency 1 requires.
    bot = ShardedProbe(pace_identifies=True)
    async with connected(local_discord, bot):
        assert bot.shard_count == 2
        assert {s.shard for s in local_discord.gateway.live_sessions()} == {(0, 2), (1, 2)}
        assert len(bot.guilds) == 3
    assert local_discord.gateway.identify_refusals == 0
    assert local_discord.gateway.shard_refusals == []
    left = (await gateway_bot(local_discord))["session_start_limit"]
    assert left["remaining"] == 998 and 0 < left["reset_after"] <= 86_400_000


@pytest.mark.parametrize("local_discord_config", [LocalDiscordConfig(max_guilds_per_shard=2)])
async def test_the_recommendation_leaves_no_shard_over_the_cap(local_discord: LocalDiscord) -> None:
    gateway = local_discord.gateway
    assert gateway.recommended_shards() == 1
    # Five guilds on one shard of 6, so on one of 2 and of 3 too: a count from the number of
    # guilds alone (3) would crowd one shard.
    for n in range(4):
        local_discord.add_guild(f"Crowd {n}", on_shard=(shard_of(local_discord.guild.id, 6), 6))
    count = gateway.recommended_shards()
    assert count > 3
    held = Counter(shard_of(g.id, count) for g in gateway.bot_guilds())
    assert max(held.values()) <= 2
    assert (await gateway_bot(local_discord))["shards"] == count


@pytest.mark.parametrize("local_discord_config", [TWO_BUCKETS])
async def test_identifies_are_paced_per_bucket(local_discord: LocalDiscord) -> None:
    gateway = local_discord.gateway
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(local_discord.gateway_url) for _ in range(4)]
        # Shards 0 and 1 of 4 are buckets 0 and 1 of max_concurrency 2: both may go at once.
        assert (await identify(sockets[0], local_discord, shard=[0, 4]))["t"] == "READY"
        assert (await identify(sockets[1], local_discord, shard=[1, 4]))["t"] == "READY"
        # Shard 2 is bucket 0 again, within 5 s: an invalid session, identify later.
        refused = await identify(sockets[2], local_discord, shard=[2, 4])
        assert (refused["op"], refused["d"]) == (9, False)
        assert gateway.identify_refusals == 1
        local_discord.clock.advance(gateway.identify_interval_s)
        await sockets[2].close()
        sockets[2] = await http.ws_connect(local_discord.gateway_url)
        assert (await identify(sockets[2], local_discord, shard=[2, 4]))["t"] == "READY"
        # An unsharded connection is shard 0: bucket 0, used just now.
        refused = await identify(sockets[3], local_discord)
        assert refused["op"] == 9
        for ws in sockets:
            await ws.close()


async def test_an_unsharded_connection_gets_every_guild_and_dms(
    local_discord: LocalDiscord,
) -> None:
    one_guild_on_each_shard(local_discord)
    async with aiohttp.ClientSession() as http, http.ws_connect(local_discord.gateway_url) as ws:
        ready = await identify(ws, local_discord)
        assert "shard" not in ready["d"]
        everything = {g.id for g in local_discord.gateway.bot_guilds()}
        assert {int(g["id"]) for g in ready["d"]["guilds"]} == everything
        created = {int((await receive_until(ws, "GUILD_CREATE"))["d"]["id"]) for _ in everything}
        assert created == everything
        said = await local_discord.driver().dm().say("hi")
        assert int((await receive_until(ws, "MESSAGE_CREATE"))["d"]["id"]) == said.id


@pytest.mark.parametrize("local_discord_config", [LocalDiscordConfig(session_start_total=2)])
async def test_past_the_days_session_starts_the_token_is_reset(
    local_discord: LocalDiscord,
) -> None:
    gateway = local_discord.gateway
    async with aiohttp.ClientSession() as http:
        first = await http.ws_connect(local_discord.gateway_url)
        assert (await identify(first, local_discord))["t"] == "READY"
        local_discord.clock.advance(gateway.identify_interval_s)
        second = await http.ws_connect(local_discord.gateway_url)
        assert (await identify(second, local_discord))["t"] == "READY"
        assert (await gateway_bot(local_discord))["session_start_limit"]["remaining"] == 0
        local_discord.clock.advance(gateway.identify_interval_s)
        third = await http.ws_connect(local_discord.gateway_url)
        assert (await identify(third, local_discord))["code"] == 4004
        # Every session ends, and the token no longer works.
        for ws in (first, second):
            assert (await receive_until(ws, None))["code"] == 4004
        assert gateway.sessions == {} and gateway.token_reset
        await third.close()


# -- raw gateway helpers ------------------------------------------------------------------------


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next frame as JSON, or {"op": "close", "code": ...} when the server closes."""
    message = await ws.receive(timeout=5)
    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
        return {"op": "close", "code": message.data}
    assert message.type is aiohttp.WSMsgType.TEXT, message
    frame: dict[str, Any] = json.loads(message.data)
    return frame


async def receive_until(ws: aiohttp.ClientWebSocketResponse, event: str | None) -> dict[str, Any]:
    """The next `event` dispatch (None: the close)."""
    while True:
        frame = await receive(ws)
        if frame["op"] == "close" or (frame["op"] == 0 and frame["t"] == event):
            assert event is not None or frame["op"] == "close", frame
            return frame


async def identify(
    ws: aiohttp.ClientWebSocketResponse, local: LocalDiscord, *, shard: Any = None
) -> dict[str, Any]:
    """HELLO, then IDENTIFY (with `shard` if given); the first answer: READY, op 9 or a close."""
    assert (await receive(ws))["op"] == 10
    data: dict[str, Any] = {"token": local.token, "intents": 1 | 1 << 9 | 1 << 12, "properties": {}}
    if shard is not None:
        data["shard"] = shard
    await ws.send_json({"op": 2, "d": data})
    return await receive(ws)


async def gateway_bot(local: LocalDiscord) -> dict[str, Any]:
    headers = {"Authorization": f"Bot {local.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(local.api_base_url + "/gateway/bot", headers=headers) as response,
    ):
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer
