"""Stored rows to and from :mod:`jobs.models`, shared by every backend.

Both backends store a job the same way (its messages and metadata as JSON text, times as epoch
seconds, usage in one column per ``Usage`` field), so one set of converters reads rows from either: a
``sqlite3.Row`` or a psycopg ``dict_row`` both answer ``row["column"]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

from jobs.blocks import content_from_json, content_json
from jobs.buckets import BucketState
from jobs.errors import InvalidJobError
from jobs.models import (
    USAGE_FIELDS,
    AttemptRecord,
    BatchEntry,
    BatchRecord,
    FleetView,
    Job,
    JobSpec,
    Lease,
    Message,
    MinuteStats,
    Outcome,
    Progress,
    ResumeMode,
    State,
    Thinking,
    Totals,
    Transition,
    Usage,
    WorkerSeen,
    parse_joins,
)
from jobs.options import dump_messages, load_messages, options_dict

__all__ = (
    "thinking",
    "Row",
    "USAGE_FIELDS",
    "spec_json",
    "spec_params",
    "usage",
    "job",
    "attempt",
    "transition",
    "bucket_state",
    "progress",
    "totals",
    "texts_from",
)


class Row(Protocol):
    """A database row read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


#: One encoder for every job's metadata (``json.dumps`` with arguments builds one per call).
_METADATA = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def spec_json(spec: JobSpec) -> tuple[str, str]:
    """The spec's messages and metadata as stored (JSON text). Metadata that JSON cannot carry is
    the user's mistake, reported with the job's id."""
    try:
        metadata = _METADATA.encode(dict(spec.metadata)) if spec.metadata else "{}"
    except (TypeError, ValueError) as exc:
        raise InvalidJobError(f"job {spec.id!r}: metadata is not JSON-serialisable ({exc})") from None
    messages = [{"role": m.role, "content": content_json(m.content)} for m in spec.messages]
    return dump_messages(messages, options_dict(spec)), metadata


def spec_params(spec: JobSpec) -> dict[str, Any]:
    """The spec's columns, named as both backends' statements name their parameters."""
    messages, metadata = spec_json(spec)
    return {
        "id": spec.id,
        "messages": messages,
        "system": spec.system,
        "model": spec.model,
        "max_tokens": spec.max_tokens,
        "output_budget": spec.output_budget,
        "max_attempts": spec.max_attempts,
        "priority": spec.priority,
        "requested_run_at": spec.run_at,
        "metadata": metadata,
        "max_cost_usd": spec.max_cost_usd,
        "prompt_cache": spec.prompt_cache,
        "mode": spec.mode,
    }


def usage(row: Row) -> Usage:
    return Usage.from_dict({name: row[name] for name in USAGE_FIELDS})


