"""Scale: ``status`` reads aggregates, so the statements it issues do not grow with the jobs.

Jobs are inserted straight into the SQLite file with ``executemany`` (the store's triggers keep
the aggregates as they would for an enqueue), so 50,000 of them take well under a second. The
statements ``status`` runs are counted with ``sqlite3``'s trace callback; nothing is timed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from jobs.sqlite import SQLiteStore
from worker.cli import main

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
INSERT = """
INSERT INTO jobs (id, messages, model, max_tokens, output_budget, max_attempts, priority, metadata,
                  state, run_at, created_at, updated_at, committed_chars, output_tokens, document_tokens)
VALUES (?, '[{"role": "user", "content": "Write."}]', 'claude-sonnet-4-5', 1000, 1000, 3, 0, '{}',
        ?, 0, 0, 0, ?, ?, ?)
"""


def _fill(path: Path, start: int, count: int) -> None:
    anyio.run(lambda: _create(path))
    with sqlite3.connect(path) as conn:
        rows = ((f"job-{i:07}", STATES[i % 5], i % 100, 10, 8) for i in range(start, start + count))
        conn.executemany(INSERT, rows)


async def _create(path: Path) -> None:
    store = SQLiteStore(path)
    await store.counts()
    await store.close()


def _status(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, Any]:
    """``status --json``, and how many statements it ran on every connection it opened."""
    statements: list[str] = []
    connect: Callable[..., sqlite3.Connection] = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)
    capsys.readouterr()
    assert main(["status", "--json", "--config", str(config)]) == 0
    monkeypatch.setattr(sqlite3, "connect", connect)
    return len(statements), json.loads(capsys.readouterr().out)


def test_status_issues_the_same_statements_for_1000_and_50000_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[queue]\nurl = "sqlite:///jobs.db"\n', "utf-8")
    monkeypatch.chdir(tmp_path)
    _fill(tmp_path / "jobs.db", 0, 1_000)
    small, first = _status(config, capsys, monkeypatch)
    _fill(tmp_path / "jobs.db", 1_000, 49_000)
    large, data = _status(config, capsys, monkeypatch)
    assert first["jobs"] == 1_000
    assert data["jobs"] == 50_000
    assert data["counts"] == dict.fromkeys(STATES, 10_000)
    assert data["committed_chars"] == sum(i % 100 for i in range(50_000))
    assert data["output_tokens"]["wasted"] == 2 * 50_000
    assert small == large <= 12, (small, large)
