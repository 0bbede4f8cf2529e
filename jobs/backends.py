"""Opening a store by its URL: the one place that knows which backend a scheme names.

Kept apart from the ``Store`` contract (``jobs.store``) so that the contract imports no backend and
each backend imports only the contract: the dependencies form a tree, not a cycle. Drivers are
imported on use, so the PostgreSQL extra is needed only by those who use it.
"""

from __future__ import annotations

from jobs.errors import ConfigError
from jobs.store import Access, Clock, Store

__all__ = ("open_store",)


def open_store(url: str, *, clock: Clock | None = None, access: Access = "create") -> Store:
    """Open the backend that ``url``'s scheme names, for ``access``. Drivers are imported
    lazily, so the PostgreSQL extra is only needed by those who use it."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigError(f"queue url {url!r} has no scheme: use sqlite:///path.db or postgresql://…")
    if scheme == "sqlite":
        from jobs.sqlite import SQLiteStore

        return SQLiteStore.from_url(url, clock=clock, access=access)
    if scheme in ("postgresql", "postgres"):
        from jobs.postgres import PostgresStore

        return PostgresStore.from_url(url, clock=clock, create=access == "create")
    raise ConfigError(f"queue url scheme {scheme!r} is not supported: use sqlite:// or postgresql://")
