"""Community controls: a server's rules, kept in the store, and the one check every job passes.

`Community.admit` is where a request meets the rules of its server, whatever the way in (a
slash command, the context menu, a reply, a thread message, Reroll, Edit, Retry): bans, the
channel and role allow lists, the models offered, blocked words, the highest safety tolerance,
and, in the transaction that stores the job, the cooldown and the budgets. A refusal is a
`RefusedHereError` whose message a member reads as it is.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ValidationError

from .budget import BudgetLimits, Budgets, Usage
from .origin import Origin
from .rules import WAVESPEED_SAFETY_DEFAULT, ServerRules
from .storage import BudgetHold, Repository, Spending
from .wavespeed import InvalidInputError, KontextError, KontextRequest, ModelSpec

log = logging.getLogger(__name__)


class RefusedHereError(KontextError):
    """A server's rules refuse this request; nothing is stored or billed."""

    own_words: ClassVar[bool] = True


class BannedError(RefusedHereError):
    default_message = "A moderator of this server has stopped you from using me here."


class CooldownError(RefusedHereError):
    pass


@dataclass(frozen=True, slots=True)
class Admission:
    """What the rules make of an admitted request."""

    # The request as it is to be sent (a safety tolerance may be filled in).
    request: KontextRequest
    # The job's hold, checked against the budgets and the cooldown as the job is stored.
    hold: BudgetHold
    # Whether images flagged as NSFW may show (behind a spoiler) where the job is posted.
    nsfw_allowed: bool


class Community:
    """A server's rules and bans, changed by its admins, and the check every job passes."""

    def __init__(
        self,
        repository: Repository,
        defaults: ServerRules,
        budgets: Budgets,
        clock: Callable[[], float],
    ) -> None:
        self._repository = repository
        self._defaults = defaults
        self._budgets = budgets
        self._clock = clock

    @property
    def defaults(self) -> ServerRules:
        return self._defaults

    # --- Reading and changing a server's rules --------------------------------------------------

    async def rules(self, guild_id: int | None) -> ServerRules:
        """What is in force in a server (in a direct message: the defaults)."""
        if guild_id is None:
            return self._defaults
        changes = await self._repository.server_rule_changes(guild_id)
        if not changes:
            return self._defaults
        try:
            return self._defaults.with_changes(changes)
        except ValidationError:
            # A stored change the defaults no longer admit (the config changed since): keep
            # every change that still fits on its own.
            log.warning("server %s: some stored rules no longer fit the defaults", guild_id)
            rules = self._defaults
            for name, value in changes.items():
                try:
                    rules = rules.with_changes({name: value})
                except ValidationError:
                    log.warning("server %s: stored rule %s ignored", guild_id, name)
            return rules

    async def change(self, guild_id: int, by: int, **changes: Any) -> ServerRules:
        """Change some of a server's rules; InvalidInputError (in a member's words) if the
        result does not hold together, and nothing is stored."""
        stored = await self._repository.server_rule_changes(guild_id)
        try:
            merged = self._defaults.with_changes({**stored, **changes})
        except ValidationError as exc:
            raise InvalidInputError(_explain(exc)) from None
        # Stored as JSON, only the fields changed from the defaults at some point.
        as_json = merged.model_dump(mode="json")
        kept = {name: as_json[name] for name in {*stored, *changes}}
        await self._repository.set_server_rule_changes(guild_id, kept, by=by, at=self._clock())
        return merged

    async def reset(self, guild_id: int, by: int, names: Iterable[str]) -> ServerRules:
        """Put some of a server's rules back to the defaults."""
        stored = await self._repository.server_rule_changes(guild_id)
        kept = {name: value for name, value in stored.items() if name not in set(names)}
        await self._repository.set_server_rule_changes(guild_id, kept, by=by, at=self._clock())
        return await self.rules(guild_id)

    async def ban(self, guild_id: int, member_id: int, by: int) -> bool:
        return await self._repository.ban(guild_id, member_id, by=by, at=self._clock())

    async def unban(self, guild_id: int, member_id: int) -> bool:
        return await self._repository.unban(guild_id, member_id)

    async def banned(self, guild_id: int) -> list[int]:
        return await self._repository.banned(guild_id)

    # --- Members --------------------------------------------------------------------------------

    async def usage(self, guild_id: int | None, member_id: int) -> Usage:
        """What a member has spent here, and what the server's budgets leave them."""
        rules = await self.rules(guild_id)
        return await self._budgets.usage(guild_id, member_id, _limits(rules, guild_id))

    async def member_summary(self, guild_id: int | None, member_id: int) -> str:
        """What the rules here mean for one member, and what they have left, in a few lines."""
        rules = await self.rules(guild_id)
        if guild_id is not None and await self._repository.is_banned(guild_id, member_id):
            return BannedError.default_message
        offered = ", ".join(family.display_name for family in rules.models)
        lines = [f"Models: {offered} (default: {rules.default_model.display_name})."]
        if guild_id is not None and rules.channels:
            places = ", ".join(f"<#{channel}>" for channel in rules.channels)
            lines.append(f"I work in {places}.")
        if rules.cooldown_s:
            lines.append(f"Wait {_seconds(rules.cooldown_s)} between images.")
        if rules.max_safety_tolerance is not None:
            lines.append(f"Safety tolerance: at most {rules.max_safety_tolerance}.")
        lines.append((await self.usage(guild_id, member_id)).text())
        return "\n".join(lines)

    # --- The check every job passes -------------------------------------------------------------

    async def admit(self, origin: Origin, spec: ModelSpec, request: KontextRequest) -> Admission:
        """The request under its server's rules, or RefusedHereError saying which rule."""
        guild_id = origin.guild_id
        rules = await self.rules(guild_id)
        if guild_id is not None:
            if await self._repository.is_banned(guild_id, origin.member_id):
                raise BannedError()
            _check_place(rules, origin)
            _check_roles(rules, origin, guild_id)
        _check_model(rules, spec)
        _check_words(rules, request)
        request = _with_safety(rules, request)
        params = request.model_dump(mode="json", exclude_none=True)
        hold = self._budgets.hold_for(
            spec,
            params,
            guild_id,
            origin.member_id,
            _limits(rules, guild_id),
            also=_cooldown(rules.cooldown_s),
        )
        return Admission(request, hold, rules.nsfw.shows_in(origin.age_restricted))


