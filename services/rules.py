"""A server's rules: which models, where, who, what may be spent, and how NSFW images show.

One model, `ServerRules`, is what is in force in a server. Its defaults come from `config.toml`
(`[defaults]` and `[budget]`, the two sections below); a server's admins change single fields
with `/kontext-admin`, and only what they changed is stored (services/community.py), so a new
default in the config reaches every server that never changed that field.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .wavespeed.catalog import (
    COMMAND_FAMILIES,
    DEFAULT_FAMILY,
    Family,
    ModelKind,
    families_offering,
)

# WaveSpeed's own safety_tolerance when a request names none (the model pages' default).
WAVESPEED_SAFETY_DEFAULT = 2
MAX_BLOCKED_WORDS = 100
MAX_ALLOW_LIST = 25


class NsfwPolicy(enum.StrEnum):
    """What happens to an image WaveSpeed flags as NSFW."""

    # Never shown.
    WITHHOLD = "withhold"
    # Behind a spoiler in age-restricted channels, withheld elsewhere.
    AGE_RESTRICTED = "age-restricted"
    # Behind a spoiler in any channel.
    EVERYWHERE = "everywhere"

    def shows_in(self, age_restricted: bool) -> bool:
        return self is NsfwPolicy.EVERYWHERE or (
            self is NsfwPolicy.AGE_RESTRICTED and age_restricted
        )


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetSettings(_Rules):
    """What may be spent, in US dollars (exact decimals); unset is no cap. Daily budgets reset at
    00:00 UTC, monthly ones on the 1st."""

    server_daily_usd: Decimal | None = Field(default=None, ge=0, decimal_places=6)
    server_monthly_usd: Decimal | None = Field(default=None, ge=0, decimal_places=6)
    # A member's own caps, counted per server.
    member_daily_usd: Decimal | None = Field(default=None, ge=0, decimal_places=6)
    member_daily_images: int | None = Field(default=None, ge=0)


class DefaultRules(_Rules):
    """`[defaults]`: what a server has until its admins change it."""

    # The models members may choose (an allow list), and the one used when they name none.
    models: tuple[Family, ...] = COMMAND_FAMILIES
    default_model: Family = DEFAULT_FAMILY
    nsfw: NsfwPolicy = NsfwPolicy.AGE_RESTRICTED
    # The highest safety_tolerance (1 strictest .. 5 most permissive) members may choose;
    # unset: any.
    max_safety_tolerance: int | None = Field(default=None, ge=1, le=5)
    # Least seconds between the starts of two of a member's jobs in a server.
    cooldown_s: int = Field(default=0, ge=0, le=86_400)
    # Words or phrases refused in instructions (whole words, any case).
    blocked_words: tuple[str, ...] = Field(default=(), max_length=MAX_BLOCKED_WORDS)

    @field_validator("models")
    @classmethod
    def _offered_models(cls, value: tuple[Family, ...]) -> tuple[Family, ...]:
        if not value:
            raise ValueError("name at least one model")
        unknown = [family for family in value if family not in COMMAND_FAMILIES]
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} cannot be chosen in commands; "
                f"choose from {', '.join(COMMAND_FAMILIES)}"
            )
        return tuple(dict.fromkeys(value))

    @field_validator("blocked_words")
    @classmethod
    def _tidy_words(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        words = (" ".join(word.split()).casefold() for word in value)
        return tuple(dict.fromkeys(word for word in words if word))

    @model_validator(mode="after")
    def _default_is_offered(self) -> Self:
        if self.default_model not in self.models:
            raise ValueError(
                f"the default model {self.default_model} is not one of the models offered"
            )
        return self


class ServerRules(DefaultRules, BudgetSettings):
    """Everything in force in one server."""

    # Channels the bot works in (a thread counts as its parent); empty: every channel.
    channels: tuple[int, ...] = Field(default=(), max_length=MAX_ALLOW_LIST)
    # Roles whose members may use it (any one of them); empty: everyone.
    roles: tuple[int, ...] = Field(default=(), max_length=MAX_ALLOW_LIST)
    # Where every job is logged for moderators; unset: nowhere.
    log_channel_id: int | None = None

    @classmethod
    def defaults(cls, defaults: DefaultRules, budget: BudgetSettings) -> ServerRules:
        return cls(**defaults.model_dump(), **budget.model_dump())

    def default_for(self, kind: ModelKind) -> Family:
        """The model a command of `kind` uses when the member names none: the server's default,
        or else the first model it offers that does that work (Dev makes no images from text)."""
        offering = families_offering(kind)
        if self.default_model in offering:
            return self.default_model
        return next((family for family in self.models if family in offering), self.default_model)

    def with_changes(self, changes: dict[str, Any]) -> ServerRules:
        """These rules with some fields changed, validated as a whole (ValueError if not)."""
        return type(self).model_validate({**self.model_dump(), **changes})


# The fields a server may change, with how they are stored.
CHANGEABLE = frozenset(ServerRules.model_fields)
