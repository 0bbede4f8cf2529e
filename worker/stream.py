"""One streamed request through the SDK, with a stall watchdog, at a flat, low cost per token.

Why not the ``messages.stream()`` helper: it rebuilds the accumulated text on every delta, so its
cost per token grows with the document. Why not iterating ``messages.create(stream=True)``: the SDK
builds a pydantic model for every event, which is most of a worker's CPU once hundreds of streams
run (measured: ~10 ms per 1,000 tokens). Instead the request goes through the SDK as usual
(``with_streaming_response``: its headers, authentication, and its exception for every non-2xx
status), and the body is read by ``worker.sse_reader`` (a leaner decoder than the SDK's, checked
against it); only the few events we need are parsed with ``json.loads``. The clock is the event
loop's own ``time()`` (what anyio's ``current_time()`` returns on asyncio, without its dispatch).

Failures surface exactly as they would through the SDK's event iterator: an ``event: error`` raises
a plain ``APIStatusError`` with status 200 (what the SDK raises), a malformed event a JSON decode
error, a dropped connection the transport's error. ``worker.retry`` classifies all of them.

Why a watchdog of our own: the API sends ``ping`` events that keep the socket's read timeout alive,
so a stream that stalls while pinging never times out in httpx. A stall is "no text and no other
event but pings for ``idle_timeout`` seconds": the deadline moves forward as events arrive (at most
every tenth of the timeout, to keep the per-event cost to one clock read).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anthropic
import anyio

from jobs.models import Usage
from worker.retry import StallError
from worker.sse_reader import read_events

__all__ = ("StreamResult", "stream_request", "merge_usage")


@dataclass(slots=True)
class StreamResult:
    """What one request produced, apart from its text (which went to ``on_text``)."""

    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    request_id: str | None = None
    #: Seconds from sending the request to the first text delta.
    time_to_first_token: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Characters of text streamed (what ``on_text`` received), for estimating a broken stream.
    chars: int = 0
    #: True once a ``message_delta`` carried usage: ``usage.output_tokens`` is then the API's count.
    final_usage: bool = False
    #: Which of the request's ``stop_sequences`` ended it (stop reason ``stop_sequence``).
    stop_sequence: str | None = None
    #: Characters of thinking streamed (``thinking_delta``): never text, but billed as output, so
    #: ``chars`` counts them too (a broken stream's estimate, and the document's share of output).
    thinking_chars: int = 0


async def stream_request(
    client: anthropic.AsyncAnthropic,
    params: dict[str, Any],
    *,
    idle_timeout: float,
    on_text: Callable[[str], None],
    on_response: Callable[[Mapping[str, str]], Awaitable[None]] | None = None,
    result: StreamResult | None = None,
    on_thinking: Callable[[str], None] | None = None,
) -> StreamResult:
    """Send one streaming request and feed its text deltas to ``on_text``.

    ``on_response`` is awaited once, when the response headers arrive (rate-limit headers).
    ``on_thinking`` receives thinking deltas, which never reach ``on_text`` (nor the document).
    ``result`` (if given) is filled in as events arrive, so a caller still sees the usage and
    headers of a stream that failed midway. Raises what the SDK raises (see ``worker.retry``), or
    ``StallError`` when no event arrives for ``idle_timeout`` seconds.
    """
    result = result if result is not None else StreamResult()
    clock = asyncio.get_running_loop().time  # anyio's current_time() on asyncio, read per event
    started = clock()
    bump_every = idle_timeout / 10
    with anyio.CancelScope(deadline=started + idle_timeout) as watchdog:
        async with client.messages.with_streaming_response.create(**params, stream=True) as response:
            http = response.http_response
            result.headers = http.headers
            result.request_id = http.headers.get("request-id")
            if on_response is not None:
                await on_response(result.headers)
            last_bump = clock()
            async for sse in read_events(http.aiter_bytes()):
                kind = sse.event
                if kind == "ping":
                    continue  # pings keep a socket alive, not a stream: they do not feed the watchdog
                now = clock()
                if now - last_bump > bump_every:
                    watchdog.deadline = now + idle_timeout
                    last_bump = now
                if kind == "content_block_delta":
                    _on_delta(result, json.loads(sse.data)["delta"], now - started, on_text, on_thinking)
                else:
                    _on_event(result, kind, sse.data, http)
    if watchdog.cancelled_caught:
        raise StallError(f"no event for {idle_timeout:g} s")
    return result


def _on_delta(
    result: StreamResult,
    delta: dict[str, Any],
    elapsed: float,
    on_text: Callable[[str], None],
    on_thinking: Callable[[str], None] | None,
) -> None:
    """A ``content_block_delta``: text goes to the document, thinking beside it, never into it."""
    if delta["type"] == "text_delta":
        if result.time_to_first_token is None:
            result.time_to_first_token = elapsed
        text = delta["text"]
        result.chars += len(text)
        on_text(text)
    elif delta["type"] == "thinking_delta":
        thought = delta["thinking"]
        result.chars += len(thought)
        result.thinking_chars += len(thought)
        if on_thinking is not None:
            on_thinking(thought)


def _on_event(result: StreamResult, kind: str | None, data: str, http: Any) -> None:
    """The stream's other events: usage at the start and the end, the stop reason, an error."""
    if kind == "message_start":
        result.usage = merge_usage(Usage(), json.loads(data)["message"].get("usage"))
    elif kind == "message_delta":
        body = json.loads(data)
        result.stop_reason = body["delta"].get("stop_reason")
        result.stop_sequence = body["delta"].get("stop_sequence")
        result.usage = merge_usage(result.usage, body.get("usage"))
        result.final_usage = result.final_usage or bool(body.get("usage"))
    elif kind == "error":
        raise _stream_error(data, http)


def _stream_error(data: str, response: Any) -> anthropic.APIStatusError:
    """The exception the SDK's own iterator raises for an ``event: error`` in a 200 stream."""
    body: object = data
    try:
        body = json.loads(data)
    except ValueError:
        pass
    return anthropic.APIStatusError(f"{body}", response=response, body=body)


def merge_usage(current: Usage, usage: Mapping[str, Any] | None) -> Usage:
    """``message_delta`` usage is cumulative; fields it omits keep their ``message_start`` value."""
    if not usage:
        return current
    return Usage(
        input_tokens=usage.get("input_tokens") or current.input_tokens,
        output_tokens=usage.get("output_tokens") or current.output_tokens,
        cache_creation_input_tokens=usage.get("cache_creation_input_tokens")
        or current.cache_creation_input_tokens,
        cache_read_input_tokens=usage.get("cache_read_input_tokens") or current.cache_read_input_tokens,
    )
