"""Money as the ledger keeps it: integer millionths of a US dollar, never floats.

Every catalog price is exact in them (Kontext Dev is $0.025), and sums of them are exact.
"""

from __future__ import annotations

from decimal import Decimal

MICROS_PER_USD = 1_000_000


def to_micros(usd: Decimal | str) -> int:
    """Dollars to integer micro-dollars; refuses an amount finer than that (never rounds)."""
    micros = Decimal(usd) * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueError(f"{usd} is finer than a millionth of a dollar")
    return int(micros)


def from_micros(micros: int) -> Decimal:
    return Decimal(micros) / MICROS_PER_USD
