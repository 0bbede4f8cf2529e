"""Every SQL statement of the SQLite backend, named and parameterised, kept in one place.

Like procrastinate's ``queries.sql``: the store in :mod:`jobs.sqlite` holds the transaction logic,
this module holds the text, so a reviewer can read the whole schema and every query at once.
Statements use named parameters (``:name``); nothing is ever formatted into SQL text.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`):

* ``jobs``: one row per job: its spec as columns (messages and metadata as JSON), its state,
  the claim order (priority, run_at), counters, the lease (owner, token, expiry), usage summed over
  attempts, and timestamps. ``run_at`` is the effective not-before time (the spec's ``run_at``, or
  the enqueue time, or a retry's ``retry_at``); ``requested_run_at`` keeps the spec as given.
* ``chunks``: the committed text, append-only. A checkpoint inserts one row, so its cost is
  proportional to the new text, never to the document's length. When the job ends its chunks are
  compacted into one row (seq 0, offset 0) in the same transaction (``SQLiteStore._compact``).
* ``attempts``: one row per attempt, opened by a claim and closed by settle, cancel, or the next
  claimer when the lease expired.
* ``transitions``: every state change, with its reason: the job's history.
* ``buckets``: the fleet's rate-limit buckets (:mod:`jobs.buckets`), one row per key.
* ``job_totals``: jobs, characters and usage summed per (state, model, prompt cache mode, job
  mode: a batch job's tokens cost the batch price), kept by triggers on ``jobs`` in the same
  transaction as each change, so ``status`` reads a few rows instead of every job.
"""

from __future__ import annotations

from jobs.models import USAGE_FIELDS

__all__ = (
    "SCHEMA_VERSION",
    "PRAGMAS",
    "SCHEMA",
    "MIGRATION_ECONOMY",
    "MIGRATION_JOINS",
    "MIGRATION_TOTALS",
    "MIGRATION_BATCHES",
    "MIGRATION_RETENTION",
    "MIGRATION_TOTALS_BY_MODE",
    "MIGRATION_PAUSE_REASON",
    "MIGRATION_CREATED_ORDER",
    "MIGRATIONS",
)

#: Bump this and add the step to :data:`MIGRATIONS` when the schema changes.
SCHEMA_VERSION = 10

#: Run first on every connection (with retries: see ``SQLiteStore._enable_wal``). WAL lets
#: readers run beside one writer, and is a property of the file, kept once set.
ENABLE_WAL = "PRAGMA journal_mode = WAL"
#: Per-connection settings. ``synchronous=NORMAL`` in WAL mode never corrupts the database and
#: loses no committed transaction when the *process* dies (SIGKILL, OOM): only a power cut or an
#: OS crash can drop the last transactions, those not yet synced by a WAL checkpoint.
PRAGMAS = (
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)

SCHEMA = (
    """
    CREATE TABLE jobs (
        id                          TEXT PRIMARY KEY,
        messages                    TEXT NOT NULL,
        system                      TEXT,
        model                       TEXT NOT NULL,
        max_tokens                  INTEGER NOT NULL,
        output_budget               INTEGER NOT NULL,
        max_attempts                INTEGER NOT NULL,
        priority                    INTEGER NOT NULL,
        requested_run_at            REAL,
        metadata                    TEXT NOT NULL,
        state                       TEXT NOT NULL
            CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
        run_at                      REAL NOT NULL,
        attempts                    INTEGER NOT NULL DEFAULT 0,
        failures                    INTEGER NOT NULL DEFAULT 0,
        committed_chars             INTEGER NOT NULL DEFAULT 0,
        lease_owner                 TEXT,
        lease_token                 TEXT,
        lease_expires_at            REAL,
        input_tokens                INTEGER NOT NULL DEFAULT 0,
        output_tokens               INTEGER NOT NULL DEFAULT 0,
        cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_input_tokens     INTEGER NOT NULL DEFAULT 0,
        last_error                  TEXT,
        stop_reason                 TEXT,
        created_at                  REAL NOT NULL,
        updated_at                  REAL NOT NULL,
        started_at                  REAL,
        finished_at                 REAL
    )
    """,
    # Claim order: the implicit rowid ends the index, so "oldest" needs no sort either.
    "CREATE INDEX jobs_claim_order ON jobs (state, priority DESC, run_at, created_at)",
    "CREATE INDEX jobs_lease_expiry ON jobs (state, lease_expires_at)",
    # next_due, polled by idle workers: MIN(run_at) of queued jobs without a scan.
    "CREATE INDEX jobs_due ON jobs (state, run_at)",
    """
    CREATE TABLE chunks (
        job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        seq         INTEGER NOT NULL,
        char_offset INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        text        TEXT NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (job_id, seq)
    )
    """,
    """
    CREATE TABLE attempts (
        job_id                      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        number                      INTEGER NOT NULL,
        worker                      TEXT NOT NULL,
        started_at                  REAL NOT NULL,
        ended_at                    REAL,
        outcome                     TEXT,
        resume_mode                 TEXT,
        input_tokens                INTEGER NOT NULL DEFAULT 0,
        output_tokens               INTEGER NOT NULL DEFAULT 0,
        cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_input_tokens     INTEGER NOT NULL DEFAULT 0,
        requests                    INTEGER NOT NULL DEFAULT 0,
        chars_at_start              INTEGER NOT NULL,
        chars_at_end                INTEGER,
        stop_reason                 TEXT,
        error                       TEXT,
        time_to_first_token         REAL,
        PRIMARY KEY (job_id, number)
    )
    """,
    """
    CREATE TABLE transitions (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        at         REAL NOT NULL,
        from_state TEXT,
        to_state   TEXT NOT NULL,
        reason     TEXT NOT NULL,
        attempt    INTEGER
    )
    """,
    "CREATE INDEX transitions_job ON transitions (job_id, id)",
    # Fleet-wide rate-limit buckets (jobs.buckets), one row per key.
    """
    CREATE TABLE buckets (
        key           TEXT PRIMARY KEY,
        requests      REAL NOT NULL,
        input_tokens  REAL NOT NULL,
        output_tokens REAL NOT NULL,
        updated_at    REAL NOT NULL,
        paused_until  REAL NOT NULL
    )
    """,
)

