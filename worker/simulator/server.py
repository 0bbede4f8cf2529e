"""The HTTP side: ``POST /v1/messages`` as the real API answers it, plus ``/_sim/*`` controls.

Request flow: authenticate, validate the body (400/404 with the API's messages), apply the
prefill rules of the model generation, reserve rate-limit capacity (429), number the request
for its document, plan the fault, then answer with a full Message or an SSE stream whose text
is the rest of the document. Generation is paced by ``tokens_per_second`` and coalesced into
few socket writes when it is not, so hundreds of streams fit on a couple of cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from worker.simulator.accounting import Accounting, AccountingSnapshot
from worker.simulator.batches import MAX_BYTES as MAX_BATCH_BYTES
from worker.simulator.batches import BatchConfig, Batches
from worker.simulator.cache import CachePlan, PromptCache
from worker.simulator.continuation import draw_echo, parse_echo, requested_anchor
from worker.simulator.faults import FaultConfig, FaultKind, FaultPlan, plan_fault
from worker.simulator.protocol import (
    PREFILL_UNSUPPORTED,
    REQUEST_ID,
    THINKING_SIGNATURE,
    TRAILING_WHITESPACE,
    ApiError,
    MessagesRequest,
    SseWriter,
    betas_of,
    check_output_cap,
    error_response,
    message_body,
    model_retired,
    model_supports_prefill,
    new_id,
    parse_messages_request,
    stop_delta,
    thinking_text,
    usage,
)
from worker.simulator.ratelimit import (
    Clock,
    RateClass,
    RateLimiter,
    RateLimitExceeded,
    RateLimits,
    Reservation,
)
from worker.simulator.text import (
    Directives,
    Document,
    common_prefix_length,
    count_tokens,
    load_document,
    overlap_words,
    parse_directives,
    tokenize,
)

__all__ = ("SimulatorConfig", "Simulator", "run_simulator")

log = logging.getLogger(__name__)

#: The rate limiter (of the model's class) a Messages request drew on: its headers are sent.
_LIMITER = web.RequestKey("rate_limiter", RateLimiter)


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Everything that shapes the simulator's behaviour; the same config gives the same run."""

    host: str = "127.0.0.1"
    #: 0 picks a free port.
    port: int = 0
    #: When set, the bearer token or ``x-api-key`` must equal it; any non-empty key otherwise.
    api_key: str | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    #: Generation speed per stream; 0 streams as fast as the socket takes it.
    tokens_per_second: float = 0.0
    #: Inclusive range of tokens per ``content_block_delta``, drawn per delta from the seed.
    tokens_per_delta: tuple[int, int] = (1, 4)
    #: Seconds without output after which a ``ping`` is sent (slow streams and stalls).
    ping_interval: float = 5.0
    #: Rate limits per minute; 0 is unlimited.
    rpm: int = 0
    itpm: int = 0
    otpm: int = 0
    #: Model classes with rate limits of their own (the limits above are for the other models).
    rate_classes: tuple[RateClass, ...] = ()
    #: Probability that a continuation via a later user turn first repeats 3-8 words (when no
    #: ``echo`` spec applies).
    repeat_overlap: float = 0.0
    #: How every continuation via a later user turn starts (``worker.simulator.continuation``
    #: spec, e.g. ``mixed`` or ``repeat:2``); a document's ``[sim:echo=...]`` overrides it.
    echo: str | None = None
    #: Mixed into delta sizes, overlaps and fault draws (never into the document text).
    seed: int = 0
    #: An overload storm: every Messages request is answered 529 for this many seconds from the
    #: first one (0 = none); then the service recovers. The shape of "two minutes of 100 % 529s".
    overload_seconds: float = 0.0
    #: Monotonic clock for the rate limiter, batch processing and the prompt cache's TTLs (tests move it).
    clock: Clock = time.monotonic
    #: How Message Batches are processed (timing, expiry, seeded request errors).
    batches: BatchConfig = field(default_factory=BatchConfig)
    #: Keep every valid Messages request body, for tests (``Simulator.recorded``, ``GET /_sim/requests``).
    record_requests: bool = False
    #: The shortest prefix (tokens) the prompt cache stores; shorter ones are silently not cached.
    cache_min_tokens: int = 1024
    #: Every model's context window (prompt + output tokens); a generation that would pass it
    #: stops at it with ``model_context_window_exceeded``. None = unlimited.
    context_window: int | None = None

    def __post_init__(self) -> None:
        low, high = self.tokens_per_delta
        if not 1 <= low <= high:
            raise ValueError(f"tokens_per_delta {self.tokens_per_delta} must satisfy 1 <= low <= high")

        if self.tokens_per_second < 0 or self.ping_interval <= 0:
            raise ValueError("tokens_per_second must be >= 0 and ping_interval > 0")

        if not 0.0 <= self.repeat_overlap <= 1.0:
            raise ValueError(f"repeat_overlap {self.repeat_overlap} is not a probability")

        if self.echo is not None:
            parse_echo(self.echo)


