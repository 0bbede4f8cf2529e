"""The batch submitter: jobs of mode ``batch`` written through Message Batches, at half the price.

One submitter runs per fleet, by the store's named lease (``batch-submitter``); every ``run``
starts one beside its pool (``worker.commands.run``), and the others wait. Each step it:

1. **Collects** the batches the store knows: polls each (``retrieve``), and once it has ended
   reads its results (``results``, JSONL, unordered: matched on the stored ``custom_id``) and
   applies each to its job, then closes the batch. A batch whose jobs were all cancelled is
   cancelled at the API.
2. **Submits** a new batch: ``reserve_batch`` claims queued batch jobs (one transaction: leases
   for the batch's whole life, custom_ids, a ``batches`` row without an API id yet), then
   ``create``, then ``mark_batch_submitted`` books the API's id.

Crash safety, with SIGKILL at any point:

* before ``create``: the next submitter finds a reservation with no API id, looks for it among the
  API's batches created since (same request count, an id the store does not know), finds none, and
  releases the jobs back to the queue: nothing was sent, nothing is sent twice;
* after ``create`` but before the booking: the same look-up finds the batch and adopts it;
* while applying results: every application is idempotent (a result whose text is already
  committed is only settled), and the batch stays open until every result is applied.

A result is applied with the streaming path's own rules: the same request (``build_messages``:
prefill or continuation), the same joiner, the same output budget. ``max_tokens`` re-queues the
job for a follow-up batch round; ``errored`` goes through the failure policy
(``worker.retry.classify_batch_error``: retried by batch, or failed for an invalid request, which
would fail again); ``expired`` and ``canceled`` go back to the queue without counting a failure.

**A deadline that a batch can no longer meet** (``jobs.batches.route``: it is nearer than the batch
horizon, ``[queue] batch_horizon``) moves the job to the streaming pool instead of another batch:
``Store.settle_to_stream`` settles it and switches it in one fenced transaction, with a
``deadline_near`` history row. That is checked when the submitter reserves queued batch jobs (the
job leaves the reservation before ``create``) and whenever a result sends a job back to the queue
(errored, expired, canceled, a follow-up round after ``max_tokens``). The job keeps the text its
batch rounds wrote; the pool resumes from it by the streaming rules.

A hand-written loop rather than a library: no batch client exists for the queue's store; the SDK
already does the HTTP and the JSONL decoding.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import anyio
import structlog

from jobs.batches import DEADLINE_NEAR, OUTPUT_300K_BETA, has_output_300k, route
from jobs.errors import JobNotFoundError, LeaseLostError, StoreError
from jobs.models import (
    TRUNCATED,
    AttemptResult,
    BatchEntry,
    BatchRecord,
    CheckpointWrite,
    Claim,
    Job,
    Outcome,
    ResumeMode,
    SettleRequest,
    Usage,
    WriteStatus,
)
from jobs.prefill import supports_prefill
from jobs.store import Store
from worker.resume import Joiner, build_messages
from worker.retry import backoff_delay, classify_batch_error

__all__ = ("LEASE_NAME", "BatchSettings", "Submitter", "request_params")

log = structlog.get_logger("worker.batches")

LEASE_NAME = "batch-submitter"
#: Results applied per fenced commit (their texts in one transaction).
_APPLY_CHUNK = 500
#: Outcomes that send a job back to the queue: the moments its route is decided again.
_REQUEUED = (Outcome.RETRY, Outcome.RELEASED)


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """How the submitter gathers and polls. Defaults keep far below the API's limits
    (100,000 requests, 256 MB) and poll a batch that usually takes minutes every 30 s at most."""

    max_requests: int = 10_000
    max_bytes: int = 200 * 1024 * 1024
    #: The submitter's fleet lease; renewed every step.
    lease_seconds: float = 120.0
    #: A job's lease while it sits in a batch: the API's 24 h expiry, plus a margin.
    hold_seconds: float = 25 * 3600.0
    poll_min: float = 1.0
    poll_max: float = 30.0
    #: Backoff for ``errored`` results (``worker.retry.backoff_delay``).
    retry_base: float = 5.0
    retry_max: float = 300.0
    #: How long a batch may take (``[queue] batch_horizon``): a job whose deadline is nearer is
    #: streamed instead (``jobs.batches.route``).
    horizon: float = 86400.0
    #: Create batches with the 300K output beta when a request's model has it
    #: (``[anthropic] batch_output_300k``; ``jobs.batches.OUTPUT_300K_BETA``).
    output_300k: bool = False


def _continues(model: str) -> bool:
    return not supports_prefill(model)


def _mode(model: str, text: str) -> ResumeMode:
    if not text:
        return ResumeMode.FRESH
    return ResumeMode.CONTINUATION if _continues(model) else ResumeMode.PREFILL


def request_params(job: Job, text: str) -> tuple[dict[str, Any], ResumeMode, str]:
    """The Messages request for the job's next round, as the streaming attempt builds it; with
    its resume mode and the prefill's carry (for the joiner)."""
    spec = job.spec
    mode = _mode(spec.model, text)
    messages, carry = build_messages(spec, text, mode)
    budget_left = spec.output_budget - job.usage.output_tokens
    params: dict[str, Any] = {
        "model": spec.model,
        "max_tokens": max(1, min(spec.max_tokens, budget_left)),
        "messages": messages,
    }
    if spec.system is not None:
        params["system"] = spec.system
    return params, mode, carry


