"""The 300K output beta of the Batch API (issue 18, item 3), against the simulator over real HTTP.

The simulator caps ``max_tokens`` per model as the API documents it (128K on the 5.x models, 64K
on Haiku 4.5) and lifts the 5.x cap to 300K only for a batch created with the beta header. The
submitter uses the beta when ``[anthropic] batch_output_300k`` is on and a request's model has it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anthropic
import pytest

from jobs.batches import OUTPUT_300K_BETA, has_output_300k
from jobs.models import JobSpec, State
from jobs.sqlite import SQLiteStore
from tests.pool_harness import expected, spec
from worker.batches import BatchSettings, Submitter
from worker.simulator import BatchConfig, SimulatorConfig, run_simulator

MODEL = "claude-sonnet-5-5"
BIG = 200_000
FAST = BatchSettings(poll_min=0.02, poll_max=0.05, retry_base=0.01, retry_max=0.02)
CAP_MESSAGE = "which is the maximum allowed number of output tokens"


def big_batch_job(job_id: str, model: str = MODEL) -> JobSpec:
    return dataclasses.replace(
        spec(job_id, tokens=300, model=model, max_tokens=BIG, output_budget=400_000), mode="batch"
    )


def test_the_beta_covers_the_models_the_api_names() -> None:
    assert [
        m
        for m in (
            "claude-opus-5",
            "claude-opus-5-5",
            "claude-sonnet-5",
            "claude-sonnet-5-5",
            "claude-haiku-5-5",
            "claude-haiku-4-5",
            "claude-opus-4-6",
            "claude-fable-5-1",
        )
        if has_output_300k(m)
    ] == ["claude-opus-5", "claude-opus-5-5", "claude-sonnet-5", "claude-sonnet-5-5", "claude-haiku-5-5"]


async def _stream(
    client: anthropic.AsyncAnthropic, model: str, max_tokens: int, **extra: object
) -> str | None:
    """One streamed request (the SDK refuses large non-streaming ones itself); its stop reason."""
    stop = None
    messages = [{"role": "user", "content": "Write. [sim:tokens=5]"}]
    stream = await client.messages.create(
        model=model,
        max_tokens=max_tokens,
        messages=messages,
        stream=True,
        **extra,  # type: ignore[call-overload]
    )
    async for event in stream:
        if event.type == "message_delta":
            stop = event.delta.stop_reason
    return stop


async def test_the_simulator_caps_max_tokens_per_model_as_the_api_does() -> None:
    async with run_simulator(SimulatorConfig(tokens_per_second=0)) as sim:
        client = anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0)
        try:
            for model, cap in ((MODEL, 128_000), ("claude-haiku-4-5", 64_000)):
                with pytest.raises(anthropic.BadRequestError) as caught:
                    await _stream(client, model, cap + 1)
                assert f"max_tokens: {cap + 1} > {cap}, {CAP_MESSAGE} for {model}" in str(caught.value)
                assert await _stream(client, model, cap) == "end_turn"
            # The beta does not lift the streaming cap: the API documents 300K on batches only.
            with pytest.raises(anthropic.BadRequestError):
                await _stream(client, MODEL, BIG, extra_headers={"anthropic-beta": OUTPUT_300K_BETA})
        finally:
            await client.close()


class _Clock:
    """The simulator's clock, moved by the test: a batch ends when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _run_submitter(tmp_path: Path, job: JobSpec, output_300k: bool) -> tuple[SQLiteStore, int]:
    """Submit ``job`` by batch, let the batch end, collect it: the job is settled after that."""
    store = SQLiteStore(tmp_path / f"beta-{output_300k}.db")
    await store.enqueue([job])
    clock = _Clock()
    config = SimulatorConfig(clock=clock, batches=BatchConfig(processing_seconds=1.0))
    async with run_simulator(config) as sim:
        client = anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0)
        submitter = Submitter(store, client, "w1", dataclasses.replace(FAST, output_300k=output_300k))
        try:
            assert await submitter.step()  # submitted
            clock.now += 2.0  # the batch has ended
            assert await submitter.step()  # collected
        finally:
            await client.close()
        return store, sim.accounting().batch_succeeded


async def test_with_the_beta_a_batch_request_may_ask_300k_output_tokens(tmp_path: Path) -> None:
    job = big_batch_job("big")
    store, succeeded = await _run_submitter(tmp_path, job, output_300k=True)
    try:
        finished = await store.get(job.id)
        assert finished.state is State.SUCCEEDED, finished.last_error
        assert await store.read_text(job.id) == expected(job)
        assert succeeded == 1
    finally:
        await store.close()


async def test_without_the_beta_the_api_refuses_it_and_the_job_fails_with_its_reason(tmp_path: Path) -> None:
    job = big_batch_job("big")
    store, succeeded = await _run_submitter(tmp_path, job, output_300k=False)
    try:
        finished = await store.get(job.id)
        assert finished.state is State.FAILED
        assert CAP_MESSAGE in (finished.last_error or "")
        assert succeeded == 0
    finally:
        await store.close()
