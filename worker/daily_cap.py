"""The fleet's spending cap per UTC day (``[costs] daily_cap_usd``), held in the job store.

Every worker process and machine adds what its attempts cost to one counter per UTC day, kept in
the store's atomic key/state rows (``Store.update_buckets``, the rows the rate limiter uses; the
key ``spend:YYYY-MM-DD`` keeps the day's dollars in the ``requests`` column, and no limit applies
to it, so no refill ever touches it). A pool checks the counter before it claims: once the day's
spending reaches the cap it claims nothing more until the next UTC day (or, with ``--until-empty``,
stops).

It is coarser than the per-job and per-run caps: an attempt's cost is added when the attempt
ends, so jobs already running finish their attempt and the day may pass the cap by what was in
flight; an attempt lost with a killed worker is not added.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import structlog

from jobs.buckets import BucketState, Limits
from jobs.store import Store

__all__ = ("DailyCap",)

log = structlog.get_logger("worker.daily_cap")

#: No limits: the row starts at zero and is only ever added to (never refilled).
_COUNTER = Limits()


class DailyCap:
    """Today's fleet-wide spending against ``cap_usd``."""

    def __init__(self, store: Store, cap_usd: float, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.cap_usd = cap_usd
        self.clock = clock
        self._logged_day: str | None = None

    def _key(self) -> str:
        return "spend:" + datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d")

    async def add(self, usd: float) -> float:
        """Add ``usd`` to today's spending; returns the new total."""

        def charge(state: BucketState, now: float) -> tuple[BucketState, float]:
            total = state.requests + usd
            return replace(state, requests=total, updated_at=now), total

        return await self.store.update_buckets(self._key(), _COUNTER, charge)

    async def spent(self) -> float:
        def read(state: BucketState, now: float) -> tuple[BucketState, float]:
            return state, state.requests

        return await self.store.update_buckets(self._key(), _COUNTER, read)

    async def reached(self) -> bool:
        """True once today's spending is at the cap (logged once a day)."""
        key = self._key()
        spent = await self.spent()
        if spent < self.cap_usd:
            return False
        if self._logged_day != key:
            self._logged_day = key
            log.warning("daily_cap_reached", spent_usd=round(spent, 6), cap_usd=self.cap_usd, day=key[6:])
        return True