class Submitter:
    """The fleet's batch submitter. ``run`` loops until cancelled; ``step`` is one round (tests)."""

    def __init__(
        self,
        store: Store,
        client: anthropic.AsyncAnthropic,
        worker_id: str,
        settings: BatchSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.client = client
        self.worker_id = worker_id
        self.settings = settings
        #: What deadlines are compared with (epoch seconds); tests pass a fake one.
        self.clock = clock
        #: Results applied, batches submitted, jobs moved to streaming: figures for tests and the
        #: benchmark.
        self.applied = 0
        self.submitted = 0
        self.streamed = 0

    async def run(self) -> None:
        """Step until cancelled. A failed step (the API or the store unavailable) is logged and
        tried again later: it never takes the pool down, and nothing is lost (see the module)."""
        delay = self.settings.poll_min
        while True:
            try:
                busy = await self.step()
            except (anthropic.APIError, StoreError) as exc:
                log.warning("batch_step_failed", error=str(exc))
                busy = False
            except Exception as exc:  # a transport error from the results stream, or a bug:
                # logged loudly, never taking the streaming pool down with it
                log.error("batch_step_crashed", error=f"{type(exc).__name__}: {exc}")
                busy = False
            # Renewed every step: never sleep more than a third of the lease.
            longest = min(self.settings.poll_max, self.settings.lease_seconds / 3)
            delay = self.settings.poll_min if busy else min(longest, delay * 1.5)
            await anyio.sleep(delay)

    async def step(self) -> bool:
        """Collect what has ended, then submit what is queued. True if anything moved."""
        if not await self.store.acquire_lease(LEASE_NAME, self.worker_id, self.settings.lease_seconds):
            return False
        moved = False
        for record in await self.store.open_batches():
            moved = await self._advance(record) or moved
        return await self._submit() or moved

    # -- submitting ----------------------------------------------------------------------------

    async def _create(self, requests: list[Any]) -> Any:
        """Create the batch: through the beta endpoint, with the 300K output beta, when it is on
        and a request's model has it, so those requests may ask up to 300K output tokens (the
        others in the batch keep their cap); else the GA endpoint."""
        if self.settings.output_300k and any(has_output_300k(r["params"]["model"]) for r in requests):
            return await self.client.beta.messages.batches.create(requests=requests, betas=[OUTPUT_300K_BETA])
        return await self.client.messages.batches.create(requests=requests)

    async def _submit(self) -> bool:
        key = uuid.uuid4().hex
        s = self.settings
        claims = await self.store.reserve_batch(self.worker_id, key, s.max_requests, s.hold_seconds)
        if not claims:
            return False
        claims = await self._stream_near(claims)
        if not claims:  # every one of them streams: nothing to send
            await self.store.close_batch(key)
            return True
        record = {e.job_id: e for e in await self._entries(key)}
        requests: list[Any] = []
        size = 0
        for claim in claims:
            params, _, _ = request_params(claim.job, claim.text)
            item = {"custom_id": record[claim.job.id].custom_id, "params": params}
            size += len(json.dumps(item))
            if size > s.max_bytes:
                await self._release(claim.job.id, claim.token, "over the batch size limit")
                continue
            requests.append(item)
        try:
            batch = await self._create(requests)
        except anthropic.APIError as exc:
            log.warning("batch_create_failed", error=str(exc), requests=len(requests))
            await self._release_all(key, claims, f"batch create failed: {exc}")
            return False
        await self.store.mark_batch_submitted(key, batch.id)
        self.submitted += 1
        log.info("batch_submitted", batch_id=batch.id, requests=len(requests))
        return True

    async def _stream_near(self, claims: list[Claim]) -> list[Claim]:
        """Move the reserved jobs whose deadline a batch can no longer meet to the streaming pool
        (before ``create``: the reservation stops counting them); the others stay."""
        now = self.clock()
        near = {c.job.id for c in claims if self._must_stream(c.job, now)}
        if near:
            released = AttemptResult(Outcome.RELEASED, error=f"{DEADLINE_NEAR}: streamed instead of batched")
            requests = [SettleRequest(c.job.id, c.token, released) for c in claims if c.job.id in near]
            await self._to_stream(requests)
        return [c for c in claims if c.job.id not in near]

    def _must_stream(self, job: Job, now: float) -> bool:
        return route(job.spec.mode, job.spec.deadline, now, self.settings.horizon) == "stream"

    async def _to_stream(self, requests: list[SettleRequest]) -> list[Job | None]:
        horizon = self.settings.horizon
        reason = f"{DEADLINE_NEAR}: switched to stream (deadline within the {horizon:g} s batch horizon)"
        settled = await self.store.settle_to_stream(requests, reason)
        moved = [job.id for job in settled if job is not None and job.spec.mode == "stream"]
        self.streamed += len(moved)
        if moved:
            log.info("batch_jobs_streamed", reason=DEADLINE_NEAR, jobs=len(moved), first=moved[0])
        return settled

    async def _entries(self, key: str) -> tuple[BatchEntry, ...]:
        for record in await self.store.open_batches():
            if record.key == key:
                return record.entries
        return ()

    async def _release_all(self, key: str, claims: list[Claim], reason: str) -> None:
        for claim in claims:
            await self._release(claim.job.id, claim.token, reason)
        await self.store.close_batch(key)

    async def _release(self, job_id: str, token: str, reason: str, at: float | None = None) -> None:
        try:
            await self.store.settle(job_id, token, AttemptResult(Outcome.RELEASED, error=reason, retry_at=at))
        except (LeaseLostError, JobNotFoundError) as exc:  # cancelled meanwhile: nothing to give back
            log.info("batch_release_skipped", job_id=job_id, error=str(exc))

    # -- collecting ----------------------------------------------------------------------------

    async def _advance(self, record: BatchRecord) -> bool:
        if record.api_id is None:
            return await self._recover(record)
        batch = await self.client.messages.batches.retrieve(record.api_id)
        if batch.processing_status != "ended":
            if not record.entries and batch.processing_status == "in_progress":
                await self.client.messages.batches.cancel(record.api_id)
                log.info("batch_cancelled", batch_id=record.api_id, reason="every job in it was cancelled")
            return False
        entries = {e.custom_id: e for e in record.entries}
        decoder = await self.client.messages.batches.results(record.api_id)
        pending: list[tuple[BatchEntry, Any]] = []
        async for item in decoder:
            entry = entries.pop(item.custom_id, None)
            if entry is not None:  # else cancelled, or applied before a crash
                pending.append((entry, item.result))
            if len(pending) >= _APPLY_CHUNK:
                await self._apply_all(pending)
                pending = []
        await self._apply_all(pending)
        for entry in entries.values():  # no result at all: send it again
            await self._release(entry.job_id, entry.token, "no result in the batch")
        await self.store.close_batch(record.key)
        log.info("batch_collected", batch_id=record.api_id, requests=record.requests)
        return True

    async def _recover(self, record: BatchRecord) -> bool:
        """A reservation without an API id: a submitter died around ``create``. Adopt the batch
        if the API has it, else give the jobs back: never submitted twice."""
        known = {r.api_id for r in await self.store.open_batches() if r.api_id}
        async for batch in self.client.messages.batches.list(limit=100):
            if batch.created_at.timestamp() < record.created_at - 300:
                break  # newest first: older ones cannot be ours
            c = batch.request_counts
            total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
            if batch.id not in known and total == record.requests:
                await self.store.mark_batch_submitted(record.key, batch.id)
                log.info("batch_adopted", batch_id=batch.id, requests=total)
                return True
        for entry in record.entries:
            await self._release(entry.job_id, entry.token, "batch never submitted")
        await self.store.close_batch(record.key)
        return True

    async def _apply_all(self, pending: list[tuple[BatchEntry, Any]]) -> None:
        """Apply results: their texts in one fenced commit, then their settlements in one
        ``settle_many`` (a job cancelled meanwhile is refused by the fence and dropped)."""
        prepared = [(entry, await self._prepare(entry, result)) for entry, result in pending]
        writes = [write for _, (write, _, _) in prepared if write is not None]
        statuses = iter(await self.store.commit(writes, self.settings.hold_seconds))
        settles: list[SettleRequest] = []
        streams: list[SettleRequest] = []
        now = self.clock()
        for entry, (write, result, job) in prepared:
            if write is not None and (status := next(statuses)) is not WriteStatus.OK:
                log.info("batch_result_dropped", job_id=entry.job_id, status=str(status))
                continue
            request = SettleRequest(entry.job_id, entry.token, result)
            near = result.outcome in _REQUEUED and self._must_stream(job, now)
            (streams if near else settles).append(request)
        if settles:
            settled = await self.store.settle_many(settles)
            self.applied += sum(job is not None for job in settled)
        if streams:
            settled = await self._to_stream(streams)
            self.applied += sum(job is not None for job in settled)

    async def _prepare(
        self, entry: BatchEntry, result: Any
    ) -> tuple[CheckpointWrite | None, AttemptResult, Job]:
        """The write (None if nothing to append) and the settlement for one result, with the job
        as it was read (one read per result: its deadline decides where a requeued job goes)."""
        job = await self.store.get(entry.job_id)
        kind = result.type
        if kind == "succeeded":
            return *await self._prepare_message(entry, job, result.message), job
        if kind == "errored":
            error = result.error.error
            return None, self._error_result(job, str(error.type), str(error.message)), job
        # expired, canceled: not the job's fault, back to the queue for another batch
        return None, AttemptResult(Outcome.RELEASED, error=f"batch request {kind}"), job

    def _error_result(self, job: Job, error_type: str, message: str) -> AttemptResult:
        decision = classify_batch_error(error_type, message)
        outcome = Outcome.RETRY if decision.retryable else Outcome.FAILED
        s = self.settings
        delay = backoff_delay(job.failures + 1, base=s.retry_base, cap=s.retry_max)
        return AttemptResult(outcome, requests=1, error=decision.reason, retry_at=time.time() + delay)

    async def _prepare_message(
        self, entry: BatchEntry, job: Job, message: Any
    ) -> tuple[CheckpointWrite | None, AttemptResult]:
        start, committed, before = 0, "", Usage()
        if job.committed_chars or entry.attempt > 1:  # a later round, or re-applied after a crash
            attempt = (await self.store.attempts(entry.job_id))[entry.attempt - 1]
            start, before = attempt.chars_at_start, attempt.usage
            committed = await self.store.read_text(entry.job_id)
        text = committed[:start]
        _, mode, carry = request_params(job, text)
        raw = "".join(block.text for block in message.content if block.type == "text")
        stop = message.stop_reason
        joiner = Joiner(mode, text, carry, safe_commits=_continues(job.spec.model))
        out = joiner.feed(raw) + joiner.finish(complete=stop != "max_tokens")
        usage = _usage(message.usage, raw, out)
        write = None
        if job.committed_chars != start + len(out) or not out:  # else applied before a crash
            write = CheckpointWrite(entry.job_id, entry.token, start, out, usage, 1)
        joins = () if joiner.join is None else ((str(joiner.join.rule), 1),)
        # Earlier rounds' output, plus this one's (counted once, even if re-applied after a crash).
        spent = job.usage.output_tokens - before.output_tokens + usage.output_tokens
        if stop == "max_tokens" and spent < job.spec.output_budget:
            outcome, reason = Outcome.RELEASED, "max_tokens"
        elif stop == "max_tokens":
            outcome, reason = Outcome.SUCCEEDED, TRUNCATED
        elif stop == "refusal":
            outcome, reason = Outcome.FAILED, "refusal"
        else:
            outcome, reason = Outcome.SUCCEEDED, stop
        return write, AttemptResult(outcome, usage, 1, mode, stop_reason=reason, joins=joins)


def _usage(api: Any, raw: str, out: str) -> Usage:
    output = int(api.output_tokens)
    kept = output if not raw else round(output * len(out) / len(raw))
    return Usage(
        input_tokens=int(api.input_tokens),
        output_tokens=output,
        cache_creation_input_tokens=int(api.cache_creation_input_tokens or 0),
        cache_read_input_tokens=int(api.cache_read_input_tokens or 0),
        document_tokens=kept,
        repeated_tokens=output - kept,
    )
