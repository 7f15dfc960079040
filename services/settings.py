"""Settings: a TOML file, overridden by environment variables, built once at start-up.

`load_settings()` reads `config.toml` (path from `--config`, else `KONTEXT_CONFIG`, else
`./config.toml`); an environment variable named SECTION_KEY (`DISCORD_TOKEN`,
`WAVESPEED_API_KEY`, `WAVESPEED_BASE_URL`, ...) overrides the file. A bad or missing value raises
`ConfigError` whose message is one line naming the key and where it was read. Secrets are
`SecretStr`, so they print as `**********`.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .rules import BudgetSettings, DefaultRules

CONFIG_ENV = "KONTEXT_CONFIG"
DEFAULT_CONFIG = Path("config.toml")
DISCORD_API = "https://discord.com/api/v10"
DISCORD_GATEWAY = "wss://gateway.discord.gg"


class ConfigError(Exception):
    """A setting is missing or invalid. Its message is one line, fit for a terminal."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _url(value: str, schemes: tuple[str, ...], example: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"must be a full URL with a scheme and a host, like {example}")
    return value


def _not_empty(value: SecretStr | None, advice: str) -> SecretStr | None:
    # An empty value is a mistake (an unset variable in a .env file, a stray `=`), never a
    # choice: it must not quietly mean something else.
    if value is not None and not value.get_secret_value().strip():
        raise ValueError(f"it is empty; {advice}")
    return value


class DiscordSettings(_Section):
    token: SecretStr
    # Another Discord endpoint: a REST or gateway proxy in front of a large bot, or the
    # local Discord the end-to-end tests run.
    api_base_url: str = DISCORD_API
    gateway_url: str = DISCORD_GATEWAY
    # Privileged; only needed for replies to other members' images and for messages that do
    # not mention the bot (in edit threads, or replies to results with the ping off).
    message_content: bool = False
    # Guild to sync commands to with `--sync` during development (instant, unlike global).
    dev_guild_id: int | None = None

    @field_validator("token")
    @classmethod
    def _token_given(cls, value: SecretStr) -> SecretStr:
        _not_empty(value, "set the bot token from the developer portal (your application -> Bot)")
        return value

    @field_validator("api_base_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return _url(value, ("https", "http"), DISCORD_API)

    @field_validator("gateway_url")
    @classmethod
    def _gateway_url(cls, value: str) -> str:
        return _url(value, ("wss", "ws"), DISCORD_GATEWAY)


class WaveSpeedSettings(_Section):
    # No key: the bot runs against the built-in simulator (a dry run, no credits spent).
    api_key: SecretStr | None = None
    base_url: str = "https://api.wavespeed.ai"

    @field_validator("api_key")
    @classmethod
    def _key_given(cls, value: SecretStr | None) -> SecretStr | None:
        return _not_empty(
            value,
            "leave it out entirely for a dry run with the built-in simulator, or set the key "
            "from wavespeed.ai (Dashboard -> API Keys)",
        )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _url(value, ("https", "http"), "https://api.wavespeed.ai")

    connect_timeout_s: float = Field(default=10.0, gt=0)
    # A submit answers once WaveSpeed has accepted the job; a sync-mode submit once the image is
    # made (or WaveSpeed's own sync time-out, after which the job is polled).
    submit_timeout_s: float = Field(default=30.0, gt=0)
    sync_timeout_s: float = Field(default=90.0, gt=0)
    result_timeout_s: float = Field(default=30.0, gt=0)
    upload_timeout_s: float = Field(default=120.0, gt=0)
    download_timeout_s: float = Field(default=60.0, gt=0)
    max_connections: int = Field(default=100, ge=1)

    # Dev models can return images inline as base64, which saves one download per image.
    base64_output: bool = False

    # Images up to this size travel inside the request as data URIs; larger ones are uploaded.
    inline_image_max_bytes: int = Field(default=1_048_576, ge=0)
    upload_flow: Literal["binary", "ticket"] = "binary"

    # Polls of a job's result come this often, from shortly before the job is expected to end
    # (learned from the model's recent jobs); only a 429 makes them slower.
    poll_interval_s: float = Field(default=0.75, gt=0)
    # After this long a job is reported as timed out (it may still finish at WaveSpeed), unless
    # the caller gives its own deadline; transient failures are retried until then.
    max_wait_s: float = Field(default=900.0, gt=0)

    # Webhook mode: WaveSpeed calls this public URL when a job ends, and the bot listens on
    # webhook_host:webhook_port at the URL's path (put it behind your reverse proxy). A slow
    # poll every webhook_safety_poll_s stays as a safety net for lost deliveries. Unset: sync
    # mode where the model has it, else polling.
    webhook_url: str | None = None
    # The signing secret ("whsec_..."); unset, it is read from WaveSpeed at start-up.
    webhook_secret: SecretStr | None = None
    webhook_host: str = "0.0.0.0"
    webhook_port: int = Field(default=8585, ge=0, le=65535)
    webhook_safety_poll_s: float = Field(default=30.0, gt=0)

    # Below this balance (US dollars), each server's log channel is told once a day to top it
    # up, and /kontext-admin balance warns; unset: never. The balance is asked after a
    # delivered job, at most every balance_check_s seconds.
    low_balance_usd: Decimal | None = Field(default=Decimal("5.00"), ge=0, decimal_places=6)
    balance_check_s: float = Field(default=300.0, ge=0)

    @field_validator("webhook_url")
    @classmethod
    def _public_https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and loopback)
        ):
            raise ValueError("must be an https:// URL WaveSpeed can reach (http only on loopback)")
        return value

    # One retry policy for every request that may be repeated (the submit POST only after an
    # answer proving it was refused). Waiting for a job is bounded by its deadline instead.
    retry_attempts: int = Field(default=4, ge=1)
    retry_base_s: float = Field(default=0.5, ge=0)
    retry_max_s: float = Field(default=8.0, gt=0)


