"""The bot's start-up, end to end against the local Discord: sync, intents, cogs, invite."""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.local_discord import (
    PROBE_EXTENSION,
    BotProcess,
    LocalDiscord,
    LocalDiscordConfig,
    start_bot,
)
from tests.local_discord.gateway import MESSAGE_CONTENT
from tests.postgres import PostgresServer

pytest_plugins = ("tests.local_discord.fixtures",)

GLOBAL_SYNC = "PUT /applications/{application_id}/commands"
GUILD_SYNC = "PUT /applications/{application_id}/guilds/{guild_id}/commands"
PRIVILEGED = MESSAGE_CONTENT | (1 << 1) | (1 << 8)  # message content, members, presences


def session_intents(local: LocalDiscord) -> int:
    (session,) = local.gateway.sessions.values()
    return session.intents


async def test_a_normal_start_syncs_nothing_and_says_ready_with_the_invite(
    local_discord: LocalDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with start_bot(local_discord, sync=False) as (_, bot):
        assert local_discord.requests_to(GLOBAL_SYNC) == []
        assert local_discord.requests_to(GUILD_SYNC) == []
        assert session_intents(local_discord) & PRIVILEGED == 0
        assert not bot.http_session.closed
    assert bot.http_session.closed
    # One "ready" line: who, in how many servers, billed or not, and the invite.
    (invite,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ready:")]
    assert invite.startswith(f"ready: logged in as {bot.user} (id {bot.user.id}) in 1 server, ")
    assert (
        "DRY RUN (built-in WaveSpeed simulator, nothing billed); invite it with https://" in invite
    )
    assert f"client_id={local_discord.application_id}" in invite
    assert "scope=bot+applications.commands" in invite
    assert "permissions=309237763072" in invite
    # No WaveSpeed key in the test settings: the dry run is announced at start-up.
    assert any("DRY RUN" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


async def test_message_content_intent_only_when_the_operator_enables_it(
    local_discord: LocalDiscord,
) -> None:
    overrides = {"discord": {"message_content": True}}
    async with start_bot(local_discord, sync=False, settings_overrides=overrides):
        assert session_intents(local_discord) & MESSAGE_CONTENT


async def test_sync_to_one_guild_when_asked(local_discord: LocalDiscord) -> None:
    async with start_bot(
        local_discord, extra_extensions=(PROBE_EXTENSION,), sync_guild=local_discord.guild.id
    ):
        assert local_discord.requests_to(GLOBAL_SYNC) == []
        (guild_sync,) = local_discord.requests_to(GUILD_SYNC)
        assert "probe-ping" in {command["name"] for command in guild_sync.body}


async def test_a_failing_extension_is_logged_and_the_others_load(
    local_discord: LocalDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    extensions = ("tests.broken_extension", PROBE_EXTENSION)
    async with start_bot(local_discord, extra_extensions=extensions) as (alice, _):
        answer = await (await alice.slash("probe-ping")).response()
        assert answer.content.startswith("pong")
    failure = next(r for r in caplog.records if "tests.broken_extension" in r.getMessage())
    assert "failed to load" in failure.getMessage()
    assert failure.exc_info is not None


# -- start-up failures: one line that says what to do, exit 1, no traceback ------------------


async def failed_start(
    local: LocalDiscord, tmp_path: Path, *, exit_code: int = 1, **options: Any
) -> str:
    """Run `bot.py` until it gives up; its stderr, checked to be one line and no traceback.
    Settings it cannot run with end it with 2, a start that failed with 1."""
    async with BotProcess(local, database=tmp_path / "jobs.sqlite3", **options) as process:
        code = await process.wait(timeout=60)
    assert code == exit_code, process.stderr
    assert "Traceback" not in process.stderr, process.stderr
    # The log lines before the failure are INFO lines; the failure is the one line after them.
    lines = [line for line in process.stderr.splitlines() if not INFO_LINE.match(line)]
    assert len(lines) == 1, process.stderr
    return lines[0]


INFO_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|DEBUG|WARNING) ")


@pytest.mark.parametrize(
    "local_discord_config", [LocalDiscordConfig(message_content_allowed=False)]
)
async def test_a_refused_message_content_intent_says_where_to_turn_it_on(
    local_discord: LocalDiscord, tmp_path: Path
) -> None:
    line = await failed_start(local_discord, tmp_path, env={"DISCORD_MESSAGE_CONTENT": "true"})
    assert "Message Content intent" in line and "Privileged Gateway Intents" in line


async def test_a_token_reset_after_login_is_one_line_about_the_token(
    local_discord: LocalDiscord, tmp_path: Path
) -> None:
    local_discord.gateway.token_reset = True
    line = await failed_start(local_discord, tmp_path)
    assert line.startswith("Discord refused the token"), line


async def test_no_way_to_reach_discord_is_one_line_about_the_network(
    local_discord: LocalDiscord, tmp_path: Path
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    # Nothing listens there once the socket is closed.
    line = await failed_start(
        local_discord, tmp_path, env={"DISCORD_API_BASE_URL": f"http://127.0.0.1:{port}/api/v10"}
    )
    assert line.startswith(f"cannot reach Discord at http://127.0.0.1:{port}"), line


async def test_syncing_to_a_server_the_bot_is_not_in_says_so(
    local_discord: LocalDiscord, tmp_path: Path
) -> None:
    state = local_discord.state
    elsewhere = state.add_guild("Somewhere else", local_discord.stranger, everyone_permissions=0)
    line = await failed_start(local_discord, tmp_path, sync=elsewhere.id)
    assert line.startswith(f"cannot publish the commands to server {elsewhere.id}"), line
    local_discord.violations.expect(code=50001)


# -- a fleet's roles ---------------------------------------------------------------------------

# Nothing listens there: these starts must fail before any connection is tried.
NOWHERE = "postgresql://kontext@127.0.0.1:9/kontext"


@pytest.mark.parametrize("role", ["gateway", "worker"])
async def test_a_fleet_role_on_a_sqlite_store_says_it_needs_postgresql(
    local_discord: LocalDiscord, tmp_path: Path, role: str
) -> None:
    line = await failed_start(local_discord, tmp_path, exit_code=2, args=["--role", role])
    assert line == (
        f"--role {role} needs [storage] database = postgresql://...: "
        "a SQLite store belongs to one process"
    )
    assert local_discord.rest.requests == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--role", "gateway", "--shards", "0-2", "--shard-count", "2"], "goes past --shard-count"),
        (["--role", "gateway", "--shards", "one", "--shard-count", "2"], "takes a range (0-3)"),
        (["--role", "gateway", "--shards", "0"], "go together"),
        (["--role", "worker", "--shards", "0", "--shard-count", "2"], "are for --role gateway"),
    ],
)
async def test_shards_that_cannot_run_are_one_line(
    local_discord: LocalDiscord, tmp_path: Path, args: list[str], expected: str
) -> None:
    line = await failed_start(
        local_discord, tmp_path, exit_code=2, args=args, env={"STORAGE_DATABASE": NOWHERE}
    )
    assert expected in line, line
    assert local_discord.rest.requests == []


async def test_a_worker_with_a_refused_token_is_one_line_about_the_token(
    local_discord: LocalDiscord, tmp_path: Path, postgres: PostgresServer
) -> None:
    env = {"STORAGE_DATABASE": await postgres.new_database(), "DISCORD_TOKEN": "not-the-token"}
    line = await failed_start(local_discord, tmp_path, args=["--role", "worker"], env=env)
    assert line.startswith("Discord refused the token"), line
    # A worker logs in over REST and never opens a gateway connection.
    assert local_discord.gateway.identifies == 0
