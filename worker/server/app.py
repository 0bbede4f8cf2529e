"""The aiohttp application: routes, middlewares and settings in one place.

Why aiohttp's server: it is already a dependency (the SDK transport and the simulator use it), it
gives direct control of each streamed write (``StreamResponse.write`` waits for the socket to
drain, which is what bounds a slow viewer's buffer), and it runs on the asyncio loop our anyio
code already uses. Starlette/FastAPI with uvicorn would add three packages for features we do not
need (dependency injection, pydantic models) and hide the write path behind ASGI messages.

CORS is off: no route sends ``Access-Control-Allow-Origin``, so browsers on other origins cannot
read responses. Access logs carry the method, the path (job ids and offsets only: no prompt text
ever travels in a URL), the status and the time; never a header (the token) or a body.
"""

from __future__ import annotations

from aiohttp import web

from jobs.store import Store
from worker.config import Config
from worker.server.auth import PUBLIC_PATHS, auth_middleware
from worker.server.dashboard import add_dashboard
from worker.server.metrics import METRICS_PATH, metrics
from worker.server.openapi import openapi_document
from worker.server.relay import Relay
from worker.server.routes import CONFIG, STORE, add_routes, error_middleware, query_middleware
from worker.server.sse import RELAY, SETTINGS, events

__all__ = ("build_app", "ACCESS_LOG_FORMAT")

#: Method, path and query (job ids, offsets, cursors), status, bytes, seconds: nothing secret.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def build_app(config: Config, store: Store, relay: Relay, token: str) -> web.Application:
    # /metrics needs the token unless [server] metrics_auth = "none" (worker.server.metrics).
    public = PUBLIC_PATHS | {METRICS_PATH} if config.server.metrics_auth == "none" else PUBLIC_PATHS
    app = web.Application(
        client_max_size=config.server.max_body_bytes,
        middlewares=[error_middleware, auth_middleware(token, public), query_middleware],
    )
    app[STORE] = store
    app[CONFIG] = config
    app[RELAY] = relay
    app[SETTINGS] = config.server
    add_routes(app)
    app.router.add_get("/v1/openapi.json", _openapi)
    app.router.add_get("/v1/jobs/{id}/events", events)
    app.router.add_get(METRICS_PATH, metrics)
    add_dashboard(app, token)
    return app
