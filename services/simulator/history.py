"""The prediction history (`POST /api/v3/predictions`): its query and the items it lists.

WaveSpeed's own CLI and desktop client use this endpoint to find earlier predictions; a client
whose submit answer was lost uses it to find the job it may have paid for, by time window, model
and the inputs it sent. Those are matched against `input`, the submit body exactly as received.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.wavespeed.protocol import Code, Status

from .answers import ApiError
from .state import SimPrediction, iso_timestamp

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 20
# Larger pages are cut to this (and the answer says so in `page_size`), not refused.
MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    page: int
    page_size: int
    # Unix seconds, both ends included.
    created_after: float
    created_before: float
    model: str | None = None
    status: Status | None = None

    def matches(self, record: SimPrediction) -> bool:
        return (
            self.created_after <= record.created_ts <= self.created_before
            and (self.model is None or record.model_id == self.model)
            and (self.status is None or record.status is self.status)
        )


def _invalid(message: str) -> ApiError:
    return ApiError(400, Code.INVALID_PARAMETER, message)


def _whole_number(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    # bool is an int to Python, never to a JSON schema.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid(f"{name} must be a whole number from 1.")
    return value


def _moment(body: dict[str, Any], name: str) -> float:
    value = body.get(name)
    if value is None or value == "":
        raise ApiError(400, Code.MISSING_PARAMETER, f"The history needs {name} (ISO 8601).")
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(f"{name} must be an ISO 8601 time, like 2025-01-31T12:00:00Z.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # WaveSpeed writes UTC; so do we
    stamp = moment.timestamp()
    if not math.isfinite(stamp):
        raise _invalid(f"{name} is out of range.")
    return stamp


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None  # absent or empty: no filter
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string.")
    return value


def parse_query(body: dict[str, Any]) -> HistoryQuery:
    """The query in a history request's body; ApiError 400 when it makes no sense."""
    page = _whole_number(body, "page", 1)
    page_size = min(_whole_number(body, "page_size", DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE)
    after, before = _moment(body, "created_after"), _moment(body, "created_before")
    if after > before:
        raise _invalid("created_after must not be later than created_before.")
    status_text = _optional_text(body, "status")
    try:
        status = Status(status_text) if status_text is not None else None
    except ValueError:
        choices = ", ".join(item.value for item in Status)
        raise _invalid(f"status must be one of: {choices}.") from None
    return HistoryQuery(page, page_size, after, before, _optional_text(body, "model"), status)


def history_item(record: SimPrediction) -> dict[str, Any]:
    """One prediction as the history lists it."""
    return {
        "id": record.id,
        "model": record.model_id,
        "status": str(record.status),
        "outputs": list(record.outputs),
        "input": record.input,
        "created_at": iso_timestamp(record.created_ts),
        "executionTime": record.inference_ms,
        "error": record.error,
    }


def history_page(records: list[SimPrediction], query: HistoryQuery) -> dict[str, Any]:
    """`data` of a history answer: the query's page of `records`, newest first."""
    # Creation order breaks ties between equal timestamps (a stable sort of the reversed list).
    matching = sorted(
        (record for record in reversed(records) if query.matches(record)),
        key=lambda record: record.created_ts,
        reverse=True,
    )
    start = (query.page - 1) * query.page_size
    page = matching[start : start + query.page_size]
    log.debug("history page %d: %d of %d predictions", query.page, len(page), len(matching))
    return {
        "page": query.page,
        "page_size": query.page_size,
        "total": len(matching),
        "items": [history_item(record) for record in page],
    }
