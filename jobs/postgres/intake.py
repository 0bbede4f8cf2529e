"""Enqueueing on PostgreSQL: a batch is one statement (``ENQUEUE``: the batch's columns as arrays,
``unnest``-ed, inserted with ``ON CONFLICT DO NOTHING``, their history rows in the same
statement), and an enqueue session is one transaction on one pooled connection.

The statement-level triggers (totals, the NOTIFY that wakes idle workers) fire once per batch,
not once per job; the NOTIFY is delivered at COMMIT, so workers never wake for jobs they cannot
see yet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from jobs.models import EnqueueResult, Job, JobSpec
from jobs.postgres import rows as convert
from jobs.postgres import sql
from jobs.postgres.connector import Connection, Connector

__all__ = ("PostgresEnqueueSession", "add_batch", "open_session")


async def add_batch(conn: Connection, specs: Sequence[JobSpec], now: float) -> EnqueueResult:
    """Insert a batch in the caller's transaction; a repeated id is inserted once, its first time."""
    columns, order = convert.enqueue_params(specs)
    if not order:
        return EnqueueResult((), ())
    cur = await conn.execute(sql.ENQUEUE, {**columns, "now": now})
    new = {row["id"] for row in await cur.fetchall()}
    inserted: list[str] = []
    existing: list[str] = []
    for job_id in order:
        if job_id in new:
            new.discard(job_id)  # a repeated id in one call: the first is inserted
            inserted.append(job_id)
        else:
            existing.append(job_id)
    return EnqueueResult(tuple(inserted), tuple(existing))


class PostgresEnqueueSession:
    """An :class:`~jobs.store.EnqueueSession` on one connection, inside its transaction."""

    def __init__(self, conn: Connection, now: float) -> None:
        self._conn = conn
        self._now = now
        #: Jobs inserted so far, for the ANALYZE of a fresh table after the commit.
        self.inserted = 0

    async def add(self, specs: Sequence[JobSpec]) -> EnqueueResult:
        result = await add_batch(self._conn, specs, self._now)
        self.inserted += len(result.inserted)
        return result

    async def existing(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        cur = await self._conn.execute(sql.SELECT_JOBS_BY_ID, {"ids": list(job_ids)})
        return [convert.job(row) for row in await cur.fetchall()]


@asynccontextmanager
async def open_session(db: Connector, now: Callable[[], float]) -> AsyncIterator[PostgresEnqueueSession]:
    """One transaction (``Connector.transaction``); the session's jobs all get one ``now``."""
    async with db.transaction() as conn:
        yield PostgresEnqueueSession(conn, now())
