"""What the bot builds once at start-up and hands to its features, typed."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .account import Account
from .community import Community
from .edits import EditService
from .intake import Intake
from .jobs import JobService


class Role(enum.StrEnum):
    """What one process of the bot does.

    `all`: everything, alone (the default). `gateway`: receives interactions and messages
    over its shards, validates, prices, stores and answers; it runs no jobs. `worker`: no
    gateway connection; it drives the stored jobs and posts their results over REST. A
    gateway and a worker share their jobs through one PostgreSQL store.
    """

    ALL = "all"
    GATEWAY = "gateway"
    WORKER = "worker"

    @property
    def runs_jobs(self) -> bool:
        return self is not Role.GATEWAY

    @property
    def has_gateway(self) -> bool:
        return self is not Role.WORKER


@dataclass(frozen=True, slots=True)
class Services:
    """The services a feature may use; built in the bot's `setup_hook`, closed by the bot."""

    edits: EditService
    jobs: JobService
    # The WaveSpeed account that pays: its balance.
    account: Account
    # Each server's rules (who may spend what, where, on which models) and its members' spending.
    community: Community
    # The image pool: attachments are read, and large images reworked, under its admission.
    intake: Intake
    # True when images come from the built-in WaveSpeed simulator (a dry run, nothing billed).
    simulated: bool
    # What token expiry is measured on (tests move it ahead).
    clock: Callable[[], float]
    # What this process does among a fleet's (the default: everything, alone).
    role: Role = Role.ALL
