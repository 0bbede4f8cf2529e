"""How many concurrent streams at 50 tokens/s one worker process holds (target 1,000).

For each N: N jobs, each a document streamed by a separate simulator process at 50 tokens/s
(1–4 tokens per delta), run by one pool with concurrency N and SQLite checkpoints. Measured in
the pool's process: the aggregate token rate achieved as a share of N × 50 over the window when
all N streams are running, CPU use (process time ÷ wall time, 1.0 = one core), peak RSS, and
checkpoint lag p99 (time from a delta's arrival to its durable commit).

The pool is built as ``run`` builds it (``worker.runtime.open_runtime`` on a config from
:func:`bench.common.bench_config`; ``--transport`` is ``[anthropic] http_transport``), with
checkpoint lags recorded (``Runtime.pool(record_lags=True)``).

``python -m bench.concurrency --streams 250 500 1000``
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import anyio

from bench.common import Row, Setting, bench_config, cpu_seconds, simulator_process
from jobs.models import JobSpec, Message
from worker.logs import configure_logging
from worker.pool import Pool
from worker.runtime import open_runtime
from worker.simulator import count_tokens, expected_document

__all__ = ("run", "main")

RATE = 50
MODEL = "claude-haiku-4-5"


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _one(base_url: str, streams: int, seconds: float, folder: Path, transport: str) -> dict[str, float]:
    tokens = int(RATE * seconds)
    settings: dict[str, Setting] = {
        "worker.concurrency": streams,
        "worker.poll_seconds": 0.05,
        "queue.lease_seconds": 60,
        "worker.idle_timeout": 60,
        "anthropic.connect_timeout": 30,
        "anthropic.http_transport": transport,
    }
    async with open_runtime(bench_config(folder, f"conc-{streams}", base_url, settings)) as runtime:
        await runtime.store.enqueue(
            [
                JobSpec(
                    f"c{i}",
                    (Message("user", f"Stream {i}. [sim:tokens={tokens}]"),),
                    MODEL,
                    tokens + 10,
                    tokens * 2,
                    3,
                )
                for i in range(streams)
            ]
        )
        pool = runtime.pool(record_lags=True)
        window: dict[str, float] = {}

        async def sample() -> None:
            # The steady window: from when every stream has produced text until the first finishes.
            while pool.stats.succeeded == 0 and pool.running < streams:  # noqa: ASYNC110 - sampling, not sync
                await anyio.sleep(0.05)
            await anyio.sleep(seconds * 0.25)
            window["t0"], window["c0"], window["chars0"] = time.monotonic(), cpu_seconds(), _chars(pool)
            await anyio.sleep(seconds * 0.4)
            window["t1"], window["c1"], window["chars1"] = time.monotonic(), cpu_seconds(), _chars(pool)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            await pool.run(until_empty=True, handle_signals=False)
    lags = pool.writer.stats.lags or []
    wall = window["t1"] - window["t0"]
    sample_doc = expected_document(None, f"Stream 0. [sim:tokens={tokens}]")
    chars_per_token = len(sample_doc) / count_tokens(sample_doc)
    achieved = (window["chars1"] - window["chars0"]) / chars_per_token / wall
    return {
        "succeeded": pool.stats.succeeded,
        "rate_share": achieved / (streams * RATE),
        "cpu": (window["c1"] - window["c0"]) / wall,
        "lag_p99": _percentile(lags, 0.99),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _chars(pool: Pool) -> float:
    """Characters received so far by running and finished jobs (committed + pending)."""
    return float(pool.writer.stats.chars + sum(j.pending_len for j in pool.writer._jobs.values()))


async def run(stream_counts: list[int], seconds: float, transport: str = "aiohttp") -> list[Row]:
    rows: list[Row] = []
    with (
        simulator_process("--tokens-per-second", str(RATE), "--tokens-per-delta", "1-4") as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for streams in stream_counts:
            result = await _one(sim.base_url, streams, seconds, Path(tmp), transport)
            rows.append(
                Row(
                    name=f"{streams:,} concurrent streams at {RATE} tokens/s in one process",
                    ours=(
                        f"{100 * result['rate_share']:.0f} % of the offered rate; CPU {result['cpu']:.2f} "
                        f"core; peak RSS {result['maxrss_mb']:.0f} MB; checkpoint lag p99 "
                        f"{1000 * result['lag_p99']:.0f} ms"
                    ),
                    baseline=f"{streams * RATE:,} tokens/s offered",
                    ratio=f"{result['rate_share']:.2f}",
                    method=(
                        f"{streams} jobs of {int(RATE * seconds)} tokens; pool concurrency {streams} "
                        f"(built by open_runtime, {transport} transport); "
                        "simulator in its own process; rate measured over the steady window (all streams "
                        "running); checkpoints every 1 s coalesced into one SQLite transaction"
                    ),
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each document in seconds")
    parser.add_argument("--transport", choices=("aiohttp", "httpx"), default="aiohttp")
    args = parser.parse_args()
    configure_logging("json", "warning")
    for row in anyio.run(run, args.streams, args.seconds, args.transport):
        print(row.to_json())


if __name__ == "__main__":
    main()
