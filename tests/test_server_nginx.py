"""``deploy/nginx.conf`` through Debian's nginx, in front of ``python -m worker serve``.

The shipped file is used as is, except for three values: the upstream (serve's port), the listen
port, and ``proxy_read_timeout``, set to 2 s so that the heartbeats (every 0.3 s here) are seen
to be what keeps an idle stream open: with heartbeats off, nginx closes the same stream.

Skipped without nginx, unless ``REQUIRE_NGINX=1`` (CI sets it): then it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anyio
import pytest

from jobs.models import State
from jobs.sqlite import SQLiteStore
from tests.pool_harness import PREFILL_MODEL, expected, spec
from tests.serve_fixtures import ServeFactory, write_serve_config
from tests.server_harness import Comment, SSEEvent, auth, open_events
from worker.simulator import SimulatorConfig, run_simulator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[1]
READ_TIMEOUT = 2


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        reason = "nginx is not installed (apt-get install nginx)"
        if os.environ.get("REQUIRE_NGINX") == "1":
            pytest.fail(f"{reason}, and REQUIRE_NGINX=1", pytrace=False)
        pytest.skip(reason)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nginx_config(folder: Path, upstream: str, port: int) -> Path:
    site = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    for old, new in (
        ("server 127.0.0.1:8080;", f"server {upstream};"),
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("proxy_read_timeout 600s;", f"proxy_read_timeout {READ_TIMEOUT}s;"),
    ):
        assert old in site, f"deploy/nginx.conf no longer has {old!r}"
        site = site.replace(old, new)
    temp = folder / "temp"
    temp.mkdir()
    path = folder / "nginx.conf"
    path.write_text(
        f"""
daemon off;
master_process off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {folder / "access.log"};
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{site}
}}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[object]:
    binary = nginx_binary()
    started: list[subprocess.Popen[bytes]] = []

    def start(upstream: str) -> str:
        folder = tmp_path / f"nginx-{len(started)}"
        folder.mkdir()
        port = free_port()
        config = nginx_config(folder, upstream, port)
        check = subprocess.run([binary, "-t", "-c", str(config)], capture_output=True, check=False)
        assert check.returncode == 0, check.stderr.decode()
        started.append(subprocess.Popen([binary, "-c", str(config)]))
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


async def wait_for_proxy(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        with anyio.fail_after(20):
            while True:
                try:
                    async with session.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await anyio.sleep(0.05)


async def test_text_flows_at_once_and_last_event_id_resumes_through_nginx(
    tmp_path: Path, serve_process: ServeFactory, nginx: object
) -> None:
    async with run_simulator(SimulatorConfig(tokens_per_second=300)) as sim:
        served = serve_process(write_serve_config(tmp_path, base_url=sim.base_url), "--workers", "1")
        proxy = nginx(served.url.removeprefix("http://"))  # type: ignore[operator]
        await wait_for_proxy(proxy)
        store = SQLiteStore(tmp_path / "jobs.db")
        job = {"id": "doc", "prompt": spec("doc", tokens=1200).messages[0].content, "model": PREFILL_MODEL}
        texts: list[str] = []
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{proxy}/v1/jobs", json=job, headers=auth()) as response:
                    assert response.status == 201
                last_id = None
                async with open_events(session, f"{proxy}/v1/jobs/doc/events") as stream:
                    assert stream.response.headers.get("Content-Encoding") is None
                    async for event in stream.events():
                        if event.event == "text":
                            if not texts:
                                state = (await store.get("doc")).state
                                assert state is State.RUNNING, "the first text waited for the job to end"
                            texts.append(event.json()["text"])
                            last_id = event.id
                            if len(texts) == 5:
                                break  # drop the connection
                assert last_id is not None
                async with open_events(
                    session, f"{proxy}/v1/jobs/doc/events", last_event_id=last_id
                ) as stream:
                    first = True
                    async for event in stream.events():
                        if event.event == "text":
                            if first:
                                assert event.json()["offset"] == int(last_id)
                                first = False
                            texts.append(event.json()["text"])
                        elif event.event == "done":
                            break
        finally:
            await store.close()
    assert "".join(texts) == expected(spec("doc", tokens=1200))


async def follow_idle(url: str, heartbeats_wanted: int) -> tuple[int, bool]:
    """Follow a queued job nobody works on: (heartbeats seen, whether the proxy closed the stream)."""
    heartbeats = 0
    async with aiohttp.ClientSession() as session:
        job = {"id": "idle", "prompt": "Nobody runs this."}
        async with session.post(f"{url}/v1/jobs", json=job, headers=auth()) as response:
            assert response.status in (200, 201)
        async with open_events(session, f"{url}/v1/jobs/idle/events") as stream:
            with anyio.fail_after(READ_TIMEOUT * 10):
                try:
                    async for item in stream:
                        if isinstance(item, Comment):
                            heartbeats += 1
                            if heartbeats == heartbeats_wanted:
                                return heartbeats, False
                        assert not (isinstance(item, SSEEvent) and item.event == "done")
                except aiohttp.ClientPayloadError:
                    pass  # nginx cut the chunked response short: its read timeout fired
    return heartbeats, True


async def test_heartbeats_keep_an_idle_stream_open_past_the_proxy_read_timeout(
    tmp_path: Path, serve_process: ServeFactory, nginx: object
) -> None:
    # 0.3 s heartbeats: 20 of them span 6 s, three times nginx's 2 s read timeout.
    beating = tmp_path / "beating"
    beating.mkdir()
    config = write_serve_config(beating, extra="[server]\nheartbeat_seconds = 0.3\n")
    proxy = nginx(serve_process(config).url.removeprefix("http://"))  # type: ignore[operator]
    await wait_for_proxy(proxy)
    assert await follow_idle(proxy, 20) == (20, False)

    # The control: the same stream without heartbeats is closed by nginx after its read timeout.
    silent = tmp_path / "silent"
    silent.mkdir()
    config = write_serve_config(silent, extra="[server]\nheartbeat_seconds = 3600\n")
    proxy = nginx(serve_process(config).url.removeprefix("http://"))  # type: ignore[operator]
    await wait_for_proxy(proxy)
    assert await follow_idle(proxy, 1) == (0, True)
