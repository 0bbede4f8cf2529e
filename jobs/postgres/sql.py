"""Every SQL statement of the PostgreSQL backend, named and parameterised, kept in one place.

The store in :mod:`jobs.postgres.store` holds the transaction logic; this module holds the text, as
:mod:`jobs.sqlite.sql` does for SQLite. Parameters are named (``%(name)s``); nothing is formatted
into SQL text. Batches are passed as arrays and expanded with ``unnest``, so a checkpoint of a
hundred jobs or an enqueue of ten thousand is one statement, not one per row.

The schema is in :mod:`jobs.postgres.schema`. Every time (``%(now)s``) comes from the store's
clock, never ``now()``, so lease arithmetic is the same on both backends and under a fake clock.
"""

from __future__ import annotations

from jobs.models import USAGE_FIELDS

__all__ = (
    "ENQUEUE",
    "CLAIM",
    "LOCK_FENCES",
    "APPLY_CHECKPOINTS",
    "LOCK_JOB",
    "SETTLE",
    "REQUEUE",
    "REPLACE_SPEC",
    "RESPEC",
    "RETRY_FAILED",
    "CANCEL",
    "DELETE_JOB",
    "PRUNE_JOBS",
    "COUNT_PRUNABLE",
    "PRUNE_BATCHES",
    "SELECT_THINKING_KEPT",
    "INSERT_THINKING",
    "SELECT_THINKING",
    "SELECT_JOB",
    "SELECT_TEXT",
    "SELECT_TEXT_FROM",
    "SELECT_TEXTS_FROM",
    "SELECT_PROGRESS",
    "SELECT_ATTEMPTS",
    "SELECT_HISTORY",
    "SELECT_TOTALS",
    "FOLD_TOTALS",
    "COUNT_SHARDS",
    "SELECT_NEXT_DUE",
    "SELECT_QUEUE_STATS",
    "SELECT_PAUSES",
    "LIST_JOBS",
    "FIND_JOBS",
    "FIND_JOBS_DESC",
    "FIND_JOBS_DESC_AFTER",
    "FIND_JOBS_CREATED",
    "FIND_JOBS_CREATED_DESC",
    "FIND_JOBS_CREATED_DESC_AFTER",
    "SELECT_RUNNING_WORKERS",
    "SELECT_RECENT_WORKERS",
    "SELECT_ALL_BUCKETS",
    "SELECT_MINUTES",
    "LOCK_BUCKETS",
    "INSERT_BUCKETS",
    "UPDATE_BUCKETS",
    "SET_BATCH_ENTRIES",
    "INSERT_BATCH",
    "SET_BATCH_API_ID",
    "CLOSE_BATCH",
    "SELECT_OPEN_BATCHES",
    "SELECT_BATCH_ENTRIES",
    "SWITCH_TO_STREAM",
    "ACQUIRE_LEASE",
)

# -- producers ---------------------------------------------------------------------------------

#: Ids are unique within the arrays (the store keeps the first of duplicates). Rows are inserted
#: in the given order, so ``seq`` (the tie-break of claim order) follows it.
#: The batch's columns are sent as binary arrays (``%(name)b``): psycopg's text arrays quote
#: and escape every element in Python, at twice the cost (measured on 2,000-element arrays).
ENQUEUE = """
WITH new AS (
    SELECT *
    FROM unnest(
        %(ids)b::text[], %(messages)b::text[], %(systems)b::text[], %(models)b::text[],
        %(max_tokens)b::bigint[], %(output_budgets)b::bigint[], %(max_attempts)b::bigint[],
        %(priorities)b::bigint[], %(run_ats)b::float8[], %(metadata)b::text[],
        %(max_costs)b::float8[], %(prompt_caches)b::text[], %(modes)b::text[]
    ) WITH ORDINALITY AS n (
        id, messages, system, model, max_tokens, output_budget, max_attempts, priority,
        requested_run_at, metadata, max_cost_usd, prompt_cache, mode, ord
    )
),
inserted AS (
    INSERT INTO jobs (
        id, messages, system, model, max_tokens, output_budget, max_attempts, priority,
        requested_run_at, metadata, state, run_at, created_at, updated_at, max_cost_usd, prompt_cache,
        mode
    )
    SELECT id, messages, system, model, max_tokens, output_budget, max_attempts, priority,
           requested_run_at, metadata, 'queued', COALESCE(requested_run_at, %(now)s), %(now)s, %(now)s,
           max_cost_usd, prompt_cache, mode
    FROM new
    ORDER BY ord
    ON CONFLICT (id) DO NOTHING
    RETURNING id
),
history AS (
    INSERT INTO transitions (job_id, at, from_state, to_state, reason, attempt)
    SELECT new.id, %(now)s, NULL, 'queued', 'enqueued', NULL
    FROM inserted JOIN new USING (id)
    ORDER BY new.ord
)
SELECT id FROM inserted
"""

# -- claiming ----------------------------------------------------------------------------------

