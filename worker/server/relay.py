"""The live relay's source: one feed per watched job, refreshed after each change signal.

Viewers never touch the store themselves. One task (:meth:`Relay.run`) waits on the store's change
signal (SQLite ``PRAGMA data_version``, PostgreSQL LISTEN/NOTIFY; see :class:`jobs.store.ChangeSignal`)
and then reads, in one query, the progress of the jobs somebody watches, and only for those that
moved, the new committed text and the new transitions. Nothing polls a table; a thousand viewers of
one job cost one read per change, not a thousand.

The text a feed holds is the job's *committed* text, read from the durable log: a worker crash
loses only uncommitted text, which no viewer ever saw, and the resumed attempt appends at the
committed offset. So what viewers receive is one continuous text across crashes and retries, and a
viewer that reconnects with the last offset it saw resumes exactly.

A feed is shared: viewers read ``text[offset:]`` at their own pace and wait on ``changed``, a
broadcast event. There is no per-viewer queue to fill, so a slow viewer holds only its offset and
its socket's buffer (see :mod:`worker.server.sse` for the send timeout). Heartbeats come from one
timer for the whole relay (:meth:`Relay._beat` bumps every feed's ``beats``), not one timer per
viewer: with a thousand viewers, a timer armed on every wait cost more than the writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from jobs.errors import StoreError
from jobs.models import TERMINAL_STATES, AttemptRecord, Job, Progress, State, Transition
from jobs.store import Store
from worker.resume import supports_prefill
from worker.server.events import encode_event

__all__ = ("Relay", "Feed", "StateEvent")

log = structlog.get_logger("worker.server")

#: Without any change signal, watched jobs are re-read this often anyway (a safety net only).
SAFETY_REFRESH_SECONDS = 5.0
#: Seconds between heartbeats unless the server's settings say otherwise (``[server] heartbeat_seconds``).
DEFAULT_HEARTBEAT_SECONDS = 15.0
#: Encoded text events kept per feed: viewers that keep up ask for the same slices, so a
#: thousand of them cost one JSON encoding per chunk, not a thousand.
ENCODED_EVENTS_KEPT = 256


@dataclass(frozen=True, slots=True)
class StateEvent:
    """A transition as viewers see it, placed at the text offset where it was observed."""

    offset: int
    data: dict[str, Any]


def state_event(transition: Transition, job: Job, attempt: AttemptRecord | None) -> dict[str, Any]:
    """queued, running, resumed (with its mode), retrying (with its reason), lease_lost, or a
    final state. ``resume_mode`` is the attempt's recorded mode once it has one, before that the
    mode the worker chooses for the model (prefill where the model accepts it)."""
    to = transition.to_state
    label = str(to)
    mode: str | None = None
    if to is State.RUNNING:
        resumed = attempt is not None and attempt.chars_at_start > 0
        label = "resumed" if resumed else "running"
        if attempt is not None and attempt.resume_mode is not None:
            mode = str(attempt.resume_mode)
        else:
            mode = ("prefill" if supports_prefill(job.spec.model) else "continuation") if resumed else "fresh"
    elif to is State.QUEUED and transition.reason.startswith("retry"):
        label = "retrying"
    elif to is State.QUEUED and transition.reason.startswith("lease expired"):
        label = "lease_lost"
    return {
        "state": label,
        "job_state": str(to),
        "attempt": transition.attempt,
        "reason": transition.reason,
        "resume_mode": mode,
    }


class Feed:
    """One watched job: its committed text, its state events, and a broadcast ``changed`` event."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.text = ""
        self.events: list[StateEvent] = []
        self.progress = _progress(job)
        self.transitions_seen = 0
        self.viewers = 0
        #: Heartbeat periods passed (bumped by the relay's one timer); see ``sse._Viewer``.
        self.beats = 0
        self.closed = False
        self.changed = anyio.Event()
        self._encoded: dict[tuple[int, int], bytes] = {}

    def text_event(self, start: int, end: int) -> bytes:
        """The ``text`` event for ``text[start:end]``, encoded once for every viewer asking."""
        key = (start, end)
        encoded = self._encoded.get(key)
        if encoded is None:
            encoded = encode_event("text", {"offset": start, "text": self.text[start:end]}, end)
            if len(self._encoded) >= ENCODED_EVENTS_KEPT:
                del self._encoded[next(iter(self._encoded))]
            self._encoded[key] = encoded
        return encoded

    @property
    def terminal(self) -> bool:
        return self.progress.state in TERMINAL_STATES

    def current_state(self) -> dict[str, Any]:
        """The state now, for a viewer that just connected."""
        if self.events:
            return self.events[-1].data
        return {
            "state": str(self.progress.state),
            "job_state": str(self.progress.state),
            "attempt": self.progress.attempts or None,
            "reason": None,
            "resume_mode": None,
        }

    def notify(self) -> None:
        changed, self.changed = self.changed, anyio.Event()
        changed.set()