def job(row: Row) -> Job:
    messages, options = load_messages(row["messages"])
    spec = JobSpec(
        id=row["id"],
        messages=tuple(Message(m["role"], content_from_json(m["content"])) for m in messages),
        model=row["model"],
        max_tokens=row["max_tokens"],
        output_budget=row["output_budget"],
        max_attempts=row["max_attempts"],
        system=row["system"],
        priority=row["priority"],
        run_at=row["requested_run_at"],
        metadata=json.loads(row["metadata"]),
        max_cost_usd=row["max_cost_usd"],
        prompt_cache=row["prompt_cache"],
        mode=row["mode"],
        **options,
    )
    lease = None
    if row["lease_token"] is not None:
        lease = Lease(row["lease_owner"], row["lease_token"], row["lease_expires_at"])
    return Job(
        spec=spec,
        state=State(row["state"]),
        attempts=row["attempts"],
        failures=row["failures"],
        committed_chars=row["committed_chars"],
        usage=usage(row),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        lease=lease,
        last_error=row["last_error"],
        stop_reason=row["stop_reason"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def attempt(row: Row) -> AttemptRecord:
    return AttemptRecord(
        job_id=row["job_id"],
        number=row["number"],
        worker=row["worker"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        outcome=None if row["outcome"] is None else Outcome(row["outcome"]),
        resume_mode=None if row["resume_mode"] is None else ResumeMode(row["resume_mode"]),
        usage=usage(row),
        requests=row["requests"],
        chars_at_start=row["chars_at_start"],
        chars_at_end=row["chars_now"],
        stop_reason=row["stop_reason"],
        error=row["error"],
        time_to_first_token=row["time_to_first_token"],
        joins=parse_joins(row["joins"]),
    )


def transition(row: Row) -> Transition:
    return Transition(
        job_id=row["job_id"],
        at=row["at"],
        from_state=None if row["from_state"] is None else State(row["from_state"]),
        to_state=State(row["to_state"]),
        reason=row["reason"],
        attempt=row["attempt"],
    )


def thinking(row: Row) -> Thinking:
    return Thinking(
        attempt=int(row["attempt"]),
        request=int(row["request"]),
        text=str(row["text"]),
        chars=int(row["chars"]),
        created_at=float(row["created_at"]),
    )


def bucket_state(row: Row) -> BucketState:
    return BucketState(
        row["requests"],
        row["input_tokens"],
        row["output_tokens"],
        row["updated_at"],
        row["paused_until"],
        row["pause_reason"],
    )


def totals(row: Row) -> Totals:
    return Totals(
        State(row["state"]),
        str(row["model"]),
        str(row["prompt_cache"]),
        int(row["jobs"]),
        int(row["committed_chars"]),
        Usage.from_dict({name: row[name] for name in USAGE_FIELDS}),
        int(row["wasted_output_tokens"]),
        str(row["mode"]),
    )


def progress(row: Row) -> Progress:
    return Progress(str(row["id"]), State(row["state"]), int(row["attempts"]), int(row["committed_chars"]))


def texts_from(found: list[Any], decode: Any = None) -> dict[str, str]:
    """Group chunk rows (job_id, char_offset, text, wanted; ordered by job and offset) into each
    job's text from its wanted offset. ``decode`` turns a stored text into ``str`` (PostgreSQL
    keeps UTF-8 bytes)."""
    parts: dict[str, list[Any]] = {}
    starts: dict[str, tuple[int, int]] = {}
    for row in found:
        job_id = str(row["job_id"])
        if job_id not in parts:
            parts[job_id] = []
            starts[job_id] = (int(row["char_offset"]), int(row["wanted"]))
        parts[job_id].append(row["text"])
    texts: dict[str, str] = {}
    for job_id, pieces in parts.items():
        first, wanted = starts[job_id]
        text = decode(pieces) if decode is not None else "".join(pieces)
        text = text[max(0, wanted - first) :]
        if text:
            texts[job_id] = text
    return texts


def batch(row: Row, entries: list[Any]) -> BatchRecord:
    """A ``batches`` row with its jobs still running under it (``id, custom_id, lease_token, attempts``)."""
    return BatchRecord(
        key=str(row["key"]),
        api_id=row["api_id"],
        created_at=float(row["created_at"]),
        requests=int(row["requests"]),
        entries=tuple(
            BatchEntry(str(e["id"]), str(e["custom_id"]), str(e["lease_token"]), int(e["attempts"]))
            for e in entries
        ),
    )


def fleet_view(
    now: float, running: Iterable[Row], recent: Iterable[Row], buckets: Iterable[Row], minutes: Iterable[Row]
) -> FleetView:
    """The fleet view from its four reads: workers with leases, workers with recent attempts (shown
    with no running job), every bucket row, and attempts per minute and outcome."""
    seen: dict[str, WorkerSeen] = {}
    for row in running:
        name = str(row["worker"])
        seen[name] = WorkerSeen(name, int(row["running"]), float(row["last_seen"]))
    for row in recent:
        name, last = str(row["worker"]), float(row["last_seen"])
        old = seen.get(name)
        seen[name] = WorkerSeen(name, old.running if old else 0, max(last, old.last_seen if old else last))
    return FleetView(
        now=now,
        workers=tuple(sorted(seen.values(), key=lambda w: w.worker)),
        buckets={str(row["key"]): bucket_state(row) for row in buckets},
        minutes=tuple(
            MinuteStats(
                float(r["minute"]), str(r["outcome"]), int(r["attempts"]), int(r["output_tokens"] or 0)
            )
            for r in minutes
        ),
    )