@dataclass(frozen=True, slots=True)
class _Generation:
    """The planned output of one request: token end offsets into ``source`` from ``start``."""

    key: str
    request_number: int
    source: str
    start: int
    ends: Sequence[int]
    stop_reason: str
    reached_end: bool
    fault: FaultPlan
    cache: CachePlan = field(default_factory=CachePlan)
    #: The stop sequence that ended the text, if one did.
    stop_sequence: str | None = None
    #: Thinking streamed before the text (requests that think); its tokens are billed as output.
    thinking: str = ""

    @property
    def text(self) -> str:
        return self.source[self.start : self.ends[-1]] if self.ends else ""


@dataclass(slots=True)
class _Progress:
    """Tokens sent so far, readable from ``finally`` when the handler is cancelled.

    The reservation is settled (once) *before* the last bytes go out, so a client that refunds
    its own limiter on ``message_stop`` and starts the next request at once never finds the
    simulator's bucket still holding the old reservation.
    """

    limiter: RateLimiter
    reservation: Reservation
    tokens: int = 0
    failure: str | None = None
    settled: bool = False

    def settle(self) -> None:
        if not self.settled:
            self.settled = True
            self.limiter.settle(self.reservation, self.tokens)


class Simulator:
    """One simulated API: config, rate limiter, accounting and the aiohttp application."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.base_url = ""
        self._accounting = Accounting()
        self._limiter = RateLimiter(
            RateLimits(config.rpm, config.itpm, config.otpm),
            config.clock,
        )
        self._class_limiters = [(cls, RateLimiter(cls.limits, config.clock)) for cls in config.rate_classes]
        self._request_numbers: dict[str, int] = {}
        self._cache = PromptCache(config.clock, config.cache_min_tokens)
        self._closing = asyncio.Event()
        self._first_request_at: float | None = None
        self.batches = Batches(config.batches, config.clock, self.batch_result)
        #: Request bodies, when ``config.record_requests``.
        self.recorded: list[dict[str, Any]] = []

    def accounting(self) -> AccountingSnapshot:
        """A snapshot of what has been served since start or the last reset."""
        return self._accounting.snapshot()

    def reset(self) -> None:
        """Clear accounting, the per-document request numbers (so ``fail_first`` fires again) and
        the prompt cache."""
        self._accounting.reset()
        self._request_numbers.clear()
        self._cache.clear()

    def make_app(self) -> web.Application:
        """The aiohttp application serving this simulator."""
        app = web.Application(client_max_size=MAX_BATCH_BYTES + 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{model_id}", self._get_model)
        self.batches.add_routes(app, self._authenticate)
        app.router.add_get("/_sim/accounting", self._get_accounting)
        app.router.add_get("/_sim/requests", self._get_requests)
        app.router.add_post("/_sim/reset", self._post_reset)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        app.on_response_prepare.append(self._on_prepare)
        return app

    def begin_shutdown(self) -> None:
        """Release stalled responses so the server can stop without waiting on them."""
        self._closing.set()

    def _limiter_for(self, model: str) -> tuple[str, RateLimiter]:
        """The buckets a request for ``model`` draws on: its class's, else the shared ones."""
        for cls, limiter in self._class_limiters:
            if cls.matches(model):
                return cls.name, limiter
        return "", self._limiter

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("request-id", request.get(REQUEST_ID) or new_id("req_"))
        if request.path == "/v1/messages":
            response.headers.update(request.get(_LIMITER, self._limiter).headers())

    async def _get_accounting(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.accounting().to_dict())

    async def _get_requests(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.recorded)

    async def _post_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return web.json_response({"ok": True})

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return error_response(request, ApiError(404, "not_found_error", "Not found"))

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/models``: the cheap call a worker makes to check its key before working."""
        try:
            self._authenticate(request)
        except ApiError as error:
            return self._answer_error(request, error)
        data = [_model_info(model) for model in LISTED_MODELS]
        body = {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        return web.json_response(body)

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/models/{id}``: 404 for a model the simulator does not serve (or retired)."""
        model = request.match_info["model_id"]
        try:
            self._authenticate(request)
            if model_supports_prefill(model) is None or model_retired(model):
                raise ApiError(404, "not_found_error", f"model: {model}")
        except ApiError as error:
            return self._answer_error(request, error)
        return web.json_response(_model_info(model))

    def _in_overload_storm(self) -> bool:
        if self.config.overload_seconds <= 0:
            return False
        now = self.config.clock()
        if self._first_request_at is None:
            self._first_request_at = now
        return now - self._first_request_at < self.config.overload_seconds

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        request[REQUEST_ID] = new_id("req_")
        try:
            self._authenticate(request)
            if self._in_overload_storm():
                self._accounting.fault_injected("overload_storm")
                raise ApiError(529, "overloaded_error", "Overloaded")
            raw = await request.read()
            betas = betas_of(request.headers.get("anthropic-beta"))
            parsed, document, directives, faults = self._validate(raw, betas)
        except ApiError as error:
            return self._answer_error(request, error)

        self._accounting.document_request(document.key)
        cache = self._cache.plan(parsed.model, parsed.blocks)
        rate_class, limiter = self._limiter_for(parsed.model)
        request[_LIMITER] = limiter
        try:
            # Cache reads do not count against input tokens per minute; writes do.
            reservation = limiter.reserve(parsed.input_tokens - cache.read, parsed.max_tokens)
        except RateLimitExceeded as exc:
            self._accounting.rate_limited(rate_class)
            limited = ApiError(429, "rate_limit_error", str(exc), retry_after=str(exc.retry_after))
            return self._answer_error(request, limited)

        if self.config.record_requests:
            self.recorded.append(json.loads(raw))
        progress = _Progress(limiter, reservation)
        try:
            generation = self._plan_with_options(parsed, document, directives, faults)
            generation = dataclasses.replace(generation, cache=cache)
            kind = generation.fault.kind
            if kind is not None:
                self._accounting.fault_injected(kind.value)
                if kind.before_stream:
                    return self._answer_error(request, _fault_error(kind, faults))

            return await self._generate(request, parsed, generation, progress)
        finally:
            progress.settle()

    def _validate(
        self, raw: bytes, betas: frozenset[str] = frozenset(), *, batch: bool = False
    ) -> tuple[MessagesRequest, Document, Directives, FaultConfig]:
        """Parse and check one Messages request body as the API does; raises ``ApiError``."""
        parsed = parse_messages_request(raw)
        supports_prefill = model_supports_prefill(parsed.model)
        if supports_prefill is None or model_retired(parsed.model):
            raise ApiError(404, "not_found_error", f"model: {parsed.model}")
        check_output_cap(parsed.model, parsed.max_tokens, betas, batch=batch)

        if parsed.ends_with_assistant and not supports_prefill:
            raise ApiError(400, "invalid_request_error", PREFILL_UNSUPPORTED)

        if parsed.ends_with_assistant and parsed.text_so_far != parsed.text_so_far.rstrip():
            raise ApiError(400, "invalid_request_error", TRAILING_WHITESPACE)

        try:
            document = load_document(parsed.system, parsed.first_user_text)
            directives = parse_directives(parsed.system, parsed.first_user_text)
            faults = self.config.faults.for_document(directives.faults, directives.fail_first)
        except ValueError as exc:
            raise ApiError(400, "invalid_request_error", str(exc)) from exc
        return parsed, document, directives, faults

    def batch_result(self, params: dict[str, Any], betas: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The ``result`` of one batch request: ``succeeded`` with a full Message, or ``errored``.

        Validation errors inside ``params`` surface here, when the batch ends, as they do from the
        API. A batch never streams, never draws the streaming faults, and is not charged against
        the streaming rate limits; it does advance the document's request number, like any request.
        """
        try:
            if params.get("stream"):
                raise ApiError(400, "invalid_request_error", "stream: streaming is not supported in batches")
            parsed, document, directives, _ = self._validate(json.dumps(params).encode(), betas, batch=True)
        except ApiError as error:
            request_id = new_id("req_")
            body = {"type": "error", "error": {"type": error.error_type, "message": error.message}}
            return {"type": "errored", "error": {**body, "request_id": request_id}}
        generation = self._plan_with_options(parsed, document, directives, FaultConfig())
        tokens = len(generation.ends)
        self._accounting.batch_result(document.key, parsed.input_tokens, tokens, generation.reached_end)
        message = self._message(parsed, generation, tokens)
        return {"type": "succeeded", "message": message}

    def _plan_with_options(
        self, parsed: MessagesRequest, document: Document, directives: Directives, faults: FaultConfig
    ) -> _Generation:
        """``_plan``, then the request options: thinking takes its share of ``max_tokens`` first,
        and the text stops before the first stop sequence it contains."""
        thinking = thinking_text(parsed) if parsed.options.thinking is not None else ""
        if thinking:
            thinking_tokens = count_tokens(thinking)
            if thinking_tokens >= parsed.max_tokens:
                raise ApiError(
                    400, "invalid_request_error", "max_tokens: too small to leave room for any text"
                )
            text_budget = dataclasses.replace(parsed, max_tokens=parsed.max_tokens - thinking_tokens)
            generation = self._plan(text_budget, document, directives, faults)
            self._accounting.thinking(thinking_tokens)
        else:
            generation = self._plan(parsed, document, directives, faults)
        generation = dataclasses.replace(generation, thinking=thinking)
        return _stop_at_sequence(generation, parsed.options.stop_sequences)

    def _message(self, parsed: MessagesRequest, generation: _Generation, tokens: int) -> dict[str, Any]:
        """The non-streaming Message for a finished generation of ``tokens`` text tokens."""
        billed = max(1, tokens) + (count_tokens(generation.thinking) if generation.thinking else 0)
        return message_body(
            parsed,
            generation.text,
            generation.stop_reason,
            billed,
            generation.cache,
            thinking=generation.thinking,
            stop_sequence=generation.stop_sequence,
        )

    def _authenticate(self, request: web.Request) -> None:
        authorization = request.headers.get("authorization", "")
        key = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        key = key or request.headers.get("x-api-key", "").strip()
        if not key:
            raise ApiError(401, "authentication_error", "x-api-key header is required")

        if self.config.api_key is not None and key != self.config.api_key:
            raise ApiError(401, "authentication_error", "invalid x-api-key")

    def _answer_error(self, request: web.Request, error: ApiError) -> web.StreamResponse:
        self._accounting.response_status(error.status)
        return error_response(request, error)

    def _plan(
        self,
        parsed: MessagesRequest,
        document: Document,
        directives: Directives,
        faults: FaultConfig,
    ) -> _Generation:
        """Work out what this request outputs: continuation offset, overlap, stop reason, fault."""
        key = document.key
        number = self._request_numbers.get(key, 0) + 1
        self._request_numbers[key] = number
        so_far = parsed.text_so_far
        offset = len(so_far)
        if not document.text.startswith(so_far):
            offset = common_prefix_length(document.text, so_far)
            self._accounting.mismatched_continuation()

        overlap = self._echo(parsed, directives, so_far[:offset], f"{key}:{number}")

        first = document.token_index_after(offset)
        overlap_ends: list[int] = []
        for token in tokenize(overlap):
            overlap_ends.append((overlap_ends[-1] if overlap_ends else 0) + len(token))

        available = len(overlap_ends) + len(document.ends) - first
        count, stop_reason = available, "end_turn"
        refuse = directives.refuse_after
        if refuse is not None and refuse <= parsed.max_tokens:
            count, stop_reason = min(refuse, available), "refusal"
        elif available > parsed.max_tokens:
            count, stop_reason = parsed.max_tokens, "max_tokens"
        window = self.config.context_window
        if window is not None and parsed.input_tokens + count > window:
            count, stop_reason = max(0, window - parsed.input_tokens), "model_context_window_exceeded"

        if overlap:
            shift = len(overlap) - offset
            rest = document.ends[first : first + max(0, count - len(overlap_ends))]
            source, start = overlap + document.text[offset:], 0
            ends: Sequence[int] = (overlap_ends + [end + shift for end in rest])[:count]
        else:
            source, start, ends = document.text, offset, document.ends[first : first + count]

        fault = FaultPlan(None)
        if parsed.stream or not faults.streams_only:
            fault = plan_fault(faults, self.config.seed, key, number, count)
        reached_end = stop_reason == "end_turn"
        return _Generation(key, number, source, start, ends, stop_reason, reached_end, fault)

    def _echo(self, parsed: MessagesRequest, directives: Directives, so_far: str, draw: str) -> str:
        """What the reply says before the document's continuation (continuation turns only)."""
        if not so_far or parsed.ends_with_assistant:
            return ""
        rng = random.Random(f"overlap:{self.config.seed}:{draw}")
        spec = directives.echo or self.config.echo
        if spec is None:
            repeat, words = rng.random() < self.config.repeat_overlap, rng.randint(3, 8)
            return overlap_words(so_far, words) if repeat else ""
        anchor = requested_anchor(parsed.last_user_text, so_far)
        kind, echo = draw_echo(rng, parse_echo(spec), so_far, anchor)
        self._accounting.echo_drawn(kind.value)
        return echo

    async def _generate(
        self, request: web.Request, parsed: MessagesRequest, generation: _Generation, progress: _Progress
    ) -> web.StreamResponse:
        streaming = parsed.stream
        self._accounting.response_started(streaming)
        cache = generation.cache
        self._cache.commit(cache)
        continuation = bool(parsed.text_so_far)
        self._accounting.bill(
            parsed.model,
            continuation,
            requests=1,
            input_tokens=max(0, parsed.input_tokens - cache.read - cache.written),
            cache_write_5m_tokens=cache.write_5m,
            cache_write_1h_tokens=cache.write_1h,
            cache_read_tokens=cache.read,
        )
        log.debug(
            "simulator_generation request_id=%s document=%s request_number=%d tokens=%d fault=%s",
            request[REQUEST_ID],
            generation.key,
            generation.request_number,
            len(generation.ends),
            generation.fault.kind,
        )
        try:
            if streaming:
                return await self._stream(request, parsed, generation, progress)

            return await self._full_message(request, parsed, generation, progress)
        except (asyncio.CancelledError, ConnectionError):
            progress.failure = progress.failure or "client_disconnect"
            raise
        finally:
            thinking = count_tokens(generation.thinking) if generation.thinking else 0
            self._accounting.bill(parsed.model, continuation, output_tokens=progress.tokens + thinking)
            self._accounting.response_finished(
                generation.key, streaming, progress.tokens, progress.failure, generation.reached_end
            )

    async def _full_message(
        self, request: web.Request, parsed: MessagesRequest, generation: _Generation, progress: _Progress
    ) -> web.StreamResponse:
        """Non-streaming: wait the generation time, then one JSON body (faults map to HTTP)."""
        kind = generation.fault.kind
        count = generation.fault.after_tokens if kind is not None else len(generation.ends)
        if self.config.tokens_per_second > 0:
            await asyncio.sleep(count / self.config.tokens_per_second)

        if kind is not None:
            progress.failure = kind.value
            if kind is FaultKind.MIDSTREAM_ERROR:
                return self._answer_error(request, ApiError(529, "overloaded_error", "Overloaded"))

            self._accounting.response_status(200)
            if kind is FaultKind.MALFORMED:
                return web.Response(body=b'{"id": "msg_', content_type="application/json")

            if kind in (FaultKind.STALL, FaultKind.STALL_SILENT):
                await self._closing.wait()

            _drop(request)
            return web.Response()

        progress.tokens = len(generation.ends)
        self._accounting.response_status(200)
        return web.json_response(self._message(parsed, generation, progress.tokens))

    async def _stream(
        self, request: web.Request, parsed: MessagesRequest, generation: _Generation, progress: _Progress
    ) -> web.StreamResponse:
        """Streaming: the exact SSE grammar, paced, with the planned fault at its seeded point."""
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        self._accounting.response_status(200)
        await response.prepare(request)
        text_index = 1 if generation.thinking else 0
        writer = SseWriter(response, self.config.ping_interval, text_index)
        start_event = {
            "type": "message_start",
            "message": message_body(parsed, "", None, 1, generation.cache),
        }
        writer.event("message_start", start_event)
        if generation.thinking:
            _thinking_block(writer, generation.thinking)
        text_block = {"type": "text", "text": ""}
        writer.event(
            "content_block_start",
            {"type": "content_block_start", "index": text_index, "content_block": text_block},
        )
        writer.ping()
        sent = await self._send_text(writer, generation, progress)
        progress.settle()
        kind = generation.fault.kind
        if kind is not None:
            progress.failure = kind.value
            await self._stream_fault(request, writer, kind)
            return response
        writer.event("content_block_stop", {"type": "content_block_stop", "index": text_index})
        billed = max(1, sent) + (count_tokens(generation.thinking) if generation.thinking else 0)
        writer.event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": stop_delta(generation.stop_reason, generation.stop_sequence),
                "usage": usage(parsed.input_tokens, billed, generation.cache),
            },
        )
        writer.event("message_stop", {"type": "message_stop"})
        await writer.flush()
        await response.write_eof()
        return response

    async def _send_text(self, writer: SseWriter, generation: _Generation, progress: _Progress) -> int:
        """The text deltas, paced at the configured rate, up to the planned fault; returns the tokens sent."""
        kind, fire_after = generation.fault.kind, generation.fault.after_tokens
        rate = self.config.tokens_per_second
        begun = asyncio.get_running_loop().time()
        rng = random.Random(f"deltas:{self.config.seed}:{generation.key}:{generation.request_number}")
        low, high = self.config.tokens_per_delta
        ends, position, sent = generation.ends, generation.start, 0
        while (kind is None or sent < fire_after) and sent < len(ends):
            upto = min(len(ends), sent + rng.randint(low, high))
            if rate > 0:
                await writer.wait_until(begun + upto / rate)
            writer.text_delta(generation.source[position : ends[upto - 1]])
            position, sent = ends[upto - 1], upto
            progress.tokens = sent
            await writer.maybe_flush()
        return sent

    async def _stream_fault(self, request: web.Request, writer: SseWriter, kind: FaultKind) -> None:
        if kind is FaultKind.MIDSTREAM_ERROR:
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            writer.event("error", error)
        elif kind is FaultKind.MALFORMED:
            writer.raw(
                'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta\n\n'
            )

        await writer.flush()
        if kind is FaultKind.STALL:
            await writer.ping_until(self._closing)
        elif kind is FaultKind.STALL_SILENT:
            await self._closing.wait()

        if kind in (FaultKind.MIDSTREAM_ERROR, FaultKind.MALFORMED):
            await writer.response.write_eof()
        else:
            _drop(request)


