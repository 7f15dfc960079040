"""The instruction modal: what to change, and which image when there are several."""

from __future__ import annotations

import discord

from services.bundle import Services
from services.prompts import MAX_PROMPT_CHARS
from services.wavespeed import InvalidInputError

from .._errors import tell_member
from ._common import begin, edit_message_image


class InstructionModal(discord.ui.Modal):
    """Asks for an instruction (and which image, when a result has several), then edits:
    a result (`target` is its job id, from the Edit button) or a message's image (the menu)."""

    def __init__(
        self,
        services: Services,
        *,
        title: str,
        target: int | discord.Message,
        image_count: int = 1,
    ) -> None:
        super().__init__(title=title, timeout=600)
        self.services = services
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
        number = _image_number(self.image_number.value if self.image_number else "1")
        origin = await begin(interaction)
        instruction = self.instruction.value
        if isinstance(self.target, int):
            await self.services.edits.edit_result(
                origin, self.target, instruction, image_number=number
            )
        else:
            await edit_message_image(self.services, origin, self.target, instruction, number)

    # Modal.on_error takes no item, unlike the View signature mypy compares it with.
    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction, error: Exception
    ) -> None:
        await tell_member(interaction, error)


def _image_number(text: str) -> int:
    try:
        return int(text.strip() or "1")
    except ValueError:
        raise InvalidInputError("The image number has to be a number, like 1 or 2.") from None
