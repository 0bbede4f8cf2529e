"""Which models accept a final assistant message (a prefill), by model id. Pure.

Kept in ``jobs`` because both sides need it: the JSONL validator refuses, at enqueue, a job whose
own prompt ends with an assistant turn on a model that rejects prefill (it could never succeed),
and the worker picks how to resume a job from it (:mod:`worker.resume`).
"""

from __future__ import annotations

import re

__all__ = ("supports_prefill",)

# 4.6 and later, every 5.x, and the Mythos/Fable families reject prefill.
_NO_PREFILL = re.compile(
    r"^claude-(?:(?:opus|sonnet|haiku)-4-(?:[6-9]|\d\d)|[a-z]+-[5-9](?:\b|-)|mythos|fable)"
)


def supports_prefill(model: str) -> bool:
    """Whether ``model`` is expected to accept a final assistant message.

    A guess from the id; a model that answers with the prefill 400 anyway is switched to
    continuation by the worker, which remembers it for the rest of the process.
    """
    return _NO_PREFILL.match(model) is None
