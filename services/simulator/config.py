"""The simulator's settings and the faults it can inject."""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

# Route names: what `inject` and route-scoped fault rates target, what `request_counts` counts.
# "history" is the prediction list (POST /api/v3/predictions): an API read like the result.
SUBMIT, RESULT, HISTORY = "submit", "result", "history"
UPLOAD, DOWNLOAD, OTHER = "upload", "download", "other"
FAULT_ROUTES: frozenset[str] = frozenset({SUBMIT, RESULT, HISTORY, UPLOAD, DOWNLOAD})


class Fault(enum.StrEnum):
    """A failure the simulator can produce; the value is what `X-Simulator-Fault` names."""

    SERVER_ERROR = "server_error"  # HTTP 500, code 5000, nothing done
    UNAVAILABLE = "unavailable"  # HTTP 503, code 5003, nothing done
    RATE_LIMIT = "rate_limit"  # HTTP 429 with Retry-After: 1, nothing done
    # HTTP 502 from a proxy in front of the API (an HTML page, no envelope), nothing done: the
    # client cannot tell whether the job was made, so it has to look it up.
    BAD_GATEWAY = "bad_gateway"
    MALFORMED = "malformed"  # the request is handled, its answer arrives as truncated JSON
    DROP = "drop"  # the request is handled, then the connection closes without an answer
    TASK_FAILED = "task_failed"  # the task ends failed, code 1403
    STUCK = "stuck"  # the task stays "processing" forever
    MODERATION = "moderation"  # the task ends failed, code 1200
    SYNC_TIMEOUT = "sync_timeout"  # a sync submit answers the 5004 shape at once
    WEBHOOK_DUPLICATE = "webhook_duplicate"  # the webhook is delivered twice, same webhook-id
    # A download answers 200 with only part of the file and a Content-Length to match: the
    # transfer itself succeeds, so only decoding the image shows that it is cut short.
    TRUNCATED = "truncated"

    @property
    def routes(self) -> frozenset[str]:
        """The routes this fault means something on."""
        if self in HTTP_FAULTS:
            return FAULT_ROUTES
        if self is Fault.TRUNCATED:
            return frozenset({DOWNLOAD})
        return frozenset({SUBMIT})


# Faults answered instead of handling the request (a gateway failing in front of the API).
GATEWAY_FAULTS = frozenset(
    {Fault.SERVER_ERROR, Fault.UNAVAILABLE, Fault.RATE_LIMIT, Fault.BAD_GATEWAY}
)
# Faults that spoil the answer after the request was handled: the work is done, the answer lost.
ANSWER_FAULTS = frozenset({Fault.MALFORMED, Fault.DROP})
HTTP_FAULTS = GATEWAY_FAULTS | ANSWER_FAULTS


def _new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated WaveSpeed account behaves. Defaults mirror the Bronze tier."""

    # None: any non-empty Bearer key is accepted.
    api_keys: frozenset[str] | None = None
    # Simulated inference time per job (0 = as fast as rendering).
    latency_s: float = 3.0
    # A sync-mode submit waits this long, then answers "processing" with data.code 5004.
    sync_wait_s: float = 30.0
    # Bronze tier: two tasks run per key, later ones wait in "created" (FIFO).
    max_concurrent_per_key: int = 2
    # Beyond this many waiting tasks per key, submits answer 429.
    max_waiting_per_key: int = 10_000
    # Output images per key in a sliding 60 s window, counted at submit; None: no limit.
    images_per_minute_per_key: int | None = None
    # Predictions, their outputs and uploads answer 404 after this.
    retention_s: float = 7 * 24 * 3600
    # The oldest predictions (and uploads) are evicted beyond this many, so memory stays bounded.
    max_stored_predictions: int = 20_000
    # Submit bodies are kept as sent (the history lists them), data URIs included; beyond about
    # this many bytes the oldest ones have their data URIs shortened, so memory stays bounded.
    max_stored_input_bytes: int = 256 * 1024 * 1024
    # Rendered outputs are scaled down (aspect kept) to this long side.
    max_output_side: int = 1024
    # US dollars the account starts with; None: unlimited. A completed task's cost comes off it;
    # a submit costing more than is left (less what running tasks will cost) answers HTTP 402.
    balance: Decimal | None = None
    webhook_secret: str = field(default_factory=_new_webhook_secret)
    # Extra attempts after a failed delivery, the first after webhook_retry_delay_s, then x2.
    webhook_retries: int = 3
    webhook_retry_delay_s: float = 1.0
    # Case-insensitive word in the prompt: every output is flagged NSFW (the task still completes).
    nsfw_trigger: str = "nsfw"
    # Case-insensitive text in the prompt: the task ends failed with code 1200.
    moderation_trigger: str = "[moderate]"
    # Case-insensitive text in the prompt: the task stays "processing" for good (like `stuck`),
    # so an end-to-end test can pick which job sticks by what it asks for.
    stuck_trigger: str = "[stuck]"
    # Probability per request of each fault on every route it applies to, drawn from
    # random.Random(rng_seed).
    fault_rates: Mapping[Fault, float] = field(default_factory=dict)
    # Probability per request of a fault on one route: {(Fault.DROP, "result"): 0.1}. On that
    # route it replaces the fault's unscoped rate, if any.
    route_fault_rates: Mapping[tuple[Fault, str], float] = field(default_factory=dict)
    rng_seed: int = 0
    # A submit creates its prediction, then holds its answer back this long, so a test can kill
    # a client whose submit is in flight while the (billable) job already exists.
    submit_answer_delay_s: float = 0.0
    # Seconds after start-up at which an outage begins (None: none), and how long it lasts.
    outage_at_s: float | None = None
    outage_for_s: float = 0.0
    # Unix seconds: created_at, retention, rate windows and webhook timestamps. Not sleeps.
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        rates = {Fault(fault): float(rate) for fault, rate in self.fault_rates.items()}
        for fault, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate for {fault} must be between 0 and 1, got {rate}")
        # Frozen means frozen: keep a read-only copy, not the caller's (mutable) mapping.
        object.__setattr__(self, "fault_rates", MappingProxyType(rates))
        scoped: dict[tuple[Fault, str], float] = {}
        for (fault_name, route), rate in self.route_fault_rates.items():
            fault = Fault(fault_name)
            if route not in fault.routes:
                raise ValueError(f"{fault} only applies to {sorted(fault.routes)}, not {route!r}")
            if not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"fault rate for {fault}@{route} must be between 0 and 1")
            scoped[(fault, route)] = float(rate)
        object.__setattr__(self, "route_fault_rates", MappingProxyType(scoped))
        if self.api_keys is not None:
            object.__setattr__(self, "api_keys", frozenset(self.api_keys))
        if self.balance is not None:
            balance = Decimal(self.balance)
            if not balance.is_finite() or balance < 0:
                raise ValueError("balance must be a finite, non-negative amount of US dollars")
            object.__setattr__(self, "balance", balance)
        for name in (
            "latency_s",
            "sync_wait_s",
            "retention_s",
            "webhook_retry_delay_s",
            "submit_answer_delay_s",
            "outage_for_s",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.outage_at_s is not None and self.outage_at_s < 0:
            raise ValueError("outage_at_s must not be negative")
        if self.max_concurrent_per_key < 1 or self.max_output_side < 16:
            raise ValueError("max_concurrent_per_key must be >= 1 and max_output_side >= 16")
        if not self.webhook_secret.startswith("whsec_"):
            raise ValueError("webhook_secret must start with 'whsec_'")
