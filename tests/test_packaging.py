"""How the bot is installed and hosted: the wheel holds every package, the Docker image, Compose
file and systemd unit run it as the README says, and make rebuilds a .venv made by an old Python.
"""

from __future__ import annotations

import asyncio
import configparser
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from services.healthcheck import check_endpoint, check_store
from services.healthcheck import main as health_main
from services.storage import Repository
from tests.local_discord import LocalDiscord, start_bot

pytest_plugins = ("tests.local_discord.fixtures",)

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
            monkeypatch.setenv("MONITORING_PORT", str(server.server_address[1]))
            assert health_main() == 0
        finally:
            server.shutdown()
    # Nothing listening there any more: unhealthy, in one line.
    assert health_main() == 1


async def _open_and_close(database: Path) -> None:
    await (await Repository.open(database)).close()


# -- make: a .venv from the wrong Python is rebuilt ---------------------------------------------


def project_copy(tmp_path: Path, venv_python: str | None) -> Path:
    """The Makefile and its script in a folder of their own, with a .venv whose python is
    `venv_python` (a shell script's body; None: a link to nothing, a Python since removed)."""
    (tmp_path / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copy(ROOT / "scripts" / "python_ok.sh", tmp_path / "scripts")
    (tmp_path / "pyproject.toml").touch()
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    if venv_python is None:
        python.symlink_to(tmp_path / "gone" / "python3.11")
    else:
        python.write_text(f"#!/bin/sh\n{venv_python}\n")
        python.chmod(0o755)
    (tmp_path / ".venv" / ".installed").touch()  # installed, and newer than pyproject.toml
    return tmp_path


def make(folder: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    make_path = shutil.which("make")
    assert make_path is not None
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    # Run as a make of its own, not a sub-make of `make test` (which would announce its folder).
    for inherited in ("PYTHON", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(inherited, None)
    # -n: what make would do, without doing it (no installs, no network); the .venv check
    # runs all the same, as make reads the Makefile.
    return subprocess.run(
        [make_path, "-n", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("venv_python", "said"),
    [
        ('echo "Python 3.10.12"', "made by Python 3.10.12"),
        (None, "made by a Python that no longer runs"),
        ("exit 1", "made by a Python that no longer runs"),
    ],
)
def test_make_rebuilds_a_venv_of_an_old_or_broken_python(
    tmp_path: Path, venv_python: str | None, said: str
) -> None:
    folder = project_copy(tmp_path, venv_python)
    done = make(folder, "lint", f"PYTHON={sys.executable}")
    assert done.returncode == 0, done.stderr
    assert f"{said}; Kontext Bot needs 3.11 or newer: rebuilding it" in done.stderr
    assert not (folder / ".venv").exists()
    assert f"{sys.executable} -m venv .venv" in done.stdout.splitlines()
    assert ".venv/bin/python -m pip install --quiet -e '.[dev]'" in done.stdout


def test_make_keeps_a_good_venv(tmp_path: Path) -> None:
    folder = project_copy(tmp_path, f'exec {sys.executable} "$@"')
    done = make(folder, "lint")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and (folder / ".venv" / ".installed").exists()
    assert done.stdout.splitlines()[0] == ".venv/bin/python -m ruff check ."


def test_make_without_python_3_11_says_what_is_needed_in_one_line(tmp_path: Path) -> None:
    folder = project_copy(tmp_path / "project", 'echo "Python 3.10.12"')
    # A machine whose only Python is 3.10 (and the few tools the check uses).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("rm", "head", "sh"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "python3").write_text('#!/bin/sh\necho "Python 3.10.12"\n')
    (bin_dir / "python3").chmod(0o755)
    done = make(folder, "run", path=str(bin_dir))
    assert done.returncode != 0
    assert done.stderr.splitlines()[-1].endswith(
        "*** Kontext Bot needs Python 3.11 or newer; install python3.11 and run make again.  Stop."
    )
    # PYTHON= naming an old one is refused the same way.
    done = make(folder, "run", "PYTHON=python3", path=str(bin_dir))
    assert "Kontext Bot needs Python 3.11 or newer" in done.stderr.splitlines()[-1]


def test_ci_runs_lint_through_make_test() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: lint\b", makefile, re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


async def test_the_health_check_asks_the_running_bots_healthz(local_discord: LocalDiscord) -> None:
    async with start_bot(local_discord, settings_overrides={"monitoring": {"port": 0}}) as (_, bot):
        assert bot.monitoring_port is not None
        assert await asyncio.to_thread(check_endpoint, "0.0.0.0", bot.monitoring_port) is None


def test_the_local_fleet_covers_every_shard_once_with_workers_on_postgres() -> None:
    import bot

    text = (ROOT / "docker-compose.fleet.yml").read_text()
    commands = [json.loads(found) for found in re.findall(r"command: (\[.*\])", text)]
    args = [bot.parse_args(command[2:]) for command in commands]
    gateways = [a for a in args if a.role == "gateway"]
    assert len(gateways) == 2 and sum(a.role == "worker" for a in args) == 2
    shards = sorted(shard for a in gateways for shard in bot.parse_shards(a.shards, a.shard_count))
    assert shards == list(range(gateways[0].shard_count))
    # Exactly one gateway publishes the commands.
    assert sum(a.sync is not None for a in gateways) == 1
    assert "STORAGE_DATABASE: postgresql://" in text
    assert text.count("restart: unless-stopped") == 2  # the bots' anchor and PostgreSQL
    assert "condition: service_healthy" in text
