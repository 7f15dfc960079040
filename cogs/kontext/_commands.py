"""/edit, /imagine, /combine and the "Edit with Kontext" message menu.

Thin on purpose: acknowledge first, read attachments, describe the member and the place in an
`Origin`, call the edit service. The job service shows where the job stands from then on.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.app_commands import Range
from discord.ext import commands

from services.bundle import Services
from services.prompts import MAX_PROMPT_CHARS

from ._choices import (
    ASPECT_RATIO_CHOICES,
    COMBINE_MODELS,
    EDIT_MODELS,
    FORMAT_CHOICES,
    IMAGINE_MODELS,
    SAFETY_CHOICES,
)
from ._common import NoImageError, begin, images_of, read_attachment
from ._content import MENU_NAME
from ._modal import InstructionModal

# Discord's client holds slash commands to the prompt rule's length; the rule itself
# (services/prompts.py) is checked on every path.
Prompt = Range[str, 1, MAX_PROMPT_CHARS]


class KontextCommands(commands.Cog, name="Kontext"):
    """FLUX.1 Kontext image editing."""

    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.edit_menu = app_commands.ContextMenu(name=MENU_NAME, callback=self.edit_menu_callback)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.edit_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.edit_menu.name, type=self.edit_menu.type)

    @app_commands.command(name="edit")
    @app_commands.describe(
        image="The image to edit",
        prompt="What to change, e.g. 'make it a watercolor'",
        model="Which Kontext model (default: this server's, Pro unless changed)",
        guidance="How closely to follow the instruction (Pro/Max 1-10, Dev 1-20)",
        seed="Same seed + same instruction = same image",
        safety_tolerance="Content filter: 1 strictest, 5 most permissive (Pro, Max)",
        aspect_ratio="Shape of the result (Max only)",
        steps="Inference steps, 1-50 (Dev only)",
        size="Output size as WIDTH*HEIGHT, 256-1536 per side (Dev only)",
        output_format="jpeg, png or webp (Dev only)",
    )
    @app_commands.choices(
        model=EDIT_MODELS, aspect_ratio=ASPECT_RATIO_CHOICES, output_format=FORMAT_CHOICES
    )
    @app_commands.choices(safety_tolerance=SAFETY_CHOICES)  # integers: a list of their own for mypy
    async def edit(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: Prompt,
        model: str | None = None,
        guidance: Range[float, 0.0, 20.0] | None = None,
        seed: Range[int, -1, 9_999_999_999] | None = None,
        safety_tolerance: int | None = None,
        aspect_ratio: str | None = None,
        steps: Range[int, 1, 50] | None = None,
        size: str | None = None,
        output_format: str | None = None,
    ) -> None:
        """Edit an image with an instruction."""
        origin = await begin(interaction)
        options = {
            "guidance_scale": guidance,
            "seed": seed,
            "safety_tolerance": safety_tolerance,
            "aspect_ratio": aspect_ratio,
            "num_inference_steps": steps,
            "size": size,
            "output_format": output_format,
        }
        async with self.services.intake.admit():
            await self.services.edits.new_edit(
                origin,
                await read_attachment(image),
                prompt,
                filename=image.filename,
                model=model,
                options=options,
            )

    @app_commands.command(name="imagine")
    @app_commands.describe(
        prompt="What to make",
        model="Kontext Pro or Max (default: this server's, Pro unless changed)",
        aspect_ratio="Shape of the image (default 1:1)",
        count="How many images, 1-4",
        seed="Same seed + same prompt = same image",
        guidance="How closely to follow the prompt",
        safety_tolerance="1 strictest, 5 most permissive",
    )
    @app_commands.choices(model=IMAGINE_MODELS, aspect_ratio=ASPECT_RATIO_CHOICES)
    @app_commands.choices(safety_tolerance=SAFETY_CHOICES)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        model: str | None = None,
        aspect_ratio: str | None = None,
        count: Range[int, 1, 4] = 1,
        seed: Range[int, -1, 2_147_483_647] | None = None,
        guidance: Range[float, 1.0, 20.0] | None = None,
        safety_tolerance: int | None = None,
    ) -> None:
        """Make images from a description."""
        origin = await begin(interaction)
        options = {
            "aspect_ratio": aspect_ratio,
            "num_images": count if count > 1 else None,
            "seed": seed,
            "guidance_scale": guidance,
            "safety_tolerance": safety_tolerance,
        }
        await self.services.edits.imagine(origin, prompt, model=model, options=options)

    @app_commands.command(name="combine")
    @app_commands.describe(
        prompt="How to combine them, e.g. 'put the cat on the sofa'",
        image1="First image",
        image2="Second image",
        image3="Third image (optional)",
        image4="Fourth image (optional)",
        image5="Fifth image (optional; Pro and Max)",
        model="Which Kontext model (default: this server's, Pro unless changed)",
        aspect_ratio="Shape of the result",
    )
    @app_commands.choices(model=COMBINE_MODELS, aspect_ratio=ASPECT_RATIO_CHOICES)
    async def combine(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        model: str | None = None,
        aspect_ratio: str | None = None,
    ) -> None:
        """Combine several images into one."""
        origin = await begin(interaction)
        attachments = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        async with self.services.intake.admit():
            files = [(await read_attachment(a), a.filename) for a in attachments]
            await self.services.edits.combine(
                origin, files, prompt, model=model, options={"aspect_ratio": aspect_ratio}
            )

    async def edit_menu_callback(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        """Edit with Kontext: ask for the instruction, then edit the message's image."""
        edits = self.services.edits
        result = await edits.result_for_message(message.id)
        if result is None and not images_of(message):
            raise NoImageError()
        count = len(await edits.outputs(result.id)) if result else 1
        await interaction.response.send_modal(
            InstructionModal(
                self.services, title="Edit with Kontext", target=message, image_count=count
            )
        )
