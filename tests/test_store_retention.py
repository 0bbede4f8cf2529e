"""Retention, part of the store contract (run on every backend): ``prune`` deletes old finished
jobs with everything kept for them and keeps the aggregates equal to a recount; a job that ends
has its chunks compacted into one row, and every read returns what it returned before.

Time is a :class:`FakeClock`: "older than" is tested by moving the clock, never by waiting.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.errors import JobNotFoundError, JobStateError
from jobs.models import AttemptResult, CheckpointWrite, Claim, Outcome, SettleRequest, State, Usage
from jobs.sqlite import SQLiteStore
from jobs.sqlite import sql as sqlite_sql
from jobs.store import Store
from tests.store_fixtures import FakeClock, StoreFactory, make_spec
from tests.test_store_contract import _recomputed

LEASE = 30.0
DAY = 86_400.0


async def _claim(store: Store, job_id: str, lease: float = LEASE) -> Claim:
    """Claim the next job, which must be ``job_id``."""
    [claim] = await store.claim("w", lease)
    assert claim.job.id == job_id
    return claim


async def _write(store: Store, claim: Claim, *pieces: str) -> None:
    offset = (await store.get(claim.job.id)).committed_chars
    for piece in pieces:
        [status] = await store.commit([CheckpointWrite(claim.job.id, claim.token, offset, piece)], LEASE)
        assert status == "ok"
        offset += len(piece)


async def _finish(store: Store, job_id: str, outcome: Outcome, *pieces: str) -> None:
    claim = await _claim(store, job_id)
    await _write(store, claim, *pieces)
    await store.settle(job_id, claim.token, AttemptResult(outcome, usage=Usage(10, 5), error="bad"))


async def _chunk_rows(store: Store, job_id: str) -> int:
    """How many chunk rows the backend holds for ``job_id`` (the one thing no Store call shows)."""
    if isinstance(store, SQLiteStore):
        query = "SELECT count(*) FROM chunks WHERE job_id = ?"
        return int(await store._run(lambda conn: conn.execute(query, (job_id,)).fetchone()[0]))
    rows: Any = await store._rows(  # type: ignore[attr-defined]
        "SELECT count(*) AS n FROM chunks WHERE job_id = %(id)s", {"id": job_id}
    )
    return int(rows[0]["n"])


async def _assert_totals_recounted(store: Store) -> None:
    totals = {
        (t.state, t.model, t.prompt_cache, t.mode): (
            t.jobs,
            t.committed_chars,
            t.usage,
            t.wasted_output_tokens,
        )
        for t in await store.totals()
    }
    assert totals == await _recomputed(store)


# -- prune -------------------------------------------------------------------------------------


async def _old_and_new(store: Store, clock: FakeClock) -> None:
    """old-s, old-f, old-c ended 40 days ago; new-s ended now; queued and running were enqueued
    40 days ago and never ended."""
    await store.enqueue([make_spec("old-s")])
    await _finish(store, "old-s", Outcome.SUCCEEDED, "one ", "two ", "three")
    await store.enqueue([make_spec("old-f")])
    await _finish(store, "old-f", Outcome.FAILED, "partial")
    await store.enqueue([make_spec("old-c")])
    await store.cancel("old-c")
    await store.enqueue([make_spec("running")])
    await _claim(store, "running", lease=100 * DAY)
    await store.enqueue([make_spec("queued", run_at=clock.now + 100 * DAY)])
    clock.advance(40 * DAY)
    await store.enqueue([make_spec("new-s")])
    await _finish(store, "new-s", Outcome.SUCCEEDED, "fresh")


async def test_prune_deletes_only_finished_jobs_that_ended_before_the_cutoff(
    make_store: StoreFactory,
) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    await _old_and_new(store, clock)
    before = await store.counts()

    assert await store.prune(30 * DAY, dry_run=True) == 3
    assert await store.counts() == before  # a dry run deletes nothing
    assert await store.prune(30 * DAY) == 3

    remaining = {job.id: job.state for job in await store.list_jobs()}
    assert remaining == {"queued": State.QUEUED, "running": State.RUNNING, "new-s": State.SUCCEEDED}
    for job_id in ("old-s", "old-f", "old-c"):
        for call in (store.get, store.read_text, store.history, store.attempts, store.read_thinking):
            with pytest.raises(JobNotFoundError):
                await call(job_id)
    await _assert_totals_recounted(store)
    assert await store.prune(30 * DAY) == 0
    assert await store.prune(0) == 0  # new-s ended at the cutoff itself: not older than it
    clock.advance(1)
    assert await store.prune(0) == 1
    await _assert_totals_recounted(store)


async def test_prune_by_state_and_refusing_live_states(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    await _old_and_new(store, clock)
    assert await store.prune(30 * DAY, [State.FAILED, State.CANCELLED], dry_run=True) == 2
    assert await store.prune(30 * DAY, [State.FAILED]) == 1
    assert {job.id for job in await store.list_jobs()} == {"old-s", "old-c", "queued", "running", "new-s"}
    for state in (State.QUEUED, State.RUNNING):
        with pytest.raises(JobStateError, match="never pruned"):
            await store.prune(0, [state])
    with pytest.raises(JobStateError, match="no state"):
        await store.prune(0, [])
    await _assert_totals_recounted(store)


async def test_prune_in_small_batches_deletes_everything_and_keeps_the_totals(
    make_store: StoreFactory,
) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    specs = [make_spec(f"j{i:02}", model="m-a" if i % 2 else "m-b") for i in range(11)]
    await store.enqueue(specs)
    claims = await store.claim("w", LEASE, limit=11)
    usage = Usage(100, 50, 3, 4, document_tokens=20)
    await store.commit(
        [CheckpointWrite(c.job.id, c.token, 0, f"text {c.job.id}", usage) for c in claims], LEASE
    )
    outcomes = (Outcome.SUCCEEDED, Outcome.FAILED)
    await store.settle_many(
        [
            SettleRequest(c.job.id, c.token, AttemptResult(outcomes[i % 2], usage=usage))
            for i, c in enumerate(claims[:9])
        ]
    )
    clock.advance(DAY)
    assert await store.prune(DAY / 2, batch_size=2) == 9
    assert {job.id for job in await store.list_jobs()} == {"j09", "j10"}
    await _assert_totals_recounted(store)
    assert sum(t.jobs for t in await store.totals()) == 2


async def test_a_pruned_id_is_free_and_nothing_of_the_old_job_remains(make_store: StoreFactory) -> None:
    """Attempts, history, text and thinking went with the job (they would show on the new one)."""
    clock = FakeClock()
    store = await make_store(clock)
    await store.enqueue([make_spec("t")])
    claim = await _claim(store, "t")
    assert await store.save_thinking("t", claim.token, 1, "plan", 100) == "ok"
    await _write(store, claim, "a", "b")
    await store.settle("t", claim.token, AttemptResult(Outcome.SUCCEEDED))
    clock.advance(2)
    assert await store.prune(1) == 1
    await store.enqueue([make_spec("t")])
    assert await store.attempts("t") == []
    assert [h.reason for h in await store.history("t")] == ["enqueued"]
    assert (await store.read_text("t"), await store.read_thinking("t")) == ("", [])
    assert await _chunk_rows(store, "t") == 0


# -- compaction --------------------------------------------------------------------------------


async def _reads(store: Store, job_id: str, length: int) -> tuple[str, list[str], dict[str, str]]:
    """Everything a reader can ask of a job's text: whole, from every offset, and in a batch."""
    whole = await store.read_text(job_id)
    tails = [await store.read_text_from(job_id, offset) for offset in range(length + 2)]
    batch = await store.read_texts_from({job_id: 0, "missing": 0})
    return whole, tails, batch


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.text(max_size=12), min_size=2, max_size=6))
async def test_a_finished_job_is_one_chunk_that_reads_back_the_same(
    make_store: StoreFactory, pieces: list[str]
) -> None:
    """Any text (NUL and astral characters included), in any chunking, reads the same before and
    after the job succeeds, from every offset, and is then held in one row."""
    store = await make_store(FakeClock())
    await store.enqueue([make_spec("c")])
    claim = await _claim(store, "c")
    await _write(store, claim, *pieces)
    length = len("".join(pieces))
    before = await _reads(store, "c", length)
    assert before[0] == "".join(pieces)
    await store.settle("c", claim.token, AttemptResult(Outcome.SUCCEEDED))
    assert await _reads(store, "c", length) == before
    assert await _chunk_rows(store, "c") == (1 if before[0] else 0)
    await store.close()


