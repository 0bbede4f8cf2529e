"""The REST routes over real HTTP: auth, submission, listing, reading, cancel and retry, limits."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jobs.models import AttemptResult, CheckpointWrite, Outcome, State
from jobs.sqlite import SQLiteStore
from tests.pool_harness import spec
from tests.server_harness import LiveServer, auth, live_server
from worker.server.openapi import openapi_document

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def api(tmp_path: Path, **server: Any) -> AsyncIterator[tuple[LiveServer, aiohttp.ClientSession]]:
    store = SQLiteStore(tmp_path / "jobs.db")
    try:
        async with live_server(store, **server) as live, aiohttp.ClientSession(base_url=live.url) as session:
            yield live, session
    finally:
        await store.close()


async def call(
    session: aiohttp.ClientSession, method: str, path: str, body: Any = None, **kwargs: Any
) -> tuple[int, Any]:
    headers = kwargs.pop("headers", auth())
    async with session.request(method, path, json=body, headers=headers, **kwargs) as response:
        text = await response.text()
        is_json = response.content_type == "application/json"
        return response.status, json.loads(text) if is_json else text


def documented_routes() -> list[tuple[str, str]]:
    return [
        (method.upper(), path.replace("{id}", "some-job"))
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    ]


async def test_every_route_but_healthz_needs_the_token(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, session):
        for method, path in [*documented_routes(), ("GET", "/no/such/route")]:
            for headers in ({}, auth("wrong"), {"Authorization": "Basic dXNlcjpwYXNz"}):
                async with session.request(method, path, headers=headers) as response:
                    if path == "/healthz":
                        assert response.status == 200
                        continue
                    assert response.status == 401, (method, path, headers)
                    assert response.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)


async def test_the_openapi_document_names_every_served_route(tmp_path: Path) -> None:
    async with api(tmp_path) as (live, session):
        status, document = await call(session, "GET", "/v1/openapi.json")
        assert status == 200 and document["openapi"].startswith("3.1")
        served = set()
        for route in live_app_routes(live):
            served.add(route)
        documented = {(m, p) for p, ops in document["paths"].items() for m in (o.upper() for o in ops)}
        assert served == documented


def live_app_routes(live: LiveServer) -> set[tuple[str, str]]:
    from worker.server.app import build_app
    from worker.server.session import is_browser_path

    app = build_app(live.config, live.store, live.relay, "x")
    found = set()
    for resource in app.router.resources():
        for route in resource:
            # The dashboard's pages are for browsers, not part of the documented API.
            if route.method != "HEAD" and not is_browser_path(resource.canonical):
                found.add((route.method, resource.canonical))
    return found


async def test_submit_is_all_or_nothing_and_names_index_and_field(tmp_path: Path) -> None:
    async with api(tmp_path) as (live, session):
        body = {"jobs": [{"id": "ok", "prompt": "Write."}, {"prompt": 5}, {"id": "bad/id", "prompt": "x"}]}
        status, answer = await call(session, "POST", "/v1/jobs", body)
        assert status == 400
        problems = {(p["index"], p["field"]) for p in answer["problems"]}
        assert problems == {(1, "prompt"), (2, "id")}
        assert "jobs[1]: prompt" in answer["error"]
        assert await live.store.list_jobs() == [], "a rejected batch stored something"

        status, answer = await call(session, "POST", "/v1/jobs", {"jobs": [{"id": "a", "prompt": "x"}] * 2})
        assert status == 400 and answer["problems"][0]["field"] == "id"


async def test_submit_stores_and_reposting_is_idempotent(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, session):
        status, job = await call(session, "POST", "/v1/jobs", {"id": "a", "prompt": "Write.", "priority": 3})
        assert status == 201
        assert (job["id"], job["state"], job["priority"], job["text_length"]) == ("a", "queued", 3, 0)
        assert "prompt" not in job and "messages" not in job
        status, again = await call(session, "POST", "/v1/jobs", {"id": "a", "prompt": "Something else."})
        assert status == 200 and again == job
        status, batch = await call(
            session, "POST", "/v1/jobs", {"jobs": [{"prompt": "p"}, {"id": "a", "prompt": "x"}]}
        )
        assert status == 201
        assert batch["jobs"][0]["id"].startswith("job-") and batch["jobs"][1] == job
        status, _ = await call(session, "POST", "/v1/jobs", {"jobs": [{"prompt": "p"}]})
        assert status == 200, "a job without an id gets a stable one: re-posting adds nothing"


async def test_bad_json_and_oversized_bodies(tmp_path: Path) -> None:
    async with api(tmp_path, max_body_bytes=1000) as (_, session):
        async with session.post("/v1/jobs", data=b'{"id": "a", "prompt": ', headers=auth()) as response:
            assert response.status == 400
            assert (await response.json())["error"].startswith("body: not valid JSON")
        async with session.post("/v1/jobs", data=b"[1, NaN]", headers=auth()) as response:
            assert response.status == 400 and "NaN" in (await response.json())["error"]
        status, answer = await call(session, "POST", "/v1/jobs", {"id": "a", "prompt": "x" * 2000})
        assert status == 413 and "error" in answer
        status, answer = await call(session, "POST", "/v1/jobs", [1, 2])
        assert status == 400 and answer["problems"][0]["field"] == "job"


async def test_listing_pages_by_keyset_and_filters_by_state(tmp_path: Path) -> None:
    async with api(tmp_path) as (live, session):
        await live.store.enqueue([spec(f"j{n:02d}") for n in range(25)])
        [claim] = await live.store.claim("w", 30)
        await live.store.settle(claim.job.id, claim.token, AttemptResult(Outcome.SUCCEEDED))
        seen: list[str] = []
        cursor: str | None = None
        while True:
            query = {"limit": "10", **({"cursor": cursor} if cursor else {})}
            status, page = await call(session, "GET", "/v1/jobs", params=query)
            assert status == 200
            seen += [job["id"] for job in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"j{n:02d}" for n in range(25)]
        status, page = await call(session, "GET", "/v1/jobs", params={"state": "succeeded"})
        assert [job["id"] for job in page["jobs"]] == [claim.job.id]
        status, page = await call(session, "GET", "/v1/jobs", params={"state": "queued,running"})
        assert len(page["jobs"]) == 24
        for bad in ({"state": "done"}, {"limit": "0"}, {"limit": "x"}, {"cursor": "%%%"}):
            status, answer = await call(session, "GET", "/v1/jobs", params=bad)
            assert status == 400 and re.match(r"(state|limit|cursor): ", answer["error"]), (bad, answer)


async def test_job_text_cancel_and_retry(tmp_path: Path) -> None:
    async with api(tmp_path) as (live, session):
        await live.store.enqueue([spec("a"), spec("b")])
        claim = next(c for c in await live.store.claim("w", 30, limit=2) if c.job.id == "a")
        await live.store.commit([CheckpointWrite("a", claim.token, 0, "héllo\nwörld\u2028!")], 30)
        status, job = await call(session, "GET", "/v1/jobs/a")
        assert status == 200 and (job["state"], job["attempts"], job["text_length"]) == ("running", 1, 13)
        status, text = await call(session, "GET", "/v1/jobs/a/text", params={"offset": "6"})
        assert status == 200 and text == "wörld\u2028!"
        status, answer = await call(session, "GET", "/v1/jobs/a/text", params={"offset": "-1"})
        assert status == 400 and answer["error"].startswith("offset: ")
        status, answer = await call(session, "GET", "/v1/jobs/nope")
        assert status == 404 and "nope" in answer["error"]
        status, answer = await call(session, "POST", "/v1/jobs/a/retry")
        assert status == 409 and "running" in answer["error"]
        status, job = await call(session, "POST", "/v1/jobs/a/cancel")
        assert status == 200 and job["state"] == "cancelled"
        status, answer = await call(session, "POST", "/v1/jobs/a/cancel")
        assert status == 409
        status, job = await call(session, "POST", "/v1/jobs/a/retry")
        assert status == 200 and (job["state"], job["text_length"]) == ("queued", 13)


async def test_a_jobs_kept_thinking_is_served_and_never_its_text(tmp_path: Path) -> None:
    async with api(tmp_path) as (live, session):
        await live.store.enqueue([spec("a"), spec("b")])
        claim = next(c for c in await live.store.claim("w", 30, limit=2) if c.job.id == "a")
        await live.store.commit([CheckpointWrite("a", claim.token, 0, "The text.")], 30)
        await live.store.save_thinking("a", claim.token, 1, "Plan the opening.", 1000)
        await live.store.save_thinking("a", claim.token, 2, "x" * 50, 30)
        status, answer = await call(session, "GET", "/v1/jobs/a/thinking")
        assert status == 200 and answer["id"] == "a"
        kept = [(t["attempt"], t["request"], t["text"], t["chars"], t["cut"]) for t in answer["thinking"]]
        assert kept == [(1, 1, "Plan the opening.", 17, False), (1, 2, "x" * 13, 50, True)]
        assert await call(session, "GET", "/v1/jobs/b/thinking") == (200, {"id": "b", "thinking": []})
        status, answer = await call(session, "GET", "/v1/jobs/nope/thinking")
        assert status == 404 and "nope" in answer["error"]
        status, answer = await call(session, "GET", "/v1/jobs/a/thinking", params={"offset": "1"})
        assert status == 400 and answer["error"].startswith("offset: unknown query parameter")


async def test_retry_repairs_a_failed_jobs_spec(tmp_path: Path) -> None:
    async with api(tmp_path) as (live, session):
        await live.store.enqueue([spec("a")])
        await live.store.cancel("a")
        bad = {"set": {"max_tokens": 0, "prompt": "Other."}}
        status, answer = await call(session, "POST", "/v1/jobs/a/retry", bad)
        assert status == 400
        assert {p["field"] for p in answer["problems"]} == {"set.prompt"}
        status, answer = await call(session, "POST", "/v1/jobs/a/retry", {"set": {"max_tokens": 0}})
        assert status == 400 and answer["problems"][0]["field"] == "set.max_tokens"
        status, answer = await call(session, "POST", "/v1/jobs/a/retry", {"model": "x"})
        assert status == 400 and answer["error"].startswith("body: ")
        assert (await live.store.get("a")).state == State.CANCELLED
        status, job = await call(session, "POST", "/v1/jobs/a/retry", {"set": {"model": "claude-sonnet-4-6"}})
        assert status == 200 and (job["state"], job["model"]) == ("queued", "claude-sonnet-4-6")


async def test_health_and_readiness(tmp_path: Path) -> None:
    async with api(tmp_path) as (live, session):
        assert await call(session, "GET", "/healthz", headers={}) == (200, {"status": "ok"})
        assert await call(session, "GET", "/readyz") == (200, {"ready": True})
        await live.store.close()
        status, answer = await call(session, "GET", "/readyz")
        assert status == 503 and answer["ready"] is False


async def test_no_cors_headers(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, session):
        headers = {**auth(), "Origin": "https://elsewhere.example"}
        async with session.get("/v1/jobs", headers=headers) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
