"""`LocalDiscord`: the REST API, gateway and CDN on one loopback port, around one state.

    async with LocalDiscord() as discord:
        ...  # point discord.py at discord.api_base_url / discord.gateway_url

A fresh world per instance: an application and its bot user, one guild ("Local Guild") with
#general and #images, a member `alice` (the driver's default user) and a second member `bob`
(the "stranger"). Everything a bot does wrong lands in `violations`.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from aiohttp import web

from .clock import Clock
from .driver import DiscordDriver
from .faults import ServerErrors
from .gateway import Gateway
from .models import BOT_PERMISSIONS, EVERYONE_PERMISSIONS, Channel, Guild, Message, MiB, User
from .ratelimits import RateLimits
from .rest import RequestRecord, RestApi
from .routes_channels import routes as channel_routes
from .routes_core import routes as core_routes
from .routes_interactions import routes as interaction_routes
from .rules import ViolationLog
from .state import DiscordState

log = logging.getLogger(__name__)

CHANNEL_POST = "POST /channels/{channel_id}/messages"


@dataclass(frozen=True)
class LocalDiscordConfig:
    """How the local Discord behaves; the defaults are Discord's."""

    ack_deadline_s: float = 3.0
    token_lifetime_s: float = 15 * 60.0
    # Discord's is 41.25 s; a test may shorten it to watch heartbeats go by.
    heartbeat_interval_ms: int = 41_250
    # A connection silent for this long is closed (None: twice the interval plus a second).
    heartbeat_timeout_ms: int | None = None
    # One IDENTIFY per this many seconds of the local clock in each of `max_concurrency`
    # buckets (shard_id % max_concurrency; Discord: 5 s, and max_concurrency 1 for most bots).
    identify_interval_s: float = 5.0
    max_concurrency: int = 1
    # Guilds a shard may hold: an IDENTIFY that would hold more is closed with 4011 Sharding
    # required (Discord: 2,500). A test makes it small to need shards with a few guilds.
    max_guilds_per_shard: int = 2500
    # IDENTIFYs a day (GET /gateway/bot's session_start_limit.total).
    session_start_total: int = 1000
    # How long a session whose connection dropped stays resumable ("a few minutes").
    session_resume_window_s: float = 180.0
    # Whether the app may use the privileged Message Content intent (the portal switch). Even
    # when it may, the bot reads others' messages only if it asked for the intent at IDENTIFY.
    message_content_allowed: bool = True
    premium_tier: int = 0
    dm_upload_limit: int = 10 * MiB
    everyone_permissions: int = int(EVERYONE_PERMISSIONS)
    bot_permissions: int = int(BOT_PERMISSIONS)
    # Largest request body the server reads at all (Discord caps uploads at 25 MiB anyway).
    max_request_bytes: int = 64 * MiB
    # Whether every answer of the local Discord is checked against Discord's spec. Tests keep
    # it on; a benchmark turns it off, since the check costs this process more than the bot
    # costs Discord (the bot's own requests are checked either way).
    check_own_answers: bool = True
    # Discord's rate limits are on (see `ratelimits`). A test that cannot run under them says
    # why here, and runs without any; nothing else turns them off.
    rate_limits_off: str | None = None

    def __post_init__(self) -> None:
        if self.rate_limits_off is not None and not self.rate_limits_off.strip():
            raise ValueError("rate_limits_off needs a reason")


