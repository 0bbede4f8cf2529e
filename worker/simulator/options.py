"""The request options of a Messages body beyond model, messages and max_tokens, checked as the API does.

* **Sampling parameters are gone.** The API version the SDK speaks (``2026-10-21``) answers
  ``temperature``, ``top_p`` and ``top_k`` with a 400 (../shared/ANTHROPIC.md §3). The wording of
  the message is ours; the status and the field it names are the API's.
* ``stop_sequences``: a list of non-empty strings; generation stops *before* the first one found,
  with ``stop_reason = "stop_sequence"`` and the sequence reported.
* ``metadata``: an object whose only field is ``user_id`` (a string of at most 256 characters).
* ``service_tier``: ``"auto"`` or ``"standard_only"``; responses report ``"standard"``.
* ``thinking``: ``enabled`` (with ``budget_tokens`` ≥ 1,024 and below ``max_tokens``),
  ``adaptive`` or ``disabled``, each allowed only on the model generations that take it
  (../shared/SERVICE.md §3.1), and never with a final assistant turn (no prefill while thinking).
  Mythos, Fable and Opus 5.5 always think. ``output_config.effort`` is one of the five levels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ("RequestOptions", "OptionError", "parse_options", "THINKING_PREFILL")

EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})
THINKING_PREFILL = "messages: a final assistant message (prefill) cannot be combined with extended thinking"

#: 4.5 and earlier: manual thinking only.
_LEGACY = re.compile(r"claude-(?:3[-.].*|(?:opus|sonnet|haiku)-4(?:-[015])?(?:-\d{8}|-latest)?)")
_ADAPTIVE_ONLY = re.compile(r"claude-(?:opus-4-[78]|opus-5(?!-5)|sonnet-5|haiku-5)")
_ALWAYS_ON = re.compile(r"claude-(?:opus-5-5|mythos|fable)")


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """The options the simulator acts on or reports; everything else in the body is ignored."""

    stop_sequences: tuple[str, ...] = ()
    user_id: str | None = None
    service_tier: str | None = None
    #: ``None`` (no thinking), ``"enabled"`` or ``"adaptive"``.
    thinking: str | None = None
    budget_tokens: int | None = None
    effort: str | None = None


class OptionError(ValueError):
    """A bad option; the message names the field (answered as a 400 ``invalid_request_error``)."""


def _invalid(message: str) -> OptionError:
    return OptionError(message)


def parse_options(
    body: dict[str, Any], model: str, max_tokens: int, ends_with_assistant: bool
) -> RequestOptions:
    """Validate the options of ``body``; raises ``OptionError`` naming the field."""
    for name in ("temperature", "top_p", "top_k"):
        if name in body:
            raise _invalid(f"{name}: this parameter is not supported by API version 2026-10-21")
    thinking, budget = _thinking(body.get("thinking"), model, max_tokens)
    if thinking is not None and ends_with_assistant:
        raise _invalid(THINKING_PREFILL)
    return RequestOptions(
        stop_sequences=_stop_sequences(body.get("stop_sequences")),
        user_id=_user_id(body.get("metadata")),
        service_tier=_choice(body.get("service_tier"), "service_tier", {"auto", "standard_only"}),
        thinking=thinking,
        budget_tokens=budget,
        effort=_effort(body.get("output_config")),
    )


def _stop_sequences(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _invalid("stop_sequences: Input should be a valid list")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _invalid(f"stop_sequences.{index}: each stop sequence must contain non-whitespace")
    return tuple(value)


def _user_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid("metadata: Input should be a valid dictionary")
    extra = set(value) - {"user_id"}
    if extra:
        raise _invalid(f"metadata.{sorted(extra)[0]}: Extra inputs are not permitted")
    user_id = value.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or len(user_id) > 256):
        raise _invalid("metadata.user_id: Input should be a string of at most 256 characters")
    return user_id


def _choice(value: object, field: str, allowed: set[str]) -> str | None:
    if value is not None and value not in allowed:
        raise _invalid(f"{field}: Input should be {' or '.join(repr(a) for a in sorted(allowed))}")
    return value if isinstance(value, str) else None


def _effort(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid("output_config: Input should be a valid dictionary")
    return _choice(value.get("effort"), "output_config.effort", set(EFFORTS))


def _thinking(value: object, model: str, max_tokens: int) -> tuple[str | None, int | None]:
    always_on = _ALWAYS_ON.match(model) is not None
    if value is None:
        return ("adaptive", None) if always_on else (None, None)
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in ("enabled", "adaptive", "disabled"):
        raise _invalid("thinking.type: Input should be 'enabled', 'adaptive' or 'disabled'")
    assert isinstance(value, dict)
    legacy = _LEGACY.fullmatch(model) is not None
    if kind == "disabled":
        if always_on:
            raise _invalid(f"thinking.type.disabled: {model} always thinks; lower the effort instead")
        return None, None
    if kind == "adaptive" and legacy:
        raise _invalid(f"thinking.type.adaptive: not supported by {model}; use thinking.type.enabled")
    if kind == "enabled" and (always_on or _ADAPTIVE_ONLY.match(model)):
        raise _invalid(f"thinking.type.enabled: not supported by {model}; use thinking.type.adaptive")
    if kind == "adaptive":
        return "adaptive", None
    budget = value.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise _invalid("thinking.enabled.budget_tokens: Field required (an integer)")
    if budget < 1024 or budget >= max_tokens:
        raise _invalid("thinking.enabled.budget_tokens: must be ≥ 1024 and less than max_tokens")
    return "enabled", budget