#: The whole claim in one statement (one transaction, one round trip):
#:
#: 1. ``expired``: running jobs whose lease has expired, locked (``SKIP LOCKED``: a job another
#:    transaction holds is left to it, or to the next claim).
#: 2. ``due``: queued jobs whose ``run_at`` has come, in claim order, locked the same way
#:    (with statistics, by walking ``jobs_claim_order`` up to ``limit``; see ``NEVER_ANALYZED``).
#: 3. ``picked``: the first ``limit`` of both, in claim order; an expired job whose failures
#:    reach ``max_attempts`` with this expiry cannot be picked: it fails instead.
#: 4. ``updated``: one UPDATE gives each touched job its final state (a row cannot be updated
#:    twice in one statement): an expired job counts a failure and goes back to the queue or
#:    fails; a picked job starts an attempt under a fresh random lease token.
#: 5. The expired attempts are closed as ``lease_expired``, the new ones opened, every state
#:    change recorded (for one job, its expiry before its new claim), and each claimed job is
#:    returned with its committed text.
CLAIM = """
WITH
expired AS MATERIALIZED (
    SELECT id, priority, run_at, created_at, seq, attempts, failures, max_attempts,
           committed_chars, lease_owner, model
    FROM jobs
    WHERE state = 'running' AND lease_expires_at <= %(now)s
    ORDER BY lease_expires_at
    LIMIT %(expired_batch)s
    FOR UPDATE SKIP LOCKED
),
due AS MATERIALIZED (
    SELECT id, priority, run_at, created_at, seq
    FROM jobs
    WHERE mode = %(mode)s AND state = 'queued' AND run_at <= %(now)s
      AND (%(models)s::text[] IS NULL OR model = ANY(%(models)s::text[]))
    ORDER BY priority DESC, run_at, created_at, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
picked AS MATERIALIZED (
    SELECT id FROM (
        SELECT id, priority, run_at, created_at, seq FROM due
        UNION ALL
        SELECT id, priority, run_at, created_at, seq FROM expired
        WHERE failures + 1 < max_attempts
          AND (%(models)s::text[] IS NULL OR model = ANY(%(models)s::text[]))
    ) AS candidates
    ORDER BY priority DESC, run_at, created_at, seq
    LIMIT %(limit)s
),
touched AS (
    SELECT COALESCE(e.id, p.id) AS id,
           e.id IS NOT NULL AS expired,
           p.id IS NOT NULL AS picked,
           e.attempts AS expired_attempt,
           e.committed_chars AS expired_chars,
           COALESCE(e.failures + 1 >= e.max_attempts, false) AS exhausted,
           'lease expired (worker ' || COALESCE(e.lease_owner, '?') || ' stopped heartbeating)' AS error
    FROM expired AS e FULL JOIN picked AS p ON p.id = e.id
),
updated AS (
    UPDATE jobs AS j SET
        state = CASE WHEN t.picked THEN 'running' WHEN t.exhausted THEN 'failed' ELSE 'queued' END,
        failures = j.failures + CASE WHEN t.expired THEN 1 ELSE 0 END,
        attempts = j.attempts + CASE WHEN t.picked THEN 1 ELSE 0 END,
        lease_owner = CASE WHEN t.picked THEN %(worker)s::text END,
        lease_token = CASE WHEN t.picked THEN replace(gen_random_uuid()::text, '-', '') END,
        lease_expires_at = CASE WHEN t.picked THEN %(expires_at)s::float8 END,
        last_error = CASE WHEN t.expired THEN t.error ELSE j.last_error END,
        started_at = CASE WHEN t.picked THEN COALESCE(j.started_at, %(now)s) ELSE j.started_at END,
        finished_at = CASE WHEN t.exhausted THEN %(now)s ELSE j.finished_at END,
        updated_at = %(now)s
    FROM touched AS t
    WHERE j.id = t.id
    RETURNING j.*, t.expired, t.picked, t.expired_attempt, t.expired_chars, t.exhausted, t.error
),
closed AS (
    UPDATE attempts AS a
    SET ended_at = %(now)s, outcome = 'lease_expired', chars_at_end = u.expired_chars, error = u.error
    FROM updated AS u
    WHERE u.expired AND a.job_id = u.id AND a.number = u.expired_attempt AND a.ended_at IS NULL
),
opened AS (
    INSERT INTO attempts (job_id, number, worker, started_at, chars_at_start)
    SELECT id, attempts, %(worker)s, %(now)s, committed_chars FROM updated WHERE picked
),
history AS (
    INSERT INTO transitions (job_id, at, from_state, to_state, reason, attempt)
    SELECT u.id, %(now)s, x.from_state, x.to_state, x.reason, x.attempt
    FROM updated AS u
    CROSS JOIN LATERAL (
        VALUES
            (1, u.expired, 'running',
             CASE WHEN u.exhausted THEN 'failed' ELSE 'queued' END,
             CASE WHEN u.exhausted THEN 'attempts exhausted: lease expired' ELSE 'lease expired' END,
             u.expired_attempt),
            (2, u.picked, 'queued', 'running', 'claimed by ' || %(worker)s::text, u.attempts)
    ) AS x (step, applies, from_state, to_state, reason, attempt)
    WHERE x.applies
    ORDER BY u.priority DESC, u.run_at, u.created_at, u.seq, x.step
)
SELECT u.*,
       (SELECT string_agg(c.text, ''::bytea ORDER BY c.char_offset) FROM chunks AS c WHERE c.job_id = u.id)
           AS text
FROM updated AS u
WHERE u.picked
ORDER BY u.priority DESC, u.run_at, u.created_at, u.seq
"""

