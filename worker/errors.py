"""The runtime's errors: how a generation, the API account or an outage stops work.

They belong to the worker, not to the job model, so they live here; they still descend from the
project's one root, :class:`jobs.errors.PoolError`, so the command line reports them like every
other error (each carries its ``exit_code``)::

    PoolError (jobs.errors)
    ├── GenerationError        a generation ended in a way that is not a transport fault
    │   ├── RefusalError       the model refused (stop_reason "refusal"): terminal
    │   ├── BudgetError        the job's max_cost_usd is reached (or its cost unknown): terminal
    │   └── DeadlineError      the job's deadline has passed: terminal, text kept
    ├── AccountError           the API rejected the key, the bill or the permission: run stops
    └── OutageLimitError       the store stayed unavailable longer than the outage limit
"""

from __future__ import annotations

from jobs.errors import PoolError

__all__ = (
    "GenerationError",
    "RefusalError",
    "BudgetError",
    "DeadlineError",
    "AccountError",
    "OutageLimitError",
)


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
