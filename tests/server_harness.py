"""Shared pieces for the HTTP server tests: a real server on a real port, and an SSE client.

:func:`live_server` runs the same application ``python -m worker serve`` runs, bound to a free
port on 127.0.0.1, with its relay task; tests talk to it over real HTTP with aiohttp's client.
It is a context manager for the test body (not a fixture), so its task group lives in the test's
task. :func:`open_events` reads an event stream line by line, as a browser's EventSource would.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
from aiohttp import web

from jobs.store import Store
from worker.config import Config, ServerSettings
from worker.server import Relay, build_app

__all__ = ("TOKEN", "LiveServer", "live_server", "SSEEvent", "Comment", "EventStream", "open_events", "auth")

TOKEN = "test-token-0123456789"


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True, slots=True)
class LiveServer:
    url: str
    store: Store
    relay: Relay
    config: Config


@asynccontextmanager
async def live_server(
    store: Store, *, config: Config | None = None, watched: set[str] | None = None, **server: Any
) -> AsyncIterator[LiveServer]:
    """The app on a free port; ``server`` overrides :class:`ServerSettings` fields; ``watched``
    is shared with a pool's checkpoint writer, as ``serve --workers`` does."""
    config = config or Config()
    config = dataclasses.replace(
        config, server=dataclasses.replace(config.server or ServerSettings(), token=TOKEN, port=0, **server)
    )
    relay = Relay(store, watched=watched, heartbeat_seconds=config.server.heartbeat_seconds)
    runner = web.AppRunner(
        build_app(config, store, relay, TOKEN), handler_cancellation=True, shutdown_timeout=1
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay.run)
            try:
                yield LiveServer(f"http://{host}:{port}", store, relay, config)
            finally:
                relay.close()
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass(frozen=True, slots=True)
class Comment:
    text: str


class EventStream:
    """Events and comments of one response, parsed per the WHATWG rules we rely on."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.retry: int | None = None

    def __aiter__(self) -> AsyncIterator[SSEEvent | Comment]:
        return self._items()

    async def _items(self) -> AsyncIterator[SSEEvent | Comment]:
        name, event_id = "message", None
        data: list[str] = []
        while True:
            raw = await self.response.content.readline()
            if not raw:
                return
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                if data:
                    yield SSEEvent(name, "\n".join(data), event_id)
                name, data, event_id = "message", [], None
                continue
            if line.startswith(":"):
                yield Comment(line[1:].strip())
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value
            elif field == "retry" and value.isdigit():
                self.retry = int(value)

    async def events(self) -> AsyncIterator[SSEEvent]:
        async for item in self:
            if isinstance(item, SSEEvent):
                yield item


@asynccontextmanager
async def open_events(
    session: aiohttp.ClientSession,
    url: str,
    *,
    last_event_id: str | None = None,
    token: str = TOKEN,
) -> AsyncIterator[EventStream]:
    headers = auth(token)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None)) as response:
        assert response.status == 200, (response.status, await response.text())
        assert response.headers["Content-Type"].startswith("text/event-stream")
        yield EventStream(response)
