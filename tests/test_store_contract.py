"""The job store contract: written once against the ``Store`` Protocol, run on every backend.

Time is a :class:`FakeClock`, so lease expiry is tested by moving the clock, never by waiting.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import sys
import textwrap
from collections.abc import Awaitable
from dataclasses import replace
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import rules
from jobs.buckets import BucketState, Limits
from jobs.errors import JobNotFoundError, JobStateError, LeaseLostError, StoreError
from jobs.models import (
    AttemptResult,
    CheckpointWrite,
    Claim,
    Job,
    JobQuery,
    Message,
    Outcome,
    ResumeMode,
    SettleRequest,
    State,
    Usage,
    WriteStatus,
)
from jobs.sqlite import SQLiteStore
from jobs.sqlite import sql as sqlite_sql
from jobs.store import Store
from tests.faulty_store import FaultyStore
from tests.store_fixtures import FakeClock, StoreFactory, make_spec

LEASE = 30.0
ROOT = Path(__file__).resolve().parents[1]


async def claim_one(store: Store, worker: str = "w1", lease: float = LEASE) -> Claim:
    claims = await store.claim(worker, lease)
    assert len(claims) == 1, claims
    return claims[0]


async def write(store: Store, claim: Claim, offset: int, text: str, lease: float = LEASE) -> WriteStatus:
    [status] = await store.commit([CheckpointWrite(claim.job.id, claim.token, offset, text)], lease)
    return status


# -- enqueue -----------------------------------------------------------------------------------


async def test_enqueue_is_idempotent_and_keeps_the_spec(make_store: StoreFactory) -> None:
    """Enqueueing an existing id changes nothing and reports it as existing."""
    store = await make_store(FakeClock())
    spec = make_spec(
        "a",
        system="Be brief.",
        priority=3,
        metadata={"k": [1, "ü"]},
        run_at=5.0,
        max_cost_usd=0.25,
        prompt_cache="1h",
    )
    first = await store.enqueue([spec, make_spec("b")])
    second = await store.enqueue([make_spec("a", prompt="other"), make_spec("c")])

    assert (first.inserted, first.existing) == (("a", "b"), ())
    assert (second.inserted, second.existing) == (("c",), ("a",))
    job = await store.get("a")
    assert job.spec == spec
    assert (job.state, job.attempts, job.failures, job.committed_chars) == (State.QUEUED, 0, 0, 0)
    assert [(t.from_state, t.to_state, t.reason) for t in await store.history("a")] == [
        (None, State.QUEUED, "enqueued")
    ]


async def test_an_enqueue_session_adds_its_batches_in_one_transaction(make_store: StoreFactory) -> None:
    """Batches of a session are committed together at its end, with one created_at; existing()
    reads stored jobs inside it; a repeated id counts as existing, as in one enqueue call."""
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("old", prompt="before")])
    clock.advance(5)
    async with store.enqueue_session() as session:
        first = await session.add([make_spec("a"), make_spec("old"), make_spec("a")])
        second = await session.add([make_spec("b"), make_spec("a")])
        [stored] = await session.existing(["old", "missing"])
        clock.advance(5)
    assert (first.inserted, first.existing) == (("a",), ("old", "a"))
    assert (second.inserted, second.existing) == (("b",), ("a",))
    assert stored.spec.messages[0].content == "before"
    jobs = [await store.get(job_id) for job_id in ("a", "b")]
    assert {job.created_at for job in jobs} == {clock() - 5}
    assert (await store.counts())[State.QUEUED] == 3
    assert [t.reason for t in await store.history("b")] == ["enqueued"]
    await store.enqueue([make_spec("after")])  # the totals still follow a plain enqueue
    assert (await store.counts())[State.QUEUED] == 4


async def test_an_enqueue_session_that_raises_or_is_cancelled_adds_nothing(make_store: StoreFactory) -> None:
    """All or nothing: an error (a bad line found after some batches) or a cancellation rolls
    every batch back, and the store keeps working."""
    store = await make_store()

    class Stop(Exception):
        pass

    with pytest.raises(Stop):
        async with store.enqueue_session() as session:
            await session.add([make_spec("a"), make_spec("b")])
            raise Stop
    with anyio.CancelScope() as scope:
        async with store.enqueue_session() as session:
            await session.add([make_spec("c")])
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert (await store.counts())[State.QUEUED] == 0
    assert all(t.jobs == 0 for t in await store.totals())
    with pytest.raises(JobNotFoundError):
        await store.get("a")
    assert (await store.enqueue([make_spec("a")])).inserted == ("a",)


async def test_content_blocks_read_back_exactly_and_a_string_stays_a_string(make_store: StoreFactory) -> None:
    """Blocks (nested sources, cache_control, non-ASCII) come back equal, from get and from claim."""
    store = await make_store()
    blocks = (
        {"type": "text", "text": "Décris ça.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "ü"},
            "title": "t",
        },
    )
    messages = (Message("user", blocks), Message("assistant", "Plain."), Message("user", "Go on."))
    spec = make_spec("blocks", messages=messages)
    await store.enqueue([spec])
    assert (await store.get("blocks")).spec == spec
    [claim] = await store.claim("w1", LEASE)
    assert claim.job.spec.messages == messages
    assert isinstance(claim.job.spec.messages[1].content, str)


async def test_unknown_ids_raise_job_not_found(make_store: StoreFactory) -> None:
    store = await make_store()
    for call in (store.get, store.read_text, store.attempts, store.history, store.retry, store.cancel):
        with pytest.raises(JobNotFoundError, match="nope"):
            await call("nope")


# -- claiming ----------------------------------------------------------------------------------


async def test_concurrent_claims_are_exclusive(make_store: StoreFactory) -> None:
    """Many tasks claiming at once: every job is claimed exactly once."""
    store = await make_store()
    await store.enqueue([make_spec(f"j{i:03}") for i in range(60)])
    claimed: list[str] = []

    async def claimer(n: int) -> None:
        while claims := await store.claim(f"w{n}", LEASE, limit=1 + n % 3):
            claimed.extend(c.job.id for c in claims)

    async with anyio.create_task_group() as tg:
        for n in range(16):
            tg.start_soon(claimer, n)

    assert sorted(claimed) == [f"j{i:03}" for i in range(60)]
    assert (await store.counts())[State.RUNNING] == 60


async def test_claim_order_is_priority_then_run_at_then_age(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    now = clock()
    await store.enqueue([make_spec("old"), make_spec("late", run_at=now - 1)])
    clock.advance(1)
    await store.enqueue([make_spec("young"), make_spec("early", run_at=now - 100)])
    await store.enqueue([make_spec("urgent", priority=5), make_spec("low", priority=-1)])
    await store.enqueue([make_spec("future", priority=9, run_at=now + 60)])

    order = [c.job.id for c in await store.claim("w", 1000, limit=10)]

    assert order == ["urgent", "early", "late", "old", "young", "low"]
    assert await store.next_due() == now + 60
    clock.advance(58)
    assert await store.claim("w", LEASE) == []
    clock.advance(1)
    assert [c.job.id for c in await store.claim("w", LEASE)] == ["future"]


async def test_next_due_includes_lease_expiry(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    assert await store.next_due() is None
    await store.enqueue([make_spec("a")])
    await claim_one(store, lease=10)
    assert await store.next_due() == clock() + 10


async def test_claim_starts_an_attempt(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("a")])
    claim = await claim_one(store, "w1", lease=10)

    assert (claim.attempt, claim.text) == (1, "")
    assert claim.job.state == State.RUNNING
    assert claim.job.lease is not None
    assert (claim.job.lease.owner, claim.job.lease.token) == ("w1", claim.token)
    assert claim.job.lease.expires_at == clock() + 10
    [attempt] = await store.attempts("a")
    assert (attempt.number, attempt.worker, attempt.outcome, attempt.ended_at) == (1, "w1", None, None)


# -- leases ------------------------------------------------------------------------------------


async def test_expired_lease_is_reclaimed_with_its_text(make_store: StoreFactory) -> None:
    """A worker that stops heartbeating loses the job; the next claimer resumes from its text,
    and the lost attempt is recorded as lease_expired and counts as a failure."""
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("a")])
    first = await claim_one(store, "w1", lease=10)
    assert await write(store, first, 0, "Hello, ", lease=10) == WriteStatus.OK
    clock.advance(10)

    second = await claim_one(store, "w2")

    assert (second.job.id, second.attempt, second.text) == ("a", 2, "Hello, ")
    assert second.token != first.token
    assert second.job.failures == 1
    expired, current = await store.attempts("a")
    assert expired.outcome == Outcome.LEASE_EXPIRED
    assert (expired.chars_at_start, expired.chars_at_end) == (0, 7)
    assert (current.worker, current.chars_at_start, current.outcome) == ("w2", 7, None)
    reasons = [t.reason for t in await store.history("a")]
    assert reasons == ["enqueued", "claimed by w1", "lease expired", "claimed by w2"]


async def test_claim_by_models_takes_only_those_models(make_store: StoreFactory) -> None:
    """A claim limited to some models (the rate-limit classes with room) skips the others,
    keeps the claim order within those it may take, and an empty list claims nothing."""
    store = await make_store(FakeClock())
    await store.enqueue(
        [
            make_spec("o1", model="claude-opus-x", priority=5),
            make_spec("h1", model="claude-haiku-x"),
            make_spec("s1", model="claude-sonnet-x"),
            make_spec("h2", model="claude-haiku-x"),
        ]
    )

    assert await store.claim("w", LEASE, limit=5, models=[]) == []
    haiku = await store.claim("w", LEASE, limit=5, models=["claude-haiku-x"])
    rest = await store.claim("w", LEASE, limit=5, models=["claude-sonnet-x", "claude-opus-x"])

    assert [c.job.id for c in haiku] == ["h1", "h2"]
    assert [c.job.id for c in rest] == ["o1", "s1"]
    assert (await store.counts())[State.QUEUED] == 0


async def test_claim_by_models_reclaims_expired_leases_of_those_models_only(
    make_store: StoreFactory,
) -> None:
    """An expired lease of a model not asked for is settled (back to the queue, one failure)
    but not claimed; a claim for its model then takes it with its text."""
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("o", model="claude-opus-x")])
    first = await claim_one(store, "w1", lease=10)
    assert await write(store, first, 0, "Opus ", lease=10) == WriteStatus.OK
    clock.advance(10)

    assert await store.claim("w2", LEASE, models=["claude-haiku-x"]) == []
    [again] = await store.claim("w2", LEASE, models=["claude-opus-x"])

    assert (again.job.id, again.text, again.job.failures) == ("o", "Opus ", 1)


async def test_every_backend_answers_the_named_capabilities(make_store: StoreFactory) -> None:
    """``backend``, ``where``, ``migrate`` and ``wait_for_jobs`` are part of the contract: no
    caller has to probe a store for them."""
    store = await make_store(FakeClock())
    try:
        assert store.backend in {"sqlite", "postgresql"}
        assert isinstance(store.where, str) and store.where
        version = await store.migrate()
        assert version == await store.migrate() and version >= 1
        with anyio.fail_after(10):
            await store.wait_for_jobs(0.01)  # returns after the timeout with nothing announced
    finally:
        await store.close()


async def test_bucket_rows_per_key_are_independent(make_store: StoreFactory) -> None:
    """Each rate-limit class keeps its buckets under its own key: draining one leaves the
    other full, each with its own limits."""
    clock = FakeClock()
    store = await make_store(clock)
    opus, haiku = Limits(output_tokens=100), Limits(output_tokens=1000)

    def drain(state: BucketState, now: float) -> tuple[BucketState, float]:
        return replace(state, output_tokens=0.0, paused_until=now + 30), state.output_tokens

    assert await store.update_buckets("anthropic:opus", opus, drain) == 100.0
    left = await store.update_buckets("anthropic:haiku", haiku, lambda s, now: (s, s))
    again = await store.update_buckets("anthropic:opus", opus, lambda s, now: (s, s))

    assert (left.output_tokens, left.paused_until) == (1000.0, 0.0)
    assert (again.output_tokens, again.paused_until) == (0.0, clock() + 30)


async def test_lease_expiry_exhausts_attempts(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("a", max_attempts=2)])
    await claim_one(store, lease=10)
    clock.advance(11)
    await claim_one(store, lease=10)
    clock.advance(11)

    assert await store.claim("w", LEASE) == []
    job = await store.get("a")
    assert (job.state, job.failures, job.attempts, job.lease) == (State.FAILED, 2, 2, None)
    assert job.finished_at == clock()
    last = (await store.history("a"))[-1]
    assert (last.to_state, last.reason) == (State.FAILED, "attempts exhausted: lease expired")
    assert [a.outcome for a in await store.attempts("a")] == [Outcome.LEASE_EXPIRED] * 2


@pytest.mark.parametrize(("max_attempts", "failures_before"), [(1, 0), (2, 0), (2, 1), (3, 1), (5, 3)])
async def test_lease_expiry_does_what_the_rule_decides(
    make_store: StoreFactory, max_attempts: int, failures_before: int
) -> None:
    """``rules.expire_lease`` is the one decision; each backend (SQLite in Python, PostgreSQL in
    its claim's SQL) must carry out exactly what it returns: state, failures, error and reason."""
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("a", max_attempts=max_attempts)])
    for _ in range(failures_before):
        claim = await claim_one(store, lease=10)
        await store.settle("a", claim.token, AttemptResult(Outcome.RETRY, error="HTTP 529"))
    await claim_one(store, "w-lost", lease=10)
    before = await store.get("a")
    clock.advance(11)
    decided = rules.expire_lease(before, clock())

    retaken = await store.claim("w2", LEASE)  # a claim settles expired leases first
    after = await store.get("a")
    if decided.state == State.QUEUED:  # back in the queue, so this very claim took it again
        assert [c.job.id for c in retaken] == ["a"] and after.state == State.RUNNING
    else:
        assert retaken == [] and after.state == decided.state
    assert (after.failures, after.last_error) == (decided.failures, decided.last_error)
    expiry = [t for t in await store.history("a") if t.from_state == State.RUNNING][-1]
    assert (expiry.to_state, expiry.reason) == (decided.state, decided.reason)
    assert "w-lost" in (decided.last_error or "")


