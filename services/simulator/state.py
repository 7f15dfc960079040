"""What the simulator remembers: predictions, uploads, the billing ledger, webhook deliveries."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple, Protocol, TypeVar

from services.wavespeed.catalog import ModelKind
from services.wavespeed.protocol import Status

from .config import Fault


def iso_timestamp(unix_s: float) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as WaveSpeed writes created_at."""
    moment = datetime.fromtimestamp(unix_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One rendered output, served at its output URL."""

    data: bytes = field(repr=False)
    content_type: str
    extension: str


@dataclass(eq=False)
class SimPrediction:
    """One prediction's state, inspectable by tests (`sim.predictions[id]`)."""

    id: str
    model_path: str
    kind: ModelKind
    # The validated request as JSON with the seed actually used and data URIs shortened.
    request: dict[str, Any]
    seed: int
    cost: Decimal
    created_ts: float
    # scheme://host the client used; output and result URLs are built from it.
    origin: str
    key: str = field(repr=False)  # the API key: used for per-key limits, never shown
    webhook: str | None = None
    fault: Fault | None = None
    # The submit body exactly as received (data URIs included): the history lists it, so a
    # client can recognise a job it sent by its inputs.
    input: dict[str, Any] = field(default_factory=dict, repr=False)
    # About what `input` holds in memory; 0 once its data URIs were shortened to save memory.
    input_bytes: int = 0
    # Same model, inputs and seed give the same fingerprint: a job submitted twice shows up.
    fingerprint: str = ""
    base64_output: bool = False
    sync: bool = False
    status: Status = Status.CREATED
    outputs: list[str] = field(default_factory=list, repr=False)
    output_files: list[OutputFile] = field(default_factory=list, repr=False)
    has_nsfw_contents: list[bool] = field(default_factory=list)
    error: str = ""
    code: int | None = None
    inference_ms: int = 0
    billed_cost: Decimal | None = None
    # Set once the task has ended (completed or failed); a stuck task never sets it.
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    # Unix seconds when it ended (outputs rendered and stored): what a benchmark measures from.
    ended_ts: float | None = None

    @property
    def model_id(self) -> str:
        return f"wavespeed-ai/{self.model_path}"

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt") or "")

    @property
    def result_url(self) -> str:
        return f"{self.origin}/api/v3/predictions/{self.id}/result"

    def to_json(self) -> dict[str, Any]:
        """The prediction as WaveSpeed shapes `data`."""
        data: dict[str, Any] = {
            "id": self.id,
            "model": self.model_id,
            "outputs": list(self.outputs),
            "urls": {"get": self.result_url},
            "has_nsfw_contents": list(self.has_nsfw_contents),
            "status": str(self.status),
            "created_at": iso_timestamp(self.created_ts),
            "error": self.error,
            "timings": {"inference": self.inference_ms},
        }
        if self.code is not None:
            data["code"] = self.code
        return data


@dataclass(eq=False)
class MediaItem:
    """An uploaded file; `data` stays None until a presigned upload's PUT arrives."""

    token: str
    filename: str
    content_type: str
    created_ts: float
    expected_size: int | None = None
    data: bytes | None = field(default=None, repr=False)


class BilledEntry(NamedTuple):
    """One charged prediction."""

    id: str
    model: str
    cost: Decimal


class WebhookDelivery(NamedTuple):
    """One delivery attempt: `outcome` is the receiver's HTTP status or the exception's name."""

    url: str
    webhook_id: str
    attempt: int
    outcome: int | str


class _Dated(Protocol):
    created_ts: float


_T = TypeVar("_T", bound=_Dated)


def prune(store: MutableMapping[str, _T], *, now: float, retention_s: float, keep: int) -> list[_T]:
    """Drop expired entries and the oldest beyond `keep`; returns what was dropped.

    Entries are inserted in creation order, so the oldest sit at the front and the loop stops
    at the first entry that may stay.
    """
    dropped: list[_T] = []
    while store:
        oldest_id = next(iter(store))
        oldest = store[oldest_id]
        if len(store) <= keep and now - oldest.created_ts <= retention_s:
            break
        dropped.append(store.pop(oldest_id))
    return dropped


def live(store: MutableMapping[str, _T], key: str, *, now: float, retention_s: float) -> _T | None:
    """The entry at `key` unless it is missing or older than the retention (then forgotten)."""
    entry = store.get(key)
    if entry is not None and now - entry.created_ts > retention_s:
        del store[key]
        return None
    return entry
