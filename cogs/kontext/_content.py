"""What Discord lets the bot read of a message, and what to tell a member when it cannot.

Message Content is a privileged intent. Without it Discord empties the text, attachments,
embeds and components of every server message except the bot's own and those that mention
it, message by message: a reply that mentions the bot carries its own text, but the message it
replies to arrives empty unless that one is the bot's or mentions it too. DMs, and the target
of a message context-menu command, always come whole. So without the intent the bot cannot
see another member's image in a reply, nor read a message in an edit thread that does not
mention it; members are told how to reach it instead (the **Edit with Kontext** menu, a
mention, the Edit button).
"""

from __future__ import annotations

import discord

from services.recent import RecentSet
from services.wavespeed import KontextError

MENU_NAME = "Edit with Kontext"
# Places x members remembered for `HintOnce`; the oldest are forgotten first.
HINTS_REMEMBERED = 10_000


class HiddenImageError(KontextError):
    own_words = True
    default_message = (
        "I can't see the image in that message: Discord only shows me other members' images "
        "when their message mentions me. Right-click the message (long-press on a phone) and "
        f"choose **Apps → {MENU_NAME}** instead."
    )


class UnreadMessageError(KontextError):
    """A message meant for the bot whose text Discord withheld (it did not mention the bot)."""

    own_words = True

    def __init__(self, bot_mention: str) -> None:
        super().__init__(
            f"I can only read messages that mention me. Start with {bot_mention} and say what "
            f'to change, e.g. "{bot_mention} make it a watercolor", or use the **Edit** button '
            "under the result."
        )


def content_hidden(message: discord.Message, me: discord.abc.User, *, intent: bool) -> bool:
    """Whether Discord emptied `message` for a bot that has (or lacks) the intent."""
    return not (
        intent
        or message.guild is None
        or message.author.id == me.id
        or any(user.id == me.id for user in message.mentions)
    )


class HintOnce:
    """Remembers who was told where, so a member gets a hint once per channel or thread."""

    def __init__(self, limit: int = HINTS_REMEMBERED) -> None:
        self._told: RecentSet[tuple[int, int]] = RecentSet(limit)

    def first_time(self, place_id: int, member_id: int) -> bool:
        """True the first time for this place and member (and records it)."""
        return self._told.add((place_id, member_id))
