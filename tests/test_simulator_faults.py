"""Faults, stalls and rate limits as the real SDK sees them, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math

import anthropic
import anyio
import httpx2
import pytest

from tests.simulator_fixtures import SimulatorFactory
from tests.test_simulator import MODERN, client_for, sse_events
from tests.test_simulator_units import FakeClock
from worker.simulator import (
    FaultConfig,
    Simulator,
    SimulatorConfig,
    count_tokens,
    document_key,
    expected_document,
    run_simulator,
)


async def stream_until_error(
    target: Simulator | anthropic.AsyncAnthropic, prompt: str, max_tokens: int = 4000
) -> tuple[str, BaseException | None]:
    """Stream ``prompt``; return the text received and the exception that ended it, if any."""
    if isinstance(target, Simulator):
        async with client_for(target) as client:
            return await stream_until_error(client, prompt, max_tokens)

    received = ""
    async with contextlib.nullcontext(target) as client:
        try:
            async with client.messages.stream(
                model=MODERN, max_tokens=max_tokens, messages=[{"role": "user", "content": prompt}]
            ) as stream:
                async for text in stream.text_stream:
                    received += text
        except Exception as exc:
            return received, exc

    return received, None


class TestFaultsInTheSdk:
    async def test_http_529_is_overloaded_error(self, simulator: Simulator) -> None:
        """529 before streaming → OverloadedError (an InternalServerError)."""
        text, error = await stream_until_error(simulator, "a [sim:faults=http_529=1]")
        assert isinstance(error, anthropic.OverloadedError)
        assert isinstance(error, anthropic.InternalServerError)
        assert error.status_code == 529
        assert text == ""

    async def test_http_500_is_internal_server_error(self, simulator: Simulator) -> None:
        """500 → InternalServerError with type api_error."""
        _, error = await stream_until_error(simulator, "b [sim:faults=http_500=1]")
        assert isinstance(error, anthropic.InternalServerError)
        assert not isinstance(error, anthropic.OverloadedError)
        assert error.type == "api_error"

    async def test_http_429_is_rate_limit_error_with_retry_after(self, simulator: Simulator) -> None:
        """Injected 429 → RateLimitError carrying the configured retry-after."""
        _, error = await stream_until_error(simulator, "c [sim:faults=http_429=1,retry_after=1.5]")
        assert isinstance(error, anthropic.RateLimitError)
        assert error.response.headers["retry-after"] == "1.5"

    async def test_midstream_error_is_plain_api_status_error_after_text(self, simulator: Simulator) -> None:
        """``event: error`` after HTTP 200 → plain APIStatusError, status 200, type overloaded_error."""
        prompt = "d [sim:faults=midstream_error=1]"
        text, error = await stream_until_error(simulator, prompt)
        assert type(error) is anthropic.APIStatusError
        assert error.status_code == 200
        assert error.type == "overloaded_error"
        assert error.api_message == "Overloaded"
        assert text and expected_document(None, prompt).startswith(text)
        assert text != expected_document(None, prompt)

    async def test_drop_is_a_raw_transport_error(self, simulator: Simulator) -> None:
        """A connection closed mid-body escapes as httpx2.TransportError, not an AnthropicError."""
        prompt = "e [sim:faults=drop=1]"
        text, error = await stream_until_error(simulator, prompt)
        assert isinstance(error, httpx2.TransportError)
        assert not isinstance(error, anthropic.AnthropicError)
        assert text and expected_document(None, prompt).startswith(text)

    async def test_malformed_event_is_a_json_decode_error(self, simulator: Simulator) -> None:
        """A ``data:`` line that is not JSON makes the SDK raise json.JSONDecodeError."""
        text, error = await stream_until_error(simulator, "f [sim:faults=malformed=1]")
        assert isinstance(error, json.JSONDecodeError)
        assert text

    async def test_non_streaming_faults(self, simulator: Simulator) -> None:
        """Without streaming, mid-stream faults become a 529, a connection error or bad JSON."""
        async with client_for(simulator) as client:
            for spec, expected in [
                ("midstream_error=1", anthropic.OverloadedError),
                ("drop=1", anthropic.APIConnectionError),
                ("malformed=1", json.JSONDecodeError),
            ]:
                with pytest.raises(expected):
                    await client.messages.create(
                        model=MODERN,
                        max_tokens=100,
                        messages=[{"role": "user", "content": f"g [sim:faults={spec}]"}],
                    )

    async def test_fail_first(self, make_simulator: SimulatorFactory) -> None:
        """``fail_first=2``: the first two requests of every document get 529, then success."""
        sim = await make_simulator(faults=FaultConfig(fail_first=2))
        outcomes: dict[str, list[str]] = {}
        for prompt in ("first doc", "second doc", "third [sim:fail_first=0]"):
            for _ in range(3):
                _, error = await stream_until_error(sim, prompt)
                outcomes.setdefault(prompt, []).append(type(error).__name__ if error else "ok")

        assert outcomes == {
            "first doc": ["OverloadedError", "OverloadedError", "ok"],
            "second doc": ["OverloadedError", "OverloadedError", "ok"],
            "third [sim:fail_first=0]": ["ok", "ok", "ok"],
        }


async def fault_sequence(sim: Simulator, prompts: list[str], rounds: int) -> dict[tuple[str, int], str]:
    """Outcome of request n of each prompt, with all prompts racing each other every round."""
    outcomes: dict[tuple[str, int], str] = {}

    async def one(client: anthropic.AsyncAnthropic, prompt: str, round_number: int) -> None:
        text, error = await stream_until_error(client, prompt)
        outcomes[(prompt, round_number)] = f"{type(error).__name__ if error else 'ok'}:{len(text)}"

    async with client_for(sim) as client:
        for round_number in range(rounds):
            async with anyio.create_task_group() as group:
                for prompt in prompts:
                    group.start_soon(one, client, prompt, round_number)

    return outcomes


async def test_same_seed_gives_the_same_fault_sequence(make_simulator: SimulatorFactory) -> None:
    """Faults depend on (seed, document, request number), not on arrival order."""
    faults = FaultConfig.parse("http_529=0.2,http_500=0.1,midstream_error=0.2,drop=0.2,malformed=0.1,seed=5")
    prompts = [f"reproducible {i} [sim:tokens=60]" for i in range(6)]
    first = await fault_sequence(await make_simulator(faults=faults), prompts, rounds=4)
    second = await fault_sequence(await make_simulator(faults=faults), list(reversed(prompts)), rounds=4)
    other = await fault_sequence(await make_simulator(faults=faults, seed=1), prompts, rounds=4)
    assert first == second
    assert first != other
    assert len({outcome.split(":")[0] for outcome in first.values()}) >= 3


class TestStalls:
    async def test_stall_keeps_pinging_without_text(self, make_simulator: SimulatorFactory) -> None:
        """After some text only pings arrive; the client gives up; the server lets go cleanly."""
        sim = await make_simulator(ping_interval=0.02)
        prompt = "stall [sim:faults=stall=1]"
        body = {
            "model": MODERN,
            "max_tokens": 500,
            "stream": True,
            "messages": [{"role": "user", "content": prompt}],
        }
        names: list[str] = []
        async with (
            httpx2.AsyncClient(base_url=sim.base_url) as http,
            http.stream("POST", "/v1/messages", json=body, headers={"x-api-key": "k"}) as response,
        ):
            with anyio.move_on_after(0.5) as scope:
                async for name, _ in sse_events(response):
                    names.append(name)

        assert scope.cancelled_caught
        last_delta = max(i for i, name in enumerate(names) if name == "content_block_delta")
        assert names.count("ping") >= 5
        assert set(names[last_delta + 1 :]) == {"ping"}
        assert len(names) - last_delta - 1 >= 4

    async def test_silent_stall_sends_nothing_and_sdk_sees_no_text(self, simulator: Simulator) -> None:
        """``stall_silent``: text stops and nothing else comes; an SDK reader waits in vain."""
        prompt = "silent [sim:faults=stall_silent=1]"
        text = ""
        async with (
            client_for(simulator) as client,
            client.messages.stream(
                model=MODERN, max_tokens=500, messages=[{"role": "user", "content": prompt}]
            ) as stream,
        ):
            with anyio.move_on_after(0.3) as scope:
                async for delta in stream.text_stream:
                    text += delta

        assert scope.cancelled_caught
        assert text and expected_document(None, prompt).startswith(text)
        assert text != expected_document(None, prompt)

    async def test_stalled_streams_leave_no_tasks_behind(self) -> None:
        """Abandoned stalls are recorded as failed, and nothing outlives the simulator."""
        async with run_simulator(SimulatorConfig(ping_interval=0.02)) as sim, client_for(sim) as client:
            for spec in ("stall=1", "stall_silent=1"):
                prompt = f"leak [sim:faults={spec}]"
                async with client.messages.stream(
                    model=MODERN, max_tokens=500, messages=[{"role": "user", "content": prompt}]
                ) as stream:
                    with anyio.move_on_after(0.2) as scope:
                        async for _ in stream.text_stream:
                            pass

                assert scope.cancelled_caught

        assert sim.accounting().streams_failed == {"stall": 1, "stall_silent": 1}
        assert asyncio.all_tasks() == {asyncio.current_task()}


class TestRateLimits:
    async def test_requests_per_minute_429_with_retry_after_and_headers(
        self, make_simulator: SimulatorFactory
    ) -> None:
        """Two requests fit in rpm=2; the third gets 429, retry-after 30, and only request headers."""
        clock = FakeClock()
        sim = await make_simulator(rpm=2, clock=clock)
        async with client_for(sim) as client:
            for _ in range(2):
                response = await client.messages.with_raw_response.create(
                    model=MODERN, max_tokens=10, messages=[{"role": "user", "content": "rl"}]
                )
                assert response.headers["anthropic-ratelimit-requests-limit"] == "2"
                assert "anthropic-ratelimit-requests-reset" in response.headers
                assert "anthropic-ratelimit-output-tokens-limit" not in response.headers
                assert "anthropic-ratelimit-input-tokens-limit" not in response.headers

            with pytest.raises(anthropic.RateLimitError) as caught:
                await client.messages.create(
                    model=MODERN, max_tokens=10, messages=[{"role": "user", "content": "rl"}]
                )

            assert caught.value.response.headers["retry-after"] == "30"
            assert caught.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
            assert "2 requests per minute" in (caught.value.api_message or "")
            clock.advance(30)
            await client.messages.create(
                model=MODERN, max_tokens=10, messages=[{"role": "user", "content": "rl"}]
            )

        assert sim.accounting().rate_limited == 1

    async def test_output_reservation_is_refunded(self, make_simulator: SimulatorFactory) -> None:
        """max_tokens is reserved up front and the unused part refunded, failed streams included."""
        sim = await make_simulator(otpm=1000, clock=FakeClock())
        async with client_for(sim) as client:
            await client.messages.create(
                model=MODERN, max_tokens=900, messages=[{"role": "user", "content": "x [sim:tokens=50]"}]
            )
            _, error = await stream_until_error(sim, "y [sim:tokens=50] [sim:faults=drop=1]", max_tokens=500)
            assert isinstance(error, httpx2.TransportError)
            lost = sim.accounting().failed_output_tokens
            assert 1 <= lost < 50
            response = await client.messages.with_raw_response.create(
                model=MODERN, max_tokens=800, messages=[{"role": "user", "content": "z [sim:tokens=10]"}]
            )
            # A full message's headers are prepared after its reservation is settled.
            assert response.headers["anthropic-ratelimit-output-tokens-remaining"] == str(
                1000 - 50 - lost - 10
            )
            with pytest.raises(anthropic.RateLimitError) as caught:
                await client.messages.create(
                    model=MODERN, max_tokens=1000, messages=[{"role": "user", "content": "again"}]
                )

        assert "1,000 output tokens per minute" in (caught.value.api_message or "")
        assert caught.value.response.headers["retry-after"] == str(math.ceil((50 + lost + 10) * 60 / 1000))

    async def test_input_tokens_per_minute(self, make_simulator: SimulatorFactory) -> None:
        """A prompt larger than what is left of the input bucket is refused."""
        sim = await make_simulator(itpm=100, clock=FakeClock())
        async with client_for(sim) as client:
            await client.messages.create(
                model=MODERN, max_tokens=5, messages=[{"role": "user", "content": "w " * 60}]
            )
            with pytest.raises(anthropic.RateLimitError) as caught:
                await client.messages.create(
                    model=MODERN, max_tokens=5, messages=[{"role": "user", "content": "w " * 60}]
                )

        prompt_tokens = count_tokens("w " * 60)
        assert "100 input tokens per minute" in (caught.value.api_message or "")
        assert caught.value.response.headers["retry-after"] == str(math.ceil((2 * prompt_tokens - 100) * 0.6))
        assert document_key(None, "w " * 60) in sim.accounting().documents
