"""Rate limits the way the Messages API enforces them: continuous token buckets.

Three buckets (requests, input tokens, output tokens per minute), each with capacity equal to
its per-minute limit and refilled continuously at limit/60 per second. A request reserves one
request, its estimated input tokens and its whole ``max_tokens`` up front; when it ends, the
unused part of the output reservation is refunded. That is why a client sending
``max_tokens=32000`` hits the output limit long before it has generated that much.

A request larger than a whole bucket (``max_tokens`` above the per-minute output limit) is
admitted when that bucket is full and drives it negative, instead of being refused forever.
The top-level limits are one set of buckets for every model; a :class:`RateClass` gives the
models its glob patterns match buckets of their own, as the API limits each model class apart
(``--rate-class opus=claude-opus-*:rpm=50:otpm=8000``). Remaining counts in the headers are
exact, not rounded to thousands, and describe the class of the request's model.

The clock is injectable (monotonic seconds), so the arithmetic is unit-tested without sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase

__all__ = (
    "Clock",
    "TokenBucket",
    "RateLimits",
    "Reservation",
    "RateLimitExceeded",
    "RateLimiter",
    "RateClass",
    "parse_rate_class",
)

#: A callable returning monotonic seconds.
Clock = Callable[[], float]


class TokenBucket:
    """A bucket of ``per_minute`` units refilled continuously at ``per_minute / 60`` per second."""

    def __init__(self, per_minute: int, clock: Clock = time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError("a token bucket needs a positive per-minute limit")

        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._level = self.capacity
        self._updated = clock()

    def level(self) -> float:
        """Units available now (negative after an oversized request was admitted)."""
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now
        return self._level

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken (0 if now); oversized amounts wait for a full bucket."""
        needed = min(amount, self.capacity) - self.level()
        return max(0.0, needed / self.rate)

    def seconds_until_full(self) -> float:
        """Seconds until the bucket is back at capacity: the ``-reset`` header."""
        return (self.capacity - self.level()) / self.rate

    def take(self, amount: float) -> None:
        """Remove ``amount`` units; callers check :meth:`wait_time` first."""
        self._level = self.level() - amount

    def give_back(self, amount: float) -> None:
        """Return ``amount`` unused units, never above capacity."""
        self._level = min(self.capacity, self.level() + amount)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per-minute limits; 0 means unlimited (no bucket and no headers for that dimension)."""

    requests_per_minute: int = 0
    input_tokens_per_minute: int = 0
    output_tokens_per_minute: int = 0


@dataclass(frozen=True, slots=True)
class RateClass:
    """Buckets of their own for the models ``patterns`` match (first matching class wins)."""

    name: str
    patterns: tuple[str, ...]
    limits: RateLimits

    def matches(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.patterns)


_CLASS_KEYS = {
    "rpm": "requests_per_minute",
    "itpm": "input_tokens_per_minute",
    "otpm": "output_tokens_per_minute",
}


def parse_rate_class(text: str) -> RateClass:
    """``NAME=GLOB[,GLOB...]:rpm=N:itpm=N:otpm=N`` (limits left out are unlimited)."""
    name, sep, rest = text.partition("=")
    globs, *limits = rest.split(":")
    if not sep or not name or not globs:
        raise ValueError(f"rate class {text!r}: expected NAME=GLOB[,GLOB]:rpm=N:itpm=N:otpm=N")
    values: dict[str, int] = {}
    for item in limits:
        key, _, number = item.partition("=")
        if key not in _CLASS_KEYS or not number.isdigit():
            raise ValueError(f"rate class {text!r}: {item!r} is not rpm=N, itpm=N or otpm=N")
        values[_CLASS_KEYS[key]] = int(number)
    return RateClass(name, tuple(globs.split(",")), RateLimits(**values))


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one admitted request holds until it is settled."""

    input_tokens: int
    output_tokens: int


class RateLimitExceeded(Exception):
    """Raised when a request does not fit; carries what the 429 response needs."""

    def __init__(self, dimension: str, limit: int, retry_after: int) -> None:
        self.dimension = dimension
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"This request would exceed your organization's rate limit of {limit:,} {dimension} per "
            "minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see "
            "the response headers for current usage. Please reduce the prompt length or the maximum "
            "tokens requested, or try again later."
        )


_DIMENSIONS = (
    ("requests", "requests"),
    ("input-tokens", "input tokens"),
    ("output-tokens", "output tokens"),
)


class RateLimiter:
    """Reserve-then-settle admission over the three buckets."""

    def __init__(self, limits: RateLimits, clock: Clock = time.monotonic) -> None:
        self.limits = limits
        per_minute = (
            limits.requests_per_minute,
            limits.input_tokens_per_minute,
            limits.output_tokens_per_minute,
        )
        self._buckets: dict[str, TokenBucket | None] = {
            header: TokenBucket(limit, clock) if limit > 0 else None
            for (header, _), limit in zip(_DIMENSIONS, per_minute, strict=True)
        }

    def reserve(self, input_tokens: int, max_tokens: int) -> Reservation:
        """Admit a request or refuse it whole; nothing is taken from any bucket on refusal.

        :raises RateLimitExceeded: naming the dimension with the longest wait, with
            ``retry_after`` = that wait rounded up to whole seconds (at least 1).
        """
        amounts = {"requests": 1, "input-tokens": input_tokens, "output-tokens": max_tokens}
        worst: tuple[float, str] | None = None
        for header, _ in _DIMENSIONS:
            bucket = self._buckets[header]
            if bucket is None:
                continue

            wait = bucket.wait_time(amounts[header])
            if wait > 0 and (worst is None or wait > worst[0]):
                worst = (wait, header)

        if worst is not None:
            wait, header = worst
            bucket = self._buckets[header]
            assert bucket is not None
            name = dict(_DIMENSIONS)[header]
            raise RateLimitExceeded(name, int(bucket.capacity), max(1, math.ceil(wait)))

        for header, _ in _DIMENSIONS:
            bucket = self._buckets[header]
            if bucket is not None:
                bucket.take(amounts[header])

        return Reservation(input_tokens=input_tokens, output_tokens=max_tokens)

    def settle(self, reservation: Reservation, output_tokens: int) -> None:
        """True up the output reservation with the tokens actually emitted (failed streams too)."""
        bucket = self._buckets["output-tokens"]
        unused = reservation.output_tokens - output_tokens
        if bucket is not None and unused > 0:
            bucket.give_back(unused)

    def headers(self, now: datetime | None = None) -> dict[str, str]:
        """``anthropic-ratelimit-*`` headers for the limited dimensions; ``reset`` in RFC 3339."""
        wall = now or datetime.now(UTC)
        out: dict[str, str] = {}
        for header, _ in _DIMENSIONS:
            bucket = self._buckets[header]
            if bucket is None:
                continue

            reset = wall + timedelta(seconds=math.ceil(bucket.seconds_until_full()))
            prefix = f"anthropic-ratelimit-{header}"
            out[f"{prefix}-limit"] = str(int(bucket.capacity))
            out[f"{prefix}-remaining"] = str(max(0, math.floor(bucket.level())))
            out[f"{prefix}-reset"] = reset.strftime("%Y-%m-%dT%H:%M:%SZ")

        return out
