"""Bearer-token auth for every API route but ``GET /healthz``; the dashboard's pages and streams
use the session cookie of :mod:`worker.server.session` instead.

The token comes from ``[server] token`` (or ``LONGFORM_SERVER_TOKEN``). With none configured, one is
generated at first start and stored with mode 0600 next to the queue (the SQLite file's folder, or
the config file's folder for PostgreSQL), and printed once; later starts read it back. Tokens are
compared with :func:`hmac.compare_digest`, so the time a refusal takes says nothing about how much
of a guess was right. A refusal is a 401 with ``WWW-Authenticate: Bearer`` (RFC 6750).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from jobs.errors import ConfigError
from worker.config import Config
from worker.server.session import browser_gate, is_browser_path

__all__ = ("ServerToken", "resolve_token", "token_path", "auth_middleware", "PUBLIC_PATHS", "TOKEN_FILE")

#: Routes that answer without a token: a liveness probe must not need a secret.
PUBLIC_PATHS = frozenset({"/healthz"})
TOKEN_FILE = "server-token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ServerToken:
    value: str
    #: Where a generated token is kept (None when it came from the config).
    path: Path | None = None
    #: True only on the start that generated it: the one time it is printed.
    generated: bool = False


def token_path(config: Config) -> Path:
    """Next to the queue: the SQLite file's folder, else the config file's (or the current) folder."""
    url = config.queue_url()
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix) :] != ":memory:":
        return Path(url[len(prefix) :]).resolve().parent / TOKEN_FILE
    base = config.source.parent if config.source is not None else Path.cwd()
    return base / TOKEN_FILE


def resolve_token(config: Config) -> ServerToken:
    """The configured token, else the stored one, else a new one stored with mode 0600."""
    if config.server.token:
        return ServerToken(config.server.token)
    path = token_path(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return ServerToken(_read_token(path), path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot store the generated server token: {exc.strerror}") from None
    value = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(value + "\n")
    return ServerToken(value, path, generated=True)


def _read_token(path: Path) -> str:
    try:
        value = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the server token: {exc}") from None
    if not value:
        raise ConfigError(f"{path}: the stored server token is empty (delete the file to make a new one)")
    return value


def _unauthorized(error: str | None) -> web.Response:
    challenge = 'Bearer realm="longform-worker"'
    if error:
        challenge += f', error="{error}"'
    return web.json_response(
        {"error": "a valid 'Authorization: Bearer <token>' header is required"},
        status=401,
        headers={"WWW-Authenticate": challenge},
    )


def auth_middleware(token: str, public: frozenset[str] = PUBLIC_PATHS) -> Middleware:
    """Refuse every request without the token, except to the ``public`` paths."""
    expected = token.encode("utf-8")

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public:
            return await handler(request)
        if is_browser_path(request.path):  # the dashboard: its session cookie, never the bearer token
            refusal = browser_gate(request, token)
            return refusal if refusal is not None else await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return _unauthorized(None)
        if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected):
            return _unauthorized("invalid_token")
        return await handler(request)

    return check
