"""LISTEN/NOTIFY wake-ups for idle workers, with polling as the fallback.

A trigger (:mod:`jobs.postgres.schema`) sends ``NOTIFY longform_jobs`` when jobs are inserted or
return to the queue. A :class:`Listener` keeps one dedicated connection (outside the pool: a
pooled connection would be handed to other work) LISTENing on that channel.

* Notifications that arrive while nobody waits stay in the connection, so none is missed between
  two waits; a burst of them wakes the waiter once.
* If the connection is lost (PostgreSQL restarting, a network cut), waiting degrades to sleeping
  for the timeout, which is exactly polling, and the connection is re-made with backoff. After a
  reconnection the waiter returns at once: notifications sent meanwhile were lost.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import anyio
import psycopg
import structlog

from jobs.errors import StoreError
from jobs.postgres.schema import NOTIFY_CHANNEL

__all__ = ("Listener",)

log = structlog.get_logger("jobs.postgres")

_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 30.0


class Listener:
    """One LISTEN connection, for one waiter at a time (the pool's claim loop)."""

    def __init__(self, conninfo: str, connect_timeout: float, channel: str = NOTIFY_CHANNEL) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = anyio.Lock()
        self._retry_at = 0.0
        self._backoff = _FIRST_BACKOFF
        self._closed = False

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 - the Store method's signature
        """Return on a notification (True, also after a reconnection, since notifications may
        have been lost meanwhile), or after ``timeout`` seconds (False)."""
        deadline = anyio.current_time() + timeout
        async with self._lock:
            try:
                conn, fresh = await self._connection()
                if fresh:
                    return True
                if conn is None:
                    await anyio.sleep_until(deadline)
                    return False
                notified = False
                async with contextlib.aclosing(conn.notifies(timeout=timeout, stop_after=1)) as stream:
                    async for _ in stream:
                        notified = True
                async with contextlib.aclosing(conn.notifies(timeout=0)) as stream:
                    async for _ in stream:
                        pass  # drain the rest of a burst: one wake-up for all of it
                return notified
            except psycopg.Error as exc:
                log.warning("listen_connection_lost", error=str(exc).strip())
                await self._drop()
                await anyio.sleep_until(deadline)
                return True

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            await self._drop()

    async def _connection(self) -> tuple[psycopg.AsyncConnection[Any] | None, bool]:
        """The connection and whether it is new; None while the server is away and the next
        reconnection is not due yet."""
        if self._closed:
            raise StoreError("the job store is closed")
        if self._conn is not None:
            return self._conn, False
        if time.monotonic() < self._retry_at:
            return None, False
        try:
            with anyio.fail_after(self._connect_timeout):
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                try:
                    await conn.execute(f"LISTEN {self._channel}")
                except BaseException:
                    await conn.close()
                    raise
        except (psycopg.Error, TimeoutError) as exc:
            self._retry_at = time.monotonic() + self._backoff
            log.warning("listen_connect_failed", error=str(exc).strip(), retry_in=self._backoff)
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
            return None, False
        self._conn, self._backoff = conn, _FIRST_BACKOFF
        return conn, True

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
