"""Store calls that ride out an outage: retried, timed, reported, never charged to a job.

Every store call the pool, the limiter and the progress display make goes through one
:class:`StoreGuard` per worker. A failure that ``worker.policy`` calls an outage (the store is
down, locked or full; not a lost lease or a missing job) starts a spell: the worker pauses, one
``worker_paused`` status line is logged every few seconds, and the call is retried until the store
answers (``store_recovered``) or the spell passes ``limit`` seconds, after which the pool exits with
:class:`~worker.errors.OutageLimitError`. The checkpoint writer reports its own failures and
successes here too, so a spell starts and ends wherever the store is first seen down or back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import anyio
import structlog

from worker.policy import Spell, is_store_outage

__all__ = ("StoreGuard",)

log = structlog.get_logger("worker.outage")

T = TypeVar("T")
P = ParamSpec("P")


class StoreGuard:
    """Tracks one worker's view of the store: up, or down since when."""

    def __init__(
        self,
        *,
        limit: float = 300.0,
        retry_seconds: float = 0.5,
        status_seconds: float = 5.0,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.limit = limit
        self.retry_seconds = retry_seconds
        self.status_seconds = status_seconds
        self._clock = clock
        self._spell = Spell()
        self._last_status = -float("inf")
        self._last_error = ""
        self._up = anyio.Event()
        self._up.set()
        #: Completed outages, and their total length (for the summary and the process tests).
        self.outages = 0
        self.outage_seconds = 0.0

    @property
    def down(self) -> bool:
        return self._spell.since is not None

    @property
    def exceeded(self) -> bool:
        """True once the current outage has lasted longer than ``limit``."""
        return self._spell.exceeded(self._clock(), self.limit)

    @property
    def last_error(self) -> str:
        return self._last_error

    def failed(self, exc: BaseException, where: str) -> None:
        """Record an outage failure seen by ``where``; logs the status every few seconds."""
        now = self._clock()
        if self._spell.since is None:
            self._up = anyio.Event()
            log.warning("store_unavailable", where=where, error=str(exc))
            self._last_status = now
        self._spell = self._spell.hit(now)
        self._last_error = str(exc)
        if now - self._last_status >= self.status_seconds:
            self._last_status = now
            log.warning(
                "worker_paused",
                reason="store unavailable",
                seconds=round(self._spell.lasted(now), 1),
                limit=self.limit,
                error=str(exc),
            )

    def ok(self) -> None:
        """The store answered: end the spell, if there was one."""
        if self._spell.since is None:
            return
        lasted = self._spell.lasted(self._clock())
        self._spell = self._spell.clear()
        self.outages += 1
        self.outage_seconds += lasted
        log.info("store_recovered", seconds=round(lasted, 3))
        self._up.set()

    async def wait_up(self) -> None:
        """Until the store is seen answering again."""
        await self._up.wait()

    async def call(self, where: str, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args)``, retried through an outage. Once the outage passes ``limit``, the
        last store error is raised (the policy still calls it an outage: nobody is charged)."""
        while True:
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                if not is_store_outage(exc):
                    raise
                self.failed(exc, where)
                if self.exceeded:
                    raise
                await anyio.sleep(self.retry_seconds)
                continue
            self.ok()
            return result
