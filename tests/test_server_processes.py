"""``python -m worker serve`` as a real process: a worker SIGKILLed mid-stream while a client
follows the job, ``serve --workers``, the generated token, and what the access log holds."""

from __future__ import annotations

import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest
from anyio.abc import Process

from jobs.sqlite import SQLiteStore
from tests.pool_harness import CONTINUATION_MODEL, PREFILL_MODEL, expected, spec
from tests.serve_fixtures import ServeFactory, write_serve_config
from tests.server_harness import TOKEN, auth, open_events
from worker.server.auth import TOKEN_FILE
from worker.simulator import SimulatorConfig, run_simulator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@asynccontextmanager
async def worker(config: Path) -> AsyncIterator[Process]:
    env = {**os.environ, "ANTHROPIC_API_KEY": "test"}
    command = [sys.executable, "-m", "worker", "run", "--config", str(config)]
    async with await anyio.open_process(command, env=env, stdout=None, stderr=None) as process:
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def job_body(job_id: str, tokens: int, model: str) -> dict[str, object]:
    return {"id": job_id, "prompt": spec(job_id, tokens=tokens).messages[0].content, "model": model}


@pytest.mark.parametrize("model", [PREFILL_MODEL, CONTINUATION_MODEL])
async def test_a_worker_killed_mid_stream_leaves_the_client_one_continuous_text(
    tmp_path: Path, serve_process: ServeFactory, model: str
) -> None:
    """The client follows the job through the server while the worker streaming it is SIGKILLed
    and the other worker resumes it once the lease expires: the text events add up to the
    simulator's document, byte for byte, with no gap and no repeat."""
    async with run_simulator(SimulatorConfig(tokens_per_second=300, tokens_per_delta=(1, 2))) as sim:
        config = write_serve_config(tmp_path, base_url=sim.base_url)
        served = serve_process(config)
        store = SQLiteStore(tmp_path / "jobs.db")
        texts: list[str] = []
        states: list[str] = []
        killed = False
        try:
            async with worker(config) as one, worker(config) as two, aiohttp.ClientSession() as session:
                async with session.post(
                    f"{served.url}/v1/jobs", json=job_body("doc", 1500, model), headers=auth()
                ) as response:
                    assert response.status == 201
                async with open_events(session, f"{served.url}/v1/jobs/doc/events") as stream:
                    async for event in stream.events():
                        if event.event == "text":
                            data = event.json()
                            assert data["offset"] == sum(map(len, texts)), "a gap or a repeat"
                            texts.append(data["text"])
                            if not killed and sum(map(len, texts)) > 800:
                                await _kill_the_owner(store, (one, two))
                                killed = True
                        elif event.event == "state":
                            states.append(event.json()["state"])
                        elif event.event == "done":
                            assert event.json()["state"] == "succeeded"
                            break
        finally:
            await store.close()
    assert "".join(texts) == expected(spec("doc", tokens=1500))
    assert killed
    assert "lease_lost" in states and "resumed" in states, states


async def _kill_the_owner(store: SQLiteStore, workers: tuple[Process, Process]) -> None:
    """SIGKILL the worker whose pid is in the job's lease owner (host:pid:random)."""
    lease = (await store.get("doc")).lease
    assert lease is not None
    pid = int(lease.owner.split(":")[1])
    [owner] = [w for w in workers if w.pid == pid]
    owner.send_signal(signal.SIGKILL)
    await owner.wait()


async def test_serve_with_workers_runs_jobs_in_one_process(
    tmp_path: Path, serve_process: ServeFactory
) -> None:
    async with run_simulator(SimulatorConfig(tokens_per_second=0)) as sim:
        served = serve_process(write_serve_config(tmp_path, base_url=sim.base_url), "--workers", "2")
        async with aiohttp.ClientSession() as session:
            body = {"jobs": [job_body(f"j{n}", 300, PREFILL_MODEL) for n in range(3)]}
            async with session.post(f"{served.url}/v1/jobs", json=body, headers=auth()) as response:
                assert response.status == 201
            for n in range(3):
                got: list[str] = []
                async with open_events(session, f"{served.url}/v1/jobs/j{n}/events") as stream:
                    async for event in stream.events():
                        if event.event == "text":
                            got.append(event.json()["text"])
                        elif event.event == "done":
                            break
                assert "".join(got) == expected(spec(f"j{n}", tokens=300))
    log = served.log_text()
    assert '"pool_started"' in log and '"aiohttp.access"' in log
    assert "Write document" not in log, "prompt text in the logs"
    assert TOKEN not in log, "the token in the logs"


async def test_serve_with_workers_also_writes_batch_mode_jobs(
    tmp_path: Path, serve_process: ServeFactory
) -> None:
    """``serve --workers`` runs the batch submitter beside its pool, as ``run`` does: a batch-mode
    job submitted over HTTP is written through the simulator's Message Batches."""
    async with run_simulator(SimulatorConfig(tokens_per_second=0)) as sim:
        served = serve_process(write_serve_config(tmp_path, base_url=sim.base_url), "--workers", "1")
        async with aiohttp.ClientSession() as session:
            body = job_body("b1", 200, PREFILL_MODEL) | {"mode": "batch"}
            async with session.post(f"{served.url}/v1/jobs", json=body, headers=auth()) as response:
                assert response.status == 201
            got: list[str] = []
            with anyio.fail_after(60):
                async with open_events(session, f"{served.url}/v1/jobs/b1/events") as stream:
                    async for event in stream.events():
                        if event.event == "text":
                            got.append(event.json()["text"])
                        elif event.event == "done":
                            break
            async with session.get(f"{served.url}/v1/jobs/b1", headers=auth()) as response:
                job = await response.json()
        assert (job["state"], job["mode"]) == ("succeeded", "batch")
        assert "".join(got) == expected(spec("b1", tokens=200))
        assert sim.accounting().batch_succeeded == 1  # by batch, not streamed


async def test_a_generated_token_is_stored_0600_and_printed_once(
    tmp_path: Path, serve_process: ServeFactory
) -> None:
    config = write_serve_config(tmp_path)
    first = serve_process(config, token=None)
    path = tmp_path / TOKEN_FILE
    token = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first.process.terminate()
    first.process.wait(10)
    assert token in first.log_text(), "the generated token was not printed"
    second = serve_process(config, token=None)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{second.url}/v1/jobs", headers=auth(token)) as response:
            assert response.status == 200
        async with session.get(f"{second.url}/v1/jobs", headers=auth(TOKEN)) as response:
            assert response.status == 401
    second.process.terminate()
    second.process.wait(10)
    assert token not in second.log_text(), "the token was printed again"