# -- checkpoints -------------------------------------------------------------------------------

#: Locks the batch's jobs in id order (so two batches never deadlock) and reads their fences.
LOCK_FENCES = """
SELECT id, state, lease_token, committed_chars, attempts
FROM jobs
WHERE id = ANY(%(ids)s::text[])
ORDER BY id
FOR UPDATE
"""

#: Applies the accepted writes of one batch, set-based: every new chunk in one INSERT, every
#: attempt's usage so far in one UPDATE, and one UPDATE of the jobs that advances their text,
#: extends their lease and moves their usage by the attempt's change (so a job's usage is always
#: the sum of its attempts' latest). ``old_usage`` reads the attempts as they were before
#: ``set_usage``: every part of one statement sees the same snapshot.
APPLY_CHECKPOINTS = """
WITH
new_chunks AS (
    INSERT INTO chunks (job_id, char_offset, attempt, text, created_at)
    SELECT c.job_id, c.char_offset, c.attempt, c.text, %(now)s
    FROM unnest(
        %(chunk_jobs)s::text[], %(chunk_offsets)s::bigint[], %(chunk_attempts)s::bigint[],
        %(chunk_texts)s::bytea[]
    ) AS c (job_id, char_offset, attempt, text)
),
usage AS (
    SELECT *
    FROM unnest(
        %(usage_jobs)s::text[], %(usage_numbers)s::bigint[], %(usage_input)s::bigint[],
        %(usage_output)s::bigint[], %(usage_cache_creation)s::bigint[], %(usage_cache_read)s::bigint[],
        %(usage_estimated)s::bigint[], %(usage_document)s::bigint[], %(usage_repeated)s::bigint[],
        %(usage_requests)s::bigint[]
    ) AS u (job_id, number, input_tokens, output_tokens, cache_creation_input_tokens,
            cache_read_input_tokens, estimated_output_tokens, document_tokens, repeated_tokens, requests)
),
old_usage AS (
    SELECT u.job_id,
           u.input_tokens - a.input_tokens AS d_input,
           u.output_tokens - a.output_tokens AS d_output,
           u.cache_creation_input_tokens - a.cache_creation_input_tokens AS d_cache_creation,
           u.cache_read_input_tokens - a.cache_read_input_tokens AS d_cache_read,
           u.estimated_output_tokens - a.estimated_output_tokens AS d_estimated,
           u.document_tokens - a.document_tokens AS d_document,
           u.repeated_tokens - a.repeated_tokens AS d_repeated
    FROM usage AS u JOIN attempts AS a ON a.job_id = u.job_id AND a.number = u.number
),
set_usage AS (
    UPDATE attempts AS a
    SET input_tokens = u.input_tokens, output_tokens = u.output_tokens,
        cache_creation_input_tokens = u.cache_creation_input_tokens,
        cache_read_input_tokens = u.cache_read_input_tokens,
        estimated_output_tokens = u.estimated_output_tokens, document_tokens = u.document_tokens,
        repeated_tokens = u.repeated_tokens, requests = COALESCE(u.requests, a.requests)
    FROM usage AS u
    WHERE a.job_id = u.job_id AND a.number = u.number
)
UPDATE jobs AS j
SET committed_chars = j.committed_chars + d.chars,
    lease_expires_at = %(expires_at)s,
    updated_at = %(now)s,
    input_tokens = j.input_tokens + COALESCE(o.d_input, 0),
    output_tokens = j.output_tokens + COALESCE(o.d_output, 0),
    cache_creation_input_tokens = j.cache_creation_input_tokens + COALESCE(o.d_cache_creation, 0),
    cache_read_input_tokens = j.cache_read_input_tokens + COALESCE(o.d_cache_read, 0),
    estimated_output_tokens = j.estimated_output_tokens + COALESCE(o.d_estimated, 0),
    document_tokens = j.document_tokens + COALESCE(o.d_document, 0),
    repeated_tokens = j.repeated_tokens + COALESCE(o.d_repeated, 0)
FROM unnest(%(ids)s::text[], %(chars)s::bigint[]) AS d (id, chars)
LEFT JOIN old_usage AS o ON o.job_id = d.id
WHERE j.id = d.id
"""

# -- settling and operators --------------------------------------------------------------------

LOCK_JOB = "SELECT * FROM jobs WHERE id = %(id)s FOR UPDATE"

#: True while ``jobs`` has never been analysed. Without statistics (a queue just filled, before
#: autovacuum's first pass, up to a minute later) the planner expects a handful of queued jobs and
#: claims by sorting every due job instead of walking ``jobs_claim_order``: 3-8 ms per claim at
#: 3,000 queued jobs instead of 0.7 ms, growing with the queue. A large enqueue then runs ``ANALYZE``.
NEVER_ANALYZED = """
SELECT last_analyze IS NULL AND last_autoanalyze IS NULL AS never
FROM pg_stat_user_tables WHERE relid = 'jobs'::regclass
"""
ANALYZE_JOBS = "ANALYZE jobs"
#: The enqueue size from which a never-analysed table is analysed (``ANALYZE`` samples at most
#: 30,000 rows: tens of milliseconds, once per database).
ANALYZE_AFTER = 1000

