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
"""

from __future__ import annotations

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

    def __init__(self, response: web.StreamResponse, feed: Feed, offset: int, settings: ServerSettings):
        self.response = response
        self.feed = feed
        self.offset = offset
        self.settings = settings
        # A running job: its state now, then what comes. A finished one: its text, then its
        # final state (placed after the text), then done.
        self.next_event = len(feed.events) - 1 if feed.terminal and feed.events else len(feed.events)

    async def send(self, data: bytes) -> None:
        with anyio.fail_after(self.settings.send_timeout):
            await self.response.write(data)

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
            with anyio.move_on_after(self.settings.heartbeat_seconds) as idle:
                await changed.wait()
            if idle.cancelled_caught:
                await self.send(b": heartbeat\n\n")


async def events(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["id"]
    offset = parse_offset(request)
    settings = request.app[SETTINGS]
    async with request.app[RELAY].watch(job_id) as feed:  # JobNotFoundError: 404, before any byte
        response = web.StreamResponse(status=200, headers=HEADERS)
        await response.prepare(request)
        viewer = _Viewer(response, feed, offset, settings)
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
