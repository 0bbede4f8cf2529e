"""``status`` and ``show`` on a million jobs, on SQLite and PostgreSQL, beside the old paging.

    python -m bench.status_scale                       # 1,000,000 jobs; the old path on 100,000
    python -m bench.status_scale --jobs 200000 --paged-jobs 20000

Jobs are inserted by one SQL statement (a recursive CTE on SQLite, ``generate_series`` on
PostgreSQL), so the store's triggers keep the aggregates exactly as they would for an enqueue.
``status`` is timed as the command runs it in-process: open the queue read-only, read
``totals()`` and ``next_due()``, sum characters, usage and cost. ``show`` reads one job, its
attempts, history and text. The old ``status`` paged through every job with ``list_jobs``; it
is re-run here on ``--paged-jobs`` jobs of a SQLite file, for the ratio. Medians of 5 runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from bench.common import Row
from bench.queue_throughput import scratch_postgres
from jobs import rules
from jobs.backends import open_store
from jobs.costs import Spend, job_spend, load_prices, totals_spend
from jobs.models import Usage

__all__ = ("main", "rows", "run")

_SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :jobs)
INSERT INTO jobs (id, messages, model, max_tokens, output_budget, max_attempts, priority, metadata,
                  state, run_at, created_at, updated_at, committed_chars, output_tokens, document_tokens)
SELECT printf('job-%08d', i), '[{"role": "user", "content": "Write a long document."}]',
       'claude-sonnet-4-5', 8000, 20000, 5, 0, '{}',
       CASE i % 5 WHEN 0 THEN 'queued' WHEN 1 THEN 'running' WHEN 2 THEN 'succeeded'
                  WHEN 3 THEN 'failed' ELSE 'cancelled' END,
       i, i, i, i % 1000, i % 700, i % 500
FROM n
"""

_PG_FILL = """
INSERT INTO jobs (id, messages, model, max_tokens, output_budget, max_attempts, priority, metadata,
                  state, run_at, created_at, updated_at, committed_chars, output_tokens, document_tokens)
SELECT format('job-%%s', lpad(i::text, 8, '0')), '[{"role": "user", "content": "Write a long document."}]',
       'claude-sonnet-4-5', 8000, 20000, 5, 0, '{}',
       (ARRAY['queued', 'running', 'succeeded', 'failed', 'cancelled'])[i %% 5 + 1],
       i, i, i, i %% 1000, i %% 700, i %% 500
FROM generate_series(0, %(jobs)s - 1) AS i
"""


async def _status(url: str) -> dict[str, Any]:
    prices = load_prices()
    store = open_store(url, access="read")
    try:
        totals = await store.totals()
        await store.next_due()
    finally:
        await store.close()
    usage = Usage()
    for row in totals:
        usage += row.usage
    spend = totals_spend(prices, totals)
    return {"jobs": sum(rules.counts(totals).values()), "usage": usage, "cost": spend.total_usd}


async def _paged_status(url: str) -> int:
    """The old ``status``: every job read, page by page, and summed in Python."""
    prices = load_prices()
    store = open_store(url, access="read")
    jobs, spend, after = 0, Spend(0.0, 0.0), None
    try:
        while page := await store.list_jobs(after_id=after, limit=1000):
            after = page[-1].id
            jobs += len(page)
            for job in page:
                spend += job_spend(prices, job)
    finally:
        await store.close()
    return jobs


async def _show(url: str, job_id: str) -> None:
    store = open_store(url, access="read")
    try:
        job = await store.get(job_id)
        await store.attempts(job.id)
        await store.history(job.id)
        await store.read_text(job.id)
    finally:
        await store.close()


async def _median(action: Callable[[], Awaitable[object]], runs: int = 5) -> float:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        await action()
        seconds.append(time.perf_counter() - start)
    return round(statistics.median(seconds), 4)


