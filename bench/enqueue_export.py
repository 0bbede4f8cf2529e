"""``enqueue`` and ``export`` streamed, beside the previous code path, in one run.

    python -m bench.enqueue_export                    # 100,000 and 1,000,000 lines, export of 100,000
    python -m bench.enqueue_export --lines 20000 --big-lines 200000 --export-jobs 20000 --no-postgres

Every figure is one child process running ``python -m worker enqueue FILE`` (or ``export``) as a
user would, start-up included: jobs/s = lines ÷ the child's wall time; peak RSS is that child's
own ``ru_maxrss`` (``os.wait4``, so no other child is counted). The previous code path is the
same command at ``--previous`` (default: the commit before streaming enqueue), extracted with
``git archive`` into a temporary folder and run with the same interpreter and packages: it read
the whole file, validated it, then inserted it. Each SQLite run gets a fresh file, each
PostgreSQL run a fresh scratch database. The constant-memory claim is the ratio of peak RSS
enqueueing ``--big-lines`` lines to ``--lines`` lines (ours; the previous path would need
gigabytes). Export: ``--export-jobs`` succeeded jobs of ~1,000 characters on SQLite, written to
an empty folder by each code path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from bench.queue_throughput import scratch_postgres

__all__ = ("main", "run")

ROOT = Path(__file__).resolve().parents[1]
#: The commit before streaming enqueue and export (issue 20, items 2 and 3).
PREVIOUS = "993ad8d"
_TEXT = "The tide turns twice a day; a sailor reads it from the almanac and the shore. " * 13


@dataclass(frozen=True, slots=True)
class Measured:
    seconds: float
    #: User + system CPU seconds of the child: what a shared, loaded machine distorts least.
    cpu: float
    rss_mb: float
    out: str


def write_jobs(path: Path, lines: int) -> Path:
    """``lines`` job lines, as a user's file would have them (an id, a prompt, some metadata)."""
    with path.open("w", encoding="utf-8") as file:
        for n in range(lines):
            job = {"id": f"doc-{n:08d}", "prompt": f"Write a long guide to topic {n}.", "metadata": {"n": n}}
            file.write(json.dumps(job) + "\n")
    return path


def previous_tree(rev: str, into: Path) -> Path:
    """The tree of ``rev``, extracted (``git archive``: the repository is only read)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    tar = into / "previous.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as handle:
        handle.extractall(into / "previous", filter="data")
    return into / "previous"


def child_measured(tree: Path, args: list[str]) -> Measured:
    """``python -m worker ARGS`` run from ``tree``: wall seconds, its own peak RSS (``os.wait4``
    on its pid, before ``Popen`` could reap it), its stdout."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", *args], cwd=tree, env=env, stdout=out, stderr=err
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{args} in {tree} exited {process.returncode}: {err.read().decode()[-2000:]}")
        return Measured(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read().decode())


def config(folder: Path, url: str) -> Path:
    path = folder / f"config-{time.monotonic_ns()}.toml"
    path.write_text(f'[queue]\nurl = "{url}"\n', "utf-8")
    return path


def enqueue(tree: Path, url: str, file: Path, lines: int, folder: Path) -> dict[str, Any]:
    measured = child_measured(tree, ["enqueue", str(file), "--config", str(config(folder, url))])
    if f"enqueued {lines} jobs" not in measured.out:
        raise RuntimeError(f"unexpected output: {measured.out!r}")
    return _figures(measured, lines)


def _figures(measured: Measured, jobs: int) -> dict[str, Any]:
    return {
        "jobs_per_s": jobs / measured.seconds,
        "jobs_per_cpu_s": jobs / measured.cpu,
        "seconds": measured.seconds,
        "rss_mb": measured.rss_mb,
    }


