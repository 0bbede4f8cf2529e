"""Store blips and outages during a real pool run (real SDK, real HTTP, the simulator, SQLite
behind the fault-injecting wrapper): no job fails, none is charged an attempt, no text is lost."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anthropic
import anyio
import pytest

from jobs.buckets import Limits
from jobs.models import JobSpec, Outcome, State
from jobs.sqlite import SQLiteStore
from tests.faulty_store import FaultyStore
from tests.pool_harness import FAST_SETTINGS, expected, spec
from worker.errors import AccountError, OutageLimitError
from worker.limits import FleetLimiter
from worker.outage import StoreGuard
from worker.pool import Pool, PoolSettings
from worker.simulator import SimulatorConfig, run_simulator

SETTINGS = dataclasses.replace(FAST_SETTINGS, outage_limit=60.0, shutdown_deadline=2.0)


@asynccontextmanager
async def rig(
    tmp_path: Path, jobs: list[JobSpec], sim: SimulatorConfig | None = None, *, api_key: str = "test"
) -> AsyncIterator[tuple[FaultyStore, anthropic.AsyncAnthropic]]:
    inner = SQLiteStore(tmp_path / "jobs.db")
    await inner.enqueue(jobs)
    try:
        async with run_simulator(sim or SimulatorConfig()) as simulator:
            client = anthropic.AsyncAnthropic(api_key=api_key, base_url=simulator.base_url, max_retries=0)
            try:
                yield FaultyStore(inner), client
            finally:
                await client.close()
    finally:
        await inner.close()


async def assert_untouched_or_exact(faulty: FaultyStore, jobs: list[JobSpec], *, done: bool) -> None:
    """Every job succeeded byte-identical (``done``), or is queued; none was failed or charged."""
    for job in jobs:
        got = await faulty.inner.get(job.id)
        assert got.failures == 0, (job.id, got.failures, got.last_error)
        if done:
            assert got.state is State.SUCCEEDED, (job.id, got.state)
            assert await faulty.inner.read_text(job.id) == expected(job)
        else:
            assert got.state is State.QUEUED, (job.id, got.state)
            assert expected(job).startswith(await faulty.inner.read_text(job.id))


async def eventually(condition: Callable[[], bool | Awaitable[bool]], limit: float = 30.0) -> None:
    with anyio.fail_after(limit):
        while True:
            value = condition()
            if value if isinstance(value, bool) else await value:
                return
            await anyio.sleep(0.01)


@pytest.mark.parametrize("nth", [1, 2, 3, 5, 8])
async def test_one_blip_in_the_limiter_fails_no_job(tmp_path: Path, nth: int) -> None:
    """Before: a single StoreError from acquire/started/release failed the job for good."""
    jobs = [spec(f"blip-{i}", tokens=300, max_attempts=1) for i in range(3)]
    async with rig(tmp_path, jobs) as (faulty, client):
        faulty.fail_nth("update_buckets", nth)
        guard = StoreGuard(limit=60, retry_seconds=0.01)
        limiter = FleetLimiter(faulty.store, Limits(requests=60_000, output_tokens=10_000_000), guard=guard)
        pool = Pool(faulty.store, client, SETTINGS, limiter=limiter, guard=guard)
        stats = await pool.run(until_empty=True, handle_signals=False)
        assert faulty.injected["update_buckets"] == 1
        assert stats.failed == 0
        await assert_untouched_or_exact(faulty, jobs, done=True)


@pytest.mark.parametrize("method", ["claim", "counts", "settle", "commit"])
async def test_a_blip_anywhere_in_the_pool_crashes_nothing(tmp_path: Path, method: str) -> None:
    """Before: a StoreError in the claim loop or ``counts`` crashed the pool."""
    jobs = [spec(f"{method}-{i}", tokens=300, max_attempts=1) for i in range(3)]
    async with rig(tmp_path, jobs) as (faulty, client):
        faulty.fail_nth(method, 1)
        pool = Pool(faulty.store, client, SETTINGS, guard=StoreGuard(limit=60, retry_seconds=0.01))
        stats = await pool.run(until_empty=True, handle_signals=False)
        assert faulty.injected[method] == 1
        assert stats.failed == 0
        await assert_untouched_or_exact(faulty, jobs, done=True)


@pytest.mark.parametrize("nth", [1, 3])
async def test_a_commit_whose_answer_was_lost_is_reconciled(tmp_path: Path, nth: int) -> None:
    """The commit went through but the worker saw an error: the retry's offset mismatch is
    recognised as our own write (same lease) instead of a lost lease."""
    jobs = [spec(f"ambiguous-{i}", tokens=1500, max_attempts=1) for i in range(2)]
    async with rig(tmp_path, jobs, SimulatorConfig(tokens_per_second=3000)) as (faulty, client):
        faulty.fail_nth("commit", nth, after=True)
        pool = Pool(faulty.store, client, SETTINGS, guard=StoreGuard(limit=60, retry_seconds=0.01))
        stats = await pool.run(until_empty=True, handle_signals=False)
        assert faulty.injected["commit"] == 1
        assert stats.lease_lost == 0 and stats.failed == 0
        await assert_untouched_or_exact(faulty, jobs, done=True)


async def test_an_outage_mid_stream_loses_nothing_and_charges_nothing(tmp_path: Path) -> None:
    jobs = [spec(f"out-{i}", tokens=1500) for i in range(4)]
    async with rig(tmp_path, jobs, SimulatorConfig(tokens_per_second=1500)) as (faulty, client):
        pool = Pool(faulty.store, client, SETTINGS, guard=StoreGuard(limit=60, retry_seconds=0.01))
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await pool.run(until_empty=True, handle_signals=False)

            tg.start_soon(run)

            async def streaming() -> bool:
                return all([(await faulty.inner.get(j.id)).committed_chars > 0 for j in jobs])

            await eventually(streaming)
            faulty.go_down()
            await eventually(lambda: faulty.injected["commit"] >= 10)  # streams went on meanwhile
            faulty.come_back()
        assert pool.guard.outages >= 1
        assert pool.writer.stats.unsaved_chars == 0
        await assert_untouched_or_exact(faulty, jobs, done=True)


async def test_pending_text_is_bounded_by_holding_the_largest_stream(tmp_path: Path) -> None:
    jobs = [spec(f"held-{i}", tokens=1500) for i in range(3)]
    settings = dataclasses.replace(SETTINGS, max_pending_chars=2000)
    async with rig(tmp_path, jobs, SimulatorConfig(tokens_per_second=2000)) as (faulty, client):
        pool = Pool(faulty.store, client, settings, guard=StoreGuard(limit=60, retry_seconds=0.01))
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await pool.run(until_empty=True, handle_signals=False)

            tg.start_soon(run)
            await eventually(lambda: pool.running == len(jobs))
            faulty.go_down()
            await eventually(lambda: pool.writer.stats.held >= 1)
            faulty.come_back()
        assert pool.writer.stats.unsaved_chars == 0
        await assert_untouched_or_exact(faulty, jobs, done=True)


async def test_an_outage_past_the_limit_stops_the_pool_and_fails_nothing(tmp_path: Path) -> None:
    jobs = [spec(f"limit-{i}", tokens=300) for i in range(3)]
    settings = dataclasses.replace(SETTINGS, outage_limit=0.3, shutdown_deadline=0.5)
    async with rig(tmp_path, jobs) as (faulty, client):
        faulty.go_down()
        pool = Pool(faulty.store, client, settings, guard=StoreGuard(limit=0.3, retry_seconds=0.01))
        with pytest.raises(OutageLimitError, match="outage_limit"):
            await pool.run(until_empty=True, handle_signals=False)
        await assert_untouched_or_exact(faulty, jobs, done=False)


async def test_a_refused_key_stops_the_run_and_leaves_every_job_queued(tmp_path: Path) -> None:
    """Before: 50 of 50 jobs were FAILED in 0.65 s by a wrong key."""
    jobs = [spec(f"key-{i}", tokens=300, max_attempts=1) for i in range(6)]
    sim = SimulatorConfig(api_key="the-right-key")
    async with rig(tmp_path, jobs, sim, api_key="a-wrong-key") as (faulty, client):
        settings: PoolSettings = dataclasses.replace(SETTINGS, concurrency=2)
        pool = Pool(faulty.store, client, settings)
        with pytest.raises(AccountError, match="HTTP 401"):
            await pool.run(until_empty=True, handle_signals=False)
        await assert_untouched_or_exact(faulty, jobs, done=False)
        attempts = [a for j in jobs for a in await faulty.inner.attempts(j.id)]
        assert len(attempts) <= 2, "no new claims once the key was refused"
        assert {a.outcome for a in attempts} <= {Outcome.RELEASED}


async def test_a_529_storm_uses_patience_not_attempts(tmp_path: Path) -> None:
    """Before: with http_529=1.0 all jobs failed within about 1 s."""
    jobs = [spec(f"storm-{i}", tokens=300, max_attempts=2) for i in range(4)]
    async with rig(tmp_path, jobs, SimulatorConfig(overload_seconds=0.5)) as (faulty, client):
        pool = Pool(faulty.store, client, SETTINGS)
        stats = await pool.run(until_empty=True, handle_signals=False)
        assert stats.failed == 0 and stats.retries == 0
        assert pool.pauses.spared >= 2, "the storm must have been met"
        await assert_untouched_or_exact(faulty, jobs, done=True)


async def test_past_the_patience_529s_count_as_attempts_again(tmp_path: Path) -> None:
    jobs = [spec("impatient", tokens=300, max_attempts=2)]
    settings = dataclasses.replace(SETTINGS, overload_patience=0.0)
    async with rig(tmp_path, jobs, SimulatorConfig(overload_seconds=600)) as (faulty, client):
        stats = await Pool(faulty.store, client, settings).run(until_empty=True, handle_signals=False)
        assert stats.failed == 1
        assert (await faulty.inner.get("impatient")).state is State.FAILED
