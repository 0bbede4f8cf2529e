"""Metrics over real HTTP, parsed with Prometheus's own text parser, checked against the store's
figures and the simulator's accounting.

A worker's ``/metrics`` (``worker.metrics``) after a pool run against the simulator; ``serve``'s
``/metrics`` (``worker.server.metrics``) with its token and its per-state counts; the Grafana
dashboard shipped in ``deploy/`` only uses metrics that are exported.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import aiohttp
import anthropic
import httpx2
from prometheus_client.parser import text_string_to_metric_families

from jobs.errors import StoreError
from jobs.models import CheckpointWrite, QueueStats, State, Usage, WriteStatus
from jobs.sqlite import SQLiteStore
from jobs.store import Store
from tests.pool_harness import CONTINUATION_MODEL, PREFILL_MODEL, pool_run, spec
from tests.server_harness import auth, live_server
from worker.metrics import PrometheusRecorder, serve_metrics
from worker.recorder import RequestFacts
from worker.server.metrics import QueueCollector
from worker.simulator import SimulatorConfig

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"

#: sample name -> labels (as a sorted tuple) -> value
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> Samples:
    samples: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series whose labels include ``labels``."""
    return sum(
        value for key, value in samples.get(name, {}).items() if all((k, v) in key for k, v in labels.items())
    )


async def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as response:
        return response.status, await response.text()


async def store_figures(store: Store, job_ids: list[str]) -> tuple[int, int, int]:
    """(requests, output tokens, attempts that went back to the queue) as the store has them."""
    requests = output = requeued = 0
    for job_id in job_ids:
        job = await store.get(job_id)
        output += job.usage.output_tokens
        for record in await store.attempts(job_id):
            requests += record.requests
            requeued += record.outcome in ("retry", "released")
    return requests, output, requeued