async def test_every_way_of_ending_compacts_and_a_retry_appends_after_it(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await make_store(clock)
    specs = [make_spec(i) for i in ("ok", "many", "cancelled")] + [make_spec("expired", max_attempts=1)]
    await store.enqueue(specs)
    claims = {c.job.id: c for c in await store.claim("w", LEASE, limit=4)}
    for claim in claims.values():
        await _write(store, claim, "Alpha. ", "Beta. ", "Gamma.")
        assert await _chunk_rows(store, claim.job.id) == 3
    expected = "Alpha. Beta. Gamma."
    await store.settle("ok", claims["ok"].token, AttemptResult(Outcome.SUCCEEDED))
    await store.settle_many(
        [SettleRequest("many", claims["many"].token, AttemptResult(Outcome.FAILED, error="x"))]
    )
    await store.cancel("cancelled")
    clock.advance(LEASE + 1)
    assert await store.claim("w2", LEASE) == []  # "expired" runs out of attempts inside the claim
    for job_id in ("ok", "many", "cancelled", "expired"):
        assert (await store.get(job_id)).state != State.RUNNING
        assert await store.read_text(job_id) == expected
        assert await _chunk_rows(store, job_id) == 1, job_id

    await store.retry("many")
    claim = await _claim(store, "many")
    assert claim.text == expected
    await _write(store, claim, " Delta.", " Epsilon.")
    assert await store.read_text_from("many", len(expected) + 1) == "Delta. Epsilon."
    await store.settle("many", claim.token, AttemptResult(Outcome.SUCCEEDED))
    assert await store.read_text("many") == expected + " Delta. Epsilon."
    assert await store.read_text_from("many", len(expected) + 1) == "Delta. Epsilon."
    assert await _chunk_rows(store, "many") == 1
    await _assert_totals_recounted(store)


async def test_a_released_or_retried_job_keeps_its_chunks(make_store: StoreFactory) -> None:
    """Only an ended job is compacted: one going back to the queue is still being written."""
    store = await make_store(FakeClock())
    await store.enqueue([make_spec("r")])
    claim = await _claim(store, "r")
    await _write(store, claim, "a", "b")
    await store.settle("r", claim.token, AttemptResult(Outcome.RETRY, error="overloaded"))
    assert (await store.get("r")).state == State.QUEUED
    assert await _chunk_rows(store, "r") == 2


async def test_a_version_6_sqlite_file_gains_the_retention_index(tmp_path: Path) -> None:
    """The step from schema 6 (thinking) to 7 adds ``jobs_finished``; the jobs stay."""
    path = tmp_path / "v6.db"
    conn = sqlite3.connect(path)
    steps = (
        sqlite_sql.SCHEMA,
        sqlite_sql.MIGRATION_ECONOMY,
        sqlite_sql.MIGRATION_JOINS,
        sqlite_sql.MIGRATION_TOTALS,
        sqlite_sql.MIGRATION_BATCHES,
        sqlite_sql.MIGRATION_THINKING,
    )
    for statement in (s for step in steps for s in step):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 6")
    conn.commit()
    conn.close()
    clock = FakeClock()
    store = SQLiteStore(path, clock=clock)
    try:
        await store.enqueue([make_spec("a")])
        claim = await _claim(store, "a")
        await store.settle("a", claim.token, AttemptResult(Outcome.SUCCEEDED))
        query = "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'jobs_finished'"
        assert await store._run(lambda c: c.execute(query).fetchall()) != []
        assert (
            await store._run(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
            == sqlite_sql.SCHEMA_VERSION
        )
        clock.advance(2)
        assert await store.prune(1) == 1
    finally:
        await store.close()
