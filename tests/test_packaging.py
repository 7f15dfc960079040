"""The installed package holds every package of the bot (a wheel without one cannot start)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_of_the_bot_is_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packaged = set(find_packages(ROOT, include=config["packages"]["find"]["include"]))
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("services", "cogs")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= packaged, f"missing from the wheel: {sorted(on_disk - packaged)}"
    assert "cogs.kontext" in packaged
    assert not any(name.startswith("tests") for name in packaged)
    assert config["py-modules"] == ["bot"]
