"""The wire format of the Messages API: request validation, model rules, JSON shapes, SSE.

Kept apart from the server so the HTTP handlers read as a flow and this module can be held
against the API reference line by line: the error messages here are the API's own words.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from worker.simulator.cache import MAX_BREAKPOINTS, CachePlan, PromptBlock
from worker.simulator.content import Content, ContentError, read_content
from worker.simulator.options import OptionError, RequestOptions, parse_options
from worker.simulator.text import count_tokens

__all__ = (
    "REQUEST_ID",
    "OUTPUT_300K_BETA",
    "max_output_tokens",
    "check_output_cap",
    "betas_of",
    "PREFILL_UNSUPPORTED",
    "TRAILING_WHITESPACE",
    "ApiError",
    "MessagesRequest",
    "SseWriter",
    "model_supports_prefill",
    "model_retired",
    "parse_messages_request",
    "new_id",
    "usage",
    "stop_delta",
    "message_body",
    "thinking_text",
    "THINKING_SIGNATURE",
    "error_response",
)

#: Where a request's ``req_...`` id lives, so the header and the error body carry the same one.
REQUEST_ID = web.RequestKey("request_id", str)

PREFILL_UNSUPPORTED = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)
TRAILING_WHITESPACE = "messages: final assistant content cannot end with trailing whitespace"
# Opus/Sonnet/Haiku 4.5 and everything older continue a final assistant message (prefill).
_PREFILL_MODEL_RE = re.compile(
    r"claude-(?:3(?:-[57])?-(?:opus|sonnet|haiku)|(?:opus|sonnet|haiku)-4(?:-[015])?)(?:-\d{8}|-latest)?"
)
# Claude 4.6 and later, every *-5* id, Mythos and Fable: no prefill.
_MODERN_MODEL_RE = re.compile(
    r"claude-(?:[a-z]+-5(?:-\d+)?|(?:opus|sonnet|haiku)-4-[6-9]|(?:mythos|fable)-[a-z0-9-]+)(?:-\d{8})?"
)


# Models past their end of life on the simulated date (late 2026): the API answers them with a 404,
# exactly as it does an id that never existed. Claude 3.x and 2.x, Opus/Sonnet 4.0 and Opus 4.1,
# Sonnet 4.5 (retired 2026-11-30) and Mythos Preview (2026-06-30).
_RETIRED_MODEL_RE = re.compile(
    r"claude-(?:[23](?:\.\d)?(?:-[0-9a-z.]+)*|instant-[0-9a-z.-]+|(?:opus|sonnet)-4(?:-[01])?(?:-\d{8})?"
    r"|sonnet-4-5(?:-\d{8})?|mythos-preview)"
)


#: The Batch API's beta that raises the output cap of the 5.x models to 300K (SERVICE.md §1).
OUTPUT_300K_BETA = "output-300k-2026-03-24"
# Output caps the models overview states (ANTHROPIC.md): 128K for the 5.x models, 64K for Haiku
# 4.5; 300K on the Batch API with the beta for Opus 5/5.5, Sonnet 5/5.5 and Haiku 5.5. Models
# whose cap is unverified are not capped here.
_CAP_128K_RE = re.compile(r"claude-(?:fable-5-1|opus-5(?:-5)?|sonnet-5(?:-5)?|haiku-5-5)(?:-\d{8})?")
_CAP_64K_RE = re.compile(r"claude-haiku-4-5(?:-\d{8})?")
_BETA_300K_RE = re.compile(r"claude-(?:opus-5(?:-5)?|sonnet-5(?:-5)?|haiku-5-5)(?:-\d{8})?")


def max_output_tokens(model: str, betas: frozenset[str] = frozenset(), *, batch: bool = False) -> int | None:
    """The largest ``max_tokens`` the API accepts for ``model``: None where it is not known here.
    The 300K beta counts only on the Batch API, as the API documents it."""
    if batch and OUTPUT_300K_BETA in betas and _BETA_300K_RE.fullmatch(model):
        return 300_000
    if _CAP_128K_RE.fullmatch(model):
        return 128_000
    if _CAP_64K_RE.fullmatch(model):
        return 64_000
    return None


def check_output_cap(
    model: str, max_tokens: int, betas: frozenset[str] = frozenset(), *, batch: bool = False
) -> None:
    """Raise the API's 400 when ``max_tokens`` exceeds the model's output cap."""
    cap = max_output_tokens(model, betas, batch=batch)
    if cap is not None and max_tokens > cap:
        raise ApiError(
            400,
            "invalid_request_error",
            f"max_tokens: {max_tokens} > {cap}, which is the maximum allowed number of output tokens "
            f"for {model}",
        )


def betas_of(header: str | None) -> frozenset[str]:
    """The ``anthropic-beta`` header's comma-separated names."""
    return frozenset(name.strip() for name in (header or "").split(",") if name.strip())


