"""pgqueuer's no-op throughput, run inside a benchmark-only environment that has pgqueuer installed.

    python bench/peers/pgqueuer_noop.py DSN JOBS BATCH

Prints one JSON line: ``{"jobs": N, "seconds": S, "jobs_per_second": R, "enqueue_seconds": E}``.

Method, the same shape as pgqueuer's own benchmark and as ``bench.queue_throughput``: install
pgqueuer's schema on an empty database, enqueue ``JOBS`` no-op jobs in batched calls, then run one
``QueueManager`` in drain mode (dequeue ``BATCH`` jobs per query over LISTEN/NOTIFY, a no-op
entrypoint, pgqueuer's buffered completion and log writes) until the queue is empty. This file
runs in a separate interpreter and is excluded from our type check and dependency check: pgqueuer
is not one of our dependencies.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode


async def main(dsn: str, jobs: int, batch: int) -> None:
    connection = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(connection))
    await queries.install()
    started = time.perf_counter()
    for start in range(0, jobs, 1000):
        count = min(1000, jobs - start)
        await queries.enqueue(["noop"] * count, [None] * count, [0] * count)
    enqueue_seconds = time.perf_counter() - started

    pgq = PgQueuer(AsyncpgDriver(connection))
    done = 0

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        nonlocal done
        done += 1

    started = time.perf_counter()
    await pgq.qm.run(batch_size=batch, mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1))
    seconds = time.perf_counter() - started
    await connection.close()
    print(
        json.dumps(
            {
                "jobs": done,
                "seconds": round(seconds, 3),
                "jobs_per_second": round(done / seconds, 1),
                "enqueue_seconds": round(enqueue_seconds, 3),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
