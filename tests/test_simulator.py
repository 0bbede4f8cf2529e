"""The real ``anthropic`` SDK against the simulator over real HTTP: grammar, text, continuation.

Faults, stalls and rate limits are in ``test_simulator_faults.py``; pure parts in
``test_simulator_units.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import MessageParam

from tests.simulator_fixtures import SimulatorFactory
from worker.simulator import FaultConfig, Simulator, count_tokens, document_key, expected_document, tokenize

ROOT = Path(__file__).resolve().parent.parent
MODERN = "claude-opus-4-6"
LEGACY = "claude-haiku-4-5"
PREFILL_ERROR = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)
TRAILING_ERROR = "messages: final assistant content cannot end with trailing whitespace"


def client_for(sim: Simulator, **options: Any) -> anthropic.AsyncAnthropic:
    """An SDK client pointed at ``sim``; the SDK's own retries are off so each call is one request."""
    return anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0, **options)


async def sse_events(response: httpx2.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs from a raw SSE body, read incrementally."""
    event, data = "", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif line == "" and event:
            yield event, data
            event, data = "", ""


async def stream_text(
    client: anthropic.AsyncAnthropic,
    messages: list[MessageParam],
    *,
    model: str = MODERN,
    max_tokens: int = 4096,
    system: str | None = None,
) -> tuple[str, str | None]:
    """Text and stop reason of one streamed request."""
    extra: dict[str, Any] = {} if system is None else {"system": system}
    async with client.messages.stream(
        model=model, max_tokens=max_tokens, messages=messages, **extra
    ) as stream:
        message = await stream.get_final_message()

    text = "".join(block.text for block in message.content if block.type == "text")
    return text, message.stop_reason


class TestStreaming:
    async def test_streamed_document_equals_expected_document(self, simulator: Simulator) -> None:
        """The streamed text is exactly ``expected_document``; usage adds up; request id set."""
        system, prompt = "You write essays.", "An essay on rivers [sim:tokens=400]"
        async with (
            client_for(simulator) as client,
            client.messages.stream(
                model=MODERN, max_tokens=1000, system=system, messages=[{"role": "user", "content": prompt}]
            ) as stream,
        ):
            deltas = [text async for text in stream.text_stream]
            message = await stream.get_final_message()
            assert (stream.request_id or "").startswith("req_")

        document = expected_document(system, prompt)
        assert "".join(deltas) == document
        assert len(deltas) > 1
        assert message.stop_reason == "end_turn"
        assert message.usage.output_tokens == len(tokenize(document)) == 400
        assert message.usage.input_tokens == count_tokens(system) + count_tokens(prompt)

    async def test_raw_sse_grammar(self, simulator: Simulator) -> None:
        """Event order, names, JSON types, ping, headers and cumulative usage as the real API."""
        prompt = "grammar [sim:tokens=30]"
        body = {
            "model": MODERN,
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": prompt}],
        }
        async with (
            httpx2.AsyncClient(base_url=simulator.base_url) as http,
            http.stream("POST", "/v1/messages", json=body, headers={"x-api-key": "k"}) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["request-id"].startswith("req_")
            events = [(name, json.loads(data)) async for name, data in sse_events(response)]

        names = [name for name, _ in events]
        assert names[:3] == ["message_start", "content_block_start", "ping"]
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert set(names[3:-3]) == {"content_block_delta"}
        assert all(data["type"] == name for name, data in events)
        start = events[0][1]["message"]
        assert start["content"] == [] and start["stop_reason"] is None and start["role"] == "assistant"
        assert start["usage"]["output_tokens"] == 1
        assert start["usage"]["input_tokens"] == count_tokens(prompt)
        assert events[1][1]["content_block"] == {"type": "text", "text": ""}
        text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
        assert text == expected_document(None, prompt)
        delta = events[-2][1]
        assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
        assert delta["usage"]["output_tokens"] == 30
        assert delta["usage"]["input_tokens"] == count_tokens(prompt)

    async def test_sdk_create_stream_events(self, simulator: Simulator) -> None:
        """``create(stream=True)`` yields the raw events in grammar order (pings dropped by the SDK)."""
        async with client_for(simulator) as client:
            stream = await client.messages.create(
                model=MODERN, max_tokens=100, stream=True, messages=[{"role": "user", "content": "raw"}]
            )
            types = [event.type async for event in stream]

        assert types[:2] == ["message_start", "content_block_start"]
        assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert set(types[2:-3]) == {"content_block_delta"}

    async def test_slow_stream_sends_pings(self, make_simulator: SimulatorFactory) -> None:
        """Pings keep flowing while a slow stream is between deltas."""
        sim = await make_simulator(tokens_per_second=40, tokens_per_delta=(4, 4), ping_interval=0.02)
        body = {
            "model": MODERN,
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "slow [sim:tokens=8]"}],
        }
        async with (
            httpx2.AsyncClient(base_url=sim.base_url) as http,
            http.stream("POST", "/v1/messages", json=body, headers={"x-api-key": "k"}) as response,
        ):
            names = [name async for name, _ in sse_events(response)]

        assert names.count("content_block_delta") == 2
        assert names.count("ping") >= 3
        assert names[-1] == "message_stop"

    async def test_non_streaming_returns_the_same_text(self, simulator: Simulator) -> None:
        """A full Message carries the same document and usage."""
        prompt = "non-streaming [sim:tokens=120]"
        async with client_for(simulator) as client:
            response = await client.messages.with_raw_response.create(
                model=MODERN, max_tokens=1000, messages=[{"role": "user", "content": prompt}]
            )
            message = await response.parse()

        assert response.headers["request-id"].startswith("req_")
        assert message.content[0].type == "text"
        assert message.content[0].text == expected_document(None, prompt)
        assert message.stop_reason == "end_turn"
        assert message.usage.output_tokens == 120
        assert message.model == MODERN


class TestValidation:
    async def test_missing_key_is_401_with_request_id(self, simulator: Simulator) -> None:
        """No credentials → 401 authentication_error; body and header share the request id."""
        body = {"model": MODERN, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
        async with httpx2.AsyncClient(base_url=simulator.base_url) as http:
            response = await http.post("/v1/messages", json=body)

        assert response.status_code == 401
        error = response.json()
        assert error["type"] == "error"
        assert error["error"]["type"] == "authentication_error"
        assert error["request_id"] == response.headers["request-id"]

    async def test_configured_key_must_match(self, make_simulator: SimulatorFactory) -> None:
        """With ``api_key`` set, the SDK's bearer token must equal it; x-api-key works too."""
        sim = await make_simulator(api_key="secret")
        async with client_for(sim) as client:
            with pytest.raises(anthropic.AuthenticationError):
                await client.messages.create(
                    model=MODERN, max_tokens=5, messages=[{"role": "user", "content": "x"}]
                )

        body = {"model": MODERN, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        async with httpx2.AsyncClient(base_url=sim.base_url) as http:
            response = await http.post("/v1/messages", json=body, headers={"x-api-key": "secret"})

        assert response.status_code == 200

    async def test_unknown_model_is_404(self, simulator: Simulator) -> None:
        """An unknown model id is a not_found_error, as from the API."""
        async with client_for(simulator) as client:
            with pytest.raises(anthropic.NotFoundError) as caught:
                await client.messages.create(
                    model="claude-nonexistent-1", max_tokens=5, messages=[{"role": "user", "content": "x"}]
                )

        assert caught.value.type == "not_found_error"

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model: Field required"),
            ({"model": MODERN, "messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
            (
                {"model": MODERN, "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
                "max_tokens",
            ),
            (
                {"model": MODERN, "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]},
                "max_tokens",
            ),
            ({"model": MODERN, "max_tokens": 5, "messages": []}, "at least one message"),
            (
                {"model": MODERN, "max_tokens": 5, "messages": [{"role": "assistant", "content": "x"}]},
                "first",
            ),
            ({"model": MODERN, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "role"),
            ({"model": MODERN, "max_tokens": 5, "messages": [{"role": "user", "content": 5}]}, "content"),
            (
                {
                    "model": MODERN,
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": [{"type": "image"}]}],
                },
                "messages.0.content.0.image.source: Field required",
            ),
            (
                {
                    "model": MODERN,
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": [{"type": "audio"}]}],
                },
                "messages.0.content.0: Input tag 'audio' found using 'type' does not match",
            ),
            (
                {
                    "model": MODERN,
                    "max_tokens": 5,
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": "Describe it."},
                                {
                                    "type": "image",
                                    "source": {"type": "base64", "media_type": "image/bmp", "data": "AA=="},
                                },
                            ],
                        }
                    ],
                },
                "messages.0.content.1.image.source.base64.media_type: Input should be 'image/jpeg'",
            ),
            (
                {
                    "model": MODERN,
                    "max_tokens": 5,
                    "messages": [
                        {"role": "user", "content": "Go."},
                        {
                            "role": "assistant",
                            "content": [
                                {
                                    "type": "document",
                                    "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                                }
                            ],
                        },
                        {"role": "user", "content": "More."},
                    ],
                },
                "messages.1.content.0: document content blocks are only allowed in user messages",
            ),
            (
                {"model": MODERN, "max_tokens": 5, "messages": [{"role": "user", "content": "[sim:nope]"}]},
                "nope",
            ),
        ],
    )
    async def test_invalid_requests_are_400(
        self, simulator: Simulator, body: dict[str, Any], message: str
    ) -> None:
        """Schema problems are invalid_request_error naming the field."""
        async with httpx2.AsyncClient(base_url=simulator.base_url) as http:
            response = await http.post("/v1/messages", json=body, headers={"authorization": "Bearer k"})

        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert message in response.json()["error"]["message"]

    async def test_text_blocks_and_unknown_fields_are_accepted(self, simulator: Simulator) -> None:
        """Content as text blocks is the same prompt as the string; unknown fields are ignored."""
        body = {
            "model": MODERN,
            "max_tokens": 500,
            "metadata": {"user_id": "u"},
            "temperature_hint": 1,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "blocks", "cache_control": None}]}
            ],
        }
        async with httpx2.AsyncClient(base_url=simulator.base_url) as http:
            response = await http.post("/v1/messages", json=body, headers={"x-api-key": "k"})

        assert response.json()["content"][0]["text"] == expected_document(None, "blocks")

    async def test_unknown_route_is_json_404(self, simulator: Simulator) -> None:
        """Other paths answer like the API: a JSON not_found_error."""
        async with httpx2.AsyncClient(base_url=simulator.base_url) as http:
            response = await http.get("/v1/nothing")

        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"


