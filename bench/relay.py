"""The live relay: latency from the model emitting text to an SSE client, and how many clients
one ``serve`` process holds (goals: p99 ≤ 250 ms; 1,000 clients on one job; 200 on 200 jobs).

**Latency** (in one process, so one clock times both ends): a pool streams jobs from the
simulator (its own process) and the server relays them to viewers connected before the jobs
start. Emission is when the worker receives a text delta from the API (the writer's ``add``); a
viewer receives it with the first ``text`` event whose id reaches that offset. Side by side: the
default 1 s checkpoint interval for every job, and watched jobs checkpointed every 0.1 s
(``[server] live_checkpoint_seconds``).

**Scale**: ``python -m worker serve --workers N`` in its own process, viewers in this one.
Measured in the serve process (from /proc): CPU (process time ÷ wall time, 1.0 = one core) and
peak RSS; and commit → client latency at that load (a chunk's commit time from the store, its
arrival at each viewer; same machine, same wall clock).

The latency run's pool is built as ``serve --workers`` builds it (``worker.runtime.open_runtime``
on a config from :func:`bench.common.bench_config`, aiohttp transport as before, watched jobs at
the given live interval), and its server is given that runtime's config and store.

``python -m bench.relay`` (``--quick`` for a small run)
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
from aiohttp import web

from bench.common import Row, Setting, bench_config, cpu_seconds, simulator_process
from jobs.models import JobSpec, Message
from jobs.sqlite import SQLiteStore
from jobs.store import Store
from worker.checkpoint import JobText
from worker.config import Config
from worker.logs import configure_logging
from worker.runtime import open_runtime, pool_settings
from worker.server import Relay, build_app

__all__ = ("run", "main")

RATE = 50
MODEL = "claude-haiku-4-5"
TOKEN = "bench-token"

#: (viewer, job) -> [(end offset of a text event, receive time)]
Receipts = dict[tuple[int, str], list[tuple[int, float]]]


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _specs(count: int, tokens: int, run_at: float | None = None) -> list[JobSpec]:
    return [
        JobSpec(
            f"r{i}",
            (Message("user", f"Relay {i}. [sim:tokens={tokens}]"),),
            MODEL,
            tokens + 10,
            tokens * 2,
            3,
            run_at=run_at,
        )
        for i in range(count)
    ]


async def _view(session: aiohttp.ClientSession, url: str, into: list[tuple[int, float]], clock: str) -> None:
    """Read one event stream to ``done``, noting each text event's end offset and arrival time."""
    now = anyio.current_time if clock == "loop" else time.time
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None)) as response:
        event = ""
        async for raw in response.content:
            line = raw.decode()
            if line.startswith("id: "):
                into.append((int(line[4:]), now()))
            elif line.startswith("event: "):
                event = line[7:].strip()
            elif line == "\n" and event == "done":
                return


class _RawViewer(asyncio.Protocol):
    """A viewer at the socket level: notes each ``id:`` line as its bytes arrive. At a thousand
    connections, a full HTTP client's parsing in this process would add its own delay to the
    latency measured; this costs a byte search per packet."""

    def __init__(self, request: bytes, into: list[tuple[int, float]], done: asyncio.Event) -> None:
        self.request, self.into, self.done = request, into, done
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self.tail + data
        start = 0
        while (found := buffer.find(b"\nid: ", start)) != -1:
            end = buffer.find(b"\n", found + 5)
            if end == -1:
                break
            self.into.append((int(buffer[found + 5 : end]), now))
            start = end
        self.tail = buffer[max(start, len(buffer) - 64) :]
        if b"event: done" in buffer:
            self.done.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set()


async def _raw_view(url: str, path: str, into: list[tuple[int, float]]) -> None:
    host, port = url.removeprefix("http://").split(":")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(lambda: _RawViewer(request, into, done), host, int(port))
    try:
        await done.wait()
    finally:
        transport.close()


@asynccontextmanager
async def _server(config: Config, store: Store, watched: set[str]) -> AsyncIterator[str]:
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
            yield f"http://{host}:{port}"
            relay.close()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


