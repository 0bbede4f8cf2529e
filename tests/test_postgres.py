"""PostgreSQL only: migrations, claims across connection pools, LISTEN/NOTIFY, lost connections.

The behaviour both backends share is proven by tests/test_store_contract.py; these tests cover what
only a server has. Each test gets a fresh database (``postgres_url``, see tests/store_fixtures.py).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import psycopg
import pytest

from jobs.errors import StoreError
from jobs.models import AttemptResult, CheckpointWrite, Outcome, State, Usage, WriteStatus
from jobs.postgres import PostgresStore, schema
from jobs.sqlite.sql import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from tests.store_fixtures import FakeClock, make_spec, postgres_server
from worker.commands.migrate import migrate_command
from worker.config import Config, QueueSettings

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[1]


@asynccontextmanager
async def opened(url: str, clock: Callable[[], float] | None = None) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(url, clock=clock)
    try:
        yield store
    finally:
        await store.close()


async def sql(url: str, query: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(query.encode())
        return await cur.fetchall() if cur.description else []


# -- schema ------------------------------------------------------------------------------------


async def test_first_use_migrates_once_even_when_a_fleet_starts_together() -> None:
    """Eight stores open an empty database at once: the advisory lock lets one migrate and the
    others find the schema current."""
    url = await postgres_server.new_database(empty=True)
    try:
        stores = [PostgresStore(url) for _ in range(8)]
        try:
            async with anyio.create_task_group() as tg:
                for store in stores:
                    tg.start_soon(store.counts)
        finally:
            for store in stores:
                await store.close()
        rows = await sql(url, "SELECT version, description FROM schema_version ORDER BY version")
        assert [row[0] for row in rows] == [m.version for m in schema.MIGRATIONS]
    finally:
        await postgres_server.drop_created()


async def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    await sql(postgres_url, "INSERT INTO schema_version VALUES (99, 'from the future', 0)")
    async with opened(postgres_url) as store:
        with pytest.raises(StoreError, match="schema version 99, newer than this program's"):
            await store.get("a")


async def test_a_manual_migration_stops_workers_until_migrate_runs(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step marked not automatic is never applied by a starting worker: it refuses to start
    with a message, and ``migrate`` (the command's call) applies it."""
    manual = schema.Migration(
        schema.SCHEMA_VERSION + 1,
        "rewrite everything",
        ("CREATE TABLE big_rewrite (x int)",),
        automatic=False,
    )
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, manual))
    async with opened(postgres_url) as worker:
        with pytest.raises(StoreError, match="must be applied by hand: run `python -m worker migrate`"):
            await worker.counts()
    async with opened(postgres_url) as operator:
        assert await operator.migrate() == manual.version
        assert await operator.migrate() == manual.version
    async with opened(postgres_url) as worker:
        assert (await worker.counts())[State.QUEUED] == 0
    versions = await sql(postgres_url, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(v,) for v in range(1, manual.version + 1)]


