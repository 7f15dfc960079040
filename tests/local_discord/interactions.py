"""Building interaction data the way the Discord client does, and following what came of it.

`command_data` types a test's keyword arguments from the command the bot synced: an
attachment option becomes an upload in `resolved.attachments`, a choice may be given by name
or value, and anything the client would refuse (missing required option, out of range,
unknown option) raises before the bot sees it.
"""

# Waits take a `timeout` like discord.py's own `wait_for`: a test must fail, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .models import (
    Attachment,
    CallbackType,
    Channel,
    Interaction,
    Message,
    Role,
    User,
)
from .payloads import attachment_payload, channel_payload, member_payload

if TYPE_CHECKING:
    from .driver import DiscordDriver
    from .state import DiscordState

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0

STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = (
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
)
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2


def command_data(
    state: DiscordState,
    channel: Channel,
    name: str,
    options: dict[str, Any],
    *,
    upload: Callable[[Any], Attachment],
) -> dict[str, Any]:
    """`data` of a CHAT_INPUT interaction for `/name` with `options`."""
    root, *path = name.split()
    command = state.find_command(root, 1, channel.guild_id)
    if command is None:
        synced = sorted({c.name for scope in state.commands.values() for c in scope})
        raise LookupError(f"no slash command {root!r} was synced; synced: {synced}")
    resolved: dict[str, dict[str, Any]] = {}
    declared: list[dict[str, Any]] = command.data.get("options") or []
    chain: list[dict[str, Any]] = []
    for part in path:
        sub = next(
            (
                o
                for o in declared
                if o["name"] == part and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)
            ),
            None,
        )
        if sub is None:
            raise LookupError(f"/{root} has no subcommand {part!r}")
        chain.append(sub)
        declared = sub.get("options") or []
    if any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in declared):
        raise ValueError(f"/{name} needs a subcommand: {[o['name'] for o in declared]}")
    values = _typed_options(state, channel, declared, options, resolved, upload)
    for sub in reversed(chain):
        values = [{"name": sub["name"], "type": sub["type"], "options": values}]
    data: dict[str, Any] = {
        "id": str(command.id),
        "name": command.name,
        "type": 1,
        "options": values,
    }
    if resolved:
        data["resolved"] = resolved
    if command.guild_id is not None:
        data["guild_id"] = str(command.guild_id)
    return data


def _typed_options(
    state: DiscordState,
    channel: Channel,
    declared: list[dict[str, Any]],
    given: dict[str, Any],
    resolved: dict[str, dict[str, Any]],
    upload: Callable[[Any], Attachment],
) -> list[dict[str, Any]]:
    by_name = {o["name"]: o for o in declared}
    # Python keywords cannot hold "-": edit_mode= fills an option named "edit-mode".
    named = {(k if k in by_name else k.replace("_", "-")): v for k, v in given.items()}
    unknown = set(named) - set(by_name)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; declared: {list(by_name)}")
    missing = [o["name"] for o in declared if o.get("required") and o["name"] not in named]
    if missing:
        raise TypeError(f"required option(s) missing: {missing}")
    values = []
    for option in declared:
        if option["name"] not in named:
            continue
        value = _option_value(state, channel, option, named[option["name"]], resolved, upload)
        values.append({"name": option["name"], "type": option["type"], "value": value})
    return values


def _option_value(
    state: DiscordState,
    channel: Channel,
    option: dict[str, Any],
    value: Any,
    resolved: dict[str, dict[str, Any]],
    upload: Callable[[Any], Attachment],
) -> Any:
    kind, name = option["type"], option["name"]
    if kind in (STRING, INTEGER, NUMBER):
        choices = option.get("choices") or []
        if choices:
            by_label = {c["name"]: c["value"] for c in choices}
            value = by_label.get(value, value)
            if value not in by_label.values():
                raise ValueError(f"{name}={value!r} is not one of {list(by_label)}")
        _check_range(option, kind, value)
        return value
    if kind == BOOLEAN:
        if not isinstance(value, bool):
            raise TypeError(f"{name} takes a bool")
        return value
    if kind == ATTACHMENT:
        attachment = upload(value)
        resolved.setdefault("attachments", {})[str(attachment.id)] = attachment_payload(
            state, attachment
        )
        return str(attachment.id)
    if kind in (USER, MENTIONABLE) and isinstance(value, User):
        resolved.setdefault("users", {})[str(value.id)] = value.payload()
        guild = state.guilds.get(channel.guild_id or 0)
        if guild is not None and value.id in guild.members:
            resolved.setdefault("members", {})[str(value.id)] = member_payload(
                state, guild, value, with_user=False, permissions=state.permissions(value, channel)
            )
        return str(value.id)
    if kind == CHANNEL and isinstance(value, Channel):
        data = channel_payload(state, value)
        data["permissions"] = str(state.permissions(state.bot_user, value))
        resolved.setdefault("channels", {})[str(value.id)] = data
        return str(value.id)
    if kind in (ROLE, MENTIONABLE) and isinstance(value, Role):
        resolved.setdefault("roles", {})[str(value.id)] = value.payload()
        return str(value.id)
    raise TypeError(f"option {name} (type {kind}) cannot take {type(value).__name__}")


