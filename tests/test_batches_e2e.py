"""Batch-mode jobs end to end: the real SDK over real HTTP against the simulator's batch endpoints,
beside a streaming pool on the same queue. Every document must equal the simulator's text exactly.

Polling runs on real time (the simulator's batches end after a fraction of a second); the crash
and expiry tests drive ``Submitter.step`` by hand on a fake simulator clock instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anthropic
import anyio

from jobs.models import JobSpec, State
from jobs.sqlite import SQLiteStore
from jobs.store import Store
from tests.pool_harness import CONTINUATION_MODEL, FAST_SETTINGS, PREFILL_MODEL, expected, spec
from tests.simulator_fixtures import SimulatorFactory
from tests.store_fixtures import StoreFactory
from worker.batches import BatchSettings, Submitter, request_params
from worker.pool import Pool
from worker.simulator import BatchConfig, Simulator, SimulatorConfig, run_simulator

FAST = BatchSettings(poll_min=0.02, poll_max=0.05, retry_base=0.01, retry_max=0.02)


def batch(job: JobSpec) -> JobSpec:
    return dataclasses.replace(job, mode="batch")


@asynccontextmanager
async def client_for(sim: Simulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0)
    try:
        yield client
    finally:
        await client.close()


async def run_both(store: Store, sim: Simulator, jobs: Sequence[JobSpec]) -> Submitter:
    """A pool and a submitter on one queue, until nothing is queued or running."""
    await store.enqueue(jobs)
    async with client_for(sim) as client:
        submitter = Submitter(store, client, "w1", FAST)
        pool = Pool(store, client, FAST_SETTINGS)
        async with anyio.create_task_group() as tg:
            tg.start_soon(submitter.run)
            with anyio.fail_after(60):
                await pool.run(until_empty=True, handle_signals=False)
            tg.cancel_scope.cancel()
    return submitter


async def assert_exact(store: Store, jobs: Sequence[JobSpec]) -> None:
    for job in jobs:
        assert (await store.get(job.id)).state is State.SUCCEEDED, job.id
        assert await store.read_text(job.id) == expected(job), job.id


async def test_batch_and_stream_jobs_share_one_queue(make_store: StoreFactory) -> None:
    """On each backend: the pool streams the stream jobs, the submitter batches the others."""
    streamed = [spec(f"s{i}", tokens=300, model=m) for i, m in enumerate([PREFILL_MODEL, CONTINUATION_MODEL])]
    batched = [batch(spec(f"b{i}", tokens=200 + 50 * i)) for i in range(6)]
    store = await make_store()
    async with run_simulator(SimulatorConfig(batches=BatchConfig(processing_seconds=0.1))) as sim:
        submitter = await run_both(store, sim, [*streamed, *batched])
    await assert_exact(store, [*streamed, *batched])
    assert submitter.applied == len(batched)
    for job in batched:  # each went by batch: one attempt, never claimed by the pool
        [attempt] = await store.attempts(job.id)
        assert attempt.worker == "w1" and attempt.requests == 1
    for job in streamed:
        assert (await store.attempts(job.id))[0].worker != "w1"
    assert await store.open_batches() == []


async def test_long_documents_are_written_by_batch_rounds(tmp_path: Path) -> None:
    jobs = [
        batch(spec("long-prefill", tokens=900, max_tokens=250, model=PREFILL_MODEL)),
        batch(spec("long-continuation", tokens=900, max_tokens=250, model=CONTINUATION_MODEL)),
    ]
    store = SQLiteStore(tmp_path / "jobs.db")
    async with run_simulator(SimulatorConfig(batches=BatchConfig(processing_seconds=0.05))) as sim:
        submitter = await run_both(store, sim, jobs)
    await assert_exact(store, jobs)
    for job in jobs:
        attempts = await store.attempts(job.id)
        assert len(attempts) >= 4, job.id  # 900 tokens at 250 per round
        assert [a.stop_reason for a in attempts[:-1]] == ["max_tokens"] * (len(attempts) - 1)
    assert submitter.submitted >= 4
    await store.close()


async def test_job_ids_that_do_not_fit_custom_id_are_mapped(tmp_path: Path) -> None:
    jobs = [batch(spec(job_id, tokens=150)) for job_id in ("report:2026/q1", "x" * 80, "ünïcode id")]
    store = SQLiteStore(tmp_path / "jobs.db")
    async with run_simulator(SimulatorConfig(batches=BatchConfig(processing_seconds=0.05))) as sim:
        await run_both(store, sim, jobs)
    await assert_exact(store, jobs)
    await store.close()


async def test_errored_requests_are_retried_by_batch(tmp_path: Path) -> None:
    jobs = [batch(spec(f"e{i}", tokens=120)) for i in range(20)]
    store = SQLiteStore(tmp_path / "jobs.db")
    config = SimulatorConfig(batches=BatchConfig(processing_seconds=0.05, error_rate=0.3, seed=3))
    async with run_simulator(config) as sim:
        await run_both(store, sim, jobs)
    await assert_exact(store, jobs)
    retried = [job.id for job in jobs if len(await store.attempts(job.id)) > 1]
    assert retried  # some requests errored, and went again
    for job_id in retried:
        first = (await store.attempts(job_id))[0]
        assert first.outcome == "retry"
        assert "overloaded_error" in (first.error or "") or "api_error" in (first.error or "")
    await store.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def api_batches(client: anthropic.AsyncAnthropic) -> list[str]:
    return [b.id async for b in client.messages.batches.list(limit=100)]


async def test_expired_requests_are_batched_again(tmp_path: Path, make_simulator: SimulatorFactory) -> None:
    clock = Clock()
    sim = await make_simulator(clock=clock, batches=BatchConfig(processing_seconds=10.0, expiry_seconds=5.0))
    jobs = [batch(spec(f"x{i}", tokens=100)) for i in range(4)]
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.enqueue(jobs)
    async with client_for(sim) as client:
        submitter = Submitter(store, client, "w1", FAST)
        assert await submitter.step()  # submitted
        clock.now += 6.0  # past expiry: requests not done by 5 s of the 10 expired
        assert await submitter.step()  # collected (expired ones released), and submitted again
        states = [(await store.get(j.id)).state for j in jobs]
        assert State.RUNNING in states and State.SUCCEEDED in states
        sim.batches.config = dataclasses.replace(sim.batches.config, expiry_seconds=3600.0)
        clock.now += 11.0
        await submitter.step()
        assert len(await api_batches(client)) == 2
    await assert_exact(store, jobs)
    expired = [j.id for j in jobs if len(await store.attempts(j.id)) == 2]
    assert expired == [j.id for j, state in zip(jobs, states, strict=True) if state is State.RUNNING]
    for job_id in expired:
        first = (await store.attempts(job_id))[0]
        assert (first.outcome, first.error) == ("released", "batch request expired")
    await store.close()


async def test_a_crash_around_create_never_submits_twice(
    tmp_path: Path, make_simulator: SimulatorFactory
) -> None:
    """SIGKILL after ``create`` but before the booking (adopted), and before ``create`` (released
    and sent once): the store is what a killed process leaves, the API what it had sent."""
    clock = Clock()
    sim = await make_simulator(clock=clock, batches=BatchConfig(processing_seconds=1.0))
    sent = [batch(spec(f"c{i}", tokens=100)) for i in range(3)]
    unsent = [batch(spec(f"u{i}", tokens=100)) for i in range(2)]
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.enqueue(sent)
    async with client_for(sim) as client:
        claims = await store.reserve_batch("dead", "k-sent", 100, 3600)
        [record] = await store.open_batches()
        cids = {e.job_id: e.custom_id for e in record.entries}
        requests = [{"custom_id": cids[c.job.id], "params": request_params(c.job, c.text)[0]} for c in claims]
        await client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        # ...killed here. Then the unsent ones are reserved by a second process, killed before create.
        await store.enqueue(unsent)
        await store.reserve_batch("dead2", "k-unsent", 100, 3600)
        submitter = Submitter(store, client, "w1", FAST)
        await submitter.step()  # adopts k-sent, releases k-unsent and submits it once
        clock.now += 2.0
        await submitter.step()
        assert len(await api_batches(client)) == 2
    await assert_exact(store, [*sent, *unsent])
    for job in sent:
        assert len(await store.attempts(job.id)) == 1
    await store.close()


async def test_cancelled_jobs_are_dropped_and_an_all_cancelled_batch_is_cancelled(
    tmp_path: Path, make_simulator: SimulatorFactory
) -> None:
    clock = Clock()
    sim = await make_simulator(clock=clock, batches=BatchConfig(processing_seconds=10.0))
    jobs = [batch(spec(f"k{i}", tokens=100)) for i in range(3)]
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.enqueue(jobs[:2])
    async with client_for(sim) as client:
        submitter = Submitter(store, client, "w1", FAST)
        await submitter.step()
        await store.enqueue(jobs[2:])
        await submitter.step()
        [first, _] = await store.open_batches()
        for entry in first.entries:
            await store.cancel(entry.job_id)
        await submitter.step()  # first batch: every job cancelled -> cancelled at the API
        status = (await client.messages.batches.retrieve(first.api_id or "")).processing_status
        assert status == "canceling"
        clock.now += 11.0
        await submitter.step()
    assert [(await store.get(j.id)).state for j in jobs] == [State.CANCELLED] * 2 + [State.SUCCEEDED]
    assert await store.read_text("k0") == ""
    await assert_exact(store, jobs[2:])
    await store.close()


async def test_a_worker_sigkilled_between_submission_and_results(tmp_path: Path) -> None:
    """A real ``run`` process, killed once its batch is submitted; a second ``run --until-empty``
    takes the submitter lease, polls the stored batch and applies its results: one batch in all."""
    import signal

    from tests.test_pool_processes import enqueue, wait_until, worker, write_config

    jobs = [batch(spec(f"k{i}", tokens=150 + 10 * i)) for i in range(5)]
    async with run_simulator(SimulatorConfig(batches=BatchConfig(processing_seconds=2.0))) as sim:
        config = write_config(tmp_path, sim, lease=1.0, grace=1)
        config.write_text(
            config.read_text().replace("poll_seconds = 0.05\n", "poll_seconds = 0.05\nbatch_poll_max = 0.2\n")
        )
        store = await enqueue(tmp_path, jobs)
        try:

            async def submitted() -> bool:
                return any(record.api_id for record in await store.open_batches())

            async with worker(config) as first:
                await wait_until(first, submitted)
                first.send_signal(signal.SIGKILL)
                await first.wait()
            assert {(await store.get(j.id)).state for j in jobs} == {State.RUNNING}
            async with worker(config, "--until-empty") as second:
                with anyio.fail_after(60):
                    assert await second.wait() == 0
            await assert_exact(store, jobs)
            async with client_for(sim) as client:
                assert len(await api_batches(client)) == 1
            for job in jobs:
                assert len(await store.attempts(job.id)) == 1
        finally:
            await store.close()


async def test_an_invalid_request_fails_its_job_and_spares_the_others(
    tmp_path: Path, make_simulator: SimulatorFactory
) -> None:
    """Errors inside ``params`` come back as ``errored`` results when the batch ends; the failure
    policy makes an invalid request terminal (it would fail again), the rest of the batch succeeds."""
    from jobs.models import Message

    clock = Clock()
    sim = await make_simulator(clock=clock, batches=BatchConfig(processing_seconds=1.0))
    good = batch(spec("good", tokens=100))
    prefill = Message("assistant", "A prefill ")  # a 4.6+ model rejects a prefill with a 400
    bad = dataclasses.replace(
        batch(spec("bad", model=CONTINUATION_MODEL)), messages=(*good.messages, prefill)
    )
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.enqueue([good, bad])
    async with client_for(sim) as client:
        submitter = Submitter(store, client, "w1", FAST)
        await submitter.step()
        clock.now += 2.0
        await submitter.step()
    await assert_exact(store, [good])
    failed = await store.get("bad")
    assert failed.state is State.FAILED
    assert "batch request errored: invalid_request_error" in (failed.last_error or "")
    await store.close()
