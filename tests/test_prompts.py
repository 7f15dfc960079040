"""The prompt rule (services/prompts.py): something visible, at most MAX_PROMPT_CHARS."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.prompts import MAX_PROMPT_CHARS, PromptError, check_prompt, is_visible
from services.wavespeed import InvalidInputError

NOTHING_VISIBLE = "That prompt has no visible text"

# Characters that show nothing on their own, from every family the rule knows.
INVISIBLE = [
    " ",
    "\t",
    "\n",
    "\u00a0",  # no-break space
    "\u00ad",  # soft hyphen
    "\u034f",  # combining grapheme joiner
    "\u0301",  # combining acute accent
    "\u115f",  # Hangul choseong filler
    "\u180e",  # Mongolian vowel separator
    "\u200b",  # zero-width space
    "\u200c",  # zero-width non-joiner
    "\u200d",  # zero-width joiner
    "\u200e",  # left-to-right mark
    "\u202e",  # right-to-left override
    "\u2028",  # line separator
    "\u2060",  # word joiner
    "\u2800",  # Braille pattern blank
    "\u3000",  # ideographic space
    "\u3164",  # Hangul filler
    "\ufe0f",  # variation selector-16
    "\ufeff",  # zero-width no-break space
    "\uffa0",  # halfwidth Hangul filler
    "\U000e0020",  # tag space
]
invisible_text = st.text(
    st.sampled_from(INVISIBLE)
    | st.characters(categories=["Zs", "Zl", "Zp", "Cc", "Cf", "Mn", "Me", "Mc"]),
    max_size=50,
)
# Something a member can see: letters, digits, punctuation, symbols (emoji included).
visible_char = st.characters(categories=["L", "N", "P", "S"]).filter(
    lambda c: c not in {"\u115f", "\u1160", "\u2800", "\u3164", "\uffa0"}
)


@given(invisible_text)
def test_text_with_nothing_visible_is_refused(text: str) -> None:
    with pytest.raises(PromptError, match=NOTHING_VISIBLE) as refused:
        check_prompt(text)
    # One error type for every bad input: the cogs' error path shows it as it is.
    assert isinstance(refused.value, InvalidInputError) and refused.value.field == "prompt"


@given(invisible_text, visible_char, st.text(max_size=200), invisible_text)
def test_one_visible_character_is_enough(before: str, visible: str, rest: str, after: str) -> None:
    text = before + visible + rest + after
    if len(text.strip()) > MAX_PROMPT_CHARS:
        return
    prompt = check_prompt(text)
    assert prompt == text.strip()
    assert check_prompt(prompt) == prompt  # what is stored passes again (rerolls, retries)


@given(st.integers(min_value=1, max_value=MAX_PROMPT_CHARS), st.integers(min_value=1))
def test_the_length_cap_counts_the_prompt_without_surrounding_space(length: int, over: int) -> None:
    assert check_prompt("  " + "a" * length + "\n") == "a" * length
    too_long = "b" * (MAX_PROMPT_CHARS + min(over, 20_000))
    with pytest.raises(PromptError) as refused:
        check_prompt(too_long)
    assert refused.value.user_message == (
        f"That prompt is {len(too_long):,} characters long; the limit is 1,000. Please shorten it."
    )


@pytest.mark.parametrize("char", INVISIBLE)
def test_every_known_invisible_character_is_invisible(char: str) -> None:
    assert not is_visible(char), f"U+{ord(char):04X} {unicodedata.name(char, '?')}"


@pytest.mark.parametrize("prompt", ["a", "é", "e\u0301", "🙂", "。", "#", "猫", "٣"])
def test_short_visible_prompts_pass(prompt: str) -> None:
    assert check_prompt(prompt) == prompt
