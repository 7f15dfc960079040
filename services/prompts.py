"""The one rule for what members write as an instruction (a prompt), on every path.

Slash commands, the context menu's form, replies and thread messages all end up here, so a
prompt is held to the same length and must say something visible whichever way it came:
text made only of zero-width characters, spaces or combining marks would be sent to the image
service (and billed) as an empty instruction.
"""

from __future__ import annotations

import unicodedata

from .wavespeed import InvalidInputError

# The longest instruction a member may give. Slash commands and the form declare it to Discord
# too, so Discord's client refuses a longer one before it is sent.
MAX_PROMPT_CHARS = 1000

# Unicode categories that never show on their own: separators (spaces), control and format
# characters (zero-width space and joiners, bidi marks, the soft hyphen...), unassigned and
# private-use code points, and combining marks, which only decorate a character before them.
_INVISIBLE_CATEGORIES = frozenset(
    {"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn", "Mn", "Mc", "Me"}
)
# Letters and symbols made to look blank, which Unicode files as visible.
_BLANK_LOOKING = frozenset(
    {
        "\u115f",  # HANGUL CHOSEONG FILLER
        "\u1160",  # HANGUL JUNGSEONG FILLER
        "\u2800",  # BRAILLE PATTERN BLANK
        "\u3164",  # HANGUL FILLER
        "\uffa0",  # HALFWIDTH HANGUL FILLER
    }
)


class PromptError(InvalidInputError):
    """A prompt that breaks the rule; the message says how to fix it."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message, field="prompt")


def is_visible(char: str) -> bool:
    """Whether one character shows as something on screen."""
    return char not in _BLANK_LOOKING and unicodedata.category(char) not in _INVISIBLE_CATEGORIES


def check_prompt(text: str) -> str:
    """The prompt as it will be sent (surrounding whitespace removed), or PromptError."""
    prompt = text.strip()
    if not any(is_visible(char) for char in prompt):
        raise PromptError(
            "That prompt has no visible text: say in words what you want, e.g. "
            '"make it a watercolor".'
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise PromptError(
            f"That prompt is {len(prompt):,} characters long; the limit is "
            f"{MAX_PROMPT_CHARS:,}. Please shorten it."
        )
    return prompt