class Relay:
    """Owns the feeds of one server process and the task that refreshes them."""

    def __init__(
        self,
        store: Store,
        *,
        safety_refresh: float = SAFETY_REFRESH_SECONDS,
        watched: set[str] | None = None,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
    ) -> None:
        self._store = store
        #: Ids of the watched jobs, shared with an in-process pool's checkpoint writer so that it
        #: commits their text faster (``[server] live_checkpoint_seconds``).
        self._watched = watched if watched is not None else set()
        self._safety = safety_refresh
        self._heartbeat = heartbeat_seconds
        self._feeds: dict[str, Feed] = {}
        self._loading: dict[str, anyio.Event] = {}
        self._wake = anyio.Event()
        self._closed = False
        #: Refreshes done (for tests and the benchmark).
        self.refreshes = 0
        #: Set (and replaced) at every change signal of the store, watched or not: what the
        #: dashboard's list stream waits on, so it shares the relay's one signal.
        self._any_change = anyio.Event()
        #: Change signals seen so far: a reader that remembers the count misses none.
        self.changes = 0

    @property
    def watched(self) -> int:
        return len(self._feeds)

    @property
    def closed(self) -> bool:
        return self._closed

    async def next_change(self, seen: int) -> int:
        """The count of change signals once it passes ``seen`` (at once if it already has), or
        when the relay closes: a reader that was busy when a signal came still sees it."""
        if self.changes == seen and not self._closed:
            await self._any_change.wait()
        return self.changes

    @asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[Feed]:
        """The job's feed while the caller watches. Raises ``JobNotFoundError``."""
        feed = await self._open(job_id)
        feed.viewers += 1
        try:
            yield feed
        finally:
            feed.viewers -= 1
            if feed.viewers == 0 and self._feeds.get(job_id) is feed:
                del self._feeds[job_id]
                self._watched.discard(job_id)

    async def _open(self, job_id: str) -> Feed:
        while True:
            feed = self._feeds.get(job_id)
            if feed is not None:
                return feed
            loading = self._loading.get(job_id)
            if loading is None:
                break
            await loading.wait()  # another viewer is loading it; it may also have failed
        self._loading[job_id] = loading = anyio.Event()
        try:
            feed = Feed(await self._store.get(job_id))
            await self._load(feed)
            self._feeds[job_id] = feed
            self._watched.add(job_id)
            self._wake.set()  # a new job to watch: read its progress now, not at the next signal
            return feed
        finally:
            del self._loading[job_id]
            loading.set()

    async def _load(self, feed: Feed) -> None:
        """Read the text and transitions a new feed starts from."""
        feed.text = await self._store.read_text_from(feed.job.id, 0)
        await self._read_transitions(feed)
        feed.events = feed.events[-1:]  # a viewer starts from the state now, not the whole history

    async def run(self) -> None:
        """Refresh watched jobs after every change signal, until cancelled or closed."""
        signal = self._store.change_signal()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._wait_for_signals, signal)
                tg.start_soon(self._beat)
                while not self._closed:
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    await self._refresh_all()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await signal.close()

    def close(self) -> None:
        """End every stream (each viewer sees ``closed`` and ends politely)."""
        self._closed = True
        self._wake.set()
        self._any_change.set()
        for feed in self._feeds.values():
            feed.closed = True
            feed.notify()

    async def _wait_for_signals(self, signal: Any) -> None:
        while True:
            try:
                if await signal.wait(self._safety):
                    self.changes += 1
                    self._any_change.set()
                    self._any_change = anyio.Event()
            except StoreError as exc:
                log.warning("relay_signal_failed", error=str(exc))
                await anyio.sleep(self._safety / 10)
            self._wake.set()  # also on a timeout: the safety net

    async def _beat(self) -> None:
        """Every heartbeat period, wake every feed's viewers: one that sent nothing during the
        last period sends a heartbeat comment."""
        while True:
            await anyio.sleep(self._heartbeat)
            for feed in self._feeds.values():
                feed.beats += 1
                feed.notify()

    async def _refresh_all(self) -> None:
        """One progress query for every watched job, one batched read of the new text, and
        viewers of those jobs are woken at once; only then, for jobs whose state or attempt
        changed, their rows and transitions (a few queries each), so a burst of claims or
        settles never holds back the text of the others."""
        if not self._feeds:
            return
        self.refreshes += 1
        try:
            found = await self._store.progress(list(self._feeds))
            changed = {
                job_id: progress
                for job_id, progress in found.items()
                if job_id in self._feeds and progress != self._feeds[job_id].progress
            }
            await self._read_texts(changed)
            moved = []
            for job_id, progress in changed.items():
                feed = self._feeds[job_id]
                if (progress.state, progress.attempts) == (feed.progress.state, feed.progress.attempts):
                    feed.progress = progress
                    feed.notify()
                else:
                    moved.append(job_id)
            for job_id in moved:
                await self._refresh_moved(self._feeds[job_id])
        except StoreError as exc:
            log.warning("relay_refresh_failed", error=str(exc))

    async def _read_texts(self, progress: dict[str, Progress]) -> None:
        """Append, in one query, the text committed past each feed's end."""
        wanted = {
            job_id: len(self._feeds[job_id].text)
            for job_id, seen in progress.items()
            if job_id in self._feeds and seen.committed_chars > len(self._feeds[job_id].text)
        }
        if wanted:
            for job_id, text in (await self._store.read_texts_from(wanted)).items():
                self._feeds[job_id].text += text

    async def _refresh_moved(self, feed: Feed) -> None:
        """A state or attempt change: the row, then the text it says is committed, then the new
        transitions, placed after that text (so ``succeeded`` follows the last character)."""
        feed.job = await self._store.get(feed.job.id)
        progress = _progress(feed.job)
        await self._read_texts({feed.job.id: progress})
        await self._read_transitions(feed)
        feed.progress = progress
        feed.notify()

    async def _read_transitions(self, feed: Feed) -> None:
        history = await self._store.history(feed.job.id)
        new = history[feed.transitions_seen :]
        if not new:
            return
        attempts = {a.number: a for a in await self._store.attempts(feed.job.id)}
        for transition in new:
            attempt = attempts.get(transition.attempt) if transition.attempt is not None else None
            data = state_event(transition, feed.job, attempt)
            feed.events.append(StateEvent(len(feed.text), data))
        feed.transitions_seen = len(history)


def _progress(job: Job) -> Progress:
    return Progress(job.id, job.state, job.attempts, job.committed_chars)
