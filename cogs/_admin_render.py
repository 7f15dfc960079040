"""What /kontext-admin shows: a server's rules and its spending, within Discord's limits."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import TypeVar

import discord

from services.budget import usd
from services.community import ServerUsage, Spent
from services.money import to_micros
from services.rules import NsfwPolicy, ServerRules

from ._markdown import literal

# An embed field's value holds 1,024 characters; the whole embed 6,000.
FIELD_LIMIT = 1024
# Members and models listed per period; the rest are summed up in one line.
SHOWN = 10

_Key = TypeVar("_Key", int, str)

NSFW_WORDS = {
    NsfwPolicy.WITHHOLD: "Never shown",
    NsfwPolicy.AGE_RESTRICTED: "Shown behind a spoiler in age-restricted channels only",
    NsfwPolicy.EVERYWHERE: "Shown behind a spoiler in every channel",
}


def settings_embed(rules: ServerRules, banned: int) -> discord.Embed:
    """Everything in force in a server, in one embed."""
    embed = discord.Embed(title="Kontext Bot in this server", colour=discord.Colour.blurple())
    offered = ", ".join(family.display_name for family in rules.models)
    embed.add_field(name="Models offered", value=offered, inline=False)
    embed.add_field(name="Default model", value=rules.default_model.display_name)
    embed.add_field(name="NSFW images", value=NSFW_WORDS[rules.nsfw])
    embed.add_field(name="Highest safety tolerance", value=safety_text(rules.max_safety_tolerance))
    embed.add_field(name="Cooldown", value=cooldown_text(rules.cooldown_s))
    embed.add_field(name="Channels", value=channels_text(rules.channels), inline=False)
    embed.add_field(name="Roles", value=roles_text(rules.roles), inline=False)
    embed.add_field(name="Budgets", value=budgets_text(rules), inline=False)
    embed.add_field(
        name=f"Blocked words ({len(rules.blocked_words)})",
        value=words_text(rules.blocked_words),
        inline=False,
    )
    log_channel = rules.log_channel_id
    embed.add_field(name="Log channel", value=f"<#{log_channel}>" if log_channel else "None")
    embed.add_field(name="Banned members", value=str(banned))
    return embed


def safety_text(highest: int | None) -> str:
    if highest is None:
        return "Any (1-5)"
    return f"{highest} (1 is the strictest)"


def cooldown_text(seconds: int) -> str:
    return "None" if seconds == 0 else f"{seconds} s between a member's images"


def channels_text(channels: Sequence[int]) -> str:
    return ", ".join(f"<#{c}>" for c in channels) if channels else "Every channel"


def roles_text(roles: Sequence[int]) -> str:
    return ", ".join(f"<@&{r}>" for r in roles) if roles else "Everyone"


def budgets_text(rules: ServerRules) -> str:
    def money(amount: Decimal | None) -> str:
        return "no cap" if amount is None else usd(to_micros(amount))

    images = rules.member_daily_images
    return "\n".join(
        [
            f"Server per day: {money(rules.server_daily_usd)}",
            f"Server per month: {money(rules.server_monthly_usd)}",
            f"Each member per day: {money(rules.member_daily_usd)}",
            f"Images per member per day: {'no cap' if images is None else images}",
        ]
    )


def words_text(words: Sequence[str], limit: int = FIELD_LIMIT) -> str:
    """The blocked words as written (escaped), as many as fit in `limit` characters."""
    if not words:
        return "None"
    return _fitted([f"`{w}`" if "`" not in w else literal(w) for w in words], ", ", limit)


def _fitted(items: Sequence[str], separator: str, limit: int) -> str:
    """`items` joined, as many as fit in `limit` characters, then how many more there are."""
    shown: list[str] = []
    for index, item in enumerate(items):
        left = len(items) - index - 1
        note = f"{separator}and {left} more" if left else ""
        if len(separator.join([*shown, item])) + len(note) > limit:
            break
        shown.append(item)
    else:
        return separator.join(shown)
    if not shown:
        return f"{len(items)} entries, too long to show here"
    return separator.join(shown) + f"{separator}and {len(items) - len(shown)} more"


def usage_embed(usage: ServerUsage) -> discord.Embed:
    """A server's spending today and this month, top spenders first."""
    embed = discord.Embed(title="Spending in this server", colour=discord.Colour.blurple())
    for name, period in (("Today", usage.today), ("This month", usage.month)):
        total = period.total
        embed.add_field(
            name=f"{name}: {usd(total.amount_micros)}, {_images(total.images)}",
            value=_lines(period.by_member, lambda member: f"<@{member}>"),
            inline=False,
        )
        embed.add_field(
            name=f"{name} by model",
            value=_lines(period.by_model, lambda model: model),
            inline=False,
        )
    embed.set_footer(text="Days start at 00:00 UTC, months on the 1st.")
    return embed


def _lines(rows: Sequence[tuple[_Key, Spent]], label: Callable[[_Key], str]) -> str:
    if not rows:
        return "Nothing spent."
    lines = [f"{label(key)}: {_spent(spent)}" for key, spent in rows[:SHOWN]]
    rest = rows[SHOWN:]
    if rest:
        others = _sum(spent for _, spent in rest)
        lines.append(f"{len(rest)} more: {_spent(others)}")
    return _fitted(lines, "\n", FIELD_LIMIT)


def _spent(spent: Spent) -> str:
    jobs = "1 job" if spent.jobs == 1 else f"{spent.jobs} jobs"
    return f"{usd(spent.amount_micros)} ({_images(spent.images)}, {jobs})"


def _sum(spents: Iterable[Spent]) -> Spent:
    total = Spent()
    for spent in spents:
        total += spent
    return total


def _images(count: int) -> str:
    return "1 image" if count == 1 else f"{count} images"
