"""Bad input is stopped at the door: every case of ``tests/bad_input_cases.py`` through the real CLI.

Each case runs ``python -m worker …`` as a subprocess in its own folder, and is checked for:

* the exit code (README: 2 bad usage or configuration, 1 bad input or a runtime failure);
* a message that names where (FILE:LINE: field, the config key and its source, the job id, the path);
* no traceback;
* nothing changed on disk: no file created, changed or removed (SQLite's own ``-wal``/``-shm``
  side files aside) by a command that failed before touching a queue, or by a command that only
  reads.

The cases run a few at a time in threads (each is a separate process), so the table costs about
its slowest cases rather than the sum of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from jobs.jsonl import parse_jobs
from jobs.models import AttemptResult, CheckpointWrite, Outcome
from jobs.sqlite import SQLiteStore
from tests.bad_input_cases import CASES, CONFIG, Case
from tests.store_fixtures import postgres_server
from worker.config import Config

ROOT = Path(__file__).resolve().parent.parent
#: Processes at once: the machine is small and each one spends most of its time importing.
PARALLEL = 3

#: The queue's jobs, as ``enqueue`` with the default config would store them.
QUEUE_LINES = [
    '{"id": "done", "prompt": "Write done.", "priority": 5}',
    '{"id": "a", "prompt": "Write a."}',
    '{"id": "gone", "prompt": "Write gone."}',
]


@dataclass(frozen=True)
class CaseResult:
    code: int
    out: str
    err: str
    before: dict[str, bytes]
    after: dict[str, bytes]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes, SQLite's transient side files aside."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.endswith(("-wal", "-shm"))
    }


async def make_queue(path: Path) -> None:
    specs, errors = parse_jobs(QUEUE_LINES, "queue", Config().job_defaults())
    assert errors == []
    store = SQLiteStore(path)
    try:
        await store.enqueue(specs)
        [claim] = await store.claim("w", 30)
        assert claim.job.id == "done"
        await store.commit([CheckpointWrite("done", claim.token, 0, "The text.")], 30)
        await store.settle("done", claim.token, AttemptResult(Outcome.SUCCEEDED, stop_reason="end_turn"))
        await store.cancel("gone")
    finally:
        await store.close()


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LONGFORM_", "ANTHROPIC_"))}
    return {**env, "PYTHONPATH": str(ROOT), "ANTHROPIC_API_KEY": "test-key", **extra}


def prepare(case: Case, folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, data in {"config.toml": CONFIG.encode(), **case.files}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    if case.queue:
        anyio.run(make_queue, folder / "q.db")


def run_case(case: Case, folder: Path) -> CaseResult:
    before = snapshot(folder)
    proc = subprocess.run(
        [sys.executable, "-m", "worker", *case.argv],
        cwd=folder,
        env=clean_env(case.env),
        input=case.stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    out, err = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    return CaseResult(proc.returncode, out, err, before, snapshot(folder))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CaseResult]]:
    root = tmp_path_factory.mktemp("bad-inputs")
    folders = {case.name: root / f"case-{n}" for n, case in enumerate(CASES)}
    for case in CASES:
        prepare(case, folders[case.name])
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {case.name: pool.submit(run_case, case, folders[case.name]) for case in CASES}
        yield {name: future.result() for name, future in futures.items()}


def test_the_table_is_big_and_its_names_unique() -> None:
    assert len(CASES) >= 100
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.timeout(900)  # the first case's setup runs the whole table
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_stopped_at_the_door(case: Case, outcomes: dict[str, CaseResult]) -> None:
    result = outcomes[case.name]
    shown = f"exit {result.code}\nstdout: {result.out}\nstderr: {result.err}"
    assert result.code == case.code, shown
    assert case.where in result.out + result.err, shown
    assert "Traceback" not in result.out + result.err, shown
    if case.code != 0:
        assert result.err.strip(), "a failure says why on stderr"
    if case.leaves_disk_alone:
        assert result.after == result.before, "nothing on disk may change"


# -- PostgreSQL: the same checks against a server ----------------------------------------------


def run_pg(folder: Path, url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    (folder / "config.toml").write_text(f'[queue]\nurl = "{url}"\n', "utf-8")
    return subprocess.run(
        [sys.executable, "-m", "worker", *argv],
        cwd=folder,
        env=clean_env({}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def has_schema(url: str) -> bool:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute("SELECT to_regclass('jobs') IS NOT NULL")).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("command", [("status",), ("show", "a"), ("export", "--out", "docs")])
async def test_postgres_read_commands_create_no_schema(tmp_path: Path, command: tuple[str, ...]) -> None:
    url = await postgres_server.new_database(empty=True)
    try:
        result = await anyio.to_thread.run_sync(lambda: run_pg(tmp_path, url, *command))
        assert result.returncode == 2, result.stderr
        assert "error: no queue at postgresql (" in result.stderr
        assert "Traceback" not in result.stderr
        assert not await has_schema(url)
        assert not (tmp_path / "docs").exists()
    finally:
        await postgres_server.drop_created()


async def test_postgres_missing_database_is_one_line_and_no_retries(tmp_path: Path) -> None:
    await postgres_server.check()
    url = postgres_server.url("longform_no_such_database")
    result = await anyio.to_thread.run_sync(lambda: run_pg(tmp_path, url, "status"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: no queue at postgresql (")
    assert 'database "longform_no_such_database" does not exist' in lines[0]


async def test_postgres_closed_port_is_one_line(tmp_path: Path) -> None:
    result = await anyio.to_thread.run_sync(
        lambda: run_pg(tmp_path, "postgresql://root@127.0.0.1:1/postgres", "status")
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: postgresql (127.0.0.1:1/postgres): cannot connect: ")
