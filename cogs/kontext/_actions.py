"""The buttons under results and status lines: one table of actions, each defined once.

A button's custom_id is `kontext:<action>:<job id>`, so buttons keep working after a restart
and on old messages (`JobButton` is a dynamic item, registered by `KontextActions`). Who may use
an action is stated in the table and enforced by the service its handler calls.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from services.bundle import Services
from services.jobs import CancelOutcome

from .._errors import tell_member
from . import _render as render
from ._common import begin, origin_of
from ._modal import InstructionModal

if TYPE_CHECKING:
    from ._presenter import DiscordPresenter


class Who(enum.Enum):
    """Who may use a button (what the services enforce)."""

    ANYONE = "anyone"
    # The step's requester or the chain's owner, or a member with Manage Messages there
    # (`EditService.check_may_change`).
    REQUESTER_OR_MODERATOR = "the requester or a moderator"
    # The job's requester alone (`EditService.retry`, `JobService.cancel`).
    REQUESTER = "the requester only"


class Under(enum.Enum):
    """Which message a button is shown under."""

    RESULT = "a result"
    QUEUED = "a job still waiting"
    FAILED = "a job that made nothing"


@dataclass(frozen=True, slots=True)
class Click:
    """A pressed button: the interaction, the job it belongs to, and what a handler may use."""

    interaction: discord.Interaction
    job_id: int
    services: Services
    presenter: DiscordPresenter


async def _edit(click: Click) -> None:
    # Anyone: the requester's edit continues the chain, someone else's starts a chain of their own.
    count = len(await click.services.edits.outputs(click.job_id))
    await click.interaction.response.send_modal(
        InstructionModal(
            click.services, title="Edit this image", target=click.job_id, image_count=count
        )
    )


async def _reroll(click: Click) -> None:
    origin = await begin(click.interaction)
    await click.services.edits.reroll(origin, click.job_id)


async def _undo(click: Click) -> None:
    edits = click.services.edits
    origin = await begin(click.interaction)
    current = await edits.job(click.job_id)
    previous, outputs = await edits.undo(origin, click.job_id)
    posted = await click.presenter.post_result(previous, outputs, undo_of=current.step)
    await edits.record_post(previous, posted)
    await click.interaction.edit_original_response(
        content=f"↩️ Back to step {previous.step}: {posted.url}"
    )


async def _details(click: Click) -> None:
    details = await click.services.edits.details(click.job_id)
    await click.interaction.response.send_message(
        embed=render.details_embed(
            details.job, details.history, simulated=click.services.simulated
        ),
        ephemeral=True,
    )


async def _delete(click: Click) -> None:
    interaction = click.interaction
    await click.services.edits.check_may_change(origin_of(interaction), click.job_id)
    await interaction.response.defer(ephemeral=True, thinking=True)
    if interaction.message is not None:
        await interaction.message.delete()
        await click.services.edits.forget_message(interaction.message.id)
    await interaction.edit_original_response(content="🗑️ Deleted.")


async def _cancel(click: Click) -> None:
    response = click.interaction.response
    outcome = await click.services.jobs.cancel(click.job_id, click.interaction.user.id)
    if outcome == CancelOutcome.CANCELLED:
        await response.edit_message(content="🚫 Cancelled. Nothing was charged.", view=None)
    elif outcome == CancelOutcome.NOT_YOURS:
        await response.send_message(
            "Only the person who asked for this image can cancel it.", ephemeral=True
        )
    else:
        await response.send_message(
            "It has already started, so it can't be cancelled any more.", ephemeral=True
        )


async def _retry(click: Click) -> None:
    origin = await begin(click.interaction)
    await click.services.edits.retry(origin, click.job_id)


@dataclass(frozen=True, slots=True)
class Action:
    name: str  # in the custom_id: never rename one, old messages carry it
    label: str
    style: discord.ButtonStyle
    who: Who
    under: Under
    handler: Callable[[Click], Awaitable[None]]


_PRIMARY, _SECONDARY, _DANGER = (
    discord.ButtonStyle.primary,
    discord.ButtonStyle.secondary,
    discord.ButtonStyle.danger,
)
# In the order the buttons are shown.
ACTIONS = {
    action.name: action
    for action in (
        Action("edit", "Edit", _PRIMARY, Who.ANYONE, Under.RESULT, _edit),
        Action("reroll", "Reroll", _SECONDARY, Who.REQUESTER_OR_MODERATOR, Under.RESULT, _reroll),
        Action("undo", "Undo", _SECONDARY, Who.REQUESTER_OR_MODERATOR, Under.RESULT, _undo),
        Action("details", "Details", _SECONDARY, Who.ANYONE, Under.RESULT, _details),
        Action("delete", "Delete", _DANGER, Who.REQUESTER_OR_MODERATOR, Under.RESULT, _delete),
        Action("cancel", "Cancel", _DANGER, Who.REQUESTER, Under.QUEUED, _cancel),
        Action("retry", "Retry", _PRIMARY, Who.REQUESTER, Under.FAILED, _retry),
    )
}


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"kontext:(?P<action>{'|'.join(ACTIONS)}):(?P<job>[0-9]+)",
):
    """One button of a result (or of a job's status line): `kontext:<action>:<job id>`."""

    def __init__(self, action: Action, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=action.label, style=action.style, custom_id=f"kontext:{action.name}:{job_id}"
            )
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(ACTIONS[match["action"]], int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            cog = KontextActions.of(interaction.client)
            await self.action.handler(Click(interaction, self.job_id, cog.services, cog.presenter))
        except Exception as exc:  # the one error path, as for commands
            await tell_member(interaction, exc)


def _view(under: Under, job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in ACTIONS.values():
        if action.under is under:
            view.add_item(JobButton(action, job_id))
    return view


def result_view(job_id: int) -> discord.ui.View:
    return _view(Under.RESULT, job_id)


def cancel_view(job_id: int) -> discord.ui.View:
    return _view(Under.QUEUED, job_id)


def retry_view(job_id: int) -> discord.ui.View:
    """Under a job that made nothing: send it again, as it was."""
    return _view(Under.FAILED, job_id)


class KontextActions(commands.Cog):
    """The job buttons: registered while the extension is loaded."""

    def __init__(self, bot: commands.Bot, services: Services, presenter: DiscordPresenter) -> None:
        self.bot = bot
        self.services = services
        self.presenter = presenter

    @classmethod
    def of(cls, client: discord.Client) -> KontextActions:
        """The loaded cog of `client` (found by its type: the buttons' way back to it)."""
        for cog in getattr(client, "cogs", {}).values():
            if isinstance(cog, cls):
                return cog
        raise RuntimeError("the Kontext extension is not loaded")

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(JobButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(JobButton)
