"""The failure policy: whose fault a failure is, and so what happens. Pure and unit-tested.

Every failure the worker meets falls in one of three scopes:

=========  =====================================================  ==============================
scope      examples                                               what happens
=========  =====================================================  ==============================
JOB        400, a retired model, 413, a refusal                   terminal for this job alone
ATTEMPT    429, 5xx, dropped or stalled streams, malformed events retried with backoff
ACCOUNT    401/402/403, store unreachable, disk full              the worker pauses (or stops)
=========  =====================================================  ==============================

ACCOUNT stands for "the account or the infrastructure": nothing about the job is wrong, so the job
is never charged an attempt for it. Authentication, billing and permission errors also ``stop``
the run (they do not clear by themselves); a store outage pauses the worker until it clears.

429 and 529 are the account's *weather*: attempt-scoped, but they pause the fleet and use up a
patience measured in time (``overload_patience``) instead of the job's attempts. An overload
*inside* a started stream (``event: error``) is an ordinary attempt failure: the request was
accepted, and a job that fails that way every time must still reach its dead-letter.

``worker.retry`` keeps the HTTP details (which status is retryable, ``retry-after``, backoff);
this module adds the scope on top, so there is still one place that decides.
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass

import anthropic

from jobs.errors import JobNotFoundError, JobStateError, LeaseLostError, StoreError
from jobs.models import Outcome
from worker.retry import classify

__all__ = ("Scope", "Verdict", "judge", "is_store_outage", "settle_outcome", "Spell")


class Scope(enum.StrEnum):
    """Whose fault a failure is."""

    #: The job's spec is wrong: fail the job (the others go on).
    JOB = "job"
    #: This try went wrong: retry the job later, from its checkpoint.
    ATTEMPT = "attempt"
    #: The account or the infrastructure: pause the worker; never charge the job.
    ACCOUNT = "account"


#: Statuses that are about the key, the bill or the permissions, never about the request.
_ACCOUNT_STATUS = frozenset({401, 402, 403})
_ACCOUNT_ERROR_TYPES = frozenset({"authentication_error", "billing_error", "permission_error"})
#: The account's weather: the fleet should slow down.
_WEATHER_STATUS = frozenset({429, 529})
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's answer for one failure."""

    scope: Scope
    #: A short stable name (``http_401``, ``store``, ``stall``, ...), logged and counted.
    kind: str
    #: Human-readable, without prompt text.
    reason: str
    #: The server's requested delay, if any.
    retry_after: float | None = None
    #: For ACCOUNT: the condition will not clear by itself, so the run stops (auth, billing).
    stop: bool = False
    #: 429/529: pause the fleet; patience is counted in time, not attempts.
    weather: bool = False

    @property
    def retryable(self) -> bool:
        return self.scope is not Scope.JOB


def is_store_outage(exc: BaseException) -> bool:
    """A store failure that says nothing about the job: the store is down, locked or full.

    ``LeaseLostError``, ``JobNotFoundError`` and ``JobStateError`` are answers, not outages."""
    return isinstance(exc, StoreError) and not isinstance(
        exc, LeaseLostError | JobNotFoundError | JobStateError
    )


def judge(exc: BaseException) -> Verdict:
    """The scope and handling of ``exc``, raised while running one attempt."""
    if is_store_outage(exc):
        return Verdict(Scope.ACCOUNT, "store", f"job store unavailable: {exc}")
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return Verdict(Scope.ACCOUNT, "disk", f"{type(exc).__name__}: {exc}")
    decision = classify(exc)
    status = exc.status_code if isinstance(exc, anthropic.APIStatusError) else None
    error_type = decision.kind.removeprefix("stream_")
    if status in _ACCOUNT_STATUS or (status == 200 and error_type in _ACCOUNT_ERROR_TYPES):
        return Verdict(Scope.ACCOUNT, decision.kind, decision.reason, stop=True)
    if status in _WEATHER_STATUS:
        return Verdict(Scope.ATTEMPT, decision.kind, decision.reason, decision.retry_after, weather=True)
    scope = Scope.ATTEMPT if decision.retryable else Scope.JOB
    return Verdict(scope, decision.kind, decision.reason, decision.retry_after)


def settle_outcome(verdict: Verdict, *, patience_left: bool) -> Outcome:
    """How the attempt that ended with ``verdict`` is recorded.

    ACCOUNT failures and weather within its patience re-queue the job without counting a failure
    (RELEASED); other attempt failures count one (RETRY); job failures are terminal (FAILED)."""
    if verdict.scope is Scope.JOB:
        return Outcome.FAILED
    if verdict.scope is Scope.ACCOUNT or (verdict.weather and patience_left):
        return Outcome.RELEASED
    return Outcome.RETRY


@dataclass(frozen=True, slots=True)
class Spell:
    """A run of consecutive bad conditions (an overload, a store outage), timed by its start.

    Immutable: ``hit`` and ``clear`` return the next value, so the rule is testable without time."""

    since: float | None = None

    def hit(self, now: float) -> Spell:
        return self if self.since is not None else Spell(now)

    def clear(self) -> Spell:
        return Spell()

    def lasted(self, now: float) -> float:
        return 0.0 if self.since is None else max(0.0, now - self.since)

    def exceeded(self, now: float, limit: float) -> bool:
        return self.since is not None and now - self.since > limit
