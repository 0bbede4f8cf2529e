"""The API parameters a job's options add to each request (see ``jobs.options`` for the checks).

Kept apart from ``worker.attempt`` because the mapping is pure and has rules of its own:

* ``user_id`` goes out as the API's ``metadata.user_id``; the job's own ``metadata`` is ours and
  never leaves the store.
* Thinking counts toward ``max_tokens``. A request sized down (the job's output budget, the rate
  limiter's bucket, a cost cap) may no longer cover the job's ``thinking_budget`` plus text, so
  the budget shrinks with it (to half the request, never under the API's floor of 1,024), and a
  request too small for even that is sent without thinking: it writes text, which is what the
  document needs. Adaptive thinking sizes itself.
* Effort goes in ``output_config.effort`` (the installed SDK's ``OutputConfigParam``).
"""

from __future__ import annotations

from typing import Any

from jobs.models import JobSpec
from jobs.options import MIN_TEXT_TOKENS, MIN_THINKING_BUDGET

__all__ = ("request_options", "thinks")


def thinks(spec: JobSpec) -> bool:
    """Whether the job's requests think (and so can never resume by prefill)."""
    return spec.thinking is not None


def request_options(spec: JobSpec, max_tokens: int) -> dict[str, Any]:
    """The extra parameters of one request of ``max_tokens`` for ``spec``."""
    params: dict[str, Any] = {}
    if spec.stop_sequences:
        params["stop_sequences"] = list(spec.stop_sequences)
    if spec.user_id is not None:
        params["metadata"] = {"user_id": spec.user_id}
    if spec.service_tier is not None:
        params["service_tier"] = spec.service_tier
    if spec.effort is not None:
        params["output_config"] = {"effort": spec.effort}
    thinking = _thinking(spec, max_tokens)
    if thinking is not None:
        params["thinking"] = thinking
    return params


def _thinking(spec: JobSpec, max_tokens: int) -> dict[str, Any] | None:
    if spec.thinking == "adaptive":
        return {"type": "adaptive"}
    if spec.thinking != "enabled" or spec.thinking_budget is None:
        return None
    budget = spec.thinking_budget
    if max_tokens < budget + MIN_TEXT_TOKENS:
        budget = max(MIN_THINKING_BUDGET, max_tokens // 2)
    if max_tokens < budget + MIN_TEXT_TOKENS:
        return None
    return {"type": "enabled", "budget_tokens": budget}
