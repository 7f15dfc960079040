"""The bot's one HTTP server: WaveSpeed's webhook deliveries and the monitoring endpoints.

Each feature that listens brings a `Listener` (where, and its routes); `serve` runs them all
in one aiohttp application and runner:

- listeners on the same port share one socket: webhooks and monitoring both on 8585 are one
  server with both routes. When their hosts differ, the first listener's host is used (the
  webhook's, which its reverse proxy must reach) and a warning says so. Two listeners on port 0
  (a free port) share one only when their hosts match too;
- listeners on different ports are two sites of the one runner, and each answers only its own
  routes: /metrics is not served on the public webhook port, and the webhook is not served on
  the loopback monitoring port.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Webhook deliveries carry one prediction's JSON; nothing sent here is larger.
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler


@dataclass(frozen=True, slots=True)
class Listener:
    """A feature's routes, served on host:port (0: a free port)."""

    name: str
    host: str
    port: int
    routes: Sequence[Route]


@dataclass(slots=True)
class _Site:
    host: str
    port: int
    names: list[str] = field(default_factory=list)


def _sites(listeners: Sequence[Listener]) -> list[_Site]:
    sites: list[_Site] = []
    for listener in listeners:
        shared = next(
            (
                site
                for site in sites
                if site.port == listener.port and (site.port != 0 or site.host == listener.host)
            ),
            None,
        )
        if shared is None:
            sites.append(_Site(listener.host, listener.port, [listener.name]))
            continue
        if shared.host != listener.host:
            log.warning(
                "%s shares port %d with %s, so it listens on %s too, not on %s",
                listener.name,
                listener.port,
                shared.names[0],
                shared.host,
                listener.host,
            )
        shared.names.append(listener.name)
    return sites


def _only_on(name: str, handler: Handler, ports: dict[str, set[int]]) -> Handler:
    """`handler`, answering only on the ports `name` listens on (404 elsewhere)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not sockname or int(sockname[1]) not in ports.get(name, ()):
            raise web.HTTPNotFound()
        return await handler(request)

    return guarded


@contextlib.asynccontextmanager
async def serve(listeners: Sequence[Listener]) -> AsyncIterator[dict[str, int]]:
    """Serve every listener while the block runs; yields each one's bound port by name."""
    ports: dict[str, set[int]] = {}
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    for listener in listeners:
        for route in listener.routes:
            app.router.add_route(
                route.method, route.path, _only_on(listener.name, route.handler, ports)
            )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        bound: dict[str, int] = {}
        for site in _sites(listeners):
            before = len(runner.addresses)
            await web.TCPSite(runner, site.host, site.port).start()
            # A host name may bind several sockets (IPv4 and IPv6): each of them is the site's.
            site_ports = {int(address[1]) for address in runner.addresses[before:]}
            for name in site.names:
                ports[name] = site_ports
                bound[name] = int(runner.addresses[before][1])
        yield bound
    finally:
        await runner.cleanup()
