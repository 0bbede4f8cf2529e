"""Thinking kept beside the job (issue 19, item 2): end to end over real HTTP against the simulator.

The simulator derives each request's thinking from its body (``thinking_text``), so what the store
keeps can be compared with what was streamed, request by request.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from jobs.sqlite import SQLiteStore
from tests.pool_harness import CONTINUATION_MODEL, FAST_SETTINGS, pool_run, spec
from worker.simulator import SimulatorConfig
from worker.simulator.protocol import parse_messages_request, thinking_text


def expected_thinking(body: dict[str, Any]) -> str:
    return thinking_text(parse_messages_request(json.dumps(body).encode()))


def thinking_job(job_id: str, faults: str | None = None) -> Any:
    job = spec(job_id, tokens=4000, model=CONTINUATION_MODEL, max_tokens=2500, faults=faults)
    return dataclasses.replace(job, thinking="enabled", thinking_budget=1024)


async def test_a_thinking_job_keeps_the_thinking_of_every_request_in_order(tmp_path: Path) -> None:
    jobs = [thinking_job("think")]
    run = await pool_run(tmp_path, jobs, sim_config=SimulatorConfig(record_requests=True))
    run.assert_exact(jobs)
    bodies = run.simulator.recorded
    assert len(bodies) > 1, "the job took several requests"
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        kept = await store.read_thinking("think")
        text = await store.read_text("think")
    finally:
        await store.close()
    assert [t.text for t in kept] == [expected_thinking(body) for body in bodies]
    assert [(t.attempt, t.request) for t in kept] == [(1, n) for n in range(1, len(bodies) + 1)]
    assert not any(t.cut for t in kept)
    assert all(t.text not in text for t in kept), "thinking never enters the document"


async def test_a_broken_request_keeps_the_thinking_it_streamed_and_retries_add_theirs(
    tmp_path: Path,
) -> None:
    jobs = [thinking_job(f"think-{i}", faults=f"drop=0.4,midstream_error=0.3,seed={i}") for i in range(3)]
    run = await pool_run(tmp_path, jobs, sim_config=SimulatorConfig(record_requests=True))
    run.assert_exact(jobs)
    every = {expected_thinking(body) for body in run.simulator.recorded}
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        kept = [t for job in jobs for t in await store.read_thinking(job.id)]
    finally:
        await store.close()
    assert any(t.attempt > 1 for t in kept), "the faults made some job retry"
    assert all(any(full.startswith(t.text) for full in every) for t in kept), "kept as streamed"
    assert all(t.text for t in kept), "only requests that streamed thinking keep any"


async def test_thinking_past_the_bound_is_cut_and_says_so(tmp_path: Path) -> None:
    jobs = [thinking_job("think")]
    bounded = dataclasses.replace(FAST_SETTINGS.attempt, thinking_max_chars=150)
    run = await pool_run(tmp_path, jobs, attempt=bounded)
    run.assert_exact(jobs)
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        kept = await store.read_thinking("think")
    finally:
        await store.close()
    assert sum(len(t.text) for t in kept) == 150
    assert kept[-1].cut and kept[-1].chars > len(kept[-1].text)
