"""The job store contract (``jobs.backends.open_store`` picks the backend a URL names).

One Protocol, implemented by every backend (SQLite, PostgreSQL) and proven by one shared contract
test suite. Guarantees every backend gives:

* **Exclusive claims.** A job is claimed by one worker at a time, even by several processes or
  machines. A claim sets an owner, a fresh lease token and an expiry in one transaction.
* **Fencing.** Every write by a worker (checkpoint, settle, release) carries its lease token and is
  refused (``LeaseLostError`` or ``WriteStatus.LEASE_LOST``) once the token is not current, so a
  worker that lost its lease can never change the job again.
* **Append-only text.** Checkpoints append chunks at an exact offset; the cost of a write is
  proportional to the new text; reading returns exactly the concatenation of committed chunks.
* **Compaction.** When a job ends (succeeded, failed, cancelled), its chunks are merged into one
  row in the same transaction, so storage stays proportional to the text; every read (the text,
  the text from an offset, a claim's resume text) returns exactly what it returned before.
* **Recovery without user code.** A running job whose lease expired is claimable again, and
  resumes from its committed text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol, TypeVar, runtime_checkable

from jobs.buckets import BucketState, Limits
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

__all__ = ("Store", "EnqueueSession", "ChangeSignal", "Clock", "Access")

#: Returns the current time as UTC epoch seconds. Injectable so tests never wait for real time.
Clock = Callable[[], float]

T = TypeVar("T")


@runtime_checkable
class ChangeSignal(Protocol):
    """Tells a reader that the store may have changed, without reading any table: SQLite's
    ``PRAGMA data_version`` on a connection of its own, PostgreSQL's LISTEN/NOTIFY. A signal can
    be spurious (any commit, of any job), never missed: after it, read what you watch."""

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 - a poll interval
        """True when a change was signalled, False after ``timeout`` seconds without one."""
        ...

    async def close(self) -> None: ...


class EnqueueSession(Protocol):
    """Batches of jobs added in ONE transaction (``Store.enqueue_session``): what streams a file
    into the queue all or nothing, holding one batch at a time."""

    async def add(self, specs: Sequence[JobSpec]) -> EnqueueResult:
        """Add a batch, as :meth:`Store.enqueue` does (an id that exists is left unchanged, and
        a repeated id is inserted once), inside the session's transaction."""
        ...

    async def existing(self, job_ids: Sequence[str]) -> list[Job]:
        """The stored jobs of ``job_ids`` (unknown ids left out), read in the session's
        transaction with one query: what compares a re-enqueued line with the job it names."""
        ...


