"""Log lines that say which job they are about, as text or as JSON for a log collector.

The job service runs each job in its own asyncio task and binds the job's id (and, once it has
one, its prediction's id) in a context variable there (`bind_job`, `bind_prediction`). Tasks
copy their context when they are created, so every line logged while a job's step runs, in
this module's code, the WaveSpeed client or a cog posting the result, carries both ids without
passing them around. `JobContextFilter` puts them on each record as `job_id` and
`prediction_id`; the text format appends them, the JSON format writes them as fields.

Secrets never reach a record: the token and the API keys are `SecretStr`, and nothing here
logs a request's headers.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from typing import IO, Any, Literal

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s%(job_context)s"

_job_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("job_id", default=None)
_prediction_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "prediction_id", default=None
)


@contextlib.contextmanager
def bind_job(job_id: int, prediction_id: str | None = None) -> Iterator[None]:
    """Lines logged in this block (and in tasks it creates) are about this job."""
    job_token = _job_id.set(job_id)
    prediction_token = _prediction_id.set(prediction_id)
    try:
        yield
    finally:
        _prediction_id.reset(prediction_token)
        _job_id.reset(job_token)


def bind_prediction(prediction_id: str | None) -> None:
    """The bound job's prediction, once it has one (for the rest of the current context)."""
    if prediction_id is not None:
        _prediction_id.set(prediction_id)


class JobContextFilter(logging.Filter):
    """Adds `job_id` and `prediction_id` (None outside a job) and the text suffix to a record.

    Set on a handler, so it sees every record that handler writes, whichever logger made it. A
    record that already has the ids (passed as `extra`) keeps them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = getattr(record, "job_id", None)
        if job_id is None:
            job_id = record.job_id = _job_id.get()
        prediction_id = getattr(record, "prediction_id", None)
        if prediction_id is None:
            prediction_id = record.prediction_id = _prediction_id.get()
        parts = [f"job={job_id}"] if job_id is not None else []
        if prediction_id is not None:
            parts.append(f"prediction={prediction_id}")
        record.job_context = f" [{' '.join(parts)}]" if parts else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the job's and
    prediction's ids when known, and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("job_id", "prediction_id"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a message argument that is not JSON (a Path) still makes a line.
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_handler(log_format: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing `log_format` lines, with the job context, to `stream` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(JobContextFilter())
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    return handler


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """The process's logging: one handler on the root logger, in the configured format."""
    logging.basicConfig(level=level, handlers=[log_handler(log_format)])
    # discord.py's gateway chatter is noise at INFO; aiosqlite's debug lines carry every
    # query's parameters, image bytes included.
    quieter = max(logging.getLevelName(level), logging.WARNING)
    for noisy in ("discord", "aiosqlite"):
        logging.getLogger(noisy).setLevel(quieter)