async def test_migrate_command_prints_the_version(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await migrate_command(argparse.Namespace(), Config(queue=QueueSettings(url=postgres_url)))
    out = capsys.readouterr().out
    assert out.startswith("postgresql (") and out.endswith(f"schema version {schema.SCHEMA_VERSION}\n")
    assert "@" not in out, "no credentials in the output"

    sqlite_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    await migrate_command(argparse.Namespace(), Config(queue=QueueSettings(url=sqlite_url)))
    assert (
        capsys.readouterr().out
        == f"sqlite ({tmp_path / 'jobs.db'}): schema version {SQLITE_SCHEMA_VERSION}\n"
    )


# -- claims ------------------------------------------------------------------------------------


async def test_claims_are_exclusive_across_pools_including_expired_leases(postgres_url: str) -> None:
    """Four stores (four connection pools, as four processes would have) claim 200 jobs at once;
    then, once every lease has expired, reclaim them at once: each job is taken once each time,
    and each expiry is recorded once."""
    clock = FakeClock()
    stores = [PostgresStore(postgres_url, clock=clock) for _ in range(4)]
    try:
        await stores[0].enqueue([make_spec(f"j{i:03}") for i in range(200)])

        async def claim_all() -> collections.Counter[str]:
            claimed: collections.Counter[str] = collections.Counter()

            async def claimer(store: PostgresStore, n: int) -> None:
                while claims := await store.claim(f"w{n}", 10, limit=1 + n % 4):
                    claimed.update(c.job.id for c in claims)

            async with anyio.create_task_group() as tg:
                for n in range(16):
                    tg.start_soon(claimer, stores[n % 4], n)
            return claimed

        first = await claim_all()
        assert len(first) == 200 and set(first.values()) == {1}
        clock.advance(11)
        second = await claim_all()
        assert len(second) == 200 and set(second.values()) == {1}
        for job_id in ("j000", "j199"):
            assert [a.outcome for a in await stores[0].attempts(job_id)] == [Outcome.LEASE_EXPIRED, None]
            assert (await stores[0].get(job_id)).failures == 1
    finally:
        for store in stores:
            await store.close()


async def test_a_large_batch_is_one_commit_with_per_write_statuses(postgres_url: str) -> None:
    """300 jobs' appends, heartbeats and usage in one call; refused writes change nothing."""
    async with opened(postgres_url) as store:
        await store.enqueue([make_spec(f"j{i:03}") for i in range(300)])
        claims = await store.claim("w", 30, limit=300)
        writes = [
            CheckpointWrite(c.job.id, c.token, 0, "x" * (i % 3), Usage(i, 2 * i) if i % 2 else None)
            for i, c in enumerate(claims)
        ]
        writes.append(CheckpointWrite(claims[0].job.id, "stale", 0, "lost"))
        statuses = await store.commit(writes, 30)
        assert statuses == [WriteStatus.OK] * 300 + [WriteStatus.LEASE_LOST]
        for i, claim in enumerate(claims[:6]):
            job = await store.get(claim.job.id)
            assert (job.committed_chars, await store.read_text(claim.job.id)) == (i % 3, "x" * (i % 3))
            assert job.usage == (Usage(i, 2 * i) if i % 2 else Usage())


async def test_text_round_trips_nul_and_refuses_lone_surrogates(postgres_url: str) -> None:
    """PostgreSQL text cannot hold NUL, so chunks are UTF-8 bytea; text with no UTF-8 form is a
    StoreError and the batch writes nothing."""
    async with opened(postgres_url) as store:
        await store.enqueue([make_spec("a")])
        [claim] = await store.claim("w", 30)
        ok = CheckpointWrite("a", claim.token, 0, "nul \x00 and ü")
        with pytest.raises(StoreError, match="cannot store"):
            await store.commit([ok, CheckpointWrite("a", claim.token, 12, "lone \ud800")], 30)
        assert (await store.get("a")).committed_chars == 0
        assert await store.commit([ok], 30) == [WriteStatus.OK]
        assert await store.read_text("a") == "nul \x00 and ü"


# -- wake-ups ----------------------------------------------------------------------------------


async def test_wait_for_jobs_wakes_on_enqueue_and_times_out_otherwise(postgres_url: str) -> None:
    async with opened(postgres_url) as waiter, opened(postgres_url) as producer:
        await waiter.wait_for_jobs(0.01)  # the first call connects and returns: look for work now
        started = anyio.current_time()
        await waiter.wait_for_jobs(0.2)
        assert anyio.current_time() - started >= 0.19, "nothing was enqueued: waits the timeout"

        await producer.enqueue([make_spec("a")])
        started = anyio.current_time()
        with anyio.fail_after(10):
            await waiter.wait_for_jobs(60)
        assert anyio.current_time() - started < 5

        # Many jobs in one enqueue, many requeued in one transaction: one notification each.
        await producer.enqueue([make_spec(f"burst-{i}") for i in range(50)])
        with anyio.fail_after(10):
            await waiter.wait_for_jobs(60)
        started = anyio.current_time()
        await waiter.wait_for_jobs(0.2)
        assert anyio.current_time() - started >= 0.19, "one wake-up for the whole batch"
        for claim in await producer.claim("w", 30, limit=10):
            await producer.settle(claim.job.id, claim.token, AttemptResult(Outcome.FAILED, error="x"))
        assert await producer.retry_failed() == 10
        with anyio.fail_after(10):
            await waiter.wait_for_jobs(60)
        started = anyio.current_time()
        await waiter.wait_for_jobs(0.2)
        assert anyio.current_time() - started >= 0.19


async def test_wait_for_jobs_survives_losing_its_connection(postgres_url: str) -> None:
    """With its LISTEN connection killed, waiting degrades to polling, then reconnects."""
    async with opened(postgres_url) as waiter, opened(postgres_url) as producer:
        await waiter.wait_for_jobs(0.01)
        await sql(
            postgres_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
        )
        with anyio.fail_after(10):
            await waiter.wait_for_jobs(0.1)  # the loss is noticed: a sleep, not an error

        async def listening_again() -> bool:
            started = anyio.current_time()
            await waiter.wait_for_jobs(0.1)  # polls (sleeps) until the reconnection is due ...
            return anyio.current_time() - started < 0.05  # ... then a fresh connection returns at once

        with anyio.fail_after(10):
            while not await listening_again():
                pass
        await producer.enqueue([make_spec("a")])
        with anyio.fail_after(10):
            await waiter.wait_for_jobs(60)


async def test_a_cancelled_wait_leaves_the_listener_usable(postgres_url: str) -> None:
    """The pool cancels a wait when one of its own jobs ends: the next wait still wakes."""
    async with opened(postgres_url) as waiter, opened(postgres_url) as producer:
        await waiter.wait_for_jobs(0.01)
        with anyio.move_on_after(0.1) as scope:
            await waiter.wait_for_jobs(60)
        assert scope.cancelled_caught
        await producer.enqueue([make_spec("a")])
        with anyio.fail_after(10):
            await waiter.wait_for_jobs(60)


# -- lost connections and errors ---------------------------------------------------------------


async def test_pooled_connections_killed_by_the_server_are_replaced(postgres_url: str) -> None:
    """Every connection of the pool is terminated (as a restart does): the next calls retry on
    fresh connections instead of failing."""
    async with opened(postgres_url, FakeClock()) as store:
        await store.enqueue([make_spec("a"), make_spec("b")])
        await sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert (await store.counts())[State.QUEUED] == 2
        assert len(await store.claim("w", 30, limit=2)) == 2


async def test_an_unreachable_server_is_a_prompt_store_error() -> None:
    store = PostgresStore("postgresql://nobody@127.0.0.1:1/none", timeout=0.5)
    try:
        with anyio.fail_after(15), pytest.raises(StoreError, match="cannot connect"):
            await store.get("a")
    finally:
        await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get("a")


def test_a_missing_driver_names_the_extra() -> None:
    """Without psycopg, opening a postgresql:// queue says which extra to install."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["psycopg"] = None
        from jobs.errors import MissingDependencyError
        from jobs.backends import open_store
        try:
            open_store("postgresql://localhost/db")
        except MissingDependencyError as exc:
            print(exc)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "pip install 'longform-worker[postgres]'" in out.stdout


async def test_a_large_first_enqueue_gives_the_planner_statistics(postgres_url: str) -> None:
    """Without statistics a claim sorts every due job; the first enqueue of 1,000 jobs or more
    into a table never analysed runs ANALYZE, so claims walk the claim-order index from then on.
    A small enqueue leaves it to autovacuum."""
    query = "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relid = 'jobs'::regclass"
    async with opened(postgres_url) as store:
        await store.enqueue([make_spec(f"small-{n}") for n in range(10)])
        assert await sql(postgres_url, query) == [(False,)]
        await store.enqueue([make_spec(f"job-{n:05}") for n in range(1000)])
        assert await sql(postgres_url, query) == [(True,)]
        plan = await sql(
            postgres_url,
            "EXPLAIN SELECT id FROM jobs WHERE state = 'queued' AND run_at <= 1e12 "
            "ORDER BY priority DESC, run_at, created_at, seq LIMIT 10",
        )
        assert "jobs_claim_order" in " ".join(str(row[0]) for row in plan)
        assert len(await store.claim("w", 30.0, limit=10)) == 10
