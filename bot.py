"""Kontext Bot: FLUX.1 Kontext image editing for Discord servers.

    python bot.py [--config PATH] [--sync [GUILD_ID]]
                  [--role all|gateway|worker] [--shards 0-3 --shard-count 8]

One process does everything by default. A fleet shares one PostgreSQL store: gateways
(`--role gateway`, each over a range of shards) take interactions and messages and store the
jobs; workers (`--role worker`, no gateway connection, Discord over REST only) drive them and
post the results.

Settings are read once here and passed in; everything that needs the event loop (the HTTP
session, the WaveSpeed client or its simulator, the image pool, the extensions) is created in
`setup_hook` and closed in `close()`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pkgutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import discord
import yarl
from discord.ext import commands

import cogs
from cogs._errors import KontextTree
from services.account import Account
from services.budget import Budgets
from services.bundle import Role, Services
from services.community import Community
from services.edits import EditService
from services.health import GatewayState, HealthCheck, monitoring_routes
from services.intake import open_intake
from services.jobs import JobService, WebhookMode
from services.logs import configure_logging
from services.metrics import Metrics
from services.modlog import ModLog
from services.retention import Retention, keep_pruning
from services.rules import ServerRules
from services.runtime import wavespeed_client
from services.settings import ConfigError, Settings, load_settings
from services.storage import Repository, StoreError, is_postgres_url
from services.wavespeed import WaveSpeedClient, create_session
from services.wavespeed.webhooks import WebhookInbox
from services.webserver import Listener, Route, serve

log = logging.getLogger("kontext.bot")

# What the bot needs in a channel, and nothing more.
REQUIRED_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
)


def intents_for(settings: Settings) -> discord.Intents:
    """No privileged intent unless the operator turned Message Content on."""
    intents = discord.Intents.default()
    intents.message_content = settings.discord.message_content
    return intents


class KontextBot(commands.Bot):
    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        *,
        sync: bool = False,
        sync_guild: int | None = None,
        extra_extensions: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        role: Role = Role.ALL,
        **options: Any,
    ) -> None:
        # The bot never joins voice: discord.py's warnings about voice libraries are noise.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        # `options` go to discord.py as they are (the end-to-end tests lower
        # `guild_ready_timeout`); `extra_extensions` load after cogs/ (a test-only probe cog);
        # `clock` is what token expiry is measured on (tests move it 15 minutes ahead).
        # Metrics first: discord.py takes the trace that counts its 429s as it is built.
        metrics = Metrics()
        super().__init__(
            # No text commands: only app commands, and the cog's listener for replies. An
            # empty prefix list matches nothing (and asks for no Message Content warning).
            command_prefix=(),
            intents=intents_for(settings),
            help_command=None,
            tree_cls=KontextTree,
            # Nobody is pinged unless a message names who: the bot echoes members' text and
            # the image service's, so "@everyone" in either must stay words.
            allowed_mentions=discord.AllowedMentions.none(),
            http_trace=metrics.discord_trace(),
            **options,
        )
        self.metrics = metrics
        # Where /healthz and /metrics are served, once they are ([monitoring] port).
        self.monitoring_port: int | None = None
        self.settings = settings
        self.clock = clock
        self.role = role
        self._sync = sync
        self._sync_guild = sync_guild
        self._extra_extensions = tuple(extra_extensions)
        self._resources = AsyncExitStack()
        self.http_session: aiohttp.ClientSession | None = None
        self.wavespeed: WaveSpeedClient | None = None
        # Opened before the bot (a store that cannot be used stops start-up in one line) and
        # closed by whoever opened it.
        self.repository = repository
        self._services: Services | None = None
        self.retention: Retention | None = None

    @property
    def services(self) -> Services:
        """What the extensions use: built once in `setup_hook`, before they load."""
        if self._services is None:
            raise RuntimeError("the services are built in setup_hook")
        return self._services

    async def on_message(self, message: discord.Message, /) -> None:
        """Messages are never text commands here ("@Bot make it blue" is an instruction for
        the Kontext cog's listener, not a command "make" to look up and log as not found)."""

    async def setup_hook(self) -> None:
        # First in, last out: the image pool outlives everything that queues work on it.
        intake = await self._resources.enter_async_context(open_intake(self.settings.limits))
        self.http_session = await self._resources.enter_async_context(
            create_session(self.settings.wavespeed)
        )
        self.wavespeed = await self._resources.enter_async_context(
            wavespeed_client(self.settings, self.http_session, observe=self.metrics.observe_request)
        )
        # The account that pays; in a dry run the simulator's pretend one, which it bills.
        account = Account(self.wavespeed, self.settings.wavespeed.low_balance_usd)
        community = Community(
            self.repository,
            ServerRules.defaults(self.settings.defaults, self.settings.budget),
            Budgets(self.repository, self.clock),
            self.clock,
        )
        webhooks = await self._receive_webhooks(self.wavespeed)
        jobs = JobService(
            self.repository,
            self.wavespeed,
            self.settings.jobs,
            clock=self.clock,
            webhooks=webhooks,
            metrics=self.metrics,
            modlog=ModLog(
                self.repository,
                community,
                self.clock,
                account=account,
                balance_check_s=self.settings.wavespeed.balance_check_s,
            ),
        )
        self._services = Services(
            edits=EditService(
                self.repository,
                jobs,
                self.wavespeed,
                intake,
                community,
                retention_days=self.settings.storage.retention_days,
            ),
            jobs=jobs,
            community=community,
            account=account,
            intake=intake,
            simulated=self.wavespeed.simulated,
            clock=self.clock,
            role=self.role,
        )
        await self._serve_http(webhooks)
        # Old image bytes are dropped in the background, hourly (jobs and the ledger stay).
        self.retention = await self._resources.enter_async_context(
            keep_pruning(
                Retention(self.repository, self.settings.storage.retention_days, clock=self.clock)
            )
        )
        for name in [*extension_names(), *self._extra_extensions]:
            try:
                await self.load_extension(name)
            except commands.ExtensionError:
                # One broken feature must not take the others down with it.
                log.exception("extension %s failed to load; the others carry on", name)
        if self._sync:
            await self.sync_commands(self._sync_guild)

    async def on_ready(self) -> None:
        """The one line an operator waits for: who, where, billed or not, and how to invite."""
        mode = (
            "DRY RUN (built-in WaveSpeed simulator, nothing billed)"
            if self.services.simulated
            else "billed (WaveSpeed)"
        )
        servers = len(self.guilds)
        log.info(
            "ready: logged in as %s (id %s) in %d server%s, %s; invite it with %s",
            self.user,
            self.user.id if self.user else "?",
            servers,
            "" if servers == 1 else "s",
            mode,
            self.invite_url(),
        )

    async def _receive_webhooks(self, client: WaveSpeedClient) -> WebhookMode | None:
        """Webhook mode, when a webhook URL is set: the secret and an inbox for deliveries
        (`_serve_http` serves it)."""
        settings = self.settings.wavespeed
        if settings.webhook_url is None:
            return None
        secret = (
            settings.webhook_secret.get_secret_value()
            if settings.webhook_secret is not None
            else await client.webhook_secret()
        )
        inbox = WebhookInbox(secret)
        return WebhookMode(inbox, settings.webhook_url, settings.webhook_safety_poll_s)

    async def _serve_http(self, webhooks: WebhookMode | None) -> None:
        """One HTTP server for WaveSpeed's webhooks and /healthz and /metrics, when either is
        on (see services/webserver.py for how their ports are shared)."""
        listeners: list[Listener] = []
        hooks = self.settings.wavespeed
        path = ""
        if webhooks is not None:
            path = urlsplit(webhooks.url).path or "/"
            route = Route("POST", path, webhooks.inbox.handle)
            listeners.append(Listener("webhooks", hooks.webhook_host, hooks.webhook_port, [route]))
        monitoring = self.settings.monitoring
        if monitoring.port is not None:
            assert self.wavespeed is not None
            health = HealthCheck(
                self._gateway_state,
                self.repository,
                self.wavespeed,
                wavespeed_every_s=monitoring.wavespeed_check_s,
                timeout_s=monitoring.check_timeout_s,
            )
            routes = monitoring_routes(health, self.metrics, self.repository)
            listeners.append(Listener("monitoring", monitoring.host, monitoring.port, routes))
        if not listeners:
            return
        ports = await self._resources.enter_async_context(serve(listeners))
        if "webhooks" in ports:
            log.info(
                "receiving WaveSpeed webhooks on %s:%d%s",
                hooks.webhook_host,
                ports["webhooks"],
                path,
            )
        if "monitoring" in ports:
            self.monitoring_port = ports["monitoring"]
            log.info(
                "health and metrics on http://%s:%d/healthz and /metrics",
                monitoring.host,
                self.monitoring_port,
            )

    def _gateway_state(self) -> GatewayState:
        if not self.role.has_gateway:
            # A worker has no gateway: its link to Discord is its REST login.
            return GatewayState(self.user is not None and not self.is_closed(), None)
        # is_ready() stays true while discord.py reconnects: the socket says whether it is up.
        return GatewayState(
            self.is_ready() and not self.is_closed() and self._sockets_open(), self.latency
        )

    def _sockets_open(self) -> bool:
        return self.ws is not None and self.ws.open

    async def sync_commands(self, guild_id: int | None) -> None:
        """Publish the slash commands: to one guild (instant) or globally (up to an hour)."""
        if guild_id is not None:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild_id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d commands globally", len(synced))

    def invite_url(self) -> str:
        return discord.utils.oauth_url(
            self.application_id or 0,
            permissions=REQUIRED_PERMISSIONS,
            scopes=("bot", "applications.commands"),
        )

    async def close(self) -> None:
        # Extensions first (their jobs stop), then the resources they used.
        for name in list(self.extensions):
            try:
                await self.unload_extension(name)
            except commands.ExtensionError:
                log.exception("extension %s failed to unload", name)
        await super().close()
        await self._resources.aclose()


class ShardedKontextBot(KontextBot, commands.AutoShardedBot):
    """A gateway of a fleet: the same bot over a range of shards (`shard_ids`, `shard_count`),
    each shard its own gateway connection."""

    def _sockets_open(self) -> bool:
        shards = self.shards.values()
        return bool(shards) and all(not shard.is_closed() for shard in shards)


def build_bot(
    settings: Settings,
    repository: Repository,
    *,
    role: Role = Role.ALL,
    shards: Sequence[int] | None = None,
    shard_count: int | None = None,
    **options: Any,
) -> KontextBot:
    """The bot for `role`: a gateway is sharded (over `shards` of `shard_count`, or as many as
    Discord recommends); a worker and a lone process are not."""
    if role is Role.GATEWAY:
        if shards is not None:
            options.update(shard_ids=list(shards), shard_count=shard_count)
        return ShardedKontextBot(settings, repository, role=role, **options)
    return KontextBot(settings, repository, role=role, **options)


def extension_names() -> list[str]:
    """Every module in cogs/, in name order."""
    return sorted(
        f"{cogs.__name__}.{module.name}"
        for module in pkgutil.iter_modules(cogs.__path__)
        if not module.name.startswith("_")  # shared helpers, not features
    )


def point_at_discord(settings: Settings) -> None:
    """Aim discord.py at the configured REST API and gateway (a proxy, or a local Discord)."""
    discord.http.Route.BASE = settings.discord.api_base_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord.gateway_url)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run Kontext Bot.")
    parser.add_argument("--config", help="config file (default: $KONTEXT_CONFIG or config.toml)")
    parser.add_argument(
        "--sync",
        nargs="?",
        const="global",
        metavar="GUILD_ID",
        help="publish slash commands on start: globally, or to one guild for development",
    )
    parser.add_argument(
        "--role",
        choices=[r.value for r in Role],
        default=Role.ALL.value,
        help="all: everything in this process (default); gateway: take interactions and store "
        "jobs; worker: run the stored jobs, no gateway (a fleet shares a PostgreSQL store)",
    )
    parser.add_argument(
        "--shards",
        metavar="IDS",
        help="a gateway's shards: a range (0-3) or a list (0,2,5); needs --shard-count",
    )
    parser.add_argument(
        "--shard-count", type=int, metavar="N", help="how many shards the whole fleet has"
    )
    return parser.parse_args(argv)


