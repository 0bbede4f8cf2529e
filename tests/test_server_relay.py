"""The live relay over real HTTP: a real server on a real port, the real SDK streaming from the
simulator in a pool in this process, and an SSE client reading the stream as a browser would."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import anyio
import pytest

from jobs.models import AttemptResult, CheckpointWrite, Outcome, State
from jobs.sqlite import SQLiteStore
from tests.pool_harness import FAST_SETTINGS, expected, spec
from tests.server_harness import Comment, LiveServer, SSEEvent, auth, live_server, open_events
from tests.store_fixtures import StoreFactory
from worker.pool import Pool
from worker.simulator import Simulator, SimulatorConfig, run_simulator

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def service(
    tmp_path: Path, *, workers: bool = True, tokens_per_second: float = 400.0, **server: Any
) -> AsyncIterator[tuple[LiveServer, Pool | None, Simulator]]:
    """A simulator, a store, a pool (unless ``workers`` is False) and a live server, all running."""
    store = SQLiteStore(tmp_path / "jobs.db")
    async with run_simulator(SimulatorConfig(tokens_per_second=tokens_per_second)) as sim:
        client = anthropic.AsyncAnthropic(
            api_key="test", base_url=sim.base_url, max_retries=0, http_client=anthropic.DefaultAioHttpClient()
        )
        try:
            async with live_server(store, **server) as live, anyio.create_task_group() as tg:
                pool = Pool(store, client, FAST_SETTINGS) if workers else None
                if pool is not None:
                    tg.start_soon(lambda: pool.run(handle_signals=False))
                yield live, pool, sim
                if pool is not None:
                    pool.request_stop()
        finally:
            with anyio.CancelScope(shield=True):
                await client.close()
                await store.close()


async def submit(session: aiohttp.ClientSession, live: LiveServer, body: dict[str, object]) -> None:
    async with session.post(f"{live.url}/v1/jobs", json=body, headers=auth()) as response:
        assert response.status == 201, await response.text()


def job_body(job_id: str, tokens: int) -> dict[str, object]:
    job = spec(job_id, tokens=tokens)
    prompt = job.messages[0].content
    return {"id": job_id, "prompt": prompt, "model": job.model, "max_tokens": job.max_tokens}


async def test_text_arrives_while_the_job_runs_and_adds_up_to_the_document(tmp_path: Path) -> None:
    """State events, then text events whose ids are the offsets after them, then done: the
    concatenated text is the document, and text arrived while the job was still running."""
    async with service(tmp_path) as (live, _, _), aiohttp.ClientSession() as session:
        await submit(session, live, job_body("doc", 1200))
        texts: list[str] = []
        states: list[str] = []
        seen_running_text = False
        async with open_events(session, f"{live.url}/v1/jobs/doc/events") as stream:
            async for event in stream.events():
                if event.event == "text":
                    data = event.json()
                    assert data["offset"] == sum(map(len, texts))
                    texts.append(data["text"])
                    assert event.id == str(data["offset"] + len(data["text"]))
                    if not seen_running_text:
                        seen_running_text = (await live.store.get("doc")).state is State.RUNNING
                elif event.event == "state":
                    states.append(event.json()["state"])
                elif event.event == "done":
                    assert event.json() == {"state": "succeeded", "text_length": sum(map(len, texts))}
                    break
            assert stream.retry == live.config.server.retry_ms
            assert await stream.response.content.read() == b"", "the stream goes on after done"
    assert "".join(texts) == expected(spec("doc", tokens=1200))
    assert seen_running_text, "no text event arrived while the job was running"
    assert states[-1] == "succeeded" and "running" in states


async def test_a_reconnect_with_last_event_id_resumes_exactly(tmp_path: Path) -> None:
    async with service(tmp_path) as (live, _, _), aiohttp.ClientSession() as session:
        await submit(session, live, job_body("doc", 1500))
        texts: list[str] = []
        last_id: str | None = None
        async with open_events(session, f"{live.url}/v1/jobs/doc/events") as stream:
            async for event in stream.events():
                if event.event == "text":
                    texts.append(event.json()["text"])
                    last_id = event.id
                    if len(texts) == 3:
                        break  # the client drops the connection mid-stream
        assert last_id is not None
        done = False
        async with open_events(session, f"{live.url}/v1/jobs/doc/events", last_event_id=last_id) as stream:
            first = True
            async for event in stream.events():
                if event.event == "text":
                    if first:
                        assert event.json()["offset"] == int(last_id)
                        first = False
                    texts.append(event.json()["text"])
                elif event.event == "done":
                    done = True
                    break
        assert done
    assert "".join(texts) == expected(spec("doc", tokens=1500))


async def test_a_finished_job_replays_then_sends_done_and_offset_works(tmp_path: Path) -> None:
    async with service(tmp_path, tokens_per_second=0) as (live, _, _), aiohttp.ClientSession() as session:
        await submit(session, live, job_body("doc", 800))
        async with open_events(session, f"{live.url}/v1/jobs/doc/events") as stream:
            async for event in stream.events():
                if event.event == "done":
                    break
        document = expected(spec("doc", tokens=800))
        for url in (f"{live.url}/v1/jobs/doc/events?offset=100", f"{live.url}/v1/jobs/doc/events"):
            async with open_events(session, url) as stream:
                replay: list[SSEEvent] = [event async for event in stream.events()]
            names = [event.event for event in replay]
            assert names[-2:] == ["state", "done"], names
            assert set(names[:-2]) == {"text"}
            start = 100 if "offset" in url else 0
            assert "".join(event.json()["text"] for event in replay[:-2]) == document[start:]


async def test_a_client_that_connects_before_the_job_starts_waits_with_heartbeats(tmp_path: Path) -> None:
    async with (
        service(tmp_path, workers=False, heartbeat_seconds=0.05) as (live, _, sim),
        aiohttp.ClientSession() as session,
    ):
        await submit(session, live, job_body("doc", 300))
        heartbeats = 0
        texts: list[str] = []
        client = anthropic.AsyncAnthropic(
            api_key="t", base_url=sim.base_url, max_retries=0, http_client=anthropic.DefaultAioHttpClient()
        )
        pool = Pool(live.store, client, FAST_SETTINGS)
        url = f"{live.url}/v1/jobs/doc/events"
        async with open_events(session, url) as stream, anyio.create_task_group() as tg:
            async for item in stream:
                if isinstance(item, Comment):
                    heartbeats += 1
                    if heartbeats == 3:  # still queued after three heartbeats: start a worker
                        assert (await live.store.get("doc")).state is State.QUEUED
                        tg.start_soon(lambda: pool.run(until_empty=True, handle_signals=False))
                elif item.event == "text":
                    texts.append(item.json()["text"])
                elif item.event == "done":
                    break
        await client.close()
        assert heartbeats >= 3
        assert "".join(texts) == expected(spec("doc", tokens=300))


async def eventually(condition: Callable[[], bool], limit: float = 20.0) -> None:
    """Until ``condition`` (a fact about the server) holds; polled, since nothing signals it."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 - a condition on the server's state, not an event we own
            await anyio.sleep(0.01)


