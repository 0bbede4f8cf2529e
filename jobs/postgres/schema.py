"""The PostgreSQL schema, as an ordered list of versioned migrations, and how they are applied.

* **Versioned.** ``schema_version`` holds one row per applied migration (version, description,
  time). The schema's version is its highest row; this program knows :data:`SCHEMA_VERSION`.
* **Applied by the project.** :func:`migrate` applies every missing migration, in order, in one
  transaction (PostgreSQL's DDL is transactional: a failed migration leaves nothing behind).
  ``python -m worker migrate`` calls it; so does every store on its first use, for migrations
  marked ``automatic``.
* **No races.** The whole check-and-apply runs under a transaction-level advisory lock, so a fleet
  of workers starting together applies each migration exactly once: the first takes the lock and
  migrates, the others wait for it and then find the schema current.
* **Safe at start-up.** A migration that cannot run beside live workers (rewriting a large table,
  say) is declared with ``automatic=False``: workers then refuse to start with a message naming
  ``python -m worker migrate``, instead of locking the queue for minutes. A database newer than
  the program is refused too, since an old worker could corrupt a schema it does not know.

Design notes for version 1 (the SQLite schema's shape, :mod:`jobs.sqlite.sql`, with PostgreSQL
types):

* Times are ``double precision`` epoch seconds, written from the store's injected clock, never
  ``now()``, so both backends compare and return the same floats.
* ``jobs.id`` uses the ``"C"`` collation, so ``list_jobs`` pages in byte order as SQLite does.
  ``seq`` (an identity) breaks ties in claim order the way SQLite's rowid does.
* Chunk text is ``bytea`` (UTF-8): PostgreSQL ``text`` cannot hold NUL, which model output and
  the contract's hypothesis test may contain. ``char_offset`` orders a job's chunks (each
  accepted chunk starts where the last ended, so it is unique). Since version 8 an ended job's
  chunks are one row at offset 0 (the ``jobs_ended`` trigger).
* Heartbeats must stay cheap: every checkpoint updates ``committed_chars``, ``lease_expires_at``
  and ``updated_at``, so none of those is indexed; with ``fillfactor = 80`` those updates are HOT
  (no index writes). Expired leases are found through a partial index over running jobs, a set
  no larger than the fleet's concurrency.
* Triggers send ``NOTIFY longform_jobs`` when jobs are inserted or return to the queue, so
  idle workers wake at once (:meth:`jobs.postgres.PostgresStore.wait_for_jobs`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs.errors import StoreError
from jobs.models import USAGE_FIELDS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = (
    "Migration",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "NOTIFY_CHANNEL",
    "CHANGES_CHANNEL",
    "migrate",
    "current_version",
)

#: The channel idle workers LISTEN on.
NOTIFY_CHANNEL = "longform_jobs"
#: The channel live relays LISTEN on: text was committed, or a job changed state or attempt.
CHANGES_CHANNEL = "longform_changes"

#: The advisory lock key that serialises migrations (a stable 31-bit hash of a fixed name).
LOCK_KEY = zlib.crc32(b"longform-worker schema migrations") & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema's history. Never edit a released migration: add the next one."""

    version: int
    description: str
    statements: tuple[str, ...]
    #: Applied by any worker on start-up. False for steps that must not run beside live workers.
    automatic: bool = True


