"""Retention: database size per 1,000 documents, chunks compacted or not, and prune throughput,
on SQLite and PostgreSQL side by side in one run.

    python -m bench.retention                      # 1,000 documents of ~20,000 characters
    python -m bench.retention --docs 200 --chunk-chars 2000 --no-postgres

Each document (about 5,000 tokens: 20,000 characters of English prose cut from this project's
Markdown at a different place for every document) is written through the store API as a worker
writes it: claimed, then committed in checkpoints of ``--chunk-chars`` characters, one
``commit`` per round for every document at once (the writer's one flush per process). Two
chunk sizes by default: 2,000 characters (the ``checkpoint_chars`` default, reached by fast
streams) and 200 (a one-second checkpoint of a stream at 50 tokens/s, the usual case). The
size is measured twice on the same data:

* **not compacted**: every document written, still running (one row per checkpoint);
* **compacted**: the same documents after ``settle_many`` ended them (one text row each; the
  settle also closes the attempt and adds a history row, so this side carries slightly more).

Sizes are of the live data: SQLite ``VACUUM INTO`` a copy (free pages dropped), PostgreSQL
``VACUUM FULL`` then the tables, their indexes and TOAST summed; minus an empty queue's size.
Then ``prune`` deletes every document (text, attempts, history, totals), timed: jobs per second;
and first, the prune rate over many batches: ``--prune-jobs`` finished jobs (one 2,000-character
chunk, an attempt, three history rows each) deleted 1,000 per transaction.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from bench.queue_throughput import scratch_postgres
from jobs.backends import open_store
from jobs.models import AttemptResult, CheckpointWrite, Claim, JobSpec, Message, Outcome, SettleRequest
from jobs.store import Store

__all__ = ("main", "run")

DOC_CHARS = 20_000
#: Real prose to cut documents from: this project's own Markdown (prose, lists, tables and code,
#: as long-form model output has), so the compression PostgreSQL applies to large values sees
#: text like a model's rather than a synthetic one that compresses far better.
_SOURCES = ("README.md", "CHANGELOG.md", "BENCHMARKS.md")
_ROOT = Path(__file__).resolve().parents[1]


def _corpus() -> str:
    text = "\n\n".join((_ROOT / name).read_text(encoding="utf-8") for name in _SOURCES)
    assert len(text) > 2 * DOC_CHARS, "the corpus is too short to cut documents from"
    return text


def _document(corpus: str, seed: int) -> str:
    """``DOC_CHARS`` characters of the corpus from a place chosen by ``seed``, wrapping around."""
    start = random.Random(seed).randrange(len(corpus))
    return (corpus[start:] + "\n\n" + corpus)[:DOC_CHARS]


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def _write(store: Store, docs: int, chunk: int) -> list[Claim]:
    """Enqueue, claim and write every document in rounds of one chunk per document."""
    specs = [
        JobSpec(
            f"doc-{i:06}", (Message("user", "Write a long document."),), "claude-sonnet-4-5", 8000, 20000, 5
        )
        for i in range(docs)
    ]
    await store.enqueue(specs)
    claims: list[Claim] = []
    while len(claims) < docs:
        claims += await store.claim("bench", 3600, limit=1000)
    corpus = _corpus()
    texts = {c.job.id: _document(corpus, i) for i, c in enumerate(claims)}
    for start in range(0, DOC_CHARS, chunk):
        writes = [
            CheckpointWrite(c.job.id, c.token, start, texts[c.job.id][start : start + chunk]) for c in claims
        ]
        for first in range(0, len(writes), 1000):
            await store.commit(writes[first : first + 1000], 3600)
    return claims


async def _settle_all(store: Store, claims: list[Claim]) -> None:
    for first in range(0, len(claims), 500):
        batch = claims[first : first + 500]
        await store.settle_many(
            [SettleRequest(c.job.id, c.token, AttemptResult(Outcome.SUCCEEDED)) for c in batch]
        )


#: (the whole database, the ``chunks`` table with its index and TOAST) in bytes.
Sizes = tuple[int, int]


def _sqlite_size(path: Path) -> Sizes:
    copy = path.with_suffix(".vacuumed")
    copy.unlink(missing_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM INTO ?", (str(copy),))
    with sqlite3.connect(copy) as conn:  # dbstat: the pages of each table and index
        query = "SELECT sum(pgsize) FROM dbstat WHERE name IN ('chunks', 'sqlite_autoindex_chunks_1')"
        chunks = int(conn.execute(query).fetchone()[0] or 0)
    size = copy.stat().st_size
    copy.unlink()
    return size, chunks


async def _pg_size(url: str) -> Sizes:
    """After ``VACUUM FULL``. The chunks figure is the one to compare: ``jobs`` rows take a new
    version per checkpoint, and another session's old snapshot on the shared server can keep
    ``VACUUM FULL`` from dropping the dead ones (seen once: +11 MB on the uncompacted side)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("VACUUM FULL")
        cur = await conn.execute(
            "SELECT sum(pg_total_relation_size(oid)),"
            " sum(pg_total_relation_size(oid)) FILTER (WHERE relname = 'chunks') FROM pg_class"
            " WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0] or 0), int(row[1] or 0)


async def _measure(url: str, size: Any, docs: int, chunk: int) -> dict[str, Any]:
    """Sizes before and after compaction, and the prune's rate, on the store at ``url``."""
    clock = _Clock()
    store = open_store(url, clock=clock)
    try:
        await store.counts()  # the schema
        empty = await size()
        started = time.perf_counter()
        claims = await _write(store, docs, chunk)
        written = time.perf_counter() - started
        raw = await size()
        started = time.perf_counter()
        await _settle_all(store, claims)
        settled = time.perf_counter() - started
        compacted = await size()
        clock.now += 2 * 86_400
        started = time.perf_counter()
        pruned = await store.prune(86_400)
        seconds = time.perf_counter() - started
        assert pruned == docs, pruned
        assert sum(t.jobs for t in await store.totals()) == 0
    finally:
        await store.close()
    per_1000 = 1000 / docs
    return {
        "chunk_chars": chunk,
        "docs": docs,
        "text_mb_per_1000": round(DOC_CHARS * 1000 / 1e6, 1),
        "not_compacted_mb_per_1000": round((raw[0] - empty[0]) * per_1000 / 1e6, 2),
        "compacted_mb_per_1000": round((compacted[0] - empty[0]) * per_1000 / 1e6, 2),
        "chunks_not_compacted_mb_per_1000": round((raw[1] - empty[1]) * per_1000 / 1e6, 2),
        "chunks_compacted_mb_per_1000": round((compacted[1] - empty[1]) * per_1000 / 1e6, 2),
        "write_seconds": round(written, 2),
        # settle_many of 500 at a time, each compacting its documents in its transaction
        "settle_ms_per_doc": round(1000 * settled / docs, 3),
        "prune_seconds": round(seconds, 3),
        "prune_jobs_per_second": round(docs / seconds) if seconds else None,
    }


async def _prune_rate(url: str, jobs: int) -> dict[str, Any]:
    """``prune`` of ``jobs`` finished jobs (one 2,000-character chunk, an attempt and three history
    rows each) in its batches of 1,000: the rate over many transactions."""
    clock = _Clock()
    store = open_store(url, clock=clock)
    try:
        text, settling = _corpus()[:2000], 0.0
        for first in range(0, jobs, 1000):
            count = min(1000, jobs - first)
            specs = [
                JobSpec(f"p-{i:07}", (Message("user", "Write."),), "claude-sonnet-4-5", 8000, 20000, 5)
                for i in range(first, first + count)
            ]
            await store.enqueue(specs)
            claims = await store.claim("bench", 3600, limit=count)
            await store.commit([CheckpointWrite(c.job.id, c.token, 0, text) for c in claims], 3600)
            started = time.perf_counter()
            await _settle_all(store, claims)
            settling += time.perf_counter() - started
        clock.now += 2 * 86_400
        started = time.perf_counter()
        pruned = await store.prune(86_400)
        seconds = time.perf_counter() - started
        assert pruned == jobs, pruned
    finally:
        await store.close()
    return {
        "jobs": jobs,
        "prune_seconds": round(seconds, 2),
        "prune_jobs_per_second": round(jobs / seconds),
        # the same settle_many, for jobs of one chunk (nothing to compact): the baseline
        "settle_ms_per_job": round(1000 * settling / jobs, 3),
    }


async def run(
    docs: int, chunks: list[int], pg_url: str | None, prune_jobs: int
) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgresql": []}
    with tempfile.TemporaryDirectory() as folder:
        result["sqlite"].append(await _prune_rate(f"sqlite:///{Path(folder) / 'prune.db'}", prune_jobs))
    if pg_url is not None:
        async with scratch_postgres(pg_url) as url:
            result["postgresql"].append(await _prune_rate(url, prune_jobs))
    for chunk in chunks:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "retention.db"

            async def lite_size(path: Path = path) -> Sizes:
                return await anyio.to_thread.run_sync(_sqlite_size, path)

            result["sqlite"].append(await _measure(f"sqlite:///{path}", lite_size, docs, chunk))
        if pg_url is not None:
            async with scratch_postgres(pg_url) as url:

                async def pg_size(url: str = url) -> Sizes:
                    return await _pg_size(url)

                result["postgresql"].append(await _measure(url, pg_size, docs, chunk))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000, help="documents per backend and chunk size")
    parser.add_argument(
        "--chunk-chars",
        default="2000,200",
        help="checkpoint sizes to write, comma-separated (default 2000,200)",
    )
    parser.add_argument(
        "--pg-url", default=os.environ.get("TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/postgres")
    )
    parser.add_argument(
        "--prune-jobs", type=int, default=20_000, help="finished jobs for the prune rate (default 20000)"
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    chunks = [int(c) for c in args.chunk_chars.split(",")]
    pg_url = None if args.no_postgres else args.pg_url
    print(json.dumps(anyio.run(run, args.docs, chunks, pg_url, args.prune_jobs), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
