"""The dashboard served by ``serve`` at ``/``: jobs, one job's live document, and the fleet.

Pages are rendered on the server (:mod:`worker.server.pages`); the small script in ``static/``
makes them live without polling:

* the jobs and fleet views hold one ``EventSource`` on ``/ui/events``, which sends ``changed`` at
  most once per ``DEBOUNCE_SECONDS`` after the store's change signal (the relay's one signal, shared
  by every viewer: :meth:`Relay.next_change`); the page then re-fetches its fragment;
* the job view follows ``/ui/jobs/{id}/events``, the relay's own stream (:mod:`worker.server.sse`)
  behind the session cookie, appending the text as it is committed.

Lists page by keyset over the primary key (:meth:`Store.find_jobs`), so a page reads about its own
rows whatever the number of jobs; counts come from the store's aggregate rows (:meth:`Store.counts`).
"""

from __future__ import annotations

import json
import math
from html import escape
from importlib import resources
from typing import Any

import anyio
from aiohttp import web

from jobs.costs import PriceTable, job_spend, load_prices
from jobs.errors import JobNotFoundError
from jobs.models import Job, JobQuery, State
from worker.server import pages
from worker.server.events import encode_event
from worker.server.routes import CONFIG, STORE
from worker.server.session import (
    COOKIE,
    SESSION,
    csrf_token,
    new_session,
    same_origin,
    set_session_cookie,
    token_matches,
)
from worker.server.sse import HEADERS, RELAY, SETTINGS, events

__all__ = ("add_dashboard", "DEBOUNCE_SECONDS", "PAGE_SIZE", "TOKEN")

TOKEN = web.AppKey("dashboard_token", str)
PRICES = web.AppKey("dashboard_prices", PriceTable)
#: Changes are coalesced over this long before the list is told to re-fetch.
DEBOUNCE_SECONDS = 0.5
PAGE_SIZE = 50
FLEET_WINDOW_SECONDS = 3600.0
_STATIC = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}


def add_dashboard(app: web.Application, token: str) -> None:
    app[TOKEN] = token
    app[PRICES] = load_prices(app[CONFIG].prices_path())
    r = app.router
    r.add_get("/", jobs_view)
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/fleet", fleet_view)
    r.add_get("/jobs/{id}", job_view)
    r.add_get("/ui/jobs", jobs_fragment)
    r.add_get("/ui/fleet", fleet_fragment)
    r.add_get("/ui/events", list_events)
    r.add_get("/ui/jobs/{id}/events", events)
    r.add_get("/ui/jobs/{id}/panel", job_fragment)
    r.add_get("/ui/jobs/{id}/text", download)
    r.add_post("/ui/jobs/{id}/cancel", cancel)
    r.add_post("/ui/jobs/{id}/retry", retry)
    r.add_get("/static/{name}", static)


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _csrf(request: web.Request) -> str:
    return csrf_token(request.app[TOKEN], request[SESSION])


async def _check_form(request: web.Request) -> None:
    """A state-changing request: same origin and this session's CSRF token (header or field)."""
    given = request.headers.get("X-CSRF-Token")
    if given is None:
        given = str((await request.post()).get("csrf", ""))
    if not same_origin(request) or not token_matches(given, _csrf(request)):
        raise web.HTTPForbidden(
            text=json.dumps({"error": "csrf: missing or wrong token"}), content_type="application/json"
        )


async def login_form(request: web.Request) -> web.Response:
    return _html(pages.login_page())


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if not same_origin(request) or not token_matches(str(form.get("token", "")), request.app[TOKEN]):
        return _html(pages.login_page("That is not the server token."), status=401)
    response = _see_other("/")
    set_session_cookie(response, request, new_session(request.app[TOKEN]))
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    await _check_form(request)
    response = _see_other("/login")
    response.del_cookie(COOKIE, path="/")
    return response


def _query(request: web.Request) -> tuple[JobQuery, dict[str, str]]:
    params = {k: request.query.get(k, "").strip() for k in ("state", "model", "q", "sort", "after")}
    states: tuple[State, ...] | None = None
    if params["state"]:
        try:
            states = (State(params["state"]),)
        except ValueError:
            raise _bad_request(f"state: unknown state {params['state']!r}") from None
    sort = params["sort"] or "id"
    if sort not in pages.SORT_KEYS:
        raise _bad_request(f"sort: unknown order {sort!r} (one of {', '.join(sorted(pages.SORT_KEYS))})")
    order = sort.removeprefix("-")
    after_id, after_created = _cursor(params["after"], order)
    query = JobQuery(
        states=states,
        model=params["model"] or None,
        search=params["q"] or None,
        descending=sort.startswith("-"),
        order=order,
        after_id=after_id,
        after_created=after_created,
        limit=PAGE_SIZE + 1,
    )
    return query, params


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _cursor(after: str, order: str) -> tuple[str | None, float | None]:
    """The page's keyset position: an id, or (by creation) ``<created_at>~<id>``."""
    if not after:
        return None, None
    if order == "id":
        return after, None
    created, sep, job_id = after.partition("~")
    try:
        at = float(created)
    except ValueError:
        at = math.nan
    if not sep or not math.isfinite(at):
        raise _bad_request(f"after: not a position in this order: {after!r}")
    return job_id, at