def parse_shards(text: str, count: int) -> list[int]:
    """`0-3` or `0,2,5` as shard ids, each below `count`; ValueError says what is wrong."""
    ids: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"--shards takes a range (0-3) or a list (0,2,5), not {text!r}")
        ids += range(int(first), int(last if dash else first) + 1)
    if not ids or len(set(ids)) != len(ids):
        raise ValueError(f"--shards names no shard, or one twice: {text!r}")
    if max(ids) >= count:
        raise ValueError(f"--shards {text} goes past --shard-count {count} (ids start at 0)")
    return sorted(ids)


def fleet_problem(
    role: Role, database: str, shards: str | None, shard_count: int | None
) -> str | None:
    """Why these role and shard options cannot run, in one line; None when they can."""
    if role is not Role.ALL and not is_postgres_url(database):
        return (
            f"--role {role} needs [storage] database = postgresql://...: "
            "a SQLite store belongs to one process"
        )
    if (shards is not None or shard_count is not None) and role is not Role.GATEWAY:
        return "--shards and --shard-count are for --role gateway"
    if (shards is None) != (shard_count is None):
        return "--shards and --shard-count go together (or neither: Discord's recommended count)"
    if shard_count is not None and shard_count < 1:
        return f"--shard-count must be at least 1, not {shard_count}"
    return None


