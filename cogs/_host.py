"""What an extension may expect of the bot that loads it: its services, typed."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from services.bundle import Services


@runtime_checkable
class ServiceHost(Protocol):
    """A bot that offers its services (`KontextBot` builds them in `setup_hook`)."""

    @property
    def services(self) -> Services: ...


def services_of(bot: object) -> Services:
    """The services of the bot an extension is loaded into (or of an interaction's client)."""
    if not isinstance(bot, ServiceHost):
        raise TypeError(f"{type(bot).__name__} offers no services to its extensions")
    return bot.services
