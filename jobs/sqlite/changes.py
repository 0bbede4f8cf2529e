"""A change signal for SQLite that reads no table: ``PRAGMA data_version``.

SQLite bumps a connection's ``data_version`` whenever *another* connection commits to the file
(its own commits do not count), and answering it reads only the WAL index in shared memory: a few
microseconds, whatever the size of the queue. So a relay can poll it every few tens of
milliseconds and re-read the jobs it watches only after a real commit, instead of polling the
tables. The signal uses a connection of its own (never the store's), because the store's own
commits would not move the value it sees.
"""

from __future__ import annotations

import sqlite3

import anyio
import anyio.to_thread

from jobs.errors import StoreError
from jobs.sqlite import sql

__all__ = ("DataVersionSignal", "DEFAULT_POLL_SECONDS")

#: How often ``data_version`` is read while waiting: well under the relay's 250 ms goal.
DEFAULT_POLL_SECONDS = 0.02


class DataVersionSignal:
    """A :class:`~jobs.store.ChangeSignal` on one SQLite file."""

    def __init__(self, path: str, poll_seconds: float = DEFAULT_POLL_SECONDS) -> None:
        self._path = path
        self._poll = poll_seconds
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._closed = False

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 - a poll interval
        """True once another connection has committed since the last call; False on timeout.
        The first call returns True at once: what happened before it was not watched."""
        deadline = anyio.current_time() + timeout
        while True:
            version = await anyio.to_thread.run_sync(self._read, limiter=self._limiter)
            previous, self._version = self._version, version
            if previous is None or version != previous:
                return True
            now = anyio.current_time()
            if now >= deadline:
                return False
            await anyio.sleep(min(self._poll, deadline - now))

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    def _read(self) -> int:
        if self._closed:
            raise StoreError("the change signal is closed")
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            return int(self._conn.execute(sql.DATA_VERSION).fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite ({self._path}): {exc}") from exc

    def _close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None
