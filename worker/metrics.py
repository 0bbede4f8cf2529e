"""A worker process's own Prometheus metrics, and the ``/metrics`` endpoint that serves them.

``[worker] metrics_port`` (0 = off) turns them on for ``run`` (and the pool of ``serve
--workers``); ``[worker] metrics_host`` (default 127.0.0.1) is the interface. The endpoint has no
token: the worker has no HTTP API to share one with, and the figures are counts and latencies per
model (no prompt, no job id). Bind it to localhost or a private interface.

Each :class:`PrometheusRecorder` owns its own ``CollectorRegistry`` (never the global default), so
several pools in one process count separately. Everything is recorded per request, per attempt or
per checkpoint flush: the per-token path of ``worker.stream`` is untouched.

Names follow https://prometheus.io/docs/practices/naming (``longform_`` prefix, base units,
``_total`` on counters); the README maps them to the OpenTelemetry GenAI names. Histogram buckets
are sized for long generations: seconds to 15 minutes, not the library's 5 ms to 10 s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anthropic
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler

from jobs.errors import ConfigError
from worker.recorder import Recorder, RequestFacts
from worker.retry import classify

__all__ = (
    "PrometheusRecorder",
    "serve_metrics",
    "LATENCY_BUCKETS",
    "DURATION_BUCKETS",
    "PER_TOKEN_BUCKETS",
    "COMMIT_BUCKETS",
)

log = structlog.get_logger("worker.metrics")

#: Time to first token: a prompt of a few thousand tokens answers in about a second; a huge one,
#: or a busy API, in tens of seconds.
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
#: A request of 8K to 128K output tokens at 30 to 100 tokens/s runs from seconds to ~15 minutes.
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 300.0, 450.0, 600.0, 900.0)
#: Seconds per output token: 100 tokens/s is 0.01 s.
PER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0)
#: One checkpoint transaction: milliseconds on a local disk, more on a busy PostgreSQL.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: Statuses that mean "slow down", also counted on their own.
_THROTTLED = {"429": "429", "529": "529"}
#: The same conditions inside a started stream (``event: error``, HTTP status 200).
_THROTTLED_IN_STREAM = {"stream_rate_limit_error": "429", "stream_overloaded_error": "529"}


class PrometheusRecorder(Recorder):
    """Counts a worker process's requests, tokens, latencies, retries, lease losses and commits."""

    enabled = True

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "longform_requests",
            "API requests by model, HTTP status (none: no response) and error kind (none: ok)",
            ["model", "status", "error_kind"],
            registry=r,
        )
        self.tokens = Counter(
            "longform_tokens",
            "Tokens billed, by model and kind: input (uncached), output, cache_read, cache_write",
            ["model", "kind"],
            registry=r,
        )
        self.wasted = Counter(
            "longform_wasted_output_tokens",
            "Output tokens billed but not in any document (a broken stream, a repeat at a join); "
            "part of longform_tokens_total{kind='output'}",
            ["model"],
            registry=r,
        )
        self._add_latency_histograms(r)
        self._add_retry_and_checkpoint_metrics(r)

    def _add_latency_histograms(self, r: CollectorRegistry) -> None:
        """Time to first token, request duration and time per output token, by model."""
        self.ttft = Histogram(
            "longform_time_to_first_token_seconds",
            "From sending a request to its first text",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "longform_request_duration_seconds",
            "From sending a request to its end (or failure)",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.per_token = Histogram(
            "longform_time_per_output_token_seconds",
            "Per request: (duration - time to first token) / (output tokens - 1)",
            ["model"],
            buckets=PER_TOKEN_BUCKETS,
            registry=r,
        )

    def _add_retry_and_checkpoint_metrics(self, r: CollectorRegistry) -> None:
        """Retries, throttling, lease losses, checkpoint commits and the streams running now."""
        self.retries = Counter(
            "longform_retries",
            "Attempts that failed and went back to the queue, by failure kind",
            ["kind"],
            registry=r,
        )
        self.throttled = Counter(
            "longform_throttled_requests",
            "Requests answered 429 (rate limited) or 529 (overloaded), before or inside the stream",
            ["status"],
            registry=r,
        )
        self.lease_losses = Counter(
            "longform_lease_losses", "Attempts stopped because their lease was lost", registry=r
        )
        self.commit = Histogram(
            "longform_checkpoint_commit_seconds",
            "One checkpoint batch (every due job's text and heartbeat in one transaction)",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.commit_writes = Counter(
            "longform_checkpoint_writes", "Job writes committed in checkpoint batches", registry=r
        )
        self.streams = Gauge("longform_streams_running", "Requests streaming now", registry=r)

    def stream_started(self) -> None:
        self.streams.inc()

    def request_ended(self, facts: RequestFacts) -> None:
        self.streams.dec()
        model, usage = facts.model, facts.usage
        status, kind = _status_and_kind(facts.error)
        self.requests.labels(model, status, kind).inc()
        throttled = _THROTTLED.get(status) or _THROTTLED_IN_STREAM.get(kind)
        if throttled is not None:
            self.throttled.labels(throttled).inc()
        for name, value in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_write", usage.cache_creation_input_tokens),
        ):
            if value:
                self.tokens.labels(model, name).inc(value)
        if usage.wasted_output_tokens:
            self.wasted.labels(model).inc(usage.wasted_output_tokens)
        self.duration.labels(model).observe(facts.seconds)
        ttft = facts.time_to_first_token
        if ttft is not None:
            self.ttft.labels(model).observe(ttft)
            if usage.output_tokens > 1 and facts.seconds > ttft:
                self.per_token.labels(model).observe((facts.seconds - ttft) / (usage.output_tokens - 1))

    def retried(self, kind: str) -> None:
        self.retries.labels(kind).inc()

    def lease_lost(self) -> None:
        self.lease_losses.inc()

    def checkpoint_committed(self, seconds: float, jobs: int) -> None:
        self.commit.observe(seconds)
        self.commit_writes.inc(jobs)


def _status_and_kind(error: BaseException | None) -> tuple[str, str]:
    """The HTTP status (``none`` when no response came) and ``worker.retry``'s failure kind."""
    if error is None:
        return "200", "none"
    if not isinstance(error, Exception):
        return "none", "cancelled"  # a shutdown, a lost lease, a held job
    status = str(error.status_code) if isinstance(error, anthropic.APIStatusError) else "none"
    return status, classify(error).kind


@asynccontextmanager
async def serve_metrics(recorder: Recorder, host: str, port: int) -> AsyncIterator[int | None]:
    """Serve ``recorder``'s registry at ``http://host:port/metrics`` while the block runs; yields
    the bound port (port 0 picks a free one), or None when ``recorder`` records nothing."""
    if not isinstance(recorder, PrometheusRecorder):
        yield None
        return
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(recorder.registry))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"[worker] metrics_host/metrics_port {host}:{port}: cannot listen: {exc.strerror or exc}"
            ) from None
        bound = next((int(a[1]) for a in runner.addresses if isinstance(a, tuple) and len(a) >= 2), port)
        log.info("metrics_serving", host=host, port=bound)
        yield bound
    finally:
        await runner.cleanup()
