"""Export jobs' text to a folder: ``DIR/<id>.md`` per job, and ``DIR/manifest.jsonl``.

The text is written exactly as generated (UTF-8, no header, no added newline), so a file's bytes
are the committed text's bytes. Every file is written to a temporary name in ``DIR`` and renamed
into place, so a reader (or a crash) never sees half a file, and re-running an export replaces
files atomically.

Ids are checked again here even though the JSONL parser only accepts safe ones: a store may hold
jobs enqueued by other code. An id that is not a plain, safe file name, or whose file would land
outside ``DIR``, is reported and skipped (its manifest line has ``"file": null``).

Files get the usual permissions (``0666`` less the umask), like any file the user creates. The
folder is created only once the store has answered, so a mistyped queue URL leaves nothing
behind; a folder that cannot be written (``--out`` is a file, lies under one, or is read-only)
raises :class:`~jobs.errors.OutputError` naming the path. Files named after a job of the queue
that this export does not include (an earlier, wider export wrote them) are reported as
``stale``, and removed with ``clean=True``; other files in the folder are never touched.

Manifest lines (one per job, ordered by id)::

    {"id", "state", "attempts", "failures", "chars", "usage": {input_tokens, output_tokens,
     cache_creation_input_tokens, cache_read_input_tokens, estimated_output_tokens,
     document_tokens, repeated_tokens}, "cost_usd" (null = unknown: the model has no price),
     "waste_usd", "output_tokens": {billed, in_document, wasted, generated_twice, estimated},
     "stop_reason" (``stop_sequence "…"`` names the sequence that ended it), "last_error",
     "created_at", "started_at", "finished_at" (ISO-8601 UTC or null),
     "duration_seconds" (finished - started, or null),
     "truncated" (true if cut off by its output_budget or the model's context window),
     "file" (name in DIR, or null)}
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from jobs.costs import PriceTable, job_spend, load_prices, token_accounting
from jobs.errors import JobNotFoundError, OutputError
from jobs.intake import SeenIds
from jobs.jsonl import is_valid_job_id
from jobs.models import Job, State, is_truncated
from jobs.store import Store

__all__ = ("ExportReport", "export_jobs", "manifest_entry", "MANIFEST_NAME")

MANIFEST_NAME = "manifest.jsonl"
#: Folder entries looked up at a time when looking for stale files.
_SCAN_BATCH = 500


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What an export did."""

    #: Jobs listed in the manifest.
    jobs: int
    #: Text files written.
    files: int
    #: One message per job skipped (unsafe id).
    problems: tuple[str, ...]
    manifest: Path
    #: Files an earlier export listed that this one does not (removed if ``clean``).
    stale: tuple[str, ...] = ()
    #: Whether ``stale`` files were removed.
    cleaned: bool = False


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def manifest_entry(job: Job, file: str | None, prices: PriceTable | None = None) -> dict[str, Any]:
    """The manifest line of ``job`` (see the module docstring); ``prices`` default to the shipped."""
    spend = job_spend(prices or load_prices(), job)
    duration = None
    if job.started_at is not None and job.finished_at is not None:
        duration = round(job.finished_at - job.started_at, 3)
    return {
        "id": job.id,
        "state": str(job.state),
        "attempts": job.attempts,
        "failures": job.failures,
        "chars": job.committed_chars,
        "usage": job.usage.as_dict(),
        "cost_usd": spend.total_usd,
        "waste_usd": spend.waste_usd,
        "output_tokens": token_accounting(job.usage),
        "stop_reason": job.stop_reason,
        "last_error": job.last_error,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "duration_seconds": duration,
        "truncated": is_truncated(job.stop_reason),
        "file": file,
    }


def safe_path(out: Path, job_id: str) -> Path | None:
    """Where ``job_id``'s text goes inside ``out`` (an absolute, resolved folder), or None if the
    id is not a safe file name or the path would resolve outside ``out``."""
    if not is_valid_job_id(job_id):
        return None
    name = f"{job_id}.md"
    path = out / name
    if path.name != name or path.resolve().parent != out:
        return None
    return path


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.
    ``mkstemp`` makes the file 0600 whatever the umask, so the final ``mode`` is set here."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".export-", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def file_mode() -> int:
    """0666 less the process umask: the mode ``open()`` would give a new file."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _prepare(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def _candidates(folder: Path, written: SeenIds) -> Iterator[list[str]]:
    """``<id>.md`` files in ``folder`` that this export did not write, a few hundred names at a
    time (the folder is not listed into memory at once)."""
    with os.scandir(folder) as entries:
        while names := [e.name for e in itertools.islice(entries, _SCAN_BATCH)]:
            ours = [n for n in names if n.endswith(".md") and is_valid_job_id(n.removesuffix(".md"))]
            done = written.earlier(ours)
            yield sorted(n for n in ours if n not in done)


async def _stale(store: Store, folder: Path, written: SeenIds) -> tuple[str, ...]:
    """Files named after a job of this queue that this export does not include (an earlier,
    wider export wrote them); files of other names are the user's and are never touched."""
    stale: list[str] = []
    batches = _candidates(folder, written)
    while (names := await anyio.to_thread.run_sync(next, batches, None)) is not None:
        for name in names:
            try:
                await store.get(name.removesuffix(".md"))
            except JobNotFoundError:
                continue
            stale.append(name)
    return tuple(sorted(stale))