async def test_worker_metrics_equal_the_store_and_the_simulator(tmp_path: Path) -> None:
    """Faults before the stream only (429, 529, 500): every output token is reported by the API,
    so the simulator's count, the store's and the metrics' must agree exactly."""
    jobs = [
        spec(
            f"w{i}",
            tokens=300 + 50 * i,
            model=model,
            faults=f"http_429=0.2,http_529=0.2,http_500=0.1,seed={i}",
        )
        for i, model in enumerate([PREFILL_MODEL, CONTINUATION_MODEL] * 3)
    ]
    recorder = PrometheusRecorder()
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        run = await pool_run(tmp_path, jobs, store=store, recorder=recorder)
        run.assert_exact(jobs)
        async with serve_metrics(recorder, "127.0.0.1", 0) as port:
            status, text = await scrape(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        samples = parse(text)
        requests, output, requeued = await store_figures(store, [job.id for job in jobs])
    finally:
        await store.close()
    accounting = run.simulator.accounting()
    injected = accounting.faults_injected
    assert injected.get("http_429", 0) and injected.get("http_529", 0), "no fault: the test proves nothing"

    assert total(samples, "longform_requests_total") == requests == accounting.requests
    assert total(samples, "longform_requests_total", status="200", error_kind="none") == (
        accounting.streams_completed
    )
    for code in (429, 529, 500):
        assert total(samples, "longform_requests_total", status=str(code)) == injected[f"http_{code}"]
    assert total(samples, "longform_throttled_requests_total", status="429") == injected["http_429"]
    assert total(samples, "longform_throttled_requests_total", status="529") == injected["http_529"]
    assert total(samples, "longform_tokens_total", kind="output") == output == accounting.output_tokens
    for model in (PREFILL_MODEL, CONTINUATION_MODEL):
        billed = accounting.billed[model]
        assert total(samples, "longform_tokens_total", model=model, kind="output") == billed["output_tokens"]
        assert total(samples, "longform_tokens_total", model=model, kind="input") == billed["input_tokens"]
    assert total(samples, "longform_retries_total") == requeued > 0
    assert total(samples, "longform_request_duration_seconds_count") == requests
    assert total(samples, "longform_time_to_first_token_seconds_count") == accounting.streams_completed
    assert total(samples, "longform_time_per_output_token_seconds_count") == accounting.streams_completed
    assert total(samples, "longform_streams_running") == 0
    assert total(samples, "longform_checkpoint_commit_seconds_count") >= 1
    assert total(samples, "longform_checkpoint_writes_total") >= len(jobs)
    assert total(samples, "longform_lease_losses_total") == 0


async def test_broken_streams_count_estimated_and_wasted_tokens_as_the_store_does(tmp_path: Path) -> None:
    """Streams that break midway: their output is estimated, as in the store, and part is wasted."""
    jobs = [spec(f"b{i}", tokens=600, faults=f"midstream_error=0.4,drop=0.2,seed={i}") for i in range(4)]
    recorder = PrometheusRecorder()
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        run = await pool_run(
            tmp_path, jobs, store=store, recorder=recorder, sim_config=SimulatorConfig(ping_interval=0.05)
        )
        run.assert_exact(jobs)
        samples = parse(rendered(recorder))
        requests, output, requeued = await store_figures(store, [job.id for job in jobs])
        wasted = sum([(await store.get(job.id)).usage.wasted_output_tokens for job in jobs])
    finally:
        await store.close()
    assert run.simulator.accounting().failed_output_tokens > 0, "no stream broke: the test proves nothing"
    assert total(samples, "longform_requests_total") == requests
    assert total(samples, "longform_tokens_total", kind="output") == output
    assert total(samples, "longform_wasted_output_tokens_total") == wasted > 0
    assert total(samples, "longform_retries_total") == requeued > 0
    assert total(samples, "longform_requests_total", error_kind="stream_overloaded_error") == total(
        samples, "longform_throttled_requests_total", status="529"
    )


class CancelBeforeFirstText:
    """Delegates to a store; cancels ``job_id`` (as a user would) just before the first commit
    that carries its text, so that commit is refused and the attempt loses its lease."""

    def __init__(self, inner: Store, job_id: str) -> None:
        self.inner, self.job_id, self.done = inner, job_id, False

    async def commit(self, writes: Sequence[CheckpointWrite], lease_seconds: float) -> list[WriteStatus]:
        if not self.done and any(w.job_id == self.job_id and w.text for w in writes):
            self.done = True
            await self.inner.cancel(self.job_id)
        return await self.inner.commit(writes, lease_seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_lost_lease_is_counted(tmp_path: Path) -> None:
    jobs = [spec("kept", tokens=400), spec("cancelled", tokens=3000)]
    recorder = PrometheusRecorder()
    inner = SQLiteStore(tmp_path / "jobs.db")
    wrapper = CancelBeforeFirstText(inner, "cancelled")
    try:
        run = await pool_run(tmp_path, jobs, store=cast(Store, wrapper), recorder=recorder)
    finally:
        await inner.close()
    assert wrapper.done and run.states == {"kept": State.SUCCEEDED, "cancelled": State.CANCELLED}
    samples = parse(rendered(recorder))
    assert total(samples, "longform_lease_losses_total") == run.stats.lease_lost == 1
    assert total(samples, "longform_streams_running") == 0


def rendered(recorder: PrometheusRecorder) -> str:
    """The registry as the endpoint renders it (the HTTP path is tested above)."""
    from prometheus_client import generate_latest

    return generate_latest(recorder.registry).decode()


def test_request_facts_map_to_status_and_error_kind() -> None:
    """Each way a request ends gets its status and kind; a cancelled one is not an API error."""
    recorder = PrometheusRecorder()
    request = httpx2.Request("POST", "http://sim/v1/messages")
    overloaded = anthropic.APIStatusError(
        "overloaded",
        response=httpx2.Response(529, request=request),
        body={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
    )
    in_stream = anthropic.APIStatusError(
        "x", response=httpx2.Response(200, request=request), body={"error": {"type": "rate_limit_error"}}
    )
    errors: list[BaseException | None] = [
        None,
        overloaded,
        in_stream,
        anthropic.APIConnectionError(request=request),
        asyncio.CancelledError(),
    ]
    for error in errors:
        recorder.stream_started()
        usage = Usage(input_tokens=10, output_tokens=0 if error else 50, document_tokens=0 if error else 50)
        recorder.request_ended(
            RequestFacts("m", usage, seconds=2.0, time_to_first_token=None if error else 0.5, error=error)
        )
    samples = parse(rendered(recorder))
    by = {
        dict(k)["status"] + " " + dict(k)["error_kind"]: v
        for k, v in samples["longform_requests_total"].items()
    }
    assert by == {
        "200 none": 1,
        "529 http_529": 1,
        "200 stream_rate_limit_error": 1,
        "none connection": 1,
        "none cancelled": 1,
    }
    assert total(samples, "longform_throttled_requests_total", status="529") == 1
    assert total(samples, "longform_throttled_requests_total", status="429") == 1
    assert total(samples, "longform_tokens_total", kind="input") == 50
    assert total(samples, "longform_tokens_total", kind="output") == 50
    assert total(samples, "longform_request_duration_seconds_count") == 5
    assert total(samples, "longform_time_to_first_token_seconds_count") == 1
    assert total(samples, "longform_time_per_output_token_seconds_sum") == (2.0 - 0.5) / 49
    assert total(samples, "longform_streams_running") == 0


def test_recorders_do_not_share_a_registry() -> None:
    """Several pools in one process count separately (no global default registry)."""
    first, second = PrometheusRecorder(), PrometheusRecorder()
    first.lease_lost()
    assert total(parse(rendered(first)), "longform_lease_losses_total") == 1
    assert total(parse(rendered(second)), "longform_lease_losses_total") == 0


async def test_serve_metrics_need_the_token_and_count_like_the_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        await store.enqueue([spec(f"s{i}") for i in range(5)])
        claims = await store.claim("w", 30.0, limit=2)
        await store.commit([CheckpointWrite(claims[0].job.id, claims[0].token, 0, "some text")], 30.0)
        await store.cancel("s4")
        async with live_server(store) as live:
            url = f"{live.url}/metrics"
            assert (await scrape(url))[0] == 401
            assert (await scrape(url, {"Authorization": "Bearer wrong"}))[0] == 401
            status, text = await scrape(url, auth())
        counts = await store.counts()
        async with live_server(store, metrics_auth="none") as live:
            open_status, open_text = await scrape(f"{live.url}/metrics")
    finally:
        await store.close()
    assert status == 200 and open_status == 200
    for body in (text, open_text):
        samples = parse(body)
        assert {dict(k)["state"]: v for k, v in samples["longform_jobs"].items()} == {
            str(state): float(n) for state, n in counts.items()
        }
        assert counts[State.RUNNING] == 2 and counts[State.CANCELLED] == 1
        assert total(samples, "longform_oldest_queued_job_age_seconds") >= 0
        assert total(samples, "longform_checkpoint_lag_seconds") >= 0
        assert total(samples, "longform_expired_leases") == 0
        assert total(samples, "longform_fleet_pauses") == 0


class QueueStatsDown:
    """Delegates to a store; ``queue_stats`` fails while ``down``."""

    def __init__(self, inner: Store) -> None:
        self.inner, self.down = inner, True

    async def queue_stats(self) -> QueueStats:
        if self.down:
            raise StoreError("injected: database is locked")
        return await self.inner.queue_stats()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_serve_metrics_answer_503_while_the_store_is_down(tmp_path: Path) -> None:
    inner = SQLiteStore(tmp_path / "jobs.db")
    store = QueueStatsDown(inner)
    try:
        async with live_server(cast(Store, store)) as live:
            status, body = await scrape(f"{live.url}/metrics", auth())
            store.down = False
            after, _ = await scrape(f"{live.url}/metrics", auth())
    finally:
        await inner.close()
    assert status == 503 and "job store unavailable" in json.loads(body)["error"]
    assert after == 200


def test_dashboard_queries_only_exported_metrics() -> None:
    """Every expression in deploy/grafana-dashboard.json names metrics this project exports."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = exported_names()
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(exprs) >= 10
    for expr in exprs:
        used = set(re.findall(r"\blongform_[a-z_]+", expr))
        assert used, f"no longform_ metric in {expr!r}"
        assert used <= exported, f"{expr!r} uses {sorted(used - exported)}"
    names_used = {name for expr in exprs for name in re.findall(r"\blongform_[a-z_]+", expr)}
    assert {"longform_jobs", "longform_requests_total", "longform_tokens_total"} <= names_used


def exported_names() -> set[str]:
    """Every sample name the two endpoints can export (histogram and counter series included)."""
    names: set[str] = set()
    for metric in PrometheusRecorder().registry.collect():
        if metric.type == "histogram":
            names |= {f"{metric.name}_bucket", f"{metric.name}_count", f"{metric.name}_sum"}
        elif metric.type == "counter":
            names.add(f"{metric.name}_total")
        else:
            names.add(metric.name)
    stats = QueueStats(
        now=0.0, counts={}, oldest_due_at=None, oldest_checkpoint_at=None, expired_leases=0, pauses={}
    )
    names |= {metric.name for metric in QueueCollector(stats).collect()}
    return names