_V1 = (
    """
    CREATE TABLE jobs (
        seq                         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        id                          text COLLATE "C" PRIMARY KEY,
        messages                    text NOT NULL,
        system                      text,
        model                       text NOT NULL,
        max_tokens                  bigint NOT NULL,
        output_budget               bigint NOT NULL,
        max_attempts                bigint NOT NULL,
        priority                    bigint NOT NULL,
        requested_run_at            double precision,
        metadata                    text NOT NULL,
        state                       text NOT NULL
            CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
        run_at                      double precision NOT NULL,
        attempts                    bigint NOT NULL DEFAULT 0,
        failures                    bigint NOT NULL DEFAULT 0,
        committed_chars             bigint NOT NULL DEFAULT 0,
        lease_owner                 text,
        lease_token                 text,
        lease_expires_at            double precision,
        input_tokens                bigint NOT NULL DEFAULT 0,
        output_tokens               bigint NOT NULL DEFAULT 0,
        cache_creation_input_tokens bigint NOT NULL DEFAULT 0,
        cache_read_input_tokens     bigint NOT NULL DEFAULT 0,
        last_error                  text,
        stop_reason                 text,
        created_at                  double precision NOT NULL,
        updated_at                  double precision NOT NULL,
        started_at                  double precision,
        finished_at                 double precision
    ) WITH (fillfactor = 80)
    """,
    # Claim order over queued jobs only: the claim walks it and stops at its limit.
    "CREATE INDEX jobs_claim_order ON jobs (priority DESC, run_at, created_at, seq) WHERE state = 'queued'",
    # next_due: MIN(run_at) of queued jobs without a scan.
    "CREATE INDEX jobs_due ON jobs (run_at) WHERE state = 'queued'",
    # Running jobs (for lease expiry); indexes nothing a heartbeat changes, so heartbeats stay HOT.
    "CREATE INDEX jobs_running ON jobs (seq) WHERE state = 'running'",
    """
    CREATE TABLE chunks (
        job_id      text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        char_offset bigint NOT NULL,
        attempt     bigint NOT NULL,
        text        bytea NOT NULL,
        created_at  double precision NOT NULL,
        PRIMARY KEY (job_id, char_offset)
    )
    """,
    """
    CREATE TABLE attempts (
        job_id                      text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        number                      bigint NOT NULL,
        worker                      text NOT NULL,
        started_at                  double precision NOT NULL,
        ended_at                    double precision,
        outcome                     text,
        resume_mode                 text,
        input_tokens                bigint NOT NULL DEFAULT 0,
        output_tokens               bigint NOT NULL DEFAULT 0,
        cache_creation_input_tokens bigint NOT NULL DEFAULT 0,
        cache_read_input_tokens     bigint NOT NULL DEFAULT 0,
        requests                    bigint NOT NULL DEFAULT 0,
        chars_at_start              bigint NOT NULL,
        chars_at_end                bigint,
        stop_reason                 text,
        error                       text,
        time_to_first_token         double precision,
        PRIMARY KEY (job_id, number)
    )
    """,
    """
    CREATE TABLE transitions (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id     text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        at         double precision NOT NULL,
        from_state text,
        to_state   text NOT NULL,
        reason     text NOT NULL,
        attempt    bigint
    )
    """,
    "CREATE INDEX transitions_job ON transitions (job_id, id)",
    """
    CREATE TABLE buckets (
        key           text PRIMARY KEY,
        requests      double precision NOT NULL,
        input_tokens  double precision NOT NULL,
        output_tokens double precision NOT NULL,
        updated_at    double precision NOT NULL,
        paused_until  double precision NOT NULL
    )
    """,
    # Wake idle workers: one notification per statement that inserted jobs, and one per
    # transaction that puts jobs back in the queue (PostgreSQL folds identical notifications).
    f"""
    CREATE FUNCTION jobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM inserted_jobs) THEN
            PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
        END IF;
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE FUNCTION jobs_notify_requeued() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER jobs_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_inserted()
    """,
    """
    CREATE TRIGGER jobs_requeued AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.state = 'queued' AND OLD.state <> 'queued')
    EXECUTE FUNCTION jobs_notify_requeued()
    """,
)

#: The token economy: a job's cost cap and prompt-cache mode, and the output accounting of
#: ``jobs.models.Usage`` on jobs and attempts. Adding nullable or defaulted columns rewrites
#: nothing (PostgreSQL 11+ stores a constant default in the catalogue), so it runs beside workers.
_ECONOMY = (
    "ALTER TABLE jobs ADD COLUMN max_cost_usd double precision",
    "ALTER TABLE jobs ADD COLUMN prompt_cache text NOT NULL DEFAULT '5m'",
    *(
        f"ALTER TABLE {table} ADD COLUMN {column} bigint NOT NULL DEFAULT 0"
        for table in ("jobs", "attempts")
        for column in ("estimated_output_tokens", "document_tokens", "repeated_tokens")
    ),
)

