"""Spending caps: per job (``max_cost_usd``) and per run (``run --max-cost``). Pure.

A cap is kept by never *starting* a request that could pass it: before each request, the largest
``max_tokens`` that fits what is left is worked out from the worst case (the whole prompt priced
as a cache write, the dearest input rate, plus every output token asked for). So a capped job
ends at or under its cap, never over it, and ends at once when not even a small request fits.

* A job whose own cap is reached fails with reason ``budget``; its text is kept (``retry`` resumes
  it, say after raising the cap).
* A run whose cap is reached stops claiming; its running jobs go back to the queue (released, not
  failed), for a later run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jobs.costs import PER_TOKENS, Price

__all__ = ("RunBudget", "MIN_REQUEST_TOKENS", "affordable_max_tokens", "worst_case_cost")

#: A request that may not ask for at least this many output tokens is not worth starting.
MIN_REQUEST_TOKENS = 16


def worst_case_cost(price: Price, prompt_tokens: int, max_tokens: int) -> float:
    """The most one request can cost: every prompt token at the dearest input rate, and every
    output token asked for."""
    dearest = max(price.input, price.cache_write_5m, price.cache_write_1h)
    return (prompt_tokens * dearest + max_tokens * price.output) / PER_TOKENS


def affordable_max_tokens(price: Price, prompt_tokens: int, left_usd: float) -> int:
    """The largest ``max_tokens`` whose worst case fits in ``left_usd`` (0 if none does)."""
    left = left_usd - worst_case_cost(price, prompt_tokens, 0)
    if left <= 0 or price.output <= 0:
        return 0 if left <= 0 else 2**31
    return max(0, math.floor(left * PER_TOKENS / price.output))


@dataclass(slots=True)
class RunBudget:
    """What one run (a pool's life) may spend, has spent, and has promised to requests in flight.

    Requests run concurrently, so each reserves its worst case before it starts and settles for
    its real cost when it ends: together they can never pass the cap."""

    cap_usd: float | None = None
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    #: Set once a request did not fit in what is left: the run stops claiming.
    reached: bool = False

    def reserve(self, usd: float) -> None:
        self.reserved_usd += usd

    def settle(self, reserved: float, usd: float) -> None:
        """A request that reserved ``reserved`` ended, having cost ``usd``."""
        self.reserved_usd = max(0.0, self.reserved_usd - reserved)
        self.spent_usd += usd

    def charge(self, usd: float) -> None:
        self.spent_usd += usd

    @property
    def left_usd(self) -> float | None:
        if self.cap_usd is None:
            return None
        return max(0.0, self.cap_usd - self.spent_usd - self.reserved_usd)

    @property
    def exhausted(self) -> bool:
        return self.reached or (self.cap_usd is not None and self.spent_usd >= self.cap_usd)
