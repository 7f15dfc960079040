"""Discord's limits and errors, and the log of every rule a bot broke.

A handler raises `DiscordError`; the REST layer answers it the way Discord does
(`{"code", "message", "errors"}`) and, when the error means the bot did something a well-made
bot never does (`violation=True`), records a `Violation` that fails the test at teardown unless
the test expected it and took it with `expect()` / `wait_for()`.
"""

# Waits take a `timeout` like discord.py's own `wait_for`: a test must fail, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .models import MessageFlag, iter_components

log = logging.getLogger(__name__)

# Discord's JSON error codes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
UNKNOWN_CHANNEL = 10003
UNKNOWN_GUILD = 10004
UNKNOWN_MEMBER = 10007
UNKNOWN_MESSAGE = 10008
UNKNOWN_USER = 10013
UNKNOWN_WEBHOOK = 10015
UNKNOWN_INTERACTION = 10062
UNKNOWN_COMMAND = 10063
UNKNOWN_COMMAND_PERMISSIONS = 10066
BOTS_CANNOT_USE_THIS = 20001
REQUEST_ENTITY_TOO_LARGE = 40005
ALREADY_ACKNOWLEDGED = 40060
MISSING_ACCESS = 50001
CANNOT_EDIT_OTHERS_MESSAGE = 50005
EMPTY_MESSAGE = 50006
MISSING_PERMISSIONS = 50013
INVALID_CHANNEL_TYPE = 50024
INVALID_WEBHOOK_TOKEN = 50027
INVALID_FORM_BODY = 50035
ARCHIVED_THREAD = 50083
INVALID_JSON = 50109
THREAD_ALREADY_CREATED = 160004

# Limits, from Discord's developer docs and its OpenAPI spec.
CONTENT_MAX = 2000
EMBEDS_MAX = 10
EMBED_TOTAL_MAX = 6000
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FIELDS_MAX = 25
EMBED_FIELD_NAME_MAX = 256
EMBED_FIELD_VALUE_MAX = 1024
EMBED_FOOTER_MAX = 2048
EMBED_AUTHOR_MAX = 256
ACTION_ROWS_MAX = 5
ROW_BUTTONS_MAX = 5
CUSTOM_ID_MAX = 100
BUTTON_LABEL_MAX = 80
MODAL_INPUTS_MAX = 5
TEXT_INPUT_VALUE_MAX = 4000
THREAD_NAME_MAX = 100
REQUEST_BYTES_MAX = 25 * 1024 * 1024
THREAD_ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)


class DiscordError(Exception):
    """An answer Discord would give instead of doing what was asked."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        errors: dict[str, Any] | None = None,
        violation: bool = False,
        detail: str = "",
        kind: str = "rule",
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        # True: a correct bot never causes this, so the test fails unless it expected it.
        self.violation = violation
        self.detail = detail or message
        self.kind = kind

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


@dataclass(frozen=True)
class FieldError:
    """One invalid field: `path` is dotted (`data.embeds[0].title`), `code` Discord's."""

    path: tuple[str | int, ...]
    code: str
    message: str

    @property
    def dotted(self) -> str:
        return dotted_path(self.path)


