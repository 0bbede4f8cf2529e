"""The REST routes: submit, list, read, cancel and retry jobs; a job's kept thinking; health and
readiness.

Bodies are JSON; every error is ``{"error": "..."}`` (plus ``"problems"`` for a rejected
submission), with the status saying who must act: 400 fix the request, 404 no such job, 409 the
job's state does not allow it, 413 body too large, 503 the store is unreachable.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from jobs.errors import JobNotFoundError, JobStateError, StoreError
from jobs.jsonl import parse_object
from jobs.models import JobSpec, State
from jobs.revise import revise
from jobs.store import Store
from worker.config import Config
from worker.server.views import decode_cursor, encode_cursor, job_json, thinking_json

__all__ = (
    "STORE",
    "CONFIG",
    "add_routes",
    "error_middleware",
    "query_middleware",
    "MAX_PAGE",
    "DEFAULT_PAGE",
)

STORE = web.AppKey("store", Store)
CONFIG = web.AppKey("config", Config)

MAX_PAGE = 1000
DEFAULT_PAGE = 100


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/v1/jobs", submit)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{id}", get_job)
    app.router.add_get("/v1/jobs/{id}/text", get_text)
    app.router.add_get("/v1/jobs/{id}/thinking", get_thinking)
    app.router.add_post("/v1/jobs/{id}/cancel", cancel)
    app.router.add_post("/v1/jobs/{id}/retry", retry)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def healthz(request: web.Request) -> web.Response:
    """The process is up (no token, no store access: a liveness probe)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The store answers a cheap query."""
    try:
        await request.app[STORE].next_due()
    except StoreError as exc:
        return web.json_response({"ready": False, "error": str(exc)}, status=503)
    return web.json_response({"ready": True})


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()  # aiohttp answers 413 past client_max_size
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body: not valid UTF-8 (at byte {exc.start})"}),
            content_type="application/json",
        ) from None
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        detail = (
            f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else exc
        )
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body: not valid JSON ({detail})"}),
            content_type="application/json",
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _specs(body: Any, config: Config) -> tuple[list[JobSpec], list[dict[str, Any]], bool]:
    """The specs of a submission, its problems (index, field, message) and whether it was a batch."""
    batch = isinstance(body, dict) and set(body) == {"jobs"}
    if batch and not isinstance(body["jobs"], list):
        return [], [{"index": None, "field": "jobs", "message": "must be a list of job objects"}], True
    items = body["jobs"] if batch else [body]
    if batch and not items:
        return [], [{"index": None, "field": "jobs", "message": "must not be empty"}], True
    specs: list[JobSpec] = []
    problems: list[dict[str, Any]] = []
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        where = f"jobs[{index}]" if batch else "job"
        spec, errors = parse_object(item, where, config.job_defaults())
        for error in errors:
            _, field, message = error.split(": ", 2)
            problems.append({"index": index, "field": field, "message": message})
        if spec is None:
            continue
        if spec.id in first:
            message = f"duplicate of jobs[{first[spec.id]}] ({spec.id!r})"
            problems.append({"index": index, "field": "id", "message": message})
            continue
        first[spec.id] = index
        specs.append(spec)
    return specs, problems, batch


async def submit(request: web.Request) -> web.Response:
    """One job object or ``{"jobs": [...]}``; all or nothing. 201 if anything was added, 200 if
    every id existed already (idempotent: the stored jobs are returned as they are)."""
    body = await _json_body(request)
    specs, problems, batch = _specs(body, request.app[CONFIG])
    if problems:
        summary = "; ".join(
            f"{'job' if p['index'] is None or not batch else 'jobs[' + str(p['index']) + ']'}: "
            f"{p['field']}: {p['message']}"
            for p in problems[:5]
        )
        return _error(400, f"invalid job: {summary}", problems=problems)
    store = request.app[STORE]
    result = await store.enqueue(specs)
    jobs = [job_json(await store.get(spec.id)) for spec in specs]
    status = 201 if result.inserted else 200
    return web.json_response({"jobs": jobs} if batch else jobs[0], status=status)


def _states(text: str) -> list[State]:
    states: list[State] = []
    for name in filter(None, (part.strip() for part in text.split(","))):
        try:
            states.append(State(name))
        except ValueError:
            known = ", ".join(s.value for s in State)
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"state: unknown state {name!r} (known: {known})"}),
                content_type="application/json",
            ) from None
    return states


def _int_param(request: web.Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name}: must be an integer {bound}, got {raw!r}"}),
            content_type="application/json",
        )
    return value


async def list_jobs(request: web.Request) -> web.Response:
    """Jobs in id order, ``limit`` per page; ``next_cursor`` fetches the next page (keyset)."""
    states = _states(request.query.get("state", "")) or None
    limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    after: str | None = None
    cursor = request.query.get("cursor")
    if cursor:
        after = decode_cursor(cursor)
        if after is None:
            return _error(400, "cursor: not a cursor this server issued")
    found = await request.app[STORE].list_jobs(states, after_id=after, limit=limit + 1)
    page = found[:limit]
    next_cursor = encode_cursor(page[-1].id) if len(found) > limit else None
    return web.json_response({"jobs": [job_json(job) for job in page], "next_cursor": next_cursor})


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(job_json(await request.app[STORE].get(request.match_info["id"])))


async def get_text(request: web.Request) -> web.Response:
    """The committed text from character ``offset``, as UTF-8; ``X-Text-Offset`` echoes where it starts."""
    offset = _int_param(request, "offset", 0, 0, None)
    text = await request.app[STORE].read_text_from(request.match_info["id"], offset)
    return web.Response(
        text=text, content_type="text/plain", charset="utf-8", headers={"X-Text-Offset": str(offset)}
    )


async def get_thinking(request: web.Request) -> web.Response:
    """The thinking kept beside the job (``Store.read_thinking``), per attempt and request, in
    order; an empty list for a job that did not think. Never part of the document."""
    job_id = request.match_info["id"]
    kept = await request.app[STORE].read_thinking(job_id)
    return web.json_response({"id": job_id, "thinking": [thinking_json(t) for t in kept]})


async def cancel(request: web.Request) -> web.Response:
    return web.json_response(job_json(await request.app[STORE].cancel(request.match_info["id"])))


async def retry(request: web.Request) -> web.Response:
    """An empty body re-queues the job as it is; ``{"set": {"model": ...}}`` repairs the fields
    that say how it runs first (:mod:`jobs.revise`), validated as at submission (400 naming them)."""
    store, job_id = request.app[STORE], request.match_info["id"]
    body = await _json_body(request) if request.can_read_body else {}
    changes = body.get("set") if isinstance(body, dict) else None
    if not isinstance(body, dict) or set(body) - {"set"} or not isinstance(changes, dict | None):
        return _error(400, 'body: expected {"set": {FIELD: VALUE, ...}} or nothing')
    revised = None
    if changes:
        result = revise((await store.get(job_id)).spec, changes, request.app[CONFIG].job_defaults())
        if not isinstance(result, JobSpec):
            problems = [{"field": f"set.{field}", "message": message} for field, message in result]
            summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
            return _error(400, f"invalid change: {summary}", problems=problems)
        revised = result
    return web.json_response(job_json(await store.retry(job_id, revised)))


#: Query parameters each route accepts; any other is a 400, so a typo (``?ofset=``) is not ignored.
QUERY_PARAMETERS: dict[str, frozenset[str]] = {
    "/v1/jobs": frozenset({"state", "limit", "cursor"}),
    "/v1/jobs/{id}/text": frozenset({"offset"}),
    "/v1/jobs/{id}/events": frozenset({"offset"}),
    # The dashboard (worker.server.dashboard).
    "/": frozenset({"state", "model", "q", "sort", "after"}),
    "/ui/jobs": frozenset({"state", "model", "q", "sort", "after"}),
    "/ui/jobs/{id}/events": frozenset({"offset"}),
}


def check_query(request: web.Request) -> None:
    """Raise a 400 naming the first query parameter the route does not take."""
    if not request.query:
        return
    resource = request.match_info.route.resource
    allowed = QUERY_PARAMETERS.get(resource.canonical if resource is not None else "", frozenset())
    for name in request.query:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"{name}: unknown query parameter (known: {known})"}),
                content_type="application/json",
            )


@web.middleware
async def query_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Runs after auth: an unauthenticated request learns nothing about parameters."""
    if request.match_info.http_exception is None:
        check_query(request)
    response: web.StreamResponse = await handler(request)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Store errors become 404/409/503; aiohttp's own errors (404, 405, 413) get a JSON body."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except JobNotFoundError:
        return _error(404, f"no job with id {request.match_info.get('id', '')!r}")
    except JobStateError as exc:
        return _error(409, str(exc))
    except StoreError as exc:
        return _error(503, f"the job store is unavailable: {exc}")
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)