@runtime_checkable
class Store(Protocol):
    """Durable jobs, leases and checkpoints."""

    # -- producers -------------------------------------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec]) -> EnqueueResult:
        """Add jobs in one transaction. An id that exists already is left unchanged."""
        ...

    def enqueue_session(self) -> AbstractAsyncContextManager[EnqueueSession]:
        """One write transaction for many :meth:`EnqueueSession.add` batches: committed when the
        block ends, rolled back (nothing added) if it raises or is cancelled. Every job of the
        session gets the same ``created_at``. Other writers wait for it (SQLite) or never see its
        jobs before the commit (PostgreSQL)."""
        ...

    # -- workers ---------------------------------------------------------------------------

    async def claim(
        self, worker: str, lease_seconds: float, limit: int = 1, models: Sequence[str] | None = None
    ) -> list[Claim]:
        """Claim up to ``limit`` runnable jobs: queued with ``run_at`` due, or running with an
        expired lease (that attempt is recorded as ``lease_expired`` and counts as a failure; a
        job whose failures reach ``max_attempts`` is failed instead of claimed). Highest
        priority first, then earliest ``run_at``, then oldest. ``models``, if given, claims only
        jobs of those models (the rate-limit classes with room; an empty list claims nothing);
        expired leases of other models are still settled."""
        ...

    async def commit(self, writes: Sequence[CheckpointWrite], lease_seconds: float) -> list[WriteStatus]:
        """Apply a batch of fenced appends and lease extensions in one transaction.

        Returns one status per write, in order. A refused write changes nothing of its job;
        the other writes of the batch still apply."""
        ...

    async def settle(self, job_id: str, token: str, result: AttemptResult) -> Job:
        """End the current attempt with ``result.outcome`` (succeeded, retry, failed, released).

        RETRY re-queues at ``result.retry_at`` unless failures reach ``max_attempts``, in which
        case the job fails. RELEASED re-queues now without counting a failure. Raises
        ``LeaseLostError`` if ``token`` is not current."""
        ...

    async def settle_many(self, requests: Sequence[SettleRequest]) -> list[Job | None]:
        """``settle`` for a batch, in one transaction: one result per request, in order, the
        settled job or None where the lease was not current (or the job does not exist; a job
        named twice settles once). A refused request changes nothing of its job; the others still
        apply. Each settle keeps its attempt record and history row, as ``settle`` does. What a
        worker finishing several short jobs at once calls, so the store pays one transaction
        for the batch instead of one per job."""
        ...

    async def next_due(self) -> float | None:
        """When the next job becomes claimable (a ``run_at`` or a lease expiry); None if none."""
        ...

    # -- batches (see worker.batches) ------------------------------------------------------

    async def reserve_batch(self, worker: str, key: str, limit: int, hold_seconds: float) -> list[Claim]:
        """Claim up to ``limit`` queued jobs of mode ``batch`` as :meth:`claim` does (same order,
        same expiry handling; ``claim`` itself only takes ``stream`` jobs), give each its
        ``custom_id`` (``jobs.batches.custom_id_for``) and record them as batch ``key``, all in
        one transaction. Their leases last ``hold_seconds``: the batch's whole life."""
        ...

    async def settle_to_stream(self, requests: Sequence[SettleRequest], reason: str) -> list[Job | None]:
        """:meth:`settle_many`, and in the same transaction every batch job it puts back in the
        queue becomes a ``stream`` job (the pool claims it next, keeping its text): it leaves its
        batch (a batch not yet submitted counts one request fewer, so a crashed submitter's
        reservation still matches what it sent) and its history gets a queued -> queued row with
        ``reason``. A job the result ends (failed, out of attempts) keeps its mode; a refused
        request changes nothing. What the submitter calls for a job whose deadline came within
        the batch horizon (``jobs.batches.route``)."""
        ...

    async def mark_batch_submitted(self, key: str, api_id: str) -> None:
        """Book the API's id of batch ``key`` once it is submitted."""
        ...

    async def open_batches(self) -> list[BatchRecord]:
        """Batches not yet closed, oldest first, each with its jobs still running under it."""
        ...

    async def close_batch(self, key: str) -> None:
        """Mark batch ``key`` collected: every result applied (or dropped)."""
        ...

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take or renew the fleet lease ``name`` for ``seconds``; True if ``owner`` holds it now.
        Only its holder renews it, anyone takes it once it expired: one upsert."""
        ...

    # -- reading ---------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """Raises ``JobNotFoundError``."""
        ...

    async def read_text(self, job_id: str) -> str:
        """The committed text, exactly. Raises ``JobNotFoundError``."""
        ...

    async def read_text_from(self, job_id: str, offset: int) -> str:
        """The committed text from character ``offset`` on (empty at or past the end): a reader
        following a job reads only what is new. Raises ``JobNotFoundError``."""
        ...

    async def read_texts_from(self, positions: Mapping[str, int]) -> dict[str, str]:
        """For many jobs at once (job id -> offset), the committed text from each offset, in one
        query; jobs with no text past their offset, and unknown ids, are left out. What a relay
        reads after a change signal, so the cost does not grow with a query per watched job."""
        ...

    async def progress(self, job_ids: Sequence[str]) -> dict[str, Progress]:
        """State, attempts and committed length of each job named (unknown ids are left out), in
        one query: what a relay re-reads for the jobs it watches after a change signal."""
        ...

    def change_signal(self) -> ChangeSignal:
        """A new change signal, owned (and closed) by the caller."""
        ...

    async def attempts(self, job_id: str) -> list[AttemptRecord]: ...

    async def save_thinking(
        self, job_id: str, token: str, request: int, text: str, max_chars: int
    ) -> WriteStatus:
        """Keep the thinking of request ``request`` of the job's current attempt, fenced like a
        checkpoint (``LEASE_LOST``, writing nothing, once ``token`` is not current). The job keeps
        at most ``max_chars`` characters of thinking in all: past that, the first part of
        ``text`` (possibly none) is kept and its full length recorded. Saving the same request
        twice keeps the first."""
        ...

    async def read_thinking(self, job_id: str) -> list[Thinking]:
        """The job's kept thinking, per attempt and request in order. Raises ``JobNotFoundError``."""
        ...

    async def history(self, job_id: str) -> list[Transition]: ...

    async def totals(self) -> list[Totals]:
        """Jobs, committed characters and usage per (state, model, prompt cache mode), groups
        with no job left out. Read from aggregate rows the store keeps in the same transaction as
        every change of a job, so the cost does not grow with the number of jobs: what ``status``
        and every other aggregate read."""
        ...

    async def counts(self) -> dict[State, int]:
        """Jobs per state (every state present, zero included), from :meth:`totals`."""
        ...

    async def queue_stats(self) -> QueueStats:
        """Counts per state, the oldest due job, the oldest checkpoint of a running job, expired
        leases and fleet pauses, from a few aggregate queries in one snapshot (``/metrics``)."""
        ...

    async def model_counts(self) -> dict[str, int]:
        """Jobs still to run (queued or running) per model, from :meth:`totals`: for start-up checks."""
        ...

    async def list_jobs(
        self, states: Sequence[State] | None = None, after_id: str | None = None, limit: int = 1000
    ) -> list[Job]:
        """Jobs ordered by id, for paging through large stores (``after_id`` = the last id seen)."""
        ...

    async def find_jobs(self, query: JobQuery) -> list[Job]:
        """One page of jobs matching ``query``'s filters, in id order from ``query.after_id``
        (keyset paging: the dashboard's list, fast at any size when the filters match often)."""
        ...

    async def fleet(self, since: float) -> FleetView:
        """Workers (from leases of running jobs and attempts ended since ``since``), every
        rate-limit bucket, and attempts ended since ``since`` per minute and outcome."""
        ...

    # -- operators -------------------------------------------------------------------------

    async def retry(self, job_id: str, revised: JobSpec | None = None) -> Job:
        """Re-queue a failed or cancelled job now, with its failure count reset; its committed
        text is kept, so it resumes. ``revised``, if given, is its repaired spec (see
        :mod:`jobs.revise`): its fields in ``REVISABLE`` are written in the same transaction.
        Raises ``JobStateError`` for other states."""
        ...

    async def replace(self, spec: JobSpec) -> Job:
        """Give a queued job that has never started a new spec (same id, same place in the queue).
        Raises ``JobNotFoundError``, or ``JobStateError`` once an attempt has started."""
        ...

    async def retry_failed(self) -> int:
        """Re-queue every failed job; returns how many."""
        ...

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job. A running attempt's next fenced write is refused.
        Raises ``JobStateError`` for a finished job."""
        ...

    async def delete(self, job_id: str) -> Job:
        """Delete a succeeded, failed or cancelled job with its text, attempts and history;
        returns it as it was. Raises ``JobNotFoundError``, or ``JobStateError`` for a queued or
        running job (cancel it first)."""
        ...

    async def prune(
        self,
        older_than: float,
        states: Sequence[State] | None = None,
        *,
        dry_run: bool = False,
        batch_size: int = 1000,
    ) -> int:
        """Delete the finished jobs (succeeded, failed or cancelled; ``states`` narrows that,
        ``jobs.rules.prune_states``) that ended (``finished_at``) more than ``older_than`` seconds
        ago, as :meth:`delete` does: text, attempts, history, thinking and the aggregates with
        them; then the closed batches, that old, no job refers to any more. Returns how many jobs
        were deleted; ``dry_run`` counts them and deletes nothing. A queued or running job is never
        deleted. Deletes ``batch_size`` jobs per transaction, so a huge prune never holds a lock
        for long (and a job that other transactions hold is left for the next prune). Raises
        ``JobStateError`` for a state that may not be pruned."""
        ...

    # -- rate limits -----------------------------------------------------------------------

    async def update_buckets(
        self, key: str, limits: Limits, change: Callable[[BucketState, float], tuple[BucketState, T]]
    ) -> T:
        """Atomically apply ``change(state, now)`` to the rate-limit buckets stored under ``key``
        (full buckets if there are none yet) and save the state it returns. Every worker process
        and machine shares these rows, so together they stay inside one limit. ``change`` is pure
        and quick (it runs inside the transaction)."""
        ...

    # -- capabilities every backend answers (some trivially) -------------------------------

    #: The backend's name as the command line prints it: ``sqlite`` or ``postgresql``.
    backend: str
    #: Where the queue lives, fit to print (a file path, or host/database without a password).
    where: str

    async def wait_for_jobs(self, timeout: float) -> None:  # noqa: ASYNC109 - a poll interval
        """Return when the store announces new or requeued jobs, or after ``timeout`` seconds. An
        idle pool waits here between claims, so a backend that pushes (PostgreSQL's NOTIFY) wakes a
        fleet at once; one that cannot (SQLite) simply waits out the timeout: plain polling."""
        ...

    async def migrate(self) -> int:
        """Apply every pending migration, including those workers do not apply on their own
        (``python -m worker migrate``), and return the schema version now in place."""
        ...

    async def close(self) -> None: ...


#: How a command may use the queue at its URL:
#:
#: * ``create``: create the database and its schema if missing, and migrate (``run``, ``enqueue``,
#:   ``migrate``, ``serve``);
#: * ``existing``: read and write a queue that exists, creating nothing (``retry``, ``cancel``);
#: * ``read``: only read (``status``, ``show``, ``export``); a read-only SQLite file still works.
#:
#: Without ``create``, a URL with no queue behind it raises ``NoQueueError`` on first use.
Access = Literal["create", "existing", "read"]