def _check_range(option: dict[str, Any], kind: int, value: Any) -> None:
    name = option["name"]
    if kind == STRING:
        if not isinstance(value, str):
            raise TypeError(f"{name} takes a str")
        low, high = option.get("min_length"), option.get("max_length")
        size = len(value)
    else:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (kind == INTEGER and not isinstance(value, int))
        ):
            raise TypeError(f"{name} takes {'an int' if kind == INTEGER else 'a number'}")
        low, high = option.get("min_value"), option.get("max_value")
        size = value
    if (low is not None and size < low) or (high is not None and size > high):
        raise ValueError(f"{name}={value!r} is outside [{low}, {high}]")


def modal_submit_data(modal: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """`data` of a MODAL_SUBMIT answering `modal`, shaped like the modal (rows or labels)."""
    remaining = dict(values)

    def fill(text_input: dict[str, Any], label: str | None) -> dict[str, Any]:
        custom_id = text_input["custom_id"]
        label = label or text_input.get("label") or ""
        keys = [custom_id, label, label.lower().replace(" ", "_")]
        key = next((k for k in keys if k in remaining), None)
        value = remaining.pop(key) if key is not None else text_input.get("value") or ""
        if text_input.get("required", True) and not value:
            raise ValueError(f"modal field {label or custom_id!r} is required")
        low, high = text_input.get("min_length") or 0, text_input.get("max_length") or 4000
        if value and not low <= len(value) <= high:
            raise ValueError(f"modal field {label or custom_id!r} takes {low}-{high} characters")
        return _without_none(
            {"type": 4, "id": text_input.get("id"), "custom_id": custom_id, "value": value}
        )

    components = []
    for component in modal.get("components") or []:
        if component.get("type") == 1:
            inputs = [
                fill(c, None) for c in component.get("components") or [] if c.get("type") == 4
            ]
            components.append(
                _without_none({"type": 1, "id": component.get("id"), "components": inputs})
            )
        elif component.get("type") == 18 and (component.get("component") or {}).get("type") == 4:
            components.append(
                _without_none(
                    {
                        "type": 18,
                        "id": component.get("id"),
                        "component": fill(component["component"], component.get("label")),
                    }
                )
            )
    if remaining:
        raise TypeError(f"the modal has no field(s) {sorted(remaining)}")
    return {"custom_id": modal["custom_id"], "components": components}


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


class InteractionHandle:
    """One interaction the driver started, and ways to wait for what the bot made of it."""

    def __init__(self, driver: DiscordDriver, interaction: Interaction) -> None:
        self._driver = driver
        self._state = driver.state
        self.interaction = interaction

    def __repr__(self) -> str:
        return f"<InteractionHandle {self.interaction.type.name} {self.interaction.id}>"

    @property
    def id(self) -> int:
        return self.interaction.id

    @property
    def callback_type(self) -> CallbackType | None:
        return self.interaction.callback_type

    @property
    def original(self) -> Message | None:
        message_id = self.interaction.original_message_id
        return self._state.messages.get(message_id) if message_id else None

    async def acknowledged(self, *, timeout: float = DEFAULT_TIMEOUT) -> CallbackType:
        """The callback type the bot answered with (waits for it)."""
        return await self._state.wait_until(
            lambda: self.interaction.callback_type,
            timeout=timeout,
            what=f"an acknowledgement of {self}",
        )

    async def response(
        self,
        predicate: Callable[[Message], bool] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Message:
        """The original response once it has content (a deferral's "thinking..." filled)."""

        def ready() -> Message | None:
            if self.interaction.callback_type is CallbackType.MODAL:
                raise AssertionError(f"{self} was answered with a modal, not a message")
            message = self.original
            if message is None or message.loading or message.deleted:
                return None
            return message if predicate is None or predicate(message) else None

        return await self._state.wait_until(ready, timeout=timeout, what=f"the response to {self}")

    async def followups(self, count: int = 1, *, timeout: float = DEFAULT_TIMEOUT) -> list[Message]:
        """The first `count` followups (after a deferral the first one is the original)."""

        def enough() -> list[Message] | None:
            found = [self._state.messages[i] for i in self.interaction.followup_ids]
            return found[:count] if len(found) >= count else None

        return await self._state.wait_until(
            enough, timeout=timeout, what=f"{count} followup(s) to {self}"
        )

    async def followup(self, *, timeout: float = DEFAULT_TIMEOUT) -> Message:
        return (await self.followups(1, timeout=timeout))[0]

    async def modal(self, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The modal the bot opened in answer (custom_id, title, components)."""
        return await self._state.wait_until(
            lambda: self.interaction.modal, timeout=timeout, what=f"a modal in answer to {self}"
        )
