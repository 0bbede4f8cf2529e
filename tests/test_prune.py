"""``prune`` and ``[queue] retention`` end to end: the command on a SQLite file from a config file,
durations and their errors, the fleet lease that lets one process prune at a time, and a real
``run`` process applying the retention setting."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest

from jobs.errors import ConfigError, JobNotFoundError
from jobs.models import AttemptResult, CheckpointWrite, Outcome, State
from jobs.sqlite import SQLiteStore
from jobs.store import Store
from tests.pool_harness import PREFILL_MODEL
from tests.serve_fixtures import ServeFactory, write_serve_config
from tests.store_fixtures import FakeClock, make_spec
from worker.cli import main
from worker.config import load_config
from worker.retention import RetentionSettings, parse_duration, prune_pass

DAY = 86_400.0


async def _finished(store: Store, job_id: str, outcome: Outcome = Outcome.SUCCEEDED) -> None:
    await store.enqueue([make_spec(job_id)])
    [claim] = await store.claim("w", 30)
    assert claim.job.id == job_id
    await store.commit([CheckpointWrite(job_id, claim.token, 0, f"text of {job_id}")], 30)
    await store.settle(job_id, claim.token, AttemptResult(outcome, error="bad"))


async def _fill(path: Path) -> None:
    """old-ok and old-failed ended 40 days ago, recent 1 hour ago, and waiting is still queued
    (enqueued 40 days ago)."""
    clock = FakeClock(time.time() - 40 * DAY)
    store = SQLiteStore(path, clock=clock)
    try:
        await _finished(store, "old-ok")
        await _finished(store, "old-failed", Outcome.FAILED)
        # A model the simulator knows, for the `run` below (it checks the queued jobs' models).
        await store.enqueue([make_spec("waiting", run_at=clock.now + 100 * DAY, model=PREFILL_MODEL)])
        clock.set(time.time() - 3600)
        await _finished(store, "recent")
    finally:
        await store.close()


async def _ids(path: Path) -> set[str]:
    store = SQLiteStore(path)
    try:
        return {job.id for job in await store.list_jobs()}
    finally:
        await store.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "config.toml").write_text('[queue]\nurl = "sqlite:///jobs.db"\n', "utf-8")
    anyio.run(_fill, tmp_path / "jobs.db")
    return tmp_path


def _prune(project: Path, *args: str) -> int:
    return main(["prune", *args, "--config", str(project / "config.toml")])


def test_prune_says_what_it_would_delete_then_deletes_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _prune(project, "--older-than", "30d", "--dry-run") == 0
    assert (
        capsys.readouterr().out
        == "would prune 2 jobs (succeeded, failed or cancelled) that ended over 30d ago\n"
    )
    assert anyio.run(_ids, project / "jobs.db") == {"old-ok", "old-failed", "waiting", "recent"}

    assert _prune(project, "--older-than", "30d", "--state", "failed") == 0
    assert capsys.readouterr().out == "pruned 1 job (failed) that ended over 30d ago\n"
    assert _prune(project, "--older-than", "30m") == 0
    assert (
        capsys.readouterr().out == "pruned 2 jobs (succeeded, failed or cancelled) that ended over 30m ago\n"
    )
    assert anyio.run(_ids, project / "jobs.db") == {"waiting"}  # queued: never pruned, however old


@pytest.mark.parametrize("given", ["30", "30 days", "1w", "-5d", "d", "99999999d"])
def test_a_bad_duration_names_the_flag(project: Path, capsys: pytest.CaptureFixture[str], given: str) -> None:
    assert _prune(project, f"--older-than={given}") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: flag --older-than must be") and repr(given) in err
    assert anyio.run(_ids, project / "jobs.db") == {"old-ok", "old-failed", "waiting", "recent"}


def test_queued_and_running_cannot_be_chosen(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for state in ("queued", "running"):
        with pytest.raises(SystemExit) as exit:
            _prune(project, "--older-than", "1s", "--state", state)
        assert exit.value.code == 2
        assert "invalid choice" in capsys.readouterr().err


def test_prune_of_a_missing_queue_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.toml").write_text('[queue]\nurl = "sqlite:///nowhere.db"\n', "utf-8")
    assert main(["prune", "--older-than", "1d", "--config", str(tmp_path / "config.toml")]) == 2
    assert "no queue at" in capsys.readouterr().err
    assert not (tmp_path / "nowhere.db").exists()


def test_durations() -> None:
    assert [parse_duration(t, "x") for t in ("90s", "30m", "12h", "30d", "1.5h", " 2d ")] == [
        90,
        1800,
        43_200,
        2_592_000,
        5400,
        172_800,
    ]


def test_the_retention_setting_is_checked_when_the_config_loads(tmp_path: Path) -> None:
    assert load_config(env={}).queue.retention_seconds() is None
    assert load_config(env={}, overrides={"queue.retention": "12h"}).queue.retention_seconds() == 43_200
    path = tmp_path / "config.toml"
    path.write_text('[queue]\nretention = "30 days"\n', "utf-8")
    with pytest.raises(ConfigError, match=r"\[queue\] retention: queue\.retention must be a duration"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match=r"LONGFORM_QUEUE_RETENTION: queue\.retention must be a duration"):
        load_config(env={"LONGFORM_QUEUE_RETENTION": "30"})


async def test_one_process_of_a_fleet_prunes_at_a_time(tmp_path: Path) -> None:
    await _fill(tmp_path / "jobs.db")
    clock = FakeClock(time.time())
    store = SQLiteStore(tmp_path / "jobs.db", clock=clock)
    try:
        settings = RetentionSettings(older_than=30 * DAY, every=60)
        assert await prune_pass(store, "host-a", settings) == 2
        assert await prune_pass(store, "host-b", settings) is None  # host-a holds the lease
        clock.advance(DAY)  # host-a stopped: its lease expired
        assert await prune_pass(store, "host-b", settings) == 0  # host-b took over; none that old
        assert await prune_pass(store, "host-a", settings) is None
        assert await _ids(tmp_path / "jobs.db") == {"waiting", "recent"}
    finally:
        await store.close()


async def test_run_applies_the_retention_setting(tmp_path: Path) -> None:
    """A real ``run`` process with ``[queue] retention = "1d"`` deletes the jobs that ended 40
    days ago at start-up, keeps the one that ended an hour ago, and runs the queued one."""
    from tests.pool_harness import spec
    from tests.test_pool_processes import wait_until, worker, write_config
    from worker.simulator import SimulatorConfig, run_simulator

    await _fill(tmp_path / "jobs.db")
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.enqueue([spec("new", tokens=50)])
    try:
        async with run_simulator(SimulatorConfig(tokens_per_second=2000)) as sim:
            config = write_config(tmp_path, sim, lease=5, grace=1)
            config.write_text(config.read_text().replace("[queue]\n", '[queue]\nretention = "1d"\n'))

            async def pruned_and_done() -> bool:
                gone = not {"old-ok", "old-failed"} & {job.id for job in await store.list_jobs()}
                return gone and (await store.get("new")).state == State.SUCCEEDED

            async with worker(config) as process:
                await wait_until(process, pruned_and_done)
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
        assert {job.id for job in await store.list_jobs()} == {"waiting", "recent", "new"}
        with pytest.raises(JobNotFoundError):
            await store.get("old-ok")
        assert (await store.counts())[State.SUCCEEDED] == 2
    finally:
        await store.close()


async def test_serve_with_workers_applies_the_retention_setting(
    tmp_path: Path, serve_process: ServeFactory
) -> None:
    """``serve --workers`` runs the same automatic prune as ``run``; its served store answers."""
    from worker.simulator import SimulatorConfig, run_simulator

    await _fill(tmp_path / "jobs.db")
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        async with run_simulator(SimulatorConfig(tokens_per_second=0)) as sim:
            config = write_serve_config(tmp_path, base_url=sim.base_url)
            config.write_text(config.read_text().replace("[queue]\n", '[queue]\nretention = "1d"\n'))
            served = serve_process(config, "--workers", "1")
            with anyio.fail_after(30):  # poll a durable fact, as wait_until does
                while {"old-ok", "old-failed"} & {job.id for job in await store.list_jobs()}:
                    assert served.process.poll() is None, served.log_text()
                    await anyio.sleep(0.02)
        assert {job.id for job in await store.list_jobs()} == {"waiting", "recent"}
    finally:
        await store.close()