def _os_problem(out: Path, exc: OSError) -> OutputError:
    """One line for the user: what is wrong with ``out``."""
    where = exc.filename or out
    if isinstance(exc, FileExistsError | NotADirectoryError):
        blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), where)
        return OutputError(f"cannot export to {out}: {blocker} is a file, not a folder")
    return OutputError(f"cannot export to {out}: {where}: {exc.strerror or exc}")


async def export_jobs(
    store: Store,
    out: Path,
    states: Sequence[State] = (State.SUCCEEDED,),
    *,
    page_size: int = 500,
    clean: bool = False,
    prices: PriceTable | None = None,
    thinking: bool = False,
) -> ExportReport:
    """Write the text of every job in ``states`` to ``out`` and list them in the manifest.

    Streams with constant memory: jobs are read page by page (``list_jobs(after_id=…)``), each
    document is read, written and dropped, the manifest is written line by line (to a temporary
    file renamed into place), and the names written are kept on disk (``jobs.intake.SeenIds``)
    for the stale-file check. A job not succeeded with no committed text gets no file.
    """
    page = await store.list_jobs(states, limit=page_size)  # a store that fails leaves no folder
    prices = prices or load_prices()
    mode = file_mode()
    try:
        folder = await anyio.to_thread.run_sync(_prepare, out)
        manifest = folder / MANIFEST_NAME
        with _Manifest(manifest, mode) as lines, _Run(store, folder, mode, prices, thinking) as run:
            while page:
                for job in page:
                    lines.write(await run.export(job))
                page = await store.list_jobs(states, after_id=page[-1].id, limit=page_size)
            lines.commit()
            stale = await _stale(store, folder, run.written)
        if clean:
            await anyio.to_thread.run_sync(_remove, folder, stale)
    except OSError as exc:
        raise _os_problem(out, exc) from None
    return ExportReport(lines.count, run.files, tuple(run.problems), manifest, stale, clean)


class _Run:
    """One export's writing of documents: what it wrote (on disk, in :class:`SeenIds`, for the
    stale files) and the ids it skipped."""

    def __init__(self, store: Store, folder: Path, mode: int, prices: PriceTable, thinking: bool) -> None:
        self.store, self.folder, self.mode, self.prices, self.thinking = store, folder, mode, prices, thinking
        self.written = SeenIds()
        self.files = 0
        self.problems: list[str] = []

    def __enter__(self) -> _Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.written.close()

    async def export(self, job: Job) -> str:
        """Write the job's document (read, written and dropped: one in memory at a time), and
        return its manifest line."""
        path = safe_path(self.folder, job.id)
        if path is None:
            self.problems.append(f"{job.id!r}: not a safe file name: skipped")
        elif job.state == State.SUCCEEDED or job.committed_chars:
            data = (await self.store.read_text(job.id)).encode("utf-8")
            await anyio.to_thread.run_sync(write_atomically, path, data, self.mode)
            self.written.record({path.name: 0})
            self.files += 1
        else:
            path = None
        entry = manifest_entry(job, None if path is None else path.name, self.prices)
        if self.thinking and path is not None:
            entry["thinking_file"] = await _export_thinking(self.store, self.folder, job.id, self.mode)
        return json.dumps(entry, ensure_ascii=False) + "\n"


class _Manifest:
    """``manifest.jsonl`` written line by line to a temporary file beside it, renamed into place
    by :meth:`commit` (a reader never sees half a manifest), removed if the export fails."""

    def __init__(self, path: Path, mode: int) -> None:
        self.path = path
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".export-", suffix=".tmp")
        os.fchmod(fd, mode)
        self._temp = Path(temp)
        self._file = os.fdopen(fd, "w", encoding="utf-8")
        self.count = 0

    def __enter__(self) -> _Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()
        self._temp.unlink(missing_ok=True)

    def write(self, line: str) -> None:
        self._file.write(line)
        self.count += 1

    def commit(self) -> None:
        self._file.close()
        os.replace(self._temp, self.path)


async def _export_thinking(store: Store, folder: Path, job_id: str, mode: int) -> str | None:
    """Write ``<id>.thinking.md`` (atomically, as documents are): each request's kept thinking
    under a heading with its size and whether the bound cut it. None if the job kept none."""
    kept = await store.read_thinking(job_id)
    if not kept:
        return None
    parts = []
    for t in kept:
        cut = f", cut to {len(t.text)} by thinking_max_chars" if t.cut else ""
        parts.append(f"## attempt {t.attempt}, request {t.request} ({t.chars} characters{cut})\n\n{t.text}\n")
    path = folder / f"{job_id}.thinking.md"
    await anyio.to_thread.run_sync(write_atomically, path, "\n".join(parts).encode("utf-8"), mode)
    return path.name


def _remove(folder: Path, names: Sequence[str]) -> None:
    for name in names:
        (folder / name).unlink(missing_ok=True)
