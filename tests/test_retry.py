"""The retry policy: every failure kind the SDK raises is classified as the issue specifies."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import RefusalError
from worker.retry import StallError, backoff_delay, classify, is_prefill_rejection, retry_after_seconds

REQUEST = httpx2.Request("POST", "http://127.0.0.1/v1/messages")


def status_error(
    status: int, error_type: str, message: str = "m", headers: dict[str, str] | None = None
) -> Any:
    """The exception the real SDK builds for a response, through its own factory."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    response = httpx2.Response(status, request=REQUEST, json=body, headers=headers or {})
    client = anthropic.AsyncAnthropic(api_key="x", base_url="http://127.0.0.1")
    return client._make_status_error(json.dumps(body), body=body, response=response)


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
        (408, "timeout_error"),
        (409, "conflict_error"),
        (504, "timeout_error"),
        (503, "api_error"),
    ],
)
def test_retryable_statuses(status: int, error_type: str) -> None:
    decision = classify(status_error(status, error_type))
    assert decision.retryable
    assert decision.kind == f"http_{status}"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
    ],
)
def test_terminal_statuses(status: int, error_type: str) -> None:
    decision = classify(status_error(status, error_type, "nope"))
    assert not decision.retryable
    assert "nope" in decision.reason


def test_mid_stream_error_event_is_retryable() -> None:
    """The SDK raises a plain APIStatusError with status 200 for an `event: error`."""
    exc = status_error(200, "overloaded_error", "Overloaded")
    assert type(exc) is anthropic.APIStatusError
    decision = classify(exc)
    assert decision.retryable
    assert decision.kind == "stream_overloaded_error"


def test_mid_stream_invalid_request_is_terminal() -> None:
    assert not classify(status_error(200, "invalid_request_error")).retryable


def test_transport_and_connection_errors_are_retryable() -> None:
    assert classify(httpx2.RemoteProtocolError("peer closed connection")).retryable
    assert classify(httpx2.ReadTimeout("slow")).retryable
    assert classify(anthropic.APIConnectionError(request=REQUEST)).retryable
    assert classify(anthropic.APITimeoutError(request=REQUEST)).retryable


def test_malformed_event_stall_refusal_and_bugs() -> None:
    try:
        json.loads("{not json")
    except json.JSONDecodeError as exc:
        malformed = exc
    assert classify(malformed).kind == "malformed_event"
    assert classify(malformed).retryable
    assert classify(StallError("no event for 5 s")).retryable
    assert not classify(RefusalError("refused")).retryable
    unexpected = classify(KeyError("oops"))
    assert not unexpected.retryable
    assert unexpected.kind == "unexpected"


def test_retry_after_is_read_from_headers() -> None:
    exc = status_error(429, "rate_limit_error", headers={"retry-after": "7"})
    assert classify(exc).retry_after == 7.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def test_prefill_rejection_is_recognised() -> None:
    exc = status_error(
        400,
        "invalid_request_error",
        "This model does not support assistant message prefill. "
        "The conversation must end with a user message.",
    )
    assert is_prefill_rejection(exc)
    assert not is_prefill_rejection(status_error(400, "invalid_request_error", "max_tokens: too big"))


@given(
    failures=st.integers(min_value=1, max_value=60),
    base=st.floats(min_value=0.01, max_value=10),
    cap=st.floats(min_value=0.01, max_value=300),
    r=st.floats(min_value=0, max_value=1),
)
def test_backoff_is_bounded_and_jittered(failures: int, base: float, cap: float, r: float) -> None:
    delay = backoff_delay(failures, base=base, cap=cap, rand=lambda: r)
    ceiling = min(cap, base * 2 ** (failures - 1))
    assert ceiling / 2 - 1e-9 <= delay <= ceiling + 1e-9


@given(retry_after=st.floats(min_value=0, max_value=1e7), r=st.floats(min_value=0, max_value=1))
def test_retry_after_is_honoured_but_capped(retry_after: float, r: float) -> None:
    delay = backoff_delay(1, base=0.5, cap=1.0, retry_after=retry_after, retry_after_max=120, rand=lambda: r)
    assert delay >= min(retry_after, 120) - 1e-9
    assert delay <= max(1.0, min(retry_after, 120) * 1.1 + 1e-9, 121)