# Live relays: one notification per statement that commits text or changes a job's state or
# attempt (statement-level, empty payload, so PostgreSQL folds a transaction's into one). The
# relay then re-reads only the jobs it watches. Heartbeat-only commits insert no chunk and update
# neither column, so they notify nobody.
_RELAY_CHANGES = (
    f"""
    CREATE FUNCTION jobs_notify_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{CHANGES_CHANNEL}', '');
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER chunks_committed AFTER INSERT ON chunks
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_changed()
    """,
    """
    CREATE TRIGGER jobs_changed AFTER UPDATE OF state, attempts ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_changed()
    """,
)

#: The columns ``job_totals`` sums per group (``jobs`` counts rows).
_SUMMED = ("committed_chars", *USAGE_FIELDS)
_TOTALS = ("jobs", *_SUMMED, "wasted_output_tokens")
#: The groups of migration 5, before jobs had a mode; migration 9 adds it.
_GROUP_V5 = "state, model, prompt_cache"
_GROUP = f"{_GROUP_V5}, mode"


def _sums(rows: str, sign: str, group: str) -> str:
    """One side of a change: each row of the transition table ``rows`` counted with ``sign``."""
    columns = ", ".join(
        (
            f"{sign}1 AS jobs",
            *(f"{sign}{c} AS {c}" for c in _SUMMED),
            f"{sign}greatest(0, output_tokens - document_tokens) AS wasted_output_tokens",
        )
    )
    return f"SELECT {group}, {columns} FROM {rows}"


def _totals_function(name: str, sides: tuple[str, ...], group: str) -> str:
    """A trigger function adding the grouped change of ``sides`` to this backend's shard."""
    change = " UNION ALL ".join(sides)
    return f"""
    CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO job_totals AS t (shard, {group}, {", ".join(_TOTALS)})
        SELECT pg_backend_pid(), {group}, {", ".join(f"sum({c})" for c in _TOTALS)}
        FROM ({change}) AS change
        GROUP BY {group}
        HAVING {" OR ".join(f"sum({c}) <> 0" for c in _TOTALS)}
        ON CONFLICT (shard, {group}) DO UPDATE SET
            {", ".join(f"{c} = t.{c} + excluded.{c}" for c in _TOTALS)};
        RETURN NULL;
    END
    $$
    """


def _totals(group: str) -> tuple[str, ...]:
    """``job_totals`` grouped by ``group``, filled from the jobs there are, and its triggers."""
    columns = ", ".join(f"{c} text NOT NULL" for c in group.split(", "))
    return (
        f"""
        CREATE TABLE job_totals (
            shard        integer NOT NULL,
            {columns},
            {", ".join(f"{c} bigint NOT NULL DEFAULT 0" for c in _TOTALS)},
            PRIMARY KEY (shard, {group})
        )
        """,
        f"""
        INSERT INTO job_totals (shard, {group}, {", ".join(_TOTALS)})
        SELECT 0, {group}, count(*), {", ".join(f"sum({c})" for c in _SUMMED)},
               sum(greatest(0, output_tokens - document_tokens))
        FROM jobs GROUP BY {group}
        """,
        _totals_function("job_totals_inserted", (_sums("new_jobs", "+", group),), group),
        _totals_function("job_totals_deleted", (_sums("old_jobs", "-", group),), group),
        _totals_function(
            "job_totals_updated", (_sums("new_jobs", "+", group), _sums("old_jobs", "-", group)), group
        ),
        """
        CREATE TRIGGER job_totals_inserted AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_jobs
        FOR EACH STATEMENT EXECUTE FUNCTION job_totals_inserted()
        """,
        """
        CREATE TRIGGER job_totals_deleted AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_jobs
        FOR EACH STATEMENT EXECUTE FUNCTION job_totals_deleted()
        """,
        """
        CREATE TRIGGER job_totals_updated AFTER UPDATE ON jobs
        REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
        FOR EACH STATEMENT EXECUTE FUNCTION job_totals_updated()
        """,
    )


