"""The table of button actions: custom ids old messages carry, and where each button shows."""

from __future__ import annotations

import pytest

from cogs._host import services_of
from cogs.kontext._actions import (
    ACTIONS,
    JobButton,
    Who,
    cancel_view,
    result_view,
    retry_view,
)


def custom_ids(view: object) -> list[str]:
    return [item.custom_id for item in view.children]  # type: ignore[attr-defined]


def test_custom_ids_keep_their_format_and_order() -> None:
    assert custom_ids(result_view(7)) == [
        f"kontext:{name}:7" for name in ("edit", "reroll", "undo", "details", "delete")
    ]
    assert custom_ids(cancel_view(7)) == ["kontext:cancel:7"]
    assert custom_ids(retry_view(7)) == ["kontext:retry:7"]


@pytest.mark.parametrize("name", list(ACTIONS))
def test_every_action_is_matched_back_from_its_custom_id(name: str) -> None:
    match = JobButton.__discord_ui_compiled_template__.fullmatch(f"kontext:{name}:42")
    assert match is not None and match["action"] == name and match["job"] == "42"


def test_who_may_use_each_button() -> None:
    assert {name: action.who for name, action in ACTIONS.items()} == {
        "edit": Who.ANYONE,
        "reroll": Who.REQUESTER_OR_MODERATOR,
        "undo": Who.REQUESTER_OR_MODERATOR,
        "details": Who.ANYONE,
        "delete": Who.REQUESTER_OR_MODERATOR,
        "cancel": Who.REQUESTER,
        "retry": Who.REQUESTER,
    }


def test_a_bot_without_services_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="object offers no services"):
        services_of(object())