def _limits(rules: ServerRules, guild_id: int | None) -> BudgetLimits:
    return BudgetLimits.of(rules, server=guild_id is not None)


def _check_place(rules: ServerRules, origin: Origin) -> None:
    if not rules.channels:
        return
    if {origin.channel_id, origin.parent_channel_id} & set(rules.channels):
        return
    places = ", ".join(f"<#{channel}>" for channel in rules.channels)
    raise RefusedHereError(f"I don't work in this channel. In this server, use me in {places}.")


def _check_roles(rules: ServerRules, origin: Origin, guild_id: int) -> None:
    # @everyone's role id is the server's own id.
    if not rules.roles or guild_id in rules.roles or origin.role_ids & set(rules.roles):
        return
    roles = ", ".join(f"<@&{role}>" for role in rules.roles)
    raise RefusedHereError(
        f"In this server, only members with one of these roles can use me: {roles}."
    )


def _check_model(rules: ServerRules, spec: ModelSpec) -> None:
    if spec.family in rules.models:
        return
    offered = ", ".join(family.display_name for family in rules.models)
    raise RefusedHereError(
        f"{spec.family.display_name} isn't available in this server. It offers: {offered}."
    )


def _check_words(rules: ServerRules, request: KontextRequest) -> None:
    prompt = str(getattr(request, "prompt", "") or "")
    if rules.blocked_words and blocked_word_in(prompt, rules.blocked_words):
        # The word is not repeated back: it may be one nobody wants to read again.
        raise RefusedHereError(
            "Your instruction contains a word or phrase this server has blocked. "
            "Please rephrase it."
        )


def blocked_word_in(text: str, words: Iterable[str]) -> bool:
    """True if `text` holds one of `words` as a whole word or phrase, in any case and spacing."""
    folded = " ".join(text.casefold().split())
    return any(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", folded) for word in words)


def _with_safety(rules: ServerRules, request: KontextRequest) -> KontextRequest:
    highest = rules.max_safety_tolerance
    if highest is None or "safety_tolerance" not in type(request).model_fields:
        return request
    chosen = getattr(request, "safety_tolerance", None)
    if chosen is None:
        # WaveSpeed's own default may be more permissive than this server allows.
        if highest >= WAVESPEED_SAFETY_DEFAULT:
            return request
        return request.model_copy(update={"safety_tolerance": str(highest)})
    if int(chosen) > highest:
        raise RefusedHereError(
            f"This server allows a safety tolerance of at most {highest} "
            f"(1 is the strictest); you chose {chosen}."
        )
    return request


def _cooldown(seconds: int) -> Callable[[Spending, dt.datetime], None] | None:
    if seconds <= 0:
        return None

    def check(spent: Spending, now: dt.datetime) -> None:
        if spent.member_last_at is None:
            return
        wait = spent.member_last_at + seconds - now.timestamp()
        if wait > 0:
            raise CooldownError(
                f"Please wait {_seconds(wait)}: this server asks members to wait "
                f"{_seconds(seconds)} between images."
            )

    return check


def _seconds(value: float) -> str:
    """A wait as members read it: seconds up to two minutes, then whole minutes (rounded up,
    so a member who waits that long is never refused again)."""
    whole = max(1, math.ceil(value))
    return f"{whole} s" if whole < 120 else f"{math.ceil(whole / 60)} min"


def _explain(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "that setting"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"That doesn't work for {field.replace('_', ' ')}: {message}."


__all__ = [
    "Admission",
    "BannedError",
    "Community",
    "CooldownError",
    "RefusedHereError",
    "blocked_word_in",
]