async def run(
    settings: Settings,
    *,
    sync: bool,
    sync_guild: int | None,
    role: Role = Role.ALL,
    shards: Sequence[int] | None = None,
    shard_count: int | None = None,
) -> None:
    """Run until Discord ends the session or SIGTERM/SIGINT asks for a graceful stop."""
    point_at_discord(settings)
    repository = await Repository.open(settings.storage.database)
    try:
        bot = build_bot(
            settings,
            repository,
            role=role,
            shards=shards,
            shard_count=shard_count,
            sync=sync,
            sync_guild=sync_guild,
        )
        async with bot:
            token = settings.discord.token.get_secret_value()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            if role is Role.WORKER:
                await work(bot, token, stop)
                return
            runner = asyncio.create_task(bot.start(token))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                # No new jobs, submits in flight finish, waits resume at the next start.
                await bot.close()
                log.info("stopped: open jobs resume at the next start")
            stopper.cancel()
            await runner
    finally:
        await repository.close()


async def work(bot: KontextBot, token: str, stop: asyncio.Event) -> None:
    """A worker: logged in over REST only (no gateway), it runs the jobs until told to stop."""
    # login() builds the services and loads the extensions (setup_hook); the job service
    # starts at once, with the application id the login learnt for interaction webhooks.
    await bot.login(token)
    log.info(
        "worker ready: logged in as %s (application %s), running the stored jobs",
        bot.user,
        bot.application_id,
    )
    await stop.wait()
    await bot.close()
    log.info("stopped: this worker's open jobs go to the others or resume at the next start")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.logging.level, settings.logging.format)
    role = Role(args.role)
    problem = fleet_problem(role, settings.storage.database, args.shards, args.shard_count)
    shards = None
    if problem is None and args.shards is not None:
        try:
            shards = parse_shards(args.shards, args.shard_count)
        except ValueError as exc:
            problem = str(exc)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    sync_guild = None
    if args.sync not in (None, "global"):
        if not args.sync.isdigit():
            print(f"--sync takes a guild id (a number), not {args.sync!r}", file=sys.stderr)
            return 2
        sync_guild = int(args.sync)
    elif args.sync == "global" and settings.discord.dev_guild_id is not None:
        sync_guild = settings.discord.dev_guild_id
    try:
        asyncio.run(
            run(
                settings,
                sync=args.sync is not None,
                sync_guild=sync_guild,
                role=role,
                shards=shards,
                shard_count=args.shard_count,
            )
        )
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        reason = startup_failure(exc, settings, sync_guild)
        if reason is None:
            raise
        print(reason, file=sys.stderr)
        return 1
    return 0


