"""The worker pool: claims jobs, runs up to ``concurrency`` attempts at once, settles each.

Every task lives in a task group: the checkpoint writer, the signal watcher, the progress display
and one task per running job. Shutdown (SIGINT/SIGTERM, or ``request_stop``) stops claiming, gives
running streams ``grace_seconds`` to finish, then cancels them; each cancelled job commits its text
and releases its lease under a shielded scope, so another worker resumes it at once. A second
signal exits immediately: leases then expire and other workers resume from the last checkpoint.

A job's failure is contained: ``worker.policy`` judges it and the job is failed (its spec is
wrong), retried (this try went wrong) or released uncharged (the account or the store is at
fault); the pool goes on. A lost lease (another worker took the job, or a user cancelled it) stops
that attempt without a write.

Pauses: a 429/529 pauses this worker's claims (the fleet limiter pauses the fleet) and is charged
to a patience measured in time, not to the job; a store outage pauses claims until the store
answers (``worker.outage``), then every lease is refreshed before the next claim; an
authentication, billing or permission error is confirmed with one cheap request, then the run
stops with :class:`~worker.errors.AccountError`, every job left as it was. Every shielded step
(settling a job, the last flushes) has a deadline, so shutdown never hangs on a dead store.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field

import anthropic
import anyio
import structlog
from anyio.abc import TaskGroup

from jobs.errors import LeaseLostError, PoolError, StoreError
from jobs.models import AttemptResult, Claim, Job, Outcome, State, is_truncated
from jobs.store import Store
from worker.admission import Limiter
from worker.attempt import Attempt, AttemptSettings
from worker.checkpoint import CheckpointWriter, JobText
from worker.class_limits import ClassLimiter
from worker.daily_cap import DailyCap
from worker.economy import Economy
from worker.errors import OutageLimitError
from worker.lifecycle import ignore_request_warnings, log_deprecated
from worker.outage import StoreGuard
from worker.pauses import Pauses
from worker.recorder import Recorder

__all__ = ("PoolSettings", "PoolStats", "PoolProgress", "Pool", "new_worker_id")

log = structlog.get_logger("worker.pool")

#: Longest wait for a rate-limit class to have room before the classes are looked at again.
_CLASS_WAIT_STEP = 1.0

#: Outcomes that hand a failed attempt's job back to the queue, to be tried again.
_REQUEUED = frozenset({Outcome.RETRY, Outcome.RELEASED})


def new_worker_id() -> str:
    """host:pid:random, so a lease's owner says where the worker ran."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    concurrency: int = 8
    #: Short, so a killed worker's jobs resume within about this long (heartbeats every third).
    lease_seconds: float = 10.0
    checkpoint_chars: int = 2000
    checkpoint_seconds: float = 1.0
    grace_seconds: float = 10.0
    poll_seconds: float = 1.0
    #: The size of a typical request, used to wait for rate-limit room before claiming.
    typical_max_tokens: int = 8192
    #: How long 429/529s may go on before they start to use up the jobs' attempts.
    overload_patience: float = 1800.0
    #: How long the store may stay unavailable before the worker gives up (exits non-zero).
    outage_limit: float = 300.0
    #: The longest any shielded shutdown step (settle, final flush) may take.
    shutdown_deadline: float = 5.0
    #: Pending (uncommitted) text kept in memory during an outage, over all jobs.
    max_pending_chars: int = 50_000_000
    #: Checkpoint interval for jobs watched live through this process's server (None: off).
    live_checkpoint_seconds: float | None = None
    attempt: AttemptSettings = field(default_factory=AttemptSettings)


