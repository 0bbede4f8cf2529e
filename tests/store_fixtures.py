"""Fixtures shared by every test that needs a job store, and a fake clock.

``make_store`` is parametrised over the backends, so a test written once against the
:class:`~jobs.store.Store` Protocol runs on each of them. To add a backend, add its name to
``BACKENDS`` and an opener to ``_OPENERS``; a backend that needs a server should ``pytest.skip``
in its opener when the server is not configured.

PostgreSQL: the server is ``TEST_PG_DSN`` (default ``postgresql://root@127.0.0.1:5432/postgres``,
a superuser, since tests create databases). As procrastinate does, the schema is migrated once per
session into a template database, and every store gets a fresh database copied from it (``CREATE
DATABASE … TEMPLATE``, tens of milliseconds), dropped when its test ends. A server that cannot be
reached skips the PostgreSQL tests, unless ``REQUIRE_POSTGRES=1`` (CI sets it): then they fail.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import pytest_asyncio

from jobs.models import JobSpec, Message
from jobs.sqlite import SQLiteStore
from jobs.store import Clock, Store

__all__ = (
    "BACKENDS",
    "FakeClock",
    "StoreFactory",
    "make_spec",
    "make_store",
    "PostgresServer",
    "postgres_server",
    "postgres_url",
    "drop_postgres_template",
)


class StoreFactory(Protocol):
    """Builds a fresh, empty store; ``clock=None`` means real time."""

    def __call__(self, clock: Clock | None = None) -> Awaitable[Store]: ...


#: Opens one fresh store of a backend: (a folder private to the test, its number in the test, clock).
Opener = Callable[[Path, int, Clock], Awaitable[Store]]

#: The parameters of ``make_store``, one per backend.
BACKENDS = ["sqlite", "postgres"]


class FakeClock:
    """A clock that moves only when told, so lease expiry is tested without waiting.

    Calling it returns the current fake time (epoch seconds), as ``time.time`` does.
    """

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds``; returns the new time."""
        self.now += seconds
        return self.now

    def set(self, now: float) -> None:
        self.now = now


def make_spec(job_id: str, prompt: str = "Write.", **overrides: Any) -> JobSpec:
    """A valid spec with small defaults; keyword arguments override any field."""
    fields: dict[str, Any] = {
        "id": job_id,
        "messages": (Message("user", prompt),),
        "model": "claude-test",
        "max_tokens": 1024,
        "output_budget": 4096,
        "max_attempts": 3,
    }
    fields.update(overrides)
    return JobSpec(**fields)


async def _open_sqlite(folder: Path, number: int, clock: Clock) -> Store:
    return SQLiteStore(folder / f"store-{number}" / "jobs.db", clock=clock)


# -- PostgreSQL --------------------------------------------------------------------------------


class PostgresServer:
    """The test server: a template database holding the current schema, built on first use, and
    fresh databases copied from it. Connections are made per call, so one instance serves every
    test's event loop."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.template: str | None = None
        self.created: list[str] = []
        self._error: str | None = None
        self._checked = False

    async def check(self) -> None:
        """Skip (or, with ``REQUIRE_POSTGRES=1``, fail) the calling test if the server is away."""
        if not self._checked:
            self._checked = True
            try:
                import psycopg
            except ImportError:
                self._error = "the PostgreSQL driver is not installed: pip install -e '.[dev]'"
            else:
                try:
                    conn = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=3)
                    await conn.close()
                except psycopg.Error as exc:
                    self._error = f"PostgreSQL at TEST_PG_DSN={self.dsn!r} is not reachable: {exc}"
        if self._error is not None:
            if os.environ.get("REQUIRE_POSTGRES") == "1":
                pytest.fail(f"{self._error} (and REQUIRE_POSTGRES=1)", pytrace=False)
            pytest.skip(self._error)

    def url(self, dbname: str) -> str:
        """A ``postgresql://`` URL for ``dbname`` on this server (configs take URLs)."""
        if self.dsn.startswith(("postgresql://", "postgres://")):
            parts = urlsplit(self.dsn)
            return urlunsplit(parts._replace(path=f"/{dbname}"))
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(self.dsn)
        auth = quote(str(params.get("user", "")))
        if params.get("password"):
            auth += ":" + quote(str(params["password"]))
        host = f"{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}"
        return f"postgresql://{auth}@{host}/{dbname}" if auth else f"postgresql://{host}/{dbname}"

    async def new_database(self, *, empty: bool = False) -> str:
        """A new database (with the schema, or ``empty``); returns its URL."""
        await self.check()
        from jobs.postgres import PostgresStore

        if self.template is None and not empty:
            template = f"longform_template_{secrets.token_hex(4)}"
            await self._admin(f'CREATE DATABASE "{template}"')
            store = PostgresStore(self.url(template))
            try:
                await store.migrate()
            finally:
                await store.close()
            self.template = template
        name = f"longform_test_{secrets.token_hex(6)}"
        source = "template0" if empty else self.template
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        self.created.append(name)
        return self.url(name)

    async def drop_created(self) -> None:
        names, self.created = self.created, []
        for name in names:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _admin(self, statement: str) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await conn.execute(statement.encode())


#: The one test server of the session.
postgres_server = PostgresServer(os.environ.get("TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/postgres"))


async def _open_postgres(folder: Path, number: int, clock: Clock) -> Store:
    from jobs.postgres import PostgresStore

    return PostgresStore(await postgres_server.new_database(), clock=clock)


@pytest_asyncio.fixture
async def postgres_url() -> AsyncIterator[str]:
    """The URL of a fresh database with the current schema, dropped after the test."""
    try:
        yield await postgres_server.new_database()
    finally:
        await postgres_server.drop_created()


@pytest.fixture(scope="session", autouse=True)
def drop_postgres_template() -> Iterator[None]:
    """Drop the session's template database (and anything a failed test left) at the end."""
    yield
    names = [*postgres_server.created, *([postgres_server.template] if postgres_server.template else [])]
    if names:
        import psycopg

        with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


_OPENERS: dict[str, Opener] = {
    "sqlite": _open_sqlite,
    "postgres": _open_postgres,
}
_MARKS: dict[str, pytest.MarkDecorator] = {"postgres": pytest.mark.postgres}


@pytest_asyncio.fixture(params=[pytest.param(name, marks=_MARKS.get(name, ())) for name in BACKENDS])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """An async factory ``await make_store(clock=None) -> Store``; each call returns a new, empty
    store, and every store is closed (and its database dropped) when the test ends."""
    opener = _OPENERS[request.param]
    stores: list[Store] = []

    async def factory(clock: Clock | None = None) -> Store:
        store = await opener(tmp_path, len(stores), clock or time.time)
        stores.append(store)
        return store

    try:
        yield factory
    finally:
        for store in stores:
            await store.close()
        if request.param == "postgres":
            await postgres_server.drop_created()
