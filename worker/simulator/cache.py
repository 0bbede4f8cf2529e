"""Prompt caching as the API does it (../shared/SERVICE.md §2), for the usage the simulator reports.

* **Exact prefix, at block boundaries.** The prompt is rendered as blocks in API order (system,
  then each message's content blocks, with its role). A cache entry is the hash chain of every
  block up to and including one that carries ``cache_control``. A request reads the longest entry
  that is a prefix of its own, looking back at most 20 blocks from each breakpoint.
* **Minimum length.** A prefix shorter than ``min_tokens`` is never cached, silently (both cache
  counts are 0).
* **TTL.** An entry lives ``5m`` or ``1h`` from its last write or read, on an injectable monotonic
  clock that tests move by hand.
* **Usage.** ``cache_read_input_tokens`` = the prefix read; ``cache_creation_input_tokens`` = the
  rest up to the last breakpoint, split by TTL; ``input_tokens`` = the remainder after it.
  Rate limits charge ``input + cache_creation`` (reads are free against ITPM).

The plan (what a request would read and write) is pure; entries are written only by
:meth:`PromptCache.commit`, once the request is admitted and its response begins: a cache entry
"becomes readable only after the first response begins streaming".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ("PromptBlock", "CachePlan", "PromptCache", "LOOKBACK_BLOCKS", "TTL_SECONDS", "MAX_BREAKPOINTS")

#: How many blocks a breakpoint looks back for an earlier entry.
LOOKBACK_BLOCKS = 20
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
MAX_BREAKPOINTS = 4


@dataclass(frozen=True, slots=True)
class PromptBlock:
    """One rendered block of a prompt: where it is, its text and tokens, and its breakpoint."""

    role: str
    text: str
    tokens: int
    #: ``5m`` or ``1h`` when the block carries ``cache_control``; None otherwise.
    ttl: str | None = None


@dataclass(frozen=True, slots=True)
class CachePlan:
    """What one request reads from and writes to the cache, in tokens."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0
    #: (key, ttl) of every entry the request creates or refreshes ("" = the entry's own TTL).
    entries: tuple[tuple[bytes, str], ...] = field(default_factory=tuple)

    @property
    def written(self) -> int:
        return self.write_5m + self.write_1h


class PromptCache:
    """The simulator-wide cache: entry key → expiry (clock seconds)."""

    def __init__(self, clock: Callable[[], float], min_tokens: int) -> None:
        self._clock = clock
        self.min_tokens = min_tokens
        self._entries: dict[bytes, tuple[float, str]] = {}

    def clear(self) -> None:
        self._entries.clear()

    def _live(self, key: bytes, now: float) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry[0] > now

    def plan(self, model: str, blocks: Sequence[PromptBlock]) -> CachePlan:
        """What a request with these blocks would read and write now (changes nothing)."""
        breakpoints = [i for i, block in enumerate(blocks) if block.ttl is not None]
        if not breakpoints:
            return CachePlan()
        now = self._clock()
        keys, ends = _chain(model, blocks)
        read_at = -1
        for b in breakpoints:
            for i in range(b, max(-1, b - LOOKBACK_BLOCKS - 1), -1):
                if i > read_at and self._live(keys[i], now):
                    read_at = i
                    break
        read = ends[read_at] if read_at >= 0 else 0
        writes = {"5m": 0, "1h": 0}
        entries: list[tuple[bytes, str]] = []
        previous = read
        for b in breakpoints:
            ttl = blocks[b].ttl or "5m"
            if ends[b] < self.min_tokens:
                continue
            entries.append((keys[b], ttl))
            if ends[b] > previous:
                writes[ttl] += ends[b] - previous
                previous = ends[b]
        if read_at >= 0:
            entries.append((keys[read_at], ""))  # a read refreshes the entry with its own TTL
        return CachePlan(read, writes["5m"], writes["1h"], tuple(entries))

    def commit(self, plan: CachePlan) -> None:
        """Write (or refresh) the plan's entries: the response has begun."""
        now = self._clock()
        for key, ttl in plan.entries:
            expires, own = self._entries.get(key, (0.0, "5m"))
            ttl = ttl or own
            self._entries[key] = (max(expires, now + TTL_SECONDS[ttl]), ttl)


def _chain(model: str, blocks: Sequence[PromptBlock]) -> tuple[list[bytes], list[int]]:
    """Per block: the hash of the prompt up to and including it, and its cumulative tokens."""
    keys: list[bytes] = []
    ends: list[int] = []
    digest = hashlib.sha256(model.encode())
    total = 0
    for block in blocks:
        digest.update(b"\x00" + block.role.encode() + b"\x00" + block.text.encode("utf-8", "surrogatepass"))
        keys.append(digest.copy().digest())
        total += block.tokens
        ends.append(total)
    return keys, ends
