"""Rows and statement parameters of the PostgreSQL backend, to and from :mod:`jobs.models`.

Kept apart from :mod:`jobs.postgres.store` so the store reads as transaction logic. Everything here is
pure (no I/O): the same decisions as the SQLite store's, testable without a server. Specs are
stored as the SQLite backend stores them (messages and metadata as JSON text), so a job reads
back equal on both backends; chunk text is UTF-8 ``bytea`` (see :mod:`jobs.postgres.schema`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobs.buckets import BucketState
from jobs.errors import StoreError
from jobs.models import (
    AttemptResult,
    CheckpointWrite,
    Job,
    JobSpec,
    State,
    Usage,
    WriteStatus,
    format_joins,
)
from jobs.rows import Row, attempt, job, spec_json, transition
from jobs.rules import settle

__all__ = (
    "Row",
    "enqueue_params",
    "encode_text",
    "decode_text",
    "job",
    "attempt",
    "transition",
    "CheckpointPlan",
    "plan_checkpoints",
    "apply_params",
    "settle_params",
    "bucket_params",
)


def enqueue_params(specs: Sequence[JobSpec]) -> tuple[dict[str, list[Any]], list[str]]:
    """The ENQUEUE arrays for the first spec of each id, and every id in the order given."""
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "ids",
            "messages",
            "systems",
            "models",
            "max_tokens",
            "output_budgets",
            "max_attempts",
            "priorities",
            "run_ats",
            "metadata",
            "max_costs",
            "prompt_caches",
            "modes",
        )
    }
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            continue
        seen.add(spec.id)
        messages, metadata = spec_json(spec)
        columns["ids"].append(spec.id)
        columns["messages"].append(messages)
        columns["systems"].append(spec.system)
        columns["models"].append(spec.model)
        columns["max_tokens"].append(spec.max_tokens)
        columns["output_budgets"].append(spec.output_budget)
        columns["max_attempts"].append(spec.max_attempts)
        columns["priorities"].append(spec.priority)
        columns["run_ats"].append(spec.run_at)
        columns["metadata"].append(metadata)
        columns["max_costs"].append(spec.max_cost_usd)
        columns["prompt_caches"].append(spec.prompt_cache)
        columns["modes"].append(spec.mode)
    return columns, [spec.id for spec in specs]


def encode_text(text: str) -> bytes:
    """UTF-8 for a ``bytea`` chunk; text that has no UTF-8 form (a lone surrogate) is refused."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StoreError(f"postgresql: cannot store a value: {exc}") from exc


def decode_text(data: bytes | None) -> str:
    return "" if data is None else bytes(data).decode("utf-8")


# -- statement parameters ----------------------------------------------------------------------


@dataclass(slots=True)
class CheckpointPlan:
    """What one checkpoint batch does, decided from the locked fences."""

    statuses: list[WriteStatus] = field(default_factory=list)
    chunks: list[tuple[str, int, int, bytes]] = field(default_factory=list)
    chars: dict[str, int] = field(default_factory=dict)
    #: Per job: the attempt, its latest usage, and its requests so far (None = unchanged).
    usage: dict[str, tuple[int, Usage, int | None]] = field(default_factory=dict)


def plan_checkpoints(
    writes: list[CheckpointWrite], encoded: list[bytes], fences: Mapping[str, Row]
) -> CheckpointPlan:
    """Decide each write in order, as the SQLite store does one by one: a write is refused if its
    token is not the running job's, or its offset is not the committed length so far (counting
    the writes of this batch accepted before it)."""
    plan = CheckpointPlan()
    committed = {job_id: fence["committed_chars"] for job_id, fence in fences.items()}
    for write, data in zip(writes, encoded, strict=True):
        fence = fences.get(write.job_id)
        if fence is None or fence["state"] != State.RUNNING or fence["lease_token"] != write.token:
            plan.statuses.append(WriteStatus.LEASE_LOST)
            continue
        if write.offset != committed[write.job_id]:
            plan.statuses.append(WriteStatus.OFFSET_MISMATCH)
            continue
        attempt = fence["attempts"]
        if write.text:
            plan.chunks.append((write.job_id, write.offset, attempt, data))
        committed[write.job_id] += len(write.text)
        plan.chars[write.job_id] = plan.chars.get(write.job_id, 0) + len(write.text)
        if write.usage is not None:
            # The attempt's latest usage (and request count) wins.
            plan.usage[write.job_id] = (attempt, write.usage, write.requests)
        plan.statuses.append(WriteStatus.OK)
    return plan


def apply_params(plan: CheckpointPlan, now: float, expires_at: float) -> dict[str, Any]:
    usages = [(job_id, number, usage) for job_id, (number, usage, _) in plan.usage.items()]
    return {
        "now": now,
        "expires_at": expires_at,
        "chunk_jobs": [c[0] for c in plan.chunks],
        "chunk_offsets": [c[1] for c in plan.chunks],
        "chunk_attempts": [c[2] for c in plan.chunks],
        "chunk_texts": [c[3] for c in plan.chunks],
        "usage_jobs": [u[0] for u in usages],
        "usage_numbers": [u[1] for u in usages],
        "usage_input": [u[2].input_tokens for u in usages],
        "usage_output": [u[2].output_tokens for u in usages],
        "usage_cache_creation": [u[2].cache_creation_input_tokens for u in usages],
        "usage_cache_read": [u[2].cache_read_input_tokens for u in usages],
        "usage_estimated": [u[2].estimated_output_tokens for u in usages],
        "usage_document": [u[2].document_tokens for u in usages],
        "usage_repeated": [u[2].repeated_tokens for u in usages],
        "usage_requests": [requests for _, _, requests in plan.usage.values()],
        "ids": list(plan.chars),
        "chars": list(plan.chars.values()),
    }


def settle_params(job: Job, result: AttemptResult, now: float) -> dict[str, Any]:
    """The job's next state after its attempt ends (``jobs.rules.settle``, as in every backend)."""
    next_ = settle(job, result, now)
    return {
        "id": job.id,
        "number": job.attempts,
        "now": now,
        "outcome": result.outcome.value,
        "resume_mode": result.resume_mode.value,
        "requests": result.requests,
        "error": result.error,
        "stop_reason": result.stop_reason,
        "time_to_first_token": result.time_to_first_token,
        "joins": format_joins(result.joins),
        "chars": job.committed_chars,
        "state": next_.state.value,
        "reason": next_.reason,
        "failures": next_.failures,
        "run_at": next_.run_at,
        "last_error": next_.last_error,
        "finished_at": next_.finished_at,
        **result.usage.as_dict(),
    }


def bucket_params(state: BucketState) -> dict[str, float | str]:
    return {
        "requests": state.requests,
        "input_tokens": state.input_tokens,
        "output_tokens": state.output_tokens,
        "updated_at": state.updated_at,
        "paused_until": state.paused_until,
        "pause_reason": state.pause_reason,
    }
