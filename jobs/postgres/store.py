"""The PostgreSQL job store: one database shared by a fleet of worker machines.

**Why psycopg 3 (not asyncpg).** It is the maintained successor of psycopg2 with native asyncio
(no thread hop), ``psycopg_pool`` for pooled connections with timeouts and reconnection, LISTEN
via ``conn.notifies()``, pipeline mode, automatic server-side prepared statements, binary wheels
(``psycopg[binary]``) and the same driver for sync and async code. asyncpg is faster on raw
throughput, but a worker here spends seconds generating each checkpoint's text and milliseconds
writing it: the workload is bound by generation speed, not by the driver.

Concurrency and durability, in short:

* **Claims are one statement** (:data:`jobs.postgres.sql.CLAIM`) that locks candidates with
  ``FOR UPDATE SKIP LOCKED``: queued jobs in priority, ``run_at``, age order, and running jobs
  whose lease expired, recorded as ``lease_expired`` in the same statement. Two workers never
  wait on each other's candidates and never take the same job.
* **Checkpoints are set-based.** ``commit`` locks the batch's jobs in id order, checks each
  write's fence (token and offset) in Python exactly as the SQLite store does, then applies every
  accepted write with one statement built on ``unnest``: one transaction per flush of a whole
  process, whatever the number of jobs.
* **Fencing is by token**, as in SQLite: a worker whose lease expired but was not reclaimed yet
  may still commit; once another claim or a cancel changes the token, its writes are refused.
* **Times come from the injected clock** and are passed as parameters; SQL never calls ``now()``.
* **Connections** (:mod:`jobs.postgres.connector`): pooled, with bounded waits; a connection lost
  before COMMIT is retried on a fresh one (nothing was applied), one lost during COMMIT is not
  (it may have committed). Driver errors become :class:`~jobs.errors.StoreError`, which the
  worker pool treats as transient, so a PostgreSQL restart crashes nothing.
* **Schema.** Created and migrated by :mod:`jobs.postgres.schema` on first use, under an advisory
  lock; ``python -m worker migrate`` applies migrations too, including those not safe to run
  beside live workers.
* **Wake-ups.** :meth:`PostgresStore.wait_for_jobs` LISTENs on a dedicated connection for the
  NOTIFY sent when jobs are enqueued or requeued, and falls back to polling if it is lost.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

from jobs import batches, rows, rules
from jobs.buckets import BucketState, Limits
from jobs.errors import (
    ConfigError,
    JobNotFoundError,
    JobStateError,
    LeaseLostError,
    MissingDependencyError,
    StoreError,
)
from jobs.models import (
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
    Progress,
    QueueStats,
    SettleRequest,
    State,
    Thinking,
    Totals,
    Transition,
    WriteStatus,
)
from jobs.postgres import rows as convert
from jobs.postgres import sql
from jobs.postgres.schema import CHANGES_CHANNEL
from jobs.rows import fleet_view
from jobs.store import ChangeSignal, Clock, EnqueueSession

try:
    import psycopg
    from psycopg.rows import DictRow
    from psycopg.types.json import Jsonb

    from jobs.postgres import intake
    from jobs.postgres.connector import Connection, Connector
except ImportError as exc:  # the optional extra is not installed: from_url says so
    _MISSING: ImportError | None = exc
else:
    _MISSING = None

__all__ = ("PostgresStore", "MISSING_MESSAGE")

T = TypeVar("T")

MISSING_MESSAGE = "a postgresql:// queue needs the PostgreSQL driver: pip install 'longform-worker[postgres]'"

#: Expired leases settled per claim call; the rest are picked up by the next calls.
_EXPIRED_BATCH = 500


class PostgresStore:
    """A :class:`~jobs.store.Store` on a PostgreSQL database.

    Args:
        conninfo: a libpq URL (``postgresql://user@host:5432/db``) or key=value string.
        clock: returns the time as epoch seconds; tests inject a fake one.
        max_size: pooled connections per process (claims, checkpoints, settles, limiter).
        timeout: seconds to wait for a pooled connection before raising ``StoreError``.
        auto_migrate: apply pending automatic migrations on first use.
        create: False (commands that only read) never creates the schema: a database without
            one raises ``NoQueueError`` on first use. Implies ``auto_migrate=False``.
    """

    backend = "postgresql"

    def __init__(
        self,
        conninfo: str,
        *,
        clock: Clock | None = None,
        max_size: int = 10,
        timeout: float = 10.0,
        auto_migrate: bool = True,
        create: bool = True,
    ) -> None:
        if _MISSING is not None:
            raise MissingDependencyError(MISSING_MESSAGE) from _MISSING
        self._clock: Clock = clock or time.time
        self._db = Connector(
            conninfo,
            self._now,
            max_size=max_size,
            timeout=timeout,
            auto_migrate=auto_migrate and create,
            require_schema=not create,
        )
        #: host:port/dbname, for messages (never the password).
        self.where = self._db.where

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, create: bool = True) -> PostgresStore:
        """``postgresql://user:password@host:port/dbname?sslmode=…`` (``postgres://`` too)."""
        if _MISSING is not None:
            raise MissingDependencyError(MISSING_MESSAGE) from _MISSING
        if url.partition("://")[0] not in ("postgresql", "postgres"):
            raise ConfigError(f"queue url {url!r}: expected postgresql://user@host:port/dbname")
        return cls(url, clock=clock, create=create)

    def _now(self) -> float:
        return float(self._clock())

    async def migrate(self) -> int:
        """Apply every pending migration, including those workers do not apply on their own
        (``python -m worker migrate``); returns the schema version."""
        return await self._db.migrate()

    async def close(self) -> None:
        """Close the pool and the LISTEN connection. Idempotent; later calls raise ``StoreError``."""
        await self._db.close()

    async def _rows(self, query: str, params: dict[str, Any] | None = None) -> list[DictRow]:
        """A read outside any transaction (retried freely if the connection is lost)."""

        async def run(conn: Connection) -> list[DictRow]:
            return await (await conn.execute(query, params)).fetchall()

        return await self._db.run(run, transaction=False)

    # -- producers ---------------------------------------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec]) -> EnqueueResult:
        now = self._now()

        async def run(conn: Connection) -> EnqueueResult:
            return await intake.add_batch(conn, specs, now)

        result = await self._db.run(run)
        if len(result.inserted) >= sql.ANALYZE_AFTER:
            await self._analyze_if_never()
        return result

    @contextlib.asynccontextmanager
    async def enqueue_session(self) -> AsyncIterator[EnqueueSession]:
        async with intake.open_session(self._db, self._now) as session:
            yield session
        if session.inserted >= sql.ANALYZE_AFTER:
            await self._analyze_if_never()

    async def _analyze_if_never(self) -> None:
        """``ANALYZE jobs`` after a large enqueue into a table never analysed (see
        :data:`jobs.postgres.sql.NEVER_ANALYZED`); best effort, as autovacuum will do it later."""

        async def run(conn: Connection) -> None:
            row = await (await conn.execute(sql.NEVER_ANALYZED)).fetchone()
            if row is not None and row["never"]:
                await conn.execute(sql.ANALYZE_JOBS)

        try:
            await self._db.run(run, transaction=False)
        except StoreError:  # a user without the right to analyse: plans catch up with autovacuum
            return

    # -- workers -----------------------------------------------------------------------------

    async def claim(
        self, worker: str, lease_seconds: float, limit: int = 1, models: Sequence[str] | None = None
    ) -> list[Claim]:
        if limit < 1 or (models is not None and not models):
            return []
        wanted = None if models is None else list(models)

        async def run(conn: Connection) -> list[Claim]:
            return await _claim(conn, self._now(), worker, lease_seconds, limit, "stream", wanted)

        return await self._db.run(run)

    # -- batches -----------------------------------------------------------------------------

    async def reserve_batch(self, worker: str, key: str, limit: int, hold_seconds: float) -> list[Claim]:
        if limit < 1:
            return []

        async def run(conn: Connection) -> list[Claim]:
            now = self._now()
            claims = await _claim(conn, now, worker, hold_seconds, limit, "batch")
            if claims:
                ids = [c.job.id for c in claims]
                entries = {"key": key, "ids": ids, "custom_ids": [batches.custom_id_for(i) for i in ids]}
                await conn.execute(sql.SET_BATCH_ENTRIES, entries)
                await conn.execute(sql.INSERT_BATCH, {"key": key, "now": now, "requests": len(claims)})
            return claims

        return await self._db.run(run)

    async def mark_batch_submitted(self, key: str, api_id: str) -> None:
        await self._execute(sql.SET_BATCH_API_ID, {"key": key, "api_id": api_id})

    async def close_batch(self, key: str) -> None:
        await self._execute(sql.CLOSE_BATCH, {"key": key, "now": self._now()})

    async def open_batches(self) -> list[BatchRecord]:
        async def run(conn: Connection) -> list[BatchRecord]:
            found = await (await conn.execute(sql.SELECT_OPEN_BATCHES)).fetchall()
            entries = await (await conn.execute(sql.SELECT_BATCH_ENTRIES)).fetchall()
            return [rows.batch(row, [e for e in entries if e["batch_key"] == row["key"]]) for row in found]

        return await self._db.run(run)

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        async def run(conn: Connection) -> bool:
            now = self._now()
            params = {"name": name, "owner": owner, "now": now, "expires_at": now + seconds}
            return (await (await conn.execute(sql.ACQUIRE_LEASE, params)).fetchone()) is not None

        return await self._db.run(run)

    async def _execute(self, query: str, params: dict[str, Any]) -> None:
        async def run(conn: Connection) -> None:
            await conn.execute(query, params)

        await self._db.run(run)

    async def commit(self, writes: Sequence[CheckpointWrite], lease_seconds: float) -> list[WriteStatus]:
        if not writes:
            return []
        writes = list(writes)
        encoded = [convert.encode_text(write.text) for write in writes]  # refuse before writing

        async def run(conn: Connection) -> list[WriteStatus]:
            now = self._now()
            cur = await conn.execute(sql.LOCK_FENCES, {"ids": sorted({w.job_id for w in writes})})
            plan = convert.plan_checkpoints(writes, encoded, {row["id"]: row for row in await cur.fetchall()})
            if plan.chars:
                await conn.execute(
                    sql.APPLY_CHECKPOINTS, convert.apply_params(plan, now, now + lease_seconds)
                )
            return plan.statuses

        return await self._db.run(run)

    async def settle(self, job_id: str, token: str, result: AttemptResult) -> Job:
        rules.check_outcomes((result,))

        async def run(conn: Connection) -> Job:
            now = self._now()
            job = convert.job(await _one(conn, sql.LOCK_JOB, job_id))
            if job.state != State.RUNNING or job.lease is None or job.lease.token != token:
                raise LeaseLostError(f"job {job_id!r}: this worker's lease is no longer current")
            cur = await conn.execute(sql.SETTLE, convert.settle_params(job, result, now))
            return convert.job(await _fetched(cur, job_id))

        return await self._db.run(run)

    async def settle_many(self, requests: Sequence[SettleRequest]) -> list[Job | None]:
        """One transaction of two statements for the whole batch: lock its jobs (id order),
        check each fence in Python, then :data:`jobs.postgres.sql.SETTLE_MANY`."""
        requests = list(requests)
        rules.check_outcomes(r.result for r in requests)
        if not requests:
            return []

        async def run(conn: Connection) -> list[Job | None]:
            return await self._settle_many_in(conn, requests)

        return await self._db.run(run)

    async def settle_to_stream(self, requests: Sequence[SettleRequest], reason: str) -> list[Job | None]:
        """``settle_many``, then :data:`jobs.postgres.sql.SWITCH_TO_STREAM`: one transaction."""
        requests = list(requests)
        rules.check_outcomes(r.result for r in requests)
        if not requests:
            return []

        async def run(conn: Connection) -> list[Job | None]:
            settled = await self._settle_many_in(conn, requests)
            ids = [job.id for job in settled if job is not None]
            params = {"ids": ids, "now": self._now(), "reason": reason}
            cur = await conn.execute(sql.SWITCH_TO_STREAM, params)
            switched = {row["id"]: convert.job(row) for row in await cur.fetchall()}
            return [None if job is None else switched.get(job.id, job) for job in settled]

        return await self._db.run(run)

    async def _settle_many_in(self, conn: Connection, requests: list[SettleRequest]) -> list[Job | None]:
        """``settle_many`` inside the caller's transaction."""
        now = self._now()
        cur = await conn.execute(sql.LOCK_JOBS, {"ids": sorted({r.job_id for r in requests})})
        current = {row["id"]: convert.job(row) for row in await cur.fetchall()}
        accepted = rules.fenced_settles(requests, current)
        if not accepted:
            return [None] * len(requests)
        params = [
            convert.settle_params(current[requests[i].job_id], requests[i].result, now) | {"step": i}
            for i in accepted
        ]
        ids = [p["id"] for p in params]
        cur = await conn.execute(sql.SETTLE_MANY, {"settles": Jsonb(params), "ids": ids, "now": now})
        settled = {row["id"]: convert.job(row) for row in await cur.fetchall()}
        return [settled[requests[i].job_id] if i in accepted else None for i in range(len(requests))]

    async def next_due(self) -> float | None:
        [row] = await self._rows(sql.SELECT_NEXT_DUE)
        return None if row["due"] is None else float(row["due"])

    async def wait_for_jobs(self, timeout: float) -> None:  # noqa: ASYNC109 - a poll interval
        """Return when jobs were enqueued or requeued (a NOTIFY), or after ``timeout`` seconds.

        The pool waits here between claims, so an idle fleet picks new work up at once. Falls back
        to sleeping (plain polling) while the LISTEN connection is lost; see
        :mod:`jobs.postgres.listen`.
        """
        await self._db.listener.wait(timeout)

    # -- reading -----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        async def run(conn: Connection) -> Job:
            return convert.job(await _one(conn, sql.SELECT_JOB, job_id))

        return await self._db.run(run, transaction=False)

    async def read_text(self, job_id: str) -> str:
        async def run(conn: Connection) -> str:
            return convert.decode_text((await _one(conn, sql.SELECT_TEXT, job_id))["text"])

        return await self._db.run(run, transaction=False)

    async def read_text_from(self, job_id: str, offset: int) -> str:
        async def run(conn: Connection) -> str:
            params = {"id": job_id, "offset": max(0, offset)}
            found = await (await conn.execute(sql.SELECT_TEXT_FROM, params)).fetchall()
            if not found:
                await _one(conn, sql.SELECT_JOB, job_id)  # raises JobNotFoundError
                return ""
            text = b"".join(bytes(row["text"]) for row in found).decode("utf-8")
            return text[max(0, offset - int(found[0]["char_offset"])) :]

        return await self._db.run(run, transaction=False)

    async def read_texts_from(self, positions: Mapping[str, int]) -> dict[str, str]:
        if not positions:
            return {}
        params = {"ids": list(positions), "offsets": [max(0, offset) for offset in positions.values()]}
        found = await self._rows(sql.SELECT_TEXTS_FROM, params)
        return rows.texts_from(found, lambda parts: b"".join(bytes(p) for p in parts).decode("utf-8"))

    async def progress(self, job_ids: Sequence[str]) -> dict[str, Progress]:
        if not job_ids:
            return {}
        found = await self._rows(sql.SELECT_PROGRESS, {"ids": list(job_ids)})
        return {str(row["id"]): rows.progress(row) for row in found}

    def change_signal(self) -> ChangeSignal:
        """LISTEN on the relay channel (migration 2's triggers) on a connection of its own."""
        return self._db.new_listener(CHANGES_CHANNEL)

    async def attempts(self, job_id: str) -> list[AttemptRecord]:
        return [convert.attempt(row) for row in await self._select_for_job(sql.SELECT_ATTEMPTS, job_id)]

    async def save_thinking(
        self, job_id: str, token: str, request: int, text: str, max_chars: int
    ) -> WriteStatus:
        async def run(conn: Connection) -> WriteStatus:
            row = await (await conn.execute(sql.LOCK_JOB, {"id": job_id})).fetchone()
            job = convert.job(row) if row is not None else None
            if job is None or job.state != State.RUNNING or job.lease is None or job.lease.token != token:
                return WriteStatus.LEASE_LOST
            kept = int((await _one(conn, sql.SELECT_THINKING_KEPT, job_id))["kept"])
            await conn.execute(
                sql.INSERT_THINKING,
                {"id": job_id, "attempt": job.attempts, "request": request, "now": self._now()}
                | {"text": rules.bound_thinking(text, kept, max_chars), "chars": len(text)},
            )
            return WriteStatus.OK

        return await self._db.run(run)

    async def read_thinking(self, job_id: str) -> list[Thinking]:
        return [rows.thinking(row) for row in await self._select_for_job(sql.SELECT_THINKING, job_id)]

    async def history(self, job_id: str) -> list[Transition]:
        return [convert.transition(row) for row in await self._select_for_job(sql.SELECT_HISTORY, job_id)]

    async def _select_for_job(self, query: str, job_id: str) -> list[DictRow]:
        async def run(conn: Connection) -> list[DictRow]:
            rows = await (await conn.execute(query, {"id": job_id})).fetchall()
            if not rows:
                await _one(conn, sql.SELECT_JOB, job_id)  # raises JobNotFoundError
            return rows

        return await self._db.run(run, transaction=False)

    async def totals(self) -> list[Totals]:
        found = await self._rows(sql.SELECT_TOTALS)
        [shards] = await self._rows(sql.COUNT_SHARDS)
        if int(shards["n"]) > sql.FOLD_THRESHOLD:
            await self._fold_totals()
        return [rows.totals(row) for row in found]

    async def _fold_totals(self) -> None:
        """Fold the backends' shards into shard 0 (see the schema's ``job_totals``). Best effort:
        a reader without write access still reads correct sums, only more rows of them."""

        async def run(conn: Connection) -> None:
            await conn.execute(sql.FOLD_TOTALS)

        try:
            await self._db.run(run)
        except StoreError:
            return

    async def counts(self) -> dict[State, int]:
        return rules.counts(await self.totals())

    async def queue_stats(self) -> QueueStats:
        now = self._now()

        async def read(conn: Connection) -> QueueStats:
            async with conn.transaction():  # one snapshot: the figures describe the same moment
                counted = await (await conn.execute(sql.SELECT_TOTALS)).fetchall()
                row = await (await conn.execute(sql.SELECT_QUEUE_STATS, {"now": now})).fetchone()
                paused = await (await conn.execute(sql.SELECT_PAUSES, {"now": now})).fetchall()
            assert row is not None
            return QueueStats(
                now=now,
                counts=rules.counts(rows.totals(r) for r in counted),
                oldest_due_at=None if row["oldest_due_at"] is None else float(row["oldest_due_at"]),
                oldest_checkpoint_at=None
                if row["oldest_checkpoint_at"] is None
                else float(row["oldest_checkpoint_at"]),
                expired_leases=int(row["expired_leases"]),
                pauses={str(r["key"]): float(r["paused_until"]) for r in paused},
                pause_reasons={str(r["key"]): str(r["pause_reason"]) for r in paused},
            )

        return await self._db.run(read, transaction=False)

    async def model_counts(self) -> dict[str, int]:
        return rules.model_counts(await self.totals())

    async def list_jobs(
        self, states: Sequence[State] | None = None, after_id: str | None = None, limit: int = 1000
    ) -> list[Job]:
        params = {
            "states": None if states is None else [State(s).value for s in states],
            "after_id": after_id,
            "limit": limit,
        }
        return [convert.job(row) for row in await self._rows(sql.LIST_JOBS, params)]

    async def find_jobs(self, query: JobQuery) -> list[Job]:
        name, params = rules.find_jobs_statement(query)
        statement = getattr(sql, name)
        return [convert.job(row) for row in await self._rows(statement, params)]

    async def fleet(self, since: float) -> FleetView:
        now = self._now()

        async def read(conn: Connection) -> FleetView:
            async with conn.transaction():  # one snapshot
                running = await (await conn.execute(sql.SELECT_RUNNING_WORKERS)).fetchall()
                recent = await (await conn.execute(sql.SELECT_RECENT_WORKERS, {"since": since})).fetchall()
                buckets = await (await conn.execute(sql.SELECT_ALL_BUCKETS)).fetchall()
                minutes = await (await conn.execute(sql.SELECT_MINUTES, {"since": since})).fetchall()
            return fleet_view(now, running, recent, buckets, minutes)

        return await self._db.run(read, transaction=False)

    # -- rate limits -------------------------------------------------------------------------

    async def update_buckets(
        self, key: str, limits: Limits, change: Callable[[BucketState, float], tuple[BucketState, T]]
    ) -> T:
        async def run(conn: Connection) -> T:
            now = self._now()
            row = await (await conn.execute(sql.LOCK_BUCKETS, {"key": key})).fetchone()
            if row is None:
                await conn.execute(
                    sql.INSERT_BUCKETS, {"key": key, **convert.bucket_params(BucketState.full(limits, now))}
                )
                row = await _fetched(await conn.execute(sql.LOCK_BUCKETS, {"key": key}), key)
            state, result = change(rows.bucket_state(row), now)
            await conn.execute(sql.UPDATE_BUCKETS, {"key": key, **convert.bucket_params(state)})
            return result

        return await self._db.run(run)

    # -- operators ---------------------------------------------------------------------------

    async def retry(self, job_id: str, revised: JobSpec | None = None) -> Job:
        async def run(conn: Connection) -> Job:
            job = convert.job(await _one(conn, sql.LOCK_JOB, job_id))
            rules.check_retryable(job, revised)
            now = self._now()
            if revised is not None:
                await conn.execute(sql.RESPEC, {**rows.spec_params(revised), "now": now})
            reason = rules.retry_reason(job.spec, revised)
            cur = await conn.execute(
                sql.REQUEUE, {"id": job_id, "now": now, "from_state": job.state.value, "reason": reason}
            )
            return convert.job(await _fetched(cur, job_id))

        return await self._db.run(run)

    async def replace(self, spec: JobSpec) -> Job:
        params = rows.spec_params(spec)

        async def run(conn: Connection) -> Job:
            rules.check_replaceable(convert.job(await _one(conn, sql.LOCK_JOB, spec.id)))
            cur = await conn.execute(sql.REPLACE_SPEC, {**params, "now": self._now()})
            return convert.job(await _fetched(cur, spec.id))

        return await self._db.run(run)

    async def retry_failed(self) -> int:
        async def run(conn: Connection) -> int:
            row = await _fetched(await conn.execute(sql.RETRY_FAILED, {"now": self._now()}), "failed")
            return int(row["n"])

        return await self._db.run(run)

    async def cancel(self, job_id: str) -> Job:
        async def run(conn: Connection) -> Job:
            job = convert.job(await _one(conn, sql.LOCK_JOB, job_id))
            if job.state not in (State.QUEUED, State.RUNNING):
                raise JobStateError(
                    f"job {job_id!r} is {job.state}: only queued or running jobs can be cancelled"
                )
            # The worker's next fenced write is refused; its last checkpointed usage stays.
            attempt = job.attempts if job.state == State.RUNNING else None
            params = {"id": job_id, "now": self._now(), "from_state": job.state.value, "attempt": attempt}
            cur = await conn.execute(sql.CANCEL, {**params, "chars": job.committed_chars})
            return convert.job(await _fetched(cur, job_id))

        return await self._db.run(run)

    async def delete(self, job_id: str) -> Job:
        async def run(conn: Connection) -> Job:
            job = convert.job(await _one(conn, sql.LOCK_JOB, job_id))
            rules.check_deletable(job)
            await conn.execute(sql.DELETE_JOB, {"id": job_id})
            return job

        return await self._db.run(run)

    async def prune(
        self,
        older_than: float,
        states: Sequence[State] | None = None,
        *,
        dry_run: bool = False,
        batch_size: int = rules.PRUNE_BATCH,
    ) -> int:
        """One transaction per batch (:data:`jobs.postgres.sql.PRUNE_JOBS`), so row locks and
        the totals' shard rows are held for one batch at a time."""
        params: dict[str, Any] = {"states": [s.value for s in rules.prune_states(states)]}
        params["cutoff"] = self._now() - older_than
        if dry_run:
            [row] = await self._rows(sql.COUNT_PRUNABLE, params)
            return int(row["n"])
        batch, deleted = max(1, batch_size), 0

        async def run(conn: Connection) -> int:
            return (await conn.execute(sql.PRUNE_JOBS, params | {"limit": batch})).rowcount

        while True:
            count = await self._db.run(run)
            deleted += count
            if count < batch:
                break
        await self._execute(sql.PRUNE_BATCHES, {"cutoff": params["cutoff"]})
        return deleted


# -- helpers -----------------------------------------------------------------------------------


async def _claim(
    conn: Connection,
    now: float,
    worker: str,
    lease_seconds: float,
    limit: int,
    mode: str,
    models: list[str] | None = None,
) -> list[Claim]:
    """One claim statement (``sql.CLAIM``) for queued jobs of ``mode`` (and of ``models``, if given)."""
    params = {"now": now, "expires_at": now + lease_seconds, "worker": worker, "limit": limit}
    params |= {"expired_batch": _EXPIRED_BATCH, "mode": mode, "models": models}
    cur = await conn.execute(sql.CLAIM, params)
    return [
        Claim(convert.job(row), row["lease_token"], row["attempts"], convert.decode_text(row["text"]))
        for row in await cur.fetchall()
    ]


async def _one(conn: Connection, query: str, job_id: str) -> DictRow:
    row = await (await conn.execute(query, {"id": job_id})).fetchone()
    if row is None:
        raise JobNotFoundError(f"no job with id {job_id!r}")
    return row


async def _fetched(cur: psycopg.AsyncCursor[DictRow], what: str) -> DictRow:
    row = await cur.fetchone()
    if row is None:
        raise StoreError(f"expected a row for {what!r}, got none")
    return row
