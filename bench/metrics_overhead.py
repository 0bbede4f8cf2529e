"""CPU per streamed token with worker metrics on (``[worker] metrics_port``) against off.

Side by side in one run, alternating on and off, against one simulator process streaming
unpaced, the way ``bench.cpu_per_token`` measures the pool:

* one long document (one request, a few dozen checkpoint flushes): the per-token path;
* many short documents at once (one request each, so the per-request and per-flush recording
  weigh the most they can per token).

"On" is a :class:`~worker.metrics.PrometheusRecorder` behind a live ``/metrics`` endpoint. Reported:
CPU seconds of this process per 1,000 tokens, median of the repetitions, the ratio on ÷ off, and
the CPU of one scrape, timed apart after the run (a fixed cost every scrape interval, not per
token).

Each run's pool is built as ``run`` builds it (``worker.runtime.open_runtime`` on a config from
:func:`bench.common.bench_config`, httpx transport as before): "on" sets ``[worker] metrics_port``
to a free port, so the runtime's recorder is a PrometheusRecorder, served there as ``run`` serves
it. Every run has its own runtime, so its own queue and a new client: both sides open their
connections inside the timed run alike. Only the pool's ``run`` is timed.

``python -m bench.metrics_overhead --reps 5``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import aiohttp
import anthropic
import anyio
import httpx2

from bench.common import Row, Setting, bench_config, cpu_seconds, free_port, median, simulator_process
from jobs.models import JobSpec, Message, Usage
from worker.logs import configure_logging
from worker.metrics import PrometheusRecorder, serve_metrics
from worker.recorder import RequestFacts
from worker.runtime import open_runtime

__all__ = ("run", "main")

MODEL = "claude-haiku-4-5"


def _specs(docs: int, tokens: int, rep: int, on: bool) -> list[JobSpec]:
    return [
        JobSpec(
            id=f"m{int(on)}-{rep}-{i}",
            messages=(Message("user", f"Metrics benchmark {rep}-{i}-{on}. [sim:tokens={tokens}]"),),
            model=MODEL,
            max_tokens=tokens + 10,
            output_budget=tokens * 2,
            max_attempts=3,
        )
        for i in range(docs)
    ]


async def _scrape(port: int) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return len(await response.read())


async def _pool(
    base_url: str, docs: int, tokens: int, rep: int, folder: Path, *, on: bool
) -> tuple[float, int, float]:
    """CPU seconds of one run, the output tokens it produced, and the CPU seconds of one scrape of
    its /metrics afterwards (0 when off; client and server are both this process)."""
    settings: dict[str, Setting] = {
        "worker.concurrency": min(docs, 50),
        "worker.poll_seconds": 0.01,
        "worker.idle_timeout": 60,
        "worker.metrics_port": free_port() if on else 0,
        "anthropic.http_transport": "httpx",
    }
    config = bench_config(folder, f"metrics-{docs}-{tokens}-{rep}-{int(on)}", base_url, settings)
    async with open_runtime(config) as runtime:
        assert isinstance(runtime.recorder, PrometheusRecorder) is on
        await runtime.store.enqueue(_specs(docs, tokens, rep, on))
        pool = runtime.pool()
        w = config.worker
        async with serve_metrics(runtime.recorder, w.metrics_host, w.metrics_port) as port:
            start = cpu_seconds()
            stats = await pool.run(until_empty=True, handle_signals=False)
            elapsed = cpu_seconds() - start
            scraped = 0.0
            if port is not None:
                start = cpu_seconds()
                assert await _scrape(port) > 0
                scraped = cpu_seconds() - start
    assert stats.succeeded == docs, stats
    return elapsed, stats.output_tokens, scraped


def _recording_cost(calls: int = 20_000) -> tuple[float, float]:
    """CPU seconds of one ``request_ended`` (a request with every token kind and a broken-stream
    error to classify, the dearest path) and of one ``checkpoint_committed``, measured directly:
    a bound the end-to-end ratio, which is inside the machine's noise, cannot give."""
    recorder = PrometheusRecorder()
    usage = Usage(
        input_tokens=900,
        output_tokens=300,
        cache_creation_input_tokens=100,
        cache_read_input_tokens=2000,
        document_tokens=290,
    )
    error = anthropic.APIConnectionError(request=httpx2.Request("POST", "http://sim/v1/messages"))
    facts = [
        RequestFacts(MODEL, usage, seconds=3.0, time_to_first_token=0.4, error=None if i % 2 else error)
        for i in range(calls)
    ]
    start = cpu_seconds()
    for fact in facts:
        recorder.stream_started()
        recorder.request_ended(fact)
    per_request = (cpu_seconds() - start) / calls
    start = cpu_seconds()
    for _ in range(calls):
        recorder.checkpoint_committed(0.002, 40)
    return per_request, (cpu_seconds() - start) / calls


