"""WaveSpeed's JSON shapes: the response envelope, the prediction, statuses and error codes.

Parsed at the edge with pydantic; unknown fields are kept out of the way (`extra="ignore"`), so a
server that adds fields does not break the client.
"""

from __future__ import annotations

import enum
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator


class Status(enum.StrEnum):
    CREATED = "created"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    # Not in the model pages, but terminal in WaveSpeed's official SDK.
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    DELETED = "deleted"

    @property
    def terminal(self) -> bool:
        return self not in {Status.CREATED, Status.PROCESSING}


class Code(enum.IntEnum):
    """Task-level codes found in `code` or `data.code`."""

    OK = 0
    SUCCESS = 200
    MODERATED = 1200
    MISSING_PARAMETER = 1400
    INVALID_PARAMETER = 1401
    MEDIA_UNREACHABLE = 1402
    TASK_FAILED = 1403
    TASK_FAILED_ALT = 1405
    INTERNAL = 5000
    UNAVAILABLE = 5003
    SYNC_TIMEOUT = 5004


SYNC_TIMEOUT_TEXT = "Sync mode timed out"


class Urls(BaseModel):
    model_config = ConfigDict(extra="ignore")

    get: str = ""


class Timings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inference: int | None = None


class Prediction(BaseModel):
    """`data` of a submit or result answer."""

    model_config = ConfigDict(extra="ignore")

    id: str
    model: str = ""
    outputs: list[str] = Field(default_factory=list)
    urls: Urls = Field(default_factory=Urls)
    has_nsfw_contents: list[bool] = Field(default_factory=list)
    status: Status = Status.CREATED
    created_at: str = ""
    error: str = ""
    timings: Timings = Field(default_factory=Timings)
    # Present on some answers (sync time-outs, failures); absent on most.
    code: int | None = None
    # Webhook deliveries echo the request; the seed in it is the one that was used.
    input: dict[str, Any] | None = None

    @property
    def sync_timed_out(self) -> bool:
        return self.code == Code.SYNC_TIMEOUT or (
            self.status == Status.PROCESSING and SYNC_TIMEOUT_TEXT.lower() in self.error.lower()
        )


class ListedPrediction(BaseModel):
    """One item of the prediction history (`POST /api/v3/predictions`).

    The endpoint is documented only by WaveSpeed's own CLI and desktop client, so this is
    lenient: `input` or `inputs`, nulls for empty values, a status left as text.
    """

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    model: str = ""
    status: str = ""
    outputs: list[str] = Field(default_factory=list)
    # The submit's body as WaveSpeed received it: how a lost submit is recognised.
    input: dict[str, Any] = Field(
        default_factory=dict, validation_alias=AliasChoices("input", "inputs")
    )
    created_at: str = ""
    error: str = ""

    @field_validator("model", "status", "created_at", "error", mode="before")
    @classmethod
    def _null_text(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("outputs", mode="before")
    @classmethod
    def _null_list(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("input", mode="before")
    @classmethod
    def _null_dict(cls, value: Any) -> Any:
        return {} if value is None else value


class Balance(BaseModel):
    """`data` of `GET /api/v3/balance`: what the account holds, in US dollars.

    Documented as a number; a string ("12.50") is taken too. Read through text, so a JSON
    number such as 0.1 becomes exactly Decimal("0.1"), not the nearest binary fraction.
    """

    model_config = ConfigDict(extra="ignore")

    balance: Decimal

    @field_validator("balance", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Decimal:
        # bool is an int to Python, but `true` is no amount of money.
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("the balance is not a number")
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError("the balance is not a number") from None
        if not amount.is_finite():
            raise ValueError("the balance is not a finite number")
        return amount


class Envelope(BaseModel):
    """Every answer: `{code, message, data}`."""

    model_config = ConfigDict(extra="ignore")

    code: int = 200
    message: str = ""
    data: Any = None


def envelope(data: Any, *, code: int = 200, message: str = "success") -> dict[str, Any]:
    """The JSON of an answer, as WaveSpeed shapes it."""
    return {"code": code, "message": message, "data": data}
