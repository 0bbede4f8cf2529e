"""A fleet on PostgreSQL: three ``python -m worker run`` processes share one database.

The simulator runs in this test process; documents carry seeded mid-stream errors and dropped
connections. One test SIGKILLs a worker mid-run, the other restarts PostgreSQL mid-run. Either
way every job must complete exactly once with byte-identical text: one successful attempt, no
overlapping attempts, no checkpoint refused for its offset, and (for the restart) every worker
exits 0.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest
from anyio.abc import Process

from jobs.models import JobSpec, Outcome, State
from jobs.postgres import PostgresStore
from tests.pool_harness import CONTINUATION_MODEL, PREFILL_MODEL, expected, spec
from worker.simulator import Simulator, SimulatorConfig, document_key, run_simulator

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

JOBS = 120
WORKERS = 3
RATE = 300.0  # tokens per second per stream: a 300-token document streams for about a second
FAULTS = "midstream_error=0.1,drop=0.05,seed=3"


#: Continuation documents are rich (doubled words, refrains, tables, CJK) and every continuation
#: opens with one of the simulator's behaviours (repeat, restart, preamble, anchor, ...).
CONTINUATION_EXTRA = " [sim:style=rich] [sim:echo=mixed]"


def fleet_jobs() -> list[JobSpec]:
    return [
        spec(
            f"doc-{i:03}",
            tokens=300,
            model=(PREFILL_MODEL, CONTINUATION_MODEL)[i % 2],
            faults=FAULTS,
            extra=CONTINUATION_EXTRA if i % 2 else "",
        )
        for i in range(JOBS)
    ]


def write_config(tmp_path: Path, sim: Simulator, url: str, *, lease: float) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[anthropic]
base_url = "{sim.base_url}"
[queue]
url = "{url}"
lease_seconds = {lease}
[worker]
concurrency = 8
checkpoint_chars = 400
checkpoint_seconds = 0.1
poll_seconds = 0.05
grace_seconds = 1.0
idle_timeout = 2.0
backoff_base = 0.02
backoff_max = 0.1
retry_after_max = 0.1
[logging]
format = "json"
level = "info"
""",
        encoding="utf-8",
    )
    return path


@asynccontextmanager
async def fleet(config: Path, logs: Path) -> AsyncIterator[list[Process]]:
    """``WORKERS`` worker processes run until the queue is empty, each logging to its own file;
    any still running at the end is killed."""
    env = {**os.environ, "ANTHROPIC_API_KEY": "test"}
    command = [sys.executable, "-m", "worker", "run", "--until-empty", "--config", str(config)]
    async with AsyncExitStack() as stack:
        processes: list[Process] = []
        for n in range(WORKERS):
            log = stack.enter_context((logs / f"worker-{n}.log").open("wb"))
            process = await anyio.open_process(command, env=env, stdout=log, stderr=log)
            stack.push_async_callback(_stop, process)
            processes.append(process)
        yield processes


