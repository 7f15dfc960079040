"""The local gateway: the websocket discord.py's DiscordWebSocket talks to.

HELLO -> IDENTIFY -> READY + GUILD_CREATE, heartbeats answered with ACKs, every dispatch
numbered with a rising `s`, zlib-stream compression (one deflate context per connection,
each frame flushed with Z_SYNC_FLUSH) when the client asks for it, and sessions that survive a
dropped connection: events dispatched while the bot is away are replayed after its RESUME.
A test can send op 7 RECONNECT to see that the bot resumes and keeps working, op 9
INVALID_SESSION (resumable or not), or turn a connection half-dead (`go_silent`: no more
heartbeat ACKs, no events) to see that the bot notices, closes it and resumes.

Sessions behave as Discord documents them, which matters when a bot process dies and another
takes its place with the same token:
- every IDENTIFY starts a session of its own, and each live session receives every event (two
  bot processes on one token both get each interaction, as on Discord);
- a client that closes with 1000 or 1001 ends its session; any other end (a killed process,
  a dropped socket) leaves it resumable for `session_resume_window_s` of the local clock
  ("a few minutes"; RESUME after that gets INVALID_SESSION);
- a connection that stops heartbeating (a frozen, half-dead process) is closed with 4000
  after `heartbeat_timeout_ms` (default twice the interval plus a second): its session stays
  resumable, as Discord's docs say;
- IDENTIFY is allowed once per `identify_interval_s` (5 s) in each of `max_concurrency`
  buckets, a shard's bucket being `shard_id % max_concurrency` (an unsharded connection is
  shard 0); one sooner is answered INVALID_SESSION, and discord.py identifies again 5 seconds
  later. Measured on the local clock, so a test can `clock.advance` past it;
- a day allows `session_start_total` IDENTIFYs (`GET /gateway/bot`'s session_start_limit);
  one past that resets the token and ends every session, as Discord does;
- a wrong token closes the connection with 4004 (also after a REST login that worked, when a
  test sets `token_reset`), and a privileged intent the portal has not allowed with 4014.

Sharding, as Discord documents it: IDENTIFY may carry `shard: [shard_id, num_shards]`; a
guild lives on shard `(guild_id >> 22) % num_shards`, and a session receives READY's guild
list, GUILD_CREATE and every event of a guild (interactions included) only for its own
shard's guilds; events of no guild (DMs) go to shard 0 only. A connection without `shard` is
shard 0 of 1 and gets everything. An invalid shard (id outside 0..num_shards-1, num_shards < 1)
is closed with 4010, and a session that would hold more than `max_guilds_per_shard` guilds
(2,500 on Discord) with 4011. `recommended_shards` is what `GET /gateway/bot` answers.

Message Content is privileged: an IDENTIFY asking for it while the portal switch is off is
closed with 4014, and a session without it gets every message (MESSAGE_CREATE, MESSAGE_UPDATE,
the `referenced_message` inside them, the message in INTERACTION_CREATE) emptied by
`payloads.without_content`, each message judged on its own. Only a message context-menu
command's target comes whole.
"""

# Waits take a `timeout` like discord.py's own `wait_for`: a test must fail, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .clock import shard_of
from .models import Guild
from .payloads import (
    guild_create_payload,
    interaction_without_content,
    member_payload,
    without_content,
)
from .state import DiscordState

log = logging.getLogger(__name__)

# Opcodes.
DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE_UPDATE, VOICE_STATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11

# Intents.
GUILDS = 1 << 0
GUILD_MESSAGES = 1 << 9
GUILD_MESSAGE_REACTIONS = 1 << 10
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | MESSAGE_CONTENT

# Close codes.
UNKNOWN_OPCODE, DECODE_ERROR, NOT_AUTHENTICATED, AUTHENTICATION_FAILED = 4001, 4002, 4003, 4004
ALREADY_AUTHENTICATED, DISALLOWED_INTENTS = 4005, 4014
INVALID_SHARD, SHARDING_REQUIRED = 4010, 4011