#: Version 2, the token economy: a job's cost cap and prompt-cache mode, and the output
#: accounting of ``jobs.models.Usage`` (estimated, in the document, repeated) on jobs and attempts.
MIGRATION_ECONOMY = (
    "ALTER TABLE jobs ADD COLUMN max_cost_usd REAL",
    "ALTER TABLE jobs ADD COLUMN prompt_cache TEXT NOT NULL DEFAULT '5m'",
    *(
        f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
        for table in ("jobs", "attempts")
        for column in ("estimated_output_tokens", "document_tokens", "repeated_tokens")
    ),
)

#: Version 3: which join rule placed each resume of the attempt (``rule=count,...``; ``worker.join``).
MIGRATION_JOINS = ("ALTER TABLE attempts ADD COLUMN joins TEXT",)

#: Version 5: the thinking each request streamed, kept beside the job (``Store.save_thinking``).
MIGRATION_THINKING = (
    """
    CREATE TABLE thinking (
        job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        attempt    INTEGER NOT NULL,
        request    INTEGER NOT NULL,
        text       TEXT NOT NULL,
        chars      INTEGER NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (job_id, attempt, request)
    )
    """,
)

#: The columns ``job_totals`` sums (``jobs`` counts rows; ``wasted_output_tokens`` is per job).
_SUMMED = ("committed_chars", *USAGE_FIELDS)
_TOTALS_COLUMNS = ("jobs", *_SUMMED, "wasted_output_tokens")
#: The groups of version 4, before jobs had a mode; version 8 adds it (:data:`MIGRATION_TOTALS_BY_MODE`).
_GROUP_V4 = ("state", "model", "prompt_cache")
_GROUP = (*_GROUP_V4, "mode")


def _add_totals(row: str, sign: str, group: tuple[str, ...]) -> str:
    """An upsert adding (``sign`` = ``+``) or removing (``-``) the ``row`` (NEW or OLD) of jobs."""
    values = [f"{sign}1", *(f"{sign}{row}.{c}" for c in _SUMMED)]
    values.append(f"{sign}MAX(0, {row}.output_tokens - {row}.document_tokens)")
    return f"""
    INSERT INTO job_totals ({", ".join((*group, *_TOTALS_COLUMNS))})
    VALUES ({", ".join(f"{row}.{c}" for c in group)}, {", ".join(values)})
    ON CONFLICT ({", ".join(group)}) DO UPDATE SET
        {", ".join(f"{c} = {c} + excluded.{c}" for c in _TOTALS_COLUMNS)};"""


def _same_group_update(group: tuple[str, ...]) -> str:
    """One UPDATE moving the totals of an unchanged group by the row's differences."""
    moves = [f"{c} = {c} + NEW.{c} - OLD.{c}" for c in _SUMMED]
    moves.append(
        "wasted_output_tokens = wasted_output_tokens"
        " + MAX(0, NEW.output_tokens - NEW.document_tokens) - MAX(0, OLD.output_tokens - OLD.document_tokens)"
    )
    where = " AND ".join(f"{c} = NEW.{c}" for c in group)
    return f"UPDATE job_totals SET {', '.join(moves)} WHERE {where};"


