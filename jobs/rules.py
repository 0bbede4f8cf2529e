"""Decisions every backend makes the same way, kept in one place. Pure.

The backends differ in how they lock and write; what a job becomes after an attempt must not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from jobs.errors import JobStateError
from jobs.models import (
    REVISABLE_FIELDS,
    TERMINAL_STATES,
    AttemptResult,
    Job,
    JobQuery,
    JobSpec,
    Outcome,
    SettleRequest,
    State,
    Totals,
)

__all__ = (
    "bound_thinking",
    "Settlement",
    "settle",
    "expire_lease",
    "check_outcomes",
    "fenced_settles",
    "check_replaceable",
    "check_retryable",
    "retry_reason",
    "check_deletable",
    "PRUNE_BATCH",
    "prune_states",
    "counts",
    "model_counts",
)


@dataclass(frozen=True, slots=True)
class Settlement:
    """A job's next state after its running attempt ends."""

    state: State
    #: Why, for the job's history.
    reason: str
    failures: int
    #: When it is claimable again (for a re-queued job).
    run_at: float
    finished_at: float | None
    last_error: str | None


def settle(job: Job, result: AttemptResult, now: float) -> Settlement:
    """SUCCEEDED finishes the job; RELEASED re-queues it without counting a failure (at
    ``retry_at`` when given: an overload pause or a store outage); FAILED fails it; RETRY counts a
    failure and re-queues it at ``retry_at``, unless the failures reach ``max_attempts``, which
    fails it (the dead-letter)."""
    if result.outcome == Outcome.SUCCEEDED:
        # An earlier attempt's error stays in the attempts' history, not on a good document.
        return Settlement(State.SUCCEEDED, "succeeded", job.failures, now, now, None)
    if result.outcome == Outcome.RELEASED:
        reason = f"released by the worker ({result.error or 'shutting down'})"
        run_at = result.retry_at if result.retry_at is not None else now
        return Settlement(State.QUEUED, reason, job.failures, run_at, None, job.last_error)
    if result.outcome == Outcome.FAILED:
        return Settlement(State.FAILED, f"failed: {result.error}", job.failures, now, now, result.error)
    failures = job.failures + 1
    if failures >= job.spec.max_attempts:
        reason = f"attempts exhausted: {result.error}"
        return Settlement(State.FAILED, reason, failures, now, now, result.error)
    run_at = result.retry_at if result.retry_at is not None else now
    return Settlement(State.QUEUED, f"retry: {result.error}", failures, run_at, None, result.error)


def expire_lease(job: Job, now: float) -> Settlement:
    """A running job whose lease expired (its worker stopped heartbeating): the attempt counts as
    a failure, and the job goes back to the queue at once, or fails when that failure reaches
    ``max_attempts``. SQLite applies this; PostgreSQL's one-statement claim
    (``jobs.postgres.sql.CLAIM``) writes the same predicate and texts in SQL, and the contract
    suite checks that both backends agree with this function."""
    owner = job.lease.owner if job.lease is not None else "?"
    error = f"lease expired (worker {owner} stopped heartbeating)"
    failures = job.failures + 1
    if failures >= job.spec.max_attempts:
        return Settlement(State.FAILED, "attempts exhausted: lease expired", failures, now, now, error)
    return Settlement(State.QUEUED, "lease expired", failures, now, None, error)  # claimable at once


#: The outcomes a worker settles an attempt with (the others are recorded by the store itself).
SETTLE_OUTCOMES = frozenset({Outcome.SUCCEEDED, Outcome.RETRY, Outcome.FAILED, Outcome.RELEASED})


def check_outcomes(results: Iterable[AttemptResult]) -> None:
    """Raises ``ValueError`` for an outcome ``settle`` does not take, before anything is written."""
    for result in results:
        if result.outcome not in SETTLE_OUTCOMES:
            raise ValueError(f"settle takes succeeded, retry, failed or released, not {result.outcome}")


def fenced_settles(requests: Sequence[SettleRequest], current: Mapping[str, Job]) -> list[int]:
    """Which of a batch's settles apply (their indexes, in order): the job exists, is running
    under the request's token, and was not settled by an earlier request of the same batch."""
    accepted: list[int] = []
    seen: set[str] = set()
    for i, request in enumerate(requests):
        job = current.get(request.job_id)
        if job is None or request.job_id in seen:
            continue
        if job.state == State.RUNNING and job.lease is not None and job.lease.token == request.token:
            accepted.append(i)
            seen.add(request.job_id)
    return accepted