#: Closes the current attempt with its final usage, moves the job's usage by the change, sets the
#: job's new state and records the transition: one statement.
SETTLE = """
WITH
old AS (
    SELECT input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
           estimated_output_tokens, document_tokens, repeated_tokens
    FROM attempts WHERE job_id = %(id)s AND number = %(number)s
),
closed AS (
    UPDATE attempts
    SET input_tokens = %(input_tokens)s, output_tokens = %(output_tokens)s,
        cache_creation_input_tokens = %(cache_creation_input_tokens)s,
        cache_read_input_tokens = %(cache_read_input_tokens)s,
        estimated_output_tokens = %(estimated_output_tokens)s, document_tokens = %(document_tokens)s,
        repeated_tokens = %(repeated_tokens)s,
        ended_at = %(now)s, outcome = %(outcome)s,
        resume_mode = COALESCE(%(resume_mode)s::text, resume_mode),
        requests = COALESCE(%(requests)s::bigint, requests),
        stop_reason = %(stop_reason)s::text, error = %(error)s::text,
        time_to_first_token = %(time_to_first_token)s::float8, chars_at_end = %(chars)s,
        joins = COALESCE(%(joins)s::text, joins)
    WHERE job_id = %(id)s AND number = %(number)s
),
history AS (
    INSERT INTO transitions (job_id, at, from_state, to_state, reason, attempt)
    VALUES (%(id)s, %(now)s, 'running', %(state)s, %(reason)s, %(number)s)
)
UPDATE jobs AS j
SET state = %(state)s, failures = %(failures)s, run_at = %(run_at)s, lease_owner = NULL,
    lease_token = NULL, lease_expires_at = NULL, last_error = %(last_error)s::text,
    stop_reason = COALESCE(%(stop_reason)s::text, j.stop_reason), updated_at = %(now)s,
    finished_at = %(finished_at)s::float8,
    input_tokens = j.input_tokens + %(input_tokens)s - COALESCE(o.input_tokens, 0),
    output_tokens = j.output_tokens + %(output_tokens)s - COALESCE(o.output_tokens, 0),
    cache_creation_input_tokens = j.cache_creation_input_tokens + %(cache_creation_input_tokens)s
        - COALESCE(o.cache_creation_input_tokens, 0),
    cache_read_input_tokens = j.cache_read_input_tokens + %(cache_read_input_tokens)s
        - COALESCE(o.cache_read_input_tokens, 0),
    estimated_output_tokens = j.estimated_output_tokens + %(estimated_output_tokens)s
        - COALESCE(o.estimated_output_tokens, 0),
    document_tokens = j.document_tokens + %(document_tokens)s - COALESCE(o.document_tokens, 0),
    repeated_tokens = j.repeated_tokens + %(repeated_tokens)s - COALESCE(o.repeated_tokens, 0)
FROM (SELECT 1) AS one LEFT JOIN old AS o ON true
WHERE j.id = %(id)s
RETURNING j.*
"""

#: Locks a batch of settles' jobs in id order (two batches never deadlock) and reads them whole,
#: so the store checks each fence and computes each next state (``jobs.rules.settle``) in Python.
LOCK_JOBS = "SELECT * FROM jobs WHERE id = ANY(%(ids)s::text[]) ORDER BY id FOR UPDATE"

_USAGE = USAGE_FIELDS  # one column per Usage field, in jobs and attempts

#: ``SETTLE`` for the accepted settles of one batch, set-based: the rows come as one JSON array
#: (``jsonb_to_recordset``; one parameter whatever the batch size), every attempt is closed by
#: one UPDATE, every transition recorded by one INSERT (in the batch's order) and every job moved
#: by one UPDATE, so the statement-level triggers (``job_totals``, the relays' NOTIFY) fire once
#: per batch, not once per job. ``old`` reads the attempts before ``closed``: one snapshot. The
#: ``= ANY(ids)`` conditions repeat the join's keys so the planner reads the primary keys
#: instead of scanning: it cannot estimate how many rows ``jsonb_to_recordset`` gives.
SETTLE_MANY = f"""
WITH
s AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(settles)s::jsonb) AS s (
        step integer, id text, number bigint, outcome text, resume_mode text, requests bigint,
        error text, stop_reason text, time_to_first_token float8, joins text, chars bigint,
        state text, reason text, failures bigint, run_at float8, last_error text,
        finished_at float8, {", ".join(f"{c} bigint" for c in _USAGE)}
    )
),
old AS (
    SELECT a.job_id, {", ".join(f"a.{c}" for c in _USAGE)}
    FROM attempts AS a JOIN s ON a.job_id = s.id AND a.number = s.number
    WHERE a.job_id = ANY(%(ids)s::text[])
),
closed AS (
    UPDATE attempts AS a
    SET {", ".join(f"{c} = s.{c}" for c in _USAGE)},
        ended_at = %(now)s, outcome = s.outcome, resume_mode = COALESCE(s.resume_mode, a.resume_mode),
        requests = COALESCE(s.requests, a.requests), stop_reason = s.stop_reason, error = s.error,
        time_to_first_token = s.time_to_first_token, chars_at_end = s.chars,
        joins = COALESCE(s.joins, a.joins)
    FROM s
    WHERE a.job_id = s.id AND a.number = s.number AND a.job_id = ANY(%(ids)s::text[])
),
history AS (
    INSERT INTO transitions (job_id, at, from_state, to_state, reason, attempt)
    SELECT s.id, %(now)s, 'running', s.state, s.reason, s.number FROM s ORDER BY s.step
)
UPDATE jobs AS j
SET state = s.state, failures = s.failures, run_at = s.run_at, lease_owner = NULL,
    lease_token = NULL, lease_expires_at = NULL, last_error = s.last_error,
    stop_reason = COALESCE(s.stop_reason, j.stop_reason), updated_at = %(now)s,
    finished_at = s.finished_at,
    {", ".join(f"{c} = j.{c} + s.{c} - COALESCE(o.{c}, 0)" for c in _USAGE)}
FROM s LEFT JOIN old AS o ON o.job_id = s.id
WHERE j.id = s.id AND j.id = ANY(%(ids)s::text[])
RETURNING j.*
"""

