"""How the command line ends: errors from inside task groups as one line, and the exit codes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import ClassVar

import anyio
import pytest

from jobs.errors import ConfigError, PoolError, StoreError
from jobs.models import State
from tests.pool_harness import spec
from tests.test_pool_processes import enqueue, wait_until, worker, write_config
from worker.cli import report_error, user_error
from worker.commands.run import exit_code
from worker.pool import PoolStats
from worker.simulator import SimulatorConfig, run_simulator


class AccountError(PoolError):
    """A kind of error the command line has never heard of, with its own exit code."""

    exit_code: ClassVar[int] = 3


def test_errors_inside_nested_groups_are_unwrapped() -> None:
    error = StoreError("postgresql (db:5432/x): cannot connect")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [error])])
    assert user_error(nested) is error
    cancelled = asyncio.CancelledError()
    assert user_error(BaseExceptionGroup("g", [cancelled, nested])) is error


def test_a_bug_beside_our_error_keeps_its_traceback() -> None:
    """Something that is not ours is a bug: it must not be hidden behind a tidy message."""
    assert user_error(ExceptionGroup("g", [StoreError("x"), KeyError("k")])) is None
    with pytest.raises(ExceptionGroup):
        report_error(ExceptionGroup("g", [KeyError("k")]), debug=False)


def test_any_error_class_brings_its_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    code = report_error(ExceptionGroup("g", [AccountError("the key was refused")]), debug=False)
    assert code == 3
    assert capsys.readouterr().err == "error: the key was refused\n"
    assert report_error(ConfigError("bad"), debug=False) == 2
    assert report_error(StoreError("down"), debug=False) == 1
    assert report_error(KeyboardInterrupt(), debug=False) == 130


def test_debug_prints_the_traceback_too(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise StoreError("down")
    except StoreError as exc:
        assert report_error(ExceptionGroup("g", [exc]), debug=True) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.endswith("error: down\n")


@pytest.mark.parametrize(
    ("until_empty", "failed", "signal_name", "code"),
    [
        (False, 0, "SIGTERM", 0),
        (True, 0, None, 0),
        (True, 2, None, 1),
        (True, 0, "SIGINT", 130),
        (True, 2, "SIGTERM", 130),
    ],
)
def test_run_exit_codes(until_empty: bool, failed: int, signal_name: str | None, code: int) -> None:
    stats = PoolStats(failed=failed, interrupted_by=signal_name)
    assert exit_code(stats, until_empty=until_empty) == code


@pytest.mark.slow
async def test_sigint_during_until_empty_exits_130_with_jobs_released(tmp_path: Path) -> None:
    """A batch script must not take a stopped batch for a finished one."""
    jobs = [spec(f"batch-{i}", tokens=4000) for i in range(3)]
    async with run_simulator(SimulatorConfig(tokens_per_second=300.0)) as sim:
        config = write_config(tmp_path, sim, lease=300, grace=0.1, concurrency=1)
        store = await enqueue(tmp_path, jobs)
        try:

            async def streaming() -> bool:
                return (await store.get("batch-0")).committed_chars > 0

            async with worker(config, "--until-empty") as process:
                await wait_until(process, streaming)
                process.send_signal(signal.SIGINT)
                with anyio.fail_after(30):
                    assert await process.wait() == 130
            counts = await store.counts()
            assert (counts[State.QUEUED], counts[State.RUNNING]) == (3, 0)
        finally:
            await store.close()