# Aggregates for ``status``: jobs, characters and usage per (state, model, prompt cache mode), so
# reading them costs a few rows whatever the number of jobs. Kept by statement-level triggers
# with transition tables: one grouped upsert per statement (a claim, a checkpoint batch of a
# thousand jobs, an enqueue of ten thousand), in the statement's transaction; a statement that
# changes no summed value (a heartbeat) writes nothing. Each backend adds to rows of its own
# (``shard`` = its pid), so concurrent transactions never wait on, or deadlock over, a shared
# counter row; readers sum the shards and fold them into shard 0 now and then
# (``jobs.postgres.sql.FOLD_TOTALS``, which skips the rows a transaction holds).
_TOTALS_MIGRATION = _totals(_GROUP_V5)

#: Migration 9: ``job_totals`` grouped by the job's mode too, so ``status`` prices batch jobs at
#: the batch price (``jobs.costs.totals_spend``); rebuilt from the jobs in the migration's
#: transaction (which locks ``jobs`` for its length: run it between fleets, as every migration).
_TOTALS_BY_MODE_MIGRATION = (
    *(f"DROP TRIGGER job_totals_{name} ON jobs" for name in ("inserted", "deleted", "updated")),
    *(f"DROP FUNCTION job_totals_{name}()" for name in ("inserted", "deleted", "updated")),
    "DROP TABLE job_totals",
    *_totals(_GROUP),
)

#: Message Batches (``worker.batches``): a job's mode, the batch it is in and its custom_id there;
#: the batches the store knows; named fleet leases (one batch submitter per fleet).
_BATCHES_MIGRATION = (
    "ALTER TABLE jobs ADD COLUMN mode text NOT NULL DEFAULT 'stream'",
    "ALTER TABLE jobs ADD COLUMN batch_key text",
    "ALTER TABLE jobs ADD COLUMN custom_id text",
    "CREATE INDEX jobs_batch ON jobs (batch_key) WHERE batch_key IS NOT NULL",
    # Claim order per mode, so neither kind of claim walks past queued jobs of the other.
    *(
        f"CREATE INDEX jobs_claim_{mode} ON jobs (priority DESC, run_at, created_at, seq)"
        f" WHERE state = 'queued' AND mode = '{mode}'"
        for mode in ("stream", "batch")
    ),
    """
    CREATE TABLE batches (
        key        text PRIMARY KEY,
        api_id     text UNIQUE,
        created_at double precision NOT NULL,
        requests   integer NOT NULL,
        closed_at  double precision
    )
    """,
    """
    CREATE TABLE leases (
        name       text PRIMARY KEY,
        owner      text NOT NULL,
        expires_at double precision NOT NULL
    )
    """,
)

#: The thinking each request streamed, kept beside the job (``Store.save_thinking``). A new
#: table only, so it runs beside live workers.
_THINKING_MIGRATION = (
    """
    CREATE TABLE thinking (
        job_id     text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        attempt    bigint NOT NULL,
        request    bigint NOT NULL,
        text       text NOT NULL,
        chars      bigint NOT NULL,
        created_at double precision NOT NULL,
        PRIMARY KEY (job_id, attempt, request)
    )
    """,
)

_TERMINAL = "('succeeded', 'failed', 'cancelled')"

#: Retention (``Store.prune``) and compaction. ``jobs_finished`` finds the finished jobs that ended
#: before a cutoff by an index range per state; partial, so queued and running jobs never touch it
#: (and heartbeats stay HOT: it indexes nothing a heartbeat changes). Building it takes the jobs
#: table's write lock for as long as one pass over the table (seconds at a million jobs: less
#: than a lease, so it is automatic). ``jobs_ended`` merges a job's chunks into one row when it
#: ends, whichever statement ends it (a settle, a batch of settles, a lease that expired for the
#: last time inside a claim, a cancel), in that statement's transaction; a row trigger with a
#: ``WHEN``, so every other update of a job (a heartbeat, a claim) runs nothing.
_RETENTION_MIGRATION = (
    f"CREATE INDEX jobs_finished ON jobs (state, finished_at) WHERE state IN {_TERMINAL}",
    """
    CREATE FUNCTION chunks_compact() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        pieces bigint;
        whole bytea;
        last_attempt bigint;
        last_at double precision;
    BEGIN
        SELECT count(*), string_agg(text, ''::bytea ORDER BY char_offset), max(attempt), max(created_at)
        INTO pieces, whole, last_attempt, last_at
        FROM chunks WHERE job_id = NEW.id;
        IF pieces > 1 THEN
            DELETE FROM chunks WHERE job_id = NEW.id;
            INSERT INTO chunks (job_id, char_offset, attempt, text, created_at)
            VALUES (NEW.id, 0, last_attempt, whole, last_at);
        END IF;
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE TRIGGER jobs_ended AFTER UPDATE OF state ON jobs FOR EACH ROW
    WHEN (NEW.state IN {_TERMINAL} AND OLD.state NOT IN {_TERMINAL})
    EXECUTE FUNCTION chunks_compact()
    """,
)

