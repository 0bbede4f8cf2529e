"""The non-streaming fallback: a job whose streams keep breaking finishes with whole messages.

End to end over real HTTP against the simulator, whose ``streams_only`` faults break every stream
(after some text) while full messages pass, as behind a proxy that cuts event streams.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anthropic
import pytest

from jobs.models import Outcome, State
from jobs.sqlite import SQLiteStore
from tests.pool_harness import CONTINUATION_MODEL, FAST_SETTINGS, PREFILL_MODEL, pool_run, spec
from worker.attempt import NONSTREAMING
from worker.nonstream import nonstream_max_tokens

#: Every stream drops after some text; a non-streaming request is never faulted.
STREAMS_BREAK = "drop=1.0,streams_only=1"
#: The test pool, switching to non-streaming requests after two failed attempts.
FALLBACK = dataclasses.replace(
    FAST_SETTINGS, attempt=dataclasses.replace(FAST_SETTINGS.attempt, nonstream_after=2)
)


def test_requests_are_sized_within_the_sdks_own_guard() -> None:
    """The bound is the SDK's: it accepts the largest size and refuses one token more."""
    client = anthropic.AsyncAnthropic(api_key="test", base_url="http://127.0.0.1:9")
    for model in ("claude-opus-4-6", "claude-opus-4-0"):
        largest = nonstream_max_tokens(model)
        cap = anthropic._constants.MODEL_NONSTREAMING_TOKENS.get(model)
        client._calculate_nonstreaming_timeout(largest, cap)
        with pytest.raises(ValueError, match="Streaming is required"):
            client._calculate_nonstreaming_timeout(largest + 1, cap)
    assert nonstream_max_tokens("claude-opus-4-6") == 21_333
    assert nonstream_max_tokens("claude-opus-4-0") == 8_192


@pytest.mark.parametrize("model", [PREFILL_MODEL, CONTINUATION_MODEL])
async def test_persistent_stream_faults_finish_by_non_streaming_requests(tmp_path: Path, model: str) -> None:
    """Two broken streams, then whole messages: the same document, byte for byte, with a
    document longer than one request continued by further non-streaming requests."""
    jobs = [spec(f"n{i}", tokens=1500, model=model, faults=STREAMS_BREAK, max_tokens=200) for i in range(3)]
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        run = await pool_run(tmp_path, jobs, settings=FALLBACK, store=store)
        attempts = {job.id: await store.attempts(job.id) for job in jobs}
    finally:
        await store.close()
    run.assert_exact(jobs)
    accounting = run.simulator.accounting()
    assert accounting.streams_completed == 0
    assert sum(accounting.streams_failed.values()) >= 2 * len(jobs)
    # Two broken streams carry at most 400 of the 1,500 tokens: the rest takes 6+ whole messages each.
    assert accounting.messages_completed >= 6 * len(jobs)
    for job in jobs:
        records = attempts[job.id]
        assert [a.outcome for a in records[:2]] == [Outcome.RETRY, Outcome.RETRY]
        assert records[-1].outcome is Outcome.SUCCEEDED
        assert dict(records[-1].joins)[NONSTREAMING] >= 6
        assert all(NONSTREAMING not in dict(a.joins) for a in records[:2])


async def test_without_the_fallback_the_same_job_runs_out_of_attempts(tmp_path: Path) -> None:
    """The control: the fallback off, the same faults fail the job (with its text kept)."""
    job = spec("off", tokens=500, faults=STREAMS_BREAK, max_tokens=200, max_attempts=3)
    run = await pool_run(tmp_path, [job])
    assert run.states["off"] is State.FAILED
    assert run.simulator.accounting().messages_started == 0
    assert run.texts["off"]  # the text the broken streams produced is kept
