"""The dashboard's job list at 100,000 jobs on SQLite: a page reads about its own rows.

Asserted on work done, not time: SQLite's progress handler counts virtual-machine steps, and a page
of the list (first, middle, descending, filtered by state or by model) must take no more steps on
100,000 jobs than on 1,000, within a small factor. The query plans walk the primary key with no
sort. Counts come from the aggregate rows, so the page's counts cost nothing that grows either.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from jobs.models import JobQuery, State
from jobs.sqlite import SQLiteStore
from jobs.sqlite import sql as sqlite_sql

pytestmark = pytest.mark.timeout(120)

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


def queries(jobs: int) -> dict[str, JobQuery]:
    """The pages compared; "middle" ones start halfway through the ids of a store of ``jobs``."""
    middle = f"job-{jobs // 2:08d}"
    return {
        "first page": JobQuery(limit=51),
        "middle page": JobQuery(after_id=middle, limit=51),
        "descending": JobQuery(descending=True, limit=51),
        "descending, middle": JobQuery(descending=True, after_id=middle, limit=51),
        "one state": JobQuery(states=(State.FAILED,), limit=51),
        "one model, middle": JobQuery(model="claude-b", after_id=middle, limit=51),
        "metadata search": JobQuery(search='"t3"', after_id=middle, limit=51),
    }


async def _filled(path: Path, jobs: int) -> None:
    store = SQLiteStore(path)
    await store.counts()  # creates the schema
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(_FILL, {"jobs": jobs})


def _params(query: JobQuery) -> dict[str, object]:
    return {
        "states": None if query.states is None else json.dumps([s.value for s in query.states]),
        "model": query.model,
        "search": query.search,
        "after_id": query.after_id or "",
        "limit": query.limit,
    }


def _steps(path: Path, query: JobQuery) -> tuple[int, list[str]]:
    """VM steps (in units of 100) to read the page, and its query plan."""
    statement = sqlite_sql.FIND_JOBS
    if query.descending:
        statement = sqlite_sql.FIND_JOBS_DESC_AFTER if query.after_id else sqlite_sql.FIND_JOBS_DESC
    conn = sqlite3.connect(path)
    try:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, _params(query))]
        counted = [0]

        def tick() -> int:
            counted[0] += 1
            return 0

        conn.set_progress_handler(tick, 100)
        found = conn.execute(statement, _params(query)).fetchall()
        conn.set_progress_handler(None, 0)
        assert len(found) == query.limit
        return counted[0], plan
    finally:
        conn.close()


async def test_a_page_costs_the_same_at_1000_and_100000_jobs(tmp_path: Path) -> None:
    small, large = tmp_path / "small.db", tmp_path / "large.db"
    await _filled(small, 1_000)
    await _filled(large, 100_000)
    for (name, query), big in zip(queries(1_000).items(), queries(100_000).values(), strict=True):
        few, _ = _steps(small, query)
        many, plan = _steps(large, big)
        assert not any("TEMP B-TREE" in line for line in plan), (name, plan)
        assert any("sqlite_autoindex_jobs_1" in line or "PRIMARY KEY" in line for line in plan), (name, plan)
        assert many <= 2 * few + 5, f"{name}: {many} x100 steps at 100k jobs, {few} at 1k"
    store = SQLiteStore(large)
    try:
        page = await store.find_jobs(queries(100_000)["one state"])
        assert {job.state for job in page} == {State.FAILED}
        assert (await store.counts())[State.FAILED] == 20_000
    finally:
        await store.close()