async def _measure(url: str, jobs: int) -> dict[str, Any]:
    found = await _status(url)
    assert found["jobs"] == jobs, found
    middle = f"job-{jobs // 2:08d}"
    return {
        "jobs": jobs,
        "status_seconds": await _median(lambda: _status(url)),
        "show_seconds": await _median(lambda: _show(url, middle)),
    }


def _fill_sqlite(path: Path, jobs: int) -> float:
    async def create() -> None:
        store = open_store(f"sqlite:///{path}")
        await store.counts()
        await store.close()

    anyio.run(create)
    start = time.perf_counter()
    with sqlite3.connect(path) as conn:
        conn.execute(_SQLITE_FILL, {"jobs": jobs})
    return time.perf_counter() - start


async def _fill_postgres(url: str, jobs: int) -> float:
    import psycopg

    store = open_store(url)
    await store.counts()  # creates the schema
    await store.close()
    start = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute(_PG_FILL, {"jobs": jobs})
        await conn.commit()
        await conn.execute("ANALYZE jobs")
    return time.perf_counter() - start


async def run(jobs: int, paged_jobs: int, pg_url: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "status.db"
        fill = await anyio.to_thread.run_sync(_fill_sqlite, path, jobs)
        result["sqlite"] = await _measure(f"sqlite:///{path}", jobs) | {"fill_seconds": round(fill, 1)}
        small = Path(folder) / "paged.db"
        await anyio.to_thread.run_sync(_fill_sqlite, small, paged_jobs)
        url = f"sqlite:///{small}"
        result["sqlite_paged"] = {
            "jobs": paged_jobs,
            "old_status_seconds": await _median(lambda: _paged_status(url), runs=1),
            "new_status_seconds": await _median(lambda: _status(url)),
        }
    if pg_url is not None:
        async with scratch_postgres(pg_url) as url:
            fill = await _fill_postgres(url, jobs)
            result["postgresql"] = await _measure(url, jobs) | {"fill_seconds": round(fill, 1)}
    return result


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def rows(jobs: int, paged_jobs: int, pg_url: str | None) -> list[Row]:
    """The suite's rows (``python -m bench``): ``status`` and ``show`` at ``jobs`` jobs on both
    backends, beside the old paging ``status`` at ``paged_jobs``; a PostgreSQL server that cannot
    be used leaves its figures out and says so."""
    try:
        found = await run(jobs, paged_jobs, pg_url)
    except OSError as exc:
        found = await run(jobs, paged_jobs, None) | {"skipped": str(exc).strip()}
    lite, paged, pg = found["sqlite"], found["sqlite_paged"], found.get("postgresql")
    pg_text = (
        f", PostgreSQL {_ms(pg['status_seconds'])}"
        if pg
        else f" (PostgreSQL skipped: {found.get('skipped')})"
    )
    return [
        Row(
            name=f"`status` on {jobs:,} jobs (aggregates kept by triggers)",
            ours=f"SQLite {_ms(lite['status_seconds'])}{pg_text}; `show` of one job "
            f"{_ms(lite['show_seconds'])}" + (f" / {_ms(pg['show_seconds'])}" if pg else ""),
            baseline=f"the old paging path on {paged_jobs:,} SQLite jobs: "
            f"{paged['old_status_seconds']:.2f} s",
            ratio=f"{paged['old_status_seconds'] / lite['status_seconds']:,.0f}× faster at "
            f"{paged_jobs / jobs:.2g}× the size",
            method=(
                f"{jobs:,} jobs inserted by one SQL statement (the triggers keep the aggregates), "
                "status read in-process as the command does it, median of 5; the old path pages "
                f"every job with list_jobs on {paged_jobs:,} jobs"
            ),
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.status_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--paged-jobs", type=int, default=100_000)
    parser.add_argument(
        "--pg-url", default=os.environ.get("TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    pg_url = None if args.no_postgres else args.pg_url
    print(json.dumps(anyio.run(run, args.jobs, args.paged_jobs, pg_url), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
