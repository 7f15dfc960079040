"""Settings: TOML file, environment overrides, one clear line on a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.rules import DefaultRules
from services.settings import ConfigError, load_settings
from services.wavespeed.retry import RetryPolicy, parse_retry_after

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(
            ("DISCORD_", "WAVESPEED_", "SIMULATOR_", "LOGGING_", "KONTEXT_", "BUDGET_", "DEFAULTS_")
        ):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_the_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(EXAMPLE)
    assert settings.discord.api_base_url == "https://discord.com/api/v10"
    assert settings.wavespeed.base64_output is False
    # [defaults] shows the built-in defaults.
    assert settings.defaults == DefaultRules()


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[discord]\ntoken = "from-file"\n[wavespeed]\nbase_url = "http://a"\n')
    monkeypatch.setenv("DISCORD_TOKEN", "from-env")
    monkeypatch.setenv("WAVESPEED_API_KEY", "key-from-env")

    settings = load_settings(path)

    assert settings.discord.token.get_secret_value() == "from-env"
    assert settings.wavespeed.api_key is not None
    assert settings.wavespeed.api_key.get_secret_value() == "key-from-env"
    assert settings.wavespeed.base_url == "http://a"
    assert "key-from-env" not in repr(settings)


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[discord]\ntoken = "t"\ndev_guild_id = 42\n')
    monkeypatch.setenv("KONTEXT_CONFIG", str(path))
    assert load_settings().discord.dev_guild_id == 42


def test_missing_token_names_the_key_and_both_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        "config error: [discord] token is missing: set it in config.toml or the environment "
        "variable DISCORD_TOKEN"
    )


def test_bad_value_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[discord]\ntoken = "t"\n[wavespeed]\npoll_interval_s = 0\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message.startswith(f"config error: [wavespeed] poll_interval_s from {path}:")
    assert "\n" not in message


def test_bad_value_in_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[discord]\ntoken = "t"\n')
    monkeypatch.setenv("WAVESPEED_UPLOAD_FLOW", "carrier-pigeon")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(
        "config error: [wavespeed] upload_flow from the environment variable WAVESPEED_UPLOAD_FLOW"
    )
    assert "carrier-pigeon" not in str(caught.value)


def test_unknown_key_and_broken_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[wavespeed\] colour .* is not a known setting"):
        load_settings(write(tmp_path, '[discord]\ntoken = "t"\n[wavespeed]\ncolour = 1\n'))
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(write(tmp_path, "[discord\n"))


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_retry_after_both_forms() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:05 GMT", now=now) == 5.0
    assert parse_retry_after("soon") is None


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=4, base_s=0.5, max_s=8.0)
    delays = [policy.delay(attempt) for attempt in range(6)]
    assert 0.25 <= delays[0] <= 0.5
    assert 4.0 <= delays[5] <= 8.0
    assert policy.delay(0, retry_after=3.0) == 3.0
    assert policy.should_retry(2) and not policy.should_retry(3)
    assert not policy.should_retry(0, retry_after=3600)


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://bot.example.com/hooks/wavespeed", True),
        ("http://127.0.0.1:8585/hooks/wavespeed", True),
        ("http://bot.example.com/hooks/wavespeed", False),  # WaveSpeed would post in the clear
        ("bot.example.com/hooks", False),
    ],
)
def test_a_webhook_url_must_be_one_wavespeed_can_reach_safely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, accepted: bool
) -> None:
    path = write(tmp_path, f'[discord]\ntoken = "t"\n[wavespeed]\nwebhook_url = "{url}"\n')
    if accepted:
        assert load_settings(path).wavespeed.webhook_url == url
    else:
        with pytest.raises(ConfigError, match=r"\[wavespeed\] webhook_url from .*https://"):
            load_settings(path)


def test_other_programs_variables_are_not_ours_to_judge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host runs other programs with DISCORD_* and WAVESPEED_* variables of their own.
    monkeypatch.setenv("DISCORD_CLIENT_ID", "1")
    monkeypatch.setenv("WAVESPEED_CLI_HOME", "/opt/wavespeed")
    monkeypatch.setenv("JOBS_SERVICE_NAME", "cron")
    monkeypatch.setenv("DISCORD_TOKEN", "t")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.discord.token.get_secret_value() == "t"
    # The same name in the config file is a typo there, and said so.
    path = write(tmp_path, '[discord]\ntoken = "t"\nclient_id = 1\n')
    with pytest.raises(ConfigError, match=r"\[discord\] client_id in .* is not a known setting"):
        load_settings(path)


BAD_SETTINGS = [
    (
        {"WAVESPEED_BASE_URL": "api.wavespeed.ai"},
        "config error: [wavespeed] base_url from the environment variable WAVESPEED_BASE_URL: "
        "must be a full URL with a scheme and a host, like https://api.wavespeed.ai",
    ),
    (
        {"DISCORD_GATEWAY_URL": "https://gateway.discord.gg"},
        "config error: [discord] gateway_url from the environment variable DISCORD_GATEWAY_URL: "
        "must be a full URL with a scheme and a host, like wss://gateway.discord.gg",
    ),
    (
        {"WAVESPEED_API_KEY": ""},
        "config error: [wavespeed] api_key from the environment variable WAVESPEED_API_KEY: it "
        "is empty; leave it out entirely for a dry run with the built-in simulator, or set the "
        "key from wavespeed.ai (Dashboard -> API Keys)",
    ),
    (
        {"DISCORD_TOKEN": "  "},
        "config error: [discord] token from the environment variable DISCORD_TOKEN: it is "
        "empty; set the bot token from the developer portal (your application -> Bot)",
    ),
    (
        {"BUDGET_MEMBER_DAILY_USD": "-1"},
        "config error: [budget] member_daily_usd from the environment variable "
        "BUDGET_MEMBER_DAILY_USD: Input should be greater than or equal to 0",
    ),
    (
        {"DEFAULTS_NSFW": "sometimes"},
        "config error: [defaults] nsfw from the environment variable DEFAULTS_NSFW: Input should "
        "be 'withhold', 'age-restricted' or 'everywhere'",
    ),
]


@pytest.mark.parametrize(("env", "line"), BAD_SETTINGS)
def test_bot_py_stops_on_a_bad_setting_in_one_line(env: dict[str, str], line: str) -> None:
    import os
    import subprocess
    import sys

    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DISCORD_", "WAVESPEED_", "BUDGET_", "DEFAULTS_", "KONTEXT_"))
    }
    result = subprocess.run(
        [sys.executable, str(EXAMPLE.parent / "bot.py")],
        env={**clean, "DISCORD_TOKEN": "t", **env},
        cwd=EXAMPLE.parent / "tests",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [line]
