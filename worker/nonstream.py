"""The opt-in fallback for a job whose streams keep failing: one non-streaming request at a time.

Some networks cut long-lived event streams (a proxy with a short idle or total limit, a flaky
middlebox) while plain request/response calls pass. A job there fails attempt after attempt, each
time after some text. With ``[worker] nonstream_after = N`` (0 = off), a job that has failed N
attempts runs its next ones with non-streaming requests: each returns a whole message, which goes
to the document through the same joiner as streamed text and is committed as a checkpoint at once.
A document longer than one request is continued, as with streaming, with the same resume rules.

Why the size limit: the SDK refuses a non-streaming request that may run past its default
10-minute timeout. Its rule (``AsyncAPIClient._calculate_nonstreaming_timeout``) expects an hour
per 128,000 output tokens, so at most 21,333 tokens fit in 10 minutes, and some models have a
lower cap (``anthropic._constants.MODEL_NONSTREAMING_TOKENS``). :func:`nonstream_max_tokens`
computes the same bound from the same constants, so the guard is kept, never tripped.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anthropic
import anyio
from anthropic import _constants as sdk_constants

from worker.stream import StreamResult, merge_usage

__all__ = ("nonstream_max_tokens", "nonstream_request", "NONSTREAM_TIMEOUT_SECONDS")

#: The SDK's default request timeout, within which a non-streaming request must expect to finish.
NONSTREAM_TIMEOUT_SECONDS = 600.0
#: The SDK's expected generation time: an hour per 128,000 output tokens.
_SECONDS_PER_TOKEN = 3600 / 128_000


def nonstream_max_tokens(model: str) -> int:
    """The largest ``max_tokens`` the SDK lets a non-streaming request of ``model`` ask for."""
    by_time = math.floor(NONSTREAM_TIMEOUT_SECONDS / _SECONDS_PER_TOKEN)
    cap = sdk_constants.MODEL_NONSTREAMING_TOKENS.get(model)
    return min(by_time, cap) if cap else by_time


async def nonstream_request(
    client: anthropic.AsyncAnthropic,
    params: dict[str, Any],
    *,
    on_text: Callable[[str], None],
    on_response: Callable[[Mapping[str, str]], Awaitable[None]] | None = None,
    result: StreamResult | None = None,
) -> StreamResult:
    """Send one non-streaming request and give its text to ``on_text`` in one piece.

    ``params["max_tokens"]`` must be within :func:`nonstream_max_tokens` (the caller sizes it).
    Raises what the SDK raises; ``worker.retry`` classifies it as it does for a stream.
    """
    result = result if result is not None else StreamResult()
    started = anyio.current_time()
    raw = await client.messages.with_raw_response.create(**params)
    result.headers = raw.headers
    result.request_id = raw.headers.get("request-id")
    if on_response is not None:
        await on_response(result.headers)
    body = raw.http_response.json()
    text = "".join(block.get("text", "") for block in body.get("content", []) if block.get("type") == "text")
    result.stop_reason = body.get("stop_reason")
    result.stop_sequence = body.get("stop_sequence")
    result.usage = merge_usage(result.usage, body.get("usage"))
    result.final_usage = bool(body.get("usage"))
    if text:
        result.time_to_first_token = anyio.current_time() - started
        result.chars += len(text)
        on_text(text)
    return result