class TestContinuation:
    async def test_max_tokens_then_prefill_reassembles_on_haiku_4_5(self, simulator: Simulator) -> None:
        """max_tokens chunks, continued by prefill with trailing whitespace trimmed, rebuild it."""
        prompt = "prefill chain [sim:tokens=500]"
        document = expected_document(None, prompt)
        so_far, stops = "", []
        async with client_for(simulator) as client:
            while True:
                messages: list[MessageParam] = [{"role": "user", "content": prompt}]
                prefill = so_far.rstrip()
                if prefill:
                    messages.append({"role": "assistant", "content": prefill})

                text, stop = await stream_text(client, messages, model=LEGACY, max_tokens=60)
                so_far = prefill + text
                stops.append(stop)
                if stop != "max_tokens":
                    break

        assert so_far == document
        assert stops[-1] == "end_turn"
        assert len(stops) >= 9

    async def test_prefill_with_trailing_whitespace_is_rejected(self, simulator: Simulator) -> None:
        """The API's exact 400 for a prefill ending in whitespace."""
        async with client_for(simulator) as client:
            with pytest.raises(anthropic.BadRequestError) as caught:
                await client.messages.create(
                    model=LEGACY,
                    max_tokens=10,
                    messages=[
                        {"role": "user", "content": "x"},
                        {"role": "assistant", "content": "Some text "},
                    ],
                )

        assert caught.value.api_message == TRAILING_ERROR

    async def test_prefill_on_4_6_is_rejected(self, simulator: Simulator) -> None:
        """Claude 4.6+ answers a final assistant message with the API's exact 400."""
        async with client_for(simulator) as client:
            with pytest.raises(anthropic.BadRequestError) as caught:
                await client.messages.create(
                    model=MODERN,
                    max_tokens=10,
                    messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "Some"}],
                )

        assert caught.value.api_message == PREFILL_ERROR
        assert caught.value.type == "invalid_request_error"

    async def test_continuation_via_user_turn_reassembles_on_4_6(self, simulator: Simulator) -> None:
        """[user, assistant: text so far (trailing whitespace kept), user: continue] rebuilds the document."""
        prompt = "continue chain [sim:tokens=300]"
        so_far = ""
        async with client_for(simulator) as client:
            for _ in range(20):
                messages: list[MessageParam] = [{"role": "user", "content": prompt}]
                if so_far:
                    messages.append({"role": "assistant", "content": so_far})
                    messages.append(
                        {"role": "user", "content": "Continue exactly where you stopped. [sim:tokens=5]"}
                    )

                text, stop = await stream_text(client, messages, max_tokens=70)
                so_far += text
                if stop == "end_turn":
                    break

        assert so_far == expected_document(None, prompt)
        assert simulator.accounting().mismatched_continuations == 0
        assert simulator.accounting().documents[document_key(None, prompt)].completed

    async def test_repeat_overlap_repeats_the_last_words(self, make_simulator: SimulatorFactory) -> None:
        """With repeat_overlap=1 a continuation first restates 3-8 words of the text so far."""
        sim = await make_simulator(repeat_overlap=1.0)
        prompt = "overlap [sim:tokens=200]"
        document = expected_document(None, prompt)
        async with client_for(sim) as client:
            first, _ = await stream_text(client, [{"role": "user", "content": prompt}], max_tokens=50)
            messages: list[MessageParam] = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": first},
                {"role": "user", "content": "Please continue."},
            ]
            second, stop = await stream_text(client, messages, max_tokens=1000)

        assert stop == "end_turn"
        rest = document[len(first) :]
        assert second.endswith(rest)
        repeated = second[: len(second) - len(rest)]
        assert repeated and first.endswith(repeated)
        assert 3 <= len(repeated.split()) <= 8

    async def test_an_echo_directive_repeats_the_quoted_anchor(self, simulator: Simulator) -> None:
        """``[sim:echo=anchor]``: a continuation turn that quotes the last words gets them back
        first, then the document's continuation; the behaviour is counted."""
        prompt = "anchored [sim:tokens=200] [sim:echo=anchor]"
        document = expected_document(None, prompt)
        async with client_for(simulator) as client:
            first, _ = await stream_text(client, [{"role": "user", "content": prompt}], max_tokens=50)
            anchor = " ".join(first.split()[-4:])
            messages: list[MessageParam] = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": first},
                {"role": "user", "content": f"Continue. <last_words>{anchor}</last_words>"},
            ]
            second, stop = await stream_text(client, messages, max_tokens=1000)

        assert stop == "end_turn"
        assert second == first[len(first.rstrip()) - len(anchor) :] + document[len(first) :]
        assert simulator.accounting().echoes == {"anchor": 1}

    async def test_mismatched_continuation_uses_longest_common_prefix(self, simulator: Simulator) -> None:
        """Text so far that is not a prefix continues from the common prefix and is counted."""
        prompt = "mismatch [sim:tokens=100]"
        document = expected_document(None, prompt)
        wrong = document[:80] + "ZZZ unrelated words"
        messages: list[MessageParam] = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": wrong},
            {"role": "user", "content": "continue"},
        ]
        async with client_for(simulator) as client:
            text, _ = await stream_text(client, messages)

        assert text == document[80:]
        assert simulator.accounting().mismatched_continuations == 1

    async def test_refusal(self, simulator: Simulator) -> None:
        """``[sim:refuse]`` streams some text, then stop_reason refusal."""
        prompt = "refuse me [sim:refuse]"
        async with client_for(simulator) as client:
            text, stop = await stream_text(client, [{"role": "user", "content": prompt}])
            short, short_stop = await stream_text(
                client, [{"role": "user", "content": "later [sim:refuse_after=3]"}], max_tokens=100
            )

        assert stop == "refusal"
        assert len(tokenize(text)) == 8
        assert expected_document(None, prompt).startswith(text)
        assert short_stop == "refusal"
        assert len(tokenize(short)) == 3