def _thinking_block(writer: SseWriter, thinking: str) -> None:
    """Content block 0 of a thinking request: thinking deltas, then the signature, as the API sends."""
    start = {"type": "thinking", "thinking": "", "signature": ""}
    writer.event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start})
    for at in range(0, len(thinking), 48):
        delta = {"type": "thinking_delta", "thinking": thinking[at : at + 48]}
        writer.event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
    signature = {"type": "signature_delta", "signature": THINKING_SIGNATURE}
    writer.event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": signature})
    writer.event("content_block_stop", {"type": "content_block_stop", "index": 0})


def _stop_at_sequence(generation: _Generation, stop_sequences: Sequence[str]) -> _Generation:
    """Cut the text before the first stop sequence in it (the sequence itself is not sent)."""
    text = generation.text
    found = [(text.find(seq), seq) for seq in stop_sequences if seq in text]
    if not found:
        return generation
    cut, sequence = min(found)
    limit = generation.start + cut
    ends = [end for end in generation.ends if end <= limit]
    if cut > 0 and (not ends or ends[-1] < limit):
        ends.append(limit)
    return dataclasses.replace(
        generation, ends=ends, stop_reason="stop_sequence", reached_end=False, stop_sequence=sequence
    )


def _drop(request: web.Request) -> None:
    """Close the TCP connection now: mid-body, the client sees an incomplete chunked read."""
    transport = request.transport
    if transport is not None:
        transport.close()


