"""Batch jobs whose deadline comes near: streamed instead of batched again, end to end.

The real SDK over real HTTP against the simulator's batch endpoints (processing delay, per-request
errors, expiry), a real streaming pool on the same queue. ``Submitter.step`` runs by hand on two
fake clocks: the simulator's (when batches end) and the submitter's (what deadlines are compared
with); the deadlines themselves lie hours ahead of real time, so the pool never meets them.
Every document must equal the simulator's text exactly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from jobs.models import JobSpec, State
from jobs.sqlite import SQLiteStore
from jobs.store import Store
from tests.pool_harness import CONTINUATION_MODEL, FAST_SETTINGS, PREFILL_MODEL, spec
from tests.simulator_fixtures import SimulatorFactory
from tests.store_fixtures import StoreFactory
from tests.test_batches_e2e import FAST, Clock, api_batches, assert_exact, batch, client_for
from worker.batches import Submitter
from worker.pool import Pool
from worker.simulator import BatchConfig, Simulator

HORIZON = 3600.0
SETTINGS = dataclasses.replace(FAST, horizon=HORIZON)


def due(job: JobSpec, seconds: float) -> JobSpec:
    """``job`` in batch mode with a deadline ``seconds`` from now (real time)."""
    return dataclasses.replace(batch(job), deadline=time.time() + seconds)


def submitter_clock() -> Clock:
    clock = Clock()
    clock.now = time.time()
    return clock


async def stream_the_rest(store: Store, sim: Simulator) -> None:
    """The streaming pool, until nothing is queued or running."""
    async with client_for(sim) as client:
        with anyio.fail_after(60):
            await pool_run(Pool(store, client, FAST_SETTINGS))


async def pool_run(pool: Pool) -> None:
    await pool.run(until_empty=True, handle_signals=False)


async def assert_streamed_after_batch(store: Store, jobs: Sequence[JobSpec]) -> None:
    """Each job ended on the pool, as a stream job, with a ``deadline_near`` switch in its history."""
    for job in jobs:
        stored = await store.get(job.id)
        assert stored.spec.mode == "stream", job.id
        attempts = await store.attempts(job.id)
        assert attempts[0].worker == "w1" and attempts[-1].worker != "w1", job.id
        reasons = [t.reason for t in await store.history(job.id)]
        assert any(r.startswith("deadline_near") for r in reasons), (job.id, reasons)


async def test_errored_results_near_their_deadline_finish_by_streaming(
    make_store: StoreFactory, make_simulator: SimulatorFactory
) -> None:
    """On each backend: every request of the batch errors when the deadline has come within the
    horizon; the jobs are not batched again but streamed, to the simulator's exact text."""
    sim_clock, now = Clock(), submitter_clock()
    config = BatchConfig(processing_seconds=1.0, error_rate=1.0)  # every batch request errors
    sim = await make_simulator(clock=sim_clock, batches=config)
    models = [PREFILL_MODEL, CONTINUATION_MODEL]
    jobs = [due(spec(f"d{i}", tokens=150 + 20 * i, model=m), 5000) for i, m in enumerate(models)]
    store = await make_store()
    await store.enqueue(jobs)
    async with client_for(sim) as client:
        submitter = Submitter(store, client, "w1", SETTINGS, clock=now)
        assert await submitter.step()  # submitted: 5000 s leave the 3600 s horizon
        sim_clock.now += 2.0  # the batch ends, every request errored...
        now.now += 2000.0  # ...and the deadlines are 3000 s away: a new batch might miss them
        assert await submitter.step()
        assert submitter.streamed == len(jobs)
        assert await store.open_batches() == []
        assert len(await api_batches(client)) == 1  # never batched again
    for job in jobs:
        first = (await store.attempts(job.id))[0]
        assert first.outcome == "retry" and "error" in (first.error or "")
    await stream_the_rest(store, sim)
    await assert_exact(store, jobs)
    await assert_streamed_after_batch(store, jobs)


async def test_an_expired_round_near_the_deadline_streams_on_from_the_batch_text(
    make_store: StoreFactory, make_simulator: SimulatorFactory
) -> None:
    """A long document: round 1 by batch (``max_tokens``), round 2 expires when the deadline is
    near; the pool resumes from round 1's text by the streaming rules, byte-identical."""
    sim_clock, now = Clock(), submitter_clock()
    config = BatchConfig(processing_seconds=1.0)
    sim = await make_simulator(clock=sim_clock, batches=config)
    models = [PREFILL_MODEL, CONTINUATION_MODEL]
    jobs = [due(spec(f"long{i}", tokens=700, max_tokens=250, model=m), 5000) for i, m in enumerate(models)]
    store = await make_store()
    await store.enqueue(jobs)
    async with client_for(sim) as client:
        submitter = Submitter(store, client, "w1", SETTINGS, clock=now)
        assert await submitter.step()  # round 1 submitted
        sim_clock.now += 2.0
        assert await submitter.step()  # round 1 applied (max_tokens), round 2 submitted: still far
        assert submitter.streamed == 0 and len(await api_batches(client)) == 2
        kept = {job.id: await store.read_text(job.id) for job in jobs}
        assert all(kept.values())
        sim.batches.config = dataclasses.replace(config, expiry_seconds=0.1)
        sim_clock.now += 2.0  # round 2 expired...
        now.now += 2000.0  # ...with the deadline 3000 s away
        assert await submitter.step()
        assert submitter.streamed == len(jobs) and len(await api_batches(client)) == 2
    for job in jobs:
        assert (await store.read_text(job.id)) == kept[job.id]  # the batch text stays
        second = (await store.attempts(job.id))[1]
        assert (second.outcome, second.error) == ("released", "batch request expired")
    await stream_the_rest(store, sim)
    await assert_exact(store, jobs)
    await assert_streamed_after_batch(store, jobs)
    for job in jobs:  # two batch rounds, then one stream from the kept text (no empty reservation)
        _, _, resumed = await store.attempts(job.id)
        assert resumed.chars_at_start == len(kept[job.id]) > 0


