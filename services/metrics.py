"""Prometheus metrics, in a registry the bot owns (never the process-wide default one).

What is counted where:
- Jobs by status and the queue's depth are read from the job store at scrape time (one GROUP
  BY on an indexed column), not counted on transitions: the store is the truth, so the numbers
  survive restarts, never drift from it, and cover every process sharing the store.
- Spend by model is read from the budget ledger at scrape time, likewise: what it settled (the
  price of images made), exposed as a counter since settled amounts only ever grow.
- WaveSpeed request latency (per HTTP exchange, failed ones included, by kind of request) and
  the delay from a job's images being made to its result being posted are histograms fed as it
  happens.
- Discord's 429 answers are counted by an aiohttp trace on discord.py's own HTTP session
  (`discord_trace`, passed to the client as `http_trace`): discord.py waits out rate limits
  itself and only logs them, but every request it makes, interaction responses included, goes
  through that one session, so the trace sees each 429 as it arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .money import from_micros
from .storage import JobStatus

if TYPE_CHECKING:
    from .storage import Repository

log = logging.getLogger(__name__)

# WaveSpeed requests by kind; the first three are the ones every job makes.
REQUEST_KINDS = ("submit", "result", "download", "upload", "history", "balance", "account")
# A plain submit answers in well under a second; a sync-mode submit lasts as long as the image.
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 90.0)
# A result is usually posted within a second of being made; rate limits and a missing
# permission can hold it up to the delivery deadline (10 minutes).
POSTED_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)


class _StoreCollector(Collector):
    """The job store's numbers as of the last scrape (`Metrics.scrape` reads them first)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] | None = None
        self.settled: dict[str, int] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.counts is not None:
            jobs = GaugeMetricFamily(
                "kontext_jobs", "Jobs in the job store, by status.", labels=["status"]
            )
            for status in JobStatus:
                jobs.add_metric([status.value], self.counts.get(status.value, 0))
            yield jobs
            yield GaugeMetricFamily(
                "kontext_queue_depth",
                "Jobs waiting in the queue for a slot at WaveSpeed.",
                value=self.counts.get(JobStatus.QUEUED.value, 0),
            )
        if self.settled is not None:
            spend = CounterMetricFamily(
                "kontext_spend_usd",
                "US dollars the budget ledger settled for images made, by model.",
                labels=["model"],
            )
            for model, micros in sorted(self.settled.items()):
                spend.add_metric([model], float(from_micros(micros)))
            yield spend


class Metrics:
    """The bot's metrics. `registry` is its own, so two bots (or tests) never share counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Histogram(
            "kontext_wavespeed_request_seconds",
            "Seconds per HTTP exchange with WaveSpeed (retries each count), by kind of request.",
            ["kind"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        for kind in REQUEST_KINDS:
            self._requests.labels(kind=kind)
        self._posted = Histogram(
            "kontext_completed_to_posted_seconds",
            "Seconds from a job's images being made to its result being posted in Discord.",
            buckets=POSTED_BUCKETS,
            registry=self.registry,
        )
        self._rate_limited = Counter(
            "kontext_discord_rate_limited",
            "Discord's 429 answers to the bot (each waited out by discord.py), by the "
            "X-RateLimit-Scope Discord gave (user, global, shared; unknown without one).",
            ["scope"],
            registry=self.registry,
        )
        self._store = _StoreCollector()
        self.registry.register(self._store)

    def observe_request(self, kind: str, seconds: float) -> None:
        self._requests.labels(kind=kind).observe(seconds)

    def observe_posted(self, seconds: float) -> None:
        self._posted.observe(max(0.0, seconds))

    def discord_trace(self) -> aiohttp.TraceConfig:
        """An aiohttp trace for discord.py's session (`Client(http_trace=...)`) counting 429s."""

        async def on_request_end(
            session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestEndParams,
        ) -> None:
            if params.response.status == 429:
                scope = params.response.headers.get("X-RateLimit-Scope", "unknown")
                self._rate_limited.labels(scope=scope).inc()

        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(on_request_end)
        return trace

    async def scrape(self, repository: Repository, accept: str = "") -> tuple[bytes, str]:
        """(body, content type) of the exposition the `accept` header asks for (Prometheus'
        text format, or OpenMetrics), with the store's numbers read now. A store that cannot
        be read leaves its metrics out (and /healthz says why); the rest still shows."""
        try:
            self._store.counts = await repository.job_counts()
            self._store.settled = await repository.settled_by_model()
        except Exception as exc:
            log.warning("metrics: the job store could not be read (%s)", exc)
            self._store.counts = self._store.settled = None
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
