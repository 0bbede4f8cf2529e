"""The facts a worker process reports about its own work, as one small object passed around.

The pool, each attempt and the checkpoint writer call this object at the few points that already
know a fact: a request ended (its usage, status, latencies), an attempt went back to the queue
after a failure, a lease was lost, a checkpoint batch was committed. This base class records
nothing, so a worker without ``[worker] metrics_port`` pays one no-op method call per request and
per flush, never per token; ``worker.metrics`` provides the Prometheus implementation that
``worker.runtime`` builds when metrics are on.

No module-level state: each pool gets its recorder from the composition root, so several pools
in one process (tests, benchmarks) count separately.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.models import Usage

__all__ = ("Recorder", "RequestFacts")


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What one finished (or broken) request tells, read once by the recorder."""

    model: str
    #: The request's usage as recorded in the store (estimated if the stream broke).
    usage: Usage
    #: From sending the request to its last event (or its failure).
    seconds: float
    time_to_first_token: float | None
    #: None for a request that ended normally; else what it raised (cancellation included).
    error: BaseException | None


class Recorder:
    """Records nothing; see the module docstring. Subclasses override what they count."""

    #: False for this no-op recorder: callers may skip building facts nobody reads.
    enabled = False

    def stream_started(self) -> None:
        """A request is about to be sent (the streams-running gauge goes up)."""

    def request_ended(self, facts: RequestFacts) -> None:
        """A request ended, well or not (the gauge goes down; counts and latencies recorded)."""

    def retried(self, kind: str) -> None:
        """An attempt failed with ``kind`` (``worker.policy.Verdict.kind``) and its job went back
        to the queue to be tried again."""

    def lease_lost(self) -> None:
        """An attempt found its lease gone (another worker or a cancel owns the job)."""

    def checkpoint_committed(self, seconds: float, jobs: int) -> None:
        """One checkpoint batch of ``jobs`` writes took ``seconds`` (successful commits only)."""