@dataclass(slots=True)
class PoolStats:
    """Counters for the progress display, the summary and the benchmarks."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    resumes: int = 0
    released: int = 0
    #: Succeeded, but cut off by their output_budget.
    truncated: int = 0
    lease_lost: int = 0
    output_tokens: int = 0
    #: What this run spent (USD), for jobs whose model has a price.
    cost_usd: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    #: The signal that stopped the pool (SIGINT, SIGTERM), or None if it was not interrupted.
    interrupted_by: str | None = None


@dataclass(frozen=True, slots=True)
class PoolProgress:
    """What a progress display reads of a running pool: one snapshot, taken by :meth:`Pool.progress`."""

    running: int
    #: Output tokens of finished requests, plus an estimate (≈ 4 characters a token) for the
    #: attempts still streaming, whose usage arrives only when they end.
    output_tokens: int
    retries: int
    resumes: int
    #: True while the job store is unreachable (claims wait for it to come back).
    store_down: bool


class Pool:
    def __init__(
        self,
        store: Store,
        client: anthropic.AsyncAnthropic,
        settings: PoolSettings,
        *,
        worker_id: str | None = None,
        limiter: Limiter | ClassLimiter | None = None,
        record_lags: bool = False,
        guard: StoreGuard | None = None,
        economy: Economy | None = None,
        daily_cap: DailyCap | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.worker_id = worker_id or new_worker_id()
        self.limiter = limiter
        #: Prices, caching knowledge and the run's budget, shared by this pool's attempts.
        self.economy = economy or Economy()
        self.daily_cap = daily_cap
        #: This process's metrics (``worker.metrics``); the default records nothing.
        self.recorder = recorder or Recorder()
        self.stats = PoolStats()
        self.guard = guard or StoreGuard(limit=settings.outage_limit)
        self.writer = CheckpointWriter(
            store,
            checkpoint_chars=settings.checkpoint_chars,
            checkpoint_seconds=settings.checkpoint_seconds,
            lease_seconds=settings.lease_seconds,
            record_lags=record_lags,
            guard=self.guard,
            max_pending_chars=settings.max_pending_chars,
            live_seconds=settings.live_checkpoint_seconds,
            recorder=self.recorder,
        )
        self._running: dict[str, anyio.CancelScope] = {}
        self._no_prefill: set[str] = set()
        self._stopping = False
        self._changed = anyio.Event()
        self._claim_wait = anyio.CancelScope()
        self._grace = settings.grace_seconds
        self._settling: set[anyio.CancelScope] = set()
        self._outages_flushed = 0
        self.pauses = Pauses(
            client, settings.attempt, overload_patience=settings.overload_patience, halt=self._halt
        )
        #: Set when the run must end in error (account refused, outage limit passed).
        self.fatal: PoolError | None = None
        #: True when a signal stopped the run.
        self.interrupted = False

    @property
    def running(self) -> int:
        return len(self._running)

    def progress(self) -> PoolProgress:
        """The figures a live progress line shows, without reaching into the pool's parts."""
        return PoolProgress(
            running=len(self._running),
            output_tokens=self.stats.output_tokens + self.writer.streaming_chars() // 4,
            retries=self.stats.retries,
            resumes=self.stats.resumes,
            store_down=self.guard.down,
        )

    def request_stop(self, *, grace: float | None = None) -> None:
        """Stop claiming; running jobs get the grace period, then are checkpointed and released."""
        if grace is not None:
            self._grace = min(self._grace, grace)
        if not self._stopping:
            log.info("pool_stopping", running=len(self._running), grace_seconds=self._grace)
        self._stopping = True
        self._changed.set()
        self._claim_wait.cancel()
        deadline = anyio.current_time() + self._grace + self.settings.shutdown_deadline
        for scope in self._settling:
            scope.deadline = min(scope.deadline, deadline)

    def _halt(self, error: PoolError) -> None:
        """End the run in error: stop now, release what runs (no grace: it would fail too)."""
        if self.fatal is None:
            self.fatal = error
            log.error("pool_halting", error=str(error))
        self.request_stop(grace=0.0)

    async def run(self, *, until_empty: bool = False, handle_signals: bool = True) -> PoolStats:
        """Run until stopped (or, with ``until_empty``, until nothing is queued or running)."""
        log.info("pool_started", worker=self.worker_id, concurrency=self.settings.concurrency)
        ignore_request_warnings()
        try:
            log_deprecated(await self.store.model_counts(), where="worker_start")
        except StoreError as exc:
            log.warning("model_check_skipped", error=str(exc))
        async with anyio.create_task_group() as outer:
            outer.start_soon(self.writer.run)
            try:
                async with anyio.create_task_group() as side:
                    if handle_signals:
                        side.start_soon(self._watch_signals)
                    async with anyio.create_task_group() as jobs:
                        await self._claim_loop(jobs, until_empty)
                        await self._drain()
                    side.cancel_scope.cancel()
            finally:
                self.writer.stop()
        log.info(
            "pool_stopped",
            succeeded=self.stats.succeeded,
            failed=self.stats.failed,
            retries=self.stats.retries,
            released=self.stats.released,
            spared=self.pauses.spared,
            unsaved_chars=self.writer.stats.unsaved_chars,
        )
        if self.fatal is not None:
            raise self.fatal
        return self.stats

    async def _claim_loop(self, jobs: TaskGroup, until_empty: bool) -> None:
        settings = self.settings
        while not self._stopping:
            self._changed = anyio.Event()
            free = settings.concurrency - len(self._running)
            if free > 0 and self.limiter is not None and self.limiter.limited:
                free = 1  # one at a time, each after its room is there: waiting jobs stay queued
            claims: list[Claim] = []
            with anyio.CancelScope() as self._claim_wait:
                claims = await self._claim(free, until_empty)
            if self._claim_wait.cancel_called:
                break  # a stop was requested while waiting
            for claim in claims:
                self._running[claim.job.id] = anyio.CancelScope()
                jobs.start_soon(self._run_job, claim)
            if until_empty and not claims and not self._running and await self._store_is_empty():
                return
            if claims and len(claims) == free and len(self._running) < settings.concurrency:
                continue  # a full batch (one at a time under rate limits) and slots left: claim again
            await self._idle_wait()

    async def _claim(self, free: int, until_empty: bool) -> list[Claim]:
        """Claim up to ``free`` jobs once nothing forbids it: an overload pause, a store outage, or
        (under rate limits) no room for one more request. [] when the outage limit is passed."""
        if free <= 0:
            return []
        classes = self.limiter if isinstance(self.limiter, ClassLimiter) else None
        if classes is None:
            await self.pauses.wait_out_weather()
        try:
            if self.guard.down and self._running:
                await self.guard.wait_up()  # the writer's retries will see the store come back
            if self.guard.outages != self._outages_flushed:
                # Back from an outage: refresh our leases before a claim could take them over.
                self._outages_flushed = self.guard.outages
                await self.writer.flush_all()
            models: list[str] | None = None
            if classes is not None:
                models = await self._models_with_room(classes)
            elif (single := self._limiter_for(None)) is not None and single.limited:
                await self.guard.call(
                    "wait_for_room", single.wait_for_room, 256, self.settings.typical_max_tokens
                )
            if await self._daily_cap_reached():
                if until_empty:
                    self.request_stop()
                return []  # claim again tomorrow (UTC); running jobs carry on
            return await self.guard.call(
                "claim", self.store.claim, self.worker_id, self.settings.lease_seconds, free, models
            )
        except StoreError as exc:
            self._halt(
                OutageLimitError(
                    f"the job store was unavailable for over {self.guard.limit:g} s "
                    f"([worker] outage_limit): {exc}"
                )
            )
            return []

    async def _models_with_room(self, classes: ClassLimiter) -> list[str] | None:
        """The models (of jobs still to run) whose rate-limit class has room for one more request
        and is not paused; waits while none has. None: no jobs to run, claim any."""
        while not self._stopping:
            models = list(await self.guard.call("model_counts", self.store.model_counts))
            if not models:
                return None
            rooms = await classes.rooms(models, 256, self.settings.typical_max_tokens)
            waits = {name: max(wait, self.pauses.paused_for(name)) for name, wait in rooms.items()}
            if ready := {name for name, wait in waits.items() if wait <= 0}:
                return [model for model in models if classes.class_of(model) in ready]
            await anyio.sleep(min(min(waits.values()), _CLASS_WAIT_STEP))
        return []

    def _weather_key(self, claim: Claim) -> str:
        """Whose overload spell an attempt belongs to: its rate-limit class, or the pool's."""
        if isinstance(self.limiter, ClassLimiter):
            return self.limiter.class_of(claim.job.spec.model)
        return ""

    def _limiter_for(self, claim: Claim | None) -> Limiter | None:
        """The limiter of ``claim``'s model class; without a claim, the pool's single limiter (None
        under per-class limits, which admit by class before the claim)."""
        if isinstance(self.limiter, ClassLimiter):
            return None if claim is None else self.limiter.for_model(claim.job.spec.model)
        return self.limiter

    async def _daily_cap_reached(self) -> bool:
        if self.daily_cap is None:
            return False
        try:
            return await self.daily_cap.reached()
        except StoreError as exc:
            log.warning("daily_cap_check_failed", error=str(exc))
            return True  # unknown: do not start new spending

    async def _idle_wait(self) -> None:
        """Until one of our jobs ends, new work is notified (PostgreSQL LISTEN), or poll_seconds
        pass (jobs that become due by time, or retries, are found by polling)."""
        changed = self._changed
        with anyio.move_on_after(self.settings.poll_seconds):
            async with anyio.create_task_group() as tg:

                async def announced() -> None:
                    try:
                        await self.store.wait_for_jobs(self.settings.poll_seconds)
                    except StoreError as exc:
                        log.warning("wait_for_jobs_failed", error=str(exc))
                        return  # the event and the timeout still end the wait
                    tg.cancel_scope.cancel()

                tg.start_soon(announced)
                await changed.wait()
                tg.cancel_scope.cancel()

    async def _store_is_empty(self) -> bool:
        try:
            counts = await self.guard.call("counts", self.store.counts)
        except StoreError:
            return False  # the claim loop halts on the outage limit at its next claim
        return counts[State.QUEUED] == 0 and counts[State.RUNNING] == 0

    async def _drain(self) -> None:
        """After a stop: wait out the grace period, then cancel what still runs."""
        if not self._running:
            return
        with anyio.move_on_after(self._grace):
            while self._running:
                self._changed = anyio.Event()
                await self._changed.wait()
        for scope in self._running.values():
            scope.cancel()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if self._stopping and self.interrupted:
                    log.warning("pool_killed", signal=signal.Signals(signum).name)
                    os._exit(130)
                log.info("signal_received", signal=signal.Signals(signum).name)
                self.stats.interrupted_by = signal.Signals(signum).name
                self.interrupted = True
                self.request_stop()

    async def _run_job(self, claim: Claim) -> None:
        job_id = claim.job.id
        scope = self._running[job_id]
        with structlog.contextvars.bound_contextvars(job_id=job_id, attempt=claim.attempt):
            text = self.writer.register(job_id, claim.token, claim.text, scope)
            attempt = Attempt(
                claim,
                text,
                client=self.client,
                writer=self.writer,
                settings=self.settings.attempt,
                no_prefill=self._no_prefill,
                limiter=self._limiter_for(claim),
                economy=self.economy,
                recorder=self.recorder,
                store=self.store,
            )
            self.stats.claimed += 1
            if claim.text:
                self.stats.resumes += 1
            log.info("job_claimed", committed_chars=len(claim.text), model=claim.job.spec.model)
            started = time.monotonic()
            result: AttemptResult | None = None
            try:
                with scope:
                    result = await attempt.run()
            finally:
                with anyio.CancelScope(shield=True) as shield:
                    shield.deadline = self._settle_deadline()
                    self._settling.add(shield)
                    try:
                        if result is None:
                            why = "store unavailable: text held" if text.held else "worker shutting down"
                            result = attempt.result(Outcome.RELEASED, error=why)
                        result = await self.pauses.apply(attempt.verdict, result, self._weather_key(claim))
                        if attempt.verdict is not None and result.outcome in _REQUEUED:
                            self.recorder.retried(attempt.verdict.kind)
                        await self._settle(claim, text, result, time.monotonic() - started)
                    finally:
                        self._settling.discard(shield)
                if shield.cancelled_caught:
                    log.error("settle_timed_out", note="the lease will expire and the job resume")
                self.writer.unregister(text)
                del self._running[job_id]
                self._changed.set()

    def _settle_deadline(self) -> float:
        """Settling may wait out an outage while running; once stopping, only the shutdown bound."""
        bound = self.settings.shutdown_deadline
        if not self._stopping:
            bound += self.settings.outage_limit
        return anyio.current_time() + bound

    async def _settle(self, claim: Claim, text: JobText, result: AttemptResult, elapsed: float) -> None:
        """Commit the last text, then record the attempt's end. Shielded by the caller."""
        if not await self.writer.flush(text, result.usage) or text.lost:
            self.stats.lease_lost += 1
            self.recorder.lease_lost()
            log.warning("job_lease_lost", note="another worker or a cancel owns the job now; no write made")
            return
        try:
            job = await self.guard.call("settle", self.store.settle, claim.job.id, claim.token, result)
        except LeaseLostError:
            self.stats.lease_lost += 1
            self.recorder.lease_lost()
            log.warning("job_lease_lost", note="lost before settling")
            return
        except StoreError as exc:
            log.error("settle_failed", error=str(exc), note="the lease will expire and the job resume")
            return
        await self._record_spend(claim, result)
        cost = self.economy.prices.cost(claim.job.spec.model, job.usage, claim.job.spec.prompt_cache)
        self._log_outcome(job, result, _job_summary(job, result, text.length(), cost, elapsed))

    async def _record_spend(self, claim: Claim, result: AttemptResult) -> None:
        """The attempt's tokens and cost: into the run's stats, the daily cap, and the run budget
        (which stops the pool once it is spent)."""
        self.stats.output_tokens += result.usage.output_tokens
        self.stats.cost_usd = self.economy.budget.spent_usd
        attempt_cost = self.economy.prices.cost(
            claim.job.spec.model, result.usage, claim.job.spec.prompt_cache
        )
        if self.daily_cap is not None and attempt_cost:
            try:
                await self.daily_cap.add(attempt_cost)
            except StoreError as exc:
                log.warning("daily_cap_add_failed", error=str(exc))
        if self.economy.budget.exhausted and not self._stopping:
            log.warning("run_budget_reached", spent_usd=round(self.economy.budget.spent_usd, 6))
            self.request_stop()

    def _log_outcome(self, job: Job, result: AttemptResult, summary: dict[str, object]) -> None:
        """The job's one summary line, named by what happened to it, and the run's counts."""
        if job.state is State.SUCCEEDED and is_truncated(result.stop_reason):
            self.stats.succeeded += 1
            self.stats.truncated += 1
            log.warning("job_succeeded", truncated=True, **summary)
        elif job.state is State.SUCCEEDED:
            self.stats.succeeded += 1
            log.info("job_succeeded", **summary)
        elif job.state is State.FAILED:
            self.stats.failed += 1
            log.warning("job_failed", error=job.last_error, **summary)
        elif result.outcome is Outcome.RELEASED:
            self.stats.released += 1
            log.info("job_released", **summary)
        else:
            self.stats.retries += 1
            log.info("job_retry_scheduled", error=result.error, **summary)


def _job_summary(
    job: Job, result: AttemptResult, chars: int, cost: float | None, elapsed: float
) -> dict[str, object]:
    """The fields of a job's summary line after an attempt: its state, text, usage, cost and pace."""
    usage = result.usage
    return {
        "state": str(job.state),
        "attempt_outcome": str(result.outcome),
        "chars": chars,
        "attempts": job.attempts,
        "requests": result.requests,
        "resume_mode": str(result.resume_mode),
        "joins": dict(result.joins),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_input_tokens,
        "cache_write_tokens": usage.cache_creation_input_tokens,
        "wasted_output_tokens": usage.wasted_output_tokens,
        "job_cost_usd": None if cost is None else round(cost, 6),
        "stop_reason": result.stop_reason,
        "seconds": round(elapsed, 3),
        "ttft": None if result.time_to_first_token is None else round(result.time_to_first_token, 3),
        "tokens_per_s": round(usage.output_tokens / elapsed, 1) if elapsed > 0 else None,
    }