def startup_failure(exc: Exception, settings: Settings, sync_guild: int | None) -> str | None:
    """The one line for a start-up failure the operator can fix; None for a real crash."""
    match exc:
        case StoreError():
            return str(exc)
        case discord.LoginFailure():
            return "Discord refused the token: check DISCORD_TOKEN / [discord] token"
        case discord.PrivilegedIntentsRequired():
            return (
                "Discord refused the Message Content intent: turn it on in the developer portal "
                "(your application -> Bot -> Privileged Gateway Intents), or set "
                "message_content = false"
            )
        case discord.ConnectionClosed(code=4004):
            return "Discord refused the token at the gateway: check DISCORD_TOKEN / [discord] token"
        case discord.ConnectionClosed():
            reason = exc.reason or "no reason given"
            return (
                f"Discord closed the gateway connection (code {exc.code}: {reason}); "
                "check the settings in [discord], then start again"
            )
        case discord.Forbidden() if sync_guild is not None:
            return (
                f"cannot publish the commands to server {sync_guild}: the bot is not in that "
                "server or may not add commands there; invite it with the URL from a normal "
                "start, or run --sync without a server id"
            )
        case aiohttp.ClientConnectionError() | discord.GatewayNotFound():
            return (
                f"cannot reach Discord at {settings.discord.api_base_url} "
                f"({type(exc).__name__}: {exc}): check this machine's network"
            )
    return None


if __name__ == "__main__":
    sys.exit(main())
