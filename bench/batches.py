"""Message Batches against streaming: the same jobs, side by side, in one run.

One in-process simulator; ``--docs`` documents of ``--tokens`` tokens (one request each), on a
continuation model with a price. Measured:

* **cost**: the store's recorded usage priced by ``jobs.costs.job_spend`` (batch jobs at the
  batch price), batch ÷ stream (the goal is 0.50×); and the texts checked equal to the
  simulator's documents in both runs;
* **the store work to collect** one ended batch of every job: rows written (chunks, attempts,
  transitions inserted; job rows updated) and the seconds the collecting step took;
* **batch end to every document exported**: from the moment the simulator's batch has ended
  (polled by the benchmark, not the submitter) to ``export_jobs`` having written every file.

Both sides run on a runtime built as ``run`` builds it (``worker.runtime.open_runtime`` on a
config from :func:`bench.common.bench_config`, aiohttp transport as before), each with its own
queue and client: the streamed side's pool from ``Runtime.pool()``, the batch side's submitter on
the runtime's store and client, stepped by hand so each step can be timed.

``python -m bench.batches --docs 1000 --tokens 300``
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench.common import Row, Setting, bench_config, poll_until
from jobs.costs import job_spend, load_prices
from jobs.export import export_jobs
from jobs.models import JobSpec, Message, State
from jobs.store import Store
from worker.batches import BatchSettings, Submitter
from worker.logs import configure_logging
from worker.runtime import open_runtime
from worker.simulator import BatchConfig, SimulatorConfig, expected_document, run_simulator

__all__ = ("run", "rows", "suite_rows", "main", "MODEL")

MODEL = "claude-opus-4-6"
PROCESSING_SECONDS = 2.0
#: The streamed side's former PoolSettings(concurrency=32, lease_seconds=30, poll_seconds=0.05) as
#: config keys, on the aiohttp transport the shared client used.
SETTINGS: dict[str, Setting] = {
    "worker.concurrency": 32,
    "queue.lease_seconds": 30,
    "worker.poll_seconds": 0.05,
    "anthropic.http_transport": "aiohttp",
}


def _specs(docs: int, tokens: int, mode: str) -> list[JobSpec]:
    return [
        JobSpec(
            f"doc{i}",
            (Message("user", f"Batch benchmark document {i}. [sim:tokens={tokens}]"),),
            MODEL,
            4096,
            tokens * 3,
            10,
            mode=mode,
        )
        for i in range(docs)
    ]


async def _check_and_cost(store: Store, specs: list[JobSpec]) -> float:
    prices = load_prices()
    total = 0.0
    for spec in specs:
        job = await store.get(spec.id)
        assert job.state is State.SUCCEEDED, (spec.id, job.state)
        text = await store.read_text(spec.id)
        assert text == expected_document(None, spec.messages[0].text), spec.id
        cost = job_spend(prices, job).total_usd
        assert cost is not None
        total += cost
    return total


async def _streamed(folder: Path, base_url: str, specs: list[JobSpec]) -> float:
    async with open_runtime(bench_config(folder, "stream", base_url, SETTINGS)) as runtime:
        await runtime.store.enqueue(specs)
        await runtime.pool().run(until_empty=True, handle_signals=False)
        return await _check_and_cost(runtime.store, specs)


def _rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in ("chunks", "attempts", "transitions")
        }


async def _batched(folder: Path, base_url: str, specs: list[JobSpec]) -> dict[str, Any]:
    path = folder / "batch.db"  # the queue bench_config(folder, "batch", ...) names
    async with open_runtime(bench_config(folder, "batch", base_url, SETTINGS)) as runtime:
        store, client = runtime.store, runtime.client
        assert client is not None
        await store.enqueue(specs)
        submitter = Submitter(store, client, "bench", BatchSettings(max_requests=len(specs) + 1))
        assert await submitter.step()
        [record] = await store.open_batches()
        assert record.api_id is not None
        api_id = record.api_id

        async def ended_at_the_api() -> bool:
            return (await client.messages.batches.retrieve(api_id)).processing_status == "ended"

        await poll_until(ended_at_the_api, 600, every=0.02)
        ended = time.perf_counter()
        before = _rows(path)
        await submitter.step()
        collected = time.perf_counter()
        after = _rows(path)
        report = await export_jobs(store, folder / "out")
        exported = time.perf_counter()
        assert len(list((folder / "out").glob("doc*"))) == len(specs), report
        cost = await _check_and_cost(store, specs)
    inserted = {table: after[table] - before[table] for table in after}
    return {
        "cost": cost,
        "collect_seconds": collected - ended,
        "export_seconds": exported - ended,
        "inserted": inserted,
        "jobs_updated": len(specs),
    }


async def run(docs: int, tokens: int) -> dict[str, Any]:
    config = SimulatorConfig(batches=BatchConfig(processing_seconds=PROCESSING_SECONDS))
    async with run_simulator(config) as sim:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            stream_cost = await _streamed(folder, sim.base_url, _specs(docs, tokens, "stream"))
            batch = await _batched(folder, sim.base_url, _specs(docs, tokens, "batch"))
    return {"docs": docs, "tokens": tokens, "stream_cost": stream_cost, **batch}


async def suite_rows(docs: int, tokens: int) -> list[Row]:
    """What ``python -m bench`` runs."""
    return rows(await run(docs, tokens))


def rows(result: dict[str, Any]) -> list[Row]:
    docs = result["docs"]
    inserted = result["inserted"]
    written = inserted["chunks"] + inserted["transitions"] + 2 * result["jobs_updated"]
    return [
        Row(
            f"batch vs stream cost ({docs} jobs)",
            f"${result['cost']:.4f} by batch",
            f"${result['stream_cost']:.4f} streamed",
            f"{result['cost'] / result['stream_cost']:.2f}x",
            "same jobs, store usage priced by jobs.costs; texts equal to the simulator's",
        ),
        Row(
            f"store work to collect a batch of {docs}",
            f"{written:,} rows in {result['collect_seconds']:.2f} s",
            f"inserted {inserted['chunks']} chunks, {inserted['transitions']} transitions;"
            f" updated {result['jobs_updated']} jobs, {result['jobs_updated']} attempts",
            f"{written / docs:.1f} rows/job",
            "SQLite; the submitter step that reads the JSONL results and applies them",
        ),
        Row(
            f"batch end to every document exported ({docs})",
            f"{result['export_seconds']:.2f} s",
            f"{result['collect_seconds']:.2f} s of it collecting",
            f"{result['export_seconds'] / docs * 1000:.2f} ms/job",
            "from the simulator's batch ending to export_jobs done",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batches", description=__doc__)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=300)
    args = parser.parse_args(argv)
    configure_logging("json", "warning")
    result = anyio.run(run, args.docs, args.tokens)
    for row in rows(result):
        print(row.to_json())


if __name__ == "__main__":
    main()
