"""The PostgreSQL backend, for fleets: the same ``Store`` contract as SQLite, over psycopg 3.

- ``store``: :class:`PostgresStore`, the contract carried out in SQL transactions;
- ``sql``: every statement it runs, by name;
- ``rows``: PostgreSQL-only row conversions (``bytea`` chunks, ``jsonb``) beside ``jobs.rows``;
- ``schema``: versioned migrations and the NOTIFY channels;
- ``connector``: the connection pool, its retries and the first-call migration;
- ``listen``: the LISTEN connection that wakes idle workers at once.
"""

from jobs.postgres.store import MISSING_MESSAGE, PostgresStore

__all__ = ("MISSING_MESSAGE", "PostgresStore")