BACKLOG_MAX = 5000
# Discord: at most 2,500 guilds a shard; it recommends about 1,000.
MAX_GUILDS_PER_SHARD = 2500
RECOMMENDED_GUILDS_PER_SHARD = 1000
# Session starts a day (GET /gateway/bot's session_start_limit.total for most bots).
SESSION_START_TOTAL = 1000
SESSION_START_WINDOW_S = 24 * 60 * 60.0
# How far `recommended_shards` looks for a count that puts no shard over the cap.
_MAX_RECOMMENDED_SHARDS = 4096


@dataclass
class Session:
    """A gateway session: lives on across reconnects until closed cleanly or left too long."""

    id: str
    intents: int
    # (shard_id, num_shards) from IDENTIFY; None: unsharded, which is shard 0 of 1.
    shard: tuple[int, int] | None = None
    seq: int = 0
    backlog: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=BACKLOG_MAX))
    connection: Connection | None = None
    # Local clock time the last connection ended (None while connected).
    disconnected_at: float | None = None

    def receives(self, guild_id: int | None) -> bool:
        """Whether this session gets the events of this guild (None: of no guild, such as
        DMs, which Discord sends to shard 0 only)."""
        shard_id, count = self.shard or (0, 1)
        if guild_id is None:
            return shard_id == 0
        return shard_of(guild_id, count) == shard_id

    def events(self, name: str) -> list[dict[str, Any]]:
        """The data of every `name` dispatch this session was sent (from its backlog)."""
        return [frame["d"] for frame in self.backlog if frame["t"] == name]


class Connection:
    """One websocket; frames go out in order through a queue drained by a sender task."""

    def __init__(self, ws: web.WebSocketResponse, *, compress: bool, path: str) -> None:
        self.ws = ws
        self.path = path
        self.compressed = compress
        self.session: Session | None = None
        # True once the local Discord closed it (its close code is not the client's word).
        self.closed_by_server = False
        self.last_heartbeat = asyncio.get_running_loop().time()
        # Half-dead: open, but nothing more reaches the client, heartbeat ACKs included.
        self.silent = False
        self._deflate = zlib.compressobj() if compress else None
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._sender = asyncio.create_task(self._send_loop(), name="local-discord-gateway-send")

    def send(self, frame: dict[str, Any]) -> None:
        if self.silent:
            return  # a half-dead connection: dispatches wait in the session backlog
        self._queue.put_nowait(frame)

    async def _send_loop(self) -> None:
        while (frame := await self._queue.get()) is not None:
            text = json.dumps(frame, separators=(",", ":"))
            try:
                if self._deflate is not None:
                    data = self._deflate.compress(text.encode()) + self._deflate.flush(
                        zlib.Z_SYNC_FLUSH
                    )
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                # The client went away; whatever was not sent is in the session backlog.
                return

    async def close(self, code: int = 1000, message: str = "") -> None:
        if not self.ws.closed:
            self.closed_by_server = True
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender
        if not self.ws.closed:
            await self.ws.close(code=code, message=message.encode())