async def test_heartbeat_extends_the_lease(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("a")])
    claim = await claim_one(store, lease=10)
    clock.advance(8)
    [status] = await store.commit([CheckpointWrite("a", claim.token, 0, "")], 10)
    assert status == WriteStatus.OK
    clock.advance(8)
    assert await store.claim("other", LEASE) == []
    clock.advance(2)
    assert [c.job.id for c in await store.claim("other", LEASE)] == ["a"]


async def test_writes_are_fenced_after_reclaim(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("a")])
    stale = await claim_one(store, "w1", lease=10)
    clock.advance(10)
    fresh = await claim_one(store, "w2")

    assert await write(store, stale, 0, "stale") == WriteStatus.LEASE_LOST
    with pytest.raises(LeaseLostError):
        await store.settle("a", stale.token, AttemptResult(Outcome.SUCCEEDED))
    assert await store.read_text("a") == ""
    assert await write(store, fresh, 0, "fresh") == WriteStatus.OK
    assert await store.read_text("a") == "fresh"


async def test_cancel_fences_the_running_worker(make_store: StoreFactory) -> None:
    store = await make_store(FakeClock())
    await store.enqueue([make_spec("a")])
    claim = await claim_one(store)
    assert await write(store, claim, 0, "kept") == WriteStatus.OK

    job = await store.cancel("a")

    assert (job.state, job.lease) == (State.CANCELLED, None)
    assert await write(store, claim, 4, " more") == WriteStatus.LEASE_LOST
    with pytest.raises(LeaseLostError):
        await store.settle("a", claim.token, AttemptResult(Outcome.SUCCEEDED))
    [attempt] = await store.attempts("a")
    assert (attempt.outcome, attempt.error) == (Outcome.LEASE_LOST, "cancelled")
    assert await store.read_text("a") == "kept"


