"""What the simulator served: the ground truth benchmarks compare a worker pool against.

The numbers that matter for a durable generator are how many output tokens were paid for in
responses that failed (work lost) and whether every document was finished; both are counted
here per document, next to the request and stream totals.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = (
    "BILLED_FIELDS",
    "DocumentStats",
    "AccountingSnapshot",
    "Accounting",
)


#: What the simulator bills per model: responses that began (``requests``), the prompt's parts in
#: tokens (uncached input, cache writes by TTL, cache reads) and every output token it sent.
BILLED_FIELDS = (
    "requests",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
)


@dataclass(frozen=True, slots=True)
class DocumentStats:
    """Per-document totals."""

    #: Valid requests for this document (rate-limited and fault-injected ones included).
    requests: int = 0
    #: Output tokens sent in any response for this document.
    output_tokens: int = 0
    #: Output tokens sent in responses that then failed (fault or client disconnect).
    failed_output_tokens: int = 0
    #: Responses that ended normally (any stop reason).
    responses_completed: int = 0
    #: True once a response reached the end of the document with ``end_turn``.
    completed: bool = False


@dataclass(frozen=True, slots=True)
class AccountingSnapshot:
    """An immutable copy of the counters; ``to_dict()`` is the ``GET /_sim/accounting`` body."""

    requests_by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    #: 429s per rate-limit class (``--rate-class``); "" for the shared buckets.
    rate_limited_by_class: dict[str, int] = field(default_factory=dict)
    faults_injected: dict[str, int] = field(default_factory=dict)
    streams_started: int = 0
    streams_completed: int = 0
    streams_failed: dict[str, int] = field(default_factory=dict)
    messages_started: int = 0
    messages_completed: int = 0
    messages_failed: dict[str, int] = field(default_factory=dict)
    output_tokens: int = 0
    failed_output_tokens: int = 0
    mismatched_continuations: int = 0
    #: Message Batches: requests that ended ``succeeded``, and their tokens (billed at batch price).
    #: Thinking tokens generated (billed as output, never part of a document's text).
    thinking_tokens: int = 0
    batch_succeeded: int = 0
    batch_input_tokens: int = 0
    batch_output_tokens: int = 0
    documents: dict[str, DocumentStats] = field(default_factory=dict)
    #: How continuation turns started, by behaviour (``worker.simulator.continuation.Echo``).
    echoes: dict[str, int] = field(default_factory=dict)
    #: Tokens billed per model (``BILLED_FIELDS``), the ground truth for cost.
    billed: dict[str, dict[str, int]] = field(default_factory=dict)
    #: The part of ``billed`` for requests that carried text so far (continuations and resumes).
    billed_continuations: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        """All requests answered, whatever the status."""
        return sum(self.requests_by_status.values())

    def to_dict(self) -> dict[str, Any]:
        """The ``GET /_sim/accounting`` JSON body (status codes as string keys)."""
        return {
            "requests": {
                "total": self.requests,
                "by_status": {str(status): n for status, n in sorted(self.requests_by_status.items())},
                "rate_limited": self.rate_limited,
                "rate_limited_by_class": dict(sorted(self.rate_limited_by_class.items())),
            },
            "faults_injected": dict(sorted(self.faults_injected.items())),
            "echoes": dict(sorted(self.echoes.items())),
            "streams": {
                "started": self.streams_started,
                "completed": self.streams_completed,
                "failed": sum(self.streams_failed.values()),
                "failed_by_kind": dict(sorted(self.streams_failed.items())),
            },
            "messages": {
                "started": self.messages_started,
                "completed": self.messages_completed,
                "failed": sum(self.messages_failed.values()),
                "failed_by_kind": dict(sorted(self.messages_failed.items())),
            },
            "output_tokens": {
                "total": self.output_tokens,
                "in_failed_streams": self.failed_output_tokens,
            },
            "mismatched_continuations": self.mismatched_continuations,
            "billed": {model: dict(counts) for model, counts in sorted(self.billed.items())},
            "billed_continuations": {
                model: dict(counts) for model, counts in sorted(self.billed_continuations.items())
            },
            "thinking_tokens": self.thinking_tokens,
            "batches": {
                "succeeded": self.batch_succeeded,
                "input_tokens": self.batch_input_tokens,
                "output_tokens": self.batch_output_tokens,
            },
            "documents": {
                key: {
                    "requests": stats.requests,
                    "output_tokens": stats.output_tokens,
                    "failed_output_tokens": stats.failed_output_tokens,
                    "responses_completed": stats.responses_completed,
                    "completed": stats.completed,
                }
                for key, stats in sorted(self.documents.items())
            },
        }


@dataclass(slots=True)
class _DocumentCounters:
    requests: int = 0
    output_tokens: int = 0
    failed_output_tokens: int = 0
    responses_completed: int = 0
    completed: bool = False


class Accounting:
    """Mutable counters, only touched from the event loop (no locking needed)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything counted so far."""
        self._status: Counter[int] = Counter()
        self._rate_limited = 0
        self._rate_limited_by_class: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._echoes: Counter[str] = Counter()
        self._streams_started = 0
        self._streams_completed = 0
        self._streams_failed: Counter[str] = Counter()
        self._messages_started = 0
        self._messages_completed = 0
        self._messages_failed: Counter[str] = Counter()
        self._output_tokens = 0
        self._failed_output_tokens = 0
        self._mismatched = 0
        self._batch = [0, 0, 0]  # succeeded, input tokens, output tokens
        self._thinking = 0
        self._documents: dict[str, _DocumentCounters] = {}
        self._billed: dict[str, Counter[str]] = {}
        self._billed_continuations: dict[str, Counter[str]] = {}

    def bill(self, model: str, continuation: bool, **tokens: int) -> None:
        """Add billed tokens for ``model`` (keywords from ``BILLED_FIELDS``); ``continuation``:
        the request carried text so far."""
        books = [self._billed, self._billed_continuations] if continuation else [self._billed]
        for book in books:
            book.setdefault(model, Counter(dict.fromkeys(BILLED_FIELDS, 0))).update(tokens)

    def _document(self, key: str) -> _DocumentCounters:
        counters = self._documents.get(key)
        if counters is None:
            counters = self._documents[key] = _DocumentCounters()

        return counters

    def response_status(self, status: int) -> None:
        """Count one answered request by its HTTP status."""
        self._status[status] += 1

    def document_request(self, key: str) -> None:
        """Count one valid request for document ``key``."""
        self._document(key).requests += 1

    def rate_limited(self, rate_class: str = "") -> None:
        """Count one request refused by the simulated rate limiter (of ``rate_class``)."""
        self._rate_limited += 1
        self._rate_limited_by_class[rate_class] += 1

    def fault_injected(self, kind: str) -> None:
        """Count one injected fault."""
        self._faults[kind] += 1

    def echo_drawn(self, kind: str) -> None:
        self._echoes[kind] += 1

    def mismatched_continuation(self) -> None:
        """Count a continuation whose text so far was not a prefix of the document."""
        self._mismatched += 1

    def response_started(self, streaming: bool) -> None:
        """Count a 200 response (stream or full message) whose generation began."""
        if streaming:
            self._streams_started += 1
        else:
            self._messages_started += 1

    def response_finished(
        self, key: str, streaming: bool, output_tokens: int, failure: str | None, reached_end: bool
    ) -> None:
        """Count the end of a started response: its tokens, and how it ended.

        :param failure: the fault kind (or ``client_disconnect``) if it did not end normally.
        :param reached_end: it ended with ``end_turn`` at the end of the document.
        """
        document = self._document(key)
        document.output_tokens += output_tokens
        self._output_tokens += output_tokens
        if failure is not None:
            document.failed_output_tokens += output_tokens
            self._failed_output_tokens += output_tokens
            (self._streams_failed if streaming else self._messages_failed)[failure] += 1
            return

        document.responses_completed += 1
        document.completed = document.completed or reached_end
        if streaming:
            self._streams_completed += 1
        else:
            self._messages_completed += 1

    def thinking(self, tokens: int) -> None:
        """Count the thinking tokens of one response."""
        self._thinking += tokens

    def batch_result(self, key: str, input_tokens: int, output_tokens: int, reached_end: bool) -> None:
        """Count one batch request that succeeded: a whole response, never a failed stream."""
        document = self._document(key)
        document.requests += 1
        document.output_tokens += output_tokens
        document.responses_completed += 1
        document.completed = document.completed or reached_end
        self._batch[0] += 1
        self._batch[1] += input_tokens
        self._batch[2] += output_tokens

    def snapshot(self) -> AccountingSnapshot:
        """An immutable copy of every counter."""
        return AccountingSnapshot(
            requests_by_status=dict(self._status),
            rate_limited=self._rate_limited,
            rate_limited_by_class=dict(self._rate_limited_by_class),
            faults_injected=dict(self._faults),
            echoes=dict(self._echoes),
            streams_started=self._streams_started,
            streams_completed=self._streams_completed,
            streams_failed=dict(self._streams_failed),
            messages_started=self._messages_started,
            messages_completed=self._messages_completed,
            messages_failed=dict(self._messages_failed),
            output_tokens=self._output_tokens,
            failed_output_tokens=self._failed_output_tokens,
            mismatched_continuations=self._mismatched,
            billed={model: dict(counts) for model, counts in self._billed.items()},
            billed_continuations={model: dict(c) for model, c in self._billed_continuations.items()},
            thinking_tokens=self._thinking,
            batch_succeeded=self._batch[0],
            batch_input_tokens=self._batch[1],
            batch_output_tokens=self._batch[2],
            documents={
                key: DocumentStats(
                    requests=c.requests,
                    output_tokens=c.output_tokens,
                    failed_output_tokens=c.failed_output_tokens,
                    responses_completed=c.responses_completed,
                    completed=c.completed,
                )
                for key, c in self._documents.items()
            },
        )