#: An operator's retry of one failed or cancelled job (checked by the store): back to the queue
#: now, failures reset, text kept.
REQUEUE = """
WITH history AS (
    INSERT INTO transitions (job_id, at, from_state, to_state, reason, attempt)
    VALUES (%(id)s, %(now)s, %(from_state)s, 'queued', %(reason)s, NULL)
)
UPDATE jobs
SET state = 'queued', failures = 0, run_at = %(now)s, lease_owner = NULL, lease_token = NULL,
    lease_expires_at = NULL, updated_at = %(now)s, finished_at = NULL
WHERE id = %(id)s
RETURNING *
"""

#: A failed or cancelled job's repaired spec (``retry --set``), written just before it is re-queued:
#: only the fields that say how it runs (``jobs.revise.REVISABLE``); its prompt and text stay.
RESPEC = """
UPDATE jobs
SET model = %(model)s, max_tokens = %(max_tokens)s, output_budget = %(output_budget)s,
    max_attempts = %(max_attempts)s, priority = %(priority)s, metadata = %(metadata)s,
    max_cost_usd = %(max_cost_usd)s::float8, prompt_cache = %(prompt_cache)s, updated_at = %(now)s
WHERE id = %(id)s AND state IN ('failed', 'cancelled')
"""

#: A queued job that never started gets a new spec; it keeps its id and place in the queue.
REPLACE_SPEC = """
WITH history AS (
    INSERT INTO transitions (job_id, at, from_state, to_state, reason, attempt)
    VALUES (%(id)s, %(now)s, 'queued', 'queued', 'replaced by an operator', NULL)
)
UPDATE jobs
SET messages = %(messages)s, system = %(system)s, model = %(model)s, max_tokens = %(max_tokens)s,
    output_budget = %(output_budget)s, max_attempts = %(max_attempts)s, priority = %(priority)s,
    requested_run_at = %(requested_run_at)s::float8, metadata = %(metadata)s,
    max_cost_usd = %(max_cost_usd)s::float8, prompt_cache = %(prompt_cache)s, mode = %(mode)s,
    run_at = COALESCE(%(requested_run_at)s::float8, %(now)s), updated_at = %(now)s
WHERE id = %(id)s AND state = 'queued' AND attempts = 0
RETURNING *
"""

RETRY_FAILED = """
WITH
failed AS MATERIALIZED (
    SELECT id FROM jobs WHERE state = 'failed' ORDER BY id FOR UPDATE
),
requeued AS (
    UPDATE jobs AS j
    SET state = 'queued', failures = 0, run_at = %(now)s, lease_owner = NULL, lease_token = NULL,
        lease_expires_at = NULL, updated_at = %(now)s, finished_at = NULL
    FROM failed AS f
    WHERE j.id = f.id
    RETURNING j.id
),
history AS (
    INSERT INTO transitions (job_id, at, from_state, to_state, reason, attempt)
    SELECT id, %(now)s, 'failed', 'queued', 'retried by an operator', NULL FROM requeued ORDER BY id
)
SELECT count(*) AS n FROM requeued
"""

#: Cancels a queued or running job (checked by the store). A running attempt is closed as
#: ``lease_lost``; clearing the token refuses the worker's next fenced write.
CANCEL = """
WITH
closed AS (
    UPDATE attempts
    SET ended_at = %(now)s, outcome = 'lease_lost', stop_reason = NULL, error = 'cancelled',
        time_to_first_token = NULL, chars_at_end = %(chars)s
    WHERE %(attempt)s::bigint IS NOT NULL AND job_id = %(id)s AND number = %(attempt)s::bigint
      AND ended_at IS NULL
),
history AS (
    INSERT INTO transitions (job_id, at, from_state, to_state, reason, attempt)
    VALUES (%(id)s, %(now)s, %(from_state)s, 'cancelled', 'cancelled by an operator', %(attempt)s::bigint)
)
UPDATE jobs
SET state = 'cancelled', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
    updated_at = %(now)s, finished_at = %(now)s
WHERE id = %(id)s
RETURNING *
"""

# -- reading -----------------------------------------------------------------------------------

#: Chunks, attempts and transitions go with it (``ON DELETE CASCADE``); the totals by trigger.
DELETE_JOB = "DELETE FROM jobs WHERE id = %(id)s"

