"""Queue throughput: how many jobs per second a store can claim and complete.

Method: enqueue N no-op jobs in one call, then run C concurrent claimers on one store, each
looping ``claim(limit=B)`` and ``settle(SUCCEEDED)`` per claimed job until the queue is empty. The
figure is jobs / wall-clock seconds of that phase; it measures the store's transactions (one claim
transaction per batch, one settle transaction per job), not any generation.

    python -m bench.queue_throughput                          # a fresh SQLite file in a temp folder
    python -m bench.queue_throughput --jobs 5000 --concurrency 8 --batch 10
    python -m bench.queue_throughput --url postgresql://…     # any store URL; use an empty database

The core is :func:`run`, so a suite can call it for each backend.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from jobs.models import AttemptResult, JobSpec, Message, Outcome
from jobs.store import open_store

__all__ = ("run", "main")


async def run(url: str, jobs: int = 2000, concurrency: int = 4, batch: int = 1) -> dict[str, Any]:
    """Enqueue ``jobs`` no-op jobs on the store at ``url``, then claim and settle them with
    ``concurrency`` claimers taking up to ``batch`` jobs per claim. Returns the measurements."""
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
        "completed": done,
        "claim_calls": claims,
        "enqueue_seconds": round(enqueue_seconds, 3),
        "enqueue_jobs_per_second": round(jobs / enqueue_seconds, 1) if enqueue_seconds else None,
        "seconds": round(seconds, 3),
        "jobs_per_second": round(done / seconds, 1) if seconds else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.queue_throughput",
        description="Claim + complete throughput of a job store (no generation).",
    )
    parser.add_argument("--url", help="store URL (default: a new SQLite file in a temporary folder)")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs to enqueue and complete (default 2000)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent claimers (default 4)")
    parser.add_argument("--batch", type=int, default=1, help="jobs per claim call (default 1)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        url = args.url or f"sqlite:///{Path(folder) / 'bench.db'}"
        result = anyio.run(run, url, args.jobs, args.concurrency, args.batch)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"method: enqueue {args.jobs} no-op jobs, then {args.concurrency} concurrent claimers loop "
        f"claim(limit={args.batch}) + settle(succeeded) per job until the queue is empty"
    )
    print(f"store:  {result['url']}")
    print(f"enqueue: {result['enqueue_jobs_per_second']} jobs/s ({result['enqueue_seconds']} s)")
    print(
        f"claim+complete: {result['jobs_per_second']} jobs/s "
        f"({result['completed']} jobs in {result['seconds']} s, {result['claim_calls']} claim calls)"
    )
    return 0 if result["completed"] == args.jobs else 1


if __name__ == "__main__":
    raise SystemExit(main())
