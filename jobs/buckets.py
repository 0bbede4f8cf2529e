"""Continuous token buckets for requests, input tokens and output tokens per minute. Pure.

The API counts as a token bucket "continuously replenished up to your maximum limit"
(../shared/ANTHROPIC.md §5): capacity = the per-minute limit, refilled at limit/60 per second. A
request reserves its estimated input tokens and its ``max_tokens`` of output before it starts, and
the unused part is refunded when it ends.

The state lives in the job store (one row per key), so every worker process and machine draws on
the same buckets; each backend loads the row, applies these functions and saves it in one
transaction. Levels may go below zero when a request used more than it reserved: that debt is real
and delays the next requests, as it does at the API.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ("Limits", "Amounts", "BucketState", "refill", "try_take", "give_back", "calibrate", "pause")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-minute limits; 0 means unlimited."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def unlimited(self) -> bool:
        return not (self.requests or self.input_tokens or self.output_tokens)


@dataclass(frozen=True, slots=True)
class Amounts:
    requests: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0


@dataclass(frozen=True, slots=True)
class BucketState:
    """The levels of the three buckets at ``updated_at``, and a fleet-wide pause."""

    requests: float
    input_tokens: float
    output_tokens: float
    updated_at: float
    paused_until: float = 0.0
    #: Why the fleet is paused (e.g. ``429 rate_limit_error``), kept with ``paused_until``.
    pause_reason: str = ""

    @classmethod
    def full(cls, limits: Limits, now: float) -> BucketState:
        return cls(float(limits.requests), float(limits.input_tokens), float(limits.output_tokens), now)


_DIMENSIONS = ("requests", "input_tokens", "output_tokens")


def refill(state: BucketState, limits: Limits, now: float) -> BucketState:
    """The levels at ``now``: each bucket refills at limit/60 per second, up to its limit."""
    elapsed = max(0.0, now - state.updated_at)
    levels: dict[str, Any] = {}  # the three levels only (Any: replace() cannot tell them apart)
    for name in _DIMENSIONS:
        limit = getattr(limits, name)
        level = getattr(state, name)
        levels[name] = min(float(limit), level + elapsed * limit / 60.0) if limit else 0.0
    return replace(state, updated_at=max(now, state.updated_at), **levels)


def try_take(
    state: BucketState, limits: Limits, amounts: Amounts, now: float, margin_seconds: float = 0.0
) -> tuple[BucketState, float]:
    """Take ``amounts`` if they all fit now. Returns the new state and 0, or the unchanged (refilled)
    state and the seconds until they would fit (or the pause ends).

    ``margin_seconds`` admits a request only once it would have fitted that long ago too: our
    buckets and the server's refill on different clocks and update at slightly different moments,
    so a request sent the instant our level reaches its size can find the server a fraction of a
    token short. For the same reason a request taken from a (nearly) full bucket is also charged
    the refill of ``margin_seconds``: while it is on its way the server's bucket stays capped at
    the limit and never gains that refill, whereas ours, already below the limit, would.
    """
    state = refill(state, limits, now)
    wait = max(0.0, state.paused_until - now)
    for name in _DIMENSIONS:
        limit = getattr(limits, name)
        if not limit:
            continue
        # Never wait for more than fits at all.
        need = min(getattr(amounts, name) + margin_seconds * limit / 60.0, float(limit))
        level = getattr(state, name)
        if level < need:
            wait = max(wait, (need - level) * 60.0 / limit)
    if wait > 0:
        return state, wait
    taken: dict[str, Any] = {
        name: min(getattr(state, name), getattr(limits, name) * (1 - margin_seconds / 60.0))
        - getattr(amounts, name)
        if getattr(limits, name)
        else 0.0
        for name in _DIMENSIONS
    }
    return replace(state, **taken), 0.0


def give_back(state: BucketState, limits: Limits, amounts: Amounts, now: float) -> BucketState:
    """Return unused reservations (negative amounts charge a shortfall); never above the limit."""
    state = refill(state, limits, now)
    levels: dict[str, Any] = {
        name: min(float(getattr(limits, name)), getattr(state, name) + getattr(amounts, name))
        if getattr(limits, name)
        else 0.0
        for name in _DIMENSIONS
    }
    return replace(state, **levels)


def calibrate(
    state: BucketState, limits: Limits, remaining: Amounts, now: float, tolerance: Amounts
) -> BucketState:
    """Lower our levels to the server's ``anthropic-ratelimit-*-remaining`` where it is lower by
    more than ``tolerance`` (the API rounds token counts to the nearest thousand).

    Only downwards: the headers come at the start of a response, when the server has just reserved
    that request's ``max_tokens``, and it does not know yet of reservations this fleet is about to
    send; a lower figure means someone else uses the same key, which we must respect, while a
    higher one is most likely stale. Dimensions the server did not report are negative: left alone.
    """
    state = refill(state, limits, now)
    levels = {}
    for name in _DIMENSIONS:
        reported = getattr(remaining, name)
        if (
            getattr(limits, name)
            and reported >= 0
            and getattr(state, name) - reported > getattr(tolerance, name)
        ):
            levels[name] = reported
    return replace(state, **levels) if levels else state


def pause(state: BucketState, until: float, reason: str = "") -> BucketState:
    """Stop every request of the fleet until ``until`` (a 429 or 529 told us to back off). The
    reason kept is the one of the pause that ends last: what the fleet is waiting out."""
    if until <= state.paused_until:
        return state
    return replace(state, paused_until=until, pause_reason=reason)
