"""The WaveSpeed account that pays for every image: what is left on it, and whether that is low.

Read from `GET /api/v3/balance` through the one client; in a dry run, the simulator's pretend
account (it deducts what it bills, so a dry run shows the balance going down as it would).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from .budget import usd
from .money import to_micros

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Balance:
    amount: Decimal
    # Below the owner's low-balance mark (`[budget] low_balance_usd`).
    low: bool
    low_mark: Decimal | None
    # A dry run: the built-in simulator's account, not a real one.
    simulated: bool

    def text(self) -> str:
        whose = (
            "The dry run's pretend WaveSpeed account" if self.simulated else "The WaveSpeed account"
        )
        lines = [f"{whose} has **{usd(to_micros(self.amount))}** left."]
        if self.low and self.low_mark is not None:
            lines.append(
                f"⚠️ That is below the low-balance mark of {usd(to_micros(self.low_mark))}: "
                "top it up at wavespeed.ai, or jobs will be refused when it runs out."
            )
        return "\n".join(lines)


class BalanceReader(Protocol):
    """What reads the account (the WaveSpeed client)."""

    simulated: bool

    async def balance(self) -> Decimal: ...


class Account:
    def __init__(self, client: BalanceReader, low_mark: Decimal | None) -> None:
        self._client = client
        # Below this the balance is low; None: never.
        self.low_mark = low_mark

    async def balance(self) -> Balance:
        amount = await self._client.balance()
        low = self.low_mark is not None and amount < self.low_mark
        return Balance(amount, low, self.low_mark, self._client.simulated)
