"""``python -m worker enqueue FILE.jsonl``: validate every line, and add the jobs all or nothing.

The file is streamed (``jobs.intake``): read and validated ``BATCH_LINES`` lines at a time, each
batch added to ONE store transaction (``Store.enqueue_session``), so memory holds one batch
whatever the size of the file. The first bad line rolls that transaction back and nothing is
enqueued (unless ``--skip-invalid``); the rest of the file is still read, without inserting, so
every problem of every line is reported at once. The store is opened only when the first batch
of valid jobs is ready: a file whose first batch is bad (or an empty file) creates no queue.

Ids that exist already are left unchanged, so re-enqueueing a file is safe; but an existing id
whose content differs from its line is reported, naming the id and the fields that differ (exit
1), since silently keeping the old job would run something else than the file says. ``--replace``
replaces such a job if it is queued and never started (after the commit, one job at a time); a
job that has started keeps its spec (its text belongs to it). Those lines are the only ones kept
in memory past their batch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO

import anyio
import anyio.to_thread

from jobs.costs import load_prices
from jobs.errors import InvalidJobError, JobStateError
from jobs.intake import Batch, JobFile
from jobs.models import JobSpec
from jobs.store import EnqueueSession, Store
from worker.commands.cost_text import DryRun
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


class _Invalid(Exception):
    """A bad line without ``--skip-invalid``: roll the enqueue back."""


@dataclasses.dataclass(slots=True)
class _Tally:
    """What the stream has done so far: the figures of the final lines, and the conflicts."""

    skip_invalid: bool
    inserted: int = 0
    existing: int = 0
    errors: int = 0
    models: Counter[str] = dataclasses.field(default_factory=Counter)
    conflicts: list[tuple[JobSpec, list[str]]] = dataclasses.field(default_factory=list)

    def report(self, batch: Batch) -> None:
        for error in batch.errors:
            print(error, file=sys.stderr)
        self.errors += len(batch.errors)

    def take(self, batch: Batch) -> None:
        """Report the batch's problems; raise ``_Invalid`` once there is one to refuse."""
        self.report(batch)
        self.models.update(spec.model for spec in batch.specs)
        if self.errors and not self.skip_invalid:
            raise _Invalid


