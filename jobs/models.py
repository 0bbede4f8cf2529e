"""The job model: plain, immutable records shared by the store backends and the worker.

A job is a document to write. The user describes it with a :class:`JobSpec`; the store keeps its
state, lease, attempts and the text generated so far. Times are UTC epoch seconds (floats) so that
both backends store and compare them the same way.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from jobs.blocks import text_of
from jobs.buckets import BucketState

__all__ = (
    "State",
    "TERMINAL_STATES",
    "TRUNCATED",
    "CONTEXT_WINDOW_EXCEEDED",
    "is_truncated",
    "STOP_SEQUENCE",
    "stop_sequence_reason",
    "stop_sequence_of",
    "Message",
    "JobSpec",
    "REVISABLE_FIELDS",
    "Usage",
    "USAGE_FIELDS",
    "PROMPT_CACHE_MODES",
    "Lease",
    "Job",
    "Claim",
    "ResumeMode",
    "Outcome",
    "AttemptResult",
    "AttemptRecord",
    "Thinking",
    "DEFAULT_THINKING_MAX_CHARS",
    "format_joins",
    "parse_joins",
    "Transition",
    "CheckpointWrite",
    "SettleRequest",
    "WriteStatus",
    "EnqueueResult",
    "Progress",
    "QueueStats",
    "Totals",
    "JOB_MODES",
    "BatchEntry",
    "BatchRecord",
    "JobQuery",
    "WorkerSeen",
    "MinuteStats",
    "FleetView",
)


class State(enum.StrEnum):
    """Where a job is in its life."""

    #: Waiting to be claimed (possibly not before ``run_at``).
    QUEUED = "queued"
    #: Claimed by a worker that holds its lease.
    RUNNING = "running"
    #: The document is complete.
    SUCCEEDED = "succeeded"
    #: A terminal error, or attempts exhausted: the dead-letter state. ``retry`` re-queues it.
    FAILED = "failed"
    #: Cancelled by a user; a running attempt loses its lease on its next write.
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})

#: The stop reason of a document cut off because its ``output_budget`` ran out: it ends
#: succeeded (nothing to retry), but truncated, which ``run --until-empty``, ``show`` and the
#: export manifest all say.
TRUNCATED = "output_budget"
#: The API's stop reason when the model's context window is full: the document cannot grow, so it
#: ends succeeded but truncated, like an exhausted ``output_budget``; never reported as complete.
CONTEXT_WINDOW_EXCEEDED = "model_context_window_exceeded"
_TRUNCATING = frozenset({TRUNCATED, CONTEXT_WINDOW_EXCEEDED})
#: A document ended by one of its ``stop_sequences``; the stored stop reason names the sequence.
STOP_SEQUENCE = "stop_sequence"


def is_truncated(stop_reason: str | None) -> bool:
    """Whether a succeeded job's text was cut off rather than finished by the model."""
    return stop_reason in _TRUNCATING


def stop_sequence_reason(sequence: str | None) -> str:
    """The stored stop reason of a document ended by ``sequence``: ``stop_sequence "..."`` (JSON,
    so any sequence reads back exactly), kept in the existing stop-reason column."""
    return STOP_SEQUENCE if sequence is None else f"{STOP_SEQUENCE} {json.dumps(sequence)}"


def stop_sequence_of(stop_reason: str | None) -> str | None:
    """The inverse of :func:`stop_sequence_reason` (None for any other stop reason)."""
    prefix = STOP_SEQUENCE + " "
    if not stop_reason or not stop_reason.startswith(prefix):
        return None
    value = json.loads(stop_reason[len(prefix) :])
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Message:
    """One conversation turn of the job's prompt."""

    role: Literal["user", "assistant"]
    #: A string, or the content blocks as given (checked at enqueue: see ``jobs.blocks``); blocks
    #: are plain JSON objects, kept and sent exactly as the user wrote them.
    content: str | tuple[dict[str, Any], ...]

    @property
    def text(self) -> str:
        """The turn's text as the API reads it: a string, or its text blocks joined (a user turn's
        with newlines, an assistant turn's with nothing: one text the model continues)."""
        return text_of(self.content, "\n" if self.role == "user" else "")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the user asks for. Defaults from the config are resolved before enqueueing,
    so a stored job is fully described and runs the same whatever the worker's config."""

    id: str
    messages: tuple[Message, ...]
    model: str
    #: Output tokens per API request.
    max_tokens: int
    #: Total output tokens for the whole document, across continuations past ``max_tokens``.
    output_budget: int
    max_attempts: int
    system: str | None = None
    priority: int = 0
    #: Not claimable before this time (epoch seconds); None = now.
    run_at: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Stop the job (failed, reason ``budget``, text kept) before its cost would pass this; None = no cap.
    max_cost_usd: float | None = None
    #: Prompt caching: ``off``, or breakpoints with the ``5m`` or ``1h`` TTL (see ``worker.caching``).
    prompt_cache: str = "5m"
    #: How the job's requests go: ``stream`` (claimed by the pool) or ``batch`` (gathered into
    #: Message Batches by the fleet's one submitter, at half the price; see ``worker.batches``).
    mode: str = "stream"
    #: Request options passed through to the API (see ``jobs.options``): the document ends at the
    #: first of ``stop_sequences`` the model writes.
    stop_sequences: tuple[str, ...] = ()
    #: Sent as the API's ``metadata.user_id`` (``metadata`` above stays ours).
    user_id: str | None = None
    #: ``auto`` or ``standard_only``; None = the API's default.
    service_tier: str | None = None
    #: Extended thinking: None (off), ``enabled`` (with ``thinking_budget`` tokens) or ``adaptive``.
    thinking: str | None = None
    thinking_budget: int | None = None
    #: ``output_config.effort``: low, medium, high, xhigh or max; None = the model's default.
    effort: str | None = None
    #: Unix epoch seconds after which the job fails with reason ``deadline`` (text kept); None = none.
    deadline: float | None = None


