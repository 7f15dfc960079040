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
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import ValidationError

from .budget import BudgetLimits, Budgets, Usage, day_start, month_start
from .money import to_micros
from .origin import Origin
from .rules import WAVESPEED_SAFETY_DEFAULT, BudgetSettings, ServerRules
from .storage import BudgetHold, Repository, Spending, SpendingRow
from .wavespeed import InvalidInputError, KontextError, KontextRequest, ModelSpec, model_for_path
from .wavespeed.catalog import COMMAND_FAMILIES, Family

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

    async def log_channels(self) -> dict[int, int]:
        """Each server's log channel, by server, for the servers that have one."""
        channels = {}
        for guild_id in await self._repository.servers_with_rules():
            channel_id = (await self.rules(guild_id)).log_channel_id
            if channel_id is not None:
                channels[guild_id] = channel_id
        return channels

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
        log.info("server %s: %s changed by %s", guild_id, ", ".join(sorted(changes)), by)
        return merged

    async def reset(self, guild_id: int, by: int, names: Iterable[str]) -> ServerRules:
        """Put some of a server's rules back to the defaults."""
        stored = await self._repository.server_rule_changes(guild_id)
        kept = {name: value for name, value in stored.items() if name not in set(names)}
        await self._repository.set_server_rule_changes(guild_id, kept, by=by, at=self._clock())
        log.info("server %s: %s reset by %s", guild_id, ", ".join(sorted(set(names))), by)
        return await self.rules(guild_id)

    async def ban(self, guild_id: int, member_id: int, by: int) -> bool:
        banned = await self._repository.ban(guild_id, member_id, by=by, at=self._clock())
        if banned:
            log.info("server %s: member %s banned by %s", guild_id, member_id, by)
        return banned

    async def unban(self, guild_id: int, member_id: int) -> bool:
        lifted = await self._repository.unban(guild_id, member_id)
        if lifted:
            log.info("server %s: member %s unbanned", guild_id, member_id)
        return lifted

    async def banned(self, guild_id: int) -> list[int]:
        return await self._repository.banned(guild_id)

    async def change_models(
        self, guild_id: int, by: int, offered: str | None, default: Family | None
    ) -> ServerRules:
        """Set the models offered ("pro dev") and the default one. When the default is left out
        and the current one is no longer offered, the first offered model becomes the default."""
        changes: dict[str, Any] = {}
        if offered is not None:
            changes["models"] = parse_models(offered)
        models = changes.get("models") or (await self.rules(guild_id)).models
        if default is not None:
            if default not in models:
                offered_names = ", ".join(family.display_name for family in models)
                raise InvalidInputError(
                    f"{default.display_name} is not one of the models offered "
                    f"({offered_names}): offer it too, or choose another default."
                )
            changes["default_model"] = default
        elif (await self.rules(guild_id)).default_model not in models:
            changes["default_model"] = models[0]
        return await self.change(guild_id, by, **changes)

    async def change_budget(self, guild_id: int, by: int, **texts: str | None) -> ServerRules:
        """Change budgets as an admin writes them: an amount ("2.50", "$5"), a count for
        member_daily_images, "none" for no cap, "default" for the config's value; None leaves a
        budget as it is. Nothing changes unless every one of them reads."""
        changes: dict[str, Any] = {}
        defaults: list[str] = []
        for name, text in texts.items():
            if name not in BudgetSettings.model_fields:
                raise ValueError(f"{name} is not a budget")
            if text is None:
                continue
            word = " ".join(text.split()).casefold()
            if word in DEFAULT_WORDS:
                defaults.append(name)
            elif name == "member_daily_images":
                changes[name] = parse_count(text)
            else:
                changes[name] = parse_usd(text)
        if changes:
            await self.change(guild_id, by, **changes)
        if defaults:
            return await self.reset(guild_id, by, defaults)
        return await self.rules(guild_id)

    async def add_to(self, guild_id: int, by: int, name: ListName, value: int | str) -> bool:
        """Add a channel, role or blocked word to a server's list; False if it was there."""
        rules = await self.rules(guild_id)
        current: tuple[Any, ...] = getattr(rules, name)
        value = _tidy(name, value)
        if value in current:
            return False
        await self.change(guild_id, by, **{name: (*current, value)})
        return True

    async def remove_from(self, guild_id: int, by: int, name: ListName, value: int | str) -> bool:
        """Take a channel, role or blocked word off a server's list; False if it was not on it."""
        rules = await self.rules(guild_id)
        current: tuple[Any, ...] = getattr(rules, name)
        value = _tidy(name, value)
        if value not in current:
            return False
        await self.change(guild_id, by, **{name: tuple(v for v in current if v != value)})
        return True

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
        usage = await self._budgets.usage(guild_id, member_id, _limits(rules, guild_id))
        lines.append(usage.text())
        return "\n".join(lines)

    async def server_usage(self, guild_id: int) -> ServerUsage:
        """What a server has spent today and this month, by member and by model."""
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        today, month = day_start(now), month_start(now)
        return ServerUsage(
            today=_period(
                today, await self._repository.server_spending(guild_id, since=today.timestamp())
            ),
            month=_period(
                month, await self._repository.server_spending(guild_id, since=month.timestamp())
            ),
        )

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


