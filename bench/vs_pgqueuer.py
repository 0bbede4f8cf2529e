"""Claim-and-complete throughput against pgqueuer, on the same PostgreSQL server, in one run.

    python -m bench.vs_pgqueuer                  # 5,000 no-op jobs each, batches of 10
    python -m bench.vs_pgqueuer --jobs 20000 --batch 50 --pg-url postgresql://user@host/db

pgqueuer is not one of our dependencies, so it is installed, at a pinned version, into a
benchmark-only environment (``.venv-bench-peers``, created on first use from the package index)
and run there by ``bench/peers/pgqueuer_noop.py``: its own no-op loop (batched dequeue over
LISTEN/NOTIFY, buffered completion and log writes, drain mode). Ours is ``bench.queue_throughput``
on the same server with the same job count and batch size, each claimed batch settled by one
``settle_many`` (the counterpart of pgqueuer's buffered completions; ``--settle-each`` settles job
by job): leases with tokens, fenced settles, an attempt record and a history row per transition,
which pgqueuer does not keep. Each side gets a
fresh scratch database; they run one after the other, and the figure to read is the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import venv
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from bench.common import Row
from bench.queue_throughput import run as run_ours
from bench.queue_throughput import scratch_postgres

__all__ = ("PGQUEUER", "main", "rows", "run_pgqueuer")

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / ".venv-bench-peers"
#: The peer, pinned so that a rerun measures the same code.
PGQUEUER = "pgqueuer[asyncpg]==1.6.0"


def peer_python() -> Path:
    """The benchmark-only environment's interpreter, with pgqueuer installed (first use only)."""
    python = PEER_VENV / "bin" / "python"
    marker = PEER_VENV / ".installed"
    if not marker.exists() or marker.read_text() != PGQUEUER:
        venv.EnvBuilder(with_pip=True, clear=True).create(PEER_VENV)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PGQUEUER]
        subprocess.run(pip, check=True)
        marker.write_text(PGQUEUER)
    return python


async def run_pgqueuer(server_url: str, jobs: int, batch: int) -> dict[str, Any]:
    script = ROOT / "bench" / "peers" / "pgqueuer_noop.py"
    async with scratch_postgres(server_url) as url:
        done = await anyio.run_process([str(peer_python()), str(script), url, str(jobs), str(batch)])
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


async def run_both(
    server_url: str, jobs: int, batch: int, concurrency: int, *, many: bool = True
) -> tuple[dict[str, Any], ...]:
    """pgqueuer, then ours settling each claimed batch in one ``settle_many`` (``many``, the
    counterpart of pgqueuer's buffered completions) or each job alone, on fresh databases."""
    peer = await run_pgqueuer(server_url, jobs, batch)
    async with scratch_postgres(server_url) as url:
        ours = await run_ours(url, jobs, concurrency, batch, many=many)
    return peer, ours


async def rows(server_url: str, jobs: int, batch: int = 10, concurrency: int = 4) -> list[Row]:
    """The suite's row; a server or an index that cannot be reached gives a row that says so."""
    name = f"No-op claim + complete vs pgqueuer, batches of {batch}"
    try:
        peer, ours = await run_both(server_url, jobs, batch, concurrency)
    except (OSError, subprocess.CalledProcessError) as exc:
        return [Row(name, f"skipped: {exc}", "", "", "pgqueuer could not be installed or run")]
    return [
        Row(
            name=name,
            ours=f"{ours['jobs_per_second']} jobs/s (leases, fencing, attempts and history kept)",
            baseline=f"{peer['jobs_per_second']} jobs/s ({PGQUEUER.replace('[asyncpg]==', ' ')}, asyncpg)",
            ratio=f"{ours['jobs_per_second'] / peer['jobs_per_second']:.2f}× pgqueuer",
            method=(
                f"{jobs} no-op jobs each on a fresh database of the same local PostgreSQL; pgqueuer's "
                f"QueueManager in drain mode, batch_size {batch}, in a benchmark-only environment; ours "
                f"{concurrency} claimers looping claim(limit={batch}) + settle_many(the batch): one "
                "transaction per claim and one per batch settled, each settle fenced by its token "
                "and recorded (attempt closed, transition row)"
            ),
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vs_pgqueuer", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--pg-url", default=os.environ.get("TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=10, help="jobs per claim / dequeue (default 10)")
    parser.add_argument("--concurrency", type=int, default=4, help="our concurrent claimers (default 4)")
    parser.add_argument(
        "--settle-each", action="store_true", help="ours settles each job alone (default: settle_many)"
    )
    args = parser.parse_args(argv)
    run = partial(run_both, many=not args.settle_each)
    peer, ours = anyio.run(run, args.pg_url, args.jobs, args.batch, args.concurrency)
    ratio = ours["jobs_per_second"] / peer["jobs_per_second"]
    print(f"method: {args.jobs} no-op jobs each, batches of {args.batch}, fresh databases on one server")
    print(
        f"pgqueuer ({PGQUEUER}): {peer['jobs_per_second']} jobs/s "
        f"({peer['jobs']} jobs in {peer['seconds']} s)"
    )
    print(
        f"ours ({args.concurrency} claimers, {ours['settle']}, leases + fencing + history): "
        f"{ours['jobs_per_second']} jobs/s "
        f"({ours['completed']} jobs in {ours['seconds']} s)"
    )
    print(f"ratio ours / pgqueuer: {ratio:.2f}x")
    return 0 if ours["completed"] == args.jobs == peer["jobs"] else 1


if __name__ == "__main__":
    sys.exit(main())