#: The fields of a failed job that ``retry --set`` may change (see :mod:`jobs.revise`): how it runs,
#: not what it answers.
REVISABLE_FIELDS = (
    "model",
    "max_tokens",
    "output_budget",
    "max_attempts",
    "priority",
    "max_cost_usd",
    "prompt_cache",
    "metadata",
    "service_tier",
    "thinking",
    "effort",
    "deadline",
)

#: How a job's requests reach the API: streamed by the pool, or sent in Message Batches.
JOB_MODES = ("stream", "batch")

#: How a job uses prompt caching: not at all, or with breakpoints of the 5-minute or 1-hour TTL.
PROMPT_CACHE_MODES = ("off", "5m", "1h")


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage, summed over requests and attempts.

    The first four fields are the API's own (``input_tokens`` is the uncached part of the prompt).
    The last three are our accounting of the output, per request: how much of ``output_tokens`` is
    an estimate (a stream that broke before its final usage arrived), how much of it landed in the
    document, and how much was generated twice at a join (dropped as a repeat). A request's
    document share is its output tokens times the fraction of its streamed characters kept.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    #: Part of ``output_tokens`` estimated from streamed characters (no final usage arrived).
    estimated_output_tokens: int = 0
    #: Part of ``output_tokens`` whose text is in the document.
    document_tokens: int = 0
    #: Part of ``output_tokens`` repeating text the document already had (dropped at a join).
    repeated_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.estimated_output_tokens + other.estimated_output_tokens,
            self.document_tokens + other.document_tokens,
            self.repeated_tokens + other.repeated_tokens,
        )

    @property
    def wasted_output_tokens(self) -> int:
        """Output billed but not in the document (lost with a broken stream, or repeated)."""
        return max(0, self.output_tokens - self.document_tokens)

    @property
    def prompt_tokens(self) -> int:
        """The whole prompt: uncached, written to the cache, and read from it."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "estimated_output_tokens": self.estimated_output_tokens,
            "document_tokens": self.document_tokens,
            "repeated_tokens": self.repeated_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Usage:
        data = data or {}
        return cls(**{name: int(data.get(name) or 0) for name in USAGE_FIELDS})


#: Every field of :class:`Usage`, as stored (one column each, in ``jobs`` and ``attempts``).
USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "estimated_output_tokens",
    "document_tokens",
    "repeated_tokens",
)


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a running job, and until when. The token fences every write."""

    owner: str
    token: str
    expires_at: float


class ResumeMode(enum.StrEnum):
    """How an attempt's first request continued the committed text."""

    #: No committed text: the prompt as given.
    FRESH = "fresh"
    #: The committed text sent as a final assistant message (models of the 4.5 generation and earlier).
    PREFILL = "prefill"
    #: A continuation user turn carrying the committed text (4.6+ models reject prefill).
    CONTINUATION = "continuation"


class Outcome(enum.StrEnum):
    """How an attempt ended."""

    #: The document is complete.
    SUCCEEDED = "succeeded"
    #: A retryable failure: back to the queue at ``retry_at`` (or failed if attempts are exhausted).
    RETRY = "retry"
    #: A terminal failure: the job is failed.
    FAILED = "failed"
    #: Not the job's fault (the worker is shutting down, the account is overloaded or the store was
    #: down): back to the queue (at ``retry_at`` if set); does not count as a failed attempt.
    RELEASED = "released"
    #: The worker died or stalled and its lease expired; recorded by the next claimer.
    LEASE_EXPIRED = "lease_expired"
    #: The lease was lost (cancelled, or taken over) while the attempt ran.
    LEASE_LOST = "lease_lost"


