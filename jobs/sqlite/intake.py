"""Enqueueing on SQLite: batches of jobs, one statement per kind of row, in one transaction.

``Store.enqueue`` and ``Store.enqueue_session`` both come here. A batch costs three statements
whatever its size, instead of two per job: the ids that exist already are read with one query
(``json_each`` over the batch's ids), the new rows go in with one ``executemany`` of
``INSERT_JOB_ROW`` (positional parameters), and their ``enqueued`` history
rows with one ``INSERT … SELECT`` over ``json_each``. The write connection is held by the
session for its whole life (the store's ``CapacityLimiter``), so nothing else writes between the
read of existing ids and the insert; other processes wait on SQLite's write lock, taken up front
by ``BEGIN IMMEDIATE``.

A session also lifts the per-row ``job_totals`` trigger for its inserts (SQLite has no
statement-level triggers, and a table with a trigger pays a full index seek per row and index),
adds its jobs to ``job_totals`` with one ``INSERT … SELECT … GROUP BY`` before the commit, and
puts the trigger back in the same transaction: other connections only ever see the committed
schema, with the trigger, and totals that match the jobs. A session rolled back restores both.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from jobs import rows
from jobs.models import EnqueueResult, Job, JobSpec
from jobs.sqlite import sql
from jobs.store import Clock

__all__ = ("SQLiteEnqueueSession", "add_batch", "open_session")

T = TypeVar("T")
#: Runs ``fn(conn, *args)`` on the store's write connection, in a worker thread.
Call = Callable[..., Awaitable[Any]]


def add_batch(conn: sqlite3.Connection, params: Sequence[dict[str, Any]], now: float) -> EnqueueResult:
    """Insert a batch inside the caller's transaction (see the module docstring). A repeated
    id is inserted once, its first time; the later ones count as existing, as before."""
    ids = json.dumps([row["id"] for row in params])
    found = {str(row[0]) for row in conn.execute(sql.SELECT_EXISTING_IDS, {"ids": ids})}
    inserted: list[str] = []
    existing: list[str] = []
    new_rows: list[tuple[Any, ...]] = []
    for row in params:
        job_id = row["id"]
        if job_id in found:
            existing.append(job_id)
            continue
        found.add(job_id)
        inserted.append(job_id)
        values = {**row, "run_at": row["requested_run_at"] or now}
        new_rows.append((*(values[c] for c in sql.INSERT_JOB_COLUMNS), now, now))
    conn.executemany(sql.INSERT_JOB_ROW, new_rows)
    if inserted:
        conn.execute(sql.INSERT_ENQUEUED_TRANSITIONS, {"ids": json.dumps(inserted), "at": now})
    return EnqueueResult(tuple(inserted), tuple(existing))


def _add_specs(conn: sqlite3.Connection, specs: Sequence[JobSpec], now: float) -> EnqueueResult:
    """:func:`add_batch` of specs, their columns built in the worker thread, off the event loop."""
    return add_batch(conn, [rows.spec_params(spec) for spec in specs], now)


def _existing(conn: sqlite3.Connection, job_ids: Sequence[str]) -> list[Job]:
    found = conn.execute(sql.SELECT_JOBS_BY_ID, {"ids": json.dumps(list(job_ids))}).fetchall()
    return [rows.job(row) for row in found]


@dataclass(frozen=True, slots=True)
class _Begun:
    now: float
    #: The largest rowid before the session: its jobs are the rows above it.
    after: int
    #: The totals trigger's SQL, to put back before the commit (None: the file has none).
    trigger: str | None


def _begin(conn: sqlite3.Connection, clock: Clock) -> _Begun:
    """Take the write lock, and lift the per-row totals trigger for the session's bulk insert:
    while a table has a trigger, SQLite seeks every index from its root for each row instead of
    appending where the last insert ended (measured: 2.5x the cost of an insert). Other
    connections never see the trigger missing: it is put back in the same transaction."""
    conn.execute("BEGIN IMMEDIATE")
    after = int(conn.execute(sql.MAX_JOB_ROWID).fetchone()[0])
    found = conn.execute(sql.SELECT_TRIGGER_SQL, {"name": sql.TOTALS_INSERT_TRIGGER}).fetchone()
    if found is not None:
        conn.execute(sql.DROP_TOTALS_INSERT_TRIGGER)
    return _Begun(float(clock()), after, None if found is None else str(found[0]))


def _commit(conn: sqlite3.Connection, begun: _Begun) -> None:
    """Add the session's jobs to the totals in one statement, restore the trigger, commit."""
    if begun.trigger is not None:
        conn.execute(sql.ADD_TOTALS_AFTER_ROWID, {"after": begun.after})
        conn.execute(begun.trigger)
    conn.execute("COMMIT")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")  # the trigger comes back with everything else


class SQLiteEnqueueSession:
    """An :class:`~jobs.store.EnqueueSession` on the store's write connection."""

    def __init__(self, call: Call, now: float) -> None:
        self._call = call
        self._now = now

    async def add(self, specs: Sequence[JobSpec]) -> EnqueueResult:
        result: EnqueueResult = await self._call(_add_specs, specs, self._now)
        return result

    async def existing(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        found: list[Job] = await self._call(_existing, job_ids)
        return found


@asynccontextmanager
async def open_session(
    limiter: anyio.CapacityLimiter, call: Call, clock: Clock
) -> AsyncIterator[SQLiteEnqueueSession]:
    """Hold the write connection (``limiter``) for the session; commit at the end, or roll back
    (shielded, so a cancelled enqueue leaves nothing half done) if the block raises."""
    async with limiter:
        begun: _Begun = await call(_begin, clock)
        try:
            yield SQLiteEnqueueSession(call, begun.now)
            with anyio.CancelScope(shield=True):
                await call(_commit, begun)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await call(_rollback)
            raise
