"""How jobs look in Discord: result embeds, details, thread names, status lines.

Pure functions from stored jobs to discord.py objects, within Discord's limits (embed
description 4096, field value 1024, title 256, thread name 100). Members' prompts are shown
as written (`literal`), never rendered as markdown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import discord

from services.jobs import Stage
from services.modlog import LogEntry, Outcome
from services.storage import JobRecord
from services.wavespeed import model_for_path

from .._markdown import literal

DRY_RUN_NOTE = "Dry run: made by the built-in WaveSpeed simulator. Nothing was billed."
STAGE_ICONS = {
    Stage.QUEUED: "⏳",
    Stage.PREPARING: "🧰",
    Stage.GENERATING: "🎨",
    Stage.POSTING: "📤",
}
LOG_ICONS = {Outcome.DELIVERED: "✅", Outcome.FAILED: "❌", Outcome.CANCELLED: "🚫"}
OPTION_LABELS = {
    "guidance_scale": "Guidance",
    "safety_tolerance": "Safety tolerance",
    "aspect_ratio": "Aspect ratio",
    "num_images": "Images",
    "num_inference_steps": "Steps",
    "size": "Size",
    "output_format": "Format",
}


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def thread_name(prompt: str) -> str:
    """A thread name from the instruction: one line, 1-100 characters.

    Not escaped: Discord shows channel and thread names as plain text (no markdown, no
    mentions), so a backslash would show."""
    line = " ".join(prompt.split()) or "Kontext edit"
    return clip(line, 100)


def status_line(stage: Stage, detail: str) -> str:
    return f"{STAGE_ICONS.get(stage, '')} {detail}".strip()


def _seconds(ms: int | None) -> str:
    return "—" if ms is None else f"{ms / 1000:.1f} s"


def _cost(job: JobRecord) -> str:
    return "price not published" if job.cost is None else f"${job.cost}"


def result_embed(
    job: JobRecord, *, simulated: bool, notes: Sequence[str] = (), undo_of: int | None = None
) -> discord.Embed:
    """The card under every result: what was asked, with which settings, what it cost."""
    spec = model_for_path(job.model_path)
    title = f"Step {job.step}"
    if job.action == "reroll":
        title += " · reroll"
    if undo_of is not None:
        title += f" · back from step {undo_of}"
    embed = discord.Embed(
        title=title,
        # Clipped first: escaping at most doubles it, within the 4096 of a description.
        description=literal(clip(job.prompt, 2000)),
        colour=discord.Colour.orange() if simulated else discord.Colour.blurple(),
    )
    guidance = job.params.get("guidance_scale")
    embed.add_field(name="Model", value=spec.name)
    embed.add_field(name="Seed", value=str(job.params.get("seed", "—")))
    embed.add_field(name="Guidance", value="default" if guidance is None else f"{guidance:g}")
    embed.add_field(name="Time", value=_seconds(job.inference_ms))
    embed.add_field(name="Cost", value=_cost(job))
    if notes:
        embed.add_field(name="Notes", value=clip("\n".join(notes), 1024), inline=False)
    if simulated:
        embed.set_footer(text=DRY_RUN_NOTE)
    return embed


def details_embed(
    job: JobRecord, history: Sequence[JobRecord], *, simulated: bool
) -> discord.Embed:
    """Everything about one step, and the chain's instructions up to it."""
    spec = model_for_path(job.model_path)
    embed = discord.Embed(title=f"Step {job.step} · details", colour=discord.Colour.greyple())
    embed.add_field(name="Model", value=f"{spec.name} (`{spec.path}`)", inline=False)
    for name, value in sorted(job.params.items()):
        if name == "prompt":
            continue
        embed.add_field(
            name=OPTION_LABELS.get(name, name.replace("_", " ").capitalize()),
            value=clip(str(value), 1024),
        )
    embed.add_field(name="Prediction", value=f"`{job.prediction_id or '—'}`", inline=False)
    embed.add_field(name="Status", value=job.status)
    embed.add_field(name="Cost", value=_cost(job))
    embed.add_field(name="Time", value=_seconds(job.inference_ms))
    lines = [
        f"{step.step}. {literal(clip(' '.join(step.prompt.split()), 150))}" for step in history
    ]
    embed.add_field(name="History", value=clip("\n".join(lines) or "—", 1024), inline=False)
    embed.timestamp = dt.datetime.fromtimestamp(job.created_at, dt.UTC)
    if simulated:
        embed.set_footer(text=DRY_RUN_NOTE)
    return embed


def mention(member_id: int) -> str:
    return f"<@{member_id}>"


def log_line(entry: LogEntry) -> str:
    """An ended job in one line of a server's log channel: who, what, the model, the cost,
    and the result's link (or why there is none). The member's words are shown as written."""
    if entry.outcome is Outcome.FAILED:
        where = f"failed: {literal(entry.reason or 'no reason given')}"
    elif entry.outcome is Outcome.CANCELLED:
        where = "cancelled"
    else:
        where = entry.link or "delivered"
    return (
        f"{LOG_ICONS[entry.outcome]} {mention(entry.member_id)} **{entry.action}** "
        f"“{literal(entry.instruction)}” · {entry.model} · {entry.cost} · {where}"
    )
