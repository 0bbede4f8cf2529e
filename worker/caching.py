"""Prompt caching on the request side: where the ``cache_control`` breakpoints go, and what the
API's usage teaches about the minimum cacheable length (../shared/SERVICE.md §2).

Every request of a job repeats the same **stable prefix**: the system prompt and the job's own
prompt. Continuations past ``max_tokens``, resumes and retries all re-send it, so it is marked:

1. a breakpoint on the system prompt, which many jobs share (one write serves the whole fleet
   within the TTL), unless it is known to be shorter than the model's minimum;
2. a breakpoint on the last block of the job's own prompt (what the job's later requests re-read);
3. optionally (``cache_checkpoint``), the document so far is sent as one text block per request
   that wrote it, with a breakpoint on the last: the next continuation then reads everything but
   the newest part from the cache. A resume's first request cannot reuse any of it (the blocks of
   a new attempt differ from the old ones), so this only pays with several continuations per
   attempt. Measured (``bench/economy``, 3,000-token shared system prompt, 4,000-token documents,
   20 % mid-stream faults): with ``max_tokens`` 1,500 (3 requests a document) the input cost of
   continuations and resumes is 47 % of uncached against 49 % for the prefix alone; with
   ``max_tokens`` 500 (8 requests) 29 % against 47 %. Off by default (``[costs]
   cache_checkpoint``) until multi-block assistant turns are verified against the real API.

At most 4 breakpoints per request (the API's limit), the user's own marks on content blocks
included: we use at most 3, and only what the user's marks leave (see :func:`mark_request`). The
minimum cacheable length is model-dependent and the sources disagree (512 to 4,096 tokens), so it
is not hard-coded: :class:`MinimumLearner` narrows it from each response's usage
(``cache_creation_input_tokens`` and ``cache_read_input_tokens`` are 0 when the marked prefix was
too short), and a system prompt known to be too short alone gets no breakpoint of its own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import structlog

from jobs.models import Usage

__all__ = (
    "MAX_BREAKPOINTS",
    "MinimumLearner",
    "mark_request",
    "cache_reads_count_for_itpm",
)

log = structlog.get_logger("worker.caching")

#: The API accepts at most this many ``cache_control`` blocks per request.
MAX_BREAKPOINTS = 4

# Models whose cache reads count against input tokens per minute (the † rows of the rate-limit
# tables). The 2025 tables marked only older models, now retired; the list for 5.x models is
# unverified (../shared/SERVICE.md §2.6), so none of the current ones is listed.
_CACHE_READS_COUNT = re.compile(r"claude-(?:3|haiku-3|sonnet-3|opus-3)")


def cache_reads_count_for_itpm(model: str) -> bool:
    """Whether ``model``'s cache reads count against the input-tokens-per-minute limit."""
    return _CACHE_READS_COUNT.match(model) is not None


class MinimumLearner:
    """Bounds on each model's minimum cacheable prefix, from the usage the API returned.

    ``too_short`` is the longest marked prefix that was not cached; ``long_enough`` the shortest
    that was. Shared by a process's attempts."""

    __slots__ = ("_bounds",)

    def __init__(self) -> None:
        self._bounds: dict[str, tuple[int, float]] = {}

    def bounds(self, model: str) -> tuple[int, float]:
        """(longest prefix seen uncached, shortest seen cached); (0, inf) when nothing is known."""
        return self._bounds.get(model, (0, math.inf))

    def learn(self, model: str, prefix_tokens: int, usage: Usage) -> None:
        """Record one response to a request whose longest marked prefix was ``prefix_tokens``."""
        too_short, long_enough = self.bounds(model)
        cached = usage.cache_creation_input_tokens + usage.cache_read_input_tokens
        if cached > 0:
            long_enough = min(long_enough, cached)
        elif prefix_tokens > too_short:
            too_short = prefix_tokens
        if (too_short, long_enough) != self.bounds(model):
            self._bounds[model] = (too_short, long_enough)
            log.info(
                "cache_minimum_learned",
                model=model,
                uncached_up_to=too_short,
                cached_from=None if math.isinf(long_enough) else int(long_enough),
            )

    def worth_marking(self, model: str, prefix_tokens: int) -> bool:
        """False once a prefix at least this long is known to be too short to cache."""
        return prefix_tokens > self.bounds(model)[0]