#: What ``GET /v1/models`` lists (the simulator serves any model its name rules accept).
LISTED_MODELS = ("claude-sonnet-5-5", "claude-opus-4-7", "claude-sonnet-4-5")


def _model_info(model: str) -> dict[str, str]:
    return {"type": "model", "id": model, "display_name": model, "created_at": "2026-01-01T00:00:00Z"}


def _fault_error(kind: FaultKind, faults: FaultConfig) -> ApiError:
    if kind is FaultKind.HTTP_529:
        return ApiError(529, "overloaded_error", "Overloaded")

    if kind is FaultKind.HTTP_500:
        return ApiError(500, "api_error", "Internal server error")

    message = "Number of concurrent connections has exceeded your rate limit. Please try again later."
    return ApiError(429, "rate_limit_error", message, retry_after=f"{faults.retry_after:g}")


@contextlib.asynccontextmanager
async def run_simulator(config: SimulatorConfig | None = None) -> AsyncIterator[Simulator]:
    """Serve a simulator on ``config.host:config.port`` for the duration of the block.

    ``sim.base_url`` holds the bound address (``port=0`` picks a free port). On exit, stalled
    responses are released and open connections closed.
    """
    simulator = Simulator(config or SimulatorConfig())
    runner = web.AppRunner(
        simulator.make_app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, simulator.config.host, simulator.config.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        simulator.base_url = f"http://{host}:{port}"
        yield simulator
    finally:
        simulator.begin_shutdown()
        await runner.cleanup()