@dataclass(frozen=True, slots=True)
class Job:
    """A job as the store sees it now."""

    spec: JobSpec
    state: State
    #: Attempts started so far.
    attempts: int
    #: Attempts that ended in an error or an expired lease; compared with ``spec.max_attempts``.
    failures: int
    #: Characters of text durably committed.
    committed_chars: int
    usage: Usage
    created_at: float
    updated_at: float
    lease: Lease | None = None
    last_error: str | None = None
    stop_reason: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(frozen=True, slots=True)
class Claim:
    """A job claimed by a worker: what it needs to start (or resume) an attempt."""

    job: Job
    token: str
    #: The attempt number (1-based) this claim starts.
    attempt: int
    #: The committed text: exactly the concatenation of the committed chunks.
    text: str


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What an attempt reports when it ends (or, partially, with each checkpoint)."""

    outcome: Outcome
    usage: Usage = Usage()
    #: API requests made in this attempt (continuations past ``max_tokens`` make several).
    requests: int = 0
    resume_mode: ResumeMode = ResumeMode.FRESH
    stop_reason: str | None = None
    error: str | None = None
    #: For RETRY and RELEASED: not claimable again before this time.
    retry_at: float | None = None
    #: Seconds from the attempt's first request to its first text.
    time_to_first_token: float | None = None
    #: How each resume's join was placed: (rule, count) pairs sorted by rule, plus
    #: ``("uncertain", n)`` when rules could not decide (see ``worker.join``).
    joins: tuple[tuple[str, int], ...] = ()


#: How many characters of thinking a job keeps by default (``[worker] thinking_max_chars``).
DEFAULT_THINKING_MAX_CHARS = 200_000


@dataclass(frozen=True, slots=True)
class Thinking:
    """The thinking one request streamed, kept beside the job (never part of its document).

    A job keeps at most ``thinking_max_chars`` characters of thinking in all: past the bound, a
    request keeps the first part of its thinking (possibly nothing) and ``chars`` still says how
    much it streamed, so ``cut`` is visible wherever it is shown or exported."""

    attempt: int
    request: int
    text: str
    #: Characters the request streamed (``len(text)`` unless cut).
    chars: int
    created_at: float

    @property
    def cut(self) -> bool:
        return len(self.text) < self.chars


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt, as kept in the job's history."""

    job_id: str
    number: int
    worker: str
    started_at: float
    ended_at: float | None
    outcome: Outcome | None
    resume_mode: ResumeMode | None
    usage: Usage
    requests: int
    chars_at_start: int
    chars_at_end: int
    stop_reason: str | None
    error: str | None
    time_to_first_token: float | None
    joins: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of a job, with its reason."""

    job_id: str
    at: float
    from_state: State | None
    to_state: State
    reason: str
    attempt: int | None


@dataclass(frozen=True, slots=True)
class CheckpointWrite:
    """Append ``text`` at ``offset`` to a job's committed text, and extend its lease.

    Fenced by ``token``. An empty ``text`` is a pure heartbeat. ``offset`` must equal the
    committed length, so a chunk can never be written twice or out of order.
    ``usage`` is the attempt's usage so far, and ``requests`` its requests so far, so a crash
    still leaves an honest account.
    """

    job_id: str
    token: str
    offset: int
    text: str
    usage: Usage | None = None
    requests: int | None = None


@dataclass(frozen=True, slots=True)
class SettleRequest:
    """One fenced end of an attempt in a batch (``Store.settle_many``): what ``settle`` takes."""

    job_id: str
    token: str
    result: AttemptResult


class WriteStatus(enum.StrEnum):
    """The result of one :class:`CheckpointWrite` in a batch."""

    OK = "ok"
    #: The token is not the job's current lease token (or the job is no longer running).
    LEASE_LOST = "lease_lost"
    #: ``offset`` differs from the committed length: a bug in the writer, never silently fixed.
    OFFSET_MISMATCH = "offset_mismatch"


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """Which ids were added and which already existed (enqueue is idempotent by id)."""

    inserted: tuple[str, ...]
    existing: tuple[str, ...]


def format_joins(joins: tuple[tuple[str, int], ...]) -> str | None:
    """The attempt column's text: ``rule=count,...`` (None for an attempt without resumes)."""
    return ",".join(f"{rule}={count}" for rule, count in joins) or None


