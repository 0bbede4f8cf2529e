"""The composition root: the one place that builds the store, the SDK client, the limiter and the
pool from a :class:`~worker.config.Config`.

Commands (``run``, ``demo``, ``serve``) and the benchmarks (``bench/``) ask this module for their
parts instead of building them by hand, so a setting means the same thing everywhere and nothing
is built at import time (a limiter binds to the running event loop; a client owns connections
that must be closed on that loop).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anthropic
import anyio
import httpx2
from anyio.abc import TaskGroup

from jobs.backends import open_store
from jobs.buckets import Limits
from jobs.classes import RateClasses
from jobs.costs import load_prices
from jobs.errors import ConfigError
from jobs.store import Store
from worker.attempt import AttemptSettings
from worker.batches import BatchSettings
from worker.budget import RunBudget
from worker.class_limits import ClassLimiter, check_class_limits
from worker.config import Config
from worker.daily_cap import DailyCap
from worker.economy import Economy
from worker.limits import FleetLimiter, check_limits
from worker.outage import StoreGuard
from worker.pool import Pool, PoolSettings
from worker.recorder import Recorder
from worker.retention import RetentionSettings

__all__ = (
    "Runtime",
    "open_runtime",
    "make_client",
    "pool_settings",
    "make_limits",
    "make_classes",
    "make_economy",
    "make_recorder",
    "url_source",
    "retention_settings",
    "start_fleet_tasks",
)


def make_client(config: Config) -> anthropic.AsyncAnthropic:
    """The SDK client: retries off (the pool owns them), timeouts that suit long streams."""
    base_url = config.api_base_url()
    api_key = os.environ.get("ANTHROPIC_API_KEY")
    if not api_key:
        if base_url is None:
            raise ConfigError(
                "ANTHROPIC_API_KEY is not set: export it, or point [anthropic] base_url "
                "(or ANTHROPIC_BASE_URL) at a simulator (python -m worker simulate)"
            )
        api_key = "no-key-set"
    idle = config.worker.idle_timeout
    timeout = httpx2.Timeout(timeout=idle + 30, connect=config.anthropic.connect_timeout)
    limits = httpx2.Limits(
        max_connections=max(1000, config.worker.concurrency * 2),
        max_keepalive_connections=max(100, config.worker.concurrency),
    )
    if config.anthropic.http_transport == "aiohttp":
        http_client: httpx2.AsyncClient = anthropic.DefaultAioHttpClient(timeout=timeout, limits=limits)
    else:
        http_client = anthropic.DefaultAsyncHttpxClient(timeout=timeout, limits=limits)
    return anthropic.AsyncAnthropic(
        api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout, http_client=http_client
    )


def pool_settings(config: Config) -> PoolSettings:
    w = config.worker
    return PoolSettings(
        concurrency=w.concurrency,
        lease_seconds=config.queue.lease_seconds,
        checkpoint_chars=w.checkpoint_chars,
        checkpoint_seconds=w.checkpoint_seconds,
        grace_seconds=w.grace_seconds,
        poll_seconds=w.poll_seconds,
        typical_max_tokens=config.anthropic.max_tokens,
        overload_patience=w.overload_patience,
        outage_limit=w.outage_limit,
        shutdown_deadline=w.shutdown_deadline,
        max_pending_chars=w.max_pending_chars,
        attempt=AttemptSettings(
            idle_timeout=w.idle_timeout,
            request_timeout=config.anthropic.request_timeout or None,
            backoff_base=w.backoff_base,
            backoff_max=w.backoff_max,
            retry_after_max=w.retry_after_max,
            nonstream_after=w.nonstream_after,
            thinking_max_chars=w.thinking_max_chars,
        ),
    )


def batch_settings(config: Config) -> BatchSettings:
    """The batch submitter's polling, lease and deadline horizon (``run`` and ``serve --workers``)."""
    w = config.worker
    return BatchSettings(
        poll_min=min(1.0, w.batch_poll_max),
        poll_max=w.batch_poll_max,
        lease_seconds=3 * config.queue.lease_seconds,
        horizon=config.queue.batch_horizon,
        output_300k=config.anthropic.batch_output_300k,
    )


def url_source(config: Config) -> str:
    """The setting the base URL came from, for messages."""
    if config.anthropic.base_url:
        return "[anthropic] base_url"
    if os.environ.get("ANTHROPIC_BASE_URL"):
        return "ANTHROPIC_BASE_URL"
    return "the API's default base URL"


def start_fleet_tasks(tg: TaskGroup, runtime: Runtime, worker_id: str) -> None:
    """Start, beside a pool, the tasks one process of the fleet runs at a time (each takes its
    store lease first): the batch submitter, and the automatic prune when ``[queue] retention``
    is set. ``run`` and ``serve --workers`` both call this, so they run the same fleet."""
    from worker.batches import Submitter
    from worker.retention import run_retention

    if runtime.client is not None:
        submitter = Submitter(runtime.store, runtime.client, worker_id, batch_settings(runtime.config))
        tg.start_soon(submitter.run)
    retention = retention_settings(runtime.config)
    if retention is not None:
        tg.start_soon(run_retention, runtime.store, worker_id, retention)