class TestAccounting:
    async def test_accounting_counts_and_reset(self, make_simulator: SimulatorFactory) -> None:
        """Per-status, per-stream and per-document counts; the HTTP view equals the accessor."""
        sim = await make_simulator(faults=FaultConfig(fail_first=1))
        prompt = "accounting [sim:tokens=50]"
        key = document_key(None, prompt)
        async with client_for(sim) as client:
            with pytest.raises(anthropic.OverloadedError):
                await stream_text(client, [{"role": "user", "content": prompt}])

            await stream_text(client, [{"role": "user", "content": prompt}])
            await client.messages.create(
                model=MODERN, max_tokens=20, messages=[{"role": "user", "content": prompt}]
            )

        snapshot = sim.accounting()
        assert snapshot.requests_by_status == {529: 1, 200: 2}
        assert snapshot.streams_started == snapshot.streams_completed == 1
        assert snapshot.messages_completed == 1
        assert snapshot.output_tokens == 70
        assert snapshot.faults_injected == {"http_529": 1}
        document = snapshot.documents[key]
        assert (document.requests, document.output_tokens, document.completed) == (3, 70, True)
        async with httpx2.AsyncClient(base_url=sim.base_url) as http:
            assert (await http.get("/_sim/accounting")).json() == snapshot.to_dict()
            assert (await http.post("/_sim/reset")).status_code == 200
            assert (await http.get("/_sim/accounting")).json()["documents"] == {}

        assert sim.accounting().requests == 0


async def test_cli_subprocess_serves_until_sigterm() -> None:
    """``python -m worker.simulator --port 0`` prints its URL, serves the SDK, exits 0 on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.simulator",
        "--port",
        "0",
        "--faults",
        "fail_first=1",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        base_url = line.split()[-1]
        async with anthropic.AsyncAnthropic(api_key="k", base_url=base_url, max_retries=1) as client:
            message = await client.messages.create(
                model=MODERN, max_tokens=500, messages=[{"role": "user", "content": "cli"}]
            )

        assert message.content[0].type == "text"
        assert message.content[0].text == expected_document(None, "cli")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