async def _latency(base_url: str, folder: Path, live: float | None, jobs: int, tokens: int) -> list[float]:
    """Emission → client latencies (seconds) for ``jobs`` jobs, two viewers each."""
    settings: dict[str, Setting] = {
        "worker.concurrency": jobs,
        "worker.poll_seconds": 0.05,
        "queue.lease_seconds": 60,
        "worker.idle_timeout": 60,
        "anthropic.http_transport": "aiohttp",
        "server.token": TOKEN,
        "server.port": 0,
    }
    config = bench_config(folder, f"latency-{live}", base_url, settings)
    emitted: dict[str, list[tuple[int, float]]] = defaultdict(list)
    receipts: Receipts = defaultdict(list)
    async with open_runtime(config) as runtime:
        # As serve --workers does: watched jobs checkpoint at the live interval (None: off).
        pool = runtime.pool(dataclasses.replace(pool_settings(config), live_checkpoint_seconds=live))
        add = pool.writer.add

        def recording_add(job: JobText, text: str) -> None:
            add(job, text)
            if text:
                emitted[job.job_id].append((job.length(), anyio.current_time()))

        pool.writer.add = recording_add  # type: ignore[method-assign]
        await runtime.store.enqueue(_specs(jobs, tokens))
        async with (
            _server(config, runtime.store, pool.writer.watched) as url,
            aiohttp.ClientSession() as session,
            anyio.create_task_group() as viewers,
        ):
            for n in range(jobs):
                for viewer in range(2):
                    stream = f"{url}/v1/jobs/r{n}/events"
                    viewers.start_soon(_view, session, stream, receipts[(viewer, f"r{n}")], "loop")
            await pool.run(until_empty=True, handle_signals=False)
    samples: list[float] = []
    for (_, job_id), got in receipts.items():
        ends = [end for end, _ in got]
        for end, at in emitted[job_id]:
            index = bisect.bisect_left(ends, end)
            if index < len(got):
                samples.append(got[index][1] - at)
    return samples


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


#: Every chunk as committed, kept by the bench beside the queue: a job that ends has its chunks
#: compacted into one row (``jobs.store``), which would leave one commit time per job.
_KEEP_CHUNKS = (
    "CREATE TABLE bench_chunks (job_id TEXT, end_offset INTEGER, created_at REAL,"
    " PRIMARY KEY (job_id, end_offset))",
    # OR IGNORE: the compacted row repeats the last chunk's end and time.
    "CREATE TRIGGER bench_keep_chunks AFTER INSERT ON chunks BEGIN"
    " INSERT OR IGNORE INTO bench_chunks"
    " VALUES (NEW.job_id, NEW.char_offset + length(NEW.text), NEW.created_at);"
    " END",
)


async def _keep_chunks(db: Path) -> None:
    """Create the queue (its schema) and the bench's copy of every committed chunk."""
    store = SQLiteStore(db)
    await store.counts()
    await store.close()
    with sqlite3.connect(db) as conn:
        for statement in _KEEP_CHUNKS:
            conn.execute(statement)


