"""A local Discord for end-to-end tests: REST API, gateway and CDN on loopback.

The real, unmodified discord.py client (and so the real KontextBot) connects to it; a driver
acts as a user; every request body is checked against Discord's OpenAPI spec and Discord's
rules, and whatever the bot gets wrong fails the test. See `fixtures.py` for the pytest
fixtures, `driver.py` for what a test can do and `process.py` to run bot.py as a process of
its own against it.
"""

from .command_access import CommandNotAllowedError, CommandOverride, OverrideType
from .driver import DiscordDriver, Upload
from .harness import PROBE_EXTENSION, RunningBot, bot_settings, start_bot
from .interactions import InteractionHandle
from .models import (
    Attachment,
    CallbackType,
    Channel,
    InteractionType,
    Message,
    MessageFlag,
    Perm,
    PremiumType,
    User,
    count_custom_ids,
)
from .process import BotProcess, bot_environment, bot_process
from .rules import Violation, ViolationLog
from .server import LocalDiscord, LocalDiscordConfig

__all__ = [
    "PROBE_EXTENSION",
    "Attachment",
    "BotProcess",
    "CallbackType",
    "Channel",
    "CommandNotAllowedError",
    "CommandOverride",
    "DiscordDriver",
    "InteractionHandle",
    "InteractionType",
    "LocalDiscord",
    "LocalDiscordConfig",
    "Message",
    "MessageFlag",
    "OverrideType",
    "Perm",
    "PremiumType",
    "RunningBot",
    "Upload",
    "User",
    "Violation",
    "ViolationLog",
    "bot_environment",
    "bot_process",
    "bot_settings",
    "count_custom_ids",
    "start_bot",
]