def check_retryable(job: Job, revised: JobSpec | None) -> None:
    """Only a failed or cancelled job is retried, and a revised spec must be that job's.
    Raises ``JobStateError``."""
    if job.state not in (State.FAILED, State.CANCELLED):
        raise JobStateError(f"job {job.id!r} is {job.state}: only failed or cancelled jobs can be retried")
    if revised is not None and revised.id != job.id:
        raise JobStateError(f"job {job.id!r}: the revised spec is for job {revised.id!r}")


def retry_reason(old: JobSpec, revised: JobSpec | None) -> str:
    """The history's reason for a retry: which fields an operator changed, if any."""
    if revised is None:
        return "retried by an operator"
    changed = [
        name if name == "metadata" else f"{name} {getattr(old, name)!r} -> {getattr(revised, name)!r}"
        for name in REVISABLE_FIELDS
        if getattr(old, name) != getattr(revised, name)
    ]
    return "retried by an operator" + (f" with {'; '.join(changed)}" if changed else "")


def check_replaceable(job: Job) -> None:
    """Only a queued job that never started may get a new spec: once an attempt has run, its
    text and usage belong to the old spec. Raises ``JobStateError``."""
    if job.state != State.QUEUED or job.attempts:
        started = f"{job.state}, {job.attempts} attempt(s)" if job.attempts else str(job.state)
        raise JobStateError(
            f"job {job.id!r} has started ({started}): only a queued job that never ran can be replaced"
        )


def check_deletable(job: Job) -> None:
    """Only a finished job (succeeded, failed or cancelled) may be deleted: a queued job would
    vanish from under a claim, a running one from under its worker. Raises ``JobStateError``."""
    if job.state in (State.QUEUED, State.RUNNING):
        raise JobStateError(
            f"job {job.id!r} is {job.state}: only succeeded, failed or cancelled jobs can be deleted "
            "(cancel it first)"
        )


#: Jobs deleted per transaction by ``Store.prune``: large enough that a million jobs take a
#: thousand transactions, small enough that no transaction holds the write lock for long.
PRUNE_BATCH = 1000


def prune_states(states: Iterable[State | str] | None) -> tuple[State, ...]:
    """The states ``Store.prune`` may delete, in a fixed order: every finished state (succeeded,
    failed, cancelled) when ``states`` is None, else those named, as ``check_deletable`` allows.
    Raises ``JobStateError`` naming a queued, running or unknown state, before anything is read."""
    if states is None:
        return tuple(s for s in State if s in TERMINAL_STATES)
    wanted: set[State] = set()
    for given in states:
        try:
            state = State(given)
        except ValueError:
            raise JobStateError(f"prune: unknown state {given!r}") from None
        if state not in TERMINAL_STATES:
            raise JobStateError(
                f"prune: {state} jobs are never pruned: only succeeded, failed or cancelled ones"
            )
        wanted.add(state)
    if not wanted:
        raise JobStateError("prune: no state given")
    return tuple(s for s in State if s in wanted)


def counts(totals: Iterable[Totals]) -> dict[State, int]:
    """Jobs per state (every state present, zero included) from the aggregate rows."""
    found = dict.fromkeys(State, 0)
    for row in totals:
        found[row.state] += row.jobs
    return found


def model_counts(totals: Iterable[Totals]) -> dict[str, int]:
    """Jobs still to run (queued or running) per model, sorted by model."""
    found: dict[str, int] = {}
    for row in totals:
        if row.state in (State.QUEUED, State.RUNNING) and row.jobs:
            found[row.model] = found.get(row.model, 0) + row.jobs
    return dict(sorted(found.items()))


def bound_thinking(text: str, kept_so_far: int, max_chars: int) -> str:
    """The part of a request's thinking a job keeps, having kept ``kept_so_far`` characters:
    the first part, up to ``max_chars`` for the whole job (the rest is counted, not kept)."""
    return text[: max(0, max_chars - kept_so_far)]


def find_jobs_statement(query: JobQuery) -> tuple[str, dict[str, object]]:
    """The name of the ``FIND_JOBS*`` statement for ``query`` (the same in both backends' SQL
    modules) and its parameters; ``states`` is a list the backend encodes as its driver needs."""
    params: dict[str, object] = {
        "states": None if query.states is None else [State(s).value for s in query.states],
        "model": query.model or None,
        "search": query.search or None,
        "after_id": query.after_id or "",
        "limit": query.limit,
    }
    if query.order not in ("id", "created"):
        raise ValueError(f"unknown job order {query.order!r}: expected id or created")
    base = "FIND_JOBS" if query.order == "id" else "FIND_JOBS_CREATED"
    if query.order == "created":
        after = query.after_id is not None and query.after_created is not None
        params["after_created"] = query.after_created if after else -1.0
        params["after_id"] = query.after_id if after else ""
    name = base
    if query.descending:
        name = f"{base}_DESC_AFTER" if query.after_id else f"{base}_DESC"
    return name, params
