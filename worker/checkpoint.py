"""Durable checkpoints for every running job, coalesced into one transaction per flush.

Each running job has a :class:`JobText`: its text so far and the part not yet committed. One
:class:`CheckpointWriter` task commits, in one ``Store.commit`` batch, every job whose pending text
reached ``checkpoint_chars`` or has waited ``checkpoint_seconds``, plus a pure heartbeat for jobs
whose lease is a third of the way to expiry. Hundreds of streams therefore make one transaction
per flush, not hundreds of tiny ones; and a crash loses at most about one ``checkpoint_seconds`` of
text. All writes for a job go through this one task, so chunks always commit in order.

A write refused for a lost lease marks the job lost and cancels its scope: the attempt stops at
once and never writes again.

While the store is down, text stays pending in memory and is committed once it is back, so an
outage loses nothing. The pending text of all jobs together is bounded (``max_pending_chars``):
past it, the job holding the most is *held* (its scope cancelled, its text kept for the next
commit), so memory stops growing while the others stream on. Each commit is shielded with a
deadline, so no flush can hang a shutdown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
import structlog

from jobs.errors import StoreError
from jobs.models import CheckpointWrite, Usage, WriteStatus
from jobs.store import Store
from worker.outage import StoreGuard
from worker.recorder import Recorder

__all__ = ("JobText", "CheckpointWriter", "CheckpointStats", "flush_age")

log = structlog.get_logger("worker.checkpoint")


def flush_age(interval: float, tick: float, commit_seconds: float) -> float:
    """How old a job's oldest pending text may get before a flush takes it, so that it is durable
    within ``interval``: the writer looks once per ``tick``, and a commit takes about
    ``commit_seconds`` (counted up to half the interval, so a slow store still batches)."""
    return max(0.0, interval - tick - min(commit_seconds, interval / 2))


class JobText:
    """The text of one running job: committed, and pending commit."""

    __slots__ = (
        "committed",
        "first_pending_at",
        "held",
        "job_id",
        "last_commit_at",
        "lost",
        "parts",
        "pending",
        "pending_len",
        "requests",
        "scope",
        "start_len",
        "token",
        "uncertain",
        "usage",
        "usage_fn",
        "waiters",
    )

    def __init__(self, job_id: str, token: str, text: str, scope: anyio.CancelScope, now: float) -> None:
        self.job_id = job_id
        self.token = token
        self.parts: list[str] = [text] if text else []
        self.committed = len(text)
        self.start_len = len(text)
        self.pending: list[str] = []
        self.pending_len = 0
        self.first_pending_at = math.inf
        self.last_commit_at = now
        self.scope = scope
        self.lost = False
        #: Stopped because the pending text of all jobs reached the bound during an outage.
        self.held = False
        #: A commit of this job failed without an answer: it may have been applied anyway.
        self.uncertain = False
        self.usage: Usage | None = None
        #: The running attempt's usage so far, read at each commit, so that the usage committed
        #: always covers the text committed with it (a killed worker loses neither).
        self.usage_fn: Callable[[], Usage] | None = None
        #: The running attempt's requests so far (committed beside its usage).
        self.requests: int | None = None
        self.waiters: list[anyio.Event] = []

    def text(self) -> str:
        """The whole text so far, committed and pending."""
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def length(self) -> int:
        return self.committed + self.pending_len


@dataclass(slots=True)
class CheckpointStats:
    flushes: int = 0
    writes: int = 0
    chars: int = 0
    #: Per flush, the longest wait between text arriving and being committed (when recorded).
    lags: list[float] | None = None
    #: Text dropped from memory without being committed (a shutdown deadline during an outage).
    unsaved_chars: int = 0
    #: Jobs held because pending text reached ``max_pending_chars``.
    held: int = 0


class CheckpointWriter:
    """Owns every checkpoint and heartbeat write of one worker process."""

    def __init__(
        self,
        store: Store,
        *,
        checkpoint_chars: int,
        checkpoint_seconds: float,
        lease_seconds: float,
        record_lags: bool = False,
        guard: StoreGuard | None = None,
        max_pending_chars: int = 50_000_000,
        live_seconds: float | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self._store = store
        self._recorder = recorder or Recorder()
        self._chars = checkpoint_chars
        self._seconds = checkpoint_seconds
        self._lease = lease_seconds
        self._heartbeat = lease_seconds / 3
        #: The checkpoint interval of jobs somebody watches live (``serve --workers``); None: no
        #: job is checkpointed faster than ``checkpoint_seconds``.
        self._live = live_seconds
        #: Ids of the jobs watched live, kept up to date by the server's relay (a shared set).
        self.watched: set[str] = set()
        # The writer wakes every tick; text is flushed once it would be older than
        # checkpoint_seconds by the end of the next tick and commit, so none waits past it.
        self._tick = min(checkpoint_seconds, self._heartbeat, live_seconds or math.inf) / 4
        self._jobs: dict[str, JobText] = {}
        self._urgent: set[str] = set()
        self._wake = anyio.Event()
        self._stopping = False
        self._guard = guard or StoreGuard()
        self._max_pending = max_pending_chars
        self._pending_total = 0
        #: A commit waits at most this long (shielded) before its result is treated as a failure.
        self._commit_deadline = max(5.0, lease_seconds)
        #: How long a commit takes: the slowest recent one, decaying (see ``flush_age``).
        self._commit_seconds = 0.0
        self.stats = CheckpointStats(lags=[] if record_lags else None)

    # -- called by the job tasks -----------------------------------------------------------

    def register(self, job_id: str, token: str, text: str, scope: anyio.CancelScope) -> JobText:
        job = JobText(job_id, token, text, scope, anyio.current_time())
        self._jobs[job_id] = job
        return job

    def add(self, job: JobText, text: str) -> None:
        """Append new text to ``job``. Cheap: a list append, and a wake-up when a batch is due."""
        if not text:
            return
        if not job.pending:
            job.first_pending_at = anyio.current_time()
        job.parts.append(text)
        job.pending.append(text)
        job.pending_len += len(text)
        self._pending_total += len(text)
        if job.pending_len >= self._chars:
            self._wake.set()
        if self._pending_total > self._max_pending:
            self._hold_largest()

    def _hold_largest(self) -> None:
        """Stop the stream holding the most pending text; its text stays, for the next commit."""
        live = [j for j in self._jobs.values() if not j.held and not j.lost]
        if not live:
            return
        job = max(live, key=lambda j: j.pending_len)
        job.held = True
        self.stats.held += 1
        log.warning(
            "pending_text_bound_reached",
            pending_chars=self._pending_total,
            bound=self._max_pending,
            held_job=job.job_id,
        )
        job.scope.cancel()

    def streaming_chars(self) -> int:
        """Characters the running attempts have produced so far (not counting resumed text)."""
        return sum(job.length() - job.start_len for job in self._jobs.values())

    async def flush_all(self) -> None:
        """Commit every job now (after an outage, before claiming: leases are refreshed first)."""
        for job in list(self._jobs.values()):
            await self.flush(job)

    async def flush(self, job: JobText, usage: Usage | None = None) -> bool:
        """Commit everything pending for ``job`` now; True if it is committed, False if the lease
        was lost. Call under a shielded scope when an attempt ends."""
        if usage is not None:
            job.usage, job.usage_fn = usage, None
        if job.lost:
            return False
        if self._jobs.get(job.job_id) is not job:
            return True  # unregistered meanwhile: its flush happened before it was
        done = anyio.Event()
        job.waiters.append(done)
        self._urgent.add(job.job_id)
        self._wake.set()
        await done.wait()
        return not job.lost

    def unregister(self, job: JobText) -> None:
        if self._jobs.pop(job.job_id, None) is not None:
            self._pending_total -= job.pending_len
            # Everything produced but not known committed (pending, or in a commit still in flight).
            unsaved = len(job.text()) - job.committed
            if unsaved and not job.lost:
                self.stats.unsaved_chars += unsaved
                log.error("text_not_saved", job_id=job.job_id, chars=unsaved)
        self._urgent.discard(job.job_id)
        for event in job.waiters:
            event.set()
        job.waiters.clear()

    # -- the writer task -------------------------------------------------------------------

    async def run(self) -> None:
        """Flush until ``stop`` is called and no flush is owed."""
        while not (self._stopping and not self._urgent):
            with anyio.move_on_after(self._tick):
                await self._wake.wait()
            self._wake = anyio.Event()
            await self._flush_due()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _flush_due(self) -> None:
        now = anyio.current_time()
        due: list[JobText] = []
        live = self._live
        for job in self._jobs.values():
            if job.lost:
                continue
            interval = live if live is not None and job.job_id in self.watched else self._seconds
            if (
                job.job_id in self._urgent
                or job.pending_len >= self._chars
                or now - job.first_pending_at >= flush_age(interval, self._tick, self._commit_seconds)
                or now - job.last_commit_at >= self._heartbeat
            ):
                due.append(job)
        urgent = self._urgent
        self._urgent = set()
        # Only the flushes asked for before this batch was taken are answered by it: a flush asked
        # for while the commit runs waits for the next batch, which carries its text.
        answered = {job.job_id: list(job.waiters) for job in due if job.job_id in urgent}
        if due and not await self._commit(due, now):
            self._urgent |= urgent  # nothing was written: owed flushes wait for the next try
            return
        for job_id, events in answered.items():
            waiting = self._jobs.get(job_id)
            for event in events:
                event.set()
                if waiting is not None and event in waiting.waiters:
                    waiting.waiters.remove(event)

    async def _commit(self, jobs: Sequence[JobText], now: float) -> bool:
        """Commit one batch; False if the store failed (the text stays pending, for the next try)."""
        batch: list[CheckpointWrite] = []
        taken: list[tuple[list[str], int, float]] = []
        for job in jobs:
            text = "".join(job.pending)
            usage = job.usage_fn() if job.usage_fn is not None else job.usage
            batch.append(CheckpointWrite(job.job_id, job.token, job.committed, text, usage, job.requests))
            taken.append((job.pending, job.pending_len, job.first_pending_at))
            job.pending, job.pending_len, job.first_pending_at = [], 0, math.inf
        statuses: list[WriteStatus] | None = None
        started = anyio.current_time()
        try:
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + self._commit_deadline
                statuses = await self._store.commit(batch, self._lease)
        except StoreError as exc:
            log.warning("checkpoint_failed", jobs=len(batch), error=str(exc))
            self._guard.failed(exc, "checkpoint")
        if statuses is None:
            for job, (pending, length, since) in zip(jobs, taken, strict=True):
                job.uncertain = True
                job.pending = pending + job.pending
                job.pending_len += length
                job.first_pending_at = min(since, job.first_pending_at)
            return False
        self._guard.ok()
        done = anyio.current_time()
        self._commit_seconds = max(done - started, 0.9 * self._commit_seconds)
        self._recorder.checkpoint_committed(done - started, len(batch))
        self.stats.flushes += 1
        worst = 0.0
        for job, write, status, (_, length, since) in zip(jobs, batch, statuses, taken, strict=True):
            self._pending_total -= length
            if status is WriteStatus.OFFSET_MISMATCH and job.uncertain:
                status = await self._reconcile(job, write)
            job.uncertain = False
            if status is WriteStatus.OK:
                job.committed += length
                job.last_commit_at = done
                self.stats.writes += 1
                self.stats.chars += length
                if length:
                    worst = max(worst, done - since)
                continue
            job.lost = True
            log.warning("lease_lost", job_id=job.job_id, status=str(status), offset=write.offset)
            job.scope.cancel()
            for event in job.waiters:
                event.set()
            job.waiters.clear()
        if self.stats.lags is not None and worst:
            self.stats.lags.append(worst)
        return True

    async def _reconcile(self, job: JobText, write: CheckpointWrite) -> WriteStatus:
        """An offset mismatch right after a commit that failed without an answer: that commit
        went through after all. If the lease is still ours, take the store's committed length and
        put back the part of this write it lacks (for the next flush); else the lease is lost."""
        try:
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + self._commit_deadline
                stored = await self._store.get(job.job_id)
        except StoreError:
            stored = None
        end = write.offset + len(write.text)
        if (
            stored is None
            or stored.lease is None
            or stored.lease.token != job.token
            or not write.offset <= stored.committed_chars <= end
        ):
            return WriteStatus.OFFSET_MISMATCH
        applied = stored.committed_chars - write.offset
        rest = write.text[applied:]
        log.info("checkpoint_reconciled", job_id=job.job_id, applied=applied, resent=len(rest))
        if rest:
            job.pending.insert(0, rest)
            job.pending_len += len(rest)
            self._pending_total += len(rest)
            job.first_pending_at = min(job.first_pending_at, anyio.current_time())
        job.committed += applied - len(write.text)  # the caller adds the whole write back
        return WriteStatus.OK
