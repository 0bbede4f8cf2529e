"""Rate limits per model class: one :class:`~worker.limits.FleetLimiter` per class.

The API limits each model class on its own (../shared/ANTHROPIC.md §5), so a queue that mixes
Opus and Haiku jobs must neither hold Haiku back while Opus is at its limit, nor send Opus requests
on Haiku's budget. Each class (``jobs.classes``) gets its own buckets in the store (its own key),
so headers recalibrate, and a 429 or 529 pauses, only the class that answered.

The pool asks :meth:`ClassLimiter.rooms` which classes have room for one more request before it
claims, and claims only jobs of those classes' models; each attempt then reserves from its own
class's limiter (:meth:`ClassLimiter.for_model`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from jobs.buckets import Limits
from jobs.classes import DEFAULT_CLASS, RateClasses, bucket_key
from jobs.errors import ConfigError
from jobs.store import Store
from worker.admission import Limiter, Unlimited
from worker.limits import FleetLimiter, LimiterStats, check_limits
from worker.outage import StoreGuard

__all__ = ("ClassLimiter", "check_class_limits")


def check_class_limits(classes: RateClasses, max_tokens: int) -> None:
    """Every class must admit a request of ``max_tokens`` (see :func:`worker.limits.check_limits`)."""
    check_limits(classes.default, max_tokens)
    for cls in classes.classes:
        try:
            check_limits(cls.limits, max_tokens)
        except ConfigError as exc:
            where = f"[rate_limits.classes.{cls.name}]"
            raise ConfigError(str(exc).replace("[rate_limits]", where)) from None


class ClassLimiter:
    """The fleet limiters of every class; an unlimited class admits at once."""

    def __init__(
        self,
        store: Store,
        classes: RateClasses,
        *,
        retry_after_max: float = 120.0,
        refund: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        guard: StoreGuard | None = None,
    ) -> None:
        self.classes = classes
        self._unlimited = Unlimited()
        self._limiters: dict[str, FleetLimiter] = {}
        for name in classes.names:
            limits: Limits = classes.limits_of(name)
            if limits.unlimited:
                continue
            self._limiters[name] = FleetLimiter(
                store,
                limits,
                key=bucket_key(name),
                retry_after_max=retry_after_max,
                refund=refund,
                clock=clock,
                sleep=sleep,
                guard=guard,
            )
        #: True when some class may have to wait (the pool then claims one job at a time).
        self.limited = bool(self._limiters)

    def class_of(self, model: str) -> str:
        return self.classes.class_of(model)

    def for_model(self, model: str) -> Limiter:
        """The limiter a request for ``model`` reserves from."""
        return self._limiters.get(self.class_of(model)) or self._unlimited

    def limiter(self, name: str = DEFAULT_CLASS) -> FleetLimiter | None:
        """The fleet limiter of class ``name`` (None: the class is unlimited)."""
        return self._limiters.get(name)

    async def rooms(self, models: list[str], input_tokens: int, max_tokens: int) -> dict[str, float]:
        """For each class that ``models`` belong to: seconds until it has room for one more
        request (0: now; an unlimited class always 0)."""
        waits: dict[str, float] = {}
        for name in self.classes.group(models):
            limiter = self._limiters.get(name)
            waits[name] = 0.0 if limiter is None else await limiter.room_in(input_tokens, max_tokens)
        return waits

    @property
    def stats(self) -> dict[str, LimiterStats]:
        return {name: limiter.stats for name, limiter in self._limiters.items()}