#: ``Store.prune``: one batch of finished jobs of ``states`` that ended before ``cutoff``, found
#: through ``jobs_finished`` (the first ``state IN`` is the index's condition, written out so the
#: planner can prove it), with their chunks, attempts, transitions and thinking (``ON DELETE
#: CASCADE``) and the totals (one statement: the ``job_totals`` trigger fires once per batch).
#: ``SKIP LOCKED``: a job another transaction holds (a retry in progress) is left for next time.
PRUNE_JOBS = """
WITH doomed AS (
    SELECT id FROM jobs
    WHERE state IN ('succeeded', 'failed', 'cancelled') AND state = ANY(%(states)s::text[])
      AND finished_at < %(cutoff)s
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM jobs AS j USING doomed AS d WHERE j.id = d.id
"""

#: What ``PRUNE_JOBS`` would delete, for ``prune --dry-run``.
COUNT_PRUNABLE = """
SELECT count(*) AS n FROM jobs
WHERE state IN ('succeeded', 'failed', 'cancelled') AND state = ANY(%(states)s::text[])
  AND finished_at < %(cutoff)s
"""

#: Closed batches older than the cutoff that no job refers to any more (their jobs were pruned).
PRUNE_BATCHES = """
DELETE FROM batches AS b
WHERE b.closed_at < %(cutoff)s AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.batch_key = b.key)
"""

SELECT_JOB = "SELECT * FROM jobs WHERE id = %(id)s"

#: The jobs of a list of ids (unknown ids left out).
SELECT_JOBS_BY_ID = "SELECT * FROM jobs WHERE id = ANY(%(ids)s::text[])"

#: No row: no such job. A NULL text: no chunks yet.
SELECT_TEXT = """
SELECT (SELECT string_agg(c.text, ''::bytea ORDER BY c.char_offset) FROM chunks AS c WHERE c.job_id = j.id)
       AS text
FROM jobs AS j
WHERE j.id = %(id)s
"""

#: The chunk holding character ``offset`` and every later one, by the primary key.
SELECT_TEXT_FROM = """
SELECT c.char_offset, c.text FROM chunks AS c
WHERE c.job_id = %(id)s
  AND c.char_offset >= COALESCE(
      (SELECT MAX(char_offset) FROM chunks WHERE job_id = %(id)s AND char_offset <= %(offset)s), 0)
ORDER BY c.char_offset
"""

#: The same for many jobs: parallel arrays of ids and offsets.
SELECT_TEXTS_FROM = """
SELECT c.job_id, c.char_offset, c.text, w.wanted
FROM unnest(%(ids)s::text[], %(offsets)s::bigint[]) AS w(job_id, wanted)
CROSS JOIN LATERAL (
    SELECT COALESCE(MAX(s.char_offset), 0) AS start FROM chunks AS s
    WHERE s.job_id = w.job_id AND s.char_offset <= w.wanted
) AS first
JOIN chunks AS c ON c.job_id = w.job_id AND c.char_offset >= first.start
ORDER BY c.job_id, c.char_offset
"""

SELECT_PROGRESS = """
SELECT id, state, attempts, committed_chars FROM jobs WHERE id = ANY(%(ids)s::text[])
"""

SELECT_ATTEMPTS = """
SELECT a.*, COALESCE(a.chars_at_end, j.committed_chars) AS chars_now
FROM attempts AS a JOIN jobs AS j ON j.id = a.job_id
WHERE a.job_id = %(id)s
ORDER BY a.number
"""

SELECT_HISTORY = "SELECT * FROM transitions WHERE job_id = %(id)s ORDER BY id"

#: Every backend's shard summed: a few rows per backend that changed jobs since the last fold.
SELECT_TOTALS = """
SELECT state, model, prompt_cache, mode, sum(jobs) AS jobs, sum(committed_chars) AS committed_chars,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
       sum(cache_read_input_tokens) AS cache_read_input_tokens,
       sum(estimated_output_tokens) AS estimated_output_tokens,
       sum(document_tokens) AS document_tokens, sum(repeated_tokens) AS repeated_tokens,
       sum(wasted_output_tokens) AS wasted_output_tokens
FROM job_totals
GROUP BY state, model, prompt_cache, mode
HAVING sum(jobs) <> 0
ORDER BY state, model, prompt_cache, mode
"""