def model_retired(model: str) -> bool:
    """True for a model the API no longer serves (it answers 404 ``not_found_error``)."""
    return _RETIRED_MODEL_RE.fullmatch(model) is not None


def model_supports_prefill(model: str) -> bool | None:
    """True for models that continue a final assistant turn, False for 4.6+, None if unknown."""
    if _PREFILL_MODEL_RE.fullmatch(model):
        return True

    if _MODERN_MODEL_RE.fullmatch(model):
        return False

    return None


class ApiError(Exception):
    """An API error answered as ``{"type": "error", "error": {...}, "request_id": ...}``."""

    def __init__(self, status: int, error_type: str, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.retry_after = retry_after


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """The parts of a Messages request the simulator acts on."""

    model: str
    max_tokens: int
    stream: bool
    system: str | None
    first_user_text: str
    #: All assistant turns concatenated: the document text the client already has.
    text_so_far: str
    ends_with_assistant: bool
    input_tokens: int
    #: The last user turn's text (a continuation turn may quote an anchor to repeat).
    last_user_text: str = ""
    #: The prompt as rendered blocks, with their ``cache_control`` breakpoints.
    blocks: tuple[PromptBlock, ...] = ()
    options: RequestOptions = field(default_factory=RequestOptions)


def _check_breakpoints(blocks: list[PromptBlock]) -> None:
    ttls = [block.ttl for block in blocks if block.ttl is not None]
    if len(ttls) > MAX_BREAKPOINTS:
        raise _invalid(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(ttls)}."
        )
    if "1h" in ttls and "5m" in ttls[: len(ttls) - ttls[::-1].index("1h")]:
        raise _invalid("a ttl='1h' cache_control block must not come after a ttl='5m' one")


def _content(content: object, where: str, role: str) -> Content:
    try:
        return read_content(content, where, role, "\n" if role == "user" else "")
    except ContentError as exc:
        raise _invalid(str(exc)) from None


def parse_messages_request(raw: bytes) -> MessagesRequest:
    """Validate a ``POST /v1/messages`` body like the API does; unknown fields are ignored.

    :raises ApiError: 400 ``invalid_request_error`` naming the offending field.
    """
    body = _load_body(raw)
    model, max_tokens, stream = _head(body)
    system = body.get("system")
    system_content = None if system is None else _content(system, "system", "system")
    system_text = None if system_content is None else system_content.text
    blocks = [] if system_content is None else list(system_content.blocks)
    turns, media_tokens = _turns(body["messages"], blocks)
    _check_breakpoints(blocks)
    input_tokens = (
        count_tokens(system_text or "") + sum(count_tokens(text) for _, text in turns) + media_tokens
    )
    try:
        options = parse_options(body, model, max_tokens, turns[-1][0] == "assistant")
    except OptionError as exc:
        raise _invalid(str(exc)) from None
    return MessagesRequest(
        model=model,
        max_tokens=max_tokens,
        stream=stream,
        system=system_text,
        first_user_text=turns[0][1],
        text_so_far="".join(text for role, text in turns if role == "assistant"),
        ends_with_assistant=turns[-1][0] == "assistant",
        input_tokens=input_tokens,
        last_user_text=next(text for role, text in reversed(turns) if role == "user"),
        blocks=tuple(blocks),
        options=options,
    )


