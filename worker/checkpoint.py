"""Durable checkpoints for every running job, coalesced into one transaction per flush.

Each running job has a :class:`JobText`: its text so far and the part not yet committed. One
:class:`CheckpointWriter` task commits, in one ``Store.commit`` batch, every job whose pending text
reached ``checkpoint_chars`` or has waited ``checkpoint_seconds``, plus a pure heartbeat for jobs
whose lease is a third of the way to expiry. Hundreds of streams therefore make one transaction
per flush, not hundreds of tiny ones; and a crash loses at most about one ``checkpoint_seconds`` of
text. All writes for a job go through this one task, so chunks always commit in order.

A write refused for a lost lease marks the job lost and cancels its scope: the attempt stops at
once and never writes again.
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

__all__ = ("JobText", "CheckpointWriter", "CheckpointStats")

log = structlog.get_logger("worker.checkpoint")


class JobText:
    """The text of one running job: committed, and pending commit."""

    __slots__ = (
        "committed",
        "first_pending_at",
        "job_id",
        "last_commit_at",
        "lost",
        "parts",
        "pending",
        "pending_len",
        "requests",
        "scope",
        "token",
        "usage",
        "usage_fn",
        "waiters",
    )

    def __init__(self, job_id: str, token: str, text: str, scope: anyio.CancelScope, now: float) -> None:
        self.job_id = job_id
        self.token = token
        self.parts: list[str] = [text] if text else []
        self.committed = len(text)
        self.pending: list[str] = []
        self.pending_len = 0
        self.first_pending_at = math.inf
        self.last_commit_at = now
        self.scope = scope
        self.lost = False
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
    ) -> None:
        self._store = store
        self._chars = checkpoint_chars
        self._seconds = checkpoint_seconds
        self._lease = lease_seconds
        self._heartbeat = lease_seconds / 3
        # The writer wakes every tick; text is flushed once it would be older than
        # checkpoint_seconds by the next tick, so none waits much past checkpoint_seconds.
        self._tick = min(checkpoint_seconds, self._heartbeat) / 4
        self._jobs: dict[str, JobText] = {}
        self._urgent: set[str] = set()
        self._wake = anyio.Event()
        self._stopping = False
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
        if job.pending_len >= self._chars:
            self._wake.set()

    async def flush(self, job: JobText, usage: Usage | None = None) -> bool:
        """Commit everything pending for ``job`` now; True if it is committed, False if the lease
        was lost. Call under a shielded scope when an attempt ends."""
        if usage is not None:
            job.usage, job.usage_fn = usage, None
        if job.lost:
            return False
        done = anyio.Event()
        job.waiters.append(done)
        self._urgent.add(job.job_id)
        self._wake.set()
        await done.wait()
        return not job.lost

    def unregister(self, job: JobText) -> None:
        self._jobs.pop(job.job_id, None)
        self._urgent.discard(job.job_id)

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
        for job in self._jobs.values():
            if job.lost:
                continue
            if (
                job.job_id in self._urgent
                or job.pending_len >= self._chars
                or now - job.first_pending_at >= self._seconds - self._tick
                or now - job.last_commit_at >= self._heartbeat
            ):
                due.append(job)
        urgent = self._urgent
        self._urgent = set()
        if due and not await self._commit(due, now):
            self._urgent |= urgent  # nothing was written: owed flushes wait for the next try
            return
        for job_id in urgent:
            waiting = self._jobs.get(job_id)
            if waiting is not None:
                for event in waiting.waiters:
                    event.set()
                waiting.waiters.clear()

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
        try:
            with anyio.CancelScope(shield=True):
                statuses = await self._store.commit(batch, self._lease)
        except StoreError as exc:
            log.warning("checkpoint_failed", jobs=len(batch), error=str(exc))
            for job, (pending, length, since) in zip(jobs, taken, strict=True):
                job.pending = pending + job.pending
                job.pending_len += length
                job.first_pending_at = min(since, job.first_pending_at)
            return False
        done = anyio.current_time()
        self.stats.flushes += 1
        worst = 0.0
        for job, write, status, (_, length, since) in zip(jobs, batch, statuses, taken, strict=True):
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
