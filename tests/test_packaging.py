"""How the bot is installed and hosted: the wheel holds every package, the Docker image, Compose
file and systemd unit run it as the README says, and make rebuilds a .venv made by an old Python.
"""

from __future__ import annotations

import asyncio
import configparser
import http.server
import json
import re
import threading
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from services.healthcheck import check_store
from services.healthcheck import main as health_main
from services.storage import Repository

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


# -- the container, Compose and systemd ---------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_runs_the_bot_as_a_user_with_its_data_on_a_volume() -> None:
    instructions = dockerfile()
    args = {value.split("=")[0]: value.split("=", 1)[1] for i, value in instructions if i == "ARG"}
    base = next(value for i, value in instructions if i == "FROM")
    assert base == "${PYTHON_IMAGE}"
    image, _, tag = args["PYTHON_IMAGE"].partition(":")
    major, minor = (int(part) for part in tag.split("-")[0].split(".")[:2])
    assert image == "python" and tag.endswith("-slim") and (major, minor) >= (3, 11)

    users = [value for i, value in instructions if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [i for i, _ in instructions].index("USER") > max(
        n for n, (i, _) in enumerate(instructions) if i == "RUN"
    ), "everything after the last RUN runs as the bot's user"
    assert any(i == "VOLUME" and "/data" in value for i, value in instructions)
    env = " ".join(value for i, value in instructions if i == "ENV")
    assert "STORAGE_DATABASE=/data/" in env
    assert any(i == "WORKDIR" and value == "/data" for i, value in instructions[-8:])

    (healthcheck,) = [value for i, value in instructions if i == "HEALTHCHECK"]
    assert 'CMD ["python", "-m", "services.healthcheck"]' in healthcheck
    (command,) = [value for i, value in instructions if i == "CMD"]
    assert json.loads(command) == ["python", "/app/bot.py"]  # the README's `python bot.py`
    # What the image copies is what the wheel holds, and the ignore file lets it through.
    copied = {value.split()[0] for i, value in instructions if i == "COPY"}
    assert {"bot.py", "services", "cogs", "pyproject.toml"} <= copied
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {"*", "!bot.py", "!services/", "!cogs/", "!pyproject.toml"} <= set(ignored)


def test_compose_restarts_the_bot_and_keeps_secrets_and_data_out_of_the_image() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    settings = {
        line.strip().split(":", 1)[0]: line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if ":" in line and not line.strip().startswith(("#", "-"))
    }
    assert settings["restart"] == "unless-stopped"
    assert settings["env_file"] == "kontext.env"
    assert settings["STORAGE_DATABASE"] == "/data/kontext.sqlite3"
    assert "- kontext-data:/data" in text
    assert re.search(r"^volumes:\n  kontext-data:", text, re.MULTILINE)
    assert "kontext.env" in (ROOT / ".gitignore").read_text().splitlines()
    example = (ROOT / "deploy" / "kontext.env.example").read_text()
    assert "DISCORD_TOKEN=" in example and "WAVESPEED_API_KEY=" in example


def test_the_systemd_unit_runs_the_readme_command_as_a_user_with_hardening() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "kontext-bot.service")
    service = unit["Service"]
    assert service["User"] not in ("", "root")
    assert service["ExecStart"].endswith("/.venv/bin/python bot.py")
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].endswith("kontext.env")
    assert "DISCORD_TOKEN" not in service.get("Environment", "")
    for setting in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert service[setting] == "yes"
    assert service["ProtectSystem"] == "strict" and service["StateDirectory"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_health_check_reads_the_store_or_the_health_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "kontext.sqlite3"
    assert check_store(database) == f"unhealthy: no job store at {database}"
    asyncio.run(_open_and_close(database))
    assert check_store(database) is None
    monkeypatch.setenv("DISCORD_TOKEN", "t")
    monkeypatch.setenv("STORAGE_DATABASE", str(database))
    monkeypatch.chdir(tmp_path)
    assert health_main() == 0

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            monkeypatch.setenv("HEALTH_PORT", str(server.server_address[1]))
            assert health_main() == 0
        finally:
            server.shutdown()
    # Nothing listening there any more: unhealthy, in one line.
    assert health_main() == 1


async def _open_and_close(database: Path) -> None:
    await (await Repository.open(database)).close()
