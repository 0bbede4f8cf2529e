"""A JSONL file read in batches, validated line by line, with constant memory.

How ``enqueue`` stays all or nothing without holding the file: **one pass, one transaction.**
:class:`JobFile` reads ``BATCH_LINES`` lines at a time and validates them (``jobs.jsonl``); the
command adds each batch to ONE store transaction (``Store.enqueue_session``). The first bad line
rolls the transaction back, so nothing is enqueued; the rest of the file is then still read and
validated, without inserting, so that every problem of every line is reported in one run, as
before. Standard input works the same way (it is read once).

Duplicate ids within the file are found without keeping the ids in memory: :class:`SeenIds`
keeps each id and the line it was first seen on in a private temporary SQLite database (on disk,
its page cache bounded by ``SEEN_CACHE_KIB``), looked up once per batch. Ids that exist in the
queue already are the store's to report (``EnqueueResult.existing``), as before.

Memory therefore holds one batch of lines and specs, whatever the size of the file.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from jobs.errors import InvalidJobError
from jobs.jsonl import JobDefaults, read_jobs
from jobs.models import JobSpec

__all__ = ("BATCH_LINES", "Batch", "JobFile", "SeenIds")

#: Lines read, validated and inserted at a time: large enough that a batch's statements cost
#: little per job, small enough that a batch takes a few megabytes.
BATCH_LINES = 2000
#: Page cache of the duplicate index; the rest of it stays on disk.
SEEN_CACHE_KIB = 4096

_SEEN_SCHEMA = "CREATE TABLE seen (id TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID"
_SEEN_LOOKUP = "SELECT id, line FROM seen WHERE id IN (SELECT value FROM json_each(?))"
_SEEN_INSERT = "INSERT INTO seen (id, line) VALUES (?, ?)"


@dataclass(frozen=True, slots=True)
class Batch:
    """The valid specs of a run of lines, and the problems of the others, in line order."""

    specs: tuple[JobSpec, ...]
    errors: tuple[str, ...]
    #: Lines this batch covers (blank ones included).
    lines: int


class SeenIds:
    """The ids seen so far and the line of each, on disk (see the module docstring)."""

    def __init__(self) -> None:
        # "": a private temporary database on disk, deleted when the connection closes.
        self._conn = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", f"cache_size = -{SEEN_CACHE_KIB}"):
            self._conn.execute(f"PRAGMA {pragma}")
        self._conn.execute(_SEEN_SCHEMA)

    def earlier(self, ids: list[str]) -> dict[str, int]:
        """The ids of ``ids`` already recorded, with their first line."""
        found = self._conn.execute(_SEEN_LOOKUP, (json.dumps(ids),))
        return {str(job_id): int(line) for job_id, line in found}

    def record(self, first_lines: dict[str, int]) -> None:
        """Record ids seen for the first time (none of them recorded yet)."""
        self._conn.execute("BEGIN")
        self._conn.executemany(_SEEN_INSERT, first_lines.items())
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


class JobFile:
    """``stream`` (a binary file, or standard input) as batches of validated jobs.

    Lines are split as ``bytes.splitlines`` splits a whole file (``\\n``, ``\\r\\n`` or ``\\r``),
    so line numbers are the ones a reader of the whole file would give.
    """

    def __init__(
        self, stream: BinaryIO, source: str, defaults: JobDefaults, *, batch_lines: int | None = None
    ) -> None:
        self.source = source
        self._defaults = defaults
        self._batch_lines = batch_lines or BATCH_LINES
        self._lines = _split(stream)
        self._next = 1
        self._seen = SeenIds()
        #: Whether any line was not blank (an input of blank lines holds no jobs).
        self.any_job = False

    def read_batch(self) -> Batch | None:
        """The next batch, or None at the end of the input. Blocking: run it in a thread."""
        try:
            raw = list(itertools.islice(self._lines, self._batch_lines))
        except OSError as exc:  # a file that fails midway (EIO, a pipe closed): say which
            raise InvalidJobError(f"{self.source}: cannot read: {exc.strerror or exc}") from None
        if not raw:
            return None
        start, self._next = self._next, self._next + len(raw)
        parsed = list(read_jobs(raw, self.source, self._defaults, start=start))
        self.any_job = self.any_job or bool(parsed)
        return self._deduplicated(parsed, len(raw))

    def _deduplicated(self, parsed: list[tuple[int, JobSpec | list[str]]], lines: int) -> Batch:
        """Refuse a line whose id an earlier line (of this batch or before) has."""
        earlier = self._seen.earlier([spec.id for _, spec in parsed if isinstance(spec, JobSpec)])
        first: dict[str, int] = {}
        specs: list[JobSpec] = []
        errors: list[str] = []
        for number, spec in parsed:
            if isinstance(spec, list):
                errors.extend(spec)
            elif (line := earlier.get(spec.id, first.get(spec.id))) is not None:
                errors.append(f"{self.source}:{number}: id: duplicate of line {line} ({spec.id!r})")
            else:
                first[spec.id] = number
                specs.append(spec)
        self._seen.record(first)
        return Batch(tuple(specs), tuple(errors), lines)

    def close(self) -> None:
        self._seen.close()


def _split(stream: BinaryIO) -> Iterator[bytes]:
    """The stream's lines without their endings. Each ``\\n``-terminated chunk is split again,
    so a lone ``\\r`` ends a line too (a chunk never ends between ``\\r`` and ``\\n``)."""
    for chunk in stream:
        if chunk.endswith(b"\n") and b"\r" not in chunk[:-2]:
            yield chunk[:-2] if chunk.endswith(b"\r\n") else chunk[:-1]
        else:
            yield from chunk.splitlines()
