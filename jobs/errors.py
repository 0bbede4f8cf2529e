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
    └── (the runtime's own errors, in ``worker.errors``: generation, account and outage)

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