async def test_offset_mismatch_is_refused_and_batches_apply_per_write(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.enqueue([make_spec("a"), make_spec("b")])
    a, b = await store.claim("w", LEASE, limit=2)
    statuses = await store.commit(
        [
            CheckpointWrite("a", a.token, 0, "one"),
            CheckpointWrite("b", b.token, 5, "gap"),
            CheckpointWrite("a", a.token, 3, " two"),
            CheckpointWrite("a", a.token, 3, " again"),
            CheckpointWrite("b", "not-the-token", 0, "x"),
            CheckpointWrite("missing", a.token, 0, "x"),
        ],
        LEASE,
    )
    assert statuses == [
        WriteStatus.OK,
        WriteStatus.OFFSET_MISMATCH,
        WriteStatus.OK,
        WriteStatus.OFFSET_MISMATCH,
        WriteStatus.LEASE_LOST,
        WriteStatus.LEASE_LOST,
    ]
    assert await store.read_text("a") == "one two"
    assert (await store.get("b")).committed_chars == 0
    assert await store.read_text("b") == ""


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.text(max_size=40), max_size=8))
async def test_checkpoints_read_back_exactly(make_store: StoreFactory, chunks: list[str]) -> None:
    """Any unicode, committed one chunk at a time or in one batch, reads back byte for byte, and
    a resumed claim gets exactly that text. Each example gets a fresh store."""
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("one"), make_spec("batch")])
    one, batch = sorted(await store.claim("w", 10, limit=2), key=lambda c: c.job.id != "one")
    offset = 0
    writes: list[CheckpointWrite] = []
    for chunk in chunks:
        assert await write(store, one, offset, chunk, lease=10) == WriteStatus.OK
        writes.append(CheckpointWrite("batch", batch.token, offset, chunk))
        offset += len(chunk)
    assert set(await store.commit(writes, 10)) <= {WriteStatus.OK}

    expected = "".join(chunks)
    assert await store.read_text("one") == expected
    assert await store.read_text("batch") == expected
    assert (await store.get("one")).committed_chars == len(expected)
    clock.advance(11)
    assert sorted((c.job.id, c.text) for c in await store.claim("w2", 10, limit=2)) == [
        ("batch", expected),
        ("one", expected),
    ]
    await store.close()


# -- settling ----------------------------------------------------------------------------------


async def test_settle_succeeded_records_the_attempt(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("a")])
    claim = await claim_one(store)
    await store.commit([CheckpointWrite("a", claim.token, 0, "Done.", Usage(10, 3))], LEASE)
    clock.advance(5)
    result = AttemptResult(
        Outcome.SUCCEEDED,
        usage=Usage(10, 7, 2, 1),
        requests=2,
        resume_mode=ResumeMode.FRESH,
        stop_reason="end_turn",
        time_to_first_token=0.25,
        joins=(("anchor", 3), ("short_repeat", 1), ("uncertain", 1)),
    )

    job = await store.settle("a", claim.token, result)

    assert (job.state, job.lease, job.stop_reason, job.finished_at) == (
        State.SUCCEEDED,
        None,
        "end_turn",
        clock(),
    )
    assert job.usage == Usage(10, 7, 2, 1)
    [attempt] = await store.attempts("a")
    assert attempt.outcome == Outcome.SUCCEEDED
    assert (attempt.usage, attempt.requests, attempt.resume_mode) == (Usage(10, 7, 2, 1), 2, ResumeMode.FRESH)
    assert (attempt.chars_at_end, attempt.time_to_first_token, attempt.ended_at) == (5, 0.25, clock())
    assert attempt.joins == (("anchor", 3), ("short_repeat", 1), ("uncertain", 1))
    assert (await store.history("a"))[-1].reason == "succeeded"


async def test_usage_counts_every_attempt_including_lost_ones(make_store: StoreFactory) -> None:
    """Checkpointed usage of an attempt that died stays in the job's total."""
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("a")])
    lost = await claim_one(store, lease=10)
    await store.commit([CheckpointWrite("a", lost.token, 0, "x", Usage(100, 50))], 10)
    assert (await store.get("a")).usage == Usage(100, 50)
    clock.advance(11)
    claim = await claim_one(store)
    job = await store.settle("a", claim.token, AttemptResult(Outcome.SUCCEEDED, usage=Usage(120, 30)))
    assert job.usage == Usage(220, 80)


async def test_success_clears_an_earlier_attempts_error(make_store: StoreFactory) -> None:
    """The manifest must not show an old HTTP 401 beside a good document; history keeps it."""
    store = await make_store()
    await store.enqueue([make_spec("a")])
    claim = await claim_one(store)
    await store.settle("a", claim.token, AttemptResult(Outcome.RETRY, error="HTTP 401"))
    claim = await claim_one(store)
    job = await store.settle("a", claim.token, AttemptResult(Outcome.SUCCEEDED))
    assert (job.state, job.last_error) == (State.SUCCEEDED, None)
    assert [a.error for a in await store.attempts("a")] == ["HTTP 401", None]


async def test_output_accounting_is_summed_like_the_billed_usage(make_store: StoreFactory) -> None:
    """The estimated, in-document and repeated output counts move with each checkpoint's latest
    usage and are summed over attempts, a lost attempt's included."""
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("a"), make_spec("b")])
    lost = await claim_one(store, lease=10)
    other = await claim_one(store, lease=10)
    first = Usage(100, 50, 0, 0, estimated_output_tokens=20, document_tokens=40, repeated_tokens=2)
    later = Usage(100, 60, 0, 0, estimated_output_tokens=25, document_tokens=45, repeated_tokens=3)
    await store.commit(
        [
            CheckpointWrite(lost.job.id, lost.token, 0, "x", first),
            CheckpointWrite(other.job.id, other.token, 0, "y", Usage(1, 1, document_tokens=1)),
            CheckpointWrite(lost.job.id, lost.token, 1, "z", later),
        ],
        10,
    )
    assert (await store.get(lost.job.id)).usage == later
    clock.advance(11)
    claims = await store.claim("w2", LEASE, limit=2)
    claim = next(c for c in claims if c.job.id == lost.job.id)
    final = Usage(10, 5, 3, 4, estimated_output_tokens=0, document_tokens=5, repeated_tokens=1)
    job = await store.settle(claim.job.id, claim.token, AttemptResult(Outcome.SUCCEEDED, usage=final))
    assert job.usage == later + final
    assert [a.usage for a in await store.attempts(job.id)] == [later, final]
    assert job.usage.wasted_output_tokens == 65 - 50