async def _stop(process: Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.aclose()


async def wait_until(
    condition: Callable[[], Awaitable[bool]], processes: list[Process], limit: float
) -> None:
    """Poll a durable condition (read from the store) until it holds; fail if a worker exits first."""
    with anyio.fail_after(limit):
        while not await condition():
            for process in processes:
                assert process.returncode is None, f"a worker exited early with {process.returncode}"
            await anyio.sleep(0.05)


async def wait_all(processes: list[Process], limit: float) -> list[int]:
    with anyio.fail_after(limit):
        return [await process.wait() for process in processes]


async def assert_exactly_once(store: PostgresStore, jobs: list[JobSpec], sim: Simulator, logs: Path) -> None:
    """Every job succeeded once, with exactly the fault-free text, and no write was refused for
    its offset."""
    accounting = sim.accounting()
    for job in jobs:
        state = await store.get(job.id)
        assert state.state is State.SUCCEEDED, (job.id, state.state, state.last_error)
        assert await store.read_text(job.id) == expected(job), job.id
        attempts = await store.attempts(job.id)
        assert [a.outcome for a in attempts].count(Outcome.SUCCEEDED) == 1, (job.id, attempts)
        for earlier, later in itertools.pairwise(attempts):
            assert earlier.ended_at is not None and earlier.ended_at <= later.started_at, (job.id, attempts)
        assert accounting.documents[document_key(None, job.messages[0].text)].completed, job.id
    for name, text in (await anyio.to_thread.run_sync(read_logs, logs)).items():
        assert "offset_mismatch" not in text, f"{name} had a checkpoint refused for its offset"
        assert "Traceback" not in text, f"{name}:\n{text[-3000:]}"


def read_logs(folder: Path) -> dict[str, str]:
    return {log.name: log.read_text("utf-8", errors="replace") for log in sorted(folder.glob("worker-*.log"))}


async def test_a_worker_killed_mid_run_loses_nothing(tmp_path: Path, postgres_url: str) -> None:
    jobs = fleet_jobs()
    async with run_simulator(SimulatorConfig(tokens_per_second=RATE)) as sim:
        config = write_config(tmp_path, sim, postgres_url, lease=2.0)
        store = PostgresStore(postgres_url)
        try:
            await store.enqueue(jobs)
            async with fleet(config, tmp_path) as workers:
                victim = workers[0]

                async def victim_is_mid_document() -> bool:
                    counts = await store.counts()
                    running = await store.list_jobs([State.RUNNING])
                    mine = [j for j in running if j.lease and f":{victim.pid}:" in j.lease.owner]
                    return counts[State.SUCCEEDED] >= 10 and any(j.committed_chars > 0 for j in mine)

                await wait_until(victim_is_mid_document, workers, limit=30)
                victim.send_signal(signal.SIGKILL)
                codes = await wait_all(workers, limit=50)
            assert codes == [-signal.SIGKILL, 0, 0], codes

            await assert_exactly_once(store, jobs, sim, tmp_path)
            expired = [
                a
                for job in jobs
                for a in await store.attempts(job.id)
                if a.outcome is Outcome.LEASE_EXPIRED and f":{victim.pid}:" in a.worker
            ]
            assert expired, "the killed worker's jobs were taken over after their leases expired"
        finally:
            await store.close()


async def test_the_issue_fleet_run_is_byte_identical(tmp_path: Path, postgres_url: str) -> None:
    """Issue 12's run, scaled: 3 processes, 60 documents of 3,000 tokens on claude-sonnet-4-6,
    10 % dropped streams and 5 % 529s, every continuation repeating the last 2 words. Before the
    safe commits and the join rules, 56/60 came out byte-identical."""
    jobs = [
        spec(
            f"issue-{i:02}",
            tokens=3000,
            model="claude-sonnet-4-6",
            faults=f"drop=0.1,http_529=0.05,seed={i}",
            extra=" [sim:echo=repeat:2]",
        )
        for i in range(60)
    ]
    async with run_simulator(SimulatorConfig(tokens_per_second=1500.0)) as sim:
        config = write_config(tmp_path, sim, postgres_url, lease=5.0)
        store = PostgresStore(postgres_url)
        try:
            await store.enqueue(jobs)
            async with fleet(config, tmp_path) as workers:
                codes = await wait_all(workers, limit=120)
            assert codes == [0] * WORKERS, codes
            await assert_exactly_once(store, jobs, sim, tmp_path)
            accounting = sim.accounting()
            assert accounting.faults_injected.get("drop", 0) >= 5, accounting.faults_injected
            assert accounting.echoes.get("repeat", 0) >= 5, accounting.echoes
        finally:
            await store.close()


def _cluster(url: str) -> tuple[str, str] | None:
    """The local cluster (version, name) serving ``url``'s port, if pg_ctlcluster manages it."""
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        return None
    port = str(urlsplit(url).port or 5432)
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == port:
            return fields[0], fields[1]
    return None


def _ctl(cluster: tuple[str, str], action: str) -> None:
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", "--mode", "fast", *cluster, action]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def _ensure_started(cluster: tuple[str, str]) -> None:
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False).stdout
    if not re.search(rf"^{cluster[0]}\s+{cluster[1]}\s+\d+\s+online", listing, re.MULTILINE):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "start"], check=False, timeout=60
        )


async def test_postgresql_restarting_mid_run_crashes_nothing(tmp_path: Path, postgres_url: str) -> None:
    cluster = _cluster(postgres_url)
    if cluster is None:
        reason = "needs a local cluster managed by pg_ctlcluster to restart"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 (CI): this test must run, but it {reason}")
        pytest.skip(reason)
    jobs = fleet_jobs()
    async with run_simulator(SimulatorConfig(tokens_per_second=RATE)) as sim:
        config = write_config(tmp_path, sim, postgres_url, lease=5.0)
        store = PostgresStore(postgres_url)
        try:
            await store.enqueue(jobs)
            async with fleet(config, tmp_path) as workers:

                async def a_fifth_done_and_streaming() -> bool:
                    counts = await store.counts()
                    return counts[State.SUCCEEDED] >= JOBS // 5 and counts[State.RUNNING] > 0

                await wait_until(a_fifth_done_and_streaming, workers, limit=30)
                try:
                    await anyio.to_thread.run_sync(_ctl, cluster, "restart")
                finally:
                    await anyio.to_thread.run_sync(_ensure_started, cluster)
                left = await store.counts()
                assert left[State.QUEUED] + left[State.RUNNING] > 0, "the restart came too late to matter"
                codes = await wait_all(workers, limit=50)
            assert codes == [0] * WORKERS, codes

            await assert_exactly_once(store, jobs, sim, tmp_path)
            logs = "".join((await anyio.to_thread.run_sync(read_logs, tmp_path)).values())
            assert re.search(r"checkpoint_failed|claim_failed|settle_failed|store_retry", logs), (
                "the workers never noticed the restart"
            )
        finally:
            await store.close()
