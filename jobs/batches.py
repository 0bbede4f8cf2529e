"""Rules of Message Batches: which way a job goes (``route``), and its ``custom_id`` in a batch.

A batch may take up to 24 h, so a job goes by batch only while its deadline leaves the batch
horizon (``[queue] batch_horizon``). The rule is decided at enqueue and again by the submitter each
time it would send the job in a batch (first round, follow-up round, retry, re-batch after
expiry): a job whose deadline came within the horizon meanwhile is streamed instead.

The API accepts ``custom_id`` matching ``^[a-zA-Z0-9_-]{1,64}$`` and rejects a whole batch for one
bad id (../shared/SERVICE.md §1.2). Job ids are free text, so an id that does not fit is mapped to
a stable alias (a hash of the id), stored on the job beside the batch it is in: results are matched
back through the stored mapping, never by reversing the alias.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

__all__ = (
    "CUSTOM_ID",
    "DEADLINE_NEAR",
    "OUTPUT_300K_BETA",
    "Route",
    "custom_id_for",
    "route",
    "has_output_300k",
)

Route = Literal["stream", "batch"]

#: The reason recorded when a batch job is switched to streaming by :func:`route`.
DEADLINE_NEAR = "deadline_near"

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")

#: The Batch API beta that lets a request ask up to 300K output tokens (../shared/SERVICE.md §1:
#: Opus 5/5.5, Sonnet 5/5.5, Haiku 5.5), sent as ``anthropic-beta`` on the batch's creation.
OUTPUT_300K_BETA = "output-300k-2026-03-24"
_OUTPUT_300K_MODELS = re.compile(r"claude-(?:opus-5(?:-5)?|sonnet-5(?:-5)?|haiku-5-5)(?:-\d{8})?")


def has_output_300k(model: str) -> bool:
    """True for the models whose batch requests the 300K output beta covers."""
    return _OUTPUT_300K_MODELS.fullmatch(model) is not None


#: Aliases start with this prefix; a job id that itself starts with it is aliased too, so an id
#: can never equal another job's alias.
_ALIAS_PREFIX = "job_"


def custom_id_for(job_id: str) -> str:
    """The job id itself when the API accepts it, else ``job_`` and 58 hex digits (232 bits) of
    its SHA-256: stable across rounds and processes, and unique in practice."""
    if CUSTOM_ID.fullmatch(job_id) and not job_id.startswith(_ALIAS_PREFIX):
        return job_id
    return _ALIAS_PREFIX + hashlib.sha256(job_id.encode()).hexdigest()[:58]


def route(mode: str, deadline: float | None, now: float, horizon: float) -> Route:
    """How a job of ``mode`` (``stream``, ``batch`` or ``auto``) goes at ``now``: by batch only
    when it asks for batch (or ``auto``) and its deadline, if any, is at least ``horizon`` seconds
    away. ``auto`` without a deadline streams (nothing says it can wait); ``batch`` without one
    waits as long as it takes. A deadline inside the horizon streams even a ``batch`` job: half the
    price is worth nothing if the document arrives too late."""
    if mode == "stream":
        return "stream"
    if mode not in ("batch", "auto"):
        raise ValueError(f"unknown job mode {mode!r}: expected stream, batch or auto")
    if deadline is None:
        return "batch" if mode == "batch" else "stream"
    return "batch" if deadline - now >= horizon else "stream"
