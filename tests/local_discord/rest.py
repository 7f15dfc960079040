"""The REST layer: every request under /api/v10 passes through `RestApi.serve`.

In order: the rate limiter (429 before anything else, as Discord's edge does), authorization,
the body (JSON, or multipart with `payload_json` + `files[n]`), validation against the OpenAPI
spec, then the route's handler. Errors come back Discord-shaped; those a correct bot never
causes are recorded as violations. JSON answers carry `Content-Type: application/json` and
nothing more: with `; charset=utf-8` discord.py would read the body as text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from . import schema
from .faults import server_error_response
from .models import Channel, Message, Perm
from .payloads import message_payload, without_content
from .rules import (
    INVALID_JSON,
    MISSING_ACCESS,
    MISSING_PERMISSIONS,
    UNKNOWN_CHANNEL,
    UNKNOWN_MESSAGE,
    DiscordError,
    Violation,
    form_error,
)
from .state import DiscordState

if TYPE_CHECKING:
    from .server import LocalDiscord

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
Handler = Callable[["Call"], Awaitable[web.StreamResponse]]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """JSON with the exact Content-Type discord.py's `json_or_text` compares against."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def no_content() -> web.Response:
    return web.Response(status=204)


@dataclass(frozen=True)
class UploadedFile:
    """One `files[n]` part of a multipart body."""

    index: int
    filename: str
    data: bytes
    content_type: str | None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class RequestRecord:
    """One request as the local Discord saw it, for tests to assert on."""

    route: str
    path: str
    body: Any = None
    files: list[UploadedFile] = field(default_factory=list)
    status: int = 0
    # X-RateLimit-Remaining of the answer: 0 means the client must wait for the bucket's reset.
    remaining: int | None = None


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # exactly as in the OpenAPI spec, e.g. /channels/{channel_id}/messages
    handler: Handler
    auth: bool = True

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


class RouteTable:
    """Routes declared next to their handlers with `@routes.add(method, spec_path)`."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, *, auth: bool = True) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, path, handler, auth))
            return handler

        return register


@dataclass
class Call:
    """What a handler gets: the parsed request and the local Discord behind it."""

    discord: LocalDiscord
    request: web.Request
    route: str
    params: dict[str, str]
    body: Any
    files: list[UploadedFile]

    @property
    def state(self) -> DiscordState:
        return self.discord.state

    def snowflake(self, name: str) -> int:
        try:
            return int(self.params[name])
        except ValueError:
            # Discord answers a malformed id in a path as an unknown route.
            raise DiscordError(404, 0, "404: Not Found") from None

    def flag(self, name: str) -> bool:
        return self.request.query.get(name, "").lower() in ("1", "true")

    def channel(self) -> Channel:
        """The route's channel, as the bot may see it."""
        self.discord.state.sweep_archives()
        channel = self.discord.state.channels.get(self.snowflake("channel_id"))
        if channel is None:
            raise DiscordError(404, UNKNOWN_CHANNEL, "Unknown Channel")
        if not self.discord.state.permissions(self.discord.bot_user, channel) & Perm.VIEW_CHANNEL:
            raise DiscordError(
                403,
                MISSING_ACCESS,
                "Missing Access",
                violation=True,
                detail=f"the bot cannot view channel {channel.id}",
            )
        return channel

    def message(self, channel: Channel) -> Message:
        message = self.discord.state.messages.get(self.snowflake("message_id"))
        if (
            message is None
            or message.deleted
            or message.channel_id != channel.id
            or message.ephemeral_to is not None
        ):
            raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return message

    def message_json(self, message: Message, *, with_nonce: bool = False) -> dict[str, Any]:
        """`message` as a REST answer gives it to the bot: emptied by the Message Content rule
        (the message and the one it replies to, each on its own) unless the bot may read it."""
        data = message_payload(self.state, message, with_nonce=with_nonce)
        if not self.discord.gateway.content_over_rest:
            data = without_content(data, self.discord.bot_user.id)
        return data

    def require(self, channel: Channel, permission: int, what: str) -> None:
        """The bot needs `permission` here; without it Discord answers 50013."""
        if not self.discord.state.permissions(self.discord.bot_user, channel) & permission:
            raise DiscordError(
                403,
                MISSING_PERMISSIONS,
                "Missing Permissions",
                violation=True,
                detail=f"{what} needs permission bit {permission:#x} in channel {channel.id}",
            )