#: Moves every backend's shard into shard 0, so the table stays a few rows per group. Rows a
#: running transaction holds are skipped (never waited for: no deadlock with a trigger), and
#: folded by a later call.
FOLD_TOTALS = """
WITH moved AS (
    DELETE FROM job_totals
    WHERE ctid IN (SELECT ctid FROM job_totals WHERE shard <> 0 FOR UPDATE SKIP LOCKED)
    RETURNING *
)
INSERT INTO job_totals AS t (
    shard, state, model, prompt_cache, mode, jobs, committed_chars, input_tokens, output_tokens,
    cache_creation_input_tokens, cache_read_input_tokens, estimated_output_tokens,
    document_tokens, repeated_tokens, wasted_output_tokens
)
SELECT 0, state, model, prompt_cache, mode, sum(jobs), sum(committed_chars), sum(input_tokens),
       sum(output_tokens), sum(cache_creation_input_tokens), sum(cache_read_input_tokens),
       sum(estimated_output_tokens), sum(document_tokens), sum(repeated_tokens),
       sum(wasted_output_tokens)
FROM moved
GROUP BY state, model, prompt_cache, mode
ON CONFLICT (shard, state, model, prompt_cache, mode) DO UPDATE SET
    jobs = t.jobs + excluded.jobs, committed_chars = t.committed_chars + excluded.committed_chars,
    input_tokens = t.input_tokens + excluded.input_tokens,
    output_tokens = t.output_tokens + excluded.output_tokens,
    cache_creation_input_tokens = t.cache_creation_input_tokens + excluded.cache_creation_input_tokens,
    cache_read_input_tokens = t.cache_read_input_tokens + excluded.cache_read_input_tokens,
    estimated_output_tokens = t.estimated_output_tokens + excluded.estimated_output_tokens,
    document_tokens = t.document_tokens + excluded.document_tokens,
    repeated_tokens = t.repeated_tokens + excluded.repeated_tokens,
    wasted_output_tokens = t.wasted_output_tokens + excluded.wasted_output_tokens
"""

#: Fold only once the shards outnumber this many rows (a reader then writes, briefly).
FOLD_THRESHOLD = 256
COUNT_SHARDS = "SELECT count(*) AS n FROM job_totals"

#: The queue's health for ``/metrics`` (``jobs.models.QueueStats``): each figure reads one partial
#: index (jobs_due, jobs_running), never the whole table.
SELECT_QUEUE_STATS = """
SELECT
    (SELECT MIN(run_at) FROM jobs WHERE state = 'queued' AND run_at <= %(now)s) AS oldest_due_at,
    (SELECT MIN(updated_at) FROM jobs WHERE state = 'running') AS oldest_checkpoint_at,
    (SELECT count(*) FROM jobs WHERE state = 'running' AND lease_expires_at < %(now)s) AS expired_leases
"""
SELECT_PAUSES = """
SELECT key, paused_until, pause_reason FROM buckets WHERE paused_until > %(now)s ORDER BY key
"""

SELECT_NEXT_DUE = """
SELECT LEAST(
    (SELECT MIN(run_at) FROM jobs WHERE state = 'queued'),
    (SELECT MIN(lease_expires_at) FROM jobs WHERE state = 'running')
) AS due
"""

#: ``%(states)s`` is an array of state names, or NULL for every state.
LIST_JOBS = """
SELECT * FROM jobs
WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
  AND (%(after_id)s::text IS NULL OR id > %(after_id)s::text)
ORDER BY id
LIMIT %(limit)s
"""


# -- the dashboard (worker.server.dashboard) ---------------------------------------------------

#: The dashboard's filters (state, model, id prefix or metadata text), shared by every page order.
_FIND_FILTERS = """WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
  AND (%(model)s::text IS NULL OR model = %(model)s::text)
  AND (%(search)s::text IS NULL OR starts_with(id, %(search)s::text)
       OR strpos(metadata, %(search)s::text) > 0)"""

#: One page of the job list, walking the primary key from ``after_id`` (``''`` for the first page:
#: a plain bound, which the planner turns into a range of the key; behind ``OR IS NULL`` it would
#: not). About ``limit`` rows are read when the filters match most rows; a rare filter reads
#: further, never more than the table.
FIND_JOBS = f"""
SELECT * FROM jobs
{_FIND_FILTERS}
  AND id > %(after_id)s::text
ORDER BY id
LIMIT %(limit)s
"""

FIND_JOBS_DESC = f"""
SELECT * FROM jobs
{_FIND_FILTERS}
ORDER BY id DESC
LIMIT %(limit)s
"""

#: The next page in descending order (a separate statement: an ``OR`` with the bound would hide
#: it from the planner, which would then walk the key from the end to reach the page).
FIND_JOBS_DESC_AFTER = f"""
SELECT * FROM jobs
{_FIND_FILTERS}
  AND id < %(after_id)s::text
ORDER BY id DESC
LIMIT %(limit)s
"""

#: The same pages by enqueue time (oldest first), then id: a row-value bound walks the
#: ``jobs_created`` index from the previous page's last ``(created_at, id)``.
FIND_JOBS_CREATED = f"""
SELECT * FROM jobs
{_FIND_FILTERS}
  AND (created_at, id) > (%(after_created)s::float8, %(after_id)s::text)
ORDER BY created_at, id
LIMIT %(limit)s
"""

#: Newest first.
FIND_JOBS_CREATED_DESC = f"""
SELECT * FROM jobs
{_FIND_FILTERS}
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""

FIND_JOBS_CREATED_DESC_AFTER = f"""
SELECT * FROM jobs
{_FIND_FILTERS}
  AND (created_at, id) < (%(after_created)s::float8, %(after_id)s::text)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""

#: Workers holding leases now (the partial index ``jobs_running`` finds the running jobs).
SELECT_RUNNING_WORKERS = """
SELECT lease_owner AS worker, COUNT(*) AS running, MAX(updated_at) AS last_seen
FROM jobs WHERE state = 'running' AND lease_owner IS NOT NULL
GROUP BY lease_owner
"""

