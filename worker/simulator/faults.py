"""Fault injection: which request fails, how, and where in the stream.

Every decision is a pure function of (seed, document key, request number for that document),
never of arrival order, so a run with 200 concurrent jobs fails the same requests each time.

Fault spec (``--faults`` and the ``[sim:faults=SPEC]`` directive), comma-separated ``key=value``:

=================  ======================================================================
``http_529``       probability of HTTP 529 ``overloaded_error`` before streaming
``http_500``       probability of HTTP 500 ``api_error`` before streaming
``http_429``       probability of HTTP 429 ``rate_limit_error`` (with ``retry-after``)
``midstream_error``probability of an ``event: error`` (``overloaded_error``) after some text
``drop``           probability of closing the TCP connection in the middle of the body
``stall``          probability of stopping the text after some deltas; pings keep coming
``stall_silent``   probability of stopping everything after some deltas (no pings either)
``malformed``      probability of a ``data:`` line that is not valid JSON after some text
``fail_first``     the first N requests of every document fail with 529 (integer)
``retry_after``    seconds sent in ``retry-after`` on injected 429s (default 1)
``seed``           integer mixed into every draw (default 0)
``streams_only``   1: faults hit streaming requests only, as behind a proxy that cuts
                   long-lived event streams while plain requests pass (default 0)
=================  ======================================================================

The probabilities are for one request and must sum to at most 1: one uniform draw picks at
most one fault. ``none`` or an empty spec means no faults.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from dataclasses import dataclass

__all__ = (
    "FaultKind",
    "FaultConfig",
    "FaultPlan",
    "plan_fault",
)


class FaultKind(enum.StrEnum):
    """What goes wrong with one request."""

    #: 529 ``overloaded_error`` before any byte of the body.
    HTTP_529 = "http_529"
    #: 500 ``api_error`` before any byte of the body.
    HTTP_500 = "http_500"
    #: 429 ``rate_limit_error`` with ``retry-after``, before any byte of the body.
    HTTP_429 = "http_429"
    #: ``event: error`` with ``overloaded_error`` after some text, then the body ends.
    MIDSTREAM_ERROR = "midstream_error"
    #: The TCP connection closes in the middle of the chunked body.
    DROP = "drop"
    #: Text stops after some deltas; pings continue until the client gives up.
    STALL = "stall"
    #: Text stops after some deltas and nothing else is sent until the client gives up.
    STALL_SILENT = "stall_silent"
    #: A ``content_block_delta`` whose ``data:`` is cut-off JSON, then the body ends.
    MALFORMED = "malformed"

    @property
    def before_stream(self) -> bool:
        """True for faults answered with an HTTP error status instead of a 200 body."""
        return self in _BEFORE_STREAM


_BEFORE_STREAM = frozenset({FaultKind.HTTP_529, FaultKind.HTTP_500, FaultKind.HTTP_429})
_PROBABILITY_KEYS = tuple(kind.value for kind in FaultKind)


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Per-request fault probabilities plus the deterministic knobs (see the module docstring)."""

    http_529: float = 0.0
    http_500: float = 0.0
    http_429: float = 0.0
    midstream_error: float = 0.0
    drop: float = 0.0
    stall: float = 0.0
    stall_silent: float = 0.0
    malformed: float = 0.0
    fail_first: int = 0
    retry_after: float = 1.0
    seed: int = 0
    #: Faults hit only streaming requests: a full Message always comes back whole.
    streams_only: bool = False

    def __post_init__(self) -> None:
        total = 0.0
        for key in _PROBABILITY_KEYS:
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault {key}={value} is not a probability in [0, 1]")

            total += value

        if total > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities sum to {total:g}, more than 1")

        if self.fail_first < 0:
            raise ValueError(f"fault fail_first={self.fail_first} must be >= 0")

        if self.retry_after < 0:
            raise ValueError(f"fault retry_after={self.retry_after} must be >= 0")

    @classmethod
    def parse(cls, spec: str, *, seed: int | None = None) -> FaultConfig:
        """Parse ``"http_529=0.1,drop=0.05,fail_first=2,seed=7"``.

        :param seed: the seed to use when the spec names none (a document's override inherits
            the global seed this way).
        :raises ValueError: naming the offending key on any unknown key or bad value.
        """
        values: dict[str, float | int | bool] = {} if seed is None else {"seed": seed}
        spec = spec.strip()
        if spec.lower() in ("", "none"):
            return cls(**values)  # type: ignore[arg-type]

        for item in spec.split(","):
            key, sep, raw = item.strip().partition("=")
            key = key.strip().lower()
            if not sep:
                raise ValueError(f"fault spec item {item.strip()!r} is not key=value")

            try:
                if key in _PROBABILITY_KEYS or key == "retry_after":
                    values[key] = float(raw)
                elif key in ("fail_first", "seed"):
                    values[key] = int(raw)
                elif key == "streams_only":
                    values[key] = _flag(raw)
                else:
                    raise ValueError(f"unknown fault key {key!r}")

            except ValueError as exc:
                if "unknown fault key" in str(exc):
                    raise

                raise ValueError(f"fault {key}={raw.strip()!r} is not a valid number") from exc

        return cls(**values)  # type: ignore[arg-type]

    def to_spec(self) -> str:
        """The spec string that parses back to this config (non-default keys only)."""
        default = FaultConfig()
        parts = [
            f"{field.name}={getattr(self, field.name)}"
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != getattr(default, field.name)
        ]
        return ",".join(parts) or "none"

    def for_document(self, faults: str | None, fail_first: int | None) -> FaultConfig:
        """Apply a document's ``[sim:faults=...]`` and ``[sim:fail_first=N]`` directives."""
        config = self if faults is None else FaultConfig.parse(faults, seed=self.seed)
        if fail_first is not None:
            config = dataclasses.replace(config, fail_first=fail_first)

        return config


def _flag(raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise ValueError(f"fault streams_only={raw.strip()!r} is not 0 or 1")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The fault for one request: its kind and, for mid-stream kinds, after how many tokens."""

    kind: FaultKind | None
    after_tokens: int = 0


def plan_fault(config: FaultConfig, sim_seed: int, key: str, request_number: int, tokens: int) -> FaultPlan:
    """Decide the fault for request ``request_number`` (1-based) of document ``key``.

    :param tokens: how many tokens the response would carry; mid-stream faults fire after a
        seeded number of tokens in ``[1, max(1, tokens - 1)]``, so always after some text and,
        when there is room, before the end.
    """
    if request_number <= config.fail_first:
        return FaultPlan(FaultKind.HTTP_529)

    rng = random.Random(f"fault:{sim_seed}:{config.seed}:{key}:{request_number}")
    draw = rng.random()
    after = rng.randint(1, max(1, tokens - 1))
    cumulative = 0.0
    for kind in FaultKind:
        cumulative += getattr(config, kind.value)
        if draw < cumulative:
            return FaultPlan(kind, 0 if kind.before_stream else after)

    return FaultPlan(None)
