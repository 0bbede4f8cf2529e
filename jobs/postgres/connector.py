"""The PostgreSQL transport: a connection pool, retries, error translation, the schema on first use.

:mod:`jobs.postgres.store` holds the queue's semantics and asks this module to "run this function in a
transaction", as procrastinate's store talks to its connector. Everything about connections lives
here:

* **Bounded waits.** A call waits at most ``timeout`` seconds for a pooled connection, and at most
  three times that in all, then raises :class:`~jobs.errors.StoreError`; the worker pool treats
  that as transient and tries again later. ``psycopg_pool`` reconnects in the background with
  backoff while the server is away.
* **Retries that cannot apply twice.** A connection lost before COMMIT was sent (PostgreSQL
  restarting, a pooled connection the server closed) rolled the transaction back, so it is retried
  on a fresh connection after discarding the pool's dead ones. A connection lost during COMMIT is
  not retried, since it may have committed: the caller gets a ``StoreError``. Reads always retry.
* **Driver errors become** ``StoreError`` here, with the server named but never the password.
* **Schema.** The first call applies pending automatic migrations (:mod:`jobs.postgres.schema`),
  unless the store was opened for reading only: then a database without the schema raises
  :class:`~jobs.errors.NoQueueError` and nothing is created.
* **One clear line when the server cannot be reached at all.** Before the pool opens, one direct
  connection is tried: if it fails (no server, a wrong password, a database that does not exist)
  the caller gets that reason at once, instead of the pool's retries and warnings for seconds
  about something no retry can fix. Once the store has worked, outages are waited out as above.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import anyio
import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from jobs.errors import NoQueueError, StoreError
from jobs.postgres import schema
from jobs.postgres.listen import Listener

__all__ = ("Connector", "Connection")

T = TypeVar("T")
Connection = psycopg.AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Connection]

log = structlog.get_logger("jobs.postgres")

#: Tries of one call when the connection is lost before anything was applied.
_TRIES = 3
#: Settings added to the user's connection string unless it sets them.
_DEFAULTS: dict[str, str | int] = {
    "connect_timeout": 5,
    "application_name": "longform-worker",
    "keepalives_idle": 10,
}


class Connector:
    """Pooled connections to one database, opened on first use and closed by :meth:`close`."""

    def __init__(
        self,
        conninfo: str,
        now: Callable[[], float],
        *,
        max_size: int,
        timeout: float,
        auto_migrate: bool,
        require_schema: bool = False,
    ) -> None:
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            reason = str(exc).strip()
            raise StoreError(f"queue url: not a valid PostgreSQL connection string ({reason})") from None
        self.conninfo = make_conninfo(conninfo, **{k: v for k, v in _DEFAULTS.items() if k not in params})
        #: host:port/dbname, for messages (never the password).
        self.where = (
            f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
        )
        self._now = now
        self._max_size = max_size
        self._timeout = timeout
        self._auto_migrate = auto_migrate
        self._require_schema = require_schema
        self._pool: Pool | None = None
        self._migrated = False
        self._closed = False
        self._lock = anyio.Lock()
        self.listener = Listener(self.conninfo, timeout)

    def new_listener(self, channel: str) -> Listener:
        """A LISTEN connection of its own on ``channel``, owned (and closed) by the caller."""
        return Listener(self.conninfo, self._timeout, channel)

    async def run(self, fn: Callable[[Connection], Awaitable[T]], *, transaction: bool = True) -> T:
        """``fn(conn)`` on a pooled connection, in one transaction unless it only reads."""
        return await self._attempt(await self._open(migrate=True), fn, transaction, self._timeout * 3)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One pooled connection in one transaction for a whole block (an enqueue session):
        committed when the block ends, rolled back if it raises. Not retried: a connection lost
        midway raises ``StoreError`` and nothing is applied (or, during COMMIT, it is unknown)."""
        pool = await self._open(migrate=True)
        try:
            async with pool.connection(timeout=self._timeout) as conn, conn.transaction():
                yield conn
        except PoolTimeout as exc:
            raise StoreError(f"postgresql ({self.where}): {await self._why_unreachable(exc)}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"postgresql ({self.where}): {str(exc).strip()}") from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            raise StoreError(f"postgresql ({self.where}): cannot store a value: {exc}") from exc

    async def migrate(self) -> int:
        """Apply every pending migration, automatic or not, without a time limit (a migration
        may rewrite a large table); returns the schema version."""
        version = await self._attempt(
            await self._open(migrate=False),
            lambda conn: schema.migrate(conn, self._now, automatic_only=False, where=self.where),
            False,
            None,
        )
        self._migrated = True
        return version

    async def close(self) -> None:
        """Idempotent; later calls raise ``StoreError``."""
        self._closed = True
        async with self._lock:
            pool, self._pool = self._pool, None
            if pool is not None:
                await pool.close()
        await self.listener.close()

    async def _open(self, *, migrate: bool) -> Pool:
        if self._closed:
            raise StoreError("the job store is closed")
        if self._pool is not None and (self._migrated or not migrate):
            return self._pool
        async with self._lock:
            if self._closed:
                raise StoreError("the job store is closed")
            if self._pool is None:
                await self._probe()
                self._pool = AsyncConnectionPool(
                    self.conninfo,
                    connection_class=Connection,
                    kwargs={"autocommit": True, "row_factory": dict_row},
                    min_size=1,
                    max_size=self._max_size,
                    timeout=self._timeout,
                    name="longform-store",
                    open=False,
                )
                await self._pool.open(wait=False)
            if migrate and not self._migrated:
                if self._auto_migrate:
                    await self._attempt(self._pool, self._migrate_automatic, False, self._timeout * 3)
                elif self._require_schema:
                    limit = self._timeout * 3
                    version = await self._attempt(self._pool, schema.current_version, False, limit)
                    if version == 0:
                        raise NoQueueError(
                            f"no queue at postgresql ({self.where}): the database has no job tables "
                            "(`enqueue` or `migrate` creates them)"
                        )
                self._migrated = True
            return self._pool

    async def _migrate_automatic(self, conn: Connection) -> int:
        return await schema.migrate(conn, self._now, automatic_only=True, where=self.where)

    async def _attempt(
        self, pool: Pool, fn: Callable[[Connection], Awaitable[T]], transaction: bool, limit: float | None
    ) -> T:
        delay = 0.05
        for attempt in range(1, _TRIES + 1):
            applied = False
            try:
                with anyio.fail_after(limit):
                    async with pool.connection() as conn:
                        if not transaction:
                            return await fn(conn)
                        async with conn.transaction():
                            result = await fn(conn)
                            applied = True  # from here, a lost connection leaves COMMIT unknown
                        return result
            except PoolTimeout as exc:
                raise StoreError(f"postgresql ({self.where}): {await self._why_unreachable(exc)}") from exc
            except TimeoutError as exc:
                raise StoreError(f"postgresql ({self.where}): no answer within {limit:g} s") from exc
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if applied or attempt == _TRIES:
                    raise StoreError(f"postgresql ({self.where}): {str(exc).strip()}") from exc
                log.info("store_retry", error=str(exc).strip(), attempt=attempt)
                with contextlib.suppress(psycopg.Error):
                    await pool.check()  # discard every pooled connection the server has closed
                await anyio.sleep(delay)
                delay *= 4
            except psycopg.Error as exc:
                raise StoreError(f"postgresql ({self.where}): {str(exc).strip()}") from exc
            except (UnicodeEncodeError, OverflowError) as exc:
                raise StoreError(f"postgresql ({self.where}): cannot store a value: {exc}") from exc
        raise AssertionError("unreachable")

    async def _probe(self) -> None:
        """One direct connection before the pool exists: a server that cannot be reached, or
        refuses us, is reported at once in one line (see the module docstring)."""
        try:
            with anyio.fail_after(self._timeout):
                conn = await psycopg.AsyncConnection.connect(self.conninfo)
                await conn.close()
        except (psycopg.Error, TimeoutError) as exc:
            reason = " ".join(str(exc).split()) or f"no answer within {self._timeout:g} s"
            if "does not exist" in reason:
                raise NoQueueError(f"no queue at postgresql ({self.where}): {reason}") from exc
            raise StoreError(f"postgresql ({self.where}): cannot connect: {reason}") from exc

    async def _why_unreachable(self, exc: Exception) -> str:
        """The pool only says it timed out: one direct attempt tells the user why."""
        try:
            with anyio.fail_after(5):
                conn = await psycopg.AsyncConnection.connect(self.conninfo)
                await conn.close()
        except (psycopg.Error, TimeoutError) as reason:
            return f"cannot connect: {str(reason).strip() or type(reason).__name__}"
        return f"no pooled connection free within {self._timeout:g} s ({exc})"