async def test_expired_results_far_from_the_deadline_are_batched_again(
    tmp_path: Path, make_simulator: SimulatorFactory
) -> None:
    sim_clock, now = Clock(), submitter_clock()
    config = BatchConfig(processing_seconds=10.0, expiry_seconds=5.0)
    sim = await make_simulator(clock=sim_clock, batches=config)
    jobs = [due(spec(f"x{i}", tokens=100), 50_000) for i in range(4)]
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.enqueue(jobs)
    async with client_for(sim) as client:
        submitter = Submitter(store, client, "w1", SETTINGS, clock=now)
        assert await submitter.step()
        sim_clock.now += 6.0  # past expiry: requests not done by 5 s of the 10 expired
        now.now += 2000.0  # the deadlines are still 48,000 s away
        assert await submitter.step()  # collected (expired ones back in the queue) and re-batched
        expired = [j.id for j in jobs if (await store.get(j.id)).state is State.RUNNING]
        assert expired  # some requests expired, and went in a second batch
        sim.batches.config = dataclasses.replace(config, expiry_seconds=3600.0)
        sim_clock.now += 11.0
        await submitter.step()
        assert len(await api_batches(client)) == 2
        assert submitter.streamed == 0
    await assert_exact(store, jobs)
    for job in jobs:
        assert (await store.get(job.id)).spec.mode == "batch"
        assert {a.worker for a in await store.attempts(job.id)} == {"w1"}
    for job_id in expired:
        first, second = await store.attempts(job_id)
        assert (first.outcome, first.error) == ("released", "batch request expired")
        assert second.outcome == "succeeded"
    await store.close()


async def test_a_reserved_job_near_its_deadline_leaves_the_batch_before_it_is_sent(
    tmp_path: Path, make_simulator: SimulatorFactory
) -> None:
    """Queued batch jobs whose deadline came near while they waited go to the pool; the batch
    carries the others, and its stored count matches what was sent (crash recovery relies on it)."""
    sim_clock, now = Clock(), submitter_clock()
    sim = await make_simulator(clock=sim_clock, batches=BatchConfig(processing_seconds=1.0))
    near = [due(spec(f"n{i}", tokens=120), 4000) for i in range(2)]
    far = [due(spec("far", tokens=120), 90_000), batch(spec("none", tokens=120))]
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.enqueue([*near, *far])
    async with client_for(sim) as client:
        submitter = Submitter(store, client, "w1", SETTINGS, clock=now)
        now.now += 1000.0  # waited in the queue: 3000 s left for the near ones
        assert await submitter.step()
        [record] = await store.open_batches()
        assert record.requests == len(far) and {e.job_id for e in record.entries} == {j.id for j in far}
        [sent] = [b async for b in client.messages.batches.list(limit=10)]
        assert sent.request_counts.processing == len(far)
        assert {(await store.get(j.id)).state for j in near} == {State.QUEUED}
        sim_clock.now += 2.0
        await submitter.step()
    await stream_the_rest(store, sim)
    await assert_exact(store, [*near, *far])
    await assert_streamed_after_batch(store, near)
    for job in near:
        reserved = (await store.attempts(job.id))[0]
        assert (reserved.outcome, reserved.requests) == ("released", 0)
    for job in far:
        assert [a.worker for a in await store.attempts(job.id)] == ["w1"]
    await store.close()


async def test_a_reservation_of_only_near_jobs_sends_no_batch(
    tmp_path: Path, make_simulator: SimulatorFactory
) -> None:
    sim = await make_simulator(clock=Clock(), batches=BatchConfig(processing_seconds=1.0))
    jobs = [due(spec(f"n{i}", tokens=120), 600) for i in range(3)]  # inside the horizon already
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.enqueue(jobs)
    async with client_for(sim) as client:
        submitter = Submitter(store, client, "w1", SETTINGS, clock=submitter_clock())
        assert await submitter.step()
        assert await api_batches(client) == [] and await store.open_batches() == []
    await stream_the_rest(store, sim)
    await assert_exact(store, jobs)
    await store.close()
