"""A live progress line for a pool run: jobs done/total, tokens/s, retries, resumes.

On a terminal the line is redrawn in place twice a second; elsewhere (a CI log, a pipe) a plain
line is printed every few seconds when something changed. ``run`` uses it on a terminal whose logs
are not JSON; the demo always does.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

import anyio

from jobs.errors import StoreError
from jobs.models import State
from jobs.store import Store
from worker.pool import PoolProgress

__all__ = ("ProgressDisplay", "ProgressSource")


class ProgressSource(Protocol):
    """What the display reads: a pool's public snapshot (:meth:`worker.pool.Pool.progress`)."""

    def progress(self) -> PoolProgress: ...


class ProgressDisplay:
    def __init__(self, pool: ProgressSource, store: Store, stream: TextIO | None = None) -> None:
        self.pool = pool
        self.store = store
        self.stream = stream or sys.stderr

    async def run(self) -> None:
        """Redraw until cancelled; the last line is left on screen."""
        last_tokens, last_time = 0, time.monotonic()
        rate = 0.0
        counts: dict[State, int] = {}
        tick = 0
        tty = self.stream.isatty()
        last_line = ""
        try:
            while True:
                if tick % 4 == 0:
                    counts = await self._counts(counts)
                tick += 1
                progress = self.pool.progress()
                now = time.monotonic()
                tokens = progress.output_tokens
                if now > last_time:
                    rate = 0.7 * rate + 0.3 * (tokens - last_tokens) / (now - last_time)
                last_tokens, last_time = tokens, now
                total = sum(counts.values())
                done = (
                    counts.get(State.SUCCEEDED, 0)
                    + counts.get(State.FAILED, 0)
                    + counts.get(State.CANCELLED, 0)
                )
                line = (
                    f"jobs {done}/{total} done · {progress.running} running · "
                    f"{counts.get(State.FAILED, 0)} failed · {rate:,.0f} tok/s · "
                    f"retries {progress.retries} · resumes {progress.resumes}"
                )
                if progress.store_down:
                    line += " · paused: store unavailable"
                if tty:
                    self.stream.write(f"\r\x1b[2K{line}")
                    self.stream.flush()
                elif tick % 6 == 1 and line != last_line:
                    self.stream.write(line + "\n")
                    self.stream.flush()
                    last_line = line
                await anyio.sleep(0.5)
        finally:
            if tty:
                self.stream.write("\n")
                self.stream.flush()

    async def _counts(self, last: dict[State, int]) -> dict[State, int]:
        """Jobs per state; the last known counts while the store is unavailable."""
        try:
            counts = await self.store.counts()
        except StoreError:
            return last
        return counts
