"""The SQLite store's two connections to one file, used from worker threads only.

A write connection (WAL, ``BEGIN IMMEDIATE`` transactions, the schema created or migrated on
first use) and a read-only one, each behind a ``CapacityLimiter(1)``: calls from many tasks queue
up asynchronously and never block the event loop, and reads never wait behind writes. Driver
errors become :class:`~jobs.errors.StoreError` here. Kept apart from :mod:`jobs.sqlite.store`,
which holds the queue's semantics, as :mod:`jobs.postgres.connector` is for PostgreSQL.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from jobs.errors import NoQueueError, StoreError
from jobs.sqlite import sql
from jobs.store import Access

__all__ = ("BUSY_TIMEOUT_SECONDS", "MIN_SQLITE", "Connections", "transaction")

T = TypeVar("T")

#: How long a writer waits for another process's write transaction before giving up.
BUSY_TIMEOUT_SECONDS = 1.5
#: UPDATE … FROM (3.33) and the JSON functions built in (3.38 makes them default; most builds had them).
MIN_SQLITE = (3, 35, 0)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the write lock first, so two processes never both read a
    job as claimable and both claim it, and never deadlock upgrading a read lock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Connections:
    """The write and read connections of one store; opened on first use, closed by ``close``."""

    def __init__(self, path: str, access: Access) -> None:
        self.path = path
        self._access: Access = access
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self.limiter = anyio.CapacityLimiter(1)
        self._read_conn: sqlite3.Connection | None = None
        self._read_limiter = anyio.CapacityLimiter(1)

    async def run_holding(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in a worker thread, for a caller that already holds ``limiter``
        (an enqueue session)."""
        return await anyio.to_thread.run_sync(self._call, fn, args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a worker thread, one call at a time."""
        return await anyio.to_thread.run_sync(self._call, fn, args, limiter=self.limiter)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the read-only ``fn(conn, *args)`` on the read connection (the write connection for
        ``:memory:``, which is private to one connection). The write connection opens first, so
        the schema exists before anything is read."""
        if self.path == ":memory:":
            return await self.run(fn, *args)
        if self._read_conn is None and self._conn is None:
            await self.run(no_op)
        return await anyio.to_thread.run_sync(self._call_read, fn, args, limiter=self._read_limiter)

    def _call_read(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._closed:
            raise StoreError("the job store is closed")
        try:
            if self._read_conn is None:
                conn = sqlite3.connect(
                    self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
                )
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA query_only = ON")
                self._read_conn = conn
            return fn(self._read_conn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite ({self.path}): {exc}") from exc

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._closed:
            raise StoreError("the job store is closed")
        try:
            if self._conn is None:
                self._conn = self._connect()
            return fn(self._conn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite ({self.path}): {exc}{permission_hint(self.path, exc)}") from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            # Values SQLite cannot hold (lone surrogates, integers past 64 bits): nothing was written.
            raise StoreError(f"sqlite ({self.path}): cannot store a value: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"this Python's SQLite is {sqlite3.sqlite_version}; the job store needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer (UPDATE … FROM and JSON functions)"
            )
        if self._access != "create":
            self._check_exists()
        if self._access == "read":
            return self._connect_read_only()
        if self._access == "create" and self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of {self.path}: {exc.strerror}") from exc
        # isolation_level=None: no implicit transactions; we issue BEGIN IMMEDIATE ourselves.
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            self._enable_wal(conn)
            for pragma in sql.PRAGMAS:
                conn.execute(pragma)
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_exists(self) -> None:
        if not Path(self.path).is_file():
            what = "a folder, not a database file" if Path(self.path).is_dir() else "no such file"
            raise NoQueueError(f"no queue at {self.path} ({what}; `enqueue` or `migrate` creates one)")

    def _connect_read_only(self) -> sqlite3.Connection:
        """An existing queue, read-only: commands that only read never create a file, a folder or
        a table where a mistyped URL points."""
        uri = f"{Path(self.path).resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(
            uri, uri=True, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                raise NoQueueError(f"no queue at {self.path} (the file holds no job tables)")
            if version != sql.SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, this program reads {sql.SCHEMA_VERSION}: "
                    + ("upgrade the program" if version > sql.SCHEMA_VERSION else "run `migrate` first")
                )
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL. Processes opening a new file at once race for this switch, and
        SQLite answers SQLITE_BUSY at once here instead of calling the busy handler: so retry,
        with backoff, for as long as ``busy_timeout`` would wait (this runs in a worker thread)."""
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        delay = 0.002
        while True:
            try:
                mode = str(conn.execute(sql.ENABLE_WAL).fetchone()[0]).lower()
                break
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        if mode != "wal" and self.path != ":memory:":
            raise StoreError(f"{self.path}: cannot use write-ahead logging (journal mode is {mode})")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > sql.SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this program's "
                    f"{sql.SCHEMA_VERSION}: upgrade the program"
                )
            if version == 0 and self._access != "create":
                raise NoQueueError(f"no queue at {self.path} (the file holds no job tables)")
            if version == sql.SCHEMA_VERSION:
                return
            for target, statements in sql.MIGRATIONS:
                if version < target:
                    for statement in statements:
                        conn.execute(statement)
                    version = target
            conn.execute(f"PRAGMA user_version = {sql.SCHEMA_VERSION}")

    async def close(self) -> None:
        """Close the connection. Idempotent; later calls raise ``StoreError``."""
        await anyio.to_thread.run_sync(self._close, limiter=self.limiter)

    def _close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None


def permission_hint(path: str, exc: sqlite3.Error) -> str:
    """SQLite says "unable to open database file" or "attempt to write a readonly database"
    without naming the cause; when it is a permission, say which."""
    text = str(exc)
    if path == ":memory:" or ("unable to open" not in text and "readonly" not in text):
        return ""
    file, folder = Path(path), Path(path).parent
    if file.exists() and not os.access(file, os.R_OK):
        return f" (permission denied: {path} is not readable by this user)"
    if file.exists() and not os.access(file, os.W_OK):
        return f" (permission denied: {path} is read-only for this user)"
    if folder.exists() and not os.access(folder, os.W_OK):
        return f" (permission denied: its folder {folder} is not writable; SQLite needs it for -wal, -shm)"
    return ""


def no_op(conn: sqlite3.Connection) -> None:
    return None
