"""Retention: durations as users write them (``90s``, ``30m``, ``12h``, ``30d``), and the
automatic prune that ``run`` applies when ``[queue] retention`` is set.

The automatic prune is one task in ``run``'s task group. A fleet prunes from one process at a
time: each pass first takes the store's named lease ``retention`` (as the batch submitter takes
``batch-submitter``), so a hundred workers do not all delete the same rows; whoever holds it
prunes, and if it dies another takes over once the lease expires. A pass is
:meth:`jobs.store.Store.prune`, which deletes in batches of a thousand jobs per transaction, so
claims and checkpoints get the lock between batches. A store error skips the pass (it is logged)
and the next pass tries again: retention is housekeeping and never stops a worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import anyio
import structlog

from jobs.errors import ConfigError, StoreError
from jobs.store import Store

__all__ = (
    "LEASE_NAME",
    "RetentionSettings",
    "parse_duration",
    "duration_problem",
    "prune_pass",
    "run_retention",
)

#: The named fleet lease whose holder prunes (``Store.acquire_lease``).
LEASE_NAME = "retention"

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
#: The longest duration accepted (about 100 years): a typo of extra digits is refused.
_LONGEST = 36_500 * 86_400.0

log = structlog.get_logger("worker.retention")


def duration_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a duration, or None: a number and a unit, ``s``, ``m``,
    ``h`` or ``d`` (``90s``, ``30m``, ``12h``, ``30d``, ``1.5h``)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return "must be a duration such as 90s, 30m, 12h or 30d (a number and s, m, h or d)"
    if float(match[1]) * _UNITS[match[2]] > _LONGEST:
        return "must be at most 36500d"
    return None


def parse_duration(text: str, where: str) -> float:
    """``text`` in seconds; a ``ConfigError`` naming ``where`` (a flag, a config key) if it is not
    a duration."""
    problem = duration_problem(text)
    if problem is not None:
        raise ConfigError(f"{where} {problem}, got {text!r}")
    match = _DURATION.fullmatch(text.strip())
    assert match is not None
    return float(match[1]) * _UNITS[match[2]]


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """What ``run`` prunes and how often."""

    #: Finished jobs that ended longer ago than this (seconds) are deleted.
    older_than: float
    #: Seconds between passes.
    every: float = 300.0
    #: Written in the log, as the user wrote it (``30d``).
    label: str = ""


async def prune_pass(store: Store, owner: str, settings: RetentionSettings) -> int | None:
    """One pass: take (or renew) the fleet's retention lease, then prune. Returns how many jobs
    were deleted, or None when another process holds the lease or the store failed (logged)."""
    try:
        # Held a little past the next pass, so the holder keeps it from one pass to the next.
        if not await store.acquire_lease(LEASE_NAME, owner, 2 * settings.every):
            return None
        removed = await store.prune(settings.older_than)
    except StoreError as exc:
        log.warning("retention_failed", error=str(exc), retry_in=settings.every)
        return None
    if removed:
        log.info("retention_pruned", jobs=removed, older_than=settings.label or settings.older_than)
    return removed


async def run_retention(store: Store, owner: str, settings: RetentionSettings) -> None:
    """Prune at once, then every ``settings.every`` seconds, until cancelled."""
    while True:
        await prune_pass(store, owner, settings)
        await anyio.sleep(settings.every)
