"""The retry policy: which failures are retryable, and how long to wait. Pure and unit-tested.

One layer owns retries: the SDK runs with ``max_retries=0`` and every failure of a request, before
or during its stream, comes here. The classification follows what the SDK really raises
(../shared/ANTHROPIC.md §2):

* retryable: HTTP 408, 409, 429, 5xx (529 overloaded included); a mid-stream ``event: error`` (the
  SDK raises a plain ``APIStatusError`` with ``status_code == 200``); connection errors; a raw
  ``httpx2`` transport error from a dropped connection (not wrapped by the SDK); a malformed event
  (a JSON decode error); a stall detected by our idle watchdog;
* terminal: HTTP 400, 401, 402, 403, 404, 413, 422 and any other 4xx; a refusal; anything we do
  not recognise (a bug must not loop forever: the job fails with the reason, the pool goes on).
  A 404 (or 400) that names the model is a retired or unknown model: kind ``model_retired``, with a
  reason that says so (``worker.lifecycle``).

A 400 that says the model rejects assistant prefill is terminal *for that request shape* only: the
attempt switches to a continuation turn (see ``is_prefill_rejection``).
"""

from __future__ import annotations

import email.utils
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anthropic
import httpx2

from worker.errors import BudgetError, DeadlineError, RefusalError
from worker.lifecycle import retired_model_reason

__all__ = (
    "StallError",
    "RequestTimeoutError",
    "Decision",
    "classify",
    "classify_batch_error",
    "backoff_delay",
    "retry_after_seconds",
    "is_prefill_rejection",
)

_RETRYABLE_STATUS = frozenset({408, 409, 429})
# Mid-stream error types that mean "this request is wrong", not "the service hiccuped".
_TERMINAL_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "billing_error",
        "request_too_large",
    }
)
_PREFILL_REJECTED = "does not support assistant message prefill"


class StallError(Exception):
    """No text arrived for ``idle_timeout`` seconds, although the connection stayed open."""


class RequestTimeoutError(Exception):
    """One request ran longer than ``[anthropic] request_timeout`` (its text so far is kept)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do about a failed request."""

    retryable: bool
    #: A short, stable name for the failure kind (logged, counted, stored as the attempt's error).
    kind: str
    #: A human-readable reason (no prompt text).
    reason: str
    #: The server's ``retry-after``, in seconds, if it sent one.
    retry_after: float | None = None


def classify(exc: BaseException) -> Decision:
    """Decide whether ``exc``, raised while making or streaming one request, is worth retrying."""
    if isinstance(exc, StallError):
        return Decision(True, "stall", str(exc))
    if isinstance(exc, RefusalError):
        return Decision(False, "refusal", str(exc))
    if isinstance(exc, BudgetError):
        return Decision(False, "budget", str(exc))
    if isinstance(exc, DeadlineError):
        return Decision(False, "deadline", str(exc))
    if isinstance(exc, RequestTimeoutError):
        return Decision(True, "request_timeout", str(exc))
    if isinstance(exc, anthropic.APIStatusError):
        return _classify_status(exc)
    if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
        return Decision(True, "connection", f"{type(exc).__name__}: {exc}")
    if isinstance(exc, httpx2.TransportError):  # a drop mid-stream escapes the SDK unwrapped
        return Decision(True, "transport", f"{type(exc).__name__}: {exc}")
    if isinstance(exc, json.JSONDecodeError):
        return Decision(True, "malformed_event", f"malformed event: {exc.msg}")
    return Decision(False, "unexpected", f"{type(exc).__name__}: {exc}")


def classify_batch_error(error_type: str, message: str) -> Decision:
    """An ``errored`` Message Batches result (``result.error.error``): the same rule as an error
    event inside a stream, since both name the API's error type without an HTTP status."""
    retryable = error_type not in _TERMINAL_ERROR_TYPES
    return Decision(retryable, f"batch_{error_type}", f"batch request errored: {error_type}: {message}")


def _classify_status(exc: anthropic.APIStatusError) -> Decision:
    status = exc.status_code
    error_type = _error_type(exc)
    retry_after = retry_after_seconds(exc.response.headers)
    if status == 200:  # an `event: error` inside a 200 stream
        retryable = error_type not in _TERMINAL_ERROR_TYPES
        return Decision(retryable, f"stream_{error_type}", f"mid-stream {error_type}", retry_after)
    message = f"HTTP {status} {error_type}: {_api_message(exc)}"
    if status in _RETRYABLE_STATUS or status >= 500:
        return Decision(True, f"http_{status}", message, retry_after)
    retired = retired_model_reason(status, _api_message(exc))
    if retired is not None:
        return Decision(False, "model_retired", retired)
    return Decision(False, f"http_{status}", message)


def _error_type(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("type"), str):
            return str(error["type"])
    return "error"


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
    return exc.message


def is_prefill_rejection(exc: BaseException) -> bool:
    """True for the 400 a model answers when it does not accept a final assistant message."""
    return isinstance(exc, anthropic.BadRequestError) and _PREFILL_REJECTED in _api_message(exc)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's requested delay: ``retry-after-ms``, else ``retry-after`` (seconds or HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    now = email.utils.parsedate_to_datetime(email.utils.formatdate(usegmt=True))
    return max(0.0, float((when - now).total_seconds()))


def backoff_delay(
    failures: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    retry_after_max: float = 120.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before the next attempt, after ``failures`` failed attempts (≥ 1).

    Exponential with "equal jitter" (half fixed, half random), so a fleet that failed together does
    not come back together. A server's ``retry-after`` is a floor, capped at ``retry_after_max`` so a
    huge value cannot park a job for an hour; a little jitter is added on top of it too.
    """
    exponential = min(cap, base * 2.0 ** max(0, failures - 1))
    delay = exponential / 2 + rand() * exponential / 2
    if retry_after is not None:
        floor = min(retry_after, retry_after_max)
        delay = max(delay, floor + rand() * min(1.0, floor * 0.1))
    return delay
