"""The limiter contract: how an attempt asks for room before a request and gives back after.

An attempt calls ``acquire`` before each request, ``started`` when the response headers arrive
and ``release`` when it ends (with the usage, the headers and the error, if any); the pool calls
``wait_for_room`` before it claims, when ``limited`` says requests may have to wait, so that jobs
wait in the queue rather than in a worker. Kept in its own module so that the attempt, the pool
and every implementation depend on the contract, not on each other:

- :class:`Unlimited` (here) admits everything at once: no rate limits configured;
- :class:`worker.limits.FleetLimiter` reserves and refunds against fleet-wide buckets in the store;
- :class:`worker.class_limits.ClassLimiter` hands each model class its own ``FleetLimiter``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from jobs.models import Usage

__all__ = ("Limiter", "Unlimited")


class Limiter(Protocol):
    """Admission control for requests."""

    #: True when requests may have to wait: the pool then claims jobs one at a time, after
    #: ``wait_for_room``.
    limited: bool
    #: The largest ``max_tokens`` a request may ask for (the output bucket's size); None = any.
    max_output_tokens: int | None

    async def wait_for_room(self, input_tokens: int, max_tokens: int) -> None:
        """Return once one more request of this size would be admitted without waiting."""

    async def acquire(self, input_tokens: int, max_tokens: int) -> Any:
        """Wait for room and reserve it; the ticket goes back to ``started`` and ``release``."""

    async def started(self, ticket: Any, headers: Mapping[str, str]) -> None:
        """The response's headers arrived (they may recalibrate the buckets)."""

    async def release(
        self, ticket: Any, usage: Usage | None, headers: Any, error: BaseException | None
    ) -> None:
        """The request ended: true up the reservation with what it used."""


class Unlimited:
    """The default limiter: admits every request at once and keeps nothing."""

    limited = False
    max_output_tokens: int | None = None

    async def wait_for_room(self, input_tokens: int, max_tokens: int) -> None:
        return None

    async def acquire(self, input_tokens: int, max_tokens: int) -> Any:
        return None

    async def started(self, ticket: Any, headers: Mapping[str, str]) -> None:
        return None

    async def release(
        self, ticket: Any, usage: Usage | None, headers: Any, error: BaseException | None
    ) -> None:
        return None
