"""The SQLite store's work on one connection: reads, history rows, usage, compaction, views.

Every function here runs inside a worker thread, on the connection the store hands it (through
``SQLiteStore._run`` or ``_read``), so none of them touches the event loop; the store's methods
hold the queue's semantics and call these for the row-level steps.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from jobs import rows, rules
from jobs.errors import JobNotFoundError, StoreError
from jobs.models import (
    BatchRecord,
    FleetView,
    QueueStats,
    State,
    Usage,
)
from jobs.sqlite import sql


def one(conn: sqlite3.Connection, query: str, params: dict[str, Any]) -> sqlite3.Row:
    # fetchall() finishes the statement, so COMMIT never meets one still in progress.
    fetched = conn.execute(query, params).fetchall()
    if not fetched:
        raise StoreError("expected a row, got none")
    row: sqlite3.Row = fetched[0]
    return row


def select(conn: sqlite3.Connection, query: str, params: dict[str, Any]) -> list[sqlite3.Row]:
    return conn.execute(query, params).fetchall()


def get_row(conn: sqlite3.Connection, job_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(sql.SELECT_JOB, {"id": job_id}).fetchone()
    if row is None:
        raise JobNotFoundError(f"no job with id {job_id!r}")
    return row


def select_for_job(conn: sqlite3.Connection, query: str, job_id: str) -> list[sqlite3.Row]:
    get_row(conn, job_id)
    return select(conn, query, {"job_id": job_id})


def read_text(conn: sqlite3.Connection, job_id: str) -> str:
    return "".join(row[0] for row in conn.execute(sql.SELECT_TEXT, {"job_id": job_id}))


def read_text_checked(conn: sqlite3.Connection, job_id: str) -> str:
    get_row(conn, job_id)
    return read_text(conn, job_id)


def read_text_from(conn: sqlite3.Connection, job_id: str, offset: int) -> str:
    get_row(conn, job_id)
    found = conn.execute(sql.SELECT_TEXT_FROM, {"job_id": job_id, "offset": offset}).fetchall()
    if not found:
        return ""
    return "".join(row["text"] for row in found)[max(0, offset - int(found[0]["char_offset"])) :]


def compact(conn: sqlite3.Connection, job_id: str) -> None:
    """Merge a job that just ended into one chunk, inside the transaction that ended it.

    In that transaction rather than one of its own: no reader ever sees an ended job still in
    pieces, a crash cannot leave one uncompacted, and a settle already holds the write lock, so
    merging a document (its rows read, deleted and written once: ``bench.retention`` times the
    settles) costs no second ``BEGIN IMMEDIATE``. Joined in Python: SQLite's ``group_concat`` promises no
    order before 3.44, and texts may hold NUL characters. Every reader's answer is unchanged:
    the text is the same, offset 0 starts it, and a later retry appends at ``committed_chars``."""
    found = conn.execute(sql.SELECT_CHUNKS, {"job_id": job_id}).fetchall()
    if len(found) < 2:
        return
    last = found[-1]
    conn.execute(sql.DELETE_CHUNKS, {"job_id": job_id})
    conn.execute(
        sql.INSERT_COMPACTED,
        {"job_id": job_id, "attempt": last["attempt"], "created_at": last["created_at"]}
        | {"text": "".join(row["text"] for row in found)},
    )


def queue_stats(conn: sqlite3.Connection, now: float) -> QueueStats:
    """Every figure from one read transaction, so they describe the same moment."""
    with conn:
        conn.execute("BEGIN")
        found = rules.counts(rows.totals(row) for row in conn.execute(sql.SELECT_TOTALS))
        row = conn.execute(sql.SELECT_QUEUE_STATS, {"now": now}).fetchone()
        paused = conn.execute(sql.SELECT_PAUSES, {"now": now}).fetchall()
        pauses = {str(r["key"]): float(r["paused_until"]) for r in paused}
        reasons = {str(r["key"]): str(r["pause_reason"]) for r in paused}
    return QueueStats(
        now=now,
        counts=found,
        oldest_due_at=maybe_float(row["oldest_due_at"]),
        oldest_checkpoint_at=maybe_float(row["oldest_checkpoint_at"]),
        expired_leases=int(row["expired_leases"]),
        pauses=pauses,
        pause_reasons=reasons,
    )


def open_batches(conn: sqlite3.Connection) -> list[BatchRecord]:
    with conn:
        conn.execute("BEGIN")
        return [
            rows.batch(row, conn.execute(sql.SELECT_BATCH_ENTRIES, {"key": row["key"]}).fetchall())
            for row in conn.execute(sql.SELECT_OPEN_BATCHES).fetchall()
        ]


def fleet(conn: sqlite3.Connection, now: float, since: float) -> FleetView:
    """The fleet view's reads in one read transaction."""
    with conn:
        conn.execute("BEGIN")
        return rows.fleet_view(
            now,
            conn.execute(sql.SELECT_RUNNING_WORKERS).fetchall(),
            conn.execute(sql.SELECT_RECENT_WORKERS, {"since": since}).fetchall(),
            conn.execute(sql.SELECT_ALL_BUCKETS).fetchall(),
            conn.execute(sql.SELECT_MINUTES, {"since": since}).fetchall(),
        )


def maybe_float(value: Any) -> float | None:
    return None if value is None else float(value)


def next_due(conn: sqlite3.Connection) -> float | None:
    value = conn.execute(sql.SELECT_NEXT_DUE).fetchone()[0]
    return None if value is None else float(value)


def transition(
    conn: sqlite3.Connection,
    job_id: str,
    at: float,
    from_state: State | None,
    to_state: State,
    reason: str,
    attempt: int | None,
) -> None:
    conn.execute(
        sql.INSERT_TRANSITION,
        {"job_id": job_id, "at": at, "from_state": from_state, "to_state": to_state}
        | {"reason": reason, "attempt": attempt},
    )


def set_attempt_usage(conn: sqlite3.Connection, job_id: str, number: int, usage: Usage) -> None:
    """Record an attempt's usage so far, and move the job's total by the difference."""
    key = {"job_id": job_id, "number": number}
    old = Usage.from_dict(dict(one(conn, sql.SELECT_ATTEMPT_USAGE, key)))
    new = usage.as_dict()
    conn.execute(sql.SET_ATTEMPT_USAGE, {**key, **new})
    delta = {name: new[name] - value for name, value in old.as_dict().items()}
    if any(delta.values()):
        conn.execute(sql.ADD_JOB_USAGE, {"id": job_id, **delta})
