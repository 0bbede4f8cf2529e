"""Fixtures shared by every test that needs a job store, and a fake clock.

``make_store`` is parametrised over the backends, so a test written once against the
:class:`~jobs.store.Store` Protocol runs on each of them. To add a backend, add its name to
``BACKENDS`` and an opener to ``_OPENERS`` (see the comment there); a backend that needs a server
should ``pytest.skip`` in its opener when the server is not configured.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
import pytest_asyncio

from jobs.models import JobSpec, Message
from jobs.sqlite import SQLiteStore
from jobs.store import Clock, Store

__all__ = ("BACKENDS", "FakeClock", "StoreFactory", "make_spec", "make_store")


class StoreFactory(Protocol):
    """Builds a fresh, empty store; ``clock=None`` means real time."""

    def __call__(self, clock: Clock | None = None) -> Awaitable[Store]: ...


#: Opens one fresh store of a backend: (a folder private to the test, its number in the test, clock).
Opener = Callable[[Path, int, Clock], Awaitable[Store]]

#: The parameters of ``make_store``, one per backend.
BACKENDS = ["sqlite"]


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


_OPENERS: dict[str, Opener] = {
    "sqlite": _open_sqlite,
    # "postgres": _open_postgres,  -- add it here and "postgres" to BACKENDS: the opener creates a
    # database per store (e.g. from a template, skipping without TEST_PG_DSN) and returns a
    # PostgresStore on it.
}


@pytest_asyncio.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """An async factory ``await make_store(clock=None) -> Store``; each call returns a new, empty
    store, and every store is closed when the test ends."""
    opener = _OPENERS[request.param]
    stores: list[Store] = []

    async def factory(clock: Clock | None = None) -> Store:
        store = await opener(tmp_path, len(stores), clock or time.time)
        stores.append(store)
        return store

    yield factory
    for store in stores:
        await store.close()
