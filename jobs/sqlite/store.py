"""The SQLite job store: one file, several worker processes, real leases.

Durability and concurrency, in short:

* **WAL with ``synchronous=NORMAL``.** A committed checkpoint survives the process dying at any
  moment (SIGKILL, OOM kill): WAL frames are written before ``COMMIT`` returns, and only an OS
  crash or power cut can lose the last transactions. Readers never block the writer.
* **``BEGIN IMMEDIATE`` for every write transaction.** It takes the write lock up front, so two
  processes can never both read a job as claimable and then both claim it, and never deadlock
  upgrading a read lock to a write lock; a waiting writer is retried by ``busy_timeout``.
* **The event loop never blocks.** Each store owns a write connection and a read connection;
  every call runs in a worker thread (``anyio.to_thread.run_sync``) behind its connection's
  ``CapacityLimiter(1)``, so calls from many tasks queue up asynchronously. Reads (status, counts,
  text) use the read connection, so they never queue behind writes (WAL readers see the last
  commit without waiting for the write lock).
* **A short busy timeout** (``BUSY_TIMEOUT_SECONDS``, well under a third of the default lease): a
  write blocked by another process's lock fails soon as a ``StoreError``, which the worker treats
  as an outage (retried, nothing charged); a heartbeat is retried on the next tick instead of
  waiting out a whole lease behind the lock.
* **Driver errors become** :class:`~jobs.errors.StoreError` at this boundary.

Semantics worth knowing:

* Fencing is by token, not by clock: a worker whose lease has expired but that nobody has
  reclaimed yet may still commit (and so extends its lease); once another claim takes the job, or
  a cancel clears the token, its writes are refused.
* A job's usage is the sum of its attempts' latest usage: each checkpoint that carries usage
  moves the total by the difference, so tokens spent by an attempt that later dies are counted.
* Time comes from the injected clock, read inside each transaction once the write lock is held,
  so a process that waited for the lock never stamps a stale time.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from jobs import batches, rows, rules
from jobs.buckets import BucketState, Limits
from jobs.errors import (
    ConfigError,
    JobStateError,
    LeaseLostError,
    StoreError,
)
from jobs.models import (
    TERMINAL_STATES,
    AttemptRecord,
    AttemptResult,
    BatchRecord,
    CheckpointWrite,
    Claim,
    EnqueueResult,
    FleetView,
    Job,
    JobQuery,
    JobSpec,
    Outcome,
    Progress,
    QueueStats,
    SettleRequest,
    State,
    Thinking,
    Totals,
    Transition,
    WriteStatus,
    format_joins,
)
from jobs.sqlite import intake, queries, sql
from jobs.sqlite.changes import DataVersionSignal
from jobs.sqlite.connection import Connections, transaction
from jobs.store import Access, Clock, EnqueueSession

__all__ = ("SQLiteStore",)

T = TypeVar("T")

#: Expired leases settled per claim call; the rest are picked up by the next calls.
_EXPIRED_BATCH = 500


class SQLiteStore:
    """A :class:`~jobs.store.Store` on one SQLite file.

    Args:
        path: the database file (its folder is created if missing), or ``:memory:``.
        clock: returns the time as epoch seconds; tests inject a fake one.
        access: ``create`` (the default) creates the file and its schema if missing;
            ``existing`` refuses a missing file, or one without job tables, with ``NoQueueError``;
            ``read`` also opens the file read-only (``mode=ro``), so nothing on disk is changed
            and a read-only file can still be read (writes then fail with ``StoreError``).
    """

    backend = "sqlite"

    def __init__(self, path: str | Path, *, clock: Clock | None = None, access: Access = "create") -> None:
        self.path = str(path)
        self.where = self.path
        self._clock: Clock = clock or time.time
        self._db = Connections(self.path, "create" if self.path == ":memory:" else access)

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, access: Access = "create") -> SQLiteStore:
        """``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``."""
        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix) or "?" in url:
            raise ConfigError(f"queue url {url!r}: expected sqlite:///path/to/jobs.db")
        return cls(url[len(prefix) :], clock=clock, access=access)

    # -- plumbing ----------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the write connection, in a worker thread, one call at a time."""
        return await self._db.run(fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the read-only ``fn(conn, *args)`` on the read connection (``Connections.read``)."""
        return await self._db.read(fn, *args)

    def _now(self) -> float:
        return float(self._clock())

    async def wait_for_jobs(self, timeout: float) -> None:  # noqa: ASYNC109 - a poll interval
        """SQLite announces nothing: an idle worker finds new jobs by polling every ``timeout``."""
        await anyio.sleep(timeout)

    async def migrate(self) -> int:
        """Opening the file creates or migrates it (or refuses a newer one); nothing else is
        pending, so this opens it and returns the version in place."""
        await self.counts()
        return sql.SCHEMA_VERSION

    async def close(self) -> None:
        """Close both connections. Idempotent; later calls raise ``StoreError``."""
        await self._db.close()

    # -- producers ---------------------------------------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec]) -> EnqueueResult:
        params = [rows.spec_params(spec) for spec in specs]
        return await self._run(self._enqueue, params)

    def _enqueue(self, conn: sqlite3.Connection, params: list[dict[str, Any]]) -> EnqueueResult:
        with transaction(conn):
            return intake.add_batch(conn, params, self._now())

    def enqueue_session(self) -> AbstractAsyncContextManager[EnqueueSession]:
        return intake.open_session(self._db.limiter, self._db.run_holding, self._now)

    # -- workers -----------------------------------------------------------------------------

    async def claim(
        self, worker: str, lease_seconds: float, limit: int = 1, models: Sequence[str] | None = None
    ) -> list[Claim]:
        if limit < 1 or (models is not None and not models):
            return []
        return await self._run(self._claim, worker, lease_seconds, limit, models)

    def _claim(
        self,
        conn: sqlite3.Connection,
        worker: str,
        lease_seconds: float,
        limit: int,
        models: Sequence[str] | None,
    ) -> list[Claim]:
        with transaction(conn):
            return self._start(conn, worker, self._now(), lease_seconds, limit, "stream", models)

    def _start(
        self,
        conn: sqlite3.Connection,
        worker: str,
        now: float,
        lease_seconds: float,
        limit: int,
        mode: str,
        models: Sequence[str] | None = None,
    ) -> list[Claim]:
        """Inside a write transaction: claim up to ``limit`` queued jobs of ``mode`` (and of
        ``models``, if given: the rate-limit classes that have room)."""
        claims: list[Claim] = []
        self._expire_leases(conn, now)
        query: dict[str, Any] = {"now": now, "limit": limit, "mode": mode}
        select = sql.SELECT_CLAIMABLE
        if models is not None:
            select, query["models"] = sql.SELECT_CLAIMABLE_MODELS, json.dumps(list(models))
        ids = [row["id"] for row in conn.execute(select, query)]
        for job_id in ids:
            token = secrets.token_hex(16)
            params = {"id": job_id, "worker": worker, "token": token, "now": now}
            row = queries.one(conn, sql.START_ATTEMPT, {**params, "expires_at": now + lease_seconds})
            job = rows.job(row)
            attempt = {"job_id": job_id, "number": job.attempts, "worker": worker, "now": now}
            conn.execute(sql.INSERT_ATTEMPT, {**attempt, "chars": job.committed_chars})
            queries.transition(
                conn, job_id, now, State.QUEUED, State.RUNNING, f"claimed by {worker}", job.attempts
            )
            claims.append(Claim(job, token, job.attempts, queries.read_text(conn, job_id)))
        return claims

    # -- batches -----------------------------------------------------------------------------

    async def reserve_batch(self, worker: str, key: str, limit: int, hold_seconds: float) -> list[Claim]:
        if limit < 1:
            return []
        return await self._run(self._reserve_batch, worker, key, limit, hold_seconds)

    def _reserve_batch(
        self, conn: sqlite3.Connection, worker: str, key: str, limit: int, hold_seconds: float
    ) -> list[Claim]:
        with transaction(conn):
            now = self._now()
            claims = self._start(conn, worker, now, hold_seconds, limit, "batch")
            if claims:
                entries = json.dumps([[c.job.id, batches.custom_id_for(c.job.id)] for c in claims])
                conn.execute(sql.SET_BATCH_ENTRIES, {"key": key, "entries": entries})
                conn.execute(sql.INSERT_BATCH, {"key": key, "now": now, "requests": len(claims)})
            return claims

    async def settle_to_stream(self, requests: Sequence[SettleRequest], reason: str) -> list[Job | None]:
        requests = list(requests)
        rules.check_outcomes(r.result for r in requests)
        if not requests:
            return []
        return await self._run(self._settle_to_stream, requests, reason)

    def _settle_to_stream(
        self, conn: sqlite3.Connection, requests: list[SettleRequest], reason: str
    ) -> list[Job | None]:
        """Settle, then (uncount before the switch clears ``batch_key``) switch: one transaction."""
        with transaction(conn):
            settled = self._settle_many_in(conn, requests)
            now = self._now()
            ids = json.dumps([job.id for job in settled if job is not None])
            conn.execute(sql.UNCOUNT_BATCH_REQUESTS, {"ids": ids})
            switched: dict[str, Job] = {}
            for row in conn.execute(sql.SWITCH_TO_STREAM, {"ids": ids, "now": now}).fetchall():
                switched[row["id"]] = rows.job(row)
            for job_id in switched:
                queries.transition(conn, job_id, now, State.QUEUED, State.QUEUED, reason, None)
        return [None if job is None else switched.get(job.id, job) for job in settled]

    async def mark_batch_submitted(self, key: str, api_id: str) -> None:
        await self._run(self._write, sql.SET_BATCH_API_ID, {"key": key, "api_id": api_id})

    async def close_batch(self, key: str) -> None:
        await self._run(self._write, sql.CLOSE_BATCH, {"key": key, "now": self._now()})

    async def open_batches(self) -> list[BatchRecord]:
        return await self._read(queries.open_batches)

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        return await self._run(self._acquire_lease, name, owner, seconds)

    def _acquire_lease(self, conn: sqlite3.Connection, name: str, owner: str, seconds: float) -> bool:
        with transaction(conn):
            now = self._now()
            params = {"name": name, "owner": owner, "now": now, "expires_at": now + seconds}
            conn.execute(sql.ACQUIRE_LEASE, params)
            return bool(conn.execute(sql.SELECT_LEASE, {"name": name}).fetchone()[0] == owner)

    def _write(self, conn: sqlite3.Connection, query: str, params: dict[str, Any]) -> None:
        with transaction(conn):
            conn.execute(query, params)

    def _expire_leases(self, conn: sqlite3.Connection, now: float) -> None:
        """Close the attempts whose lease expired: each counts as a failure; the job goes back to
        the queue (keeping its place) or, out of attempts, fails."""
        for row in conn.execute(sql.SELECT_EXPIRED, {"now": now, "limit": _EXPIRED_BATCH}).fetchall():
            job = rows.job(row)
            expiry = rules.expire_lease(job, now)
            conn.execute(
                sql.EXPIRE_ATTEMPT,
                {
                    "job_id": job.id,
                    "number": job.attempts,
                    "now": now,
                    "chars": job.committed_chars,
                    "error": expiry.last_error,
                },
            )
            conn.execute(
                sql.REQUEUE_EXPIRED,
                {"id": job.id, "state": expiry.state, "error": expiry.last_error, "now": now},
            )
            queries.transition(conn, job.id, now, State.RUNNING, expiry.state, expiry.reason, job.attempts)
            if expiry.state == State.FAILED:
                queries.compact(conn, job.id)

    async def commit(self, writes: Sequence[CheckpointWrite], lease_seconds: float) -> list[WriteStatus]:
        if not writes:
            return []
        return await self._run(self._commit, list(writes), lease_seconds)

    def _commit(
        self, conn: sqlite3.Connection, writes: list[CheckpointWrite], lease_seconds: float
    ) -> list[WriteStatus]:
        """Set-based: a few statements per batch, whatever its size. Each statement releases and
        retakes the GIL, and the worker's event loop holds it most of the time, so a statement per
        write made a 1,000-job flush take seconds. A batch with several writes for one job is
        applied in rounds (the k-th write of each job in round k), so each sees the one before."""
        statuses: list[WriteStatus | None] = [None] * len(writes)
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for position, write in enumerate(writes):
            number = seen.get(write.job_id, 0)
            seen[write.job_id] = number + 1
            if number == len(rounds):
                rounds.append([])
            rounds[number].append(position)
        with transaction(conn):
            now = self._now()
            for positions in rounds:
                self._commit_round(conn, writes, positions, statuses, now, now + lease_seconds)
        return [status or WriteStatus.LEASE_LOST for status in statuses]

    def _commit_round(
        self,
        conn: sqlite3.Connection,
        writes: list[CheckpointWrite],
        positions: list[int],
        statuses: list[WriteStatus | None],
        now: float,
        expires_at: float,
    ) -> None:
        fences = json.dumps([[p, writes[p].job_id, writes[p].token, writes[p].offset] for p in positions])
        (checked,) = conn.execute(sql.FENCE_BATCH, {"writes": fences}).fetchone()
        accepted: list[tuple[int, int]] = []
        for position, status, attempt in json.loads(checked):
            statuses[position] = WriteStatus(status)
            if status == WriteStatus.OK:
                accepted.append((position, attempt))
        if not accepted:
            return
        chunks = [(writes[p].job_id, writes[p].offset, attempt, writes[p].text) for p, attempt in accepted]
        # SQLite's JSON functions stop at a NUL character: such rare texts are inserted one by one.
        plain = [chunk for chunk in chunks if chunk[3] and "\x00" not in chunk[3]]
        if plain:
            conn.execute(
                sql.INSERT_CHUNKS_BATCH, {"chunks": json.dumps(plain, ensure_ascii=False), "now": now}
            )
        for job_id, offset, attempt, text in chunks:
            if "\x00" in text:
                row = {"job_id": job_id, "char_offset": offset, "attempt": attempt, "text": text, "now": now}
                conn.execute(sql.INSERT_CHUNK, row)
        advances = json.dumps([[writes[p].job_id, len(writes[p].text)] for p, _ in accepted])
        conn.execute(sql.ADVANCE_BATCH, {"advances": advances, "expires_at": expires_at, "now": now})
        for position, attempt in accepted:
            usage = writes[position].usage
            if usage is not None:
                queries.set_attempt_usage(conn, writes[position].job_id, attempt, usage)
            requests = writes[position].requests
            if requests is not None:
                key = {"job_id": writes[position].job_id, "number": attempt, "requests": requests}
                conn.execute(sql.SET_ATTEMPT_REQUESTS, key)

    async def settle(self, job_id: str, token: str, result: AttemptResult) -> Job:
        rules.check_outcomes((result,))
        return await self._run(self._settle, job_id, token, result)

    def _settle(self, conn: sqlite3.Connection, job_id: str, token: str, result: AttemptResult) -> Job:
        with transaction(conn):
            return self._settle_one(conn, self._now(), rows.job(queries.get_row(conn, job_id)), token, result)

    async def settle_many(self, requests: Sequence[SettleRequest]) -> list[Job | None]:
        requests = list(requests)
        rules.check_outcomes(r.result for r in requests)
        if not requests:
            return []
        return await self._run(self._settle_many, requests)

    def _settle_many(self, conn: sqlite3.Connection, requests: list[SettleRequest]) -> list[Job | None]:
        """Every request in one transaction; a refused one is None and writes nothing."""
        with transaction(conn):
            return self._settle_many_in(conn, requests)

    def _settle_many_in(self, conn: sqlite3.Connection, requests: list[SettleRequest]) -> list[Job | None]:
        """``settle_many`` inside the caller's transaction."""
        settled: list[Job | None] = []
        now = self._now()
        for request in requests:
            row = conn.execute(sql.SELECT_JOB, {"id": request.job_id}).fetchone()
            try:
                job = (
                    self._settle_one(conn, now, rows.job(row), request.token, request.result) if row else None
                )
            except LeaseLostError:
                job = None
            settled.append(job)
        return settled

    def _settle_one(
        self, conn: sqlite3.Connection, now: float, job: Job, token: str, result: AttemptResult
    ) -> Job:
        """Close the attempt, move the job to its next state, record the transition; inside
        the caller's transaction. Raises ``LeaseLostError`` (having written nothing)."""
        job_id = job.id
        if job.state != State.RUNNING or job.lease is None or job.lease.token != token:
            raise LeaseLostError(f"job {job_id!r}: this worker's lease is no longer current")
        number = job.attempts
        queries.set_attempt_usage(conn, job_id, number, result.usage)
        conn.execute(
            sql.CLOSE_ATTEMPT,
            {"job_id": job_id, "number": number, "now": now, "outcome": result.outcome}
            | {"resume_mode": result.resume_mode, "requests": result.requests, "error": result.error}
            | {"joins": format_joins(result.joins)}
            | {"stop_reason": result.stop_reason, "time_to_first_token": result.time_to_first_token}
            | {"chars": job.committed_chars},
        )
        next_ = rules.settle(job, result, now)
        row = queries.one(
            conn,
            sql.SETTLE_JOB,
            {"id": job_id, "state": next_.state, "failures": next_.failures, "run_at": next_.run_at}
            | {"now": now, "last_error": next_.last_error, "stop_reason": result.stop_reason}
            | {"finished_at": next_.finished_at},
        )
        queries.transition(conn, job_id, now, State.RUNNING, next_.state, next_.reason, number)
        if next_.state in TERMINAL_STATES:
            queries.compact(conn, job_id)
        return rows.job(row)

    async def next_due(self) -> float | None:
        return await self._read(queries.next_due)

    # -- reading -----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        return rows.job(await self._read(queries.get_row, job_id))

    async def read_text(self, job_id: str) -> str:
        return await self._read(queries.read_text_checked, job_id)

    async def read_text_from(self, job_id: str, offset: int) -> str:
        return await self._run(queries.read_text_from, job_id, max(0, offset))

    async def read_texts_from(self, positions: Mapping[str, int]) -> dict[str, str]:
        if not positions:
            return {}
        pairs = json.dumps([[job_id, max(0, offset)] for job_id, offset in positions.items()])
        return rows.texts_from(await self._run(queries.select, sql.SELECT_TEXTS_FROM, {"positions": pairs}))

    async def progress(self, job_ids: Sequence[str]) -> dict[str, Progress]:
        if not job_ids:
            return {}
        found = await self._run(queries.select, sql.SELECT_PROGRESS, {"ids": json.dumps(list(job_ids))})
        return {row["id"]: rows.progress(row) for row in found}

    def change_signal(self) -> DataVersionSignal:
        """A ``PRAGMA data_version`` signal on this file (see :mod:`jobs.sqlite.changes`)."""
        if self.path == ":memory:":
            raise StoreError("an in-memory SQLite store has no other connections to signal changes")
        return DataVersionSignal(self.path)

    async def attempts(self, job_id: str) -> list[AttemptRecord]:
        found = await self._read(queries.select_for_job, sql.SELECT_ATTEMPTS, job_id)
        return [rows.attempt(row) for row in found]

    async def save_thinking(
        self, job_id: str, token: str, request: int, text: str, max_chars: int
    ) -> WriteStatus:
        return await self._run(self._save_thinking, job_id, token, request, text, max_chars)

    def _save_thinking(
        self, conn: sqlite3.Connection, job_id: str, token: str, request: int, text: str, max_chars: int
    ) -> WriteStatus:
        with transaction(conn):
            row = conn.execute(sql.SELECT_JOB, {"id": job_id}).fetchone()
            job = rows.job(row) if row else None
            if job is None or job.state != State.RUNNING or job.lease is None or job.lease.token != token:
                return WriteStatus.LEASE_LOST
            kept = int(conn.execute(sql.SELECT_THINKING_KEPT, {"job_id": job_id}).fetchone()[0])
            conn.execute(
                sql.INSERT_THINKING,
                {"job_id": job_id, "attempt": job.attempts, "request": request, "now": self._now()}
                | {"text": rules.bound_thinking(text, kept, max_chars), "chars": len(text)},
            )
            return WriteStatus.OK

    async def read_thinking(self, job_id: str) -> list[Thinking]:
        found = await self._read(queries.select_for_job, sql.SELECT_THINKING, job_id)
        return [rows.thinking(row) for row in found]

    async def history(self, job_id: str) -> list[Transition]:
        found = await self._read(queries.select_for_job, sql.SELECT_HISTORY, job_id)
        return [rows.transition(row) for row in found]

    async def totals(self) -> list[Totals]:
        return [rows.totals(row) for row in await self._read(queries.select, sql.SELECT_TOTALS, {})]

    async def counts(self) -> dict[State, int]:
        return rules.counts(await self.totals())

    async def queue_stats(self) -> QueueStats:
        return await self._read(queries.queue_stats, self._now())

    async def model_counts(self) -> dict[str, int]:
        return rules.model_counts(await self.totals())

    async def list_jobs(
        self, states: Sequence[State] | None = None, after_id: str | None = None, limit: int = 1000
    ) -> list[Job]:
        params = {
            "states": None if states is None else json.dumps([State(s).value for s in states]),
            "after_id": after_id,
            "limit": limit,
        }
        return [rows.job(row) for row in await self._read(queries.select, sql.LIST_JOBS, params)]

    async def find_jobs(self, query: JobQuery) -> list[Job]:
        name, params = rules.find_jobs_statement(query)
        params["states"] = json.dumps(params["states"]) if params["states"] is not None else None
        statement = getattr(sql, name)
        return [rows.job(row) for row in await self._read(queries.select, statement, params)]

    async def fleet(self, since: float) -> FleetView:
        return await self._read(queries.fleet, self._now(), since)

    # -- rate limits -------------------------------------------------------------------------

    async def update_buckets(
        self, key: str, limits: Limits, change: Callable[[BucketState, float], tuple[BucketState, T]]
    ) -> T:
        return await self._run(self._update_buckets, key, limits, change)

    def _update_buckets(
        self,
        conn: sqlite3.Connection,
        key: str,
        limits: Limits,
        change: Callable[[BucketState, float], tuple[BucketState, T]],
    ) -> T:
        with transaction(conn):
            now = self._now()
            row = conn.execute(sql.SELECT_BUCKETS, {"key": key}).fetchone()
            state = BucketState.full(limits, now) if row is None else rows.bucket_state(row)
            state, result = change(state, now)
            conn.execute(
                sql.UPSERT_BUCKETS,
                {"key": key, "requests": state.requests, "input_tokens": state.input_tokens}
                | {"output_tokens": state.output_tokens, "updated_at": state.updated_at}
                | {"paused_until": state.paused_until, "pause_reason": state.pause_reason},
            )
            return result

    # -- operators ---------------------------------------------------------------------------

    async def retry(self, job_id: str, revised: JobSpec | None = None) -> Job:
        return await self._run(self._retry, job_id, revised)

    def _retry(self, conn: sqlite3.Connection, job_id: str, revised: JobSpec | None) -> Job:
        with transaction(conn):
            return self._requeue(conn, rows.job(queries.get_row(conn, job_id)), self._now(), revised)

    def _requeue(self, conn: sqlite3.Connection, job: Job, now: float, revised: JobSpec | None = None) -> Job:
        rules.check_retryable(job, revised)
        if revised is not None:
            conn.execute(sql.RESPEC, {**rows.spec_params(revised), "now": now})
        row = queries.one(conn, sql.REQUEUE, {"id": job.id, "now": now})
        queries.transition(
            conn, job.id, now, job.state, State.QUEUED, rules.retry_reason(job.spec, revised), None
        )
        return rows.job(row)

    async def replace(self, spec: JobSpec) -> Job:
        params = rows.spec_params(spec)
        return await self._run(self._replace, params)

    def _replace(self, conn: sqlite3.Connection, params: dict[str, Any]) -> Job:
        with transaction(conn):
            now = self._now()
            rules.check_replaceable(rows.job(queries.get_row(conn, params["id"])))
            row = queries.one(conn, sql.REPLACE_SPEC, {**params, "now": now})
            queries.transition(
                conn, params["id"], now, State.QUEUED, State.QUEUED, "replaced by an operator", None
            )
            return rows.job(row)

    async def retry_failed(self) -> int:
        return await self._run(self._retry_failed)

    def _retry_failed(self, conn: sqlite3.Connection) -> int:
        with transaction(conn):
            now = self._now()
            ids = [row["id"] for row in conn.execute(sql.SELECT_FAILED_IDS).fetchall()]
            for job_id in ids:
                self._requeue(conn, rows.job(queries.get_row(conn, job_id)), now)
        return len(ids)

    async def cancel(self, job_id: str) -> Job:
        return await self._run(self._cancel, job_id)

    def _cancel(self, conn: sqlite3.Connection, job_id: str) -> Job:
        with transaction(conn):
            now = self._now()
            job = rows.job(queries.get_row(conn, job_id))
            if job.state not in (State.QUEUED, State.RUNNING):
                raise JobStateError(
                    f"job {job_id!r} is {job.state}: only queued or running jobs can be cancelled"
                )
            attempt = None
            if job.state == State.RUNNING:
                # The worker's next fenced write is refused; its last checkpointed usage stays.
                attempt = job.attempts
                conn.execute(
                    sql.CLOSE_ATTEMPT,
                    {"job_id": job_id, "number": attempt, "now": now, "outcome": Outcome.LEASE_LOST}
                    | {"resume_mode": None, "requests": None, "error": "cancelled", "stop_reason": None}
                    | {"joins": None}
                    | {"time_to_first_token": None, "chars": job.committed_chars},
                )
            row = queries.one(conn, sql.CANCEL, {"id": job_id, "now": now})
            queries.transition(
                conn, job_id, now, job.state, State.CANCELLED, "cancelled by an operator", attempt
            )
            queries.compact(conn, job_id)
            return rows.job(row)

    async def delete(self, job_id: str) -> Job:
        return await self._run(self._delete, job_id)

    def _delete(self, conn: sqlite3.Connection, job_id: str) -> Job:
        with transaction(conn):
            job = rows.job(queries.get_row(conn, job_id))
            rules.check_deletable(job)
            conn.execute(sql.DELETE_JOB, {"id": job_id})
            return job

    async def prune(
        self,
        older_than: float,
        states: Sequence[State] | None = None,
        *,
        dry_run: bool = False,
        batch_size: int = rules.PRUNE_BATCH,
    ) -> int:
        """One write transaction per batch (``BEGIN IMMEDIATE``; about 50 ms for a thousand jobs
        in ``bench.retention``), each queued behind this store's other calls like any write, so a
        worker's checkpoints and other processes' writes get the lock between batches."""
        params: dict[str, Any] = {"states": json.dumps([s.value for s in rules.prune_states(states)])}
        params["cutoff"] = self._now() - older_than
        if dry_run:
            return int((await self._read(queries.select, sql.COUNT_PRUNABLE, params))[0][0])
        batch, deleted = max(1, batch_size), 0
        while True:
            count = await self._run(self._prune_batch, params | {"limit": batch})
            deleted += count
            if count < batch:
                break
        await self._run(self._write, sql.PRUNE_BATCHES, {"cutoff": params["cutoff"]})
        return deleted

    def _prune_batch(self, conn: sqlite3.Connection, params: dict[str, Any]) -> int:
        with transaction(conn):
            return int(conn.execute(sql.PRUNE_JOBS, params).rowcount)
