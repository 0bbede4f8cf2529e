"""The progress line reads the pool's public snapshot and the store's counts, and says both."""

from __future__ import annotations

import io

import anyio

from jobs.models import AttemptResult, Outcome
from jobs.sqlite import SQLiteStore
from tests.store_fixtures import make_spec
from worker.pool import PoolProgress
from worker.progress import ProgressDisplay


class _Snapshots:
    """Stands in for a pool: the display may read nothing but ``progress()``."""

    def __init__(self, progress: PoolProgress) -> None:
        self.snapshot = progress
        self.reads = 0

    def progress(self) -> PoolProgress:
        self.reads += 1
        return self.snapshot


class _Lines(io.StringIO):
    """A non-terminal stream that tells the test when the first whole line arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.written = anyio.Event()

    def write(self, text: str) -> int:
        count = super().write(text)
        if text.endswith("\n"):
            self.written.set()
        return count


async def test_the_line_shows_the_snapshot_and_the_stores_counts() -> None:
    store = SQLiteStore(":memory:")
    await store.enqueue([make_spec("a"), make_spec("b"), make_spec("c")])
    [claim] = await store.claim("w", 30)
    await store.settle(claim.job.id, claim.token, AttemptResult(Outcome.FAILED, error="HTTP 400"))
    source = _Snapshots(PoolProgress(running=2, output_tokens=0, retries=4, resumes=1, store_down=True))
    lines = _Lines()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ProgressDisplay(source, store, lines).run)
            with anyio.fail_after(10):
                await lines.written.wait()
            tg.cancel_scope.cancel()
    finally:
        await store.close()
    line = lines.getvalue().splitlines()[0]
    assert line.startswith("jobs 1/3 done · 2 running · 1 failed · ")
    assert line.endswith("retries 4 · resumes 1 · paused: store unavailable")
    assert source.reads >= 1
