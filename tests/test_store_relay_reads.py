"""The store's reads for live relays, part of the contract: run on every backend.

``read_text_from`` returns exactly the committed text past an offset, whatever the chunking;
``progress`` reads many jobs in one call; a change signal fires after a commit by another
connection and stays quiet while nothing is written.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.errors import JobNotFoundError
from jobs.models import AttemptResult, CheckpointWrite, Outcome, State
from tests.store_fixtures import FakeClock, StoreFactory, make_spec

LEASE = 30.0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.text(max_size=30), max_size=6), cut=st.integers(min_value=0, max_value=200))
async def test_read_text_from_is_the_committed_text_past_the_offset(
    make_store: StoreFactory, chunks: list[str], cut: int
) -> None:
    store = await make_store(FakeClock())
    await store.enqueue([make_spec("a")])
    [claim] = await store.claim("w", LEASE)
    offset = 0
    for chunk in chunks:
        await store.commit([CheckpointWrite("a", claim.token, offset, chunk)], LEASE)
        offset += len(chunk)
    text = "".join(chunks)
    assert await store.read_text_from("a", cut) == text[cut:]
    assert await store.read_text_from("a", 0) == text
    expected = {"a": text[cut:]} if text[cut:] else {}
    assert await store.read_texts_from({"a": cut, "unknown": 0}) == expected
    await store.close()


async def test_read_texts_from_reads_many_jobs_at_once(make_store: StoreFactory) -> None:
    store = await make_store(FakeClock())
    await store.enqueue([make_spec("a"), make_spec("b"), make_spec("c")])
    claims = {c.job.id: c for c in await store.claim("w", LEASE, limit=3)}
    for job_id, parts in (("a", ["one ", "two ", "three"]), ("b", ["\u00e9t\u00e9 ", "\U0001f600\n"])):
        offset = 0
        for part in parts:
            await store.commit([CheckpointWrite(job_id, claims[job_id].token, offset, part)], LEASE)
            offset += len(part)
    assert await store.read_texts_from({}) == {}
    found = await store.read_texts_from({"a": 4, "b": 0, "c": 0})
    assert found == {"a": "two three", "b": "\u00e9t\u00e9 \U0001f600\n"}
    assert await store.read_texts_from({"a": 13, "b": 4}) == {"b": "\U0001f600\n"}
    await store.close()


async def test_read_text_from_an_unknown_job_raises(make_store: StoreFactory) -> None:
    store = await make_store()
    with pytest.raises(JobNotFoundError):
        await store.read_text_from("nope", 0)
    await store.close()


async def test_progress_reads_many_jobs_at_once_and_skips_unknown_ids(make_store: StoreFactory) -> None:
    store = await make_store(FakeClock())
    await store.enqueue([make_spec("a"), make_spec("b")])
    assert await store.progress([]) == {}
    [claim] = await store.claim("w", LEASE)
    await store.commit([CheckpointWrite(claim.job.id, claim.token, 0, "hello")], LEASE)
    found = await store.progress(["a", "b", "missing"])
    assert set(found) == {"a", "b"}
    running = found[claim.job.id]
    assert (running.state, running.attempts, running.committed_chars) == (State.RUNNING, 1, 5)
    other = found["b" if claim.job.id == "a" else "a"]
    assert (other.state, other.attempts, other.committed_chars) == (State.QUEUED, 0, 0)
    await store.settle(claim.job.id, claim.token, AttemptResult(Outcome.SUCCEEDED))
    assert (await store.progress([claim.job.id]))[claim.job.id].state is State.SUCCEEDED
    await store.close()


async def test_change_signal_fires_after_a_commit_and_not_while_idle(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.enqueue([make_spec("a")])
    signal = store.change_signal()
    try:
        await signal.wait(0.05)  # the first wait may return at once: nothing before it was watched
        assert not await signal.wait(0.2), "no write, yet a change was signalled"
        [claim] = await store.claim("w", LEASE)
        assert await signal.wait(10.0), "a claim (a state change) was not signalled"
        await store.commit([CheckpointWrite("a", claim.token, 0, "text")], LEASE)
        assert await signal.wait(10.0), "committed text was not signalled"
    finally:
        await signal.close()
        await store.close()
