"""The two smaller bugs of the issue, and SQLite's readers under a writer's lock."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
import structlog

from jobs.errors import StoreError
from jobs.sqlite import SQLiteStore
from jobs.sqlite.connection import BUSY_TIMEOUT_SECONDS
from tests.store_fixtures import make_spec
from worker.checkpoint import CheckpointWriter, flush_age
from worker.config import QueueSettings
from worker.logs import configure_logging, get_logger


def test_every_event_names_its_logger() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    try:
        structlog.get_logger("worker.pool").info("one", n=1)
        get_logger("worker.other").info("two")
    finally:
        structlog.reset_defaults()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["event"], e["logger"]) for e in events] == [("one", "worker.pool"), ("two", "worker.other")]


async def test_the_progress_estimate_counts_only_text_of_running_attempts(tmp_path: Path) -> None:
    """Finished attempts are counted from their usage; the estimate must not count them again,
    nor the text a resumed job already had."""
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        writer = CheckpointWriter(store, checkpoint_chars=10**9, checkpoint_seconds=60, lease_seconds=10)
        resumed = writer.register("a", "t", "old text", anyio.CancelScope())
        fresh = writer.register("b", "t", "", anyio.CancelScope())
        writer.add(resumed, "12345")
        writer.add(fresh, "123")
        assert writer.streaming_chars() == 8
        writer.unregister(fresh)
        assert writer.streaming_chars() == 5
    finally:
        await store.close()


def test_the_busy_timeout_is_well_under_a_third_of_the_default_lease() -> None:
    assert QueueSettings().lease_seconds / 3 / 2 >= BUSY_TIMEOUT_SECONDS


async def test_reads_do_not_queue_behind_a_write_waiting_for_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    try:
        await store.enqueue([make_spec("r1")])
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        await anyio.to_thread.run_sync(other.execute, "BEGIN EXCLUSIVE")
        order: list[str] = []
        try:
            async with anyio.create_task_group() as tg:

                async def blocked_write() -> None:
                    try:
                        await store.enqueue([make_spec("r2")])  # waits out the busy timeout
                    except StoreError:
                        order.append("write refused")

                tg.start_soon(blocked_write)
                await anyio.wait_all_tasks_blocked()
                assert (await store.get("r1")).spec.id == "r1"
                assert sum((await store.counts()).values()) == 1
                order.append("read answered")
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert order == ["read answered", "write refused"]
    finally:
        await store.close()


@pytest.mark.parametrize("commit", [0.0, 0.05, 0.2, 0.5])
def test_text_is_durable_within_the_checkpoint_interval(commit: float) -> None:
    """Taken at ``flush_age``, seen up to a tick late, committed in ``commit`` seconds: the text is
    durable by ``interval`` whenever a commit takes at most half of it."""
    interval, tick = 1.0, 0.25
    assert flush_age(interval, tick, commit) + tick + commit == pytest.approx(interval)


def test_a_slow_store_still_batches() -> None:
    """A commit slower than half the interval does not make every tick a flush."""
    assert flush_age(1.0, 0.25, 30.0) == pytest.approx(0.25)
    assert flush_age(0.1, 0.2, 0.0) == 0.0
