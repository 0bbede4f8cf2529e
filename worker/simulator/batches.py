"""Message Batches as the API serves them: create, retrieve, list, cancel, delete, and JSONL results.

What is modelled, from ../shared/SERVICE.md §1 (and the SDK's types):

* **Create** checks only the envelope: 1–100,000 requests, each a ``custom_id`` matching
  ``^[a-zA-Z0-9_-]{1,64}$`` and unique in the batch, with ``params`` an object. One bad envelope
  rejects the whole call with a 400 naming ``requests.N.field``. Errors *inside* ``params`` come back
  later, as ``errored`` results, when processing ends.
* **Processing takes time.** Request *k* of *n* (in a seeded order) finishes ``processing_seconds ×
  (k+1)/n`` after creation; ``request_counts`` stay at ``processing`` until the whole batch ends,
  and ``results_url`` appears only then.
* **Expiry.** Requests that would finish after ``expiry_seconds`` (24 h on the API) are ``expired``.
* **Cancel** makes the batch ``canceling``; requests not finished by then end ``canceled``, and the
  batch ends ``cancel_seconds`` later. **Delete** works only on an ended batch.
* **Seeded request errors:** with probability ``error_rate`` a request ends ``errored``
  (``overloaded_error`` or ``api_error``), drawn per ``custom_id`` and batch (the *n*-th batch
  created), so a request sent again in a later batch draws again, as a transient error would.
* **Results arrive unordered** (a seeded shuffle): clients must match on ``custom_id``.
* **No streaming rate limits:** batch requests are never charged against RPM/ITPM/OTPM.

Every result's text comes from the same deterministic documents as the Messages endpoint
(``Simulator.batch_result``), so a document written by batch rounds can be checked byte for byte.
Time runs on the simulator's injectable monotonic clock; the RFC 3339 times shown are that clock
mapped onto wall time at start-up.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from worker.simulator.protocol import ApiError, betas_of, new_id

__all__ = ("BatchConfig", "Batches")

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """How batches behave; the defaults make a test's batch end within a second."""

    processing_seconds: float = 0.5
    cancel_seconds: float = 0.05
    expiry_seconds: float = 24 * 3600.0
    error_rate: float = 0.0
    seed: int = 0


@dataclass(slots=True)
class _Batch:
    id: str
    created: float
    requests: list[tuple[str, dict[str, Any]]]
    #: Monotonic time at which each request (by index) finishes processing.
    finish_at: list[float]
    #: The n-th batch this simulator created (seeds the error draws).
    number: int = 0
    #: The ``anthropic-beta`` names the batch was created with.
    betas: frozenset[str] = frozenset()
    cancel_at: float | None = None
    ended_at: float | None = None
    #: custom_id -> result, filled in when processing ends.
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