class Gateway:
    """Sessions, connections and the dispatch of state changes to the bot."""

    def __init__(
        self,
        state: DiscordState,
        *,
        token: str,
        heartbeat_interval_ms: int,
        message_content_allowed: bool,
        heartbeat_timeout_ms: int | None = None,
        identify_interval_s: float = 5.0,
        session_resume_window_s: float = 180.0,
        max_concurrency: int = 1,
        max_guilds_per_shard: int = MAX_GUILDS_PER_SHARD,
        session_start_total: int = SESSION_START_TOTAL,
    ) -> None:
        self._state = state
        self._clock = state.clock
        self._token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.heartbeat_timeout_ms = (
            heartbeat_timeout_ms
            if heartbeat_timeout_ms is not None
            else 2 * heartbeat_interval_ms + 1000
        )
        self.identify_interval_s = identify_interval_s
        if max_concurrency < 1 or max_guilds_per_shard < 1 or session_start_total < 1:
            raise ValueError("max_concurrency, max_guilds_per_shard and session_start_total >= 1")
        self.max_concurrency = max_concurrency
        self.max_guilds_per_shard = max_guilds_per_shard
        self.session_start_total = session_start_total
        self.session_resume_window_s = session_resume_window_s
        self.message_content_allowed = message_content_allowed
        self.url = ""
        self.sessions: dict[str, Session] = {}
        # Every session ever identified, in order (a test tells one process's from another's).
        self.identified: list[Session] = []
        self.connections: list[Connection] = []
        self.identifies = 0
        # IDENTIFYs answered INVALID_SESSION for coming sooner than identify_interval_s.
        self.identify_refusals = 0
        # Connections closed for not heartbeating.
        self.heartbeat_timeouts = 0
        # The token was reset in the developer portal after the bot logged in over REST: its
        # next IDENTIFY is closed with 4004, as Discord does.
        self.token_reset = False
        # Local clock time of the last IDENTIFY let through, by rate-limit bucket
        # (shard_id % max_concurrency).
        self._last_identify_at: dict[int, float] = {}
        # Local clock times of the sessions started (IDENTIFYs let through) in the last day.
        self.session_starts: list[float] = []
        # IDENTIFYs closed for an invalid shard (4010) or too many guilds for one (4011).
        self.shard_refusals: list[tuple[int, str]] = []
        self.resumes = 0
        self.heartbeats = 0
        self.connection_paths: list[str] = []
        self.received: list[dict[str, Any]] = []
        state.subscribe(self.dispatch)

    @property
    def resume_url(self) -> str:
        # A different path from the first connection's, so a test can tell discord.py used it.
        return self.url.rstrip("/") + "/resume"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/gateway", self.handle)
        app.router.add_get("/gateway/resume", self.handle)

    # -- dispatching ----------------------------------------------------------------------

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self._expire_sessions()
        guild_id = _event_guild_id(event, data)
        for session in list(self.sessions.values()):
            if not session.receives(guild_id):
                continue
            payload = _for_intents(event, data, session.intents, self._state.bot_user.id)
            if payload is not None:
                self._send_dispatch(session, event, payload)

    def _send_dispatch(self, session: Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        session.backlog.append(frame)
        if session.connection is not None:
            session.connection.send(frame)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT on every connection: the bot should close and RESUME."""
        for connection in list(self.connections):
            connection.send({"op": RECONNECT, "d": None, "s": None, "t": None})

    def invalidate_sessions(self, *, resumable: bool) -> None:
        """Send op 9 INVALID_SESSION on every connection, as Discord does when it drops a
        session: d=true, the client may RESUME; d=false, the session is gone and it must
        IDENTIFY anew (its missed events are lost, as on Discord)."""
        for connection in list(self.connections):
            session = connection.session
            if not resumable and session is not None:
                self.sessions.pop(session.id, None)
                connection.session = None
            connection.send({"op": INVALID_SESSION, "d": resumable, "s": None, "t": None})

    def go_silent(self) -> None:
        """Every open connection turns half-dead: heartbeats are no longer ACKed and no event
        gets through. A client must notice, close it and RESUME (the events wait meanwhile)."""
        for connection in list(self.connections):
            connection.silent = True

    async def wait_for_resume(self, count: int = 1, timeout: float = 5.0) -> None:
        await self._state.wait_until(
            lambda: self.resumes >= count and self.live_sessions(),
            timeout=timeout,
            what=f"{count} gateway RESUME(s)",
        )

    @property
    def content_over_rest(self) -> bool:
        """Whether REST answers carry message content the Message Content rule would empty.

        Discord decides this by the portal switch alone (`message_content_allowed`). The local
        Discord is stricter: the app's newest session must also have asked for the intent. A
        bot configured without it must work with the switch off, as its README tells operators
        to leave it, so it may not count on other people's messages over REST either.
        """
        newest = self.identified[-1] if self.identified else None
        return (
            self.message_content_allowed
            and newest is not None
            and bool(newest.intents & MESSAGE_CONTENT)
        )

    def live_sessions(self) -> list[Session]:
        """Sessions with a connection (identified or resumed) right now."""
        return [s for s in self.sessions.values() if s.connection is not None]

    def _expire_sessions(self) -> None:
        """Forget sessions whose connection ended longer ago than they stay resumable."""
        now = self._clock.now()
        for session in list(self.sessions.values()):
            gone = session.disconnected_at
            if gone is not None and now - gone > self.session_resume_window_s:
                log.info("gateway: session %s expired (away %.0f s)", session.id, now - gone)
                del self.sessions[session.id]

    async def close(self) -> None:
        for connection in list(self.connections):
            await connection.close(1001, "local discord shutting down")

    # -- sharding ---------------------------------------------------------------------------

    def bot_guilds(self, shard: tuple[int, int] | None = None) -> list[Guild]:
        """The guilds the bot is in; with `shard`, those on that shard only."""
        state = self._state
        guilds = [g for g in state.guilds.values() if state.bot_user.id in g.members]
        if shard is None:
            return guilds
        shard_id, count = shard
        return [g for g in guilds if shard_of(g.id, count) == shard_id]

    def recommended_shards(self) -> int:
        """The shard count `GET /gateway/bot` recommends: about one shard per 1,000 guilds
        (never more guilds than the cap), and at least as many as keep every shard within
        `max_guilds_per_shard` for the guilds the bot is in now, so following the
        recommendation never ends in 4011."""
        ids = [g.id for g in self.bot_guilds()]
        per_shard = min(RECOMMENDED_GUILDS_PER_SHARD, self.max_guilds_per_shard)
        count = max(1, -(-len(ids) // per_shard))
        while count < _MAX_RECOMMENDED_SHARDS:
            held = Counter(shard_of(guild_id, count) for guild_id in ids)
            if max(held.values(), default=0) <= self.max_guilds_per_shard:
                break
            count += 1
        return count

    def session_start_limit(self) -> dict[str, int]:
        """`session_start_limit` of `GET /gateway/bot`: what is left of the day's IDENTIFYs."""
        now = self._clock.now()
        self.session_starts = [t for t in self.session_starts if now - t < SESSION_START_WINDOW_S]
        reset_after = (
            self.session_starts[0] + SESSION_START_WINDOW_S - now if self.session_starts else 0.0
        )
        return {
            "total": self.session_start_total,
            "remaining": max(0, self.session_start_total - len(self.session_starts)),
            "reset_after": int(reset_after * 1000),
            "max_concurrency": self.max_concurrency,
        }

    # -- one connection -------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        compress = request.query.get("compress") == "zlib-stream"
        connection = Connection(ws, compress=compress, path=request.path)
        self.connections.append(connection)
        self.connection_paths.append(request.path)
        watchdog = asyncio.create_task(
            self._watch_heartbeats(connection), name="local-discord-heartbeat-watchdog"
        )
        connection.send(
            {
                "op": HELLO,
                "d": {"heartbeat_interval": self.heartbeat_interval_ms},
                "s": None,
                "t": None,
            }
        )
        try:
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(message.data)
                except ValueError:
                    await connection.close(DECODE_ERROR, "Error while decoding payload.")
                    break
                self.received.append(frame)
                if not await self._on_frame(connection, frame):
                    break
        finally:
            watchdog.cancel()
            self._connection_ended(connection, ws.close_code)
            self.connections.remove(connection)
            await connection.close()
            self._state.changed()
        return ws

    def _connection_ended(self, connection: Connection, close_code: int | None) -> None:
        session = connection.session
        if session is None or session.connection is not connection:
            return
        session.connection = None
        if close_code in (1000, 1001) and not connection.closed_by_server:
            # Discord: closing with 1000 or 1001 invalidates the session.
            self.sessions.pop(session.id, None)
            log.info("gateway: session %s closed by the client (%s)", session.id, close_code)
        else:
            session.disconnected_at = self._clock.now()
            log.info("gateway: session %s lost its connection (%s)", session.id, close_code)

    async def _watch_heartbeats(self, connection: Connection) -> None:
        """Close a connection whose client stopped heartbeating (frozen, or half-dead)."""
        loop = asyncio.get_running_loop()
        timeout = self.heartbeat_timeout_ms / 1000
        while not connection.ws.closed:
            remaining = connection.last_heartbeat + timeout - loop.time()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            log.info("gateway: no heartbeat for %.1f s, closing the connection", timeout)
            self.heartbeat_timeouts += 1
            connection.closed_by_server = True
            self._connection_ended(connection, None)
            self._state.changed()
            await connection.close(4000, "Heartbeat timed out.")
            return

    async def _on_frame(self, connection: Connection, frame: dict[str, Any]) -> bool:
        """Handle one client frame; False once the connection is being closed."""
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            connection.last_heartbeat = asyncio.get_running_loop().time()
            self.heartbeats += 1
            connection.send({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
            self._state.changed()
        elif op == IDENTIFY:
            return await self._identify(connection, data or {})
        elif op == RESUME:
            return await self._resume(connection, data or {})
        elif op in (PRESENCE_UPDATE, VOICE_STATE):
            pass
        elif op == REQUEST_MEMBERS:
            self._members_chunk(connection, data or {})
        else:
            await connection.close(UNKNOWN_OPCODE, "Unknown opcode.")
            return False
        return True

    async def _identify(self, connection: Connection, data: dict[str, Any]) -> bool:
        if connection.session is not None:
            await connection.close(ALREADY_AUTHENTICATED, "Already authenticated.")
            return False
        if data.get("token") != self._token or self.token_reset:
            await connection.close(AUTHENTICATION_FAILED, "Authentication failed.")
            return False
        shard = _parse_shard(data["shard"]) if "shard" in data else None
        if "shard" in data and shard is None:
            log.info("gateway: IDENTIFY with an invalid shard %r", data["shard"])
            self.shard_refusals.append((INVALID_SHARD, repr(data["shard"])))
            await connection.close(INVALID_SHARD, "Invalid shard.")
            self._state.changed()
            return False
        intents = int(data.get("intents") or 0)
        if intents & MESSAGE_CONTENT and not self.message_content_allowed:
            await connection.close(DISALLOWED_INTENTS, "Disallowed intent(s).")
            return False
        guilds = self.bot_guilds(shard or (0, 1))
        if len(guilds) > self.max_guilds_per_shard:
            log.info(
                "gateway: shard %s would hold %d guilds (at most %d): sharding required",
                shard or (0, 1),
                len(guilds),
                self.max_guilds_per_shard,
            )
            self.shard_refusals.append((SHARDING_REQUIRED, f"{len(guilds)} guilds"))
            await connection.close(SHARDING_REQUIRED, "Sharding required.")
            self._state.changed()
            return False
        now = self._clock.now()
        bucket = (shard[0] if shard else 0) % self.max_concurrency
        last = self._last_identify_at.get(bucket)
        if last is not None and now - last < self.identify_interval_s:
            # max_concurrency IDENTIFYs per 5 s, one for each bucket (shard_id %
            # max_concurrency). The client should identify again later.
            self.identify_refusals += 1
            log.info(
                "gateway: IDENTIFY %.1f s after the last one of bucket %d: invalid session",
                now - last,
                bucket,
            )
            connection.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            self._state.changed()
            return True
        if self.session_start_limit()["remaining"] <= 0:
            await self._session_starts_exhausted(connection)
            return False
        self._last_identify_at[bucket] = now
        self.session_starts.append(now)
        self.identifies += 1
        # A session of its own: others (an earlier process's) live on until they end.
        session = Session(secrets.token_hex(16), intents, shard=shard, connection=connection)
        self.sessions[session.id] = session
        self.identified.append(session)
        connection.session = session
        state = self._state
        ready = {
            "v": 10,
            "user": {
                **state.bot_user.payload(),
                "verified": True,
                "mfa_enabled": False,
                "email": None,
            },
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_url,
            "application": {"id": str(state.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "auth": {},
            "geo_ordered_rtc_regions": [],
            "guild_join_requests": [],
            "_trace": ["local-discord"],
        }
        if shard is not None:
            ready["shard"] = list(shard)
        self._send_dispatch(session, "READY", ready)
        if intents & GUILDS:
            for guild in guilds:
                self._send_dispatch(session, "GUILD_CREATE", guild_create_payload(state, guild))
        log.info(
            "gateway: bot identified (session %s, shard %s, intents %s)",
            session.id,
            shard,
            intents,
        )
        state.changed()
        return True

    async def _session_starts_exhausted(self, connection: Connection) -> None:
        """Discord: past the day's session starts, every session of the bot ends and its
        token is reset (the owner gets an email). Any IDENTIFY after that fails with 4004."""
        log.warning("gateway: the day's %d session starts are used up", self.session_start_total)
        self.token_reset = True
        self.sessions.clear()
        for other in list(self.connections):
            if other is not connection:
                await other.close(AUTHENTICATION_FAILED, "Authentication failed.")
        await connection.close(AUTHENTICATION_FAILED, "Authentication failed.")
        self._state.changed()

    async def _resume(self, connection: Connection, data: dict[str, Any]) -> bool:
        self._expire_sessions()
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or data.get("token") != self._token:
            # d=false: the session cannot be resumed, identify anew.
            connection.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return True
        if session.connection is not None and session.connection is not connection:
            await session.connection.close(4000, "Session resumed elsewhere.")
        session.connection = connection
        session.disconnected_at = None
        connection.session = session
        last_seen = int(data.get("seq") or 0)
        missed = [f for f in session.backlog if f["s"] > last_seen]
        for frame in missed:
            connection.send(frame)
        self.resumes += 1
        self._send_dispatch(session, "RESUMED", {"_trace": ["local-discord"]})
        log.info("gateway: session %s resumed, %d event(s) replayed", session.id, len(missed))
        self._state.changed()
        return True

    def _members_chunk(self, connection: Connection, data: dict[str, Any]) -> None:
        session = connection.session
        guild = self._state.guilds.get(int(data.get("guild_id") or 0))
        if session is None or guild is None or not session.receives(guild.id):
            return
        members = [member_payload(self._state, guild, m.user) for m in guild.members.values()]
        chunk = {
            "guild_id": str(guild.id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        self._send_dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)


def _parse_shard(value: Any) -> tuple[int, int] | None:
    """IDENTIFY's `shard: [shard_id, num_shards]`, or None if Discord would refuse it."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    shard_id, count = value
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (shard_id, count)):
        return None
    if count < 1 or not 0 <= shard_id < count:
        return None
    return shard_id, count


def _event_guild_id(event: str, data: dict[str, Any]) -> int | None:
    """The guild an event belongs to (it decides the shard), or None for DMs and the like."""
    raw = data.get("id") if event in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE") else None
    raw = raw if raw is not None else data.get("guild_id")
    if isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit()):
        return int(raw)
    return None


def _for_intents(
    event: str, data: dict[str, Any], intents: int, bot_id: int
) -> dict[str, Any] | None:
    """The event as a session with these intents receives it, or None if it does not."""
    if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE"):
        needed = GUILD_MESSAGES if "guild_id" in data else DIRECT_MESSAGES
        if not intents & needed:
            return None
        if event != "MESSAGE_DELETE" and not intents & MESSAGE_CONTENT:
            return without_content(data, bot_id)
        return data
    if event == "INTERACTION_CREATE" and not intents & MESSAGE_CONTENT:
        return interaction_without_content(data, bot_id)
    if event.startswith(("THREAD_", "GUILD_", "CHANNEL_")) and not intents & GUILDS:
        return None
    if event.startswith("MESSAGE_REACTION_") and not intents & GUILD_MESSAGE_REACTIONS:
        return None
    return data