def _load_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _invalid("There was an error parsing the body of your http request.") from exc
    if not isinstance(body, dict):
        raise _invalid("Request body must be a JSON object")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            raise _invalid(f"{name}: Field required")
    return body


def _head(body: dict[str, Any]) -> tuple[str, int, bool]:
    """``model``, ``max_tokens`` and ``stream``, checked in the API's order."""
    model, max_tokens = body["model"], body["max_tokens"]
    if not isinstance(model, str):
        raise _invalid("model: Input should be a valid string")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise _invalid("max_tokens: Input should be greater than or equal to 1")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream: Input should be a valid boolean")
    return model, max_tokens, stream


def _turns(messages: object, blocks: list[PromptBlock]) -> tuple[list[tuple[str, str]], int]:
    """Each message's role and text, and the media tokens of its blocks; the rendered blocks are
    appended to ``blocks``."""
    if not isinstance(messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    turns: list[tuple[str, str]] = []
    media_tokens = 0
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        role = message["role"]
        content = _content(message.get("content"), f"messages.{index}.content", role)
        final_assistant = index == len(messages) - 1 and role == "assistant"
        if content.empty and not final_assistant:
            raise _invalid(
                f"messages.{index}: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        turns.append((role, content.text))
        blocks.extend(content.blocks)
        media_tokens += content.media_tokens
    if turns[0][0] != "user":
        raise _invalid('messages: first message must use the "user" role')
    return turns, media_tokens


class SseWriter:
    """Buffers SSE events and writes them in few large chunks; sends pings when idle.

    Coalescing matters at ``tokens_per_second=0``: a 100k-token stream is ~40k events, and one
    socket write per event would cost more than generating the text.
    """

    _FLUSH_BYTES = 16_384

    def __init__(self, response: web.StreamResponse, ping_interval: float, text_index: int = 0) -> None:
        self.response = response
        self._delta_head = (
            f'event: content_block_delta\ndata: {{"type": "content_block_delta", "index": {text_index}, '
            '"delta": {"type": "text_delta", "text": '
        )
        self._interval = ping_interval
        self._loop = asyncio.get_running_loop()
        self._chunks: list[str] = []
        self._size = 0
        self._last_write = self._loop.time()

    def raw(self, text: str) -> None:
        """Queue already-encoded SSE text (used for the deliberately malformed event)."""
        self._chunks.append(text)
        self._size += len(text)

    def event(self, name: str, data: dict[str, Any]) -> None:
        """Queue ``event: name`` with ``data`` as JSON."""
        self.raw(f"event: {name}\ndata: {json.dumps(data)}\n\n")

    def ping(self) -> None:
        """Queue a ``ping`` event."""
        self.raw('event: ping\ndata: {"type": "ping"}\n\n')

    def text_delta(self, text: str) -> None:
        """Queue a ``text_delta``; the fixed part is pre-encoded since this runs per delta."""
        self.raw(f"{self._delta_head}{json.dumps(text)}}}}}\n\n")

    async def flush(self) -> None:
        """Write everything queued in one chunk (waits for the socket to drain if it must)."""
        if self._chunks:
            data = "".join(self._chunks).encode()
            self._chunks.clear()
            self._size = 0
            await self.response.write(data)
            self._last_write = self._loop.time()

    async def maybe_flush(self) -> None:
        """Flush when the buffer is large, and let other streams run."""
        if self._size >= self._FLUSH_BYTES:
            await self.flush()
            await asyncio.sleep(0)

    async def wait_until(self, due: float) -> None:
        """Flush, then sleep until loop time ``due``, pinging every ``ping_interval`` of silence."""
        await self.flush()
        while (now := self._loop.time()) < due:
            next_ping = self._last_write + self._interval
            if now >= next_ping:
                self.ping()
                await self.flush()
                continue

            await asyncio.sleep(min(due, next_ping) - now)

    async def ping_until(self, done: asyncio.Event) -> None:
        """Send only pings until ``done`` is set (a stall that keeps the read timeout alive)."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await done.wait()

            if not done.is_set():
                self.ping()
                await self.flush()


#: The simulator's thinking blocks are signed with this opaque value.
THINKING_SIGNATURE = "c2ltdWxhdGVkLXNpZ25hdHVyZQ=="


def thinking_text(parsed: MessagesRequest) -> str:
    """The deterministic thinking of a request: a few dozen tokens, within its budget."""
    words = parsed.first_user_text.split()[:6]
    plan = f"Planning the next part of {' '.join(words)!r}: keep the structure, continue the text. "
    budget = min(parsed.options.budget_tokens or 64, 64, max(1, parsed.max_tokens // 4))
    text, tokens = "", 0
    while tokens < budget:
        text += plan
        tokens = count_tokens(text)
    return text


def new_id(prefix: str) -> str:
    """A fresh ``req_``/``msg_`` style identifier."""
    return prefix + uuid.uuid4().hex[:24]


def usage(input_tokens: int, output_tokens: int, cache: CachePlan | None = None) -> dict[str, Any]:
    """The usage object: ``input_tokens`` is the prompt less what was read from or written to the
    cache (``cache`` is the request's plan; None = nothing cached)."""
    cache = cache or CachePlan()
    return {
        "input_tokens": max(0, input_tokens - cache.read - cache.written),
        "cache_creation_input_tokens": cache.written,
        "cache_read_input_tokens": cache.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache.write_5m,
            "ephemeral_1h_input_tokens": cache.write_1h,
        },
        "output_tokens": output_tokens,
    }


def stop_delta(stop_reason: str, stop_sequence: str | None = None) -> dict[str, Any]:
    """The ``delta`` of ``message_delta``; refusals carry ``stop_details`` like the API's."""
    delta: dict[str, Any] = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
    if stop_reason == "refusal":
        delta["stop_details"] = {"type": "refusal", "category": None, "explanation": None}

    return delta


def message_body(
    parsed: MessagesRequest,
    text: str,
    stop_reason: str | None,
    output_tokens: int,
    cache: CachePlan | None = None,
    *,
    thinking: str = "",
    stop_sequence: str | None = None,
) -> dict[str, Any]:
    """A Message object; ``stop_reason=None`` gives the empty one of ``message_start``.

    ``thinking`` (when the request thinks) comes first, as a signed thinking block; its tokens are
    part of ``output_tokens``, as the API bills them.
    """
    content: list[dict[str, Any]] = []
    if stop_reason is not None:
        if parsed.options.thinking is not None:
            content.append({"type": "thinking", "thinking": thinking, "signature": THINKING_SIGNATURE})
        content.append({"type": "text", "text": text})
    message: dict[str, Any] = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": parsed.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {**usage(parsed.input_tokens, output_tokens, cache), "service_tier": "standard"},
    }
    if stop_reason is not None:
        message.update(stop_delta(stop_reason, stop_sequence))

    return message


def error_response(request: web.Request, error: ApiError) -> web.StreamResponse:
    """The JSON error response, with the same request id in the body as in the header."""
    request_id = request.get(REQUEST_ID) or new_id("req_")
    request[REQUEST_ID] = request_id
    body = {
        "type": "error",
        "error": {"type": error.error_type, "message": error.message},
        "request_id": request_id,
    }
    headers = {"retry-after": error.retry_after} if error.retry_after is not None else None
    return web.json_response(body, status=error.status, headers=headers)