class SimulatorSettings(_Section):
    """The built-in WaveSpeed simulator, used when no WaveSpeed key is configured."""

    # Seconds each simulated image takes, so a dry run feels like the real thing.
    latency_s: float = Field(default=3.0, ge=0)
    # How long a sync-mode submit waits before answering "still processing" (5004).
    sync_wait_s: float = Field(default=30.0, ge=0)
    # US dollars the simulated account starts each run with; every simulated image takes its
    # list price off it, and a request it cannot cover is refused as WaveSpeed refuses one.
    balance_usd: Decimal = Field(default=Decimal("100.00"), ge=0, allow_inf_nan=False)
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)


class StorageSettings(_Section):
    # SQLite file holding jobs, edit chains and their images (created if missing), or a
    # postgresql:// URL for a fleet of processes sharing one store (a string: a path would
    # fold the URL's "//").
    database: str = "kontext.sqlite3"
    # Stored image bytes are dropped this many days after the last job that used them (jobs,
    # chains and the ledger are kept); 0 keeps them for good.
    retention_days: int = Field(default=30, ge=0)


class JobSettings(_Section):
    # Jobs running at WaveSpeed at once; WaveSpeed's entry tier runs 2 (more just wait there).
    max_concurrent: int = Field(default=2, ge=1)
    # Jobs one member may have running at once; the rest wait their fair turn.
    per_member: int = Field(default=1, ge=1)
    # How often a generating job's clock ("Generating… 12 s") moves on.
    status_interval_s: float = Field(default=2.0, gt=0)
    # Least time between two edits of one job's status message within a stage (the generating
    # clock, a rough queue place); a new stage, an exact queue place, the first status and the
    # ending ("Done", a failure) are never held back.
    status_edit_gap_s: float = Field(default=2.0, ge=0)
    # Requests per second to Discord for results and statuses together, under Discord's 50 per
    # bot; results go first, then jobs' endings (two thirds at most), then status edits (a third
    # at most), so a result never waits behind statuses.
    discord_requests_per_s: int = Field(default=30, ge=1, le=50)
    # Submits being built and sent at once, each holding its images encoded for WaveSpeed until
    # the answer; a sync-mode submit, which lasts until its image is made, is counted apart
    # (at most half the WaveSpeed connections).
    submits_at_once: int = Field(default=16, ge=1)
    # Waiting jobs whose queue position is kept up to date in their status line.
    announce_limit: int = Field(default=50, ge=0)
    # The first exact_positions waiting jobs read their exact place; the rest "about K ahead",
    # K rounded to position_step, so one job starting changes few of their lines.
    exact_positions: int = Field(default=10, ge=1)
    position_step: int = Field(default=10, ge=1)
    # A submitted job still unfinished this long after its submit ends as stuck, freeing its slot.
    job_deadline_s: float = Field(default=600.0, gt=0)
    # A job running longer than this stops holding a place in the queue (it may be stuck), so
    # others start meanwhile; it keeps waiting until job_deadline_s.
    slow_after_s: float = Field(default=120.0, gt=0)
    # A submit whose answer was lost is looked for in WaveSpeed's list of predictions every
    # reconcile_interval_s; not found reconcile_window_s after it was sent, it made nothing.
    reconcile_window_s: float = Field(default=120.0, ge=0)
    reconcile_interval_s: float = Field(default=10.0, gt=0)
    # Posting a result is retried (429, 5xx, missing permissions) for this long.
    delivery_deadline_s: float = Field(default=600.0, gt=0)
    # Submits refused outright (nothing made) go back in the queue, this many times at most.
    max_refusals: int = Field(default=5, ge=1)
    # After this many refused submits in a row the queue is held, and WaveSpeed is asked a free
    # question every breaker_probe_s until it answers.
    breaker_threshold: int = Field(default=3, ge=1)
    breaker_probe_s: float = Field(default=5.0, gt=0)
    # A worker of a fleet (a PostgreSQL store) renews its jobs' leases every third of this;
    # one that dies, its jobs are taken on by another worker this long after its last renewal.
    lease_s: float = Field(default=30.0, gt=0)
    # On SIGTERM, how long submit requests already on their way may take to finish.
    shutdown_grace_s: float = Field(default=8.0, ge=0)


