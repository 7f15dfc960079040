"""The simulator's HTTP answers: the `{code, message, data}` envelope for success and errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from services.wavespeed.protocol import Code, envelope


class ApiError(Exception):
    """An error answer: HTTP `status`, envelope `code` and a readable `message`.

    Handlers raise it; the simulator's middleware turns it into the JSON answer.
    """

    def __init__(
        self, status: int, code: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        """`{code, message, data: null}` with the HTTP status and headers."""
        body = envelope(None, code=self.code, message=self.message)
        return web.json_response(body, status=self.status, headers=self.headers)


def ok(data: Any) -> web.Response:
    """HTTP 200 `{code: 200, message: "success", data}`."""
    return web.json_response(envelope(data))


def origin(request: web.Request) -> str:
    """scheme://host as the client addressed us; URLs we hand out start with it."""
    return f"{request.scheme}://{request.host}"


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 (code 1401) answer."""
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, Code.INVALID_PARAMETER, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, Code.INVALID_PARAMETER, "The request body must be a JSON object.")
    return body
