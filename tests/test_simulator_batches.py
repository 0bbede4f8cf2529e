"""The simulator's Message Batches endpoints, driven by the real SDK over real HTTP.

Time is a fake clock the test moves, so "the batch has ended" is a fact of the test, not a sleep.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types.messages.batch_create_params import Request

from tests.simulator_fixtures import SimulatorFactory
from worker.simulator import BatchConfig, Simulator, expected_document

MODEL = "claude-sonnet-4-6"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client_for(sim: Simulator) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0)


def request(custom_id: str, prompt: str, **params: Any) -> Request:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": prompt}],
    }
    body.update(params)
    return {"custom_id": custom_id, "params": body}  # type: ignore[typeddict-item]


async def started(make_simulator: SimulatorFactory, **batch: Any) -> tuple[Simulator, FakeClock]:
    clock = FakeClock()
    sim = await make_simulator(clock=clock, batches=BatchConfig(processing_seconds=10.0, **batch))
    return sim, clock


async def results(client: anthropic.AsyncAnthropic, batch_id: str) -> dict[str, Any]:
    decoder = await client.messages.batches.results(batch_id)
    return {item.custom_id: item.result async for item in decoder}


async def test_a_batch_processes_then_serves_every_result(make_simulator: SimulatorFactory) -> None:
    sim, clock = await started(make_simulator)
    prompts = {f"doc-{i}": f"Document {i} [sim:tokens={100 + 30 * i}]" for i in range(12)}
    async with client_for(sim) as client:
        batch = await client.messages.batches.create(requests=[request(k, p) for k, p in prompts.items()])
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == 12 and batch.results_url is None
        with pytest.raises(anthropic.AnthropicError, match="Has it finished processing"):
            await client.messages.batches.results(batch.id)

        clock.now += 9.9
        polled = await client.messages.batches.retrieve(batch.id)
        assert polled.processing_status == "in_progress", "counts stay at processing until the end"
        assert polled.request_counts.succeeded == 0

        clock.now += 0.2
        ended = await client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended" and ended.ended_at is not None
        assert ended.request_counts.succeeded == 12 and ended.results_url is not None
        got = await results(client, batch.id)
        order = [item.custom_id async for item in await client.messages.batches.results(batch.id)]

    assert set(got) == set(prompts)
    assert order != sorted(order, key=lambda k: int(k.split("-")[1])), "results arrive unordered"
    for custom_id, prompt in prompts.items():
        result = got[custom_id]
        assert result.type == "succeeded"
        text = "".join(block.text for block in result.message.content if block.type == "text")
        assert text == expected_document(None, prompt)
        assert result.message.stop_reason == "end_turn"
    accounting = sim.accounting()
    assert accounting.batch_succeeded == 12
    assert accounting.requests_by_status.get(200, 0) == 0, "batch requests are not Messages requests"


async def test_max_tokens_stops_a_result_and_a_prefill_round_continues_it(
    make_simulator: SimulatorFactory,
) -> None:
    """A long document by batch rounds: each round continues the text the last one returned."""
    sim, clock = await started(make_simulator)
    prompt = "A long one [sim:tokens=700]"
    text, rounds = "", 0
    async with client_for(sim) as client:
        while True:
            messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
            if text:
                messages.append({"role": "assistant", "content": text.rstrip()})
            params = {"model": "claude-haiku-4-5", "max_tokens": 200, "messages": messages}
            batch = await client.messages.batches.create(requests=[request("long", prompt, **params)])
            clock.now += 11
            result = (await results(client, batch.id))["long"]
            rounds += 1
            assert result.type == "succeeded"
            text = text.rstrip() + "".join(b.text for b in result.message.content if b.type == "text")
            if result.message.stop_reason == "end_turn":
                break
            assert result.message.stop_reason == "max_tokens"
    assert text == expected_document(None, prompt)
    assert rounds >= 4


async def test_bad_params_come_back_as_errored_results(make_simulator: SimulatorFactory) -> None:
    sim, clock = await started(make_simulator)
    async with client_for(sim) as client:
        batch = await client.messages.batches.create(
            requests=[
                request("good", "Fine [sim:tokens=50]"),
                request("retired", "x", model="claude-sonnet-4-5"),
                request(
                    "prefill",
                    "x",
                    messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                ),
            ]
        )
        clock.now += 11
        got = await results(client, batch.id)
    assert got["good"].type == "succeeded"
    assert got["retired"].type == "errored" and got["retired"].error.error.type == "not_found_error"
    assert got["prefill"].type == "errored" and got["prefill"].error.error.type == "invalid_request_error"


async def test_seeded_errors_and_expiry(make_simulator: SimulatorFactory) -> None:
    sim, clock = await started(make_simulator, error_rate=0.3, expiry_seconds=6.0)
    async with client_for(sim) as client:
        batch = await client.messages.batches.create(
            requests=[request(f"r{i}", f"Doc {i} [sim:tokens=40]") for i in range(40)]
        )
        clock.now += 6.0
        ended = await client.messages.batches.retrieve(batch.id)
        got = await results(client, batch.id)
    kinds = [r.type for r in got.values()]
    assert ended.processing_status == "ended"
    assert ended.request_counts.expired == kinds.count("expired") > 0
    assert ended.request_counts.errored == kinds.count("errored") > 0
    assert ended.request_counts.succeeded == kinds.count("succeeded") > 0
    errored = [r for r in got.values() if r.type == "errored"]
    assert {r.error.error.type for r in errored} <= {"overloaded_error", "api_error"}


async def test_cancel_ends_unfinished_requests_as_canceled_and_delete_needs_an_end(
    make_simulator: SimulatorFactory,
) -> None:
    sim, clock = await started(make_simulator, cancel_seconds=1.0)
    async with client_for(sim) as client:
        batch = await client.messages.batches.create(
            requests=[request(f"c{i}", f"Doc {i} [sim:tokens=40]") for i in range(10)]
        )
        clock.now += 5.0
        canceling = await client.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
        with pytest.raises(anthropic.BadRequestError, match="Cancel it first"):
            await client.messages.batches.delete(batch.id)
        clock.now += 1.0
        ended = await client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        assert ended.request_counts.succeeded == 5 and ended.request_counts.canceled == 5
        deleted = await client.messages.batches.delete(batch.id)
        assert deleted.type == "message_batch_deleted"
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.batches.retrieve(batch.id)


async def test_list_pages_newest_first(make_simulator: SimulatorFactory) -> None:
    sim, clock = await started(make_simulator)
    async with client_for(sim) as client:
        ids = []
        for i in range(5):
            clock.now += 1
            ids.append((await client.messages.batches.create(requests=[request("x", f"{i}")])).id)
        page = await client.messages.batches.list(limit=2)
        assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
        every = [b.id async for b in client.messages.batches.list(limit=2)]
    assert every == ids[::-1]


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([{"custom_id": "has:colon", "params": {}}], "requests.0.custom_id: String should match pattern"),
        ([{"custom_id": "x" * 65, "params": {}}], "requests.0.custom_id: String should match pattern"),
        (
            [{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}],
            "requests.1.custom_id: Duplicate",
        ),
        ([], "requests: List should have at least 1 item"),
    ],
)
async def test_a_bad_envelope_rejects_the_whole_batch(
    make_simulator: SimulatorFactory, requests: list[Any], message: str
) -> None:
    sim, _ = await started(make_simulator)
    async with client_for(sim) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.batches.create(requests=requests)
        assert message in str(caught.value)
        assert [b async for b in client.messages.batches.list()] == []


async def test_batches_are_not_charged_against_the_streaming_rate_limits(
    make_simulator: SimulatorFactory,
) -> None:
    clock = FakeClock()
    sim = await make_simulator(clock=clock, otpm=100, batches=BatchConfig(processing_seconds=1.0))
    async with client_for(sim) as client:
        batch = await client.messages.batches.create(
            requests=[request(f"b{i}", f"Doc {i} [sim:tokens=300]") for i in range(5)]
        )
        clock.now += 2
        got = await results(client, batch.id)
    assert all(r.type == "succeeded" for r in got.values())
    assert sim.accounting().batch_output_tokens == 1500 and sim.accounting().rate_limited == 0
