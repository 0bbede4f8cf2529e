"""Request options of issue 19 (stop sequences, user id, service tier, thinking, effort, deadlines,
truncation): refused at enqueue when bad, stored, seen arriving at the simulated API, and acted on."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from jobs.export import manifest_entry
from jobs.jsonl import parse_jobs
from jobs.models import CONTEXT_WINDOW_EXCEEDED, Job, JobSpec, State, stop_sequence_of
from jobs.revise import revise
from jobs.sqlite import SQLiteStore
from tests.pool_harness import CONTINUATION_MODEL, PREFILL_MODEL, expected, pool_run, spec
from worker.attempt import AttemptSettings
from worker.config import AnthropicSettings, Config
from worker.request_options import request_options
from worker.simulator import SimulatorConfig


async def stored_job(tmp_path: Path, job_id: str) -> Job:
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        return await store.get(job_id)
    finally:
        await store.close()


CONFIG = Config(anthropic=AnthropicSettings(model="claude-opus-4-6", max_tokens=8192))


def parse(**fields: Any) -> tuple[list[JobSpec], list[str]]:
    return parse_jobs(
        [json.dumps({"id": "j", "prompt": "Write.", **fields})], "f.jsonl", CONFIG.job_defaults()
    )


@pytest.mark.parametrize("name", ["temperature", "top_p", "top_k"])
def test_sampling_parameters_are_refused_at_enqueue_with_the_reason(name: str) -> None:
    specs, errors = parse(**{name: 0.5})
    assert specs == []
    assert len(errors) == 1 and errors[0].startswith(f"f.jsonl:1: {name}: is not supported")
    assert "2026-10-21" in errors[0]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"stop_sequences": ["END", "  "]}, "stop_sequences[1]"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 257}, "user_id"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"effort": "extreme"}, "effort"),
        ({"thinking": {"type": "sometimes"}}, "thinking"),
        ({"thinking": {"type": "enabled", "budget_tokens": 500}}, "thinking.budget_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 8000}, "max_tokens": 8192}, "max_tokens"),
        ({"deadline": "2030-01-01T00:00:00"}, "deadline"),
        ({"deadline": 1e13}, "deadline"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 60, "deadline": 1e9}, "timeout_seconds"),
        (
            {
                "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                "prompt": None,
                "model": "claude-haiku-4-5",
                "thinking": {"type": "adaptive"},
            },
            "messages[1].role",
        ),
    ],
)
def test_bad_option_values_are_refused_at_enqueue_naming_the_field(
    fields: dict[str, Any], field: str
) -> None:
    specs, errors = parse(**fields)
    assert specs == []
    assert any(error.startswith(f"f.jsonl:1: {field}: ") for error in errors), errors


def test_good_options_become_the_spec_and_timeout_becomes_a_deadline() -> None:
    before = time.time()
    [job], errors = parse(
        stop_sequences=["THE END"],
        user_id="team-7",
        service_tier="standard_only",
        thinking={"type": "enabled", "budget_tokens": 2048},
        effort="high",
        timeout_seconds=3600,
    )
    assert errors == []
    assert (job.stop_sequences, job.user_id, job.service_tier) == (("THE END",), "team-7", "standard_only")
    assert (job.thinking, job.thinking_budget, job.effort) == ("enabled", 2048, "high")
    assert job.deadline is not None and before + 3600 <= job.deadline <= time.time() + 3600
    [dated], _ = parse(deadline="2031-01-01T00:00:00Z")
    assert dated.deadline == 1924992000.0


def test_revise_can_set_a_new_timeout_in_place_of_the_deadline() -> None:
    [job], _ = parse(deadline=1e9, effort="low")
    revised = revise(job, {"timeout_seconds": 60, "effort": "max"}, CONFIG.job_defaults())
    assert isinstance(revised, JobSpec)
    assert revised.deadline is not None and revised.deadline > time.time()
    assert revised.effort == "max"


def test_request_options_shrink_the_thinking_budget_to_fit_a_smaller_request() -> None:
    job = dataclasses.replace(spec("t"), thinking="enabled", thinking_budget=8000, user_id="u")
    assert request_options(job, 16000)["thinking"] == {"type": "enabled", "budget_tokens": 8000}
    assert request_options(job, 4000)["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    assert "thinking" not in request_options(job, 1500), "too small to think: text only"
    assert request_options(job, 1500)["metadata"] == {"user_id": "u"}


async def test_a_stored_job_keeps_its_options(tmp_path: Path) -> None:
    [job], _ = parse(stop_sequences=["\n\nEND"], user_id="u1", thinking={"type": "adaptive"}, deadline=2e9)
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        await store.enqueue(
            [
                job,
                dataclasses.replace(
                    job, id="plain", stop_sequences=(), user_id=None, thinking=None, deadline=None
                ),
            ]
        )
        assert (await store.get("j")).spec == job
        plain = (await store.get("plain")).spec
        assert (plain.stop_sequences, plain.user_id, plain.thinking, plain.deadline) == ((), None, None, None)
    finally:
        await store.close()


async def test_every_option_arrives_at_the_api_and_job_metadata_stays_ours(tmp_path: Path) -> None:
    job = dataclasses.replace(
        spec("opts", tokens=300, model=CONTINUATION_MODEL),
        stop_sequences=("NEVER-WRITTEN",),
        user_id="team-7",
        service_tier="auto",
        effort="medium",
        metadata={"ours": 1},
    )
    run = await pool_run(tmp_path, [job], sim_config=SimulatorConfig(record_requests=True))
    run.assert_exact([job])
    [body] = run.simulator.recorded
    assert body["stop_sequences"] == ["NEVER-WRITTEN"]
    assert body["metadata"] == {"user_id": "team-7"}
    assert (body["service_tier"], body["output_config"]) == ("auto", {"effort": "medium"})
    assert not {"temperature", "top_p", "top_k", "thinking"} & set(body)


@pytest.mark.parametrize("model", [PREFILL_MODEL, CONTINUATION_MODEL])
async def test_a_stop_sequence_ends_the_document_and_is_recorded(tmp_path: Path, model: str) -> None:
    base = spec("stop", tokens=2000, model=model, max_tokens=300)
    whole = expected(base)
    words = whole[len(whole) // 2 :].split()
    sequence = next(w for w in words if len(w) > 6 and whole.count(w) == 1)
    job = dataclasses.replace(base, stop_sequences=(sequence,))
    run = await pool_run(tmp_path, [job], sim_config=SimulatorConfig(record_requests=True))
    assert run.states["stop"] is State.SUCCEEDED
    assert run.texts["stop"] == whole[: whole.index(sequence)], "finished at the sequence, not continued"
    stored = await stored_job(tmp_path, "stop")
    assert stop_sequence_of(stored.stop_reason) == sequence
    assert manifest_entry(stored, None)["truncated"] is False
    assert all(body["stop_sequences"] == [sequence] for body in run.simulator.recorded)


@pytest.mark.parametrize(
    ("model", "thinking", "sent"),
    [
        (PREFILL_MODEL, "enabled", {"type": "enabled", "budget_tokens": 1024}),
        (CONTINUATION_MODEL, "adaptive", {"type": "adaptive"}),
    ],
)
async def test_a_thinking_job_under_faults_stays_byte_identical_with_its_thinking_counted(
    tmp_path: Path, model: str, thinking: str, sent: dict[str, Any]
) -> None:
    """A model that could resume by prefill still resumes by continuation once it thinks."""
    jobs = [
        dataclasses.replace(
            spec(
                f"think-{i}",
                tokens=1500,
                model=model,
                max_tokens=2500,
                faults=f"drop=0.4,midstream_error=0.2,seed={i}",
            ),
            thinking=thinking,
            thinking_budget=1024 if thinking == "enabled" else None,
        )
        for i in range(3)
    ]
    jobs.append(dataclasses.replace(jobs[0], id="think-clean", messages=spec("think-clean").messages))
    run = await pool_run(tmp_path, jobs, sim_config=SimulatorConfig(record_requests=True))
    run.assert_exact(jobs)
    bodies = run.simulator.recorded
    assert len(bodies) > len(jobs), "the faults made some jobs resume"
    assert all(body["thinking"] == sent for body in bodies)
    assert all(body["messages"][-1]["role"] == "user" for body in bodies), "no prefill with thinking"
    assert run.simulator.accounting().thinking_tokens > 0
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        usages = [(await store.get(job.id)).usage for job in jobs]
        attempts = [await store.attempts(job.id) for job in jobs]
    finally:
        await store.close()
    # The simulator thinks ≥ 64 tokens per request here: billed output, neither text nor repeat.
    requests = [sum(a.requests for a in history) for history in attempts]
    for usage, count in zip(usages, requests, strict=True):
        assert usage.output_tokens - usage.document_tokens >= 64 * (
            count - usage.estimated_output_tokens // 64 - 1
        )
    clean = usages[-1]
    assert clean.estimated_output_tokens == 0 and clean.repeated_tokens == 0
    assert clean.output_tokens - clean.document_tokens >= 64 * requests[-1], "thinking counted, not document"


async def test_a_job_past_its_deadline_fails_without_a_request(tmp_path: Path) -> None:
    job = dataclasses.replace(spec("late"), deadline=time.time() - 1)
    run = await pool_run(tmp_path, [job])
    assert run.states["late"] is State.FAILED
    assert run.simulator.accounting().requests == 0
    stored = await stored_job(tmp_path, "late")
    assert stored.last_error is not None and stored.last_error.startswith("deadline: ")


async def test_a_job_reaching_its_deadline_fails_with_its_text_kept(tmp_path: Path) -> None:
    """A document of ~4 s at the simulator's pace, with a deadline of 1 s: failed, reason
    ``deadline``, and the text written so far kept (a prefix of the full document)."""
    job = dataclasses.replace(spec("slow", tokens=4000, max_tokens=200), deadline=time.time() + 1.0)
    run = await pool_run(tmp_path, [job], sim_config=SimulatorConfig(tokens_per_second=1000))
    assert run.states["slow"] is State.FAILED
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        stored = await store.get("slow")
        assert stored.last_error is not None and stored.last_error.startswith("deadline: ")
        text = await store.read_text("slow")
    finally:
        await store.close()
    assert 0 < len(text) < len(expected(job))
    assert expected(job).startswith(text)


async def test_a_request_past_request_timeout_is_retried_from_its_checkpoint(tmp_path: Path) -> None:
    job = spec("long", tokens=1500, max_tokens=4000)
    settings = AttemptSettings(idle_timeout=5, backoff_base=0.01, backoff_max=0.02, request_timeout=0.4)
    run = await pool_run(
        tmp_path, [job], sim_config=SimulatorConfig(tokens_per_second=2000), attempt=settings
    )
    run.assert_exact([job])
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        records = await store.attempts("long")
    finally:
        await store.close()
    assert any(r.error and "request_timeout" in r.error for r in records)


async def test_a_full_context_window_ends_the_job_succeeded_but_truncated(tmp_path: Path) -> None:
    job = spec("big", tokens=3000, model=CONTINUATION_MODEL, max_tokens=500)
    run = await pool_run(tmp_path, [job], sim_config=SimulatorConfig(context_window=1200))
    assert run.states["big"] is State.SUCCEEDED
    assert run.stats.truncated == 1
    stored = await stored_job(tmp_path, "big")
    assert stored.stop_reason == CONTEXT_WINDOW_EXCEEDED
    assert manifest_entry(stored, None)["truncated"] is True
    assert 0 < len(run.texts["big"]) < len(expected(job))


async def test_the_http_submit_path_refuses_bad_options_with_index_and_field(tmp_path: Path) -> None:
    from tests.test_server_api import api, call

    async with api(tmp_path) as (live, session):
        jobs = [{"id": "ok", "prompt": "x", "user_id": "u"}, {"id": "t", "prompt": "x", "temperature": 1}]
        status, answer = await call(session, "POST", "/v1/jobs", {"jobs": jobs})
        assert status == 400
        assert [(p["index"], p["field"]) for p in answer["problems"]] == [(1, "temperature")]
        status, _ = await call(session, "POST", "/v1/jobs", {"jobs": jobs[:1]})
        assert status in (200, 201)
        assert (await live.store.get("ok")).spec.user_id == "u"


def test_show_names_the_options_and_the_stop_sequence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs.models import AttemptResult, CheckpointWrite, Outcome, stop_sequence_reason
    from tests.test_job_commands import Project

    project = Project(tmp_path)
    line = {"id": "a", "prompt": "x", "stop_sequences": ["THE END"], "effort": "low", "user_id": "u"}
    assert project.run("enqueue", project.jsonl("jobs.jsonl", line)) == 0

    async def finish(store: Any) -> None:
        [claim] = await store.claim("w1", 30)
        await store.commit([CheckpointWrite("a", claim.token, 0, "Done. ")], 30)
        result = AttemptResult(Outcome.SUCCEEDED, stop_reason=stop_sequence_reason("THE END"))
        await store.settle("a", claim.token, result)

    project.with_store(finish)
    capsys.readouterr()
    assert project.run("show", "a") == 0
    out = capsys.readouterr().out
    assert 'options    stop_sequences ["THE END"], user_id "u", effort "low"' in out
    assert 'stop reason stop_sequence "THE END"' in out
    assert project.run("show", "a", "--json") == 0
    job = json.loads(capsys.readouterr().out)["job"]
    assert (job["stop_sequence"], job["truncated"], job["options"]["effort"]) == ("THE END", False, "low")
