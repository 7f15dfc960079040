"""From a message body (channel message, interaction response, webhook) to stored fields.

Shared by every route that creates or edits a message, so the rules (limits, empty messages,
file sizes, which attachments an edit keeps, who gets pinged) are the same everywhere.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from . import mentions
from .models import Attachment, Channel, MessageFlag, Pings
from .rest import UploadedFile
from .rules import (
    EMPTY_MESSAGE,
    REQUEST_BYTES_MAX,
    DiscordError,
    FieldError,
    check_message,
    form_error,
    too_large,
)
from .state import DiscordState

log = logging.getLogger(__name__)

# Flags a sender may set; anything else in `flags` is silently dropped, as Discord does.
SETTABLE_FLAGS = (
    MessageFlag.SUPPRESS_EMBEDS
    | MessageFlag.EPHEMERAL
    | MessageFlag.SUPPRESS_NOTIFICATIONS
    | MessageFlag.IS_COMPONENTS_V2
)


def check_limits(body: dict[str, Any], prefix: tuple[str | int, ...] = ()) -> None:
    errors = check_message(body, prefix)
    if errors:
        raise form_error(errors)


def check_not_empty(body: dict[str, Any], files: list[UploadedFile]) -> None:
    has_content = bool((body.get("content") or "").strip())
    if not (
        has_content
        or body.get("embeds")
        or files
        or body.get("components")
        or body.get("sticker_ids")
        or body.get("poll")
    ):
        raise DiscordError(400, EMPTY_MESSAGE, "Cannot send an empty message", violation=True)


def check_files(files: list[UploadedFile], limit: int, where: str) -> None:
    """Per-file limit of the place (or interaction) and Discord's cap on a whole request."""
    total = sum(f.size for f in files)
    if total > REQUEST_BYTES_MAX:
        raise too_large(f"{total} bytes of files in one request; the cap is {REQUEST_BYTES_MAX}")
    for upload in files:
        if upload.size > limit:
            raise too_large(
                f"{upload.filename} is {upload.size} bytes; {where} allows {limit} bytes per file"
            )


def content_fields(body: dict[str, Any], *, editing: bool = False) -> dict[str, Any]:
    """The message fields a body sets (on edit: only those it names)."""
    fields: dict[str, Any] = {}
    if "content" in body or not editing:
        fields["content"] = body.get("content") or ""
    if "embeds" in body or not editing:
        fields["embeds"] = [_embed(e) for e in body.get("embeds") or []]
    if "components" in body or not editing:
        fields["components"] = number_components(body.get("components") or [])
    return fields


def requested_flags(body: dict[str, Any]) -> int:
    return int(body.get("flags") or 0) & SETTABLE_FLAGS


def _embed(embed: dict[str, Any]) -> dict[str, Any]:
    stored = copy.deepcopy(embed)
    stored.setdefault("type", "rich")
    stored.setdefault("content_scan_version", 0)
    return {k: v for k, v in stored.items() if v is not None}


def number_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Components as Discord stores them: every one gets a numeric `id` in reading order."""
    counter = 0

    def walk(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal counter
        result = []
        for item in items:
            counter += 1
            stored = {k: v for k, v in item.items() if v is not None}
            stored.setdefault("id", counter)
            if isinstance(item.get("components"), list):
                stored["components"] = walk(item["components"])
            result.append(stored)
        return result

    return walk(copy.deepcopy(components))


def attachments_for(
    state: DiscordState,
    channel_id: int,
    body: dict[str, Any],
    files: list[UploadedFile],
    *,
    existing: list[Attachment] | None = None,
    ephemeral: bool = False,
) -> list[Attachment] | None:
    """The message's attachments after this request, or None if it leaves them alone.

    `attachments: [{id: n}]` in the body names uploaded `files[n]` (new) or snowflakes of the
    attachments to keep (edits). Without the array, every uploaded file is attached and an edit
    keeps what the message had.
    """
    by_index = {f.index: f for f in files}
    entries = body.get("attachments")
    if entries is None:
        if not files:
            return None if existing is not None else []
        kept = list(existing or [])
        return kept + [_store(state, channel_id, f, None, ephemeral) for f in files]
    kept_ids = {a.id: a for a in existing or []}
    result: list[Attachment] = []
    used: set[int] = set()
    for entry in entries:
        ref = int(entry["id"])
        if ref in kept_ids:
            result.append(kept_ids[ref])
        elif ref in by_index:
            used.add(ref)
            result.append(_store(state, channel_id, by_index[ref], entry, ephemeral))
        else:
            raise form_error([_unknown_attachment(ref)])
    # Files not named in the array are still uploaded, as Discord does.
    result += [_store(state, channel_id, f, None, ephemeral) for f in files if f.index not in used]
    return result


def _unknown_attachment(ref: int) -> FieldError:
    return FieldError(("attachments",), "ATTACHMENT_NOT_FOUND", f"Unknown attachment {ref}")


def _store(
    state: DiscordState,
    channel_id: int,
    upload: UploadedFile,
    entry: dict[str, Any] | None,
    ephemeral: bool,
) -> Attachment:
    filename = (entry or {}).get("filename") or upload.filename
    return state.upload(
        channel_id,
        filename,
        upload.data,
        content_type=upload.content_type,
        description=(entry or {}).get("description"),
        ephemeral=ephemeral,
    )


def pinged(
    state: DiscordState,
    channel: Channel,
    content: str,
    allowed: dict[str, Any] | None,
    replied_author: int | None,
) -> Pings:
    """Who a message the bot sends pings: its content's mentions filtered by
    `allowed_mentions` (Discord's defaults when it sends none), plus the replied-to author."""
    return mentions.resolve(
        state, channel, state.bot_user, content, allowed, replied_author=replied_author
    )
