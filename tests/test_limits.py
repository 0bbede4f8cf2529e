"""Fleet-wide, token-aware rate limits: reservations, refunds, pauses, and the simulator's verdict."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import anyio
import httpx2
import pytest

from jobs.buckets import Limits
from jobs.errors import ConfigError
from jobs.models import State, Usage
from jobs.sqlite import SQLiteStore
from tests.pool_harness import FAST_SETTINGS, expected, spec
from tests.store_fixtures import FakeClock
from worker.limits import CLOCK_MARGIN, FleetLimiter, check_limits
from worker.pool import Pool
from worker.simulator import SimulatorConfig, run_simulator

LIMITS = Limits(requests=600, input_tokens=600_000, output_tokens=6000)  # 100 output tokens/s


class Sleeper:
    """A fake sleep that moves the fake clock, recording each wait."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


@dataclass
class Fake:
    """A real SQLite store on a fake clock, and a fake sleep that moves it."""

    store: SQLiteStore
    clock: FakeClock
    sleeper: Sleeper

    def limiter(self, **kwargs: Any) -> FleetLimiter:
        return FleetLimiter(self.store, LIMITS, clock=self.clock, sleep=self.sleeper, **kwargs)


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[Fake]:
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "jobs.db", clock=clock)
    try:
        yield Fake(store, clock, Sleeper(clock))
    finally:
        await store.close()


def rate_limit_error(retry_after: str) -> anthropic.RateLimitError:
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    request = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    response = httpx2.Response(429, request=request, json=body, headers={"retry-after": retry_after})
    return anthropic.RateLimitError("slow down", response=response, body=body)


async def test_a_reservation_that_does_not_fit_waits_for_the_refill(fake: Fake) -> None:
    fleet = fake.limiter()
    await fleet.acquire(10, 6000)  # the whole output bucket
    assert fake.sleeper.waits == []
    start = fake.clock()
    await fleet.acquire(10, 1000)  # must wait 10 s for 1000 tokens at 100/s, plus the margin
    # (twice: once to admit it, once charged to the first request, taken from a full bucket)
    assert fake.clock() - start == pytest.approx(10.0 + 2 * CLOCK_MARGIN)
    assert fleet.stats.waits == 1


async def test_unused_output_is_refunded(fake: Fake) -> None:
    fleet = fake.limiter()
    ticket = await fleet.acquire(10, 6000)
    await fleet.release(ticket, Usage(input_tokens=10, output_tokens=500), {}, None)
    await fleet.acquire(10, 5400)  # fits at once: 5500 of 6000 came back
    assert fake.sleeper.waits == []


async def test_without_refund_the_reservation_is_lost(fake: Fake) -> None:
    fleet = fake.limiter(refund=False)
    ticket = await fleet.acquire(10, 6000)
    await fleet.release(ticket, Usage(input_tokens=10, output_tokens=500), {}, None)
    await fleet.acquire(10, 5400)
    assert sum(fake.sleeper.waits) == pytest.approx(54.0 + 2 * CLOCK_MARGIN)


async def test_a_stream_that_broke_midway_refunds_no_output(fake: Fake) -> None:
    fleet = fake.limiter()
    ticket = await fleet.acquire(10, 6000)
    started = {"content-type": "text/event-stream"}
    await fleet.release(ticket, Usage(output_tokens=1), started, httpx2.RemoteProtocolError("peer closed"))
    await fleet.acquire(10, 100)
    assert sum(fake.sleeper.waits) == pytest.approx(1.0 + 2 * CLOCK_MARGIN)  # see above


async def test_a_429_pauses_every_process_sharing_the_store(fake: Fake, tmp_path: Path) -> None:
    """Two limiters on two connections to one file: a 429 seen by one pauses the other."""
    other = SQLiteStore(tmp_path / "jobs.db", clock=fake.clock)
    try:
        first = fake.limiter()
        second = FleetLimiter(other, LIMITS, clock=fake.clock, sleep=Sleeper(fake.clock))
        ticket = await first.acquire(10, 100)
        await first.release(ticket, Usage(), {}, rate_limit_error("7"))
        start = fake.clock()
        await second.acquire(10, 100)
        assert fake.clock() - start == pytest.approx(7.0)
        assert first.stats.pauses == 1
        reason = await other.update_buckets(
            "anthropic", LIMITS, lambda state, now: (state, state.pause_reason)
        )
        assert reason == "429 rate_limit_error"  # kept for the dashboard's fleet view
    finally:
        await other.close()


async def test_the_pause_is_capped(fake: Fake) -> None:
    fleet = fake.limiter(retry_after_max=5.0)
    ticket = await fleet.acquire(10, 100)
    await fleet.release(ticket, Usage(), {}, rate_limit_error("3600"))
    start = fake.clock()
    await fleet.acquire(10, 100)
    assert fake.clock() - start == pytest.approx(5.0)