def retention_settings(config: Config) -> RetentionSettings | None:
    """``[queue] retention`` as the automatic prune's settings (``run``, ``serve --workers``);
    None when it is off."""
    seconds = config.queue.retention_seconds()
    return None if seconds is None else RetentionSettings(seconds, label=config.queue.retention)


def make_economy(config: Config, max_cost: float | None = None) -> Economy:
    """Prices (shipped, plus ``[costs] prices_file``) and the run's budget."""
    cap = config.costs.max_cost_per_run if max_cost is None else max_cost
    if cap < 0:
        raise ConfigError(f"run --max-cost must be at least 0, got {cap}")
    return Economy(
        prices=load_prices(config.prices_path()),
        budget=RunBudget(cap or None),
        cache_checkpoint=config.costs.cache_checkpoint == "on",
    )


def make_limits(config: Config) -> Limits:
    """The fleet's rate limits from ``[rate_limits]``, checked against ``[anthropic] max_tokens``."""
    limits = Limits(
        requests=config.rate_limits.requests_per_minute,
        input_tokens=config.rate_limits.input_tokens_per_minute,
        output_tokens=config.rate_limits.output_tokens_per_minute,
    )
    check_limits(limits, config.anthropic.max_tokens)
    check_class_limits(make_classes(config), config.anthropic.max_tokens)
    return limits


def make_classes(config: Config) -> RateClasses:
    """The default limits and the ``[rate_limits.classes.*]`` tables."""
    r = config.rate_limits
    default = Limits(r.requests_per_minute, r.input_tokens_per_minute, r.output_tokens_per_minute)
    return RateClasses(default, r.classes)


def make_recorder(config: Config) -> Recorder:
    """Prometheus metrics for this process's pool when ``[worker] metrics_port`` is set (each
    runtime its own registry), else a recorder that records nothing."""
    if not config.worker.metrics_port:
        return Recorder()
    from worker.metrics import PrometheusRecorder

    return PrometheusRecorder()


@dataclass(frozen=True, slots=True)
class Runtime:
    """The parts a command runs with; owned (and closed) by :func:`open_runtime`."""

    config: Config
    store: Store
    #: None when the command needs no API access (``serve`` without workers).
    client: anthropic.AsyncAnthropic | None
    #: A :class:`ClassLimiter` when ``[rate_limits]`` has classes.
    limiter: FleetLimiter | ClassLimiter | None
    #: The fleet's daily spending cap (``[costs] daily_cap_usd``), None when there is none.
    daily_cap: DailyCap | None = None
    #: Rides store calls out through an outage, up to ``[worker] outage_limit`` (shared by the
    #: pool and the limiter, so one outage is one outage).
    guard: StoreGuard | None = None
    #: What the pool reports for ``/metrics`` (``worker.metrics``); records nothing by default.
    recorder: Recorder = field(default_factory=Recorder)

    def pool(
        self,
        settings: PoolSettings | None = None,
        *,
        economy: Economy | None = None,
        record_lags: bool = False,
    ) -> Pool:
        """A pool on this runtime's store, client, limiter and daily cap; ``economy`` defaults
        to the config's prices and run budget. ``record_lags`` keeps every checkpoint's lag
        (delta received to durable commit) for ``bench.concurrency``'s p99: a list that grows
        with the run, so no command sets it."""
        if self.client is None:
            raise ConfigError("this command was started without an API client: it cannot run workers")
        return Pool(
            self.store,
            self.client,
            settings or pool_settings(self.config),
            limiter=self.limiter,
            economy=economy if economy is not None else make_economy(self.config),
            daily_cap=self.daily_cap,
            guard=self.guard,
            recorder=self.recorder,
            record_lags=record_lags,
        )


@asynccontextmanager
async def open_runtime(config: Config, *, with_client: bool = True) -> AsyncIterator[Runtime]:
    """Build the runtime; on exit close the client, then the store, under a shielded scope with
    ``[worker] shutdown_deadline``."""
    limits = make_limits(config)
    client = make_client(config) if with_client else None
    store = open_store(config.queue_url())
    guard = StoreGuard(limit=config.worker.outage_limit)
    try:
        limiter: FleetLimiter | ClassLimiter | None = None
        classes = make_classes(config)
        retry_after_max = config.worker.retry_after_max
        if classes.classes and not classes.unlimited:
            limiter = ClassLimiter(store, classes, retry_after_max=retry_after_max, guard=guard)
        elif not limits.unlimited:
            limiter = FleetLimiter(store, limits, retry_after_max=retry_after_max, guard=guard)
        daily = DailyCap(store, config.costs.daily_cap_usd) if config.costs.daily_cap_usd else None
        yield Runtime(config, store, client, limiter, daily, guard, make_recorder(config))
    finally:
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + config.worker.shutdown_deadline
            if client is not None:
                await client.close()
            await store.close()
