"""Text from members (and from services that may quote them) shown as written, not as markdown.

Discord renders markdown in message content and embeds: a prompt echoed as it is could plant a
masked link ("[free nitro](https://...)"), a mention, a spoiler or a heading in the bot's own
message. `literal` puts a backslash before every character that could start such markup, which
Discord then shows as the plain character. Links written out in full stay clickable (they show
where they go), and `<https://...>` keeps suppressing its preview.

discord.utils.escape_markdown is not enough here: it escapes the first "[" of a run of masked
links and leaves the others working, and it leaves mentions alone.
"""

from __future__ import annotations

import re

# Discord's own autolink pattern, and a link in angle brackets (no preview).
_URL = re.compile(r"<https?://[^\s>]+>|https?://[^\s<]+[^<.,:;\"')\]\s]")
# Markup that works anywhere in a line: emphasis, strike, spoilers, code, masked links,
# mentions (<@id>, <@&id>, <#id>, <t:...>, custom emoji) and @everyone / @here.
_INLINE = re.compile(r"[\\*_~|`\[\]<@]")
# Markup that works at the start of a line: quotes, headings, subtext, lists.
_LINE_START = re.compile(r"^([ \t]*)([>#-]|[0-9]+\.)", re.MULTILINE)


def literal(text: str) -> str:
    """`text` escaped so Discord shows every character of it as written."""
    parts: list[str] = []
    position = 0
    for url in _URL.finditer(text):
        parts.append(_escape(text[position : url.start()]))
        parts.append(url.group())
        position = url.end()
    parts.append(_escape(text[position:]))
    return "".join(parts)


def _escape(text: str) -> str:
    text = _INLINE.sub(r"\\\g<0>", text)
    # A backslash escapes punctuation only: "12." becomes "12\.", not "\12.".
    return _LINE_START.sub(
        lambda m: m[1] + (m[2][:-1] + "\\." if m[2].endswith(".") else "\\" + m[2]), text
    )
