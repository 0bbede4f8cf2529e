"""One streamed request through the SDK, with a stall watchdog.

Why ``messages.create(stream=True)`` and not the ``messages.stream()`` helper: the helper rebuilds
the accumulated text on every delta, so its cost per token grows with the document (measured by the
issue: about 10 s of CPU for a 100k-token stream against under 1 s for raw events). Long documents
are the point of this project, so we read raw events and hand each text delta to ``on_text``.

Why a watchdog of our own: the API sends ``ping`` events that keep the socket's read timeout alive,
so a stream that stalls while pinging never times out in httpx. The SDK drops pings, so from here a
stall is simply "no event for ``idle_timeout`` seconds": the deadline moves forward as events arrive
(at most every tenth of the timeout, to keep the per-event cost to one clock read).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anthropic
import anyio

from jobs.models import Usage
from worker.retry import StallError

__all__ = ("StreamResult", "stream_request")


@dataclass(slots=True)
class StreamResult:
    """What one request produced, apart from its text (which went to ``on_text``)."""

    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    request_id: str | None = None
    #: Seconds from sending the request to the first text delta.
    time_to_first_token: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


async def stream_request(
    client: anthropic.AsyncAnthropic,
    params: dict[str, Any],
    *,
    idle_timeout: float,
    on_text: Callable[[str], None],
    on_response: Callable[[Mapping[str, str]], Awaitable[None]] | None = None,
    result: StreamResult | None = None,
) -> StreamResult:
    """Send one streaming request and feed its text deltas to ``on_text``.

    ``on_response`` is awaited once, when the response headers arrive (rate-limit headers).
    ``result`` (if given) is filled in as events arrive, so a caller still sees the usage and
    headers of a stream that failed midway. Raises what the SDK raises (see ``worker.retry``), or
    ``StallError`` when no event arrives for ``idle_timeout`` seconds.
    """
    result = result if result is not None else StreamResult()
    started = anyio.current_time()
    bump_every = idle_timeout / 10
    with anyio.CancelScope(deadline=started + idle_timeout) as watchdog:
        stream = await client.messages.create(**params, stream=True)
        try:
            result.headers = stream.response.headers
            result.request_id = stream.response.headers.get("request-id")
            if on_response is not None:
                await on_response(result.headers)
            last_bump = anyio.current_time()
            async for event in stream:
                now = anyio.current_time()
                if now - last_bump > bump_every:
                    watchdog.deadline = now + idle_timeout
                    last_bump = now
                kind = event.type
                if kind == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta":
                        if result.time_to_first_token is None:
                            result.time_to_first_token = now - started
                        on_text(delta.text)
                elif kind == "message_start":
                    result.usage = _usage(event.message.usage)
                elif kind == "message_delta":
                    result.stop_reason = event.delta.stop_reason
                    result.usage = _merge_usage(result.usage, event.usage)
        finally:
            with anyio.CancelScope(shield=True):
                await stream.close()
    if watchdog.cancelled_caught:
        raise StallError(f"no event for {idle_timeout:g} s")
    return result


def _usage(usage: Any) -> Usage:
    return Usage(
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_input_tokens=usage.cache_read_input_tokens or 0,
    )


def _merge_usage(current: Usage, delta_usage: Any) -> Usage:
    """``message_delta`` usage is cumulative; fields it omits keep their ``message_start`` value."""
    return Usage(
        input_tokens=delta_usage.input_tokens or current.input_tokens,
        output_tokens=delta_usage.output_tokens or current.output_tokens,
        cache_creation_input_tokens=delta_usage.cache_creation_input_tokens
        or current.cache_creation_input_tokens,
        cache_read_input_tokens=delta_usage.cache_read_input_tokens or current.cache_read_input_tokens,
    )