# --- Admins' words -------------------------------------------------------------------------------

# The lists a server's admins add to and take from.
ListName = Literal["channels", "roles", "blocked_words"]
# What an admin writes for "no cap", and for "back to the config's value".
NO_CAP_WORDS = frozenset({"none", "no cap", "off", "unlimited"})
DEFAULT_WORDS = frozenset({"default", "reset"})


def parse_usd(text: str) -> Decimal | None:
    """An amount in US dollars as an admin writes it ("2.50", "$5"); None for "none"."""
    written = " ".join(text.split())
    if written.casefold() in NO_CAP_WORDS:
        return None
    try:
        amount = Decimal(written.removeprefix("$").replace(",", "").strip())
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite():
        raise InvalidInputError(
            f"'{written}' is not an amount in US dollars: write it like 5 or 2.50, "
            "or none for no cap."
        )
    if amount < 0:
        raise InvalidInputError(f"A budget cannot be negative ({written}).")
    try:
        to_micros(amount)
    except ValueError:
        raise InvalidInputError(f"{written} is finer than a millionth of a dollar.") from None
    return amount


def parse_count(text: str) -> int | None:
    """A whole number of images as an admin writes it; None for "none"."""
    written = " ".join(text.split())
    if written.casefold() in NO_CAP_WORDS:
        return None
    if not re.fullmatch(r"\d{1,9}", written):
        raise InvalidInputError(
            f"'{written}' is not a number of images: write a whole number like 25, "
            "or none for no cap."
        )
    return int(written)


def parse_models(text: str) -> tuple[Family, ...]:
    """The families named in `text` ("pro dev", "pro, max"), in the order written."""
    names = [name for name in re.split(r"[\s,]+", text.casefold()) if name]
    by_name = {family.value: family for family in COMMAND_FAMILIES}
    unknown = [name for name in names if name not in by_name]
    if unknown or not names:
        raise InvalidInputError(
            f"Name the models to offer from: {', '.join(by_name)} (for example: pro dev)."
        )
    return tuple(dict.fromkeys(by_name[name] for name in names))


def _tidy(name: ListName, value: int | str) -> int | str:
    return tidy_word(str(value)) if name == "blocked_words" else int(value)


def tidy_word(text: str) -> str:
    """A blocked word or phrase as it is kept and matched: one space between words, any case."""
    word = " ".join(text.split()).casefold()
    if not word:
        raise InvalidInputError("Write a word or phrase.")
    return word


# --- A server's spending ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spent:
    """Money (micro-dollars), images and jobs counted by the ledger."""

    amount_micros: int = 0
    images: int = 0
    jobs: int = 0

    def __add__(self, other: Spent) -> Spent:
        return Spent(
            self.amount_micros + other.amount_micros,
            self.images + other.images,
            self.jobs + other.jobs,
        )


_Key = TypeVar("_Key", int, str)


@dataclass(frozen=True, slots=True)
class PeriodUsage:
    """A server's spending since `since`; members and models largest first."""

    since: dt.datetime
    total: Spent
    by_member: tuple[tuple[int, Spent], ...]
    # By the model's name (as members see it in results).
    by_model: tuple[tuple[str, Spent], ...]


@dataclass(frozen=True, slots=True)
class ServerUsage:
    """What a server has spent today and this month (UTC)."""

    today: PeriodUsage
    month: PeriodUsage


def _period(since: dt.datetime, rows: Iterable[SpendingRow]) -> PeriodUsage:
    members: dict[int, Spent] = {}
    models: dict[str, Spent] = {}
    total = Spent()
    for row in rows:
        spent = Spent(row.amount_micros, row.images, row.jobs)
        members[row.member_id] = members.get(row.member_id, Spent()) + spent
        name = _model_name(row.model_path)
        models[name] = models.get(name, Spent()) + spent
        total += spent
    return PeriodUsage(since, total, _largest_first(members), _largest_first(models))


def _largest_first(spent: dict[_Key, Spent]) -> tuple[tuple[_Key, Spent], ...]:
    return tuple(sorted(spent.items(), key=lambda item: (-item[1].amount_micros, -item[1].images)))


def _model_name(path: str) -> str:
    try:
        return model_for_path(path).name
    except InvalidInputError:
        # A model the catalog no longer lists: its path is still a fair name.
        return path


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
    field = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if not field:
        return f"That doesn't work: {message}."
    return f"That doesn't work for {field.replace('_', ' ')}: {message}."


__all__ = [
    "Admission",
    "BannedError",
    "Community",
    "CooldownError",
    "ListName",
    "PeriodUsage",
    "RefusedHereError",
    "ServerUsage",
    "Spent",
    "blocked_word_in",
    "parse_count",
    "parse_models",
    "parse_usd",
    "tidy_word",
]
