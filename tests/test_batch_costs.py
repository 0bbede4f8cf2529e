"""``status`` prices batch jobs at the batch price: the aggregate rows are grouped by job mode, so
their total equals the sum of what ``show`` reports per job (``jobs.costs.job_spend``), on both
backends and after the migration that added the grouping."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from jobs.costs import Spend, job_spend, load_prices, totals_spend
from jobs.models import AttemptResult, Outcome, State, Totals, Usage
from jobs.postgres import PostgresStore
from jobs.sqlite import SQLiteStore
from jobs.sqlite import sql as sqlite_sql
from jobs.store import Store
from tests.store_fixtures import StoreFactory, make_spec

MODEL = "claude-haiku-4-5"  # $1 in, $5 out per MTok; batch at half
USAGE = Usage(1_000_000, 200_000)  # $2.00 streamed, $1.00 by batch
PRICES = load_prices()


def test_totals_spend_prices_batch_rows_at_the_batch_price() -> None:
    rows = [
        Totals(State.SUCCEEDED, MODEL, "5m", 1, 0, USAGE, 100_000, "stream"),
        Totals(State.SUCCEEDED, MODEL, "5m", 1, 0, USAGE, 100_000, "batch"),
    ]
    spend = totals_spend(PRICES, rows)
    assert spend.total_usd == pytest.approx(2.0 + 1.0)
    assert spend.waste_usd == pytest.approx(0.5 + 0.25)


async def _finish(store: Store, job_id: str, mode: str) -> None:
    """One job of ``mode``, finished with :data:`USAGE`."""
    await store.enqueue([make_spec(job_id, model=MODEL, mode=mode)])
    if mode == "batch":
        [claim] = await store.reserve_batch("sub", f"k-{job_id}", 1, 3600)
    else:
        [claim] = await store.claim("w", 30)
    await store.settle(job_id, claim.token, AttemptResult(Outcome.SUCCEEDED, USAGE, 1))


async def _shown(store: Store, ids: list[str]) -> Spend:
    spend = Spend(0.0, 0.0)
    for job_id in ids:
        spend += job_spend(PRICES, await store.get(job_id))
    return spend


async def test_status_totals_equal_the_sum_of_show(make_store: StoreFactory) -> None:
    store = await make_store()
    for job_id, mode in (("s1", "stream"), ("b1", "batch"), ("b2", "batch")):
        await _finish(store, job_id, mode)
    total = totals_spend(PRICES, await store.totals())
    assert total.total_usd == pytest.approx(2.0 + 1.0 + 1.0)
    assert total.total_usd == pytest.approx((await _shown(store, ["s1", "b1", "b2"])).total_usd)


async def test_a_version_7_sqlite_file_regroups_its_totals_by_mode(tmp_path: Path) -> None:
    """The totals of a file written before the grouping by mode are rebuilt from its jobs."""
    path = tmp_path / "v7.db"
    store = SQLiteStore(path)
    await _finish(store, "s1", "stream")
    await _finish(store, "b1", "batch")
    await store.close()
    conn = sqlite3.connect(path)  # back to version 7: totals grouped without the mode
    for name in ("insert", "delete", "move", "regroup"):
        conn.execute(f"DROP TRIGGER job_totals_{name}")
    conn.execute("DROP TABLE job_totals")
    for statement in sqlite_sql.MIGRATION_TOTALS:
        conn.execute(statement)
    conn.execute("ALTER TABLE buckets DROP COLUMN pause_reason")  # version 9's column
    conn.execute("DROP INDEX jobs_created")  # version 10's index
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    try:
        modes = {t.mode: t.jobs for t in await store.totals()}
        assert modes == {"stream": 1, "batch": 1}
        assert totals_spend(PRICES, await store.totals()).total_usd == pytest.approx(3.0)
        await _finish(store, "b2", "batch")  # the new triggers keep them
        assert {t.mode: t.jobs for t in await store.totals()} == {"stream": 1, "batch": 2}
    finally:
        await store.close()


@pytest.mark.postgres
async def test_a_version_8_postgres_queue_regroups_its_totals_by_mode(postgres_url: str) -> None:
    """As for SQLite: the queue put back to version 8 (totals of migration 5), then migrated."""
    from jobs.postgres.schema import MIGRATIONS

    store = PostgresStore(postgres_url)
    try:
        await _finish(store, "s1", "stream")
        await _finish(store, "b1", "batch")
    finally:
        await store.close()
    [by_mode] = [m for m in MIGRATIONS if m.version == 9]
    [v5] = [m for m in MIGRATIONS if m.version == 5]
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        for statement in by_mode.statements[:7]:  # the drops: triggers, functions, table
            await conn.execute(statement.encode())
        for statement in v5.statements:
            await conn.execute(statement.encode())
        await conn.execute(b"ALTER TABLE buckets DROP COLUMN pause_reason")  # migration 10's column
        await conn.execute(b"DROP INDEX jobs_created")  # migration 11's index
        await conn.execute(b"DELETE FROM schema_version WHERE version >= 9")
    store = PostgresStore(postgres_url)
    try:
        assert {t.mode: t.jobs for t in await store.totals()} == {"stream": 1, "batch": 1}
        assert totals_spend(PRICES, await store.totals()).total_usd == pytest.approx(3.0)
        await _finish(store, "b2", "batch")
        assert {t.mode: t.jobs for t in await store.totals()} == {"stream": 1, "batch": 2}
    finally:
        await store.close()
