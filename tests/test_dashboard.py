"""The dashboard over real HTTP (no browser): login and its cookie, what the cookie opens and what
it does not, CSRF on the forms, the pages and fragments, and the debounced list stream.

The browser itself is driven in tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from jobs.buckets import Limits
from jobs.models import AttemptResult, Outcome, State, Usage
from jobs.sqlite import SQLiteStore
from tests.pool_harness import spec
from tests.server_harness import TOKEN, EventStream, LiveServer, auth, live_server
from worker.server.session import COOKIE, SESSION_SECONDS, new_session, session_nonce

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def browser(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, aiohttp.ClientSession]]:
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        async with (
            live_server(store) as live,
            aiohttp.ClientSession(base_url=live.url, cookie_jar=jar) as session,
        ):
            yield live, session
    finally:
        await store.close()


async def login(session: aiohttp.ClientSession, token: str = TOKEN) -> aiohttp.ClientResponse:
    async with session.post("/login", data={"token": token}, allow_redirects=False) as response:
        await response.read()
        return response


async def csrf_of(session: aiohttp.ClientSession, path: str = "/") -> str:
    async with session.get(path) as response:
        assert response.status == 200, await response.text()
        found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', await response.text())
    assert found is not None
    return found.group(1)


async def test_login_sets_a_strict_httponly_cookie_and_logout_clears_it(tmp_path: Path) -> None:
    async with browser(tmp_path) as (_, session):
        async with session.get("/", allow_redirects=False) as response:
            assert (response.status, response.headers["Location"]) == (303, "/login")
        async with session.get("/ui/jobs") as response:
            assert response.status == 401
        refused = await login(session, "wrong-token")
        assert refused.status == 401 and COOKIE not in refused.cookies
        accepted = await login(session)
        assert (accepted.status, accepted.headers["Location"]) == (303, "/")
        cookie = accepted.cookies[COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]
        assert TOKEN not in cookie.value
        csrf = await csrf_of(session)
        async with session.post("/logout", data={"csrf": "nope"}, allow_redirects=False) as response:
            assert response.status == 403
        async with session.post("/logout", data={"csrf": csrf}, allow_redirects=False) as response:
            assert response.status == 303
        async with session.get("/", allow_redirects=False) as response:
            assert response.status == 303


async def test_the_cookie_opens_the_dashboard_not_the_api(tmp_path: Path) -> None:
    async with browser(tmp_path) as (live, session):
        await live.store.enqueue([spec("job-1")])
        await login(session)
        async with session.get("/v1/jobs") as response:
            assert response.status == 401
        async with session.get("/v1/jobs", headers=auth()) as response:
            assert response.status == 200
        # The bearer token does not open the dashboard without the cookie.
        async with (
            aiohttp.ClientSession(base_url=live.url) as other,
            other.get("/ui/jobs", headers=auth()) as response,
        ):
            assert response.status == 401
        async with session.get("/static/dashboard.js") as response:
            assert response.status == 200 and "EventSource" in await response.text()


async def test_cancel_and_retry_need_the_csrf_token_and_the_same_origin(tmp_path: Path) -> None:
    async with browser(tmp_path) as (live, session):
        await live.store.enqueue([spec("job-1")])
        await login(session)
        csrf = await csrf_of(session, "/jobs/job-1")
        async with session.post("/ui/jobs/job-1/cancel") as response:
            assert response.status == 403
        headers = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        async with session.post("/ui/jobs/job-1/cancel", headers=headers) as response:
            assert response.status == 403
        assert (await live.store.get("job-1")).state is State.QUEUED
        async with session.post("/ui/jobs/job-1/cancel", headers={"X-CSRF-Token": csrf}) as response:
            assert (response.status, (await response.json())["state"]) == (200, "cancelled")
        async with session.post("/ui/jobs/job-1/retry", headers={"X-CSRF-Token": csrf}) as response:
            assert (response.status, (await response.json())["state"]) == (200, "queued")
        async with session.post("/ui/jobs/job-1/retry", headers={"X-CSRF-Token": csrf}) as response:
            assert response.status == 409


async def test_jobs_view_filters_pages_and_escapes(tmp_path: Path) -> None:
    async with browser(tmp_path) as (live, session):
        await live.store.enqueue(
            [
                replace(spec(f"job-{i:03}"), metadata={"team": "<b>red</b>" if i % 2 else "blue"})
                for i in range(120)
            ]
        )
        await live.store.cancel("job-007")
        await login(session)
        async with session.get("/", params={"state": "cancelled"}) as response:
            page = await response.text()
        assert 'data-count="cancelled">1<' in page and 'data-count="queued">119<' in page
        assert re.findall(r'<tr data-job="([^"]+)"', page) == ["job-007"]
        assert "<th scope=col>Mode</th>" in page and "<td>stream</td>" in page
        async with session.get("/ui/jobs", params={"q": "job-11"}) as response:
            rows = (await response.json())["rows"]
        assert re.findall(r'<tr data-job="([^"]+)"', rows) == [f"job-11{i}" for i in range(10)]
        async with session.get("/ui/jobs", params={"sort": "-id"}) as response:
            data = await response.json()
        ids = re.findall(r'<tr data-job="([^"]+)"', data["rows"])
        assert ids == [f"job-{i:03}" for i in range(119, 69, -1)]
        assert "after=job-070" in data["pager"]
        async with session.get("/ui/jobs", params={"q": "red"}) as response:
            assert len(re.findall(r"<tr data-job=", (await response.json())["rows"])) == 50
        async with session.get("/", params={"bogus": "1"}) as response:
            assert response.status == 400
        async with session.get("/jobs/job-001") as response:
            assert "<b>" not in await response.text()
        async with session.get("/jobs/%3Cscript%3E") as response:
            assert response.status == 404 and response.content_type == "text/html"
            assert "&lt;script&gt;" in await response.text()


async def test_jobs_view_sorts_newest_first_and_pages_by_enqueue_time(tmp_path: Path) -> None:
    async with browser(tmp_path) as (live, session):
        for i in range(60):  # one enqueue each: created_at grows with i (ids sort the other way)
            await live.store.enqueue([spec(f"job-{99 - i:03}")])
        await login(session)
        async with session.get("/ui/jobs", params={"sort": "-created"}) as response:
            data = await response.json()
        ids = re.findall(r'<tr data-job="([^"]+)"', data["rows"])
        newest = [f"job-{99 - i:03}" for i in range(59, -1, -1)]
        assert ids == newest[:50]
        after = re.search(r"after=([^&\"]+)", data["pager"])
        assert after is not None
        async with session.get(
            "/ui/jobs", params={"sort": "-created", "after": unquote(after[1])}
        ) as response:
            rest = re.findall(r'<tr data-job="([^"]+)"', (await response.json())["rows"])
        assert rest == newest[50:]
        async with session.get("/", params={"sort": "-created"}) as response:
            assert 'value="-created" selected' in await response.text()
        for bad in ({"sort": "updated"}, {"sort": "created", "after": "job-001"}):
            async with session.get("/ui/jobs", params=bad) as response:
                assert response.status == 400, bad


async def test_the_list_stream_says_changed_after_a_change(tmp_path: Path) -> None:
    async with browser(tmp_path) as (live, session):
        await login(session)
        timeout = aiohttp.ClientTimeout(total=None)
        async with session.get("/ui/events", timeout=timeout) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            stream = EventStream(response).events()
            await live.store.enqueue([spec("job-1"), spec("job-2")])
            event = await anext(stream)
            assert event.event == "changed" and event.json()["counts"]["queued"] == 2


async def test_download_and_fleet_pages(tmp_path: Path) -> None:
    async with browser(tmp_path) as (live, session):
        await live.store.enqueue([spec("job-1")])
        await login(session)
        async with session.get("/ui/jobs/job-1/text") as response:
            assert response.status == 200
            assert response.headers["Content-Disposition"] == 'attachment; filename="job-1.md"'
        async with session.get("/fleet") as response:
            page = await response.text()
        assert "No worker seen" in page and "<svg" in page


async def test_a_cookie_is_secure_behind_https_and_expires(tmp_path: Path) -> None:
    async with (
        browser(tmp_path) as (_, session),
        session.post(
            "/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"}, allow_redirects=False
        ) as response,
    ):
        assert response.cookies[COOKIE]["secure"]
    issued = 1_750_000_000.0
    value = new_session(TOKEN, now=issued)
    request = make_mocked_request("GET", "/", headers={"Cookie": f"{COOKIE}={value}"})
    assert session_nonce(request, TOKEN, now=issued + SESSION_SECONDS - 1) is not None
    assert session_nonce(request, TOKEN, now=issued + SESSION_SECONDS + 1) is None
    assert session_nonce(request, "another-token", now=issued) is None


async def test_job_timeline_and_fleet_show_attempts_workers_and_pauses(tmp_path: Path) -> None:
    async with browser(tmp_path) as (live, session):
        store = live.store
        await store.enqueue([spec("job-1")])
        [claim] = await store.claim("host-a:1:abc", 30.0)
        result = AttemptResult(Outcome.RETRY, Usage(10, 20), error="overloaded_error: 529", retry_at=0.0)
        await store.settle("job-1", claim.token, result)
        [again] = await store.claim("host-b:2:def", 30.0)
        await store.update_buckets(
            "fleet",
            Limits(requests=50),
            lambda state, now: (
                dataclasses.replace(state, paused_until=now + 30, pause_reason="429 rate_limit_error"),
                None,
            ),
        )
        await login(session)
        async with session.get("/ui/jobs/job-1/panel") as response:
            panel = await response.json()
        assert panel["state"] == "running"
        assert "mode stream" in panel["head"]
        timeline = panel["details"]
        assert "host-a:1:abc" in timeline and "host-b:2:def" in timeline
        assert "overloaded_error: 529" in timeline and "retry" in timeline
        async with session.get("/ui/fleet") as response:
            fleet = (await response.json())["fleet"]
        assert "host-b:2:def" in fleet and "host-a:1:abc" in fleet
        assert "the fleet is paused for" in fleet and "retry 1" in fleet
        assert "(rate limited: 429 rate_limit_error)" in fleet
        assert again.attempt == 2