class LimitSettings(_Section):
    """How much member input is worked on at once; the rest waits its turn (sized for 2 cores)."""

    # Commands whose images are held at once, from their download until they are prepared
    # and stored; the others wait before downloading anything (each image can be 20 MiB).
    intake_commands: int = Field(default=8, ge=1)
    # Images decoded and re-encoded with Pillow at once (inputs and results together).
    image_preparations: int = Field(default=2, ge=1)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "text": one readable line per record; "json": one JSON object per line (time, level,
    # logger, message, job_id and prediction_id when known, exception) for a log collector.
    format: Literal["text", "json"] = "text"


class MonitoringSettings(_Section):
    """An HTTP port for operations: GET /healthz (JSON, 200 or 503) and GET /metrics
    (Prometheus). Off unless `port` is set; 0 picks a free port (logged at start-up)."""

    port: int | None = Field(default=None, ge=0, le=65535)
    # Loopback by default: the endpoints answer without a password.
    host: str = "127.0.0.1"
    # /healthz asks WaveSpeed a free question (the account balance) at most this often and
    # reuses the answer in between, so frequent probes never hammer it.
    wavespeed_check_s: float = Field(default=30.0, gt=0)
    # How long each check of /healthz may take before it counts as failing.
    check_timeout_s: float = Field(default=5.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_nested_delimiter="_",
        env_nested_max_split=1,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
    )

    discord: DiscordSettings
    wavespeed: WaveSpeedSettings = WaveSpeedSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    storage: StorageSettings = StorageSettings()
    jobs: JobSettings = JobSettings()
    limits: LimitSettings = LimitSettings()
    budget: BudgetSettings = BudgetSettings()
    # What a server has until its admins change it with /kontext-admin.
    defaults: DefaultRules = DefaultRules()
    logging: LoggingSettings = LoggingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init values; the environment wins over it.
        return (_KnownEnvironment(settings_cls), init_settings)


class _KnownEnvironment(EnvSettingsSource):
    """The environment variables of settings this bot has. Others are not ours to judge: a host
    runs other programs with DISCORD_* or WAVESPEED_* variables of their own."""

    def __call__(self) -> dict[str, Any]:
        known: dict[str, Any] = {}
        for section, value in super().__call__().items():
            model = _section_model(section)
            if model is None:
                continue
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if k in model.model_fields}
                if not value:
                    continue
            known[section] = value
        return known


def _section_model(section: str) -> type[BaseModel] | None:
    field = Settings.model_fields.get(section)
    model = field.annotation if field else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def config_path(cli_path: str | os.PathLike[str] | None = None) -> tuple[Path, bool]:
    """Where to read settings from, and whether that path was asked for explicitly."""
    if cli_path:
        return Path(cli_path), True
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]), True
    return DEFAULT_CONFIG, False


def load_settings(cli_path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the config file and the environment once; raise ConfigError in one line."""
    path, explicit = config_path(cli_path)
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config error: {path} is not valid TOML: {exc}") from None
    elif explicit:
        raise ConfigError(f"config error: the config file {path} does not exist")
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc.errors()[0], data, path)) from None


def _first_required(section: str) -> str:
    # A whole missing section is reported by the first key it cannot do without.
    model = _section_model(section)
    if model is None:
        return ""
    return next((n for n, f in model.model_fields.items() if f.is_required()), "")


def _one_line(error: Any, data: dict[str, Any], path: Path) -> str:
    loc = [str(part) for part in error["loc"]]
    section = loc[0]
    key = loc[1] if len(loc) > 1 else _first_required(section)
    name = f"[{section}] {key}".strip()
    env_name = f"{section}_{key}".upper() if key else section.upper()
    in_file = isinstance(data.get(section), dict) and key in data[section]
    if error["type"] == "missing":
        return (
            f"config error: {name} is missing: set it in {path} or the environment "
            f"variable {env_name}"
        )
    if error["type"] == "extra_forbidden":
        return f"config error: {name} in {path} is not a known setting"
    if env_name in {k.upper() for k in os.environ}:
        where = f"the environment variable {env_name}"
    elif in_file or section in data:
        where = str(path)
    else:
        where = "the defaults"
    # pydantic's message never contains the value itself, so a secret cannot leak here.
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"config error: {name} from {where}: {message}"