def dotted_path(path: tuple[str | int, ...] | list[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<body>"


def form_error(errors: list[FieldError], *, kind: str = "rule") -> DiscordError:
    """Discord's 400 Invalid Form Body, with its nested `errors` object."""
    nested: dict[str, Any] = {}
    for error in errors:
        node = nested
        for part in error.path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": error.code, "message": error.message})
    detail = "; ".join(f"{e.dotted}: {e.message}" for e in errors)
    return DiscordError(
        400,
        INVALID_FORM_BODY,
        "Invalid Form Body",
        errors=nested,
        violation=True,
        detail=detail,
        kind=kind,
    )


def _too_long(path: tuple[str | int, ...], limit: int) -> FieldError:
    return FieldError(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def _embed_text_length(embed: dict[str, Any]) -> int:
    """Characters that count toward the 6000 per message (title, description, fields...)."""
    total = len(embed.get("title") or "") + len(embed.get("description") or "")
    total += len((embed.get("footer") or {}).get("text") or "")
    total += len((embed.get("author") or {}).get("name") or "")
    for item in embed.get("fields") or []:
        total += len(item.get("name") or "") + len(item.get("value") or "")
    return total


def check_message(body: dict[str, Any], prefix: tuple[str | int, ...] = ()) -> list[FieldError]:
    """Limits on a message body that the OpenAPI spec is looser about (or silent on).

    The spec allows 4000 characters of content on channel messages (Nitro users may send
    that many) and says nothing of the 6000 characters across embeds, but bots get 2000.
    """
    errors: list[FieldError] = []
    content = body.get("content")
    if isinstance(content, str) and len(content) > CONTENT_MAX:
        errors.append(_too_long((*prefix, "content"), CONTENT_MAX))
    embeds = body.get("embeds") or []
    if len(embeds) > EMBEDS_MAX:
        errors.append(
            FieldError(
                (*prefix, "embeds"),
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {EMBEDS_MAX} or fewer in length.",
            )
        )
    errors.extend(_check_embeds(embeds, prefix))
    errors.extend(_check_components(body, prefix))
    errors.extend(_check_allowed_mentions(body.get("allowed_mentions"), prefix))
    return errors


def _check_allowed_mentions(
    allowed: dict[str, Any] | None, prefix: tuple[str | int, ...]
) -> list[FieldError]:
    """Discord's docs: `parse: ["users"]` with a `users` list (or "roles" with `roles`) is a
    validation error, not a union of the two. The spec's schema cannot say so."""
    if not isinstance(allowed, dict):
        return []
    parse = allowed.get("parse") or []
    errors = []
    for kind in ("users", "roles"):
        if kind in parse and allowed.get(kind):
            errors.append(
                FieldError(
                    (*prefix, "allowed_mentions", "parse"),
                    "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                    f'parse:["{kind}"] and {kind}: [ids] are mutually exclusive.',
                )
            )
    return errors


def _check_embeds(embeds: list[Any], prefix: tuple[str | int, ...]) -> list[FieldError]:
    errors: list[FieldError] = []
    limits = (("title", EMBED_TITLE_MAX), ("description", EMBED_DESCRIPTION_MAX))
    for index, embed in enumerate(embeds):
        if not isinstance(embed, dict):
            continue
        here = (*prefix, "embeds", index)
        for key, limit in limits:
            if len(embed.get(key) or "") > limit:
                errors.append(_too_long((*here, key), limit))
        if len((embed.get("footer") or {}).get("text") or "") > EMBED_FOOTER_MAX:
            errors.append(_too_long((*here, "footer", "text"), EMBED_FOOTER_MAX))
        if len((embed.get("author") or {}).get("name") or "") > EMBED_AUTHOR_MAX:
            errors.append(_too_long((*here, "author", "name"), EMBED_AUTHOR_MAX))
        fields = embed.get("fields") or []
        if len(fields) > EMBED_FIELDS_MAX:
            errors.append(
                FieldError(
                    (*here, "fields"),
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {EMBED_FIELDS_MAX} or fewer in length.",
                )
            )
        for number, item in enumerate(fields):
            if len(item.get("name") or "") > EMBED_FIELD_NAME_MAX:
                errors.append(_too_long((*here, "fields", number, "name"), EMBED_FIELD_NAME_MAX))
            if len(item.get("value") or "") > EMBED_FIELD_VALUE_MAX:
                errors.append(_too_long((*here, "fields", number, "value"), EMBED_FIELD_VALUE_MAX))
    total = sum(_embed_text_length(e) for e in embeds if isinstance(e, dict))
    if total > EMBED_TOTAL_MAX:
        errors.append(
            FieldError(
                (*prefix, "embeds"),
                "MAX_EMBED_SIZE_EXCEEDED",
                f"Embed size exceeds maximum size of {EMBED_TOTAL_MAX}",
            )
        )
    return errors


def _check_components(body: dict[str, Any], prefix: tuple[str | int, ...]) -> list[FieldError]:
    errors: list[FieldError] = []
    components = body.get("components") or []
    flags = body.get("flags") or 0
    # Components v2 messages have their own (larger) budget, which the spec already caps.
    if not flags & MessageFlag.IS_COMPONENTS_V2 and len(components) > ACTION_ROWS_MAX:
        errors.append(
            FieldError(
                (*prefix, "components"),
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {ACTION_ROWS_MAX} or fewer in length.",
            )
        )
    for row_index, row in enumerate(components):
        if not isinstance(row, dict) or row.get("type") != 1:
            continue
        buttons = [c for c in row.get("components") or [] if c.get("type") == 2]
        if len(buttons) > ROW_BUTTONS_MAX:
            errors.append(
                FieldError(
                    (*prefix, "components", row_index, "components"),
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {ROW_BUTTONS_MAX} or fewer in length.",
                )
            )
    custom_ids: set[str] = set()
    for component in iter_components(components):
        custom_id = component.get("custom_id")
        if isinstance(custom_id, str):
            if custom_id in custom_ids:
                errors.append(
                    FieldError(
                        (*prefix, "components"),
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        f"Component custom id {custom_id!r} is duplicated",
                    )
                )
            custom_ids.add(custom_id)
    return errors


def check_thread_name(name: Any, path: tuple[str | int, ...] = ("name",)) -> list[FieldError]:
    if not isinstance(name, str) or not name.strip():
        return [FieldError(path, "BASE_TYPE_REQUIRED", "This field is required")]
    if len(name) > THREAD_NAME_MAX:
        return [_too_long(path, THREAD_NAME_MAX)]
    return []


def check_modal(data: dict[str, Any]) -> list[FieldError]:
    inputs = [c for c in iter_components(data.get("components") or []) if c.get("type") == 4]
    errors: list[FieldError] = []
    if len(inputs) > MODAL_INPUTS_MAX:
        errors.append(
            FieldError(
                ("data", "components"),
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {MODAL_INPUTS_MAX} or fewer in length.",
            )
        )
    for component in inputs:
        if len(component.get("value") or "") > TEXT_INPUT_VALUE_MAX:
            errors.append(_too_long(("data", "components", "value"), TEXT_INPUT_VALUE_MAX))
    return errors


def too_large(detail: str) -> DiscordError:
    return DiscordError(
        413, REQUEST_ENTITY_TOO_LARGE, "Request entity too large", violation=True, detail=detail
    )


@dataclass(frozen=True)
class Violation:
    """Something the bot did that real Discord would refuse (or a gap in the fake itself)."""

    kind: str  # "schema", "rule", "rate_limit" or "harness"
    code: int
    route: str
    message: str
    detail: str = ""
    status: int = 400

    def __str__(self) -> str:
        return (
            f"[{self.kind}] {self.route} -> {self.status} {self.code} {self.message}: {self.detail}"
        )


@dataclass
class ViolationLog:
    """Every violation so far; a test that provokes one on purpose takes it out with `expect`."""

    items: list[Violation] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, violation: Violation) -> None:
        log.warning("local discord violation: %s", violation)
        self.items.append(violation)
        self._changed.set()
        self._changed = asyncio.Event()

    def __iter__(self) -> Iterator[Violation]:
        return iter(list(self.items))

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def clear(self) -> list[Violation]:
        taken, self.items = self.items, []
        return taken

    def find(
        self, *, code: int | None = None, kind: str | None = None, match: str | None = None
    ) -> Violation | None:
        for item in self.items:
            if code is not None and item.code != code:
                continue
            if kind is not None and item.kind != kind:
                continue
            if match is not None and not re.search(match, f"{item.message} {item.detail}"):
                continue
            return item
        return None

    def expect(
        self, *, code: int | None = None, kind: str | None = None, match: str | None = None
    ) -> Violation:
        """Take out the first violation that matches; fail with the whole log if none does."""
        found = self.find(code=code, kind=kind, match=match)
        if found is None:
            raise AssertionError(
                f"expected a violation (code={code}, kind={kind}, match={match!r}); "
                f"recorded: {self.describe() or 'none'}"
            )
        self.items.remove(found)
        return found

    async def wait_for(
        self,
        *,
        code: int | None = None,
        kind: str | None = None,
        match: str | None = None,
        timeout: float = 5.0,
    ) -> Violation:
        """Wait until a matching violation is recorded (the bot's request is asynchronous)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.find(code=code, kind=kind, match=match) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                break
        return self.expect(code=code, kind=kind, match=match)

    def describe(self) -> str:
        return "\n".join(f"  - {item}" for item in self.items)


# Slash command and option names: 1-32 characters, lowercase, letters/digits/-/_.
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")
OPTIONS_MAX = 25
CHOICES_MAX = 25
DESCRIPTION_MAX = 100


def check_commands(bodies: list[dict[str, Any]]) -> list[FieldError]:
    """What Discord refuses in a command sync beyond the spec: names, descriptions, ordering."""
    errors: list[FieldError] = []
    seen: set[tuple[str, int]] = set()
    for index, command in enumerate(bodies):
        kind = int(command.get("type") or 1)
        name = str(command.get("name") or "")
        if (name, kind) in seen:
            errors.append(
                FieldError(
                    (index, "name"),
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    f"Application command names must be unique: {name!r}",
                )
            )
        seen.add((name, kind))
        if kind == 1:
            errors.extend(_check_named((index,), command))
            errors.extend(_check_options(command.get("options") or [], (index, "options")))
        elif command.get("description"):
            errors.append(
                FieldError(
                    (index, "description"),
                    "BASE_TYPE_INVALID",
                    "Context menu commands cannot have a description",
                )
            )
    return errors


def _check_named(path: tuple[str | int, ...], item: dict[str, Any]) -> list[FieldError]:
    errors = []
    name = str(item.get("name") or "")
    if not _COMMAND_NAME.match(name) or name != name.lower():
        errors.append(
            FieldError(
                (*path, "name"),
                "APPLICATION_COMMAND_INVALID_NAME",
                f"Command name {name!r} is invalid",
            )
        )
    description = item.get("description") or ""
    if not 1 <= len(description) <= DESCRIPTION_MAX:
        errors.append(
            FieldError(
                (*path, "description"),
                "BASE_TYPE_BAD_LENGTH",
                f"Must be between 1 and {DESCRIPTION_MAX} in length.",
            )
        )
    return errors


def _check_options(options: list[dict[str, Any]], path: tuple[str | int, ...]) -> list[FieldError]:
    errors: list[FieldError] = []
    if len(options) > OPTIONS_MAX:
        errors.append(
            FieldError(path, "BASE_TYPE_MAX_LENGTH", f"Must be {OPTIONS_MAX} or fewer in length.")
        )
    optional_seen = False
    for index, option in enumerate(options):
        here = (*path, index)
        errors.extend(_check_named(here, option))
        if len(option.get("choices") or []) > CHOICES_MAX:
            errors.append(
                FieldError(
                    (*here, "choices"),
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {CHOICES_MAX} or fewer in length.",
                )
            )
        if option.get("type") in (1, 2):
            errors.extend(_check_options(option.get("options") or [], (*here, "options")))
            continue
        if option.get("required") and optional_seen:
            errors.append(
                FieldError(
                    (*here, "required"),
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
            )
        optional_seen = optional_seen or not option.get("required")
    return errors
