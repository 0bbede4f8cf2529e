"""The pool end to end: the real SDK over real HTTP against the simulator, on a real SQLite store.

Every faulty run must produce, for every job, exactly the text of a fault-free run
(``expected_document``), with one prefill model and one 4.6+ model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.models import AttemptRecord, Job, Outcome, ResumeMode, State
from jobs.sqlite import SQLiteStore
from tests.pool_harness import CONTINUATION_MODEL, PREFILL_MODEL, expected, pool_run, spec
from tests.store_fixtures import StoreFactory
from worker.simulator import SimulatorConfig, count_tokens

MODELS = [PREFILL_MODEL, CONTINUATION_MODEL]
FAULTS = ["http_529", "http_500", "http_429", "midstream_error", "drop", "malformed", "stall", "stall_silent"]


@pytest.mark.parametrize("model", MODELS)
async def test_fault_free_run_matches_the_expected_documents(tmp_path: Path, model: str) -> None:
    jobs = [spec(f"doc-{i}", tokens=300 + 50 * i, model=model) for i in range(4)]
    run = await pool_run(tmp_path, jobs)
    run.assert_exact(jobs)
    assert run.stats.succeeded == 4
    assert run.stats.retries == 0
    accounting = run.simulator.accounting()
    assert accounting.streams_completed == 4
    assert accounting.failed_output_tokens == 0


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fault", FAULTS)
async def test_each_fault_kind_recovers_byte_identical(tmp_path: Path, model: str, fault: str) -> None:
    jobs = [spec(f"{fault}-{i}", tokens=500, model=model, faults=f"{fault}=0.5,seed={i}") for i in range(4)]
    run = await pool_run(tmp_path, jobs, sim_config=SimulatorConfig(ping_interval=0.05))
    run.assert_exact(jobs)
    injected = run.simulator.accounting().faults_injected
    assert injected.get(fault, 0) > 0, f"no {fault} was injected: the test would prove nothing"
    # 429/529 (the account's weather) re-queue the job uncharged; other faults count a retry.
    assert run.stats.retries + run.stats.released >= injected[fault]
    if fault in ("http_529", "http_429"):
        assert run.stats.retries == 0, "overload and rate limits must not use up the jobs' attempts"


@pytest.mark.parametrize("model", MODELS)
async def test_mixed_faults_with_overlap_repeats(tmp_path: Path, model: str) -> None:
    mix = "http_529=0.08,http_500=0.05,http_429=0.05,midstream_error=0.1,drop=0.08,malformed=0.05,stall=0.04"
    jobs = [spec(f"mixed-{i}", tokens=800, model=model, faults=f"{mix},seed={i}") for i in range(8)]
    run = await pool_run(tmp_path, jobs, sim_config=SimulatorConfig(ping_interval=0.05, repeat_overlap=1.0))
    run.assert_exact(jobs)
    accounting = run.simulator.accounting()
    assert sum(accounting.faults_injected.values()) >= 3
    assert accounting.mismatched_continuations == 0


@pytest.mark.parametrize("model", MODELS)
async def test_a_document_longer_than_max_tokens_is_seamless(tmp_path: Path, model: str) -> None:
    job = spec("long", tokens=2500, model=model, max_tokens=300)
    run = await pool_run(tmp_path, [job], sim_config=SimulatorConfig(repeat_overlap=1.0))
    run.assert_exact([job])
    attempts = await _attempts(tmp_path, "long")
    assert len(attempts) == 1, "continuations past max_tokens belong to one attempt"
    assert attempts[0].requests >= 9
    assert attempts[0].stop_reason == "end_turn"


@pytest.mark.parametrize("echo", ["mixed", "repeat:2"])
async def test_continuations_join_exactly_whatever_the_model_repeats(
    tmp_path: Path, make_store: StoreFactory, echo: str
) -> None:
    """The issue's behaviours, mixed per document, on the continuation model and both backends:
    rich documents (doubled words, refrains, tables, code, CJK) resumed after faults and at every
    max_tokens stop, each continuation opening with a repeat, restart, preamble or restatement."""
    faults = "midstream_error=0.1,drop=0.1,http_529=0.05"
    jobs = [
        spec(
            f"join-{i}",
            tokens=1500,
            model=CONTINUATION_MODEL,
            max_tokens=250,
            faults=f"{faults},seed={i}",
            extra=f" [sim:style=rich] [sim:echo={echo}]",
        )
        for i in range(6)
    ]
    store = await make_store()
    run = await pool_run(tmp_path, jobs, sim_config=SimulatorConfig(ping_interval=0.05), store=store)
    run.assert_exact(jobs)
    echoes = run.simulator.accounting().echoes
    if echo == "mixed":
        assert "anchor" in echoes and len(echoes) >= 6, f"too few behaviours drawn to prove much: {echoes}"
    else:
        assert set(echoes) == {"repeat"}, echoes
    rules: dict[str, int] = {}
    for job in jobs:
        for attempt in await store.attempts(job.id):
            for rule, count in attempt.joins:
                rules[rule] = rules.get(rule, 0) + count
    # A stream that fails before its join is decided records no rule; most are decided.
    resumes = sum(count for rule, count in rules.items() if rule != "uncertain")
    assert resumes >= sum(echoes.values()) // 2, (rules, echoes)
    assert rules.get("uncertain", 0) == 0, rules
    if echo == "repeat:2":
        assert set(rules) <= {"short_repeat", "restart"}, rules
    else:
        assert len(rules) >= 4, rules


async def test_output_budget_caps_a_long_document(tmp_path: Path) -> None:
    job = spec("capped", tokens=3000, max_tokens=200, output_budget=500)
    run = await pool_run(tmp_path, [job])
    assert run.states["capped"] is State.SUCCEEDED
    assert count_tokens(run.texts["capped"]) == 500
    assert run.stats.truncated == 1
    assert (await _attempts(tmp_path, "capped"))[-1].stop_reason == "output_budget"
    assert expected(job).startswith(run.texts["capped"])


async def test_a_terminal_error_fails_only_its_own_job(tmp_path: Path) -> None:
    good = [spec(f"good-{i}", tokens=300) for i in range(3)]
    unknown_model = spec("bad-model", model="claude-no-such-model")
    refused = spec("refused", extra=" [sim:refuse_after=20]")
    run = await pool_run(tmp_path, [*good, unknown_model, refused])
    run.assert_exact(good)
    assert run.states["bad-model"] is State.FAILED
    assert run.states["refused"] is State.FAILED
    bad = await _attempts(tmp_path, "bad-model")
    assert len(bad) == 1, "a terminal error is not retried"
    assert bad[0].error is not None and "404" in bad[0].error
    refusal = await _attempts(tmp_path, "refused")
    assert refusal[0].error is not None and "refused" in refusal[0].error
    assert run.stats.failed == 2


async def test_a_stall_is_detected_and_resumed(tmp_path: Path) -> None:
    """Pings keep the socket alive, so only the idle watchdog can see this stall."""
    jobs = [spec("stall-once", tokens=600, faults="stall=0.6,seed=3")]
    run = await pool_run(tmp_path, jobs, sim_config=SimulatorConfig(ping_interval=0.05))
    run.assert_exact(jobs)
    attempts = await _attempts(tmp_path, "stall-once")
    stalls = [a for a in attempts if a.error and "no event" in a.error]
    assert stalls, "the stall was not detected"
    assert attempts[-1].resume_mode in (ResumeMode.PREFILL, ResumeMode.CONTINUATION)


async def test_attempts_exhausted_fail_the_job_with_the_reason(tmp_path: Path) -> None:
    job = spec("doomed", tokens=300, faults="http_500=1.0", max_attempts=3)
    run = await pool_run(tmp_path, [job])
    assert run.states["doomed"] is State.FAILED
    attempts = await _attempts(tmp_path, "doomed")
    assert [a.outcome for a in attempts] == [Outcome.RETRY] * 3
    assert (await _job(tmp_path, "doomed")).last_error is not None


async def test_resume_uses_prefill_or_continuation_by_model(tmp_path: Path) -> None:
    jobs = [
        spec("p", tokens=600, model=PREFILL_MODEL, faults="midstream_error=1.0", max_attempts=2),
        spec("c", tokens=600, model=CONTINUATION_MODEL, faults="midstream_error=1.0", max_attempts=2),
    ]
    await pool_run(tmp_path, jobs)
    p = await _attempts(tmp_path, "p")
    c = await _attempts(tmp_path, "c")
    assert p[0].resume_mode is ResumeMode.FRESH and p[1].resume_mode is ResumeMode.PREFILL
    assert c[0].resume_mode is ResumeMode.FRESH and c[1].resume_mode is ResumeMode.CONTINUATION
    assert p[1].chars_at_start > 0 and c[1].chars_at_start > 0


async def _attempts(tmp_path: Path, job_id: str) -> list[AttemptRecord]:
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        return await store.attempts(job_id)
    finally:
        await store.close()


async def _job(tmp_path: Path, job_id: str) -> Job:
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        return await store.get(job_id)
    finally:
        await store.close()


async def test_a_model_that_rejects_prefill_is_switched_to_continuation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our guess from the model id can be wrong (a new model): the 400 answer to a prefill switches
    the attempt to a continuation turn, without counting a failure, and the text stays exact."""
    monkeypatch.setattr("worker.attempt.supports_prefill", lambda model: True)
    jobs = [spec("wrong-guess", tokens=1200, model=CONTINUATION_MODEL, max_tokens=300)]
    run = await pool_run(tmp_path, jobs, sim_config=SimulatorConfig(repeat_overlap=1.0))
    run.assert_exact(jobs)
    attempts = await _attempts(tmp_path, "wrong-guess")
    assert len(attempts) == 1, "the prefill 400 must not cost an attempt"
    assert run.simulator.accounting().requests_by_status.get(400) == 1, "remembered after the first 400"