class Batches:
    """The batch endpoints of one simulator. ``result_for(params, betas)`` makes one request's result."""

    def __init__(
        self,
        config: BatchConfig,
        clock: Callable[[], float],
        result_for: Callable[[dict[str, Any], frozenset[str]], dict[str, Any]],
    ) -> None:
        self.config = config
        self._clock = clock
        self._result_for = result_for
        self._batches: dict[str, _Batch] = {}
        self._created = 0
        self._epoch = time.time() - clock()
        #: Where results are served, as the last request saw it (results_url is absolute, as the API's).
        self._origin = ""

    def add_routes(self, app: web.Application, guard: Callable[[web.Request], None]) -> None:
        """Register the routes; ``guard`` authenticates (raises ``ApiError``)."""
        Handler = Callable[[web.Request], Awaitable[dict[str, Any] | web.StreamResponse]]

        def wrap(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
            async def run(request: web.Request) -> web.StreamResponse:
                try:
                    guard(request)
                    self._origin = str(request.url.origin())
                    answer = await handler(request)
                except ApiError as error:
                    return _error(error)
                return answer if isinstance(answer, web.StreamResponse) else web.json_response(answer)

            return run

        base = "/v1/messages/batches"
        app.router.add_post(base, wrap(self._create))
        app.router.add_get(base, wrap(self._list))
        app.router.add_get(base + "/{id}", wrap(self._retrieve))
        app.router.add_post(base + "/{id}/cancel", wrap(self._cancel))
        app.router.add_delete(base + "/{id}", wrap(self._delete))
        app.router.add_get(base + "/{id}/results", wrap(self._results))

    # -- handlers ------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if len(raw) > MAX_BYTES:
            raise ApiError(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        return self.create(raw, betas_of(request.headers.get("anthropic-beta")))

    def create(self, raw: bytes, betas: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Validate the envelope and start a batch; returns the MessageBatch object. ``betas``
        (the ``anthropic-beta`` header) apply to every request in it, e.g. the 300K output cap."""
        requests = _parse_requests(raw)
        now = self._clock()
        order = list(range(len(requests)))
        random.Random(f"batch-order:{self.config.seed}:{len(self._batches)}").shuffle(order)
        finish_at = [0.0] * len(requests)
        for rank, index in enumerate(order):
            finish_at[index] = now + self.config.processing_seconds * (rank + 1) / len(requests)
        self._created += 1
        batch = _Batch(new_id("msgbatch_"), now, requests, finish_at, number=self._created, betas=betas)
        self._batches[batch.id] = batch
        return self._describe(batch)

    async def _retrieve(self, request: web.Request) -> dict[str, Any]:
        return self._describe(self._find(request))

    async def _list(self, request: web.Request) -> dict[str, Any]:
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            raise ApiError(400, "invalid_request_error", "limit: Input should be a valid integer") from None
        if not 1 <= limit <= 1000:
            raise ApiError(400, "invalid_request_error", "limit: Input should be between 1 and 1000")
        newest_first = sorted(self._batches.values(), key=lambda b: b.created, reverse=True)
        ids = [b.id for b in newest_first]
        after, before = request.query.get("after_id"), request.query.get("before_id")
        if after in ids:
            newest_first = newest_first[ids.index(after) + 1 :]
        if before in ids:
            newest_first = newest_first[: ids.index(before)][-limit:]
        page = newest_first[:limit]
        data = [self._describe(b) for b in page]
        return {
            "data": data,
            "has_more": len(newest_first) > limit,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }

    async def _cancel(self, request: web.Request) -> dict[str, Any]:
        batch = self._find(request)
        self._advance(batch)
        if batch.ended_at is None and batch.cancel_at is None:
            batch.cancel_at = self._clock()
        return self._describe(batch)

    async def _delete(self, request: web.Request) -> dict[str, Any]:
        batch = self._find(request)
        self._advance(batch)
        if batch.ended_at is None:
            raise ApiError(
                400,
                "invalid_request_error",
                f"Batch {batch.id} cannot be deleted while it is processing. Cancel it first.",
            )
        del self._batches[batch.id]
        return {"id": batch.id, "type": "message_batch_deleted"}

    async def _results(self, request: web.Request) -> web.StreamResponse:
        batch = self._find(request)
        self._advance(batch)
        if batch.ended_at is None:
            raise ApiError(400, "invalid_request_error", f"Batch {batch.id} has not finished processing.")
        ids = list(batch.results)
        random.Random(f"batch-results:{self.config.seed}:{batch.id}").shuffle(ids)
        lines = (json.dumps({"custom_id": cid, "result": batch.results[cid]}) for cid in ids)
        body = "".join(line + "\n" for line in lines).encode()
        return web.Response(body=body, content_type="application/binary")

    # -- processing ----------------------------------------------------------------------------

    def _find(self, request: web.Request) -> _Batch:
        batch = self._batches.get(request.match_info["id"])
        if batch is None:
            raise ApiError(404, "not_found_error", "Not found")
        return batch

    def _advance(self, batch: _Batch) -> None:
        """End the batch if its time has come: every request gets its final result."""
        if batch.ended_at is not None:
            return
        now = self._clock()
        expiry = batch.created + self.config.expiry_seconds
        end = max(batch.finish_at)
        if batch.cancel_at is not None:
            end = min(end, batch.cancel_at + self.config.cancel_seconds)
        end = min(end, expiry)
        if now < end:
            return
        for (custom_id, params), finish in zip(batch.requests, batch.finish_at, strict=True):
            batch.results[custom_id] = self._final_result(batch, custom_id, params, finish, expiry)
        batch.ended_at = end

    def _final_result(
        self, batch: _Batch, custom_id: str, params: dict[str, Any], finish: float, expiry: float
    ) -> dict[str, Any]:
        if finish > expiry:
            return {"type": "expired"}
        if batch.cancel_at is not None and finish > batch.cancel_at:
            return {"type": "canceled"}
        draw = random.Random(f"batch-error:{self.config.seed}:{batch.number}:{custom_id}").random()
        if draw < self.config.error_rate:
            kind = "overloaded_error" if draw < self.config.error_rate / 2 else "api_error"
            message = "Overloaded" if kind == "overloaded_error" else "Internal server error"
            error = {
                "type": "error",
                "error": {"type": kind, "message": message},
                "request_id": new_id("req_"),
            }
            return {"type": "errored", "error": error}
        return self._result_for(params, batch.betas)

    def _describe(self, batch: _Batch) -> dict[str, Any]:
        self._advance(batch)
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if batch.ended_at is None:
            counts["processing"] = len(batch.requests)
            status = "in_progress" if batch.cancel_at is None else "canceling"
        else:
            for result in batch.results.values():
                counts[result["type"]] += 1
            status = "ended"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": self._rfc3339(batch.created),
            "expires_at": self._rfc3339(batch.created + self.config.expiry_seconds),
            "ended_at": self._rfc3339(batch.ended_at),
            "cancel_initiated_at": self._rfc3339(batch.cancel_at),
            "archived_at": None,
            "results_url": None
            if batch.ended_at is None
            else f"{self._origin}/v1/messages/batches/{batch.id}/results",
        }

    def _rfc3339(self, at: float | None) -> str | None:
        if at is None:
            return None
        return datetime.fromtimestamp(self._epoch + at, UTC).isoformat().replace("+00:00", "Z")


def _parse_requests(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The batch envelope, checked as the API checks it before accepting a batch."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "invalid_request_error", "Request body is not valid JSON") from None
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        raise ApiError(400, "invalid_request_error", "requests: List should have at least 1 item")
    if len(requests) > MAX_REQUESTS:
        raise ApiError(
            400, "invalid_request_error", f"requests: List should have at most {MAX_REQUESTS} items"
        )
    seen: set[str] = set()
    parsed: list[tuple[str, dict[str, Any]]] = []
    for index, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
            message = f"requests.{index}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            raise ApiError(400, "invalid_request_error", message)
        if custom_id in seen:
            raise ApiError(400, "invalid_request_error", f"requests.{index}.custom_id: Duplicate custom_id")
        if not isinstance(params, dict):
            raise ApiError(
                400, "invalid_request_error", f"requests.{index}.params: Input should be an object"
            )
        seen.add(custom_id)
        parsed.append((custom_id, params))
    return parsed


def _error(error: ApiError) -> web.StreamResponse:
    body = {"type": "error", "error": {"type": error.error_type, "message": error.message}}
    return web.json_response({**body, "request_id": new_id("req_")}, status=error.status)
