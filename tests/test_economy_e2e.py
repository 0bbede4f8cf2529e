"""Honest counts end to end: what the store records against what the simulator billed.

The real SDK over real HTTP, with prompt caching on (a long shared system prompt), continuations
past ``max_tokens``, 20 % mid-stream faults, and a worker process killed with SIGKILL. The usage
summed over every job (broken streams estimated, a killed attempt's usage committed with its
checkpoints) must match the simulator's own accounting within 1 %, and so must its cost.
"""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from jobs.costs import load_prices
from jobs.models import JobSpec, Outcome, State, Usage
from jobs.store import Store
from tests.pool_harness import CONTINUATION_MODEL, expected, pool_run, spec
from tests.test_pool_processes import enqueue, wait_until, worker, write_config
from worker.simulator import AccountingSnapshot, SimulatorConfig, count_tokens, run_simulator

SYSTEM = "You are a careful writer of long technical reports, plain and exact. " * 90
FAULTS = "midstream_error=0.1,drop=0.05,malformed=0.05,seed=5"
PRICES = load_prices()


def jobs(count: int, tokens: int, faults: str | None = None) -> list[JobSpec]:
    return [
        spec(f"e{i}", tokens=tokens, model=CONTINUATION_MODEL, max_tokens=700, system=SYSTEM, faults=faults)
        for i in range(count)
    ]


async def recorded(store: Store, specs: list[JobSpec]) -> Usage:
    total = Usage()
    for job in specs:
        total += (await store.get(job.id)).usage
    return total


def billed(snapshot: AccountingSnapshot) -> Usage:
    counts = snapshot.billed[CONTINUATION_MODEL]
    return Usage(
        input_tokens=counts["input_tokens"],
        output_tokens=counts["output_tokens"],
        cache_creation_input_tokens=counts["cache_write_5m_tokens"] + counts["cache_write_1h_tokens"],
        cache_read_input_tokens=counts["cache_read_tokens"],
    )


def assert_within_one_percent(ours: Usage, truth: Usage, specs: list[JobSpec]) -> None:
    assert truth.cache_read_input_tokens > 0, "the stable prefix was read from the cache"
    for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        mine, real = getattr(ours, name), getattr(truth, name)
        assert mine == pytest.approx(real, rel=0.01), (name, mine, real)
    ours_cost = PRICES.cost(CONTINUATION_MODEL, ours)
    true_cost = PRICES.cost(CONTINUATION_MODEL, truth)
    assert ours_cost is not None and true_cost is not None
    assert ours_cost == pytest.approx(true_cost, rel=0.01)
    in_documents = sum(count_tokens(expected(job)) for job in specs)
    assert ours.document_tokens == pytest.approx(in_documents, rel=0.01)
    assert ours.wasted_output_tokens == pytest.approx(
        truth.output_tokens - in_documents, abs=0.01 * in_documents
    )


async def test_usage_with_mid_stream_faults_matches_the_simulators_bill(tmp_path: Path) -> None:
    specs = jobs(6, 2500, FAULTS)
    run = await pool_run(tmp_path, specs, sim_config=SimulatorConfig(cache_min_tokens=1024))
    run.assert_exact(specs)
    snapshot = run.simulator.accounting()
    assert snapshot.failed_output_tokens > 0, "some streams broke after sending text"
    # pool_run closed its store: read the file again.
    from jobs.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        ours = await recorded(store, specs)
        assert ours.estimated_output_tokens > 0, "broken streams were estimated"
        assert_within_one_percent(ours, billed(snapshot), specs)
    finally:
        await store.close()


@pytest.mark.slow
async def test_a_sigkilled_worker_loses_no_usage(tmp_path: Path) -> None:
    """Text streamed after the last checkpoint is lost with the worker, and so is its usage: at
    400 tokens/s and a checkpoint every 0.02 s that is a few dozen tokens a stream, well under 1 %."""
    specs = jobs(4, 6000)
    config = SimulatorConfig(tokens_per_second=400.0, tokens_per_delta=(1, 2), cache_min_tokens=1024)
    async with run_simulator(config) as sim:
        path = write_config(tmp_path, sim, lease=1.5, grace=5)
        path.write_text(path.read_text().replace("checkpoint_seconds = 0.2", "checkpoint_seconds = 0.02"))
        store = await enqueue(tmp_path, specs)
        try:

            async def all_well_on() -> bool:
                return all([(await store.get(j.id)).committed_chars > 5000 for j in specs])

            async with worker(path) as first:
                await wait_until(first, all_well_on)
                first.send_signal(signal.SIGKILL)
                await first.wait()
            killed = await recorded(store, specs)
            assert killed.output_tokens > 0 and killed.input_tokens + killed.cache_read_input_tokens > 0

            async with worker(path, "--until-empty") as second:
                with anyio.fail_after(60):
                    assert await second.wait() == 0
            for job in specs:
                assert (await store.get(job.id)).state is State.SUCCEEDED
                attempts = await store.attempts(job.id)
                assert attempts[0].outcome is Outcome.LEASE_EXPIRED
                assert attempts[0].usage.output_tokens > 0, "the killed attempt's usage was committed"
                assert attempts[0].requests > 0, "and its requests"
                assert await store.read_text(job.id) == expected(job)
            assert_within_one_percent(await recorded(store, specs), billed(sim.accounting()), specs)
        finally:
            await store.close()
