"""Who asked, and where: what the chat surface tells the services about a request."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked, and where: what the chat surface knows about a request."""

    member_id: int
    channel_id: int
    guild_id: int | None = None
    # A thread's parent channel (a channel allow list counts a thread as its parent).
    parent_channel_id: int | None = None
    # The member's roles in the server (a role allow list needs one of them).
    role_ids: frozenset[int] = frozenset()
    # Age-restricted ("NSFW") channel: where a server may let flagged images show.
    age_restricted: bool = False
    # Largest upload in bytes the request came with: an interaction's attachment_size_limit
    # (which can reflect the member's Nitro, for answers to that interaction only) or the
    # server's. Results are fitted to the limit of the place they are posted in; this can only
    # lower it.
    upload_limit: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    token_expires_at: float | None = None
    # Manage Messages there: moderators may act on anyone's results.
    can_manage: bool = False
    # Where the job's progress is shown (see JobRecord.status_message_id).
    status_message_id: int | None = None
    status_channel_id: int | None = None