#: Why the fleet is paused (the dashboard's fleet view), kept beside ``paused_until``. Adding a
#: column with a constant default rewrites nothing (PostgreSQL 11+), so it is automatic.
_PAUSE_REASON_MIGRATION = ("ALTER TABLE buckets ADD COLUMN pause_reason text NOT NULL DEFAULT ''",)

#: The dashboard's job list by enqueue time, page by page (``FIND_JOBS_CREATED*``). ``created_at``
#: never changes, so the index costs an insert per job and nothing per heartbeat.
_CREATED_ORDER_MIGRATION = ("CREATE INDEX jobs_created ON jobs (created_at, id)",)

#: Every migration, in order; versions are 1, 2, 3, ...
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "jobs, chunks, attempts, transitions, buckets; NOTIFY on new work", _V1),
    Migration(2, "token economy: cost cap, prompt cache mode, output accounting", _ECONOMY),
    Migration(
        3,
        "attempts.joins: which join rule placed each resume",
        ("ALTER TABLE attempts ADD COLUMN joins text",),
    ),
    Migration(4, "NOTIFY live relays of committed text and state changes", _RELAY_CHANGES),
    Migration(5, "job_totals: aggregates for status, kept by triggers", _TOTALS_MIGRATION),
    Migration(6, "message batches: job mode, batches, fleet leases", _BATCHES_MIGRATION),
    Migration(7, "thinking: the thinking of each request, kept beside the job", _THINKING_MIGRATION),
    Migration(
        8, "retention: finished jobs by end time; chunks compacted when a job ends", _RETENTION_MIGRATION
    ),
    Migration(9, "job_totals grouped by job mode: batch jobs at the batch price", _TOTALS_BY_MODE_MIGRATION),
    Migration(10, "why the fleet is paused, beside paused_until", _PAUSE_REASON_MIGRATION),
    Migration(11, "the dashboard's list by enqueue time: jobs (created_at, id)", _CREATED_ORDER_MIGRATION),
)

SCHEMA_VERSION = MIGRATIONS[-1].version

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  double precision NOT NULL
)
"""


async def current_version(conn: AsyncConnection[Any]) -> int:
    """The schema's version: 0 for an empty database."""
    cur = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not _first(row):
        return 0
    cur = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
    row = await cur.fetchone()
    return int(_first(row)) if row is not None else 0


async def migrate(
    conn: AsyncConnection[Any],
    now: Callable[[], float],
    *,
    automatic_only: bool,
    where: str,
    migrations: tuple[Migration, ...] | None = None,
) -> int:
    """Bring the schema to the last of ``migrations`` under the advisory lock; returns the version.

    With ``automatic_only`` (a worker starting), a pending migration that is not automatic raises
    ``StoreError`` instead of running. ``conn`` must not be inside a transaction.
    """
    migrations = migrations or MIGRATIONS  # read at call time, so tests can add a migration
    target = migrations[-1].version
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        version = await current_version(conn)
        if version > target:
            raise StoreError(
                f"{where} has schema version {version}, newer than this program's {target}: "
                "upgrade the program"
            )
        pending = [m for m in migrations if m.version > version]
        if not pending:
            return version
        manual = [m for m in pending if not m.automatic]
        if automatic_only and manual:
            raise StoreError(
                f"{where} is at schema version {version} and migration {manual[0].version} "
                f"({manual[0].description}) must be applied by hand: run `python -m worker migrate`"
            )
        await conn.execute(_CREATE_VERSION_TABLE)
        for migration in pending:
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.description, now()),
            )
    return target


def _first(row: Any) -> Any:
    """The first column of a row, whether the connection returns tuples or dicts."""
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
