"""Queue throughput: how many jobs per second a store can claim and complete.

Method: enqueue N no-op jobs in one call, then run C concurrent claimers on one store, each
looping ``claim(limit=B)`` and ``settle(SUCCEEDED)`` per claimed job until the queue is empty. The
figure is jobs / wall-clock seconds of that phase; it measures the store's transactions (one claim
transaction per batch, one settle transaction per job), not any generation.

    python -m bench.queue_throughput                          # SQLite and PostgreSQL, side by side
    python -m bench.queue_throughput --jobs 5000 --concurrency 8 --batch 10
    python -m bench.queue_throughput --batch 10 --settle-many   # each batch settled in one call
    python -m bench.queue_throughput --pg-url postgresql://user@host/db   # which PostgreSQL server
    python -m bench.queue_throughput --url postgresql://…     # one store URL only; use an empty database

By default both backends run in the same invocation, one after the other with the same settings
(these machines are noisy: compare figures from one run, not across runs): SQLite on a fresh file
in a temporary folder, and PostgreSQL on a scratch database created on the ``--pg-url`` server
(``CREATE DATABASE``, so its user needs that right) and dropped afterwards. PostgreSQL is skipped,
with the reason, when the server cannot be reached or the driver is not installed.

The core is :func:`run`, so a suite can call it for each backend.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio

from jobs.backends import open_store
from jobs.models import AttemptResult, JobSpec, Message, Outcome, SettleRequest

__all__ = ("run", "main")


async def run(
    url: str, jobs: int = 2000, concurrency: int = 4, batch: int = 1, *, many: bool = False
) -> dict[str, Any]:
    """Enqueue ``jobs`` no-op jobs on the store at ``url``, then claim and settle them with
    ``concurrency`` claimers taking up to ``batch`` jobs per claim, settling each job alone or,
    with ``many``, each claimed batch in one ``settle_many``. Returns the measurements."""
    store = open_store(url)
    prefix = f"bench-{secrets.token_hex(4)}"
    specs = [JobSpec(f"{prefix}-{n:07}", (Message("user", "noop"),), "noop", 1, 1, 1) for n in range(jobs)]
    done = 0
    claims = 0
    try:
        started = time.perf_counter()
        await store.enqueue(specs)
        enqueue_seconds = time.perf_counter() - started

        async def claimer(n: int) -> None:
            nonlocal done, claims
            while batch_claims := await store.claim(f"bench-{n}", 60.0, limit=batch):
                claims += 1
                if many:
                    requests = [
                        SettleRequest(c.job.id, c.token, AttemptResult(Outcome.SUCCEEDED))
                        for c in batch_claims
                    ]
                    settled = await store.settle_many(requests)  # not in `done += …`: it reads first
                    done += sum(job is not None for job in settled)
                    continue
                for claim in batch_claims:
                    await store.settle(claim.job.id, claim.token, AttemptResult(Outcome.SUCCEEDED))
                    done += 1

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in range(concurrency):
                tg.start_soon(claimer, n)
        seconds = time.perf_counter() - started
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
    return {
        "url": url,
        "jobs": jobs,
        "concurrency": concurrency,
        "batch": batch,
        "settle": "settle_many" if many else "settle",
        "completed": done,
        "claim_calls": claims,
        "enqueue_seconds": round(enqueue_seconds, 3),
        "enqueue_jobs_per_second": round(jobs / enqueue_seconds, 1) if enqueue_seconds else None,
        "seconds": round(seconds, 3),
        "jobs_per_second": round(done / seconds, 1) if seconds else None,
    }


@asynccontextmanager
async def scratch_postgres(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server at ``server_url``, dropped on the way out."""
    import psycopg

    name = f"bench_{secrets.token_hex(6)}"
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True, connect_timeout=5) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        with anyio.CancelScope(shield=True):
            async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


async def run_backends(
    urls: list[str], pg_url: str | None, jobs: int, concurrency: int, batch: int, *, many: bool = False
) -> list[dict[str, Any]]:
    """Run each store URL, then (if ``pg_url``) a scratch PostgreSQL database, in this process.
    A PostgreSQL server that cannot be used gives a result with ``skipped`` and the reason."""
    results = [await run(url, jobs, concurrency, batch, many=many) for url in urls]
    if pg_url is not None:
        try:
            async with scratch_postgres(pg_url) as url:
                result = await run(url, jobs, concurrency, batch, many=many)
                result["url"] = (
                    f"postgresql (scratch database on {urlsplit(pg_url).netloc.rpartition('@')[2]})"
                )
                results.append(result)
        except ImportError as exc:
            results.append({"url": "postgresql", "skipped": f"driver not installed ({exc})"})
        except OSError as exc:
            results.append({"url": "postgresql", "skipped": str(exc).strip()})
        except Exception as exc:
            import psycopg

            from jobs.errors import StoreError

            if not isinstance(exc, psycopg.Error | StoreError):
                raise
            results.append({"url": "postgresql", "skipped": str(exc).strip()})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.queue_throughput",
        description="Claim + complete throughput of the job stores (no generation): SQLite and "
        "PostgreSQL side by side.",
    )
    parser.add_argument("--url", help="measure only this store URL (use an empty database)")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/postgres"),
        help="PostgreSQL server for the scratch database (default: $TEST_PG_DSN or "
        "postgresql://root@127.0.0.1:5432/postgres); 'none' skips PostgreSQL",
    )
    parser.add_argument("--jobs", type=int, default=2000, help="jobs to enqueue and complete (default 2000)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent claimers (default 4)")
    parser.add_argument("--batch", type=int, default=1, help="jobs per claim call (default 1)")
    parser.add_argument(
        "--settle-many", action="store_true", help="settle each claimed batch in one settle_many call"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON lines")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        urls = [args.url] if args.url else [f"sqlite:///{Path(folder) / 'bench.db'}"]
        pg_url = None if args.url or args.pg_url == "none" else args.pg_url
        results = anyio.run(
            partial(run_backends, many=args.settle_many),
            urls,
            pg_url,
            args.jobs,
            args.concurrency,
            args.batch,
        )
    if args.json:
        for result in results:
            print(json.dumps(result))
        return 0
    print(
        f"method: per store, enqueue {args.jobs} no-op jobs in one call, then {args.concurrency} "
        f"concurrent claimers in one process loop claim(limit={args.batch}) + "
        f"{'settle_many(the batch)' if args.settle_many else 'settle(succeeded) per job'} "
        "until the queue is empty; jobs/s = completed jobs / wall-clock seconds of that phase. "
        "Stores run one after the other in this process, with the same settings."
    )
    failed = False
    for result in results:
        print(f"\nstore:  {result['url']}")
        if "skipped" in result:
            print(f"skipped: {result['skipped']}")
            continue
        print(f"enqueue: {result['enqueue_jobs_per_second']} jobs/s ({result['enqueue_seconds']} s)")
        print(
            f"claim+complete: {result['jobs_per_second']} jobs/s "
            f"({result['completed']} jobs in {result['seconds']} s, {result['claim_calls']} claim calls)"
        )
        failed |= result["completed"] != args.jobs
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
