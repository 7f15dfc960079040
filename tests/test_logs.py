"""Log lines: a job's id and its prediction's on every line about it, text or JSON."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

from services.logs import LogFormat, bind_job, bind_prediction, log_handler
from tests.e2e import first_step, job_id_of
from tests.local_discord import LocalDiscord, start_bot

pytest_plugins = ("tests.local_discord.fixtures",)

log = logging.getLogger("services.test")


@contextlib.contextmanager
def captured(log_format: LogFormat, level: int = logging.INFO) -> Iterator[io.StringIO]:
    """Everything the bot's own code (services, cogs, bot) logs, as `log_format` lines."""
    stream = io.StringIO()
    handler = log_handler(log_format, stream)
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in ("services", "cogs", "kontext")]
    saved = [logger.level for logger in loggers]
    root.addHandler(handler)
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for logger, level_before in zip(loggers, saved, strict=True):
            logger.setLevel(level_before)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_text_lines_end_with_the_job_and_prediction_they_are_about() -> None:
    with captured("text") as stream:
        log.info("outside any job")
        with bind_job(12):
            log.info("queued")
            bind_prediction("pred-abc")
            log.info("submitted")
        log.info("after the job")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("services.test: outside any job")
    assert lines[1].endswith("services.test: queued [job=12]")
    assert lines[2].endswith("services.test: submitted [job=12 prediction=pred-abc]")
    assert lines[3].endswith("services.test: after the job")


def test_json_lines_carry_time_level_logger_ids_and_the_exception() -> None:
    with captured("json") as stream:
        with bind_job(7, "pred-7"):
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("step failed for %s", "someone")
        log.warning("no job", extra={"job_id": 8})
    failed, other = records(stream)
    assert failed["level"] == "ERROR"
    assert failed["logger"] == "services.test"
    assert failed["message"] == "step failed for someone"
    assert (failed["job_id"], failed["prediction_id"]) == (7, "pred-7")
    assert "ValueError: boom" in failed["exception"]
    assert failed["time"].endswith("+00:00")
    assert other == {
        "time": other["time"],
        "level": "WARNING",
        "logger": "services.test",
        "message": "no job",
        "job_id": 8,
    }


async def test_a_job_in_the_running_bot_logs_json_lines_with_its_ids(
    local_discord: LocalDiscord,
) -> None:
    with captured("json", logging.DEBUG) as stream:
        async with start_bot(local_discord) as (alice, bot):
            result, _ = await first_step(alice, "make it teal")
            job_id = job_id_of(result)
            job = await bot.repository.job(job_id)
            await asyncio.sleep(0.1)  # the job's last lines
    lines = records(stream)
    about_job = [line for line in lines if line.get("job_id") == job_id]
    # Its submit (logged by the WaveSpeed client) and each of its steps.
    submitted = [line for line in about_job if line["message"].startswith("submitted ")]
    assert len(submitted) == 1
    assert submitted[0]["logger"] == "services.wavespeed.client"
    assert job.prediction_id is not None
    assert job.prediction_id in submitted[0]["message"]
    steps = [line for line in about_job if "->" in line["message"]]
    assert steps, about_job
    # Once the job has its prediction, its lines say which.
    assert steps[-1]["prediction_id"] == job.prediction_id
    # The token never reaches a log line.
    assert local_discord.token not in stream.getvalue()
