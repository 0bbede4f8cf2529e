"""Request options the simulator checks and acts on, driven by the real SDK over real HTTP:
sampling parameters refused, stop sequences, metadata and service tier, extended thinking."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest

from tests.simulator_fixtures import SimulatorFactory
from worker.simulator import Simulator, count_tokens, expected_document
from worker.stream import stream_request

MODERN = "claude-sonnet-4-6"
PROMPT = "An essay on harbours [sim:tokens=400]"
DOCUMENT = expected_document(None, PROMPT)


def client_for(sim: Simulator) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0)


def params(model: str = MODERN, max_tokens: int = 4096, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": PROMPT}],
        **extra,
    }


def text_of(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


@pytest.mark.parametrize("name", ["temperature", "top_p", "top_k"])
async def test_sampling_parameters_are_refused(simulator: Simulator, name: str) -> None:
    async with client_for(simulator) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(**params(), extra_body={name: 0.5})
    assert str(caught.value.api_message).startswith(f"{name}:")
    assert "2026-10-21" in str(caught.value.api_message)


@pytest.mark.parametrize("stream", [True, False])
async def test_a_stop_sequence_ends_the_text_before_it(simulator: Simulator, stream: bool) -> None:
    words = DOCUMENT.split()
    sequence = f"{words[40]} {words[41]}"
    cut = DOCUMENT.index(sequence)
    async with client_for(simulator) as client:
        if stream:
            async with client.messages.stream(**params(stop_sequences=["never-there", sequence])) as live:
                message = await live.get_final_message()
        else:
            message = await client.messages.create(**params(stop_sequences=[sequence]))
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == sequence
    assert text_of(message) == DOCUMENT[:cut]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"stop_sequences": ["  "]}, "stop_sequences.0"),
        ({"metadata": {"user_id": "u" * 257}}, "metadata.user_id"),
        ({"metadata": {"tenant": "x"}}, "metadata.tenant"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"thinking": {"type": "enabled", "budget_tokens": 500}}, "thinking.enabled.budget_tokens"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
        ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
    ],
)
async def test_bad_options_name_their_field(simulator: Simulator, extra: dict[str, Any], field: str) -> None:
    async with client_for(simulator) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(**params(model="claude-haiku-4-5"), extra_body=extra)
    assert str(caught.value.api_message).startswith(f"{field}:")


@pytest.mark.parametrize(
    ("model", "thinking", "accepted"),
    [
        ("claude-haiku-4-5", {"type": "enabled", "budget_tokens": 2048}, True),
        ("claude-haiku-4-5", {"type": "adaptive"}, False),
        ("claude-sonnet-4-6", {"type": "adaptive"}, True),
        ("claude-opus-4-7", {"type": "enabled", "budget_tokens": 2048}, False),
        ("claude-opus-4-7", {"type": "adaptive"}, True),
        ("claude-fable-5-1", {"type": "disabled"}, False),
        ("claude-sonnet-5-5", {"type": "disabled"}, True),
    ],
)
async def test_thinking_modes_follow_the_model(
    simulator: Simulator, model: str, thinking: dict[str, Any], accepted: bool
) -> None:
    async with client_for(simulator) as client:
        call = client.messages.create(**params(model=model), extra_body={"thinking": thinking})
        if accepted:
            assert text_of(await call) == DOCUMENT
        else:
            with pytest.raises(anthropic.BadRequestError, match="thinking"):
                await call


async def test_thinking_streams_first_is_billed_and_never_enters_the_text(simulator: Simulator) -> None:
    thinking = {"type": "enabled", "budget_tokens": 2048}
    async with client_for(simulator) as client:
        async with client.messages.stream(
            **params(model="claude-haiku-4-5"), extra_body={"thinking": thinking}
        ) as s:
            message = await s.get_final_message()
        kinds = [block.type for block in message.content]
        assert kinds == ["thinking", "text"]
        thought = message.content[0].thinking  # type: ignore[union-attr]
        assert thought and message.content[0].signature  # type: ignore[union-attr]
        assert text_of(message) == DOCUMENT
        assert message.usage.output_tokens == count_tokens(DOCUMENT) + count_tokens(thought)
        assert simulator.accounting().thinking_tokens == count_tokens(thought)

        pieces: list[str] = []
        body = {**params(model="claude-haiku-4-5"), "thinking": thinking}
        await stream_request(client, body, idle_timeout=10, on_text=pieces.append)
    assert "".join(pieces) == DOCUMENT, "the worker's stream reader keeps only text deltas"


async def test_thinking_takes_its_share_of_max_tokens(simulator: Simulator) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    async with client_for(simulator) as client:
        message = await client.messages.create(
            **params(model="claude-haiku-4-5", max_tokens=1100), extra_body={"thinking": thinking}
        )
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens <= 1100


async def test_thinking_refuses_a_prefill(simulator: Simulator) -> None:
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": DOCUMENT[:50].rstrip()}]
    async with client_for(simulator) as client:
        with pytest.raises(anthropic.BadRequestError, match="prefill"):
            await client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=4096,
                messages=messages,  # type: ignore[arg-type]
                extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}},
            )


async def test_request_bodies_are_recorded_for_tests(make_simulator: SimulatorFactory) -> None:
    sim = await make_simulator(record_requests=True)
    async with client_for(sim) as client:
        await client.messages.create(
            **params(),
            metadata={"user_id": "user-7"},
            service_tier="standard_only",
            stop_sequences=["\n\n##"],
        )
    (body,) = sim.recorded
    assert body["metadata"] == {"user_id": "user-7"}
    assert body["service_tier"] == "standard_only" and body["stop_sequences"] == ["\n\n##"]
    async with httpx2.AsyncClient() as http:
        response = await http.get(f"{sim.base_url}/_sim/requests")
    assert response.json() == sim.recorded