def _totals(group: tuple[str, ...]) -> tuple[str, ...]:
    """``job_totals`` grouped by ``group``, filled from the jobs there are, and its triggers."""
    same = " AND ".join(f"OLD.{c} = NEW.{c}" for c in group)
    return (
        f"""
        CREATE TABLE job_totals (
            {", ".join(f"{c} TEXT NOT NULL" for c in group)},
            {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _TOTALS_COLUMNS)},
            PRIMARY KEY ({", ".join(group)})
        ) WITHOUT ROWID
        """,
        f"""
        INSERT INTO job_totals ({", ".join((*group, *_TOTALS_COLUMNS))})
        SELECT {", ".join(group)}, COUNT(*), {", ".join(f"SUM({c})" for c in _SUMMED)},
               SUM(MAX(0, output_tokens - document_tokens))
        FROM jobs GROUP BY {", ".join(group)}
        """,
        f"CREATE TRIGGER job_totals_insert AFTER INSERT ON jobs BEGIN {_add_totals('NEW', '+', group)} END",
        f"CREATE TRIGGER job_totals_delete AFTER DELETE ON jobs BEGIN {_add_totals('OLD', '-', group)} END",
        f"""
        CREATE TRIGGER job_totals_move AFTER UPDATE OF {", ".join((*group, *_SUMMED))} ON jobs
        WHEN {same}
        BEGIN {_same_group_update(group)} END
        """,
        f"""
        CREATE TRIGGER job_totals_regroup AFTER UPDATE OF {", ".join((*group, *_SUMMED))} ON jobs
        WHEN NOT ({same})
        BEGIN {_add_totals("OLD", "-", group)} {_add_totals("NEW", "+", group)} END
        """,
    )


#: Version 4: ``job_totals``, filled from the jobs there are, then kept by triggers. SQLite has
#: no statement-level triggers, so each changed row moves its group's row: a checkpoint batch
#: costs one small UPDATE per job beside the one it already makes (a heartbeat too: it advances
#: ``committed_chars`` by zero). Updates that set none of the summed columns fire nothing.
MIGRATION_TOTALS = _totals(_GROUP_V4)

#: Version 8: ``job_totals`` grouped by the job's mode too, so ``status`` prices batch jobs at
#: the batch price (``jobs.costs.totals_spend``): rebuilt from the jobs, in the migration's
#: transaction.
MIGRATION_TOTALS_BY_MODE = (
    *(f"DROP TRIGGER job_totals_{name}" for name in ("insert", "delete", "move", "regroup")),
    "DROP TABLE job_totals",
    *_totals(_GROUP),
)

#: Version 5, Message Batches (``worker.batches``): a job's mode (``stream`` or ``batch``), the
#: batch it is in and its ``custom_id`` there; the batches the store knows (``api_id`` NULL until
#: the submission is booked); and named fleet leases (one batch submitter per fleet).
MIGRATION_BATCHES = (
    "ALTER TABLE jobs ADD COLUMN mode TEXT NOT NULL DEFAULT 'stream'",
    "ALTER TABLE jobs ADD COLUMN batch_key TEXT",
    "ALTER TABLE jobs ADD COLUMN custom_id TEXT",
    "CREATE INDEX jobs_claim_by_mode ON jobs (mode, state, priority DESC, run_at, created_at)",
    "CREATE INDEX jobs_batch ON jobs (batch_key)",
    """
    CREATE TABLE batches (
        key        TEXT PRIMARY KEY,
        api_id     TEXT UNIQUE,
        created_at REAL NOT NULL,
        requests   INTEGER NOT NULL,
        closed_at  REAL
    )
    """,
    """
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        owner      TEXT NOT NULL,
        expires_at REAL NOT NULL
    )
    """,
)

#: Version 7, retention (``Store.prune``): finished jobs by state and end time, so a prune finds
#: the jobs that ended before its cutoff by an index range per state instead of a scan. Partial:
#: queued and running jobs (the ones that change most) never touch it.
MIGRATION_RETENTION = (
    """
    CREATE INDEX jobs_finished ON jobs (state, finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled')
    """,
)

#: Version 9: why the fleet is paused, kept beside ``paused_until`` (the dashboard's fleet view).
MIGRATION_PAUSE_REASON = ("ALTER TABLE buckets ADD COLUMN pause_reason TEXT NOT NULL DEFAULT ''",)

#: Version 10: the dashboard's list by enqueue time, page by page (``FIND_JOBS_CREATED*``).
MIGRATION_CREATED_ORDER = ("CREATE INDEX jobs_created ON jobs (created_at, id)",)

#: The schema's versions in order, each with what brings the version before it up to it
#: (version 1 creates the tables); ``SQLiteStore._migrate`` applies those above the file's.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, SCHEMA),
    (2, MIGRATION_ECONOMY),
    (3, MIGRATION_JOINS),
    (4, MIGRATION_TOTALS),
    (5, MIGRATION_BATCHES),
    (6, MIGRATION_THINKING),
    (7, MIGRATION_RETENTION),
    (8, MIGRATION_TOTALS_BY_MODE),
    (9, MIGRATION_PAUSE_REASON),
    (10, MIGRATION_CREATED_ORDER),
)
assert MIGRATIONS[-1][0] == SCHEMA_VERSION

