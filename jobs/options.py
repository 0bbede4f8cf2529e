"""The request options of a job beyond prompt, model and ``max_tokens``: checked at enqueue, stored
beside the messages.

A JSONL line (or HTTP body) may carry::

    "stop_sequences": ["\\n\\nTHE END"], "user_id": "team-7", "service_tier": "auto" | "standard_only",
    "thinking": {"type": "enabled", "budget_tokens": 4000} | {"type": "adaptive"},
    "effort": "low" | "medium" | "high" | "xhigh" | "max",
    "deadline": 1924992000 | "2031-01-01T00:00:00Z",  "timeout_seconds": 3600

Why at enqueue: each of these would otherwise cost a request and come back as a 400 after the
queue had waited for it. ``temperature``, ``top_p`` and ``top_k`` are refused outright: the API
version the SDK speaks (2026-10-21) answers them with a 400 (../shared/ANTHROPIC.md), so a user
coming from older scripts learns it at the door. ``max_tokens`` must cover the thinking budget and
leave room for text (``MIN_TEXT_TOKENS``), since thinking counts toward ``max_tokens``.
``timeout_seconds`` becomes an absolute ``deadline`` at enqueue, so a stored job says when it
expires whatever worker runs it.

**Storage without a migration.** The spec's ``messages`` column is JSON text; a job with options
stores ``{"messages": [...], "options": {...}}`` there instead of the bare list, and a bare list
(every job stored before) reads as a job without options. Both backends share these converters
(``jobs.rows``), so one format serves both.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = (
    "OPTION_FIELDS",
    "REFUSED_SAMPLING",
    "EFFORTS",
    "SERVICE_TIERS",
    "MIN_THINKING_BUDGET",
    "MIN_TEXT_TOKENS",
    "check_options",
    "options_dict",
    "options_kwargs",
    "dump_messages",
    "load_messages",
)

OPTION_FIELDS = (
    "stop_sequences",
    "user_id",
    "service_tier",
    "thinking",
    "effort",
    "deadline",
    "timeout_seconds",
)
_WHY_REFUSED = (
    "is not supported: the API version the SDK speaks (2026-10-21) answers it with a 400 "
    "(remove it; use the prompt or effort to steer the output)"
)
#: Sampling parameters of older API versions, refused at enqueue with the reason.
REFUSED_SAMPLING = ("temperature", "top_p", "top_k")
EFFORTS = ("low", "medium", "high", "xhigh", "max")
SERVICE_TIERS = ("auto", "standard_only")
#: The API's floor for ``thinking.budget_tokens``.
MIN_THINKING_BUDGET = 1024
#: Tokens of text a request must still have room for once its thinking budget is taken.
MIN_TEXT_TOKENS = 1024
_MAX_STOP_SEQUENCES = 8
_MAX_USER_ID = 256

#: A problem reporter: (field, message).
Report = Callable[[str, str], None]


def check_options(
    data: Mapping[str, Any],
    report: Report,
    *,
    max_tokens: int,
    deadline: float | None,
    now: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """The options of one job object as :class:`jobs.models.JobSpec` keyword arguments; every
    problem goes to ``report``. ``deadline`` is the already parsed ``deadline`` field."""
    if deadline is None and data.keys().isdisjoint(_READ):
        return {}  # the common line: none of these fields
    for name in REFUSED_SAMPLING:
        if data.get(name) is not None:
            report(name, _WHY_REFUSED)
    out: dict[str, Any] = {}
    stops = _stop_sequences(data.get("stop_sequences"), report)
    if stops:
        out["stop_sequences"] = stops
    user_id = data.get("user_id")
    if user_id is not None:
        if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > _MAX_USER_ID:
            report("user_id", f"must be a non-empty string of at most {_MAX_USER_ID} characters")
        else:
            out["user_id"] = user_id
    for name, choices in (("service_tier", SERVICE_TIERS), ("effort", EFFORTS)):
        value = data.get(name)
        if value is not None and value not in choices:
            report(name, f"must be one of {', '.join(choices)}, got {json.dumps(value)}")
        elif value is not None:
            out[name] = value
    out.update(_thinking(data.get("thinking"), max_tokens, report))
    timeout = data.get("timeout_seconds")
    if timeout is not None:
        if deadline is not None:
            report("timeout_seconds", 'give "deadline" or "timeout_seconds", not both')
        elif isinstance(timeout, bool) or not isinstance(timeout, int | float):
            report("timeout_seconds", "must be a positive number of seconds")
        elif not math.isfinite(timeout) or timeout <= 0 or timeout > 10 * 365 * 86400:
            report(
                "timeout_seconds", f"must be a positive number of seconds (at most 10 years), got {timeout}"
            )
        else:
            deadline = now() + float(timeout)
    if deadline is not None:
        out["deadline"] = deadline
    return out


#: Every field :func:`check_options` reads (besides the parsed ``deadline``).
_READ = frozenset(
    (*REFUSED_SAMPLING, "stop_sequences", "user_id", "service_tier", "effort", "thinking", "timeout_seconds")
)


def _stop_sequences(value: object, report: Report) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        report("stop_sequences", "must be a list of strings")
        return ()
    if len(value) > _MAX_STOP_SEQUENCES:
        report("stop_sequences", f"at most {_MAX_STOP_SEQUENCES} stop sequences, got {len(value)}")
        return ()
    good = True
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            report(f"stop_sequences[{index}]", "must be a string with a non-whitespace character")
            good = False
    return tuple(value) if good else ()


def _thinking(value: object, max_tokens: int, report: Report) -> dict[str, Any]:
    if value is None:
        return {}
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(value, dict) or kind not in ("enabled", "adaptive"):
        report("thinking", 'must be {"type": "enabled", "budget_tokens": N} or {"type": "adaptive"}')
        return {}
    allowed = {"type", "budget_tokens"} if kind == "enabled" else {"type"}
    for key in sorted(set(value) - allowed):
        report(f"thinking.{key}", f"unknown field for thinking type {kind}")
    if kind == "adaptive":
        return {"thinking": "adaptive"}
    budget = value.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < MIN_THINKING_BUDGET:
        report("thinking.budget_tokens", f"must be an integer of at least {MIN_THINKING_BUDGET}")
        return {}
    if max_tokens < budget + MIN_TEXT_TOKENS:
        report(
            "max_tokens",
            f"must cover thinking.budget_tokens ({budget}) plus at least {MIN_TEXT_TOKENS} tokens of "
            f"text (thinking counts toward max_tokens): at least {budget + MIN_TEXT_TOKENS}, "
            f"got {max_tokens}",
        )
        return {}
    return {"thinking": "enabled", "thinking_budget": budget}


def options_dict(spec: Any) -> dict[str, Any]:
    """The spec's options as a job object's fields (what :func:`check_options` reads back)."""
    out: dict[str, Any] = {}
    if spec.stop_sequences:
        out["stop_sequences"] = list(spec.stop_sequences)
    for name in ("user_id", "service_tier", "effort", "deadline"):
        if getattr(spec, name) is not None:
            out[name] = getattr(spec, name)
    if spec.thinking == "enabled":
        out["thinking"] = {"type": "enabled", "budget_tokens": spec.thinking_budget}
    elif spec.thinking is not None:
        out["thinking"] = {"type": spec.thinking}
    return out


def options_kwargs(stored: Mapping[str, Any]) -> dict[str, Any]:
    """Stored options back into spec keyword arguments (already validated when stored)."""
    out: dict[str, Any] = {
        k: stored[k] for k in ("user_id", "service_tier", "effort", "deadline") if k in stored
    }
    if "stop_sequences" in stored:
        out["stop_sequences"] = tuple(stored["stop_sequences"])
    thinking = stored.get("thinking")
    if isinstance(thinking, dict):
        out["thinking"] = thinking["type"]
        out["thinking_budget"] = thinking.get("budget_tokens")
    return out


def dump_messages(messages: list[dict[str, Any]], options: Mapping[str, Any]) -> str:
    """The ``messages`` column: the bare list, or the list and the options (module docstring).
    Messages whose contents are all strings are written without the general encoder (the text
    ``json.dumps`` would write, byte for byte: a test checks it), as most jobs are one prompt."""
    if not options:
        if all(type(m["content"]) is str and len(m) == 2 for m in messages):
            return "[" + ", ".join(_message_json(m["role"], m["content"]) for m in messages) + "]"
        return json.dumps(messages)
    return json.dumps({"messages": messages, "options": dict(options)})


#: What ``json.dumps`` writes for a string (ASCII, escaped).
_encode = json.encoder.encode_basestring_ascii


def _message_json(role: str, content: str) -> str:
    return '{"role": ' + _encode(role) + ', "content": ' + _encode(content) + "}"


def load_messages(text: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The inverse of :func:`dump_messages`: (messages, spec keyword arguments)."""
    value = json.loads(text)
    if isinstance(value, list):
        return value, {}
    return value["messages"], options_kwargs(value.get("options") or {})
