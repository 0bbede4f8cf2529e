"""The SQLite backend, the embedded default: one file, WAL, claims in ``BEGIN IMMEDIATE``.

- ``store``: :class:`SQLiteStore`, the ``Store`` contract carried out on one file;
- ``sql``: every statement it runs, by name, and the schema with its version;
- ``changes``: the ``PRAGMA data_version`` signal that wakes idle workers and relay readers.
"""

from jobs.sqlite.store import SQLiteStore

__all__ = ("SQLiteStore",)
