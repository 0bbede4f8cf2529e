"""Worker processes killed and stopped for real: SIGKILL mid-stream, SIGTERM, a second signal.

The simulator runs in this test process; the workers are ``python -m worker run`` subprocesses
talking to it over real HTTP, sharing one SQLite file with the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from jobs.models import JobSpec, Outcome, ResumeMode, State
from jobs.sqlite import SQLiteStore
from tests.pool_harness import CONTINUATION_MODEL, PREFILL_MODEL, expected, spec
from worker.simulator import Simulator, SimulatorConfig, count_tokens, document_key, run_simulator

pytestmark = pytest.mark.slow

RATE = 400.0  # tokens per second per stream
CHECKPOINT_SECONDS = 0.2


def write_config(tmp_path: Path, sim: Simulator, *, lease: float, grace: float, concurrency: int = 4) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[anthropic]
base_url = "{sim.base_url}"
[queue]
url = "sqlite:///{tmp_path / "jobs.db"}"
lease_seconds = {lease}
[worker]
concurrency = {concurrency}
checkpoint_chars = 1000000
checkpoint_seconds = {CHECKPOINT_SECONDS}
poll_seconds = 0.05
grace_seconds = {grace}
idle_timeout = 5.0
backoff_base = 0.05
backoff_max = 0.1
[logging]
format = "json"
""",
        encoding="utf-8",
    )
    return path


@asynccontextmanager
async def worker(config: Path, *args: str) -> AsyncIterator[Process]:
    env = {**os.environ, "ANTHROPIC_API_KEY": "test"}
    command = [sys.executable, "-m", "worker", "run", "--config", str(config), *args]
    async with await anyio.open_process(command, env=env, stdout=None, stderr=None) as process:
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def wait_until(process: Process, condition: Callable[[], Awaitable[bool]], limit: float = 30.0) -> None:
    """Poll ``condition`` (a durable fact, read from the store) until it holds; fail at once if
    the worker exits first."""
    with anyio.fail_after(limit):
        while not await condition():
            assert process.returncode is None, f"the worker exited early with {process.returncode}"
            await anyio.sleep(0.02)


async def enqueue(tmp_path: Path, jobs: list[JobSpec]) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.enqueue(jobs)
    return store


@pytest.mark.parametrize("model", [PREFILL_MODEL, CONTINUATION_MODEL])
async def test_sigkill_mid_stream_then_a_new_worker_resumes(tmp_path: Path, model: str) -> None:
    continuation = model == CONTINUATION_MODEL
    extra = " [sim:style=rich] [sim:echo=mixed]" if continuation else ""
    job = spec("killed", tokens=3000, model=model, extra=extra)
    async with run_simulator(SimulatorConfig(tokens_per_second=RATE, tokens_per_delta=(1, 2))) as sim:
        config = write_config(tmp_path, sim, lease=1.5, grace=5)
        store = await enqueue(tmp_path, [job])
        try:

            async def committed_enough() -> bool:
                return (await store.get("killed")).committed_chars > 2000

            async with worker(config) as first:
                await wait_until(first, committed_enough)
                first.send_signal(signal.SIGKILL)
                await first.wait()
            at_kill = await store.get("killed")
            assert at_kill.state is State.RUNNING, "a killed worker cannot release its lease"

            async with worker(config, "--until-empty") as second:
                with anyio.fail_after(60):
                    assert await second.wait() == 0

            assert await store.read_text("killed") == expected(job)
            attempts = await store.attempts("killed")
            assert [a.outcome for a in attempts] == [Outcome.LEASE_EXPIRED, Outcome.SUCCEEDED]
            assert attempts[1].chars_at_start == at_kill.committed_chars
            assert attempts[1].resume_mode in (ResumeMode.PREFILL, ResumeMode.CONTINUATION)
            assert attempts[1].joins and "uncertain" not in dict(attempts[1].joins), attempts[1].joins

            emitted = sim.accounting().documents[document_key(None, job.messages[0].text)].output_tokens
            regenerated = emitted - count_tokens(expected(job))
            one_interval = RATE * CHECKPOINT_SECONDS
            # The writer wakes every interval/4, and a delta carries up to 2 tokens. A continuation
            # also rewrites what its safe-commit gate held back (about a line) and its reply's
            # echo (up to a restarted paragraph).
            slack = 250 if continuation else 0
            assert 0 <= regenerated <= one_interval * 1.25 + 2 + slack, regenerated
        finally:
            await store.close()


async def test_sigterm_releases_leases_and_a_second_worker_finishes(tmp_path: Path) -> None:
    jobs = [
        spec(f"term-{i}", tokens=1500, model=(PREFILL_MODEL, CONTINUATION_MODEL)[i % 2]) for i in range(3)
    ]
    async with run_simulator(SimulatorConfig(tokens_per_second=RATE)) as sim:
        # A long lease: the second worker can only start at once if the first released its leases.
        config = write_config(tmp_path, sim, lease=300, grace=0.1, concurrency=3)
        store = await enqueue(tmp_path, jobs)
        try:

            async def all_streaming() -> bool:
                return all([(await store.get(j.id)).committed_chars > 0 for j in jobs])

            async with worker(config) as first:
                await wait_until(first, all_streaming)
                first.send_signal(signal.SIGTERM)
                with anyio.fail_after(30):
                    assert await first.wait() == 0
            for job in jobs:
                state = await store.get(job.id)
                assert state.state is State.QUEUED, (job.id, state.state)
                assert state.lease is None
                assert state.committed_chars > 0

            async with worker(config, "--until-empty") as second:
                with anyio.fail_after(60):
                    assert await second.wait() == 0
            for job in jobs:
                assert await store.read_text(job.id) == expected(job)
                attempts = await store.attempts(job.id)
                assert [a.outcome for a in attempts] == [Outcome.RELEASED, Outcome.SUCCEEDED]
                assert (await store.get(job.id)).failures == 0, "a graceful release is not a failure"
        finally:
            await store.close()


async def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    job = spec("stubborn", tokens=5000)
    async with run_simulator(SimulatorConfig(tokens_per_second=RATE)) as sim:
        config = write_config(tmp_path, sim, lease=300, grace=600)
        store = await enqueue(tmp_path, [job])
        env = {**os.environ, "ANTHROPIC_API_KEY": "test"}
        command = [sys.executable, "-m", "worker", "run", "--config", str(config)]
        try:
            async with await anyio.open_process(command, env=env, stderr=subprocess.PIPE) as first:
                assert first.stderr is not None
                logs = TextReceiveStream(first.stderr)

                async def streaming() -> bool:
                    return (await store.get("stubborn")).committed_chars > 0

                await wait_until(first, streaming)
                first.send_signal(signal.SIGTERM)
                # Signals of one kind coalesce while pending: send the second only once the
                # worker has said it handled the first.
                seen = ""
                with anyio.fail_after(10):
                    async for chunk in logs:
                        seen += chunk
                        if '"pool_stopping"' in seen:
                            break
                first.send_signal(signal.SIGTERM)
                with anyio.fail_after(10):  # far less than the 600 s grace period
                    assert await first.wait() == 130
            assert (await store.get("stubborn")).state is State.RUNNING, "leases are left to expire"
        finally:
            await store.close()