def _next_cursor(job: Job, order: str) -> str:
    return job.id if order == "id" else f"{job.created_at!r}~{job.id}"


async def _jobs_parts(request: web.Request) -> tuple[str, str, str, dict[str, str]]:
    store, prices = request.app[STORE], request.app[PRICES]
    query, params = _query(request)
    found = await store.find_jobs(query)
    page = found[:PAGE_SIZE]
    next_after = _next_cursor(page[-1], query.order) if len(found) > PAGE_SIZE else None
    rows = pages.jobs_rows(page, {job.id: job_spend(prices, job) for job in page})
    return pages.counts_html(await store.counts()), rows, pages.pager(params, next_after), params


async def jobs_view(request: web.Request) -> web.Response:
    counts, rows, pager, params = await _jobs_parts(request)
    return _html(pages.jobs_page(counts, rows, pager, params, _csrf(request)))


async def jobs_fragment(request: web.Request) -> web.Response:
    counts, rows, pager, _ = await _jobs_parts(request)
    return web.json_response({"counts": counts, "rows": rows, "pager": pager})


async def _panel(request: web.Request) -> tuple[Any, tuple[str, str]]:
    store, job_id = request.app[STORE], request.match_info["id"]
    job = await store.get(job_id)
    attempts, history = await store.attempts(job_id), await store.history(job_id)
    return job, pages.job_panel(job, attempts, history, job_spend(request.app[PRICES], job))


async def job_view(request: web.Request) -> web.Response:
    try:
        job, panel = await _panel(request)
    except JobNotFoundError:
        body = (
            f"<h1>No such job</h1><p>No job has the id <code>{escape(request.match_info['id'])}</code>.</p>"
        )
        body += '<p><a href="/">Back to the jobs</a></p>'
        return _html(pages.layout("No such job", body, csrf=_csrf(request), page="job-missing"), status=404)
    return _html(pages.job_page(job, panel, _csrf(request)))


async def job_fragment(request: web.Request) -> web.Response:
    job, panel = await _panel(request)
    return web.json_response({"state": job.state.value, "head": panel[0], "details": panel[1]})


async def download(request: web.Request) -> web.Response:
    job_id = request.match_info["id"]
    text = await request.app[STORE].read_text(job_id)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)
    return web.Response(
        text=text,
        content_type="text/markdown",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{safe}.md"'},
    )


async def cancel(request: web.Request) -> web.Response:
    await _check_form(request)
    job = await request.app[STORE].cancel(request.match_info["id"])
    return web.json_response({"id": job.id, "state": job.state.value})


async def retry(request: web.Request) -> web.Response:
    await _check_form(request)
    job = await request.app[STORE].retry(request.match_info["id"])
    return web.json_response({"id": job.id, "state": job.state.value})


async def _fleet_html(request: web.Request) -> str:
    store = request.app[STORE]
    stats = await store.queue_stats()
    view = await store.fleet(stats.now - FLEET_WINDOW_SECONDS)
    return pages.fleet_panel(view, stats.pauses, stats.pause_reasons)


async def fleet_view(request: web.Request) -> web.Response:
    body = f'<h1>Fleet</h1><div id="fleet" aria-live="polite">{await _fleet_html(request)}</div>'
    body += '<p class="live" id="live-status" aria-live="polite"></p>'
    return _html(pages.layout("Fleet", body, csrf=_csrf(request), page="fleet"))


async def fleet_fragment(request: web.Request) -> web.Response:
    return web.json_response({"fleet": await _fleet_html(request)})


async def list_events(request: web.Request) -> web.StreamResponse:
    """``changed`` (with the counts per state) after store changes, debounced; heartbeats when idle."""
    relay, settings, store = request.app[RELAY], request.app[SETTINGS], request.app[STORE]
    response = web.StreamResponse(status=200, headers=HEADERS)
    await response.prepare(request)
    try:
        await response.write(f"retry: {settings.retry_ms}\n\n".encode())
        seen = relay.changes
        while not relay.closed:
            with anyio.move_on_after(settings.heartbeat_seconds) as idle:
                await relay.next_change(seen)
            if idle.cancelled_caught:
                await response.write(b": heartbeat\n\n")
                continue
            await anyio.sleep(DEBOUNCE_SECONDS)  # coalesce a burst of commits into one event
            seen = relay.changes  # what the read below includes; a later signal sends again
            counts = {state.value: n for state, n in (await store.counts()).items()}
            with anyio.fail_after(settings.send_timeout):
                await response.write(encode_event("changed", {"counts": counts}))
    except (ConnectionResetError, ConnectionError, TimeoutError):
        pass  # the viewer went away (or stopped reading); its EventSource reconnects
    return response


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _STATIC:
        raise web.HTTPNotFound()
    body = resources.files("worker.server").joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=_STATIC[name], headers={"Cache-Control": "no-cache"})
