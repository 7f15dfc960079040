"""`literal` (cogs/_markdown.py): member text shown by Discord exactly as written."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cogs._markdown import literal
from tests.e2e import shown

# Text rich in what Discord's markdown reacts to.
markdownish = st.text(
    st.sampled_from(list("\\*_~|`[]()<>@#-.:!/&1 \n")) | st.characters(categories=["L", "N"]),
    max_size=80,
).filter(lambda text: "http" not in text)  # links are left whole: see the test of their own


def displayed(text: str) -> str:
    """What Discord shows: a backslash before punctuation shows that character alone."""
    return re.sub(r"\\([^0-9A-Za-z\s])", r"\1", text)


@given(markdownish)
def test_every_markup_character_is_escaped_and_shows_as_written(text: str) -> None:
    escaped = literal(text)
    assert shown(escaped) == text
    # Nothing at the start of a line makes a quote, heading, subtext or list.
    for line in escaped.split("\n"):
        assert not re.match(r"[ \t]*([>#-]|[0-9]+\.)", line), line


@given(markdownish, st.sampled_from(["https://example.com/a_b*c", "<https://example.com/x_y>"]))
def test_links_written_out_stay_whole(text: str, link: str) -> None:
    escaped = literal(f"{text} {link} {text}")
    assert link in escaped
    assert displayed(escaped) == f"{text} {link} {text}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Every masked link, not only the first (discord.utils.escape_markdown stops there).
        (
            "[a](https://x.example) and [b](https://y.example)",
            r"\[a\](https://x.example) and \[b\](https://y.example)",
        ),
        ("<@123> <@&45> @everyone @here", r"\<\@123> \<\@&45> \@everyone \@here"),
        ("**bold** __under__ ||spoiler|| `code` ~~gone~~", None),
        ("# big\n-# small\n> quote\n- item\n12. twelfth", None),
        ("make it blue", "make it blue"),
    ],
)
def test_examples(text: str, expected: str | None) -> None:
    escaped = literal(text)
    if expected is not None:
        assert escaped == expected
    assert shown(escaped) == text