def _start_serve(folder: Path, base_url: str, workers: int) -> tuple[str, subprocess.Popen[str]]:
    config = folder / "config.toml"
    config.write_text(
        f'[anthropic]\nbase_url = "{base_url}"\n[queue]\nurl = "sqlite:///{folder / "jobs.db"}"\n'
        "lease_seconds = 60.0\n[worker]\npoll_seconds = 0.05\nidle_timeout = 60.0\n"
        '[logging]\nformat = "json"\nlevel = "warning"\n',
        encoding="utf-8",
    )
    env = {**os.environ, "LONGFORM_SERVER_TOKEN": TOKEN, "ANTHROPIC_API_KEY": "bench"}
    command = [sys.executable, "-m", "worker", "serve", "--config", str(config), "--port", "0"]
    process = subprocess.Popen(
        [*command, "--workers", str(workers)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("serving on "):
        process.kill()
        raise RuntimeError(f"serve did not start: {line!r}")
    return line.split()[-1], process


async def _scale(base_url: str, folder: Path, jobs: int, viewers: int, tokens: int) -> dict[str, float]:
    """``viewers`` viewers spread over ``jobs`` jobs on one serve process with ``jobs`` workers."""
    await _keep_chunks(folder / "jobs.db")
    url, process = _start_serve(folder, base_url, jobs)
    receipts: Receipts = defaultdict(list)
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            start_at = time.time() + 3 + viewers / 200  # time to connect every viewer first
            body = {
                "jobs": [
                    {"id": s.id, "prompt": s.messages[0].content, "model": s.model, "run_at": start_at}
                    for s in _specs(jobs, tokens)
                ]
            }
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.post(f"{url}/v1/jobs", json=body, headers=headers) as response:
                assert response.status == 201, await response.text()
            async with anyio.create_task_group() as tg:
                for viewer in range(viewers):
                    job_id = f"r{viewer % jobs}"
                    tg.start_soon(_raw_view, url, f"/v1/jobs/{job_id}/events", receipts[(viewer, job_id)])
                await anyio.sleep(max(0.0, start_at - time.time()))
                cpu0, wall0, mine0 = _proc_cpu(process.pid), time.monotonic(), cpu_seconds()
            cpu1, wall1, mine1 = _proc_cpu(process.pid), time.monotonic(), cpu_seconds()
            peak = _proc_peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()
    return {
        "cpu": (cpu1 - cpu0) / (wall1 - wall0),
        "client_cpu": (mine1 - mine0) / (wall1 - wall0),
        "rss_mb": peak,
        **_commit_latency(folder / "jobs.db", receipts),
        "done": sum(1 for got in receipts.values() if got),
    }


def _commit_latency(db: Path, receipts: Receipts) -> dict[str, float]:
    """Commit (a chunk's ``created_at``) → arrival at each viewer, in seconds: p50 and p99."""
    with sqlite3.connect(db) as conn:
        chunks: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for job_id, end, created in conn.execute(
            "SELECT job_id, end_offset, created_at FROM bench_chunks ORDER BY job_id, end_offset"
        ):
            chunks[job_id].append((end, created))
    samples: list[float] = []
    for (_, job_id), got in receipts.items():
        ends = [end for end, _ in got]
        for end, committed in chunks[job_id]:
            index = bisect.bisect_left(ends, end)
            if index < len(got):
                samples.append(got[index][1] - committed)
    return {"p50": _percentile(samples, 0.5), "p99": _percentile(samples, 0.99)}


def _figures(samples: list[float]) -> str:
    return f"p99 {1000 * _percentile(samples, 0.99):.0f} ms, p50 {1000 * _percentile(samples, 0.5):.0f} ms"


async def run(quick: bool = False) -> list[Row]:
    seconds = 10.0 if quick else 30.0
    tokens = int(RATE * seconds)
    rows: list[Row] = []
    with (
        simulator_process("--tokens-per-second", str(RATE), "--tokens-per-delta", "1-4") as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        folder = Path(tmp)
        slow = await _latency(sim.base_url, folder, None, 4, tokens)
        fast = await _latency(sim.base_url, folder, 0.1, 4, tokens)
        p99_slow, p99_fast = _percentile(slow, 0.99), _percentile(fast, 0.99)
        rows.append(
            Row(
                name="Relay latency, model emission → SSE client",
                ours=f"{_figures(fast)} (watched jobs: 0.1 s checkpoints)",
                baseline=f"{_figures(slow)} (every job: 1 s checkpoints)",
                ratio=f"{p99_slow / p99_fast:.1f}× lower p99",
                method=(
                    f"4 jobs of {tokens} tokens at {RATE} tokens/s, 2 viewers each, pool and server in one "
                    "process (one clock), SQLite, data_version change signal; emission = the worker "
                    "receiving a delta; default checkpoint interval vs [server] live_checkpoint_seconds"
                ),
            )
        )
        for jobs, viewers in ((1, 100), (20, 20)) if quick else ((1, 1000), (200, 200)):
            sub = folder / f"scale-{jobs}-{viewers}"
            sub.mkdir()
            result = await _scale(sim.base_url, sub, jobs, viewers, tokens)
            rows.append(
                Row(
                    name=f"{viewers:,} SSE clients on {jobs:,} job(s), one serve process",
                    ours=(
                        f"CPU {result['cpu']:.2f} core, peak RSS {result['rss_mb']:.0f} MB; commit → client "
                        f"p99 {1000 * result['p99']:.0f} ms (p50 {1000 * result['p50']:.0f} ms)"
                    ),
                    baseline="goal: p99 ≤ 250 ms emission → client",
                    ratio=f"{result['done']:.0f}/{viewers} clients got the text",
                    method=(
                        f"serve --workers {jobs} (pool in the same process), {jobs} job(s) of {tokens} "
                        "tokens "
                        f"at {RATE} tokens/s, viewers connected before the jobs start, in the bench process "
                        f"(its CPU: {result['client_cpu']:.2f} core); /proc for serve's CPU and VmHWM"
                    ),
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run: 100 viewers, 10 s documents")
    args = parser.parse_args()
    configure_logging("json", "warning")
    for row in anyio.run(run, args.quick):
        print(row.to_json())


if __name__ == "__main__":
    main()