async def test_a_checkpoint_records_the_attempts_requests_so_far(make_store: StoreFactory) -> None:
    """A killed attempt keeps the request count of its last checkpoint (not 0)."""
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("a")])
    lost = await claim_one(store, lease=10)
    await store.commit([CheckpointWrite("a", lost.token, 0, "x", Usage(5, 5), requests=2)], 10)
    await store.commit([CheckpointWrite("a", lost.token, 1, "y", Usage(9, 9), requests=3)], 10)
    await store.commit([CheckpointWrite("a", lost.token, 2, "z", Usage(9, 10))], 10)
    clock.advance(11)
    await claim_one(store)
    first = (await store.attempts("a"))[0]
    assert (first.outcome, first.requests, first.usage) == (Outcome.LEASE_EXPIRED, 3, Usage(9, 10))


async def test_settle_retry_requeues_at_retry_at_then_exhausts(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("a", max_attempts=2)])
    claim = await claim_one(store)
    retry_at = clock() + 30

    job = await store.settle(
        "a", claim.token, AttemptResult(Outcome.RETRY, error="overloaded", retry_at=retry_at)
    )

    assert (job.state, job.failures, job.last_error, job.lease) == (State.QUEUED, 1, "overloaded", None)
    assert await store.claim("w", LEASE) == []
    assert await store.next_due() == retry_at
    clock.set(retry_at)
    claim = await claim_one(store)
    job = await store.settle("a", claim.token, AttemptResult(Outcome.RETRY, error="overloaded again"))
    assert (job.state, job.failures, job.finished_at) == (State.FAILED, 2, clock())
    reasons = [t.reason for t in await store.history("a")]
    assert reasons[-3:] == ["retry: overloaded", "claimed by w1", "attempts exhausted: overloaded again"]
    assert [a.outcome for a in await store.attempts("a")] == [Outcome.RETRY, Outcome.RETRY]


async def test_settle_failed_and_released(make_store: StoreFactory) -> None:
    store = await make_store(FakeClock())
    await store.enqueue([make_spec("bad"), make_spec("kept", max_attempts=1)])
    [bad, kept] = sorted(await store.claim("w", LEASE, limit=2), key=lambda c: c.job.id)

    failed = await store.settle("bad", bad.token, AttemptResult(Outcome.FAILED, error="400 bad request"))
    released = await store.settle("kept", kept.token, AttemptResult(Outcome.RELEASED))

    assert (failed.state, failed.last_error, failed.failures) == (State.FAILED, "400 bad request", 0)
    assert (await store.history("bad"))[-1].reason == "failed: 400 bad request"
    assert (released.state, released.failures, released.attempts) == (State.QUEUED, 0, 1)
    again = await claim_one(store)
    assert (again.job.id, again.attempt) == ("kept", 2)


async def test_settle_rejects_non_final_outcomes(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.enqueue([make_spec("a")])
    claim = await claim_one(store)
    with pytest.raises(ValueError, match="lease_expired"):
        await store.settle("a", claim.token, AttemptResult(Outcome.LEASE_EXPIRED))


async def test_settle_many_matches_settle_one_by_one(make_store: StoreFactory) -> None:
    """A batch leaves every job, attempt, transition and total exactly as the same settles made
    one at a time would: each outcome's rules, usage moved by the attempt's change, history."""
    clock = FakeClock()
    results = [
        AttemptResult(
            Outcome.SUCCEEDED,
            usage=Usage(10, 7, 2, 1, document_tokens=5),
            requests=2,
            stop_reason="end_turn",
            time_to_first_token=0.25,
            joins=(("anchor", 3),),
        ),
        AttemptResult(Outcome.RETRY, error="overloaded", retry_at=clock() + 30, usage=Usage(3, 1)),
        AttemptResult(Outcome.RETRY, error="overloaded"),  # max_attempts 1: exhausted
        AttemptResult(Outcome.FAILED, error="400 bad request"),
        AttemptResult(Outcome.RELEASED, resume_mode=ResumeMode.PREFILL),
    ]
    seen = []
    for batched in (False, True):
        store = await make_store(FakeClock())
        specs = [make_spec(f"j{n}", max_attempts=1 if n == 2 else 3) for n in range(len(results))]
        await store.enqueue(specs)
        claims = sorted(await store.claim("w", LEASE, limit=len(results)), key=lambda c: c.job.id)
        await store.commit(
            [CheckpointWrite(c.job.id, c.token, 0, "text", Usage(4, 2)) for c in claims], LEASE
        )
        requests = [SettleRequest(c.job.id, c.token, r) for c, r in zip(claims, results, strict=True)]
        if batched:
            jobs = await store.settle_many(requests)
        else:
            jobs = [await store.settle(r.job_id, r.token, r.result) for r in requests]
        ids = [spec.id for spec in specs]
        assert jobs == [await store.get(job_id) for job_id in ids]
        seen.append(
            (
                jobs,
                [await store.attempts(job_id) for job_id in ids],
                [
                    [(t.from_state, t.to_state, t.reason, t.attempt) for t in await store.history(i)]
                    for i in ids
                ],
                await store.totals(),
            )
        )
    assert seen[0] == seen[1]
    states = [job.state for job in seen[1][0] if job is not None]
    assert states == [State.SUCCEEDED, State.QUEUED, State.FAILED, State.FAILED, State.QUEUED]


async def test_settle_many_refuses_stale_unknown_and_repeated_requests(make_store: StoreFactory) -> None:
    """A refused request is None and changes nothing of its job; the rest of the batch applies."""
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("a"), make_spec("b"), make_spec("c")])
    a, b, c = sorted(await store.claim("w", LEASE, limit=3), key=lambda claim: claim.job.id)
    await store.cancel("b")  # b's token is no longer current
    history_b = await store.history("b")
    ok = AttemptResult(Outcome.SUCCEEDED)

    settled = await store.settle_many(
        [
            SettleRequest("a", a.token, ok),
            SettleRequest("b", b.token, ok),
            SettleRequest("nope", "t", ok),
            SettleRequest("c", "not-the-token", ok),
            SettleRequest("c", c.token, AttemptResult(Outcome.FAILED, error="e")),
            SettleRequest("c", c.token, ok),  # settled once already in this batch
        ]
    )

    assert [None if j is None else (j.id, j.state) for j in settled] == [
        ("a", State.SUCCEEDED),
        None,
        None,
        None,
        ("c", State.FAILED),
        None,
    ]
    assert (await store.get("b")).state == State.CANCELLED
    assert await store.history("b") == history_b
    assert [t.to_state for t in await store.history("c")] == [State.QUEUED, State.RUNNING, State.FAILED]
    assert await store.settle_many([]) == []