async def stuck_client(url: str, path: str) -> socket.socket:
    """A client with a tiny receive window that sends a request and never reads the answer."""
    host, port = url.removeprefix("http://").split(":")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.setblocking(False)
    stuck.connect_ex((host, int(port)))
    await anyio.wait_writable(stuck)
    token = auth()["Authorization"].removeprefix("Bearer ")
    stuck.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    return stuck


async def test_a_stuck_client_is_dropped_and_never_stalls_another(tmp_path: Path) -> None:
    """A client that never reads a 10 MB replay fills its socket buffers; its write times out and
    it is disconnected, while another client reads the whole stream meanwhile."""
    store = SQLiteStore(tmp_path / "jobs.db")
    text = "".join(f"line {n:07d} of a long document\n" for n in range(320_000))
    await store.enqueue([spec("big")])
    [claim] = await store.claim("w", 30)
    await store.commit([CheckpointWrite("big", claim.token, 0, text)], 30)
    await store.settle("big", claim.token, AttemptResult(Outcome.SUCCEEDED))
    try:
        async with live_server(store, send_timeout=1.0) as live, aiohttp.ClientSession() as session:
            stuck = await stuck_client(live.url, "/v1/jobs/big/events")
            await eventually(lambda: live.relay.watched == 1)
            got: list[str] = []
            async with open_events(session, f"{live.url}/v1/jobs/big/events") as stream:
                async for event in stream.events():
                    if event.event == "text":
                        got.append(event.json()["text"])
                    elif event.event == "done":
                        break
            assert "".join(got) == text
            await eventually(lambda: live.relay.watched == 0)  # dropped after its send timeout
            stuck.close()
    finally:
        await store.close()


