"""Which fault, if any, hits a request: a header, then injected one-shots, then random draws."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping

from .config import FAULT_ROUTES, Fault

FAULT_HEADER = "X-Simulator-Fault"


class UnknownFaultError(ValueError):
    """The X-Simulator-Fault header names no fault."""


class FaultPlan:
    """Decides the fault for each request on the fault-capable routes."""

    def __init__(
        self,
        rates: Mapping[Fault, float],
        seed: int,
        route_rates: Mapping[tuple[Fault, str], float] | None = None,
    ) -> None:
        # The rates that apply on each route: the unscoped ones where they mean something, then
        # route-scoped ones replacing (in place, so the draw order stays put) or adding to them.
        self._rates: dict[str, dict[Fault, float]] = {
            route: {fault: rate for fault, rate in rates.items() if route in fault.routes}
            for route in FAULT_ROUTES
        }
        for (fault, route), rate in (route_rates or {}).items():
            self._rates[route][Fault(fault)] = rate
        # One generator for fault draws only, so e.g. seed draws cannot shift the fault sequence.
        self._rng = random.Random(seed)
        self._queued: dict[str, deque[Fault]] = {route: deque() for route in FAULT_ROUTES}

    def inject(self, fault: Fault, route: str, times: int) -> None:
        """Queue `fault` for the next `times` requests on `route`."""
        fault = Fault(fault)
        if route not in FAULT_ROUTES:
            raise ValueError(f"route must be one of {sorted(FAULT_ROUTES)}, got {route!r}")
        if route not in fault.routes:
            raise ValueError(f"{fault} only applies to {sorted(fault.routes)}, not {route!r}")
        if times < 1:
            raise ValueError("times must be at least 1")
        self._queued[route].extend([fault] * times)

    def pending(self, route: str) -> int:
        """How many injected faults still wait for `route`."""
        return len(self._queued[route])

    def choose(self, route: str, header: str | None) -> Fault | None:
        """The fault for one request on `route`.

        A header naming a fault that does not apply to the route (a task fault on a result GET)
        is ignored, as a real server would ignore an unknown header. Raises UnknownFaultError for
        a header that names no fault at all, so a typo does not silently test nothing.
        """
        if header:
            try:
                fault = Fault(header.strip().lower())
            except ValueError:
                raise UnknownFaultError(header) from None
            return fault if route in fault.routes else None
        if self._queued[route]:
            return self._queued[route].popleft()
        # One draw per applicable fault on every request, hit or not, so the sequence of faults
        # a seed gives does not depend on which faults happened to hit earlier.
        hits = [fault for fault, rate in self._rates[route].items() if self._rng.random() < rate]
        return hits[0] if hits else None
