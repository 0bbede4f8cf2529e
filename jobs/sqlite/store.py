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
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from jobs import batches, rows, rules
from jobs.buckets import BucketState, Limits
from jobs.errors import (
    ConfigError,
    JobNotFoundError,
    JobStateError,
    LeaseLostError,
    NoQueueError,
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
    Usage,
    WriteStatus,
    format_joins,
)
from jobs.sqlite import intake, sql
from jobs.sqlite.changes import DataVersionSignal
from jobs.store import Access, Clock, EnqueueSession

__all__ = ("SQLiteStore",)

T = TypeVar("T")

#: How long a writer waits for another process's write transaction before giving up.
BUSY_TIMEOUT_SECONDS = 1.5
#: UPDATE … FROM (3.33) and the JSON functions built in (3.38 makes them default; most builds had them).
MIN_SQLITE = (3, 35, 0)
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
        self._access: Access = "create" if self.path == ":memory:" else access
        self._clock: Clock = clock or time.time
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._limiter = anyio.CapacityLimiter(1)
        self._read_conn: sqlite3.Connection | None = None
        self._read_limiter = anyio.CapacityLimiter(1)

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, access: Access = "create") -> SQLiteStore:
        """``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``."""
        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix) or "?" in url:
            raise ConfigError(f"queue url {url!r}: expected sqlite:///path/to/jobs.db")
        return cls(url[len(prefix) :], clock=clock, access=access)

    # -- plumbing ----------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a worker thread, one call at a time."""
        return await anyio.to_thread.run_sync(self._call, fn, args, limiter=self._limiter)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the read-only ``fn(conn, *args)`` on the read connection (the write connection for
        ``:memory:``, which is private to one connection). The write connection opens first, so
        the schema exists before anything is read."""
        if self.path == ":memory:":
            return await self._run(fn, *args)
        if self._read_conn is None and self._conn is None:
            await self._run(_no_op)
        return await anyio.to_thread.run_sync(self._call_read, fn, args, limiter=self._read_limiter)

    def _call_read(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._closed:
            raise StoreError("the job store is closed")
        try:
            if self._read_conn is None:
                conn = sqlite3.connect(
                    self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
                )
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA query_only = ON")
                self._read_conn = conn
            return fn(self._read_conn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite ({self.path}): {exc}") from exc

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._closed:
            raise StoreError("the job store is closed")
        try:
            if self._conn is None:
                self._conn = self._connect()
            return fn(self._conn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite ({self.path}): {exc}{_permission_hint(self.path, exc)}") from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            # Values SQLite cannot hold (lone surrogates, integers past 64 bits): nothing was written.
            raise StoreError(f"sqlite ({self.path}): cannot store a value: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"this Python's SQLite is {sqlite3.sqlite_version}; the job store needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer (UPDATE … FROM and JSON functions)"
            )
        if self._access != "create":
            self._check_exists()
        if self._access == "read":
            return self._connect_read_only()
        if self._access == "create" and self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of {self.path}: {exc.strerror}") from exc
        # isolation_level=None: no implicit transactions; we issue BEGIN IMMEDIATE ourselves.
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            self._enable_wal(conn)
            for pragma in sql.PRAGMAS:
                conn.execute(pragma)
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_exists(self) -> None:
        if not Path(self.path).is_file():
            what = "a folder, not a database file" if Path(self.path).is_dir() else "no such file"
            raise NoQueueError(f"no queue at {self.path} ({what}; `enqueue` or `migrate` creates one)")

    def _connect_read_only(self) -> sqlite3.Connection:
        """An existing queue, read-only: commands that only read never create a file, a folder or
        a table where a mistyped URL points."""
        uri = f"{Path(self.path).resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(
            uri, uri=True, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                raise NoQueueError(f"no queue at {self.path} (the file holds no job tables)")
            if version != sql.SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, this program reads {sql.SCHEMA_VERSION}: "
                    + ("upgrade the program" if version > sql.SCHEMA_VERSION else "run `migrate` first")
                )
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL. Processes opening a new file at once race for this switch, and
        SQLite answers SQLITE_BUSY at once here instead of calling the busy handler: so retry,
        with backoff, for as long as ``busy_timeout`` would wait (this runs in a worker thread)."""
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        delay = 0.002
        while True:
            try:
                mode = str(conn.execute(sql.ENABLE_WAL).fetchone()[0]).lower()
                break
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        if mode != "wal" and self.path != ":memory:":
            raise StoreError(f"{self.path}: cannot use write-ahead logging (journal mode is {mode})")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > sql.SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this program's "
                    f"{sql.SCHEMA_VERSION}: upgrade the program"
                )
            if version == 0 and self._access != "create":
                raise NoQueueError(f"no queue at {self.path} (the file holds no job tables)")
            if version == sql.SCHEMA_VERSION:
                return
            for target, statements in sql.MIGRATIONS:
                if version < target:
                    for statement in statements:
                        conn.execute(statement)
                    version = target
            conn.execute(f"PRAGMA user_version = {sql.SCHEMA_VERSION}")

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
        """Close the connection. Idempotent; later calls raise ``StoreError``."""
        await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    def _close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None

    # -- producers ---------------------------------------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec]) -> EnqueueResult:
        params = [rows.spec_params(spec) for spec in specs]
        return await self._run(self._enqueue, params)

    def _enqueue(self, conn: sqlite3.Connection, params: list[dict[str, Any]]) -> EnqueueResult:
        with _transaction(conn):
            return intake.add_batch(conn, params, self._now())

    def enqueue_session(self) -> AbstractAsyncContextManager[EnqueueSession]:
        return intake.open_session(self._limiter, self._call_async, self._now)

    async def _call_async(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in a worker thread, for a caller that already holds the write
        connection's limiter (an enqueue session)."""
        return await anyio.to_thread.run_sync(self._call, fn, args)

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
        with _transaction(conn):
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
            row = _one(conn, sql.START_ATTEMPT, {**params, "expires_at": now + lease_seconds})
            job = rows.job(row)
            attempt = {"job_id": job_id, "number": job.attempts, "worker": worker, "now": now}
            conn.execute(sql.INSERT_ATTEMPT, {**attempt, "chars": job.committed_chars})
            _transition(conn, job_id, now, State.QUEUED, State.RUNNING, f"claimed by {worker}", job.attempts)
            claims.append(Claim(job, token, job.attempts, _read_text(conn, job_id)))
        return claims

    # -- batches -----------------------------------------------------------------------------

    async def reserve_batch(self, worker: str, key: str, limit: int, hold_seconds: float) -> list[Claim]:
        if limit < 1:
            return []
        return await self._run(self._reserve_batch, worker, key, limit, hold_seconds)

    def _reserve_batch(
        self, conn: sqlite3.Connection, worker: str, key: str, limit: int, hold_seconds: float
    ) -> list[Claim]:
        with _transaction(conn):
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
        with _transaction(conn):
            settled = self._settle_many_in(conn, requests)
            now = self._now()
            ids = json.dumps([job.id for job in settled if job is not None])
            conn.execute(sql.UNCOUNT_BATCH_REQUESTS, {"ids": ids})
            switched: dict[str, Job] = {}
            for row in conn.execute(sql.SWITCH_TO_STREAM, {"ids": ids, "now": now}).fetchall():
                switched[row["id"]] = rows.job(row)
            for job_id in switched:
                _transition(conn, job_id, now, State.QUEUED, State.QUEUED, reason, None)
        return [None if job is None else switched.get(job.id, job) for job in settled]

    async def mark_batch_submitted(self, key: str, api_id: str) -> None:
        await self._run(self._write, sql.SET_BATCH_API_ID, {"key": key, "api_id": api_id})

    async def close_batch(self, key: str) -> None:
        await self._run(self._write, sql.CLOSE_BATCH, {"key": key, "now": self._now()})

    async def open_batches(self) -> list[BatchRecord]:
        return await self._read(_open_batches)

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        return await self._run(self._acquire_lease, name, owner, seconds)

    def _acquire_lease(self, conn: sqlite3.Connection, name: str, owner: str, seconds: float) -> bool:
        with _transaction(conn):
            now = self._now()
            params = {"name": name, "owner": owner, "now": now, "expires_at": now + seconds}
            conn.execute(sql.ACQUIRE_LEASE, params)
            return bool(conn.execute(sql.SELECT_LEASE, {"name": name}).fetchone()[0] == owner)

    def _write(self, conn: sqlite3.Connection, query: str, params: dict[str, Any]) -> None:
        with _transaction(conn):
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
            _transition(conn, job.id, now, State.RUNNING, expiry.state, expiry.reason, job.attempts)
            if expiry.state == State.FAILED:
                _compact(conn, job.id)

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
        with _transaction(conn):
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
                _set_attempt_usage(conn, writes[position].job_id, attempt, usage)
            requests = writes[position].requests
            if requests is not None:
                key = {"job_id": writes[position].job_id, "number": attempt, "requests": requests}
                conn.execute(sql.SET_ATTEMPT_REQUESTS, key)

    async def settle(self, job_id: str, token: str, result: AttemptResult) -> Job:
        rules.check_outcomes((result,))
        return await self._run(self._settle, job_id, token, result)

    def _settle(self, conn: sqlite3.Connection, job_id: str, token: str, result: AttemptResult) -> Job:
        with _transaction(conn):
            return self._settle_one(conn, self._now(), rows.job(_get_row(conn, job_id)), token, result)

    async def settle_many(self, requests: Sequence[SettleRequest]) -> list[Job | None]:
        requests = list(requests)
        rules.check_outcomes(r.result for r in requests)
        if not requests:
            return []
        return await self._run(self._settle_many, requests)

    def _settle_many(self, conn: sqlite3.Connection, requests: list[SettleRequest]) -> list[Job | None]:
        """Every request in one transaction; a refused one is None and writes nothing."""
        with _transaction(conn):
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
        _set_attempt_usage(conn, job_id, number, result.usage)
        conn.execute(
            sql.CLOSE_ATTEMPT,
            {"job_id": job_id, "number": number, "now": now, "outcome": result.outcome}
            | {"resume_mode": result.resume_mode, "requests": result.requests, "error": result.error}
            | {"joins": format_joins(result.joins)}
            | {"stop_reason": result.stop_reason, "time_to_first_token": result.time_to_first_token}
            | {"chars": job.committed_chars},
        )
        next_ = rules.settle(job, result, now)
        row = _one(
            conn,
            sql.SETTLE_JOB,
            {"id": job_id, "state": next_.state, "failures": next_.failures, "run_at": next_.run_at}
            | {"now": now, "last_error": next_.last_error, "stop_reason": result.stop_reason}
            | {"finished_at": next_.finished_at},
        )
        _transition(conn, job_id, now, State.RUNNING, next_.state, next_.reason, number)
        if next_.state in TERMINAL_STATES:
            _compact(conn, job_id)
        return rows.job(row)

    async def next_due(self) -> float | None:
        return await self._read(_next_due)

    # -- reading -----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        return rows.job(await self._read(_get_row, job_id))

    async def read_text(self, job_id: str) -> str:
        return await self._read(_read_text_checked, job_id)

    async def read_text_from(self, job_id: str, offset: int) -> str:
        return await self._run(_read_text_from, job_id, max(0, offset))

    async def read_texts_from(self, positions: Mapping[str, int]) -> dict[str, str]:
        if not positions:
            return {}
        pairs = json.dumps([[job_id, max(0, offset)] for job_id, offset in positions.items()])
        return rows.texts_from(await self._run(_select, sql.SELECT_TEXTS_FROM, {"positions": pairs}))

    async def progress(self, job_ids: Sequence[str]) -> dict[str, Progress]:
        if not job_ids:
            return {}
        found = await self._run(_select, sql.SELECT_PROGRESS, {"ids": json.dumps(list(job_ids))})
        return {row["id"]: rows.progress(row) for row in found}

    def change_signal(self) -> DataVersionSignal:
        """A ``PRAGMA data_version`` signal on this file (see :mod:`jobs.sqlite.changes`)."""
        if self.path == ":memory:":
            raise StoreError("an in-memory SQLite store has no other connections to signal changes")
        return DataVersionSignal(self.path)

    async def attempts(self, job_id: str) -> list[AttemptRecord]:
        found = await self._read(_select_for_job, sql.SELECT_ATTEMPTS, job_id)
        return [rows.attempt(row) for row in found]

    async def save_thinking(
        self, job_id: str, token: str, request: int, text: str, max_chars: int
    ) -> WriteStatus:
        return await self._run(self._save_thinking, job_id, token, request, text, max_chars)

    def _save_thinking(
        self, conn: sqlite3.Connection, job_id: str, token: str, request: int, text: str, max_chars: int
    ) -> WriteStatus:
        with _transaction(conn):
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
        found = await self._read(_select_for_job, sql.SELECT_THINKING, job_id)
        return [rows.thinking(row) for row in found]

    async def history(self, job_id: str) -> list[Transition]:
        found = await self._read(_select_for_job, sql.SELECT_HISTORY, job_id)
        return [rows.transition(row) for row in found]

    async def totals(self) -> list[Totals]:
        return [rows.totals(row) for row in await self._read(_select, sql.SELECT_TOTALS, {})]

    async def counts(self) -> dict[State, int]:
        return rules.counts(await self.totals())

    async def queue_stats(self) -> QueueStats:
        return await self._read(_queue_stats, self._now())

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
        return [rows.job(row) for row in await self._read(_select, sql.LIST_JOBS, params)]

    async def find_jobs(self, query: JobQuery) -> list[Job]:
        name, params = rules.find_jobs_statement(query)
        params["states"] = json.dumps(params["states"]) if params["states"] is not None else None
        statement = getattr(sql, name)
        return [rows.job(row) for row in await self._read(_select, statement, params)]

    async def fleet(self, since: float) -> FleetView:
        return await self._read(_fleet, self._now(), since)

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
        with _transaction(conn):
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
        with _transaction(conn):
            return self._requeue(conn, rows.job(_get_row(conn, job_id)), self._now(), revised)

    def _requeue(self, conn: sqlite3.Connection, job: Job, now: float, revised: JobSpec | None = None) -> Job:
        rules.check_retryable(job, revised)
        if revised is not None:
            conn.execute(sql.RESPEC, {**rows.spec_params(revised), "now": now})
        row = _one(conn, sql.REQUEUE, {"id": job.id, "now": now})
        _transition(conn, job.id, now, job.state, State.QUEUED, rules.retry_reason(job.spec, revised), None)
        return rows.job(row)

    async def replace(self, spec: JobSpec) -> Job:
        params = rows.spec_params(spec)
        return await self._run(self._replace, params)

    def _replace(self, conn: sqlite3.Connection, params: dict[str, Any]) -> Job:
        with _transaction(conn):
            now = self._now()
            rules.check_replaceable(rows.job(_get_row(conn, params["id"])))
            row = _one(conn, sql.REPLACE_SPEC, {**params, "now": now})
            _transition(conn, params["id"], now, State.QUEUED, State.QUEUED, "replaced by an operator", None)
            return rows.job(row)

    async def retry_failed(self) -> int:
        return await self._run(self._retry_failed)

    def _retry_failed(self, conn: sqlite3.Connection) -> int:
        with _transaction(conn):
            now = self._now()
            ids = [row["id"] for row in conn.execute(sql.SELECT_FAILED_IDS).fetchall()]
            for job_id in ids:
                self._requeue(conn, rows.job(_get_row(conn, job_id)), now)
        return len(ids)

    async def cancel(self, job_id: str) -> Job:
        return await self._run(self._cancel, job_id)

    def _cancel(self, conn: sqlite3.Connection, job_id: str) -> Job:
        with _transaction(conn):
            now = self._now()
            job = rows.job(_get_row(conn, job_id))
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
            row = _one(conn, sql.CANCEL, {"id": job_id, "now": now})
            _transition(conn, job_id, now, job.state, State.CANCELLED, "cancelled by an operator", attempt)
            _compact(conn, job_id)
            return rows.job(row)

    async def delete(self, job_id: str) -> Job:
        return await self._run(self._delete, job_id)

    def _delete(self, conn: sqlite3.Connection, job_id: str) -> Job:
        with _transaction(conn):
            job = rows.job(_get_row(conn, job_id))
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
            return int((await self._read(_select, sql.COUNT_PRUNABLE, params))[0][0])
        batch, deleted = max(1, batch_size), 0
        while True:
            count = await self._run(self._prune_batch, params | {"limit": batch})
            deleted += count
            if count < batch:
                break
        await self._run(self._write, sql.PRUNE_BATCHES, {"cutoff": params["cutoff"]})
        return deleted

    def _prune_batch(self, conn: sqlite3.Connection, params: dict[str, Any]) -> int:
        with _transaction(conn):
            return int(conn.execute(sql.PRUNE_JOBS, params).rowcount)


# -- helpers (run in the worker thread) ---------------------------------------------------------


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the write lock first (see the module docstring)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _one(conn: sqlite3.Connection, query: str, params: dict[str, Any]) -> sqlite3.Row:
    # fetchall() finishes the statement, so COMMIT never meets one still in progress.
    fetched = conn.execute(query, params).fetchall()
    if not fetched:
        raise StoreError("expected a row, got none")
    row: sqlite3.Row = fetched[0]
    return row


def _select(conn: sqlite3.Connection, query: str, params: dict[str, Any]) -> list[sqlite3.Row]:
    return conn.execute(query, params).fetchall()


def _get_row(conn: sqlite3.Connection, job_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(sql.SELECT_JOB, {"id": job_id}).fetchone()
    if row is None:
        raise JobNotFoundError(f"no job with id {job_id!r}")
    return row


def _select_for_job(conn: sqlite3.Connection, query: str, job_id: str) -> list[sqlite3.Row]:
    _get_row(conn, job_id)
    return _select(conn, query, {"job_id": job_id})


def _read_text(conn: sqlite3.Connection, job_id: str) -> str:
    return "".join(row[0] for row in conn.execute(sql.SELECT_TEXT, {"job_id": job_id}))


def _read_text_checked(conn: sqlite3.Connection, job_id: str) -> str:
    _get_row(conn, job_id)
    return _read_text(conn, job_id)


def _read_text_from(conn: sqlite3.Connection, job_id: str, offset: int) -> str:
    _get_row(conn, job_id)
    found = conn.execute(sql.SELECT_TEXT_FROM, {"job_id": job_id, "offset": offset}).fetchall()
    if not found:
        return ""
    return "".join(row["text"] for row in found)[max(0, offset - int(found[0]["char_offset"])) :]


def _compact(conn: sqlite3.Connection, job_id: str) -> None:
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


def _queue_stats(conn: sqlite3.Connection, now: float) -> QueueStats:
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
        oldest_due_at=_maybe_float(row["oldest_due_at"]),
        oldest_checkpoint_at=_maybe_float(row["oldest_checkpoint_at"]),
        expired_leases=int(row["expired_leases"]),
        pauses=pauses,
        pause_reasons=reasons,
    )


def _open_batches(conn: sqlite3.Connection) -> list[BatchRecord]:
    with conn:
        conn.execute("BEGIN")
        return [
            rows.batch(row, conn.execute(sql.SELECT_BATCH_ENTRIES, {"key": row["key"]}).fetchall())
            for row in conn.execute(sql.SELECT_OPEN_BATCHES).fetchall()
        ]


def _fleet(conn: sqlite3.Connection, now: float, since: float) -> FleetView:
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


def _maybe_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _next_due(conn: sqlite3.Connection) -> float | None:
    value = conn.execute(sql.SELECT_NEXT_DUE).fetchone()[0]
    return None if value is None else float(value)


def _transition(
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


def _set_attempt_usage(conn: sqlite3.Connection, job_id: str, number: int, usage: Usage) -> None:
    """Record an attempt's usage so far, and move the job's total by the difference."""
    key = {"job_id": job_id, "number": number}
    old = Usage.from_dict(dict(_one(conn, sql.SELECT_ATTEMPT_USAGE, key)))
    new = usage.as_dict()
    conn.execute(sql.SET_ATTEMPT_USAGE, {**key, **new})
    delta = {name: new[name] - value for name, value in old.as_dict().items()}
    if any(delta.values()):
        conn.execute(sql.ADD_JOB_USAGE, {"id": job_id, **delta})


def _permission_hint(path: str, exc: sqlite3.Error) -> str:
    """SQLite says "unable to open database file" or "attempt to write a readonly database"
    without naming the cause; when it is a permission, say which."""
    text = str(exc)
    if path == ":memory:" or ("unable to open" not in text and "readonly" not in text):
        return ""
    file, folder = Path(path), Path(path).parent
    if file.exists() and not os.access(file, os.R_OK):
        return f" (permission denied: {path} is not readable by this user)"
    if file.exists() and not os.access(file, os.W_OK):
        return f" (permission denied: {path} is read-only for this user)"
    if folder.exists() and not os.access(folder, os.W_OK):
        return f" (permission denied: its folder {folder} is not writable; SQLite needs it for -wal, -shm)"
    return ""


def _no_op(conn: sqlite3.Connection) -> None:
    return None