async def test_watched_jobs_are_checkpointed_at_the_live_interval(tmp_path: Path) -> None:
    """With a 60 s checkpoint interval a job's text would commit once, at its end; watched
    through the relay of the same process, it commits every live interval, so text flows."""
    store = SQLiteStore(tmp_path / "jobs.db")
    settings = dataclasses.replace(
        FAST_SETTINGS, checkpoint_chars=10**9, checkpoint_seconds=60.0, live_checkpoint_seconds=0.05
    )
    async with run_simulator(SimulatorConfig(tokens_per_second=400)) as sim:
        client = anthropic.AsyncAnthropic(
            api_key="t", base_url=sim.base_url, max_retries=0, http_client=anthropic.DefaultAioHttpClient()
        )
        pool = Pool(store, client, settings)
        relay_watched = pool.writer.watched
        try:
            async with anyio.create_task_group() as tg:
                await store.enqueue([spec("watched", tokens=800)])
                tg.start_soon(lambda: pool.run(until_empty=True, handle_signals=False))
                async with (
                    live_server(store, watched=relay_watched) as live,
                    aiohttp.ClientSession() as session,
                ):
                    events = 0
                    async with open_events(session, f"{live.url}/v1/jobs/watched/events") as stream:
                        async for event in stream.events():
                            if event.event == "text":
                                events += 1
                            elif event.event == "done":
                                break
                    await eventually(lambda: not relay_watched)
                assert events >= 5, f"{events} text events: the live interval was not used"
        finally:
            await client.close()
            await store.close()


async def test_the_relay_follows_commits_on_every_backend(make_store: StoreFactory) -> None:
    """Text committed by a worker (here: the store's own fenced writes) reaches a viewer through
    the backend's change signal (SQLite data_version, PostgreSQL LISTEN/NOTIFY), then done."""
    store = await make_store()
    await store.enqueue([spec("doc")])
    [claim] = await store.claim("w", 30)
    parts = [f"part {n}, with a newline\n" for n in range(20)]
    try:
        async with live_server(store) as live, aiohttp.ClientSession() as session:
            got: list[str] = []
            async with open_events(session, f"{live.url}/v1/jobs/doc/events") as stream:
                offset = 0
                async for event in stream.events():
                    if event.event == "state" and event.json()["state"] == "running" and not got:
                        for part in parts[:10]:  # committed while the viewer waits
                            await store.commit([CheckpointWrite("doc", claim.token, offset, part)], 30)
                            offset += len(part)
                    elif event.event == "text":
                        got.append(event.json()["text"])
                        if len("".join(got)) == offset and offset < sum(map(len, parts)):
                            for part in parts[10:]:
                                await store.commit([CheckpointWrite("doc", claim.token, offset, part)], 30)
                                offset += len(part)
                            await store.settle("doc", claim.token, AttemptResult(Outcome.SUCCEEDED))
                    elif event.event == "done":
                        assert event.json() == {"state": "succeeded", "text_length": offset}
                        break
            assert "".join(got) == "".join(parts)
    finally:
        await store.close()