async def _case(base_url: str, folder: Path, docs: int, tokens: int, reps: int) -> tuple[Row, float]:
    """One workload, on and off alternating; its row and the median CPU per token with it off."""
    per_k: dict[bool, list[float]] = {False: [], True: []}
    scrapes: list[float] = []
    for rep in range(reps):
        for on in (rep % 2 == 0, rep % 2 == 1):  # alternate which goes first
            cpu, produced, scrape = await _pool(base_url, docs, tokens, rep, folder, on=on)
            per_k[on].append(cpu / produced * 1000)
            if on:
                scrapes.append(scrape)
    off, on_ = median(per_k[False]), median(per_k[True])
    row = Row(
        name=f"Worker metrics on vs off, {docs:,} × {tokens:,}-token documents",
        ours=f"{on_ * 1000:.2f} ms/1k tokens (metrics on); one scrape {median(scrapes) * 1000:.1f} ms CPU",
        baseline=f"{off * 1000:.2f} ms/1k tokens (metrics off)",
        ratio=f"{on_ / off:.3f}× off",
        method=(
            f"pool of concurrency {min(docs, 50)} built by open_runtime, SQLite checkpoints; on = "
            f"[worker] metrics_port set (PrometheusRecorder behind a live /metrics); same simulator, "
            f"unpaced, 1-4 tokens/delta; CPU of the client process per output token, median of "
            f"{reps} runs each, alternating which goes first, after a warm-up run; each run a new "
            f"runtime and client; the scrape (client and server in this process) is timed apart, "
            f"after the run"
        ),
    )
    return row, off


async def run(cases: list[tuple[int, int]], reps: int) -> list[Row]:
    rows: list[Row] = []
    per_request, per_flush = _recording_cost()
    cpu_off_short = 0.0
    with simulator_process("--tokens-per-delta", "1-4") as sim, tempfile.TemporaryDirectory() as tmp:
        await _pool(sim.base_url, 5, 200, -1, Path(tmp), on=True)  # warm-up: imports, the simulator
        for docs, tokens in cases:
            row, off = await _case(sim.base_url, Path(tmp), docs, tokens, reps)
            rows.append(row)
            if docs > 1:
                cpu_off_short = off / 1000 * tokens  # CPU of one short request, metrics off
    share = f"{per_request / cpu_off_short * 100:.2f} % of one short request's CPU" if cpu_off_short else ""
    rows.append(
        Row(
            name="Worker metrics: recording cost per request and per checkpoint flush",
            ours=f"{per_request * 1e6:.1f} µs per request, {per_flush * 1e6:.1f} µs per flush",
            baseline=share or "n/a",
            ratio=share.split(" of ")[0] if share else "",
            method=(
                "request_ended (4 token kinds, wasted, 3 histograms; half of them with a connection "
                "error to classify) and checkpoint_committed called 20,000 times each on one "
                "PrometheusRecorder; CPU per call; compared with the CPU of one short document's "
                "request with metrics off (the row above)"
            ),
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--long", type=int, default=20_000, help="tokens of the one long document")
    parser.add_argument("--docs", type=int, default=200, help="short documents in the second case")
    parser.add_argument("--short", type=int, default=300, help="tokens of each short document")
    args = parser.parse_args()
    configure_logging("json", "warning")
    for row in anyio.run(run, [(1, args.long), (args.docs, args.short)], args.reps):
        print(row.to_json())


if __name__ == "__main__":
    main()
