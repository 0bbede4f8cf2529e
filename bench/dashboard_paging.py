"""The dashboard's job list: one page at 1,000 and at 100,000 SQLite jobs, side by side.

    python -m bench.dashboard_paging                 # 1,000 vs 100,000 jobs
    python -m bench.dashboard_paging --large 1000000

Each page is read with ``Store.find_jobs`` (51 rows: a page and the probe for the next) on a store
filled by one SQL statement; the work is counted as SQLite virtual-machine steps (the progress
handler, per 100 steps) on the same statement, and the wall time is the median of 21 reads. The
ratio large/small says whether a page's cost grows with the number of jobs (1.0: it does not).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from jobs import rules
from jobs.models import JobQuery, State
from jobs.sqlite import SQLiteStore
from jobs.sqlite import sql as sqlite_sql

__all__ = ("main", "run")

_FILL = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :jobs)
INSERT INTO jobs (id, messages, model, max_tokens, output_budget, max_attempts, priority, metadata,
                  state, run_at, created_at, updated_at)
SELECT printf('job-%08d', i), '[{"role": "user", "content": "Write."}]',
       CASE i % 2 WHEN 0 THEN 'claude-a' ELSE 'claude-b' END, 8000, 20000, 5, 0,
       printf('{"team": "t%d"}', i % 7),
       CASE i % 5 WHEN 0 THEN 'queued' WHEN 1 THEN 'running' WHEN 2 THEN 'succeeded'
                  WHEN 3 THEN 'failed' ELSE 'cancelled' END,
       i, i, i
FROM n
"""


def _queries(jobs: int) -> dict[str, JobQuery]:
    middle = f"job-{jobs // 2:08d}"
    return {
        "first page": JobQuery(limit=51),
        "middle page": JobQuery(after_id=middle, limit=51),
        "descending, middle": JobQuery(descending=True, after_id=middle, limit=51),
        "state=failed": JobQuery(states=(State.FAILED,), after_id=middle, limit=51),
        "metadata search": JobQuery(search='"t3"', after_id=middle, limit=51),
        # created_at = i in the fill, so the middle job's position is (jobs // 2, its id).
        "newest first, middle": JobQuery(
            order="created", descending=True, after_id=middle, after_created=float(jobs // 2), limit=51
        ),
        "oldest first, middle": JobQuery(
            order="created", after_id=middle, after_created=float(jobs // 2), limit=51
        ),
    }


def _steps(path: Path, query: JobQuery) -> int:
    name, params = rules.find_jobs_statement(query)  # the statement the store runs
    statement = getattr(sqlite_sql, name)
    params["states"] = None if params["states"] is None else json.dumps(params["states"])
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0

    with sqlite3.connect(path) as conn:
        conn.set_progress_handler(tick, 100)
        conn.execute(statement, params).fetchall()
    return counted[0] * 100


async def _measure(path: Path, jobs: int) -> dict[str, tuple[int, float]]:
    store = SQLiteStore(path)
    await store.counts()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(_FILL, {"jobs": jobs})
    store = SQLiteStore(path)
    found: dict[str, tuple[int, float]] = {}
    try:
        for name, query in _queries(jobs).items():
            times = []
            for _ in range(21):
                start = time.perf_counter()
                await store.find_jobs(query)
                times.append(time.perf_counter() - start)
            found[name] = (_steps(path, query), statistics.median(times) * 1000)
    finally:
        await store.close()
    return found


async def run(small: int, large: int) -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        few = await _measure(Path(folder) / "small.db", small)
        many = await _measure(Path(folder) / "large.db", large)
    lines = [f"| page | {small:,} jobs: steps, ms | {large:,} jobs: steps, ms | steps ratio | time ratio |"]
    lines.append("|---|---|---|---|---|")
    for name, (steps, ms) in few.items():
        big_steps, big_ms = many[name]
        lines.append(
            f"| {name} | {steps:,}, {ms:.2f} | {big_steps:,}, {big_ms:.2f} | "
            f"{big_steps / steps:.2f} | {big_ms / ms:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    args = parser.parse_args()
    print("\n".join(anyio.run(run, args.small, args.large)))


if __name__ == "__main__":
    main()