@contextlib.contextmanager
def _input(file: str) -> Iterator[BinaryIO]:
    """The file (or standard input for ``-``), opened for reading bytes."""
    if file == "-":
        yield sys.stdin.buffer
        return
    try:
        stream = Path(file).open("rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise InvalidJobError(f"{file}: cannot read: {exc.strerror}") from None
    with stream:
        yield stream


async def _read(jobs: JobFile) -> Batch | None:
    return await anyio.to_thread.run_sync(jobs.read_batch)


async def _next(jobs: JobFile, tally: _Tally) -> Batch | None:
    """The next batch that holds valid jobs (problems on the way reported), or None at the end."""
    while (batch := await _read(jobs)) is not None:
        tally.take(batch)
        if batch.specs:
            return batch
    return None


async def enqueue_command(args: argparse.Namespace, config: Config) -> int:
    """Print ``enqueued N jobs (M already existed)``; problems go to stderr."""
    source = "<stdin>" if args.file == "-" else args.file
    tally = _Tally(skip_invalid=args.skip_invalid)
    dry_run = bool(getattr(args, "dry_run", False))
    with _input(args.file) as stream, tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        jobs = JobFile(stream, source, config.job_defaults())
        replaced, refused = 0, False
        try:
            if dry_run:
                await _dry_run(jobs, tally, DryRun(load_prices(config.prices_path())), spool)
            else:
                replaced = await _enqueue(jobs, tally, config, replace=args.replace)
        except _Invalid:  # rolled back: report the problems of the rest of the file too
            refused = True
            while (batch := await _read(jobs)) is not None:
                tally.report(batch)
        finally:
            jobs.close()
        if not jobs.any_job:
            print(f"error: {source}: no jobs (the input is empty): nothing enqueued", file=sys.stderr)
            return 1
        if refused:
            print(
                f"nothing enqueued: {tally.errors} problem(s) in {source} "
                "(fix them, or use --skip-invalid to enqueue the valid lines)",
                file=sys.stderr,
            )
            return 1
        log_deprecated(tally.models, where="enqueue")
        if dry_run:
            spool.seek(0)
            sys.stdout.writelines(spool)
            return 0
    return _summary(tally, source, replaced, replace=args.replace)


async def _dry_run(jobs: JobFile, tally: _Tally, run: DryRun, spool: IO[str]) -> None:
    """Validate the whole file, writing each job's line to ``spool`` (a temporary file, printed
    once the whole file proved valid, so memory stays flat here too)."""
    while (batch := await _next(jobs, tally)) is not None:
        spool.writelines(run.line(spec) + "\n" for spec in batch.specs)
    spool.write(run.summary() + "\n")


async def _enqueue(jobs: JobFile, tally: _Tally, config: Config, *, replace: bool) -> int:
    """Stream the file into one enqueue session; returns how many conflicting jobs were replaced."""
    batch = await _next(jobs, tally)
    if batch is None and tally.errors == 0:
        return 0  # an empty input: no queue is created
    async with opened_store(config) as store:
        if batch is not None:
            async with store.enqueue_session() as session:
                await _pipe(jobs, tally, session, batch)
        return await _replace(store, tally.conflicts) if replace else 0


async def _pipe(jobs: JobFile, tally: _Tally, session: EnqueueSession, first: Batch) -> None:
    """Add batches to ``session`` while the next one is read and validated in another thread
    (the store's inserts run in C, outside the GIL): at most three batches are in memory, the
    one being added, one waiting and one being read. A bad line stops both and raises ``_Invalid``."""
    send, receive = anyio.create_memory_object_stream[Batch](1)
    refused = False

    async def produce() -> None:
        nonlocal refused
        async with send:
            try:
                while (batch := await _next(jobs, tally)) is not None:
                    await send.send(batch)
            except _Invalid:
                refused = True

    async with anyio.create_task_group() as group, receive:
        group.start_soon(produce)
        await _add(session, first, tally)
        async for batch in receive:
            if refused:
                break
            await _add(session, batch, tally)
    if refused:
        raise _Invalid


async def _add(session: EnqueueSession, batch: Batch, tally: _Tally) -> None:
    result = await session.add(batch.specs)
    tally.inserted += len(result.inserted)
    tally.existing += len(result.existing)
    tally.conflicts.extend(await _changed(session, batch.specs, result.existing))


def _summary(tally: _Tally, source: str, replaced: int, *, replace: bool) -> int:
    """The result line, the skipped problems and the conflicts; the exit code."""
    print(
        f"enqueued {tally.inserted} jobs ({tally.existing} already existed"
        + (f", {replaced} replaced)" if replace else ")")
    )
    if tally.errors:
        print(f"skipped {tally.errors} problem(s) in {source}", file=sys.stderr)
    if tally.conflicts and not replace:
        for spec, fields in tally.conflicts:
            print(
                f"{source}: id {spec.id!r}: exists with different content ({', '.join(fields)}): "
                "left unchanged (--replace replaces a job that has not started)",
                file=sys.stderr,
            )
        return 1
    return 1 if replaced < len(tally.conflicts) else 0


async def _changed(
    session: EnqueueSession, specs: Sequence[JobSpec], existing: Sequence[str]
) -> list[tuple[JobSpec, list[str]]]:
    """The specs whose stored job differs, with the fields that differ (one read per batch)."""
    if not existing:
        return []
    stored = {job.id: job.spec for job in await session.existing(existing)}
    names = set(existing)
    changed: list[tuple[JobSpec, list[str]]] = []
    for spec in specs:
        old = stored.get(spec.id)
        if spec.id not in names or old is None:
            continue
        fields = [
            f.name for f in dataclasses.fields(JobSpec) if getattr(old, f.name) != getattr(spec, f.name)
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
