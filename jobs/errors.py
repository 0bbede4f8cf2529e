"""The project's exceptions: one root, so callers can catch everything we raise in one place.

The tree::

    PoolError
    ├── ConfigError            bad configuration: stops start-up with a message (exit 2)
    ├── InvalidJobError        a job definition that cannot be enqueued (file, line, field)
    ├── MissingDependencyError an optional extra is not installed
    ├── OutputError            a file or folder we were asked to write cannot be written
    ├── StoreError             the job store failed (driver errors are translated to this)
    │   ├── NoQueueError       nothing at the queue URL, and the command may not create it (exit 2)
    │   ├── JobNotFoundError   no job with that id
    │   ├── JobStateError      the operation does not apply to the job's current state
    │   └── LeaseLostError     a fenced write carried a lease token that is no longer current
    ├── GenerationError        a generation ended in a way that is not a transport fault
    │   ├── RefusalError       the model refused (stop_reason "refusal"): terminal
    │   ├── BudgetError        the job's max_cost_usd is reached (or its cost unknown): terminal
    │   └── DeadlineError      the job's deadline has passed: terminal, text kept
    ├── AccountError           the API rejected the key, the bill or the permission: run stops
    └── OutageLimitError       the store stayed unavailable longer than the outage limit

Each class's docstring is its default message, as procrastinate does, and each carries the exit
code the command line uses when it stops on that error (``exit_code``), so a new kind of error
brings its own code without the command line learning about it.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = (
    "PoolError",
    "ConfigError",
    "InvalidJobError",
    "MissingDependencyError",
    "OutputError",
    "StoreError",
    "NoQueueError",
    "JobNotFoundError",
    "JobStateError",
    "LeaseLostError",
    "GenerationError",
    "RefusalError",
    "BudgetError",
    "DeadlineError",
    "AccountError",
    "OutageLimitError",
)


class PoolError(Exception):
    """Something went wrong in the worker pool."""

    #: The process exit code when the command line stops on this error (README: 1 = a runtime
    #: failure, 2 = bad usage or configuration).
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class ConfigError(PoolError):
    """The configuration is invalid."""

    exit_code = 2


class InvalidJobError(PoolError):
    """A job definition is invalid."""


class MissingDependencyError(PoolError):
    """An optional dependency is not installed."""

    exit_code = 2


class OutputError(PoolError):
    """The output cannot be written."""


class StoreError(PoolError):
    """The job store failed."""


class NoQueueError(StoreError):
    """No queue exists at the configured URL (a command that only reads never creates one)."""

    exit_code = 2


class JobNotFoundError(StoreError):
    """No job has that id."""


class JobStateError(StoreError):
    """The operation does not apply to the job in its current state."""


class LeaseLostError(StoreError):
    """This worker no longer holds the job's lease: another worker or a cancel took it over."""


class GenerationError(PoolError):
    """The generation failed."""


class RefusalError(GenerationError):
    """The model refused to continue (stop_reason "refusal")."""


class BudgetError(GenerationError):
    """The job reached its cost cap (max_cost_usd); its text is kept."""


class DeadlineError(GenerationError):
    """The job's deadline has passed; its text is kept."""


class AccountError(PoolError):
    """The API account cannot be used (authentication, billing or permission): no job was charged."""

    #: ``run`` stopped by the account, every job left as it was (worker.preflight.EXIT_ACCOUNT).
    exit_code = 3


class OutageLimitError(PoolError):
    """The job store stayed unavailable longer than [worker] outage_limit."""
