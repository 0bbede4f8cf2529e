"""Token-aware rate limiting shared by the whole fleet.

Before each request a worker reserves 1 request, its estimated input tokens and its ``max_tokens``
of output from buckets that live in the job store (so every process and machine draws on the same
ones); when the request ends, the unused part is refunded from the usage the stream reported. This
is how the API itself counts (../shared/ANTHROPIC.md §5), so the fleet can use the limit to the
last token without being answered 429.

* A reservation that does not fit waits, before any connection is opened and without counting an
  attempt; the pool also waits for room before it claims more jobs, so waiting jobs stay queued.
* A 429 or 529 pauses new requests of the whole fleet for its ``retry-after`` (capped).
* ``anthropic-ratelimit-*-remaining`` headers recalibrate the buckets when present (the API omits
  them for unlimited dimensions; so do we).
* Requests per minute are also smoothed per process with aiolimiter, so one process never sends
  its share of a minute in one burst (the API may enforce 60 RPM as one request a second).
* A store outage never fails a request: reservations wait it out through the worker's
  :class:`~worker.outage.StoreGuard`; a calibration or refund that cannot be written is skipped
  (the buckets then stay a little fuller than true, which errs on the side of waiting).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anthropic
import anyio
import structlog
from aiolimiter import AsyncLimiter

from jobs.buckets import Amounts, BucketState, Limits, calibrate, give_back, pause, refill, try_take
from jobs.errors import ConfigError, StoreError
from jobs.models import Usage
from jobs.store import Store
from worker.outage import StoreGuard
from worker.retry import retry_after_seconds

__all__ = ("FleetLimiter", "LimiterStats", "Ticket", "check_limits")

log = structlog.get_logger("worker.limits")

#: The API rounds remaining token counts to the nearest thousand; request counts are exact.
_HEADER_TOLERANCE = Amounts(requests=1.0, input_tokens=1000.0, output_tokens=1000.0)
#: Longest single wait before the buckets are looked at again (other workers may refund).
_MAX_WAIT_STEP = 1.0
#: A pause when a 429/529 carries no retry-after.
_DEFAULT_PAUSE = 1.0
#: Admit a request only if it would also have fitted this long ago (see ``jobs.buckets.try_take``).
CLOCK_MARGIN = 0.25


def check_limits(limits: Limits, max_tokens: int) -> None:
    """A ``max_tokens`` larger than the whole output budget per minute could never be admitted."""
    if limits.output_tokens and max_tokens > limits.output_tokens:
        raise ConfigError(
            f"[anthropic] max_tokens ({max_tokens}) is larger than [rate_limits] "
            f"output_tokens_per_minute ({limits.output_tokens}): no request could ever start. "
            "Lower max_tokens (long documents continue past it) or raise the limit."
        )


@dataclass(frozen=True, slots=True)
class Ticket:
    reserved: Amounts


@dataclass(slots=True)
class LimiterStats:
    reservations: int = 0
    waits: int = 0
    seconds_waited: float = 0.0
    pauses: int = 0
    refunded_output_tokens: float = 0.0
    calibrations: int = 0


class FleetLimiter:
    """Reserve before each request, refund after; state in the store under ``key``."""

    def __init__(
        self,
        store: Store,
        limits: Limits,
        *,
        key: str = "anthropic",
        retry_after_max: float = 120.0,
        refund: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        guard: StoreGuard | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.key = key
        self.retry_after_max = retry_after_max
        #: False gives the usual hand-written limiter that never refunds (the benchmark's baseline).
        self.refund = refund
        self.clock = clock
        self.sleep = sleep
        self.stats = LimiterStats()
        self.guard = guard or StoreGuard()
        self.limited = not limits.unlimited
        # A job may ask for more per request than the output bucket holds: ask for less, and let
        # long-form continuation carry the document on, rather than wait forever.
        self.max_output_tokens = limits.output_tokens or None
        self._rpm = AsyncLimiter(limits.requests, 60) if limits.requests else None
        # The size of this pool's requests, as last reserved: what "room for one more" means.
        self._recent: Amounts | None = None

    def _cap(self, amounts: Amounts) -> Amounts:
        """A single request can never need more than a whole bucket."""
        limits = self.limits
        return Amounts(
            amounts.requests,
            min(amounts.input_tokens, limits.input_tokens) if limits.input_tokens else amounts.input_tokens,
            min(amounts.output_tokens, limits.output_tokens)
            if limits.output_tokens
            else amounts.output_tokens,
        )

    async def wait_for_room(self, input_tokens: int, max_tokens: int) -> None:
        """Return once a request of this size would fit (without reserving it): the pool calls this
        before claiming, so that jobs wait in the queue rather than in a worker. Once a request has
        been reserved, its size is used instead: the next job is most likely like the last."""
        started = self.clock()
        waited = False
        while (wait := await self.room_in(input_tokens, max_tokens)) > 0:
            waited = True
            await self.sleep(min(wait, _MAX_WAIT_STEP))
        if waited:
            self.stats.waits += 1
            self.stats.seconds_waited += self.clock() - started

    async def room_in(self, input_tokens: int, max_tokens: int) -> float:
        """Seconds until a request of this size (or of the last one reserved) would fit, 0 if now,
        from one look at the buckets (a pause counts): retried through a store outage."""
        amounts = self._recent or self._cap(Amounts(1, input_tokens, max_tokens))
        limits = self.limits

        def peek(state: BucketState, now: float) -> tuple[BucketState, float]:
            return refill(state, limits, now), try_take(state, limits, amounts, now, CLOCK_MARGIN)[1]

        return await self._update(peek)

    async def acquire(self, input_tokens: int, max_tokens: int) -> Ticket:
        amounts = self._cap(Amounts(1, input_tokens, max_tokens))
        limits = self.limits
        if self._rpm is not None:
            await self._rpm.acquire()
        started = self.clock()

        def take(state: BucketState, now: float) -> tuple[BucketState, float]:
            return try_take(state, limits, amounts, now, CLOCK_MARGIN)

        waited = False
        while (wait := await self._update(take)) > 0:
            waited = True
            await self.sleep(min(wait, _MAX_WAIT_STEP))
        self.stats.reservations += 1
        self._recent = amounts
        if waited:
            self.stats.waits += 1
            self.stats.seconds_waited += self.clock() - started
        return Ticket(amounts)

    async def started(self, ticket: Any, headers: Mapping[str, str]) -> None:
        """The response began: let the server's ``remaining`` headers lower our buckets."""
        remaining = _remaining(headers)
        if remaining is None:
            return
        limits = self.limits

        def adjust(state: BucketState, now: float) -> tuple[BucketState, None]:
            return calibrate(state, limits, remaining, now, _HEADER_TOLERANCE), None

        if await self._try_update(adjust, "calibrate"):
            self.stats.calibrations += 1

    async def release(
        self, ticket: Any, usage: Usage | None, headers: Mapping[str, str] | None, error: BaseException | None
    ) -> None:
        if not isinstance(ticket, Ticket):
            return
        limits = self.limits
        reserved = ticket.reserved
        used_in = (
            float(usage.input_tokens + usage.cache_creation_input_tokens) if usage else reserved.input_tokens
        )
        used_out = float(usage.output_tokens) if usage else reserved.output_tokens
        if error is not None and headers:
            # The stream broke after it started: its final usage never came, so how much output the
            # server counted is unknown. Refund none of it: better to wait a little than to be
            # answered 429. (A request refused before streaming used nothing and is refunded whole.)
            used_out = reserved.output_tokens
        refund = Amounts(0.0, reserved.input_tokens - used_in, reserved.output_tokens - used_out)
        if not self.refund:
            refund = Amounts(0.0, 0.0, 0.0)
        pause_until = self._pause_until(error)
        reason = _pause_reason(error)

        def settle(state: BucketState, now: float) -> tuple[BucketState, None]:
            state = give_back(state, limits, refund, now)
            if pause_until is not None:
                state = pause(state, pause_until, reason)
            return state, None

        if refund.input_tokens or refund.output_tokens or pause_until is not None:
            await self._try_update(settle, "release")
        self.stats.refunded_output_tokens += max(0.0, refund.output_tokens)

    async def _update(self, change: Callable[[BucketState, float], tuple[BucketState, float]]) -> float:
        """A bucket change the request must wait for: retried through a store outage."""
        return await self.guard.call("limiter", self.store.update_buckets, self.key, self.limits, change)

    async def _try_update(
        self, change: Callable[[BucketState, float], tuple[BucketState, None]], what: str
    ) -> bool:
        """A best-effort bucket change (one try): a store failure skips it."""
        try:
            await self.store.update_buckets(self.key, self.limits, change)
        except StoreError as exc:
            log.warning("limiter_update_skipped", what=what, error=str(exc))
            return False
        return True

    def _pause_until(self, error: BaseException | None) -> float | None:
        if not isinstance(error, anthropic.APIStatusError) or error.status_code not in (429, 529):
            return None
        delay = retry_after_seconds(error.response.headers)
        delay = min(self.retry_after_max, _DEFAULT_PAUSE if delay is None else delay)
        self.stats.pauses += 1
        log.info("fleet_paused", status=error.status_code, seconds=round(delay, 3), bucket=self.key)
        return self.clock() + delay


def _pause_reason(error: BaseException | None) -> str:
    """What the dashboard says the fleet waits out: the status and the API's error type, e.g.
    ``429 rate_limit_error`` or ``529 overloaded_error`` (never the message: it may quote input)."""
    if not isinstance(error, anthropic.APIStatusError):
        return ""
    inner = error.body.get("error") if isinstance(error.body, dict) else None
    kind = inner.get("type") if isinstance(inner, dict) else None
    return f"{error.status_code} {kind}" if isinstance(kind, str) and kind else str(error.status_code)


def _remaining(headers: Mapping[str, str]) -> Amounts | None:
    """The server's remaining counts; -1 for a dimension it did not report."""
    values = []
    for name in ("requests", "input-tokens", "output-tokens"):
        raw = headers.get(f"anthropic-ratelimit-{name}-remaining")
        try:
            values.append(float(raw) if raw is not None else -1.0)
        except ValueError:
            values.append(-1.0)
    if all(v < 0 for v in values):
        return None
    return Amounts(*values)