class RestApi:
    """Registers the route tables on an aiohttp app and runs every request through `serve`."""

    def __init__(self, discord: LocalDiscord, tables: list[RouteTable]) -> None:
        self._discord = discord
        self._routes = [route for table in tables for route in table.routes]
        self.requests: list[RequestRecord] = []
        missing = [r.name for r in self._routes if not schema.operation_exists(r.path, r.method)]
        if missing:
            raise RuntimeError(f"routes not in Discord's OpenAPI spec: {missing}")

    def add_routes(self, app: web.Application) -> None:
        # Literal segments (@original, @me) first: aiohttp matches in registration order.
        ordered = sorted(self._routes, key=lambda r: "{" in r.path.rsplit("/", 1)[-1])
        for route in ordered:
            app.router.add_route(route.method, API_PREFIX + route.path, self._bind(route))
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._unknown)

    def _bind(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            return await self.serve(route, request)

        return serve

    async def serve(self, route: Route, request: web.Request) -> web.StreamResponse:
        discord = self._discord
        params = dict(request.match_info)
        record = RequestRecord(route.name, request.path_qs)
        self.requests.append(record)
        major = _major(params)
        decision = discord.rate_limits.check(route.name, major)
        record.remaining = decision.remaining
        if decision.limited:
            record.status = 429
            return json_response(decision.body(), 429, decision.headers)
        forced = discord.server_errors.take(route.name, major, applied=False)
        if forced is not None:
            record.status = forced
            return server_error_response(forced)
        try:
            if route.auth and request.headers.get("Authorization") != f"Bot {discord.token}":
                raise DiscordError(401, 0, "401: Unauthorized")
            body, files, content_type = await _read_body(request)
            record.body, record.files = body, files
            if body is not None:
                errors = schema.validate_body(route.path, route.method, content_type, body)
                if errors:
                    raise form_error(errors, kind="schema")
            call = Call(discord, request, route.name, params, body, files)
            response = await route.handler(call)
        except DiscordError as exc:
            if exc.violation:
                discord.violations.record(
                    Violation(exc.kind, exc.code, route.name, exc.message, exc.detail, exc.status)
                )
            response = json_response(exc.body(), exc.status)
        except Exception as exc:
            # A bug in the fake must fail the test, not pass as a bot error.
            log.exception("local discord failed on %s", route.name)
            discord.violations.record(
                Violation("harness", 0, route.name, "local discord crashed", repr(exc), 500)
            )
            response = json_response({"message": "local discord internal error", "code": 0}, 400)
        response.headers.update(decision.headers)
        self._self_check(route, response)
        if 200 <= response.status < 300:
            # Done, and now the answer is lost: the client sees only the error.
            lost = discord.server_errors.take(route.name, major, applied=True)
            if lost is not None:
                response = server_error_response(lost)
        record.status = response.status
        discord.state.changed()
        return response

    def _self_check(self, route: Route, response: web.StreamResponse) -> None:
        """The fake's own answers must match the spec too, or discord.py is tested on fiction."""
        if (
            not self._discord.config.check_own_answers
            or not isinstance(response, web.Response)
            or not 200 <= response.status < 300
            or not isinstance(response.body, bytes)
            or not response.body
        ):
            return
        errors = schema.validate_response(
            route.path, route.method, response.status, json.loads(response.body)
        )
        if errors:
            self._discord.violations.record(
                Violation(
                    "harness",
                    0,
                    route.name,
                    "local discord answered outside the spec",
                    "; ".join(f"{e.dotted}: {e.message}" for e in errors[:5]),
                    response.status,
                )
            )

    async def _unknown(self, request: web.Request) -> web.Response:
        route = f"{request.method} {request.path}"
        self.requests.append(RequestRecord(route, request.path_qs, status=404))
        self._discord.violations.record(
            Violation(
                "harness",
                0,
                route,
                "no such route in the local Discord",
                "discord.py called an endpoint the fake does not implement; add it under "
                "tests/local_discord/",
                404,
            )
        )
        return json_response({"message": "404: Not Found", "code": 0}, 404)


def _major(params: dict[str, str]) -> str:
    """The "major parameter" Discord keys rate limit buckets by."""
    for key in ("channel_id", "guild_id"):
        if key in params:
            return params[key]
    if "webhook_id" in params:
        return f"{params['webhook_id']}+{params.get('webhook_token', '')}"
    return params.get("interaction_id", "")


async def _read_body(request: web.Request) -> tuple[Any, list[UploadedFile], str]:
    """(JSON body or payload_json, uploaded files, the content type to validate as)."""
    content_type = request.content_type
    if content_type == "multipart/form-data":
        body: Any = None
        files: list[UploadedFile] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            name = part.name or ""
            if name == "payload_json":
                body = json.loads(await part.text())
            elif name.startswith("files[") and name.endswith("]"):
                data = bytes(await part.read(decode=False))
                files.append(
                    UploadedFile(
                        int(name[6:-1]),
                        part.filename or "unknown",
                        data,
                        part.headers.get("Content-Type"),
                    )
                )
        return body, files, "multipart/form-data"
    raw = await request.read()
    if not raw:
        return None, [], "application/json"
    try:
        return json.loads(raw), [], "application/json"
    except ValueError:
        raise DiscordError(
            400, INVALID_JSON, "The request body contains invalid JSON.", violation=True
        ) from None