async def test_settle_many_rejects_non_final_outcomes_before_writing(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.enqueue([make_spec("a")])
    claim = await claim_one(store)
    with pytest.raises(ValueError, match="lease_expired"):
        await store.settle_many(
            [
                SettleRequest("a", claim.token, AttemptResult(Outcome.SUCCEEDED)),
                SettleRequest("a", claim.token, AttemptResult(Outcome.LEASE_EXPIRED)),
            ]
        )
    assert (await store.get("a")).state == State.RUNNING


# -- operators ---------------------------------------------------------------------------------


async def test_retry_requeues_with_text_and_reset_failures(make_store: StoreFactory) -> None:
    store = await make_store(FakeClock())
    await store.enqueue([make_spec("a", max_attempts=1), make_spec("b")])
    claim = await claim_one(store)
    await write(store, claim, 0, "partial")
    await store.settle("a", claim.token, AttemptResult(Outcome.RETRY, error="boom"))
    await store.cancel("b")

    job = await store.retry("a")

    assert (job.state, job.failures, job.finished_at) == (State.QUEUED, 0, None)
    assert (await claim_one(store)).text == "partial"
    assert (await store.history("a"))[-2].reason == "retried by an operator"
    assert (await store.retry("b")).state == State.QUEUED


async def test_retry_with_a_revised_spec_changes_how_it_runs_and_keeps_its_text(
    make_store: StoreFactory,
) -> None:
    store = await make_store(FakeClock())
    await store.enqueue([make_spec("a", max_attempts=1, model="claude-typo-9")])
    claim = await claim_one(store)
    await write(store, claim, 0, "partial")
    await store.settle("a", claim.token, AttemptResult(Outcome.FAILED, error="model not found"))
    old = (await store.get("a")).spec
    revised = replace(old, model="claude-sonnet-4-6", max_tokens=900, metadata={"fixed": True})

    job = await store.retry("a", revised)

    assert (job.state, job.spec.model, job.spec.max_tokens) == (State.QUEUED, "claude-sonnet-4-6", 900)
    assert dict(job.spec.metadata) == {"fixed": True}
    assert job.spec.messages == old.messages
    again = await claim_one(store)
    assert (again.text, again.job.spec.model) == ("partial", "claude-sonnet-4-6")
    reason = (await store.history("a"))[-2].reason
    assert "model 'claude-typo-9' -> 'claude-sonnet-4-6'" in reason and "max_tokens" in reason
    with pytest.raises(JobStateError, match="running"):
        await store.retry("a", revised)
    assert (await store.get("a")).spec.model == "claude-sonnet-4-6"


async def test_retry_and_cancel_refuse_wrong_states(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.enqueue([make_spec("done"), make_spec("queued")])
    done = await claim_one(store)
    await store.settle(done.job.id, done.token, AttemptResult(Outcome.SUCCEEDED))
    with pytest.raises(JobStateError, match="queued"):
        await store.retry("queued")
    with pytest.raises(JobStateError, match="succeeded"):
        await store.retry(done.job.id)
    with pytest.raises(JobStateError, match="succeeded"):
        await store.cancel(done.job.id)
    await store.cancel("queued")
    with pytest.raises(JobStateError, match="cancelled"):
        await store.cancel("queued")


async def test_replace_gives_a_job_that_never_started_a_new_spec(make_store: StoreFactory) -> None:
    store = await make_store(FakeClock())
    await store.enqueue([make_spec("a"), make_spec("b")])
    new = replace(make_spec("b"), model="other-model", max_tokens=77, metadata={"v": 2}, run_at=None)

    job = await store.replace(new)

    assert (job.spec, job.state, job.attempts) == (new, State.QUEUED, 0)
    assert (await store.get("b")).spec == new
    assert (await store.history("b"))[-1].reason == "replaced by an operator"
    assert [c.job.id for c in await store.claim("w", LEASE, limit=2)] == ["a", "b"]  # its place is kept


async def test_replace_refuses_a_job_that_started(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.enqueue([make_spec("a"), make_spec("b")])
    claim = await claim_one(store)
    with pytest.raises(JobStateError, match="'a' has started"):
        await store.replace(replace(make_spec("a"), model="m2"))
    await store.settle(claim.job.id, claim.token, AttemptResult(Outcome.RELEASED))
    with pytest.raises(JobStateError, match=r"'a' has started \(queued, 1 attempt"):
        await store.replace(replace(make_spec("a"), model="m2"))
    await store.cancel("b")
    with pytest.raises(JobStateError, match="cancelled"):
        await store.replace(make_spec("b"))
    with pytest.raises(JobNotFoundError):
        await store.replace(make_spec("nobody"))
    assert (await store.get("a")).spec == make_spec("a")


async def test_retry_failed_requeues_every_failed_job(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.enqueue([make_spec(f"f{i}") for i in range(3)] + [make_spec("ok")])
    for claim in await store.claim("w", LEASE, limit=3):
        await store.settle(claim.job.id, claim.token, AttemptResult(Outcome.FAILED, error="no"))
    assert await store.retry_failed() == 3
    assert await store.retry_failed() == 0
    assert (await store.counts())[State.QUEUED] == 4


async def test_counts_list_every_state(make_store: StoreFactory) -> None:
    store = await make_store()
    assert await store.counts() == dict.fromkeys(State, 0)
    await store.enqueue([make_spec("a"), make_spec("b"), make_spec("c")])
    await claim_one(store)
    await store.cancel("c")
    assert await store.counts() == {
        State.QUEUED: 1,
        State.RUNNING: 1,
        State.SUCCEEDED: 0,
        State.FAILED: 0,
        State.CANCELLED: 1,
    }


async def test_model_counts_cover_jobs_still_to_run(make_store: StoreFactory) -> None:
    store = await make_store()
    assert await store.model_counts() == {}
    await store.enqueue([make_spec("a", model="m-one"), make_spec("b", model="m-one")])
    await store.enqueue([make_spec("c", model="m-two")])
    await store.enqueue([make_spec("d", model="m-three")])
    await claim_one(store)
    await store.cancel("d")
    assert await store.model_counts() == {"m-one": 2, "m-two": 1}


async def test_queue_stats_read_the_queue_at_one_moment(make_store: StoreFactory) -> None:
    """What ``serve``'s /metrics exports: counts, the oldest due job (a scheduled one does not
    count), the oldest checkpoint of a running job, expired leases and fleet pauses."""
    clock = FakeClock()
    store = await make_store(clock)
    empty = await store.queue_stats()
    assert (empty.counts, empty.oldest_due_at, empty.oldest_checkpoint_at) == (
        dict.fromkeys(State, 0),
        None,
        None,
    )
    assert (empty.expired_leases, dict(empty.pauses), empty.now) == (0, {}, clock.now)
    start = clock.now
    await store.enqueue([make_spec("a"), make_spec("later", run_at=start + 3600)])
    clock.advance(5)
    await store.enqueue([make_spec("b"), make_spec("c")])
    clock.advance(5)
    claim = await claim_one(store)  # "a", the oldest
    clock.advance(20)
    limits = Limits(requests=10)
    await store.update_buckets(
        "fleet",
        limits,
        lambda state, now: (replace(state, paused_until=now + 7, pause_reason="529 overloaded_error"), None),
    )
    stats = await store.queue_stats()
    assert stats.counts == await store.counts()
    assert stats.counts[State.QUEUED] == 3 and stats.counts[State.RUNNING] == 1
    assert stats.oldest_due_at == start + 5
    assert stats.oldest_checkpoint_at == start + 10
    assert stats.expired_leases == 0
    assert dict(stats.pauses) == {"fleet": clock.now + 7}
    assert dict(stats.pause_reasons) == {"fleet": "529 overloaded_error"}
    await write(store, claim, 0, "text")
    clock.advance(LEASE + 1)
    later = await store.queue_stats()
    assert later.oldest_checkpoint_at == start + 30
    assert later.expired_leases == 1
    assert dict(later.pauses) == {} and dict(later.pause_reasons) == {}


async def test_list_jobs_pages_by_id_and_filters_states(make_store: StoreFactory) -> None:
    store = await make_store()
    ids = [f"job-{i:02}" for i in range(25)]
    await store.enqueue([make_spec(i) for i in reversed(ids)])
    await store.cancel("job-03")
    seen: list[str] = []
    after: str | None = None
    while page := await store.list_jobs(after_id=after, limit=10):
        seen.extend(job.id for job in page)
        after = page[-1].id
    assert seen == ids
    assert [j.id for j in await store.list_jobs([State.CANCELLED])] == ["job-03"]
    assert len(await store.list_jobs([State.QUEUED, State.CANCELLED])) == 25
    assert await store.list_jobs([]) == []


async def test_find_jobs_filters_searches_and_pages_both_ways(make_store: StoreFactory) -> None:
    """The dashboard's list: state, model and search (id prefix or metadata text) combined, keyset
    pages in either direction that add up to every match exactly once."""
    store = await make_store()
    await store.enqueue(
        [
            make_spec(
                f"job-{i:02}", model="claude-a" if i % 2 else "claude-b", metadata={"team": f"t{i % 3}"}
            )
            for i in range(20)
        ]
    )
    await store.cancel("job-05")
    everything = [f"job-{i:02}" for i in range(20)]

    async def walk(query: JobQuery) -> list[str]:
        seen: list[str] = []
        while page := await store.find_jobs(replace(query, after_id=seen[-1] if seen else None)):
            seen.extend(job.id for job in page)
        return seen

    assert await walk(JobQuery(limit=7)) == everything
    assert await walk(JobQuery(limit=7, descending=True)) == everything[::-1]
    odd = [f"job-{i:02}" for i in range(1, 20, 2)]
    assert await walk(JobQuery(model="claude-a", limit=3)) == odd
    assert await walk(JobQuery(states=(State.CANCELLED,))) == ["job-05"]
    assert await walk(JobQuery(states=(State.QUEUED,), model="claude-a", limit=4)) == [
        j for j in odd if j != "job-05"
    ]
    assert await walk(JobQuery(search="job-1")) == [f"job-1{i}" for i in range(10)]
    assert await walk(JobQuery(search='"t2"', limit=2)) == [f"job-{i:02}" for i in range(2, 20, 3)]
    assert await walk(JobQuery(search="no-such-text")) == []


async def test_find_jobs_by_enqueue_time_pages_both_ways(make_store: StoreFactory) -> None:
    """Ordered by ``created_at`` then id (ids that sort the other way, and ties in time): keyset
    pages from the last ``(created_at, id)`` add up to every match once, in either direction."""
    clock = FakeClock()
    store = await make_store(clock)
    expected: list[str] = []
    for second in range(6):
        batch = [f"z{9 - second}-{k}" for k in range(3)]  # later jobs get ids that sort first
        await store.enqueue(
            [make_spec(job_id, model="claude-a" if k else "claude-b") for k, job_id in enumerate(batch)]
        )
        expected.extend(sorted(batch))  # same created_at: by id
        clock.advance(1)

    async def walk(query: JobQuery) -> list[str]:
        seen: list[Job] = []
        while page := await store.find_jobs(
            replace(query, after_id=seen[-1].id, after_created=seen[-1].created_at) if seen else query
        ):
            seen.extend(page)
        return [job.id for job in seen]

    assert await walk(JobQuery(order="created", limit=4)) == expected
    assert await walk(JobQuery(order="created", descending=True, limit=5)) == expected[::-1]
    assert await walk(JobQuery(order="created", model="claude-b", limit=2)) == [
        j for j in expected if j.endswith("-0")
    ]
    with pytest.raises(ValueError, match="unknown job order"):
        await store.find_jobs(JobQuery(order="updated"))


async def test_fleet_shows_workers_buckets_and_attempts_per_minute(make_store: StoreFactory) -> None:
    clock = FakeClock(1_750_000_020.0)
    store = await make_store(clock)
    empty = await store.fleet(clock.now - 3600)
    assert (empty.workers, dict(empty.buckets), empty.minutes) == ((), {}, ())
    await store.enqueue([make_spec("a"), make_spec("b"), make_spec("c")])
    first = await claim_one(store, "host-1:10:aa")
    clock.advance(10)
    second = await claim_one(store, "host-2:20:bb")
    await store.settle(second.job.id, second.token, AttemptResult(Outcome.SUCCEEDED, Usage(1, 50)))
    clock.advance(60)
    await write(store, first, 0, "text")
    await store.update_buckets(
        "fleet", Limits(requests=10), lambda state, now: (replace(state, paused_until=now + 7), None)
    )
    view = await store.fleet(clock.now - 3600)
    assert view.now == clock.now
    assert [(w.worker, w.running, w.last_seen) for w in view.workers] == [
        ("host-1:10:aa", 1, clock.now),
        ("host-2:20:bb", 0, clock.now - 60),
    ]
    assert list(view.buckets) == ["fleet"] and view.buckets["fleet"].paused_until == clock.now + 7
    [minute] = view.minutes
    assert (minute.outcome, minute.attempts, minute.output_tokens) == ("succeeded", 1, 50)
    assert minute.minute == (clock.now - 60) // 60 * 60
    assert (await store.fleet(clock.now)).minutes == ()


async def _recomputed(store: Store) -> dict[tuple[State, str, str, str], tuple[int, int, Usage, int]]:
    """The totals the aggregate rows must hold, summed from every job the slow way."""
    found: dict[tuple[State, str, str, str], tuple[int, int, Usage, int]] = {}
    for job in await store.list_jobs(limit=10_000):
        key = (job.state, job.spec.model, job.spec.prompt_cache, job.spec.mode)
        jobs, chars, usage, wasted = found.get(key, (0, 0, Usage(), 0))
        found[key] = (
            jobs + 1,
            chars + job.committed_chars,
            usage + job.usage,
            wasted + job.usage.wasted_output_tokens,
        )
    return found


async def test_totals_follow_every_kind_of_change(make_store: StoreFactory) -> None:
    """Enqueue, claims, checkpoints with usage, settles, lease expiry, cancel, retry, replace,
    delete, batch reservations and a switch to stream each keep the aggregate rows equal to the
    sums over the jobs (grouped by job mode too: batch jobs cost the batch price)."""
    clock = FakeClock()
    store = await make_store(clock)
    specs = [
        make_spec(f"j{i}", model="m-a" if i % 2 else "m-b", prompt_cache="1h" if i % 3 else "5m")
        for i in range(8)
    ]
    await store.enqueue(
        [*specs, make_spec("b1", model="m-a", mode="batch"), make_spec("b2", model="m-b", mode="batch")]
    )
    claims = await store.claim("w1", 10, limit=5)
    usage = Usage(100, 50, 3, 4, estimated_output_tokens=5, document_tokens=60, repeated_tokens=1)
    batched = await store.reserve_batch("sub", "k1", 10, 3600)
    await store.settle(batched[0].job.id, batched[0].token, AttemptResult(Outcome.SUCCEEDED, usage=usage))
    released = AttemptResult(Outcome.RELEASED, usage=Usage(3, 2))
    await store.settle_to_stream([SettleRequest(batched[1].job.id, batched[1].token, released)], "near")
    await store.commit(
        [CheckpointWrite(c.job.id, c.token, 0, f"text of {c.job.id}", usage) for c in claims], 10
    )
    await store.settle(claims[0].job.id, claims[0].token, AttemptResult(Outcome.SUCCEEDED, usage=Usage(7, 9)))
    await store.settle(claims[1].job.id, claims[1].token, AttemptResult(Outcome.FAILED, error="bad"))
    await store.cancel(claims[2].job.id)
    await store.retry(claims[1].job.id)
    await store.replace(replace(specs[7], model="m-c"))
    clock.advance(11)  # claims[3] and [4] expire and are reclaimed
    await store.claim("w2", LEASE, limit=2)
    await store.delete(claims[0].job.id)
    expected = await _recomputed(store)
    totals = await store.totals()
    assert {
        (t.state, t.model, t.prompt_cache, t.mode): (
            t.jobs,
            t.committed_chars,
            t.usage,
            t.wasted_output_tokens,
        )
        for t in totals
    } == expected
    assert sum(t.jobs for t in totals) == 9
    assert {t.mode for t in totals} == {"stream", "batch"}
    assert await store.counts() == {s: sum(v[0] for k, v in expected.items() if k[0] == s) for s in State}
    assert (await store.model_counts()).keys() == {"m-a", "m-b", "m-c"}


async def test_delete_removes_a_finished_job_and_refuses_live_ones(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.enqueue([make_spec("done"), make_spec("running"), make_spec("queued")])
    claim = await claim_one(store)
    assert claim.job.id == "done"
    assert await write(store, claim, 0, "the text") == WriteStatus.OK
    await store.settle("done", claim.token, AttemptResult(Outcome.SUCCEEDED))
    await claim_one(store)
    for job_id in ("running", "queued"):
        with pytest.raises(JobStateError, match="cancel it first"):
            await store.delete(job_id)
    deleted = await store.delete("done")
    assert (deleted.id, deleted.state, deleted.committed_chars) == ("done", State.SUCCEEDED, 8)
    for call in (store.get, store.read_text, store.history, store.delete):
        with pytest.raises(JobNotFoundError):
            await call("done")
    assert (await store.counts())[State.SUCCEEDED] == 0
    await store.enqueue([make_spec("done")])  # the id is free again
    assert (await store.get("done")).committed_chars == 0


# -- thinking ----------------------------------------------------------------------------------


async def test_thinking_is_kept_per_attempt_and_request_and_survives_a_retry(
    make_store: StoreFactory,
) -> None:
    store = await make_store(FakeClock())
    await store.enqueue([make_spec("t")])
    first = await claim_one(store)
    assert await store.save_thinking("t", first.token, 1, "Let me plan. ", 100) == WriteStatus.OK
    assert await store.save_thinking("t", first.token, 2, "Ünïcode ✓", 100) == WriteStatus.OK
    assert await store.save_thinking("t", first.token, 2, "again", 100) == WriteStatus.OK  # kept once
    await store.settle("t", first.token, AttemptResult(Outcome.RETRY, retry_at=0.0))
    second = await claim_one(store)
    assert await store.save_thinking("t", second.token, 1, "More.", 100) == WriteStatus.OK
    kept = await store.read_thinking("t")
    assert [(t.attempt, t.request, t.text, t.chars, t.cut) for t in kept] == [
        (1, 1, "Let me plan. ", 13, False),
        (1, 2, "Ünïcode ✓", 9, False),
        (2, 1, "More.", 5, False),
    ]


async def test_thinking_past_the_bound_keeps_the_first_part_and_records_the_cut(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    await store.enqueue([make_spec("t")])
    claim = await claim_one(store)
    await store.save_thinking("t", claim.token, 1, "abcdef", 10)
    await store.save_thinking("t", claim.token, 2, "ghijklmn", 10)
    await store.save_thinking("t", claim.token, 3, "opq", 10)
    kept = await store.read_thinking("t")
    assert [(t.text, t.chars, t.cut) for t in kept] == [
        ("abcdef", 6, False),
        ("ghij", 8, True),
        ("", 3, True),
    ]
    assert sum(len(t.text) for t in kept) == 10


async def test_thinking_is_fenced_by_the_lease_and_deleted_with_the_job(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("t")])
    old = await claim_one(store)
    clock.advance(LEASE + 1)
    new = await claim_one(store, "w2")
    assert await store.save_thinking("t", old.token, 1, "stale", 100) == WriteStatus.LEASE_LOST
    assert await store.save_thinking("t", new.token, 1, "fresh", 100) == WriteStatus.OK
    assert await store.save_thinking("nope", new.token, 1, "x", 100) == WriteStatus.LEASE_LOST
    assert [t.text for t in await store.read_thinking("t")] == ["fresh"]
    await store.settle("t", new.token, AttemptResult(Outcome.SUCCEEDED))
    assert await store.save_thinking("t", new.token, 2, "late", 100) == WriteStatus.LEASE_LOST
    await store.delete("t")
    with pytest.raises(JobNotFoundError):
        await store.read_thinking("t")
    await store.enqueue([make_spec("t")])  # the id is free again, with no thinking
    assert await store.read_thinking("t") == []


# -- SQLite only -------------------------------------------------------------------------------

CLAIMER = textwrap.dedent(
    """
    import sys
    import anyio
    from jobs.models import AttemptResult, JobSpec, Message, Outcome
    from jobs.sqlite import SQLiteStore

    async def main(path: str, worker: str, count: int) -> None:
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        sys.stdin.readline()  # "go": every process starts at once, on a fresh file
        store = SQLiteStore(path)
        specs = [JobSpec(f"{worker}-{i:03}", (Message("user", "x"),), "m", 1, 1, 1) for i in range(count)]
        await store.enqueue(specs)
        sys.stdout.write("enqueued\\n"); sys.stdout.flush()
        sys.stdin.readline()  # "claim": once every process has enqueued
        claimed = []
        while claims := await store.claim(worker, 60.0, limit=1 + len(claimed) % 2):
            for claim in claims:
                claimed.append(claim.job.id)
                await store.settle(claim.job.id, claim.token, AttemptResult(Outcome.SUCCEEDED))
        await store.close()
        sys.stdout.write(" ".join(claimed) + "\\n")

    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
    """
)


async def test_several_processes_on_one_file_never_claim_a_job_twice(tmp_path: Path) -> None:
    """Four processes open a new file at once (racing to create the schema), each enqueues its
    own jobs, then all claim and settle until the queue is empty."""
    path = tmp_path / "shared" / "jobs.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    per_process, processes = 60, 4
    outputs: list[str] = []

    async def read_line(proc: anyio.abc.Process, reader: BufferedByteReceiveStream) -> bytes:
        try:
            return await reader.receive_until(b"\n", 1 << 24)
        except anyio.IncompleteRead:
            assert proc.stderr is not None
            errors = b"".join([chunk async for chunk in proc.stderr])
            pytest.fail(f"claimer process failed:\n{errors.decode()}")

    async def barrier(
        procs: list[anyio.abc.Process], readers: list[BufferedByteReceiveStream], word: bytes
    ) -> None:
        for proc, reader in zip(procs, readers, strict=True):
            assert await read_line(proc, reader) == word
        for proc in procs:
            assert proc.stdin is not None
            await proc.stdin.send(b"go\n")

    with anyio.fail_after(60):
        procs = [
            await anyio.open_process(
                [sys.executable, "-c", CLAIMER, str(path), f"p{n}", str(per_process)], env=env, cwd=ROOT
            )
            for n in range(processes)
        ]
        try:
            readers = [BufferedByteReceiveStream(p.stdout) for p in procs if p.stdout is not None]
            await barrier(procs, readers, b"ready")
            await barrier(procs, readers, b"enqueued")
            for proc, reader in zip(procs, readers, strict=True):
                outputs.append((await read_line(proc, reader)).decode())
            for proc in procs:
                assert await proc.wait() == 0
        finally:
            for proc in procs:
                await proc.aclose()

    claimed = collections.Counter(job_id for line in outputs for job_id in line.split())
    assert len(claimed) == per_process * processes
    assert set(claimed.values()) == {1}
    store = SQLiteStore(path)
    try:
        assert (await store.counts())[State.SUCCEEDED] == per_process * processes
    finally:
        await store.close()


async def test_a_version_1_sqlite_file_is_migrated_in_place(tmp_path: Path) -> None:
    """A file written before the ``joins`` column keeps its jobs and gains the column."""
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    for statement in sqlite_sql.SCHEMA:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    try:
        await store.enqueue([make_spec("a")])
        claim = await claim_one(store)
        await store.settle("a", claim.token, AttemptResult(Outcome.SUCCEEDED, joins=(("clean", 1),)))
        [attempt] = await store.attempts("a")
        assert attempt.joins == (("clean", 1),)
        version = await store._run(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        assert version == sqlite_sql.SCHEMA_VERSION
    finally:
        await store.close()


async def test_sqlite_file_persists_and_has_a_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "jobs.db"
    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.enqueue([make_spec("a")])
    await store.close()
    await store.close()

    reopened = SQLiteStore(path)
    try:
        assert (await reopened.get("a")).state == State.QUEUED
        version = await reopened._run(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0])
        assert version == sqlite_sql.SCHEMA_VERSION
        assert await reopened._run(lambda conn: conn.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    finally:
        await reopened.close()


async def test_update_buckets_is_atomic(make_store: StoreFactory) -> None:
    """Concurrent read-modify-write of one bucket row never loses an update; the first change
    sees full buckets at the store's time."""
    clock = FakeClock()
    store = await make_store(clock)
    limits = Limits(requests=100, input_tokens=1000, output_tokens=10)
    seen: list[float] = []

    def take_one(state: BucketState, now: float) -> tuple[BucketState, float]:
        assert now == clock()
        return replace(state, requests=state.requests - 1), state.requests

    async with anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(lambda: _append(seen, store.update_buckets("key", limits, take_one)))

    assert sorted(seen) == [float(n) for n in range(71, 101)]
    other = await store.update_buckets("other", limits, lambda state, now: (state, state))
    assert other == BucketState.full(limits, clock())


async def _append(into: list[float], value: Awaitable[float]) -> None:
    into.append(await value)


async def test_sqlite_errors_become_store_errors(tmp_path: Path) -> None:
    """Driver errors are translated at the boundary, and a newer schema is refused."""
    (tmp_path / "file").write_text("not a folder")
    blocked = SQLiteStore(tmp_path / "file" / "jobs.db")
    with pytest.raises(StoreError, match="cannot create the folder"):
        await blocked.get("a")
    await blocked.close()

    newer = tmp_path / "newer.db"
    store = SQLiteStore(newer)
    await store.enqueue([make_spec("a")])
    await store._run(lambda conn: conn.execute("PRAGMA user_version = 99"))
    await store.close()
    reopened = SQLiteStore(newer)
    with pytest.raises(StoreError, match="schema version 99"):
        await reopened.get("a")
    await reopened.close()
    with pytest.raises(StoreError, match="closed"):
        await reopened.get("a")


async def test_unstorable_text_is_a_store_error_and_changes_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        await store.enqueue([make_spec("a")])
        claim = await claim_one(store)
        with pytest.raises(StoreError, match="cannot store"):
            await write(store, claim, 0, "lone \ud800 surrogate")
        assert (await store.get("a")).committed_chars == 0
        assert await write(store, claim, 0, "fine") == WriteStatus.OK
    finally:
        await store.close()


async def test_a_batch_mixing_nul_characters_and_unicode_reads_back_exactly(make_store: StoreFactory) -> None:
    """SQLite's JSON functions stop at NUL: the batched write path must still carry it."""
    store = await make_store()
    await store.enqueue([make_spec("a"), make_spec("b"), make_spec("c")])
    claims = {c.job.id: c for c in await store.claim("w", LEASE, limit=3)}
    texts = {"a": "nul\x00inside", "b": "é — 字 🙂", "c": "\x00"}
    writes = [CheckpointWrite(job_id, claims[job_id].token, 0, text) for job_id, text in texts.items()]
    assert await store.commit(writes, LEASE) == [WriteStatus.OK] * 3
    for job_id, text in texts.items():
        assert await store.read_text(job_id) == text
        assert (await store.get(job_id)).committed_chars == len(text)


# -- faults ------------------------------------------------------------------------------------


async def test_a_call_that_fails_before_reaching_the_store_changes_nothing(make_store: StoreFactory) -> None:
    """Through the fault-injecting wrapper: a refused call leaves no trace and the next works."""
    faulty = FaultyStore(await make_store())
    store = faulty.store
    await store.enqueue([make_spec("f1")])
    claim = await claim_one(store)
    faulty.fail_nth("commit", 1)
    with pytest.raises(StoreError):
        await write(store, claim, 0, "lost?")
    assert (await store.get("f1")).committed_chars == 0
    assert await write(store, claim, 0, "kept") is WriteStatus.OK
    faulty.go_down()
    with pytest.raises(StoreError):
        await store.counts()
    faulty.come_back()
    assert (await store.counts())[State.RUNNING] == 1
    assert await store.read_text("f1") == "kept"


async def test_a_commit_whose_answer_was_lost_is_visible_for_reconciling(make_store: StoreFactory) -> None:
    """The write went through, the answer did not: resending it is an offset mismatch (never a
    double append), and ``get`` shows the committed length and our lease, which is how the
    checkpoint writer recognises its own write."""
    faulty = FaultyStore(await make_store())
    store = faulty.store
    await store.enqueue([make_spec("f2")])
    claim = await claim_one(store)
    faulty.fail_nth("commit", 1, after=True)
    with pytest.raises(StoreError):
        await write(store, claim, 0, "once")
    assert await write(store, claim, 0, "once") is WriteStatus.OFFSET_MISMATCH
    job = await store.get("f2")
    assert job.committed_chars == 4 and job.lease is not None and job.lease.token == claim.token
    assert await store.read_text("f2") == "once"
