"""The dashboard's browser session: the server token, traded once for an HttpOnly cookie.

A browser's ``EventSource`` cannot send an ``Authorization`` header (../shared/SERVICE.md §6.2), so
``POST /login`` checks the token (in constant time) and sets a cookie that authenticates the
dashboard's pages and its event streams; the JSON API under ``/v1`` keeps its bearer token and
never accepts the cookie. The cookie holds no secret: ``<issued>-<nonce>.<HMAC of both under the
token>``, so a server restarted with the same token accepts it, a new token voids every session,
and it expires ``SESSION_SECONDS`` after login. It is ``HttpOnly``, ``SameSite=Strict`` and
``Secure`` when the request came over https (directly, or ``X-Forwarded-Proto: https`` from a
proxy).

Forms that change state (cancel, retry, logout) carry a per-session CSRF token (an HMAC of the
session's nonce) in a header or field, and a request whose ``Origin`` names another host is refused:
SameSite=Strict alone already keeps other sites' forms from sending the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

from aiohttp import web

__all__ = (
    "COOKIE",
    "SESSION_SECONDS",
    "SESSION",
    "is_browser_path",
    "browser_gate",
    "new_session",
    "session_nonce",
    "csrf_token",
    "same_origin",
    "set_session_cookie",
    "token_matches",
)

COOKIE = "longform_session"
SESSION_SECONDS = 7 * 24 * 3600
#: The request key holding the session nonce once the gate has checked the cookie.
SESSION = web.RequestKey("dashboard_session", str)

_PAGES = frozenset({"/", "/login", "/logout", "/fleet"})
_PREFIXES = ("/jobs/", "/ui/", "/static/")
_PUBLIC = frozenset({"/login"})


def is_browser_path(path: str) -> bool:
    return path in _PAGES or path.startswith(_PREFIXES)


def _sign(token: str, message: str) -> str:
    return hmac.new(token.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    nonce = f"{int(now if now is not None else time.time())}-{secrets.token_urlsafe(12)}"
    return f"{nonce}.{_sign(token, 'session:' + nonce)}"


def session_nonce(request: web.Request, token: str, now: float | None = None) -> str | None:
    """The nonce of a valid, unexpired session cookie, else None."""
    nonce, _, signature = request.cookies.get(COOKIE, "").partition(".")
    if not nonce or not signature:
        return None
    if not hmac.compare_digest(
        signature.encode("ascii", "replace"), _sign(token, "session:" + nonce).encode()
    ):
        return None
    issued = nonce.partition("-")[0]
    clock = now if now is not None else time.time()
    if not issued.isdigit() or clock - int(issued) > SESSION_SECONDS:
        return None
    return nonce


def csrf_token(token: str, nonce: str) -> str:
    return _sign(token, "csrf:" + nonce)


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def same_origin(request: web.Request) -> bool:
    """No ``Origin`` (a same-origin GET-less client), or one naming this very host."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.host


def _https(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_session_cookie(response: web.StreamResponse, request: web.Request, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_https(request),
    )


def browser_gate(request: web.Request, token: str) -> web.StreamResponse | None:
    """None to let a dashboard request through (its session nonce stored on the request), else the
    refusal: a redirect to the login page for a page, a 401 for the dashboard's own fetches."""
    if request.path in _PUBLIC or request.path.startswith("/static/"):
        return None
    nonce = session_nonce(request, token)
    if nonce is not None:
        request[SESSION] = nonce
        return None
    if request.path.startswith("/ui/"):
        return web.json_response({"error": "log in first (POST /login)"}, status=401)
    raise web.HTTPSeeOther("/login")