# -- producers ---------------------------------------------------------------------------------

#: An enqueue session (``jobs.sqlite.intake``) lifts the per-row totals trigger for its bulk
#: insert and adds its jobs to ``job_totals`` with this one statement before it commits.
SELECT_TRIGGER_SQL = "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = :name"
TOTALS_INSERT_TRIGGER = "job_totals_insert"
DROP_TOTALS_INSERT_TRIGGER = f"DROP TRIGGER {TOTALS_INSERT_TRIGGER}"
MAX_JOB_ROWID = "SELECT COALESCE(MAX(rowid), 0) FROM jobs"
ADD_TOTALS_AFTER_ROWID = f"""
INSERT INTO job_totals ({", ".join((*_GROUP, *_TOTALS_COLUMNS))})
SELECT {", ".join(_GROUP)}, COUNT(*), {", ".join(f"SUM({c})" for c in _SUMMED)},
       SUM(MAX(0, output_tokens - document_tokens))
FROM jobs WHERE rowid > :after GROUP BY {", ".join(_GROUP)}
ON CONFLICT ({", ".join(_GROUP)}) DO UPDATE SET
    {", ".join(f"{c} = {c} + excluded.{c}" for c in _TOTALS_COLUMNS)}
"""

#: The ids of a batch (a JSON array) that are jobs already.
SELECT_EXISTING_IDS = "SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))"

#: The jobs of a JSON array of ids (unknown ids left out).
SELECT_JOBS_BY_ID = "SELECT * FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))"

#: The ``enqueued`` history rows of a batch's new jobs (a JSON array of ids), in one statement.
INSERT_ENQUEUED_TRANSITIONS = """
INSERT INTO transitions (job_id, at, from_state, to_state, reason, attempt)
SELECT value, :at, NULL, 'queued', 'enqueued', NULL FROM json_each(:ids) ORDER BY key
"""

#: A new job, with positional parameters in :data:`INSERT_JOB_COLUMNS` order, then ``created_at``
#: and ``updated_at``: what a batch binds (tuples bind at half the cost of named parameters).
INSERT_JOB_COLUMNS = (
    "id",
    "messages",
    "system",
    "model",
    "max_tokens",
    "output_budget",
    "max_attempts",
    "priority",
    "requested_run_at",
    "metadata",
    "run_at",
    "max_cost_usd",
    "prompt_cache",
    "mode",
)
INSERT_JOB_ROW = f"""
INSERT INTO jobs ({", ".join(INSERT_JOB_COLUMNS)}, state, created_at, updated_at)
VALUES ({", ".join("?" for _ in INSERT_JOB_COLUMNS)}, 'queued', ?, ?)
ON CONFLICT (id) DO NOTHING
"""

INSERT_TRANSITION = """
INSERT INTO transitions (job_id, at, from_state, to_state, reason, attempt)
VALUES (:job_id, :at, :from_state, :to_state, :reason, :attempt)
"""

# -- claiming ----------------------------------------------------------------------------------

SELECT_EXPIRED = """
SELECT * FROM jobs
WHERE state = 'running' AND lease_expires_at <= :now
ORDER BY priority DESC, run_at, created_at, rowid
LIMIT :limit
"""

#: INDEXED BY: walk the jobs in claim order and stop at ``limit``; the planner would otherwise
#: pick ``jobs_due`` and sort every due job on each claim.
SELECT_CLAIMABLE = """
SELECT id FROM jobs INDEXED BY jobs_claim_by_mode
WHERE mode = :mode AND state = 'queued' AND run_at <= :now
ORDER BY priority DESC, run_at, created_at, rowid
LIMIT :limit
"""

#: A reserved job's place in its batch (``:ids`` and ``:custom_ids`` are parallel JSON arrays).
SET_BATCH_ENTRIES = """
UPDATE jobs SET batch_key = :key, custom_id = batch.custom_id
FROM (
    SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS custom_id
    FROM json_each(:entries)
) AS batch
WHERE jobs.id = batch.id
"""

INSERT_BATCH = """
INSERT INTO batches (key, api_id, created_at, requests) VALUES (:key, NULL, :now, :requests)
"""

SET_BATCH_API_ID = "UPDATE batches SET api_id = :api_id WHERE key = :key AND closed_at IS NULL"

CLOSE_BATCH = "UPDATE batches SET closed_at = :now WHERE key = :key AND closed_at IS NULL"

SELECT_OPEN_BATCHES = "SELECT * FROM batches WHERE closed_at IS NULL ORDER BY created_at, key"

SELECT_BATCH_ENTRIES = """
SELECT id, custom_id, lease_token, attempts FROM jobs
WHERE batch_key = :key AND state = 'running' AND lease_token IS NOT NULL
ORDER BY id
"""

