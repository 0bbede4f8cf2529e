"""``GET /metrics`` on ``serve``: the queue's figures for Prometheus, read from the store per scrape.

What a fleet's dashboard and alerts need that no single worker knows: jobs per state, how long
the oldest due job has waited, how long since a running job last checkpointed (a worker that died
or hangs shows here before its lease expires, and as an expired lease after), and the fleet-wide
pauses a 429/529 put on the rate-limit buckets. Per-worker figures (requests, tokens, latencies)
come from each ``run`` process's own endpoint (``worker.metrics``).

A scrape is one ``Store.queue_stats`` call: a handful of aggregate queries on indexed ranges in
one snapshot, never a scan of the jobs, so a 100,000-job queue scrapes as fast as an empty one.
The async read happens in the handler; a :class:`QueueCollector` then turns that snapshot into
metric families in a registry of the scrape's own (prometheus-client collectors are synchronous).

Auth: like every route but ``/healthz``, ``/metrics`` needs the bearer token (Prometheus sends
it with ``authorization: {credentials_file: ...}`` in the scrape config); ``[server]
metrics_auth = "none"`` lets a scraper in without one (see ``worker.server.app``).
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobs.errors import StoreError
from jobs.models import QueueStats
from worker.server.routes import STORE

__all__ = ("QueueCollector", "metrics", "METRICS_PATH")

METRICS_PATH = "/metrics"


class QueueCollector(Collector):
    """One scrape's snapshot of the queue as metric families."""

    def __init__(self, stats: QueueStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats, now = self.stats, self.stats.now
        jobs = GaugeMetricFamily("longform_jobs", "Jobs in the queue by state", labels=["state"])
        for state, count in stats.counts.items():
            jobs.add_metric([str(state)], count)
        yield jobs
        yield GaugeMetricFamily(
            "longform_oldest_queued_job_age_seconds",
            "How long the longest-waiting due job has been claimable (0: none waits; scheduled "
            "jobs count from their run_at)",
            value=_age(now, stats.oldest_due_at),
        )
        yield GaugeMetricFamily(
            "longform_checkpoint_lag_seconds",
            "The longest time since a running job's last checkpoint or heartbeat (0: none runs)",
            value=_age(now, stats.oldest_checkpoint_at),
        )
        yield GaugeMetricFamily(
            "longform_expired_leases",
            "Running jobs whose lease has expired (their worker died or hangs; another resumes them)",
            value=stats.expired_leases,
        )
        yield GaugeMetricFamily(
            "longform_fleet_pauses",
            "Rate-limit buckets the fleet is paused on now (a 429 or 529 told it to back off)",
            value=len(stats.pauses),
        )
        remaining = GaugeMetricFamily(
            "longform_fleet_pause_remaining_seconds",
            "Seconds left of the fleet's pause, per rate-limit bucket key",
            labels=["key"],
        )
        for key, until in stats.pauses.items():
            remaining.add_metric([key], max(0.0, until - now))
        yield remaining


def _age(now: float, since: float | None) -> float:
    return 0.0 if since is None else max(0.0, now - since)


async def metrics(request: web.Request) -> web.Response:
    """The queue's figures in the Prometheus text format (OpenMetrics if the scraper asks)."""
    try:
        stats = await request.app[STORE].queue_stats()
    except StoreError as exc:
        return web.json_response({"error": f"job store unavailable: {exc}"}, status=503)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(stats))
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(registry), headers={"Content-Type": content_type})