#: Workers of attempts that ended since ``since`` (a scan of attempts: no index on ``ended_at``).
SELECT_RECENT_WORKERS = """
SELECT worker, MAX(ended_at) AS last_seen FROM attempts
WHERE ended_at >= %(since)s GROUP BY worker
"""

SELECT_ALL_BUCKETS = "SELECT * FROM buckets ORDER BY key"

#: Attempts ended since ``since`` per minute and outcome: the fleet view's throughput chart.
SELECT_MINUTES = """
SELECT floor(ended_at / 60) * 60 AS minute, outcome, COUNT(*) AS attempts,
       SUM(output_tokens) AS output_tokens
FROM attempts WHERE ended_at >= %(since)s AND outcome IS NOT NULL
GROUP BY 1, outcome ORDER BY 1, outcome
"""

# -- rate-limit buckets ------------------------------------------------------------------------

LOCK_BUCKETS = "SELECT * FROM buckets WHERE key = %(key)s FOR UPDATE"

#: The first user of a key creates its row; a concurrent first user finds it and locks it.
INSERT_BUCKETS = """
INSERT INTO buckets (key, requests, input_tokens, output_tokens, updated_at, paused_until, pause_reason)
VALUES (%(key)s, %(requests)s, %(input_tokens)s, %(output_tokens)s, %(updated_at)s, %(paused_until)s,
        %(pause_reason)s)
ON CONFLICT (key) DO NOTHING
"""

UPDATE_BUCKETS = """
UPDATE buckets
SET requests = %(requests)s, input_tokens = %(input_tokens)s, output_tokens = %(output_tokens)s,
    updated_at = %(updated_at)s, paused_until = %(paused_until)s, pause_reason = %(pause_reason)s
WHERE key = %(key)s
"""

# -- batches (worker.batches) ------------------------------------------------------------------

#: A reserved job's place in its batch: parallel arrays of job ids and custom_ids.
SET_BATCH_ENTRIES = """
UPDATE jobs AS j SET batch_key = %(key)s, custom_id = e.custom_id
FROM unnest(%(ids)s::text[], %(custom_ids)s::text[]) AS e (id, custom_id)
WHERE j.id = e.id
"""

INSERT_BATCH = """
INSERT INTO batches (key, api_id, created_at, requests) VALUES (%(key)s, NULL, %(now)s, %(requests)s)
"""

SET_BATCH_API_ID = "UPDATE batches SET api_id = %(api_id)s WHERE key = %(key)s AND closed_at IS NULL"

CLOSE_BATCH = "UPDATE batches SET closed_at = %(now)s WHERE key = %(key)s AND closed_at IS NULL"

SELECT_OPEN_BATCHES = "SELECT * FROM batches WHERE closed_at IS NULL ORDER BY created_at, key"

#: Every open batch's jobs still running under it, in one query.
SELECT_BATCH_ENTRIES = """
SELECT j.batch_key, j.id, j.custom_id, j.lease_token, j.attempts
FROM jobs AS j JOIN batches AS b ON b.key = j.batch_key
WHERE b.closed_at IS NULL AND j.state = 'running' AND j.lease_token IS NOT NULL
ORDER BY j.id
"""

#: Queued batch jobs (``ids``, just re-queued and locked) become stream jobs: out of their batch
#: (one that is not yet submitted stops counting them, so a crashed submitter's reservation still
#: counts what it would have sent), with a history row giving ``reason``. Returns those switched.
SWITCH_TO_STREAM = """
WITH
old AS (
    SELECT id, batch_key FROM jobs
    WHERE id = ANY(%(ids)s::text[]) AND state = 'queued' AND mode = 'batch'
),
uncounted AS (
    UPDATE batches AS b SET requests = b.requests - c.n
    FROM (SELECT batch_key, count(*) AS n FROM old GROUP BY batch_key) AS c
    WHERE b.key = c.batch_key AND b.api_id IS NULL AND b.closed_at IS NULL
),
history AS (
    INSERT INTO transitions (job_id, at, from_state, to_state, reason, attempt)
    SELECT id, %(now)s, 'queued', 'queued', %(reason)s, NULL FROM old ORDER BY id
)
UPDATE jobs AS j
SET mode = 'stream', batch_key = NULL, custom_id = NULL, updated_at = %(now)s
FROM old
WHERE j.id = old.id
RETURNING j.*
"""

#: Take or renew a named fleet lease: only its owner, or anyone once it has expired. Returns the
#: row only when ``owner`` holds it now.
ACQUIRE_LEASE = """
INSERT INTO leases (name, owner, expires_at) VALUES (%(name)s, %(owner)s, %(expires_at)s)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE leases.owner = excluded.owner OR leases.expires_at <= %(now)s
RETURNING owner
"""
#: Characters of thinking a job keeps already (what the bound counts).
SELECT_THINKING_KEPT = "SELECT COALESCE(SUM(length(text)), 0) AS kept FROM thinking WHERE job_id = %(id)s"

INSERT_THINKING = """
INSERT INTO thinking (job_id, attempt, request, text, chars, created_at)
VALUES (%(id)s, %(attempt)s, %(request)s, %(text)s, %(chars)s, %(now)s)
ON CONFLICT (job_id, attempt, request) DO NOTHING
"""

SELECT_THINKING = "SELECT * FROM thinking WHERE job_id = %(id)s ORDER BY attempt, request"