#: A batch not yet submitted stops counting its jobs switched to streaming (``:ids``, a JSON
#: array, just re-queued): a crashed submitter's reservation still counts what it would have sent.
UNCOUNT_BATCH_REQUESTS = """
UPDATE batches
SET requests = requests - (
    SELECT count(*) FROM jobs
    WHERE jobs.batch_key = batches.key AND jobs.state = 'queued' AND jobs.mode = 'batch'
      AND jobs.id IN (SELECT value FROM json_each(:ids))
)
WHERE api_id IS NULL AND closed_at IS NULL AND key IN (
    SELECT batch_key FROM jobs
    WHERE state = 'queued' AND mode = 'batch' AND id IN (SELECT value FROM json_each(:ids))
)
"""

#: Queued batch jobs (``:ids``) become stream jobs, out of their batch; returns those switched.
SWITCH_TO_STREAM = """
UPDATE jobs SET mode = 'stream', batch_key = NULL, custom_id = NULL, updated_at = :now
WHERE state = 'queued' AND mode = 'batch' AND id IN (SELECT value FROM json_each(:ids))
RETURNING *
"""

#: Take or renew a named fleet lease: only its owner, or anyone once it has expired.
ACQUIRE_LEASE = """
INSERT INTO leases (name, owner, expires_at) VALUES (:name, :owner, :expires_at)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE leases.owner = excluded.owner OR leases.expires_at <= :now
"""

SELECT_LEASE = "SELECT owner FROM leases WHERE name = :name"

#: As ``SELECT_CLAIMABLE``, only jobs of the models in ``:models`` (a JSON array): the rate-limit
#: classes that have room (``worker.class_limits``).
SELECT_CLAIMABLE_MODELS = """
SELECT id FROM jobs INDEXED BY jobs_claim_by_mode
WHERE mode = :mode AND state = 'queued' AND run_at <= :now
  AND model IN (SELECT value FROM json_each(:models))
ORDER BY priority DESC, run_at, created_at, rowid
LIMIT :limit
"""

EXPIRE_ATTEMPT = """
UPDATE attempts
SET ended_at = :now, outcome = 'lease_expired', chars_at_end = :chars,
    error = :error
WHERE job_id = :job_id AND number = :number AND ended_at IS NULL
"""

REQUEUE_EXPIRED = """
UPDATE jobs
SET state = :state, failures = failures + 1, lease_owner = NULL, lease_token = NULL,
    lease_expires_at = NULL, last_error = :error, updated_at = :now,
    finished_at = CASE WHEN :state = 'failed' THEN :now ELSE finished_at END
WHERE id = :id
"""

START_ATTEMPT = """
UPDATE jobs
SET state = 'running', attempts = attempts + 1, lease_owner = :worker, lease_token = :token,
    lease_expires_at = :expires_at, started_at = COALESCE(started_at, :now), updated_at = :now
WHERE id = :id
RETURNING *
"""

INSERT_ATTEMPT = """
INSERT INTO attempts (job_id, number, worker, started_at, chars_at_start)
VALUES (:job_id, :number, :worker, :now, :chars)
"""

# -- checkpoints -------------------------------------------------------------------------------

#: One row: a JSON array of [position, status, attempt] for a batch of [position, id, token, offset].
#: A write is refused for a lost lease unless its job is running under that very token.
FENCE_BATCH = """
SELECT json_group_array(json_array(
    json_extract(w.value, '$[0]'),
    CASE
        WHEN j.id IS NULL OR j.state != 'running' OR j.lease_token IS NOT json_extract(w.value, '$[2]')
            THEN 'lease_lost'
        WHEN j.committed_chars != json_extract(w.value, '$[3]') THEN 'offset_mismatch'
        ELSE 'ok'
    END,
    j.attempts
))
FROM json_each(:writes) AS w LEFT JOIN jobs AS j ON j.id = json_extract(w.value, '$[1]')
"""

#: Appends one chunk per job from a JSON array of [id, offset, attempt, text] (one row per job).
INSERT_CHUNKS_BATCH = """
INSERT INTO chunks (job_id, seq, char_offset, attempt, text, created_at)
SELECT
    json_extract(value, '$[0]'),
    (SELECT COALESCE(MAX(seq), -1) + 1 FROM chunks WHERE job_id = json_extract(value, '$[0]')),
    json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]'), :now
FROM json_each(:chunks)
"""

#: Appends one chunk (for texts the JSON functions cannot carry: those with a NUL character).
INSERT_CHUNK = """
INSERT INTO chunks (job_id, seq, char_offset, attempt, text, created_at)
VALUES (
    :job_id,
    (SELECT COALESCE(MAX(seq), -1) + 1 FROM chunks WHERE job_id = :job_id),
    :char_offset, :attempt, :text, :now
)
"""

#: Advances the committed length and extends the lease, from a JSON array of [id, chars].
ADVANCE_BATCH = """
UPDATE jobs
SET committed_chars = committed_chars + batch.chars, lease_expires_at = :expires_at, updated_at = :now
FROM (
    SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS chars FROM json_each(:advances)
) AS batch
WHERE jobs.id = batch.id
"""