def fill_succeeded(db: Path) -> int:
    """Mark every job of ``db`` succeeded with ~1,000 characters of text (one chunk each)."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO chunks (job_id, seq, char_offset, attempt, text, created_at) "
            "SELECT id, 0, 0, 1, '# ' || id || char(10) || :text, created_at FROM jobs",
            {"text": _TEXT},
        )
        conn.execute(
            "UPDATE jobs SET state = 'succeeded', attempts = 1, started_at = created_at, "
            "finished_at = created_at + 1, committed_chars = length(id) + 3 + :chars",
            {"chars": len(_TEXT)},
        )
        return int(conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])


def export(tree: Path, url: str, out: Path, jobs: int, folder: Path) -> dict[str, Any]:
    measured = child_measured(tree, ["export", "--out", str(out), "--config", str(config(folder, url))])
    if f"exported {jobs} jobs" not in measured.out:
        raise RuntimeError(f"unexpected output: {measured.out!r}")
    return _figures(measured, jobs)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time, with every run's jobs/s beside it."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[len(ordered) // 2], "runs_jobs_per_s": [round(r["jobs_per_s"]) for r in runs]}


async def _pairs(
    args: argparse.Namespace, folder: Path, previous: Path, file: Path, backend: str
) -> dict[str, Any]:
    """Ours and the previous path, alternating ``--repeat`` times, each on a fresh queue."""
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "previous": []}
    for n in range(args.repeat):
        for name, tree in (("ours", ROOT), ("previous", previous))[:: 1 if n % 2 == 0 else -1]:
            if backend == "sqlite":
                db = folder / f"{name}-{n}.db"
                runs[name].append(enqueue(tree, f"sqlite:///{db}", file, args.lines, folder))
                db.unlink()
            else:
                async with scratch_postgres(args.pg_url) as url:
                    runs[name].append(enqueue(tree, url, file, args.lines, folder))
    return {f"{backend}_{name}": median_of(found) for name, found in runs.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-enqueue-") as scratch:
        folder = Path(scratch)
        previous = previous_tree(args.previous, folder)
        small = write_jobs(folder / "small.jsonl", args.lines)
        result: dict[str, Any] = {"lines": args.lines, "previous": args.previous, "repeat": args.repeat}
        result.update(await _pairs(args, folder, previous, small, "sqlite"))
        if args.pg_url:
            result.update(await _pairs(args, folder, previous, small, "postgres"))
        big = write_jobs(folder / "big.jsonl", args.big_lines)
        small.unlink()
        result["big_lines"] = args.big_lines
        result["sqlite_ours_big"] = enqueue(
            ROOT, f"sqlite:///{folder / 'big.db'}", big, args.big_lines, folder
        )
        big.unlink()
        (folder / "big.db").unlink()
        result.update(await _exports(args, folder, previous))
    return result


async def _exports(args: argparse.Namespace, folder: Path, previous: Path) -> dict[str, Any]:
    file = write_jobs(folder / "export.jsonl", args.export_jobs)
    db = folder / "export.db"
    enqueue(ROOT, f"sqlite:///{db}", file, args.export_jobs, folder)
    jobs = fill_succeeded(db)
    out: dict[str, Any] = {"export_jobs": jobs}
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "previous": []}
    for n in range(args.export_repeat):
        for name, tree in (("ours", ROOT), ("previous", previous))[:: 1 if n % 2 == 0 else -1]:
            target = folder / f"out-{name}-{n}"
            runs[name].append(export(tree, f"sqlite:///{db}", target, jobs, folder))
            shutil.rmtree(target)
    out.update({f"export_{name}": median_of(found) for name, found in runs.items()})
    return out


def _rate(run: dict[str, Any]) -> str:
    return (
        f"{run['jobs_per_s']:,.0f} jobs/s ({run['jobs_per_cpu_s']:,.0f} per CPU-second), "
        f"peak RSS {run['rss_mb']:.0f} MB"
    )


def table(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md rows of a result."""
    rows = ["| what | ours | previous code path | ratio |", "|---|---|---|---|"]

    def pair(what: str, key: str) -> None:
        ours, prev = result.get(f"{key}_ours"), result.get(f"{key}_previous")
        if ours is None or prev is None:
            return
        rows.append(
            f"| {what} | {_rate(ours)} | {_rate(prev)} "
            f"| {ours['jobs_per_s'] / prev['jobs_per_s']:.2f}× the rate, "
            f"{ours['rss_mb'] / prev['rss_mb']:.2f}× the memory |"
        )

    pair(f"`enqueue` {result['lines']:,} JSONL lines, SQLite", "sqlite")
    pair(f"`enqueue` {result['lines']:,} JSONL lines, PostgreSQL", "postgres")
    big, small = result["sqlite_ours_big"], result["sqlite_ours"]
    times = result["big_lines"] / result["lines"]
    rows.append(
        f"| `enqueue` {result['big_lines']:,} lines vs {result['lines']:,}, SQLite (ours) "
        f"| {_rate(big)} "
        f"| peak RSS {small['rss_mb']:.0f} MB "
        f"| {big['rss_mb'] / small['rss_mb']:.2f}× the memory for {times:.0f}× the lines |"
    )
    pair(f"`export` {result['export_jobs']:,} documents, SQLite", "export")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.enqueue_export", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--big-lines", type=int, default=1_000_000)
    parser.add_argument("--export-jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each enqueue pair")
    parser.add_argument("--export-repeat", type=int, default=2)
    parser.add_argument("--previous", default=PREVIOUS, help="the git revision of the previous code path")
    parser.add_argument(
        "--pg-url", default=os.environ.get("TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    if args.no_postgres:
        args.pg_url = None
    result = anyio.run(run, args)
    print(json.dumps(result, indent=2))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