async def test_server_headers_lower_the_buckets(fake: Fake) -> None:
    fleet = fake.limiter()
    ticket = await fleet.acquire(10, 100)
    await fleet.started(ticket, {"anthropic-ratelimit-output-tokens-remaining": "0"})
    await fleet.acquire(10, 100)
    assert sum(fake.sleeper.waits) == pytest.approx(1.0 + CLOCK_MARGIN)


def test_max_tokens_above_the_output_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_tokens"):
        check_limits(Limits(output_tokens=1000), max_tokens=4096)
    check_limits(Limits(output_tokens=0), max_tokens=4096)


async def test_the_pool_stays_inside_the_simulators_limits(tmp_path: Path) -> None:
    """The simulator enforces OTPM by reserving max_tokens at the start, exactly as the API does:
    any request our limiter let start without room would be answered 429."""
    limits = Limits(requests=600, output_tokens=3000)  # 50 output tokens/s
    jobs = [spec(f"limited-{i}", tokens=300, max_tokens=400) for i in range(11)]  # 3300 > 3000
    sim_config = SimulatorConfig(rpm=limits.requests, otpm=limits.output_tokens)
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        async with run_simulator(sim_config) as sim:
            client = anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0)
            try:
                await store.enqueue(jobs)
                fleet = FleetLimiter(store, limits)
                pool = Pool(store, client, FAST_SETTINGS, limiter=fleet)
                stats = await pool.run(until_empty=True, handle_signals=False)
            finally:
                await client.close()
            accounting = sim.accounting()
        assert stats.succeeded == len(jobs)
        for job in jobs:
            assert await store.read_text(job.id) == expected(job)
        assert accounting.requests_by_status.get(429, 0) == 0
        assert fleet.stats.waits > 0, "the limit was never reached: the test would prove nothing"
    finally:
        await store.close()


async def test_three_processes_share_one_limit(tmp_path: Path) -> None:
    otpm = 3000
    jobs = [spec(f"fleet-{i}", tokens=300, max_tokens=400) for i in range(12)]
    async with run_simulator(SimulatorConfig(otpm=otpm)) as sim:
        config = tmp_path / "config.toml"
        config.write_text(
            f"""
[anthropic]
base_url = "{sim.base_url}"
max_tokens = 400
[queue]
url = "sqlite:///{tmp_path / "jobs.db"}"
[worker]
concurrency = 4
poll_seconds = 0.05
checkpoint_seconds = 0.1
backoff_base = 0.05
backoff_max = 0.2
[rate_limits]
output_tokens_per_minute = {otpm}
[logging]
format = "json"
""",
            encoding="utf-8",
        )
        store = SQLiteStore(tmp_path / "jobs.db")
        await store.enqueue(jobs)
        env = {**os.environ, "ANTHROPIC_API_KEY": "test"}
        command = [sys.executable, "-m", "worker", "run", "--until-empty", "--config", str(config)]
        try:
            codes: list[int] = []

            async def one_worker() -> None:
                process = await anyio.run_process(command, env=env, check=False)
                codes.append(process.returncode)
                assert process.returncode == 0, process.stderr.decode()[-2000:]

            with anyio.fail_after(90):
                async with anyio.create_task_group() as tg:
                    for _ in range(3):
                        tg.start_soon(one_worker)
            accounting = sim.accounting()
            assert codes == [0, 0, 0]
            for job in jobs:
                assert (await store.get(job.id)).state is State.SUCCEEDED
                assert await store.read_text(job.id) == expected(job)
            assert accounting.requests_by_status.get(429, 0) == 0, json.dumps(
                accounting.to_dict()["requests"]
            )
        finally:
            await store.close()


async def test_under_rate_limits_the_pool_still_fills_its_slots_at_once(tmp_path: Path) -> None:
    """Claims go one at a time under limits, but back to back: a long poll interval must not
    space them out. Every attempt starts before the first one ends."""
    jobs = [spec(f"slot-{i}", tokens=150) for i in range(4)]
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        async with run_simulator(SimulatorConfig(tokens_per_second=100)) as sim:
            client = anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0)
            try:
                await store.enqueue(jobs)
                fleet = FleetLimiter(store, Limits(requests=6000, output_tokens=1_000_000))
                settings = dataclasses.replace(FAST_SETTINGS, concurrency=4, poll_seconds=60)
                stats = await Pool(store, client, settings, limiter=fleet).run(
                    until_empty=True, handle_signals=False
                )
            finally:
                await client.close()
        assert stats.succeeded == 4
        attempts = [a for job in jobs for a in await store.attempts(job.id)]
        first_end = min(a.ended_at for a in attempts if a.ended_at is not None)
        assert max(a.started_at for a in attempts) < first_end
    finally:
        await store.close()