SELECT_ATTEMPT_USAGE = """
SELECT input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
       estimated_output_tokens, document_tokens, repeated_tokens
FROM attempts WHERE job_id = :job_id AND number = :number
"""

SET_ATTEMPT_USAGE = """
UPDATE attempts
SET input_tokens = :input_tokens, output_tokens = :output_tokens,
    cache_creation_input_tokens = :cache_creation_input_tokens,
    cache_read_input_tokens = :cache_read_input_tokens,
    estimated_output_tokens = :estimated_output_tokens, document_tokens = :document_tokens,
    repeated_tokens = :repeated_tokens
WHERE job_id = :job_id AND number = :number
"""

SET_ATTEMPT_REQUESTS = "UPDATE attempts SET requests = :requests WHERE job_id = :job_id AND number = :number"

#: Adds a (possibly negative) delta, so the job's usage is always the sum of its attempts' latest.
ADD_JOB_USAGE = """
UPDATE jobs
SET input_tokens = input_tokens + :input_tokens, output_tokens = output_tokens + :output_tokens,
    cache_creation_input_tokens = cache_creation_input_tokens + :cache_creation_input_tokens,
    cache_read_input_tokens = cache_read_input_tokens + :cache_read_input_tokens,
    estimated_output_tokens = estimated_output_tokens + :estimated_output_tokens,
    document_tokens = document_tokens + :document_tokens,
    repeated_tokens = repeated_tokens + :repeated_tokens
WHERE id = :id
"""

# -- settling and operators --------------------------------------------------------------------

CLOSE_ATTEMPT = """
UPDATE attempts
SET ended_at = :now, outcome = :outcome, resume_mode = COALESCE(:resume_mode, resume_mode),
    requests = COALESCE(:requests, requests), stop_reason = :stop_reason, error = :error,
    joins = COALESCE(:joins, joins),
    time_to_first_token = :time_to_first_token, chars_at_end = :chars
WHERE job_id = :job_id AND number = :number AND ended_at IS NULL
"""

SETTLE_JOB = """
UPDATE jobs
SET state = :state, failures = :failures, run_at = :run_at, lease_owner = NULL,
    lease_token = NULL, lease_expires_at = NULL, last_error = :last_error,
    stop_reason = COALESCE(:stop_reason, stop_reason), updated_at = :now, finished_at = :finished_at
WHERE id = :id
RETURNING *
"""

REQUEUE = """
UPDATE jobs
SET state = 'queued', failures = 0, run_at = :now, lease_owner = NULL, lease_token = NULL,
    lease_expires_at = NULL, updated_at = :now, finished_at = NULL
WHERE id = :id
RETURNING *
"""

#: A failed or cancelled job's repaired spec (``retry --set``), written just before it is re-queued:
#: only the fields that say how it runs (``jobs.revise.REVISABLE``); its prompt and text stay.
RESPEC = """
UPDATE jobs
SET model = :model, max_tokens = :max_tokens, output_budget = :output_budget,
    max_attempts = :max_attempts, priority = :priority, metadata = :metadata,
    max_cost_usd = :max_cost_usd, prompt_cache = :prompt_cache, updated_at = :now
WHERE id = :id AND state IN ('failed', 'cancelled')
"""

#: A queued job that never started gets a new spec; it keeps its id and place in the queue.
REPLACE_SPEC = """
UPDATE jobs
SET messages = :messages, system = :system, model = :model, max_tokens = :max_tokens,
    output_budget = :output_budget, max_attempts = :max_attempts, priority = :priority,
    requested_run_at = :requested_run_at, metadata = :metadata, max_cost_usd = :max_cost_usd,
    prompt_cache = :prompt_cache, mode = :mode, run_at = COALESCE(:requested_run_at, :now),
    updated_at = :now
WHERE id = :id AND state = 'queued' AND attempts = 0
RETURNING *
"""

CANCEL = """
UPDATE jobs
SET state = 'cancelled', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
    updated_at = :now, finished_at = :now
WHERE id = :id
RETURNING *
"""

#: Chunks, attempts and transitions go with it (``ON DELETE CASCADE``); the totals by trigger.
DELETE_JOB = "DELETE FROM jobs WHERE id = :id"

#: ``Store.prune``: one batch of finished jobs of ``:states`` (a JSON array) that ended before
#: ``:cutoff``, with their chunks, attempts, transitions and thinking (``ON DELETE CASCADE``); the
#: totals by trigger. The first ``state IN`` repeats the index's condition, so the planner may
#: use ``jobs_finished`` (SQLite uses a partial index only for a query that names its terms).
PRUNE_JOBS = """
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE state IN ('succeeded', 'failed', 'cancelled')
      AND state IN (SELECT value FROM json_each(:states))
      AND finished_at < :cutoff
    LIMIT :limit
)
"""

