"""Buttons and modals. Buttons are persistent: the job id is in the custom_id, so they keep
working after a restart (`bot.add_dynamic_items` in the cog's setup)."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord

from services.prompts import MAX_PROMPT_CHARS

from .._errors import tell_member

if TYPE_CHECKING:
    from ._cog import KontextCog

log = logging.getLogger(__name__)

ACTIONS: dict[str, tuple[str, discord.ButtonStyle]] = {
    "edit": ("Edit", discord.ButtonStyle.primary),
    "reroll": ("Reroll", discord.ButtonStyle.secondary),
    "undo": ("Undo", discord.ButtonStyle.secondary),
    "details": ("Details", discord.ButtonStyle.secondary),
    "delete": ("Delete", discord.ButtonStyle.danger),
    "cancel": ("Cancel", discord.ButtonStyle.danger),
    "retry": ("Retry", discord.ButtonStyle.primary),
}
RESULT_ACTIONS = ("edit", "reroll", "undo", "details", "delete")


def _cog(interaction: discord.Interaction) -> KontextCog:
    cog = interaction.client.get_cog("Kontext")  # type: ignore[attr-defined]
    if cog is None:
        raise RuntimeError("the Kontext cog is not loaded")
    return cog


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"kontext:(?P<action>edit|reroll|undo|details|delete|cancel|retry):(?P<job>[0-9]+)",
):
    """One button of a result (or of a queued job's status): `kontext:<action>:<job id>`."""

    def __init__(self, action: str, job_id: int) -> None:
        label, style = ACTIONS[action]
        super().__init__(
            discord.ui.Button(label=label, style=style, custom_id=f"kontext:{action}:{job_id}")
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(match["action"], int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await _cog(interaction).on_job_button(interaction, self.action, self.job_id)
        except Exception as exc:  # the one error path, as for commands
            await tell_member(interaction, exc)


def result_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in RESULT_ACTIONS:
        view.add_item(JobButton(action, job_id))
    return view


def cancel_view(job_id: int) -> discord.ui.View:
    return _one_button("cancel", job_id)


def retry_view(job_id: int) -> discord.ui.View:
    """Under a job that made nothing: send it again, as it was."""
    return _one_button("retry", job_id)


def _one_button(action: str, job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton(action, job_id))
    return view


class InstructionModal(discord.ui.Modal):
    """Asks for an instruction (and which image, when a result has several)."""

    def __init__(self, *, title: str, target: Any, image_count: int = 1) -> None:
        super().__init__(title=title, timeout=600)
        self.target = target
        self.instruction: discord.ui.TextInput[InstructionModal] = discord.ui.TextInput(
            label="What should change?",
            style=discord.TextStyle.paragraph,
            placeholder="make it a watercolor · swap the background for a beach",
            max_length=MAX_PROMPT_CHARS,
        )
        self.add_item(self.instruction)
        self.image_number: discord.ui.TextInput[InstructionModal] | None = None
        if image_count > 1:
            self.image_number = discord.ui.TextInput(
                label=f"Which image? (1-{image_count})", default="1", max_length=1
            )
            self.add_item(self.image_number)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        number = self.image_number.value if self.image_number else "1"
        await _cog(interaction).on_instruction(
            interaction, self.target, self.instruction.value, number
        )

    # Modal.on_error takes no item, unlike the View signature mypy compares it with.
    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction, error: Exception
    ) -> None:
        await tell_member(interaction, error)
