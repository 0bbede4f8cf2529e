"""``GET /v1/jobs/{id}/events``: one job's committed text and state changes as Server-Sent Events.

The stream, in order:

* ``retry: <ms>`` at once (so headers and a first byte pass any proxy straight away);
* ``event: state`` with the job's state now, then one per transition;
* ``event: text`` with ``data: {"offset": N, "text": "..."}`` and ``id: <offset after the chunk>``.
  The text is JSON-encoded: SSE splits data on CR and LF, and model text is full of both;
* ``event: done`` with the final state once the job has finished and every character was sent;
  then the server closes the stream. A finished job replays its text, then ``done``;
* ``: heartbeat`` comments whenever nothing was sent for ``heartbeat_seconds`` (proxies and load
  balancers close streams idle for 60 s).

``Last-Event-ID`` (or ``?offset=``) resumes exactly after that offset. A viewer that stops reading
is disconnected once one write has waited ``send_timeout`` seconds, so it holds at most its socket
buffers, and nobody else waits for it: every viewer writes from its own task, reading the shared
feed (:mod:`worker.server.relay`) at its own pace.

Only a write that can wait is timed. A write returns without waiting unless the socket's buffer
would pass its high-water mark (asyncio pauses the protocol there, and aiohttp then waits for it
to drain), so a write that keeps the buffer under the mark runs without a timer: with a thousand
viewers of one job, arming and cancelling a timer for each of their writes was a third of the
relay's cost per event.
"""

from __future__ import annotations

import asyncio
import json

import anyio
import structlog
from aiohttp import web

from worker.config import ServerSettings
from worker.server.events import encode_event
from worker.server.relay import Feed, Relay

__all__ = ("RELAY", "SETTINGS", "events", "MAX_EVENT_CHARS", "parse_offset")

log = structlog.get_logger("worker.server")

RELAY = web.AppKey("relay", Relay)
SETTINGS = web.AppKey("server_settings", ServerSettings)

#: Bytes of chunked-encoding framing aiohttp adds to each write (hex length and two CRLFs), with room.
_FRAMING_BYTES = 32

#: Replayed text is cut into events of at most this many characters, so a reconnect after a
#: drop mid-replay resumes from the last whole event, not from the start of a huge one.
MAX_EVENT_CHARS = 16_384

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-store",
    "X-Accel-Buffering": "no",
}


def parse_offset(request: web.Request) -> int:
    """``Last-Event-ID`` (what a reconnecting EventSource sends) wins over ``?offset=``."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("offset") or "0"
    if not raw.isascii() or not raw.isdigit():
        name = "Last-Event-ID" if request.headers.get("Last-Event-ID") else "offset"
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name}: must be a character offset (a non-negative integer)"}),
            content_type="application/json",
        )
    return int(raw)


class _Viewer:
    """One connection: its offset into the feed, and its writes, each under the send timeout."""

    def __init__(
        self,
        response: web.StreamResponse,
        transport: asyncio.Transport | None,
        feed: Feed,
        offset: int,
        settings: ServerSettings,
    ):
        self.response = response
        self.transport = transport
        self.feed = feed
        self.offset = offset
        self.settings = settings
        self.beats_seen = feed.beats
        self.sent_since_beat = False
        # A running job: its state now, then what comes. A finished one: its text, then its
        # final state (placed after the text), then done.
        self.next_event = len(feed.events) - 1 if feed.terminal and feed.events else len(feed.events)

    async def send(self, data: bytes) -> None:
        self.sent_since_beat = True
        if self._may_wait(len(data)):
            with anyio.fail_after(self.settings.send_timeout):
                await self.response.write(data)
        else:
            await self.response.write(data)

    def _may_wait(self, size: int) -> bool:
        """Whether writing ``size`` more bytes could pause the protocol (and so wait to drain)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return True
        _, high = transport.get_write_buffer_limits()
        return transport.get_write_buffer_size() + size + _FRAMING_BYTES >= high

    async def send_text_to(self, end: int) -> None:
        end = min(end, len(self.feed.text))
        while self.offset < end:
            stop = min(end, self.offset + MAX_EVENT_CHARS)
            await self.send(self.feed.text_event(self.offset, stop))
            self.offset = stop

    async def catch_up(self) -> None:
        """Everything the feed has that this viewer has not seen, in offset order."""
        feed = self.feed
        while self.next_event < len(feed.events):
            event = feed.events[self.next_event]
            await self.send_text_to(event.offset)
            await self.send(encode_event("state", event.data))
            self.next_event += 1
        await self.send_text_to(len(feed.text))

    async def run(self) -> None:
        feed = self.feed
        await self.send(f"retry: {self.settings.retry_ms}\n\n".encode())
        if not feed.terminal:
            await self.send(encode_event("state", feed.current_state()))
        while not feed.closed:
            changed = feed.changed
            await self.catch_up()
            if feed.terminal and self.offset >= len(feed.text):
                final = {"state": str(feed.progress.state), "text_length": len(feed.text)}
                await self.send(encode_event("done", final))
                return
            await changed.wait()
            if feed.beats != self.beats_seen:
                # A heartbeat period passed: at most two periods go by without a byte.
                self.beats_seen = feed.beats
                if not self.sent_since_beat:
                    await self.send(b": heartbeat\n\n")
                self.sent_since_beat = False


async def events(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["id"]
    offset = parse_offset(request)
    settings = request.app[SETTINGS]
    async with request.app[RELAY].watch(job_id) as feed:  # JobNotFoundError: 404, before any byte
        response = web.StreamResponse(status=200, headers=HEADERS)
        await response.prepare(request)
        transport = request.transport if isinstance(request.transport, asyncio.Transport) else None
        viewer = _Viewer(response, transport, feed, offset, settings)
        try:
            await viewer.run()
        except TimeoutError:
            log.info("viewer_disconnected", job_id=job_id, reason="send timeout", offset=viewer.offset)
            if request.transport is not None:
                request.transport.abort()  # drop its buffers now; nothing more will be written
            return response
        except (ConnectionResetError, ConnectionError):
            return response  # the viewer went away; it reconnects with Last-Event-ID
    return response