#: What ``PRUNE_JOBS`` would delete, for ``prune --dry-run``.
COUNT_PRUNABLE = """
SELECT COUNT(*) FROM jobs
WHERE state IN ('succeeded', 'failed', 'cancelled')
  AND state IN (SELECT value FROM json_each(:states))
  AND finished_at < :cutoff
"""

#: Closed batches older than the cutoff that no job refers to any more (their jobs were pruned).
PRUNE_BATCHES = """
DELETE FROM batches
WHERE closed_at < :cutoff AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.batch_key = batches.key)
"""

#: A job's chunks, in order, for compaction.
SELECT_CHUNKS = "SELECT attempt, text, created_at FROM chunks WHERE job_id = :job_id ORDER BY seq"

DELETE_CHUNKS = "DELETE FROM chunks WHERE job_id = :job_id"

#: The one row a finished job's chunks become: the whole text from offset 0, stamped with the
#: attempt and time of the last chunk (so a reader of ``created_at`` sees when the text ended).
INSERT_COMPACTED = """
INSERT INTO chunks (job_id, seq, char_offset, attempt, text, created_at)
VALUES (:job_id, 0, 0, :attempt, :text, :created_at)
"""

SELECT_FAILED_IDS = "SELECT id FROM jobs WHERE state = 'failed' ORDER BY id"

# -- reading -----------------------------------------------------------------------------------

SELECT_JOB = "SELECT * FROM jobs WHERE id = :id"

SELECT_TEXT = "SELECT text FROM chunks WHERE job_id = :job_id ORDER BY seq"

#: The chunk holding character ``:offset`` and every later one (offsets grow with ``seq``, so
#: the start is found walking the primary key backwards from the end: a few rows for a reader
#: that follows the end of the text).
SELECT_TEXT_FROM = """
SELECT char_offset, text FROM chunks
WHERE job_id = :job_id
  AND seq >= COALESCE((
      SELECT seq FROM chunks WHERE job_id = :job_id AND char_offset <= :offset
      ORDER BY seq DESC LIMIT 1), 0)
ORDER BY seq
"""

#: The same for many jobs: ``:positions`` is a JSON array of ``[job_id, offset]`` pairs.
SELECT_TEXTS_FROM = """
WITH wanted AS (
    SELECT json_extract(value, '$[0]') AS job_id, json_extract(value, '$[1]') AS wanted
    FROM json_each(:positions)
), starts AS (
    SELECT w.job_id, w.wanted, COALESCE((
        SELECT s.seq FROM chunks AS s WHERE s.job_id = w.job_id AND s.char_offset <= w.wanted
        ORDER BY s.seq DESC LIMIT 1), 0) AS seq
    FROM wanted AS w
)
SELECT c.job_id, c.char_offset, c.text, starts.wanted
FROM starts JOIN chunks AS c ON c.job_id = starts.job_id AND c.seq >= starts.seq
ORDER BY c.job_id, c.seq
"""

#: ``:ids`` is a JSON array of job ids.
SELECT_PROGRESS = """
SELECT id, state, attempts, committed_chars FROM jobs
WHERE id IN (SELECT value FROM json_each(:ids))
"""

#: Changes whenever another connection commits to the file: a change signal that reads no table.
DATA_VERSION = "PRAGMA data_version"

SELECT_ATTEMPTS = """
SELECT a.*, COALESCE(a.chars_at_end, j.committed_chars) AS chars_now
FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.job_id = :job_id
ORDER BY a.number
"""

SELECT_HISTORY = "SELECT * FROM transitions WHERE job_id = :job_id ORDER BY id"

#: A few rows whatever the number of jobs (see ``job_totals``); groups emptied are left out.
SELECT_TOTALS = "SELECT * FROM job_totals WHERE jobs != 0 ORDER BY state, model, prompt_cache, mode"

#: The queue's health for ``/metrics`` (``jobs.models.QueueStats``): each figure reads one index
#: range (jobs_due, jobs_claim_order / jobs_lease_expiry on the running rows), never the whole table.
SELECT_QUEUE_STATS = """
SELECT
    (SELECT MIN(run_at) FROM jobs WHERE state = 'queued' AND run_at <= :now) AS oldest_due_at,
    (SELECT MIN(updated_at) FROM jobs WHERE state = 'running') AS oldest_checkpoint_at,
    (SELECT COUNT(*) FROM jobs WHERE state = 'running' AND lease_expires_at < :now) AS expired_leases
"""
SELECT_PAUSES = "SELECT key, paused_until, pause_reason FROM buckets WHERE paused_until > :now ORDER BY key"

SELECT_NEXT_DUE = """
SELECT MIN(due) FROM (
    SELECT MIN(run_at) AS due FROM jobs WHERE state = 'queued'
    UNION ALL
    SELECT MIN(lease_expires_at) AS due FROM jobs WHERE state = 'running'
)
"""