def _block(text: str, ttl: str | None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if ttl is not None:
        block["cache_control"] = {"type": "ephemeral", "ttl": ttl}
    return block


def mark_request(
    params: dict[str, Any],
    *,
    prompt_messages: int,
    ttl: str,
    system_tokens: int,
    learner: MinimumLearner,
    segments: Sequence[str] | None = None,
) -> int:
    """Add breakpoints to ``params`` in place; returns how many were placed (ours, not the user's).

    The user's own ``cache_control`` marks on blocks are kept and counted: ours fill only what the
    API's 4 leave, in order of worth (the last block of the job's prompt, which every later request
    re-reads; the system prompt; the document so far), and one that would put a ``1h`` mark after a
    ``5m`` one (the API refuses that order) is left out.

    :param prompt_messages: how many leading messages are the job's own prompt, unchanged.
    :param system_tokens: the system prompt's estimated length in tokens.
    :param segments: the document so far split at request boundaries, to cache it (see above);
        it must join to the assistant message that follows the prompt.
    """
    messages: list[dict[str, Any]] = params["messages"]
    last_prompt = min(prompt_messages, len(messages)) - 1
    while last_prompt >= 0 and messages[last_prompt]["role"] != "user":
        last_prompt -= 1
    placed = 0
    for place in (_mark_prompt, _mark_system, _mark_segments):
        if _count_marks(params) >= MAX_BREAKPOINTS:
            break
        system_before, messages_before = params.get("system"), list(messages)
        if place(params, last_prompt, ttl, system_tokens, learner, segments):
            if _ordered(params):
                placed += 1
            else:
                if system_before is None:
                    params.pop("system", None)
                else:
                    params["system"] = system_before
                messages[:] = messages_before
    system = params.get("system")
    if isinstance(system, str) and system:
        params["system"] = [_block(system, None)]
    return placed


def _mark_prompt(
    params: dict[str, Any], last_prompt: int, ttl: str, _tokens: int, _learner: MinimumLearner, _s: object
) -> bool:
    """A breakpoint on the last block of the job's own prompt, unless the user marked it already."""
    if last_prompt < 0:
        return False
    messages: list[dict[str, Any]] = params["messages"]
    message = messages[last_prompt]
    content = message["content"]
    if isinstance(content, str):
        messages[last_prompt] = {**message, "content": [_block(content, ttl)]}
        return True
    if content[-1].get("cache_control") is not None:
        return False
    last = {**content[-1], "cache_control": {"type": "ephemeral", "ttl": ttl}}
    messages[last_prompt] = {**message, "content": [*content[:-1], last]}
    return True


def _mark_system(
    params: dict[str, Any], _last: int, ttl: str, tokens: int, learner: MinimumLearner, _s: object
) -> bool:
    system = params.get("system")
    if not isinstance(system, str) or not system or not learner.worth_marking(str(params["model"]), tokens):
        return False
    params["system"] = [_block(system, ttl)]
    return True


def _mark_segments(
    params: dict[str, Any],
    last_prompt: int,
    ttl: str,
    _tokens: int,
    _learner: MinimumLearner,
    segments: Sequence[str] | None,
) -> bool:
    messages: list[dict[str, Any]] = params["messages"]
    after = last_prompt + 1
    if not segments or after >= len(messages) or messages[after]["role"] != "assistant":
        return False
    parts = [s for s in segments if s]
    if not parts or "".join(parts) != messages[after]["content"]:
        return False
    blocks = [_block(part, None) for part in parts]
    blocks[-1] = _block(parts[-1], ttl)
    messages[after] = {**messages[after], "content": blocks}
    return True


def _marks(params: dict[str, Any]) -> list[str]:
    """The TTL of every ``cache_control`` in the request, in the API's render order."""
    contents: list[object] = [params.get("system"), *(m["content"] for m in params["messages"])]
    found: list[str] = []
    for content in contents:
        for block in content if isinstance(content, list) else ():
            control = block.get("cache_control") if isinstance(block, dict) else None
            if isinstance(control, dict):
                found.append(str(control.get("ttl", "5m")))
    return found


def _count_marks(params: dict[str, Any]) -> int:
    return len(_marks(params))


def _ordered(params: dict[str, Any]) -> bool:
    """No ``1h`` mark after a ``5m`` one."""
    marks = _marks(params)
    return "5m" not in marks or "1h" not in marks[marks.index("5m") :]
