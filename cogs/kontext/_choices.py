"""Slash-command choices, read off the model catalog so each model and option is listed once."""

from __future__ import annotations

from discord.app_commands import Choice

from services.wavespeed.catalog import (
    ASPECT_RATIOS,
    CHOICES,
    ModelKind,
    families_offering,
)


def model_choices(kind: ModelKind) -> list[Choice[str]]:
    """The models a member may pick for `kind` of work (a server may offer fewer)."""
    return [
        Choice(name=family.display_name, value=family.value) for family in families_offering(kind)
    ]


EDIT_MODELS = model_choices(ModelKind.EDIT)
IMAGINE_MODELS = model_choices(ModelKind.TEXT_TO_IMAGE)
COMBINE_MODELS = model_choices(ModelKind.MULTI)
ASPECT_RATIO_CHOICES = [Choice(name=ratio, value=ratio) for ratio in ASPECT_RATIOS]
FORMAT_CHOICES = [Choice(name=fmt, value=fmt) for fmt in CHOICES["output_format"]]
_SAFETY_WORDS = {1: " (strictest)", 5: " (most permissive)"}
SAFETY_CHOICES = [
    Choice(name=f"{level}{_SAFETY_WORDS.get(level, '')}", value=level)
    for level in map(int, CHOICES["safety_tolerance"])
]
