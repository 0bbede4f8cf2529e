"""The failure policy: every failure lands in the scope the issue's table gives it."""

from __future__ import annotations

import errno

import anthropic
import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.errors import JobNotFoundError, JobStateError, LeaseLostError, StoreError
from jobs.models import Outcome
from tests.test_retry import status_error
from worker.errors import RefusalError
from worker.policy import Scope, Spell, Verdict, is_store_outage, judge, settle_outcome
from worker.retry import StallError

REQUEST = httpx2.Request("POST", "http://127.0.0.1/v1/messages")


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, "invalid_request_error"), (413, "request_too_large"), (422, "invalid_request_error")],
)
def test_a_bad_request_is_the_jobs_fault(status: int, error_type: str) -> None:
    verdict = judge(status_error(status, error_type))
    assert verdict.scope is Scope.JOB and not verdict.retryable


def test_a_retired_model_and_a_refusal_are_the_jobs_fault() -> None:
    assert judge(status_error(404, "not_found_error", "model: claude-2.1")).scope is Scope.JOB
    assert judge(RefusalError("no")).scope is Scope.JOB


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(401, "authentication_error"), (402, "billing_error"), (403, "permission_error")],
)
def test_key_billing_and_permission_errors_stop_the_run_without_charging(
    status: int, error_type: str
) -> None:
    verdict = judge(status_error(status, error_type))
    assert verdict.scope is Scope.ACCOUNT and verdict.stop
    assert settle_outcome(verdict, patience_left=False) is Outcome.RELEASED


@pytest.mark.parametrize(("status", "error_type"), [(429, "rate_limit_error"), (529, "overloaded_error")])
def test_overload_and_rate_limits_are_weather(status: int, error_type: str) -> None:
    verdict = judge(status_error(status, error_type, headers={"retry-after": "3"}))
    assert verdict.scope is Scope.ATTEMPT and verdict.weather and verdict.retry_after == 3.0
    assert settle_outcome(verdict, patience_left=True) is Outcome.RELEASED
    assert settle_outcome(verdict, patience_left=False) is Outcome.RETRY


@pytest.mark.parametrize(
    "exc",
    [
        StallError("idle"),
        anthropic.APIConnectionError(request=REQUEST),
        httpx2.RemoteProtocolError("dropped"),
        status_error(500, "api_error"),
        status_error(503, "api_error"),
    ],
)
def test_transport_and_server_faults_are_the_attempts_fault(exc: BaseException) -> None:
    verdict = judge(exc)
    assert verdict.scope is Scope.ATTEMPT and not verdict.weather and not verdict.stop
    assert settle_outcome(verdict, patience_left=True) is Outcome.RETRY


def test_a_store_outage_or_a_full_disk_pauses_the_worker() -> None:
    for exc in (StoreError("database is locked"), OSError(errno.ENOSPC, "No space left on device")):
        verdict = judge(exc)
        assert verdict.scope is Scope.ACCOUNT and not verdict.stop
        assert settle_outcome(verdict, patience_left=False) is Outcome.RELEASED


def test_store_answers_are_not_outages() -> None:
    assert is_store_outage(StoreError("down"))
    for answer in (LeaseLostError(), JobNotFoundError(), JobStateError()):
        assert not is_store_outage(answer)


def test_anything_unrecognised_is_terminal_so_a_bug_cannot_loop() -> None:
    assert judge(ValueError("bug")) == Verdict(Scope.JOB, "unexpected", "ValueError: bug")


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=20), st.floats(0, 1e6))
def test_a_spell_is_timed_from_its_first_hit(hits: list[float], limit: float) -> None:
    spell = Spell()
    for at in sorted(hits):
        spell = spell.hit(at)
    first, last = min(hits), max(hits)
    assert spell.since == first
    assert spell.lasted(last) == last - first
    assert spell.exceeded(last, limit) == (last - first > limit)
    assert not spell.clear().exceeded(last, 0.0)