class LocalDiscord:
    """A Discord for one test: start it, point the bot at it, drive it, read its state."""

    def __init__(self, config: LocalDiscordConfig | None = None) -> None:
        self.config = config or LocalDiscordConfig()
        self.clock = Clock()
        self.state = DiscordState(self.clock)
        self.token = "local." + secrets.token_urlsafe(32)
        self.violations = ViolationLog()
        self.rate_limits = RateLimits(
            self.violations,
            discord_limits=self.config.rate_limits_off is None,
            clock=self.clock.now,
        )
        if self.config.rate_limits_off is not None:
            log.info("rate limits off: %s", self.config.rate_limits_off)
        self.server_errors = ServerErrors()
        self.gateway = Gateway(
            self.state,
            token=self.token,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            message_content_allowed=self.config.message_content_allowed,
            heartbeat_timeout_ms=self.config.heartbeat_timeout_ms,
            identify_interval_s=self.config.identify_interval_s,
            session_resume_window_s=self.config.session_resume_window_s,
            max_concurrency=self.config.max_concurrency,
            max_guilds_per_shard=self.config.max_guilds_per_shard,
            session_start_total=self.config.session_start_total,
        )
        self.rest = RestApi(self, [core_routes, channel_routes, interaction_routes])
        self.typing: list[int] = []
        self.guild, self.general, self.images = self._build_world()
        self.user = self.state.add_user("alice")
        self.stranger = self.state.add_user("bob")
        for member in (self.user, self.stranger):
            self.state.add_member(self.guild, member)
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def _build_world(self) -> tuple[Guild, Channel, Channel]:
        state = self.state
        guild = state.add_guild(
            "Local Guild",
            state.owner,
            everyone_permissions=self.config.everyone_permissions,
            premium_tier=self.config.premium_tier,
        )
        state.add_member(guild, state.bot_user, permissions=self.config.bot_permissions)
        general = state.add_text_channel(guild, "general")
        images = state.add_text_channel(guild, "images", topic="FLUX.1 Kontext edits")
        return guild, general, images

    def add_guild(
        self, name: str, *, on_shard: tuple[int, int] | None = None
    ) -> tuple[Guild, Channel]:
        """Another guild the bot is in, set up like the first: the bot (with the configured
        permissions), alice and bob as members, and a #general; returns it and its #general.
        `on_shard=(k, count)`: its id puts it on shard k of `count`. Made before the bot
        connects, it comes in READY and GUILD_CREATE like the first (no event announces it
        to a bot already connected)."""
        state = self.state
        guild = state.add_guild(
            name,
            state.owner,
            everyone_permissions=self.config.everyone_permissions,
            premium_tier=self.config.premium_tier,
            on_shard=on_shard,
        )
        state.add_member(guild, state.bot_user, permissions=self.config.bot_permissions)
        for member in (self.user, self.stranger):
            state.add_member(guild, member)
        return guild, state.add_text_channel(guild, "general")

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(client_max_size=self.config.max_request_bytes)
        self.gateway.add_routes(app)
        self.state.cdn.add_routes(app)
        self.rest.add_routes(app)
        app.on_shutdown.append(self._on_shutdown)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        self.state.cdn.base_url = self.base_url
        self.gateway.url = f"ws://{bound_host}:{bound_port}/gateway"
        log.info("local discord listening on %s", self.base_url)

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.gateway.close()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- what the bot is pointed at ----------------------------------------------------------

    @property
    def api_base_url(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    @property
    def bot_user(self) -> User:
        return self.state.bot_user

    @property
    def application_id(self) -> int:
        return self.state.application_id

    # -- for tests ---------------------------------------------------------------------------

    def driver(self, user: User | None = None, channel: Channel | None = None) -> DiscordDriver:
        """A driver acting as `user` (default alice) in `channel` (default #general)."""
        return DiscordDriver(self, user or self.user, channel or self.general)

    def moderator(self, channel: Channel | None = None) -> DiscordDriver:
        """A driver for the server's owner, who may do what moderators do (lock and archive
        threads, delete anyone's messages), in `channel` (default #general)."""
        return self.driver(self.state.owner, channel)

    def fail_message_posts(
        self,
        channel: Channel,
        *,
        times: int = 1,
        status: int = 429,
        retry_after: float = 0.25,
        applied: bool = False,
    ) -> None:
        """The next `times` message posts to `channel` (not its threads: each is a channel of
        its own) answer `status` instead of posting.

        429: with `retry_after` seconds, `Via` and the bucket headers, so discord.py waits and
        retries (see `RateLimits.fail_next`). 5xx: see `faults.ServerErrors`; `applied=True`
        posts the message and then answers the error, as when Discord's answer is lost.
        """
        if status == 429:
            if applied:
                raise ValueError("a 429 is answered before anything happens; applied is 5xx only")
            self.rate_limits.fail_next(
                CHANNEL_POST, times=times, retry_after=retry_after, major=channel.id
            )
        else:
            self.server_errors.fail_next(
                CHANNEL_POST, status=status, times=times, major=channel.id, applied=applied
            )

    def revoke_bot_permission(self, channel: Channel, permission: int) -> None:
        """Deny the bot `permission` in `channel` from now on, and in every thread under it (a
        member overwrite for the bot, as a server admin would set; CHANNEL_UPDATE tells the
        bot). Revocations add up until `restore_bot_permissions`. Posting without
        Send Messages (or, in a thread, Send Messages in Threads) then answers 403 50013
        Missing Permissions, recorded as a violation a test takes out with `expect`."""
        existing = channel.overwrites.get(self.bot_user.id)
        allow = existing.allow if existing else 0
        deny = existing.deny if existing else 0
        self.state.set_overwrite(
            channel, self.bot_user, allow=allow & ~permission, deny=deny | permission
        )

    def restore_bot_permissions(self, channel: Channel) -> None:
        """Drop the bot's overwrite on `channel`: back to what its roles grant."""
        self.state.remove_overwrite(channel, self.bot_user.id)

    def bot_messages(
        self,
        channel: Channel,
        *,
        include_threads: bool = True,
        include_deleted: bool = False,
        include_ephemeral: bool = False,
    ) -> list[Message]:
        """Every message the bot posted in `channel` (and, by default, in the threads under
        it), oldest first, whatever route posted it: channel messages, interaction responses
        and followups alike. Deleted ones count with `include_deleted`: for "never posted
        twice", a duplicate the bot deleted afterwards was still seen by the members."""
        channels = [channel]
        if include_threads:
            channels += [
                c for c in self.state.channels.values() if c.is_thread and c.parent_id == channel.id
            ]
        found = [
            message
            for c in channels
            for message_id in self.state.channel_messages.get(c.id, [])
            if (message := self.state.messages[message_id]).author.id == self.bot_user.id
            and (include_deleted or not message.deleted)
            and (include_ephemeral or message.ephemeral_to is None)
        ]
        return sorted(found, key=lambda m: m.id)

    def bot_pings(self) -> list[Message]:
        """Every message of the bot (anywhere, ephemeral and deleted ones included) that ever
        pinged anyone: a user, a role, @everyone or @here; oldest first."""
        return sorted(
            (
                m
                for m in self.state.messages.values()
                if m.author.id == self.bot_user.id and m.pinged_anyone
            ),
            key=lambda m: m.id,
        )

    def assert_pinged_only(self, *users: User) -> None:
        """Fail if the bot ever pinged a role, @everyone / @here, or a user not in `users`."""
        allowed = {user.id for user in users}
        wrong = [
            m
            for m in self.bot_pings()
            if m.pinged_roles or m.pinged_everyone or not m.pinged_users <= allowed
        ]
        if wrong:
            names = {u.id: u.username for u in self.state.users.values()}
            raise AssertionError(
                "the bot pinged people it should not have:\n"
                + "\n".join(
                    f"- message {m.id} {m.content[:80]!r}: users "
                    f"{sorted(names.get(u, str(u)) for u in m.pinged_users)}, roles "
                    f"{sorted(m.pinged_roles)}, @everyone/@here {m.pinged_everyone}"
                    for m in wrong
                )
            )

    def requests_to(self, route: str) -> list[RequestRecord]:
        """Requests the bot made to a route, e.g. "PUT /applications/{application_id}/commands"."""
        return [r for r in self.rest.requests if r.route == route]

    def assert_no_violations(self) -> None:
        """Fail with every recorded violation (schema errors, broken rules, gaps in the fake)."""
        if self.violations:
            raise AssertionError(
                "the bot did what real Discord refuses:\n" + self.violations.describe()
            )
