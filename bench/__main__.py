"""``python -m bench``: run the whole benchmark suite and write BENCHMARKS.md.

Each row compares two things measured side by side in the same run (these machines are noisy:
compare within a run, not across runs) and says how. About 6 minutes on a 2-core machine;
``--quick`` is a smoke run of a minute or two with small parameters (its figures are not the
report's). Never part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio

from bench import (
    batches,
    concurrency,
    cpu_per_token,
    economy,
    joins,
    metrics_overhead,
    queue_throughput,
    rate_limits,
    relay,
    sigkill,
    status_scale,
    vs_pgqueuer,
    waste,
)
from bench.common import Row
from worker.config import QueueSettings
from worker.logs import configure_logging

ROOT = Path(__file__).resolve().parent.parent


def _pg_url() -> str:
    return os.environ.get("TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/postgres")


async def _queue_rows(jobs: int) -> list[Row]:
    pg_url = _pg_url()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        for batch in (1, 10):
            url = f"sqlite:///{Path(folder) / f'bench-{batch}.db'}"
            results = await queue_throughput.run_backends([url], pg_url, jobs, 4, batch)
            by_name = {("sqlite" if r["url"].startswith("sqlite") else "postgresql"): r for r in results}
            sqlite_rate = by_name["sqlite"]["jobs_per_second"]
            pg = by_name.get("postgresql", {})
            pg_text = (
                f"skipped: {pg['skipped']}"
                if "skipped" in pg
                else f"{pg['jobs_per_second']} jobs/s PostgreSQL"
            )
            ratio = "" if "skipped" in pg else f"PostgreSQL {pg['jobs_per_second'] / sqlite_rate:.2f}× SQLite"
            rows.append(
                Row(
                    name=f"No-op queue throughput, claim(limit={batch}) + complete",
                    ours=pg_text,
                    baseline=f"{sqlite_rate} jobs/s SQLite",
                    ratio=ratio,
                    method=(
                        f"{jobs} no-op jobs enqueued at once, then 4 concurrent claimers in one process "
                        f"loop claim(limit={batch}) + settle(succeeded); jobs/s = jobs / wall seconds; "
                        "SQLite on a fresh file, PostgreSQL on a scratch database of the local server"
                    ),
                )
            )
    return rows


async def suite(quick: bool) -> list[tuple[str, list[Row], float]]:
    plan: list[tuple[str, Callable[[], Awaitable[list[Row]]]]] = [
        ("cpu", lambda: cpu_per_token.run([2000] if quick else [10_000, 100_000], 1 if quick else 3)),
        ("waste", lambda: waste.run(10 if quick else 60, 500 if quick else 2000)),
        ("economy", lambda: economy.run(10 if quick else 100, 4000, 3000)),
        ("rate limits", lambda: rate_limits.run(70.0 if quick else 150.0)),
        ("sigkill", lambda: sigkill.run(1 if quick else 3, 3.0 if quick else QueueSettings().lease_seconds)),
        ("concurrency", lambda: concurrency.run([100] if quick else [250, 1000], 10.0 if quick else 30.0)),
        ("queue", lambda: _queue_rows(300 if quick else 2000)),
        ("joins", lambda: joins.run(1000 if quick else 10_000)),
        ("pgqueuer", lambda: vs_pgqueuer.rows(_pg_url(), 500 if quick else 5000)),
        (
            "status",
            lambda: status_scale.rows(20_000 if quick else 200_000, 2_000 if quick else 20_000, _pg_url()),
        ),
        ("relay", lambda: relay.run(quick)),
        ("batches", lambda: batches.suite_rows(100 if quick else 1000, 300)),
        (
            "metrics",
            lambda: metrics_overhead.run([(1, 2000), (20, 200)] if quick else [(1, 20_000), (200, 300)], 5),
        ),
    ]
    done: list[tuple[str, list[Row], float]] = []
    for name, step in plan:
        started = time.monotonic()
        print(f"== {name} ...", flush=True)
        rows = await step()
        elapsed = time.monotonic() - started
        for row in rows:
            print(f"   {row.name}: {row.ours} | {row.baseline} | {row.ratio}", flush=True)
        done.append((name, rows, elapsed))
    return done


def render(results: list[tuple[str, list[Row], float]], quick: bool, total: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python -m bench{' --quick' if quick else ''}` on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}: Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}; {total / 60:.1f} minutes in all.",
        "",
        "Every row measures ours and its baseline side by side in the same run, against the bundled",
        "simulator (a separate process, so its CPU is not counted) over real HTTP with the real SDK.",
        "These machines are noisy: compare figures within this table, not with another run's.",
        "",
        "| what | ours | baseline | ratio |",
        "|---|---|---|---|",
    ]
    for _, rows, _ in results:
        for row in rows:
            lines.append(f"| {row.name} | {row.ours} | {row.baseline} | {row.ratio} |")
    lines += ["", "## How each row was measured", ""]
    for name, rows, elapsed in results:
        for row in rows:
            lines.append(f"- **{row.name}** ({name}, {elapsed:.0f} s): {row.method}.")
    lines += [
        "",
        "Reproduce one row: `python -m bench.cpu_per_token`, `python -m bench.waste`, "
        "`python -m bench.economy`, `python -m bench.rate_limits`, `python -m bench.sigkill`, "
        "`python -m bench.concurrency`, `python -m bench.queue_throughput`, `python -m bench.vs_pgqueuer`, "
        "`python -m bench.joins`, `python -m bench.metrics_overhead`, "
        "`python -m bench.status_scale` (each `--help` shows its parameters).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run with small parameters")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default BENCHMARKS.md)")
    args = parser.parse_args()
    configure_logging("json", "error", stream=sys.stderr)
    started = time.monotonic()
    results = anyio.run(suite, args.quick)
    total = time.monotonic() - started
    out = args.out or (ROOT / ("BENCHMARKS.quick.md" if args.quick else "BENCHMARKS.md"))
    out.write_text(render(results, args.quick, total), encoding="utf-8")
    print(f"\nwrote {out} ({total / 60:.1f} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