def parse_joins(text: str | None) -> tuple[tuple[str, int], ...]:
    """The inverse of :func:`format_joins`."""
    if not text:
        return ()
    pairs = (item.rpartition("=") for item in text.split(","))
    return tuple((rule, int(count)) for rule, _, count in pairs)


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a job has come: what a live viewer polls after a change signal. Any state
    change, new attempt or committed text changes this record."""

    job_id: str
    state: State
    attempts: int
    committed_chars: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The queue's health at one moment, read with a few aggregate queries (no scan of the jobs):
    what ``serve``'s ``/metrics`` exports at each scrape.

    Times are the store clock's epoch seconds; ``now`` is that clock when the figures were read,
    so ages are ``now - ...`` without a second clock that could disagree.
    """

    now: float
    counts: Mapping[State, int]
    #: The earliest ``run_at`` among queued jobs already due (scheduled ones do not wait yet).
    oldest_due_at: float | None
    #: The earliest last write (claim, checkpoint or heartbeat) among running jobs.
    oldest_checkpoint_at: float | None
    #: Running jobs whose lease has expired: their worker died or is stuck.
    expired_leases: int
    #: Rate-limit bucket key -> ``paused_until``, for keys paused now (a 429/529 paused the fleet).
    pauses: Mapping[str, float]
    #: The same keys -> why they are paused (``429 rate_limit_error``; empty if not recorded).
    pause_reasons: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Totals:
    """Jobs of one (state, model, prompt cache mode, job mode), summed: what ``status`` reports.

    Kept by the store as aggregate rows, updated in the same transaction as every change of a
    job (triggers on both backends), so reading them costs the same whatever the number of jobs.
    Grouped by model, cache mode and job mode because a cost is linear in usage only within one
    price."""

    state: State
    model: str
    prompt_cache: str
    jobs: int
    committed_chars: int
    usage: Usage
    #: The sum over jobs of ``Usage.wasted_output_tokens`` (a per-job ``max``, so not derivable
    #: from the summed usage).
    wasted_output_tokens: int
    #: The jobs' mode: ``batch`` jobs' tokens cost the batch price.
    mode: str = "stream"


@dataclass(frozen=True, slots=True)
class BatchEntry:
    """One job inside a stored batch: the ``custom_id`` its result comes back under, and the
    lease token (and attempt) that fences writing that result."""

    job_id: str
    custom_id: str
    token: str
    attempt: int


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch the store knows: reserved under ``key`` (ours), then submitted as ``api_id``.

    ``api_id`` is None between the reservation and the submission's bookkeeping: a submitter that
    finds such a record after a crash looks the batch up at the API before submitting again.
    ``entries`` are its jobs still running under the batch's leases (cancelled ones drop out)."""

    key: str
    api_id: str | None
    created_at: float
    requests: int
    entries: tuple[BatchEntry, ...]


@dataclass(frozen=True, slots=True)
class JobQuery:
    """One page of the dashboard's job list: filters, order and a keyset position.

    Ordered by id (ascending, or descending for ``descending``) so every page walks the primary key
    from ``after_id`` and reads about ``limit`` rows whatever the number of jobs; the filters are
    checked on the rows walked. ``search`` matches an id prefix or any text in the metadata JSON."""

    states: tuple[State, ...] | None = None
    model: str | None = None
    search: str | None = None
    descending: bool = False
    #: ``id``, or ``created``: by enqueue time (then id), walking the ``(created_at, id)`` index.
    order: str = "id"
    #: The last id of the previous page (exclusive); None for the first page.
    after_id: str | None = None
    #: With ``order="created"``, the previous page's last ``created_at`` (beside ``after_id``).
    after_created: float | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class WorkerSeen:
    """A worker as the store knows it: from the leases of its running jobs and its recent attempts
    (there is no workers table: a worker exists while it holds or recently held a job)."""

    worker: str
    #: Jobs it holds a lease on now.
    running: int
    #: Its last write: a claim, checkpoint or heartbeat of a running job, or an attempt's end.
    last_seen: float


@dataclass(frozen=True, slots=True)
class MinuteStats:
    """Attempts that ended in one minute with one outcome, and the output tokens they made."""

    minute: float
    outcome: str
    attempts: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class FleetView:
    """What the dashboard's fleet view shows, read at ``now`` (the store clock)."""

    now: float
    workers: tuple[WorkerSeen, ...]
    #: Rate-limit bucket key -> its stored state (levels at ``updated_at``, ``paused_until``).
    buckets: Mapping[str, BucketState]
    #: Attempts ended since the ``since`` asked for, per minute and outcome, oldest first.
    minutes: tuple[MinuteStats, ...]
