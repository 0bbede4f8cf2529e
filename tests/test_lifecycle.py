"""Models that age: the SDK's deprecation table, its warnings kept out of jobs, retired models."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import structlog

from jobs.models import State
from jobs.sqlite import SQLiteStore
from tests.pool_harness import pool_run, spec
from worker.lifecycle import (
    deprecated_models,
    end_of_life,
    ignore_request_warnings,
    log_deprecated,
    retired_model_reason,
)

#: Deprecated in the locked SDK (end of life 2027-01-22), still served by the API and the simulator.
DEPRECATED = "claude-opus-4-5"
#: Past its end of life (2026-11-30): the API answers 404.
RETIRED = "claude-sonnet-4-5"


def test_the_table_is_the_one_behind_the_sdks_warnings() -> None:
    from anthropic.resources.messages import messages as sdk_messages

    assert deprecated_models() == dict(sdk_messages.DEPRECATED_MODELS)  # type: ignore[attr-defined]
    assert end_of_life(DEPRECATED) is not None
    assert end_of_life("claude-haiku-4-5") is None


def test_reading_the_table_does_not_import_the_sdk() -> None:
    """Commands that make no API call read the table without paying for the SDK's import."""
    code = (
        "import sys; from worker.lifecycle import deprecated_models; "
        f"assert {DEPRECATED!r} in deprecated_models(); print('anthropic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_one_structured_warning_per_deprecated_model() -> None:
    with structlog.testing.capture_logs() as logs:
        found = log_deprecated({DEPRECATED: 3, "claude-haiku-4-5": 5}, where="enqueue")
    assert found == [DEPRECATED]
    (event,) = logs
    assert event["event"] == "model_deprecated"
    assert event["log_level"] == "warning"
    assert (event["model"], event["jobs"], event["where"]) == (DEPRECATED, 3, "enqueue")
    assert event["end_of_life"] == end_of_life(DEPRECATED)


def test_the_sdks_request_warning_is_ignored_under_an_error_filter() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ignore_request_warnings()
        message = f"The model '{DEPRECATED}' is deprecated and will reach end-of-life on X."
        warnings.warn(message, DeprecationWarning, stacklevel=1)
        with pytest.raises(DeprecationWarning):
            warnings.warn("some other deprecation", DeprecationWarning, stacklevel=1)


@pytest.mark.parametrize(
    ("status", "message", "retired"),
    [
        (404, "model: claude-3-opus-20240229", True),
        (400, "model 'claude-x' not found", True),
        (400, "invalid model: claude-x", True),
        (404, "Not found", False),
        (400, "max_tokens: Field required", False),
        (401, "model: claude-x", False),
    ],
)
def test_retired_model_reason(status: int, message: str, retired: bool) -> None:
    reason = retired_model_reason(status, message)
    assert (reason is not None) is retired
    if reason is not None:
        assert "retired" in reason and "claude-" in reason


async def test_deprecated_and_retired_models_under_warnings_as_errors(tmp_path: Path) -> None:
    """pytest runs with ``filterwarnings = error``: the SDK's warning must not fail the job.

    A deprecated model's job succeeds (the start-up warns once, as data); a retired model's job
    fails alone, with a reason that names the model and says it was retired.
    """
    warnings.simplefilter("error")
    deprecated = spec("old-but-served", tokens=300, model=DEPRECATED)
    retired = spec("gone", model=RETIRED)
    current = spec("current", tokens=300)
    with structlog.testing.capture_logs() as logs:
        run = await pool_run(tmp_path, [deprecated, retired, current])
    run.assert_exact([deprecated, current])
    assert run.states["gone"] is State.FAILED
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        job = await store.get("gone")
        attempts = await store.attempts("gone")
    finally:
        await store.close()
    assert job.last_error is not None and RETIRED in job.last_error and "retired" in job.last_error
    assert len(attempts) == 1, "a retired model is not retried"
    warned = [e for e in logs if e["event"] == "model_deprecated"]
    assert [(e["model"], e["jobs"], e["where"]) for e in warned] == [(DEPRECATED, 1, "worker_start")]
