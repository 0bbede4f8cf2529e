"""Cost caps, per job and per run, against the simulator; and the pure arithmetic behind them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import pytest

from jobs.costs import load_prices
from jobs.models import State
from jobs.sqlite import SQLiteStore
from tests.pool_harness import CONTINUATION_MODEL, FAST_SETTINGS, pool_run, simulated, spec
from tests.store_fixtures import FakeClock
from worker.budget import RunBudget, affordable_max_tokens, worst_case_cost
from worker.daily_cap import DailyCap
from worker.economy import Economy
from worker.pool import Pool


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


PRICES = load_prices()
PRICE = PRICES.price(CONTINUATION_MODEL)


def test_the_affordable_max_tokens_keeps_the_worst_case_inside_the_budget() -> None:
    assert PRICE is not None
    left = 0.05
    fits = affordable_max_tokens(PRICE, 1000, left)
    assert worst_case_cost(PRICE, 1000, fits) <= left < worst_case_cost(PRICE, 1000, fits + 1)
    assert affordable_max_tokens(PRICE, 1000, 0.0) == 0
    budget = RunBudget(1.0)
    budget.charge(0.4)
    assert budget.left_usd == pytest.approx(0.6)
    assert not budget.exhausted
    budget.charge(0.7)
    assert (budget.left_usd, budget.exhausted) == (0.0, True)


async def test_a_job_stops_at_its_cap_failed_with_reason_budget_and_keeps_its_text(tmp_path: Path) -> None:
    """A document that would cost ~$0.20 with a cap of $0.05: it ends under the cap, failed,
    with the text it had; a job without a cap beside it finishes."""
    capped = dataclasses.replace(
        spec("capped", tokens=8000, model=CONTINUATION_MODEL, max_tokens=1000), max_cost_usd=0.05
    )
    free = spec("free", tokens=300, model=CONTINUATION_MODEL)
    run = await pool_run(tmp_path, [capped, free])
    assert run.states == {"capped": State.FAILED, "free": State.SUCCEEDED}
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        job = await store.get("capped")
        cost = PRICES.cost(CONTINUATION_MODEL, job.usage)
        assert cost is not None and 0.04 < cost <= 0.05
        assert job.last_error is not None and job.last_error.startswith("budget: ")
        assert (await store.history("capped"))[-1].reason.startswith("failed: budget: ")
        text = await store.read_text("capped")
        assert len(text) == job.committed_chars > 0
    finally:
        await store.close()


async def test_a_job_whose_model_has_no_price_cannot_keep_a_cap(tmp_path: Path) -> None:
    capped = dataclasses.replace(spec("odd", model=CONTINUATION_MODEL), max_cost_usd=1.0)
    economy = Economy(prices=dataclasses.replace(PRICES, models={}))
    run = await pool_run(tmp_path, [capped], economy=economy)
    assert run.states == {"odd": State.FAILED}
    assert run.simulator.accounting().requests == 0, "no request was sent"
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        error = (await store.get("odd")).last_error
        assert error is not None and f"no price for model {CONTINUATION_MODEL!r}" in error
    finally:
        await store.close()


async def test_a_run_stops_at_its_cap_and_hands_its_jobs_back(tmp_path: Path) -> None:
    jobs = [spec(f"r{i}", tokens=4000, model=CONTINUATION_MODEL, max_tokens=500) for i in range(4)]
    economy = Economy(budget=RunBudget(0.05))
    run = await pool_run(tmp_path, jobs, economy=economy)
    assert economy.budget.spent_usd <= 0.05 + 1e-9
    assert economy.budget.spent_usd > 0.04
    assert set(run.states.values()) <= {State.QUEUED, State.SUCCEEDED}
    assert State.QUEUED in run.states.values(), "unfinished jobs wait for the next run"
    assert run.stats.failed == 0


async def test_the_daily_cap_is_one_counter_per_utc_day_in_the_store(tmp_path: Path) -> None:
    clock = FakeClock(at("2026-12-02T23:59:00"))
    first = SQLiteStore(tmp_path / "jobs.db")
    second = SQLiteStore(tmp_path / "jobs.db")
    try:
        caps = [DailyCap(first, 1.0, clock=clock), DailyCap(second, 1.0, clock=clock)]
        await caps[0].add(0.6)
        assert not await caps[1].reached()
        assert await caps[1].add(0.5) == pytest.approx(1.1), "both processes add to one counter"
        assert await caps[0].reached()
        clock.advance(120)
        assert not await caps[0].reached(), "a new UTC day starts from zero"
    finally:
        await first.close()
        await second.close()


async def test_a_pool_claims_nothing_once_the_days_cap_is_spent(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        await store.enqueue([spec("waiting", model=CONTINUATION_MODEL)])
        cap = DailyCap(store, 0.5)
        await cap.add(0.5)
        async with simulated() as sim:
            client = anthropic.AsyncAnthropic(api_key="t", base_url=sim.base_url, max_retries=0)
            try:
                pool = Pool(store, client, FAST_SETTINGS, daily_cap=cap)
                stats = await pool.run(until_empty=True, handle_signals=False)
            finally:
                await client.close()
        assert stats.claimed == 0
        assert (await store.get("waiting")).state is State.QUEUED
    finally:
        await store.close()