#: ``:states`` is a JSON array of state names, or NULL for every state.
LIST_JOBS = """
SELECT * FROM jobs
WHERE (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:after_id IS NULL OR id > :after_id)
ORDER BY id
LIMIT :limit
"""


# -- the dashboard (worker.server.dashboard) ---------------------------------------------------

#: The dashboard's filters (state, model, id prefix or metadata text), shared by every page order.
_FIND_FILTERS = """WHERE (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:model IS NULL OR model = :model)
  AND (:search IS NULL OR substr(id, 1, length(:search)) = :search OR instr(metadata, :search) > 0)"""

#: One page of the job list, walking the primary key from ``after_id`` (``''`` for the first page:
#: a plain bound, which the planner turns into a range of the key; behind ``OR IS NULL`` it would
#: not). About ``limit`` rows are read when the filters match most rows; a rare filter reads
#: further, never more than the table.
FIND_JOBS = f"""
SELECT * FROM jobs
{_FIND_FILTERS}
  AND id > :after_id
ORDER BY id
LIMIT :limit
"""

FIND_JOBS_DESC = f"""
SELECT * FROM jobs
{_FIND_FILTERS}
ORDER BY id DESC
LIMIT :limit
"""

#: The next page in descending order (a separate statement: an ``OR`` with the bound would hide
#: it from the planner, which would then walk the key from the end to reach the page).
FIND_JOBS_DESC_AFTER = f"""
SELECT * FROM jobs
{_FIND_FILTERS}
  AND id < :after_id
ORDER BY id DESC
LIMIT :limit
"""

#: The same pages by enqueue time (oldest first), then id: a row-value bound walks the
#: ``jobs_created`` index from the previous page's last ``(created_at, id)``.
FIND_JOBS_CREATED = f"""
SELECT * FROM jobs
{_FIND_FILTERS}
  AND (created_at, id) > (:after_created, :after_id)
ORDER BY created_at, id
LIMIT :limit
"""

#: Newest first.
FIND_JOBS_CREATED_DESC = f"""
SELECT * FROM jobs
{_FIND_FILTERS}
ORDER BY created_at DESC, id DESC
LIMIT :limit
"""

FIND_JOBS_CREATED_DESC_AFTER = f"""
SELECT * FROM jobs
{_FIND_FILTERS}
  AND (created_at, id) < (:after_created, :after_id)
ORDER BY created_at DESC, id DESC
LIMIT :limit
"""

#: Workers holding leases now (the state index finds the running jobs).
SELECT_RUNNING_WORKERS = """
SELECT lease_owner AS worker, COUNT(*) AS running, MAX(updated_at) AS last_seen
FROM jobs WHERE state = 'running' AND lease_owner IS NOT NULL
GROUP BY lease_owner
"""

#: Workers of attempts that ended since ``:since`` (a scan of attempts: no index on ``ended_at``).
SELECT_RECENT_WORKERS = """
SELECT worker, MAX(ended_at) AS last_seen FROM attempts
WHERE ended_at >= :since GROUP BY worker
"""

SELECT_ALL_BUCKETS = "SELECT * FROM buckets ORDER BY key"

#: Attempts ended since ``:since`` per minute and outcome: the fleet view's throughput chart.
SELECT_MINUTES = """
SELECT CAST(ended_at / 60 AS INTEGER) * 60 AS minute, outcome, COUNT(*) AS attempts,
       SUM(output_tokens) AS output_tokens
FROM attempts WHERE ended_at >= :since AND outcome IS NOT NULL
GROUP BY minute, outcome ORDER BY minute, outcome
"""

# -- rate-limit buckets ------------------------------------------------------------------------

SELECT_BUCKETS = "SELECT * FROM buckets WHERE key = :key"

UPSERT_BUCKETS = """
INSERT INTO buckets (key, requests, input_tokens, output_tokens, updated_at, paused_until, pause_reason)
VALUES (:key, :requests, :input_tokens, :output_tokens, :updated_at, :paused_until, :pause_reason)
ON CONFLICT (key) DO UPDATE SET
    requests = excluded.requests, input_tokens = excluded.input_tokens,
    output_tokens = excluded.output_tokens, updated_at = excluded.updated_at,
    paused_until = excluded.paused_until, pause_reason = excluded.pause_reason
"""

#: Characters of thinking a job keeps already (what the bound counts).
SELECT_THINKING_KEPT = "SELECT COALESCE(SUM(length(text)), 0) FROM thinking WHERE job_id = :job_id"

INSERT_THINKING = """
INSERT INTO thinking (job_id, attempt, request, text, chars, created_at)
VALUES (:job_id, :attempt, :request, :text, :chars, :now)
ON CONFLICT (job_id, attempt, request) DO NOTHING
"""

SELECT_THINKING = "SELECT * FROM thinking WHERE job_id = :job_id ORDER BY attempt, request"
