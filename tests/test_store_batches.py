"""The store's part of Message Batches (``worker.batches``), in the shared contract style: every
test runs on each backend, with a :class:`FakeClock` so no test waits for real time."""

from __future__ import annotations

import anyio

from jobs.batches import CUSTOM_ID, custom_id_for
from jobs.models import AttemptResult, CheckpointWrite, Outcome, SettleRequest, State, Usage, WriteStatus
from tests.store_fixtures import FakeClock, StoreFactory, make_spec

HOLD = 25 * 3600.0


async def test_claim_takes_stream_jobs_and_reserve_takes_batch_jobs(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.enqueue([make_spec("s1"), make_spec("b1", mode="batch"), make_spec("b2", mode="batch")])
    assert (await store.get("b1")).spec.mode == "batch"
    claimed = await store.claim("w", 30, limit=10)
    assert [c.job.id for c in claimed] == ["s1"]
    reserved = await store.reserve_batch("sub", "k1", 10, HOLD)
    assert sorted(c.job.id for c in reserved) == ["b1", "b2"]
    assert await store.reserve_batch("sub", "k2", 10, HOLD) == []  # never reserved twice
    assert await store.claim("w", 30, limit=10) == []
    [record] = await store.open_batches()
    assert (record.key, record.api_id, record.requests) == ("k1", None, 2)
    tokens = {c.job.id: c.token for c in reserved}
    assert {(e.job_id, e.custom_id, e.token) for e in record.entries} == {
        (job_id, job_id, token) for job_id, token in tokens.items()
    }


async def test_submission_is_booked_and_a_result_applies_once(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.enqueue([make_spec("b1", mode="batch")])
    [claim] = await store.reserve_batch("sub", "k1", 10, HOLD)
    await store.mark_batch_submitted("k1", "msgbatch_1")
    [record] = await store.open_batches()
    assert record.api_id == "msgbatch_1"
    [entry] = record.entries
    write = CheckpointWrite("b1", entry.token, 0, "The text.", Usage(5, 3))
    assert await store.commit([write], HOLD) == [WriteStatus.OK]
    assert await store.commit([write], HOLD) == [WriteStatus.OFFSET_MISMATCH]
    await store.settle("b1", claim.token, AttemptResult(Outcome.SUCCEEDED, Usage(5, 3), 1))
    assert await store.commit([write], HOLD) == [WriteStatus.LEASE_LOST]
    job = await store.get("b1")
    assert (job.state, job.usage.output_tokens) == (State.SUCCEEDED, 3)
    assert await store.read_text("b1") == "The text."
    [record] = await store.open_batches()
    assert record.entries == ()
    await store.close_batch("k1")
    assert await store.open_batches() == []


async def test_a_cancelled_job_leaves_its_batch(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.enqueue([make_spec("b1", mode="batch"), make_spec("b2", mode="batch")])
    await store.reserve_batch("sub", "k1", 10, HOLD)
    await store.cancel("b1")
    [record] = await store.open_batches()
    assert [e.job_id for e in record.entries] == ["b2"]


async def test_job_ids_that_do_not_fit_get_stored_aliases(make_store: StoreFactory) -> None:
    store = await make_store()
    odd = ["report:2026/q1", "x" * 65, "job_looks_like_an_alias", "é"]
    await store.enqueue([make_spec(job_id, mode="batch") for job_id in odd])
    await store.reserve_batch("sub", "k1", 10, HOLD)
    [record] = await store.open_batches()
    mapping = {e.job_id: e.custom_id for e in record.entries}
    assert set(mapping) == set(odd)
    assert all(CUSTOM_ID.fullmatch(cid) for cid in mapping.values())
    assert len(set(mapping.values())) == len(odd)
    assert mapping == {job_id: custom_id_for(job_id) for job_id in odd}


async def test_released_batch_job_is_reserved_again_with_its_text(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.enqueue([make_spec("b1", mode="batch")])
    [claim] = await store.reserve_batch("sub", "k1", 1, HOLD)
    await store.commit([CheckpointWrite("b1", claim.token, 0, "Part one.")], HOLD)
    await store.settle("b1", claim.token, AttemptResult(Outcome.RELEASED, stop_reason="max_tokens"))
    await store.close_batch("k1")
    [again] = await store.reserve_batch("sub", "k2", 1, HOLD)
    assert (again.text, again.attempt) == ("Part one.", 2)


async def test_one_fleet_lease_holder_at_a_time(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    results = {}

    async def take(owner: str) -> None:
        results[owner] = await store.acquire_lease("batch-submitter", owner, 60)

    async with anyio.create_task_group() as tg:
        for owner in ("a", "b", "c"):
            tg.start_soon(take, owner)
    [holder] = [owner for owner, won in results.items() if won]
    other = next(o for o in "abc" if o != holder)
    assert await store.acquire_lease("batch-submitter", holder, 60)  # renewal
    assert not await store.acquire_lease("batch-submitter", other, 60)
    clock.advance(61)
    assert await store.acquire_lease("batch-submitter", other, 60)
    assert not await store.acquire_lease("batch-submitter", holder, 60)


async def test_settle_to_stream_moves_requeued_batch_jobs_to_the_pool(make_store: StoreFactory) -> None:
    """Fenced like ``settle_many``: a released or retried job becomes a stream job with its text
    and a ``deadline_near`` history row; a job the result fails keeps its mode; a stale token
    changes nothing; the unsubmitted batch stops counting the jobs that left it."""
    clock = FakeClock()
    store = await make_store(clock)
    ids = ["b1", "b2", "b3", "b4"]
    await store.enqueue([make_spec(i, mode="batch", max_attempts=1 if i == "b3" else 3) for i in ids])
    claims = {c.job.id: c for c in await store.reserve_batch("sub", "k1", 10, HOLD)}
    await store.commit([CheckpointWrite("b1", claims["b1"].token, 0, "Part one.", Usage(5, 3))], HOLD)
    retry = AttemptResult(Outcome.RETRY, requests=1, error="overloaded", retry_at=clock.now)
    results = await store.settle_to_stream(
        [
            SettleRequest("b1", claims["b1"].token, AttemptResult(Outcome.RELEASED, Usage(5, 3), 1)),
            SettleRequest("b2", claims["b2"].token, retry),
            SettleRequest("b3", claims["b3"].token, retry),  # its only attempt: failed
            SettleRequest("b4", "stale-token", retry),
        ],
        "deadline_near",
    )
    assert [None if j is None else (j.state, j.spec.mode) for j in results] == [
        (State.QUEUED, "stream"),
        (State.QUEUED, "stream"),
        (State.FAILED, "batch"),
        None,
    ]
    assert (await store.get("b4")).state is State.RUNNING
    [record] = await store.open_batches()
    assert (record.requests, [e.job_id for e in record.entries]) == (2, ["b4"])
    history = await store.history("b1")
    assert (history[-1].from_state, history[-1].to_state, history[-1].reason) == (
        State.QUEUED,
        State.QUEUED,
        "deadline_near",
    )
    assert all(t.reason != "deadline_near" for t in await store.history("b3"))
    assert await store.reserve_batch("sub", "k2", 10, HOLD) == []  # no longer batch jobs
    claimed = {c.job.id: c for c in await store.claim("w", 30, limit=10)}
    assert sorted(claimed) == ["b1", "b2"]
    assert (claimed["b1"].text, claimed["b1"].attempt) == ("Part one.", 2)
    assert (await store.get("b1")).usage.output_tokens == 3


async def test_settle_to_stream_keeps_a_submitted_batch_count(make_store: StoreFactory) -> None:
    """A submitted batch carried its requests to the API: its count stays what it sent."""
    store = await make_store()
    await store.enqueue([make_spec("b1", mode="batch"), make_spec("b2", mode="batch")])
    claims = {c.job.id: c for c in await store.reserve_batch("sub", "k1", 10, HOLD)}
    await store.mark_batch_submitted("k1", "msgbatch_1")
    released = AttemptResult(Outcome.RELEASED, error="batch request expired")
    [job] = await store.settle_to_stream([SettleRequest("b1", claims["b1"].token, released)], "deadline_near")
    assert job is not None and job.spec.mode == "stream"
    [record] = await store.open_batches()
    assert (record.api_id, record.requests, [e.job_id for e in record.entries]) == ("msgbatch_1", 2, ["b2"])
    assert await store.settle_to_stream([], "deadline_near") == []
