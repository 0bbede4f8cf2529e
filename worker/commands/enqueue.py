"""``python -m worker enqueue FILE.jsonl``: validate every line, then add the jobs in one go.

Nothing is enqueued while any line is bad (unless ``--skip-invalid``). Ids that exist already are
left unchanged, so re-enqueueing a file is safe; but an existing id whose content differs from
its line is reported, naming the id and the fields that differ (exit 1), since silently keeping
the old job would run something else than the file says. ``--replace`` replaces such a job if it
is queued and never started; a job that has started keeps its spec (its text belongs to it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from pathlib import Path

import anyio
import anyio.to_thread

from jobs.costs import load_prices
from jobs.errors import InvalidJobError, JobStateError
from jobs.jsonl import parse_jobs
from jobs.models import JobSpec
from jobs.store import Store
from worker.commands.cost_text import dry_run_lines
from worker.commands.queue import opened_store
from worker.config import Config
from worker.lifecycle import log_deprecated

__all__ = ("register", "enqueue_command")


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``enqueue`` to the CLI's sub-parsers."""
    enqueue = commands.add_parser(
        "enqueue",
        parents=[common],
        help="add jobs from a JSONL file",
        description="Validate every line first; if any line is bad, report each one as "
        "FILE:LINE: field: problem and enqueue nothing (exit 1), unless --skip-invalid. "
        "Ids that exist already are left unchanged, so re-enqueueing a file is safe; an existing "
        "id whose content differs is reported (exit 1), and --replace replaces it if it never started.",
    )
    enqueue.add_argument("file", metavar="FILE.jsonl", help="one job per line; - reads standard input")
    enqueue.add_argument(
        "--skip-invalid", action="store_true", help="enqueue the valid lines even if some are bad (exit 0)"
    )
    enqueue.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and print each job, its model and its worst-case cost; enqueue nothing",
    )
    enqueue.add_argument(
        "--replace",
        action="store_true",
        help="replace existing jobs whose content differs, if they are queued and never started",
    )
    enqueue.set_defaults(handler=enqueue_command)


def _read_lines(file: str) -> list[bytes]:
    if file == "-":
        return sys.stdin.buffer.read().splitlines()
    try:
        return Path(file).read_bytes().splitlines()
    except OSError as exc:
        raise InvalidJobError(f"{file}: cannot read: {exc.strerror}") from None


async def enqueue_command(args: argparse.Namespace, config: Config) -> int:
    """Print ``enqueued N jobs (M already existed)``; problems go to stderr."""
    lines = await anyio.to_thread.run_sync(_read_lines, args.file)
    source = "<stdin>" if args.file == "-" else args.file
    if not any(line.strip() for line in lines):
        print(f"error: {source}: no jobs (the input is empty): nothing enqueued", file=sys.stderr)
        return 1
    specs, errors = parse_jobs(lines, source, config.job_defaults())
    for error in errors:
        print(error, file=sys.stderr)
    if errors and not args.skip_invalid:
        print(
            f"nothing enqueued: {len(errors)} problem(s) in {source} "
            "(fix them, or use --skip-invalid to enqueue the valid lines)",
            file=sys.stderr,
        )
        return 1
    log_deprecated(Counter(spec.model for spec in specs), where="enqueue")
    if getattr(args, "dry_run", False):
        for line in dry_run_lines(specs, load_prices(config.prices_path())):
            print(line)
        return 0
    async with opened_store(config) as store:
        result = await store.enqueue(specs)
        by_id = {spec.id: spec for spec in specs}
        conflicts = await _changed(store, [by_id[job_id] for job_id in result.existing])
        replaced = await _replace(store, conflicts) if args.replace else 0
    print(
        f"enqueued {len(result.inserted)} jobs ({len(result.existing)} already existed"
        + (f", {replaced} replaced)" if args.replace else ")")
    )
    if errors:
        print(f"skipped {len(errors)} problem(s) in {source}", file=sys.stderr)
    if conflicts and not args.replace:
        for spec, fields in conflicts:
            print(
                f"{source}: id {spec.id!r}: exists with different content ({', '.join(fields)}): "
                "left unchanged (--replace replaces a job that has not started)",
                file=sys.stderr,
            )
        return 1
    return 1 if replaced < len(conflicts) else 0


async def _changed(store: Store, specs: list[JobSpec]) -> list[tuple[JobSpec, list[str]]]:
    """The specs whose stored job differs, with the fields that differ."""
    changed: list[tuple[JobSpec, list[str]]] = []
    for spec in specs:
        stored = (await store.get(spec.id)).spec
        fields = [
            f.name for f in dataclasses.fields(JobSpec) if getattr(stored, f.name) != getattr(spec, f.name)
        ]
        if fields:
            changed.append((spec, fields))
    return changed


async def _replace(store: Store, conflicts: list[tuple[JobSpec, list[str]]]) -> int:
    """Replace each job that never started; say why for each one that cannot be."""
    replaced = 0
    for spec, _ in conflicts:
        try:
            await store.replace(spec)
        except JobStateError as exc:
            print(f"error: {exc}: left unchanged", file=sys.stderr)
        else:
            replaced += 1
    return replaced
