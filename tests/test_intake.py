"""Streaming enqueue (``jobs.intake`` and the ``enqueue`` command): memory bounded by a batch,
whatever the file's size; all or nothing across batches; duplicates found across batches."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs import intake
from jobs.errors import InvalidJobError
from jobs.intake import Batch, JobFile, _split
from jobs.jsonl import JobDefaults
from jobs.models import EnqueueResult, Job, JobSpec
from jobs.options import dump_messages
from jobs.postgres import PostgresStore
from jobs.sqlite import SQLiteStore
from jobs.store import EnqueueSession
from worker.cli import main

DEFAULTS = JobDefaults("claude-sonnet-4-5", 1000, 2000, 3, 0.0, "5m", "stream", 86400.0)
BATCH = 100


def write_jobs(path: Path, count: int, extra: dict[int, str] | None = None) -> Path:
    """``count`` job lines; ``extra`` replaces line N (from 1) with other text."""
    lines = [json.dumps({"id": f"job-{n:06d}", "prompt": f"Write part {n}."}) for n in range(1, count + 1)]
    for number, text in (extra or {}).items():
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


class Recorder:
    """Wraps a store's enqueue sessions: the sizes of the batches added, and how many lines
    had been read when each was added (to bound what is held in memory)."""

    def __init__(self) -> None:
        self.sessions = 0
        self.sizes: list[int] = []
        self.lines_read = 0
        #: Lines read but not yet added, at each add: what memory holds.
        self.held: list[int] = []
        self.added = 0

    def wrap_reader(self, read: Callable[[JobFile], Batch | None]) -> Callable[[JobFile], Batch | None]:
        def read_batch(jobs: JobFile) -> Batch | None:
            batch = read(jobs)
            if batch is not None:
                self.lines_read += batch.lines
            return batch

        return read_batch

    def wrap_session(
        self, open_session: Callable[[Any], AbstractAsyncContextManager[EnqueueSession]]
    ) -> Callable[[Any], AbstractAsyncContextManager[EnqueueSession]]:
        recorder = self

        class Session:
            def __init__(self, inner: EnqueueSession) -> None:
                self.inner = inner

            async def add(self, specs: Any) -> EnqueueResult:
                recorder.sizes.append(len(specs))
                recorder.held.append(recorder.lines_read - recorder.added)
                recorder.added += len(specs)
                return await self.inner.add(specs)

            async def existing(self, job_ids: Any) -> list[Job]:
                return await self.inner.existing(job_ids)

        @asynccontextmanager
        async def enqueue_session(store: Any) -> AsyncIterator[EnqueueSession]:
            recorder.sessions += 1
            async with open_session(store) as inner:
                yield Session(inner)

        return enqueue_session


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(intake, "BATCH_LINES", BATCH)
    monkeypatch.setattr(JobFile, "read_batch", recorder.wrap_reader(JobFile.read_batch))
    for cls in (SQLiteStore, PostgresStore):
        monkeypatch.setattr(cls, "enqueue_session", recorder.wrap_session(cls.enqueue_session))
    return recorder


@pytest.fixture(params=["sqlite", "postgres"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def run(tmp_path: Path, url: str, *args: str) -> int:
    config = tmp_path / "config.toml"
    config.write_text(f'[queue]\nurl = "{url}"\n', "utf-8")
    return main(["enqueue", *args, "--config", str(config)])


def counts(tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    capsys.readouterr()
    assert main(["status", "--json", "--config", str(tmp_path / "config.toml")]) == 0
    data: dict[str, int] = json.loads(capsys.readouterr().out)["counts"]
    return data


def test_memory_holds_a_few_batches_whatever_the_file_size(
    tmp_path: Path, queue_url: str, recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    """2,550 lines in batches of 100: one session, 26 adds of at most 100 jobs each, and when
    each is added at most three batches' lines have been read and not yet added. Memory is
    bounded by the batch size, not by the file."""
    file = write_jobs(tmp_path / "jobs.jsonl", 2550)
    assert run(tmp_path, queue_url, str(file)) == 0
    assert capsys.readouterr().out == "enqueued 2550 jobs (0 already existed)\n"
    assert recorder.sessions == 1
    assert recorder.sizes == [BATCH] * 25 + [50]
    assert max(recorder.held) <= 3 * BATCH
    assert counts(tmp_path, queue_url, capsys)["queued"] == 2550


def test_a_bad_line_in_a_late_batch_rolls_back_every_batch(
    tmp_path: Path, queue_url: str, recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    """Batches were added before line 1,234 turned out bad: nothing stays enqueued, and the
    problems after it (the duplicate on line 2,000 of line 5, across batches) are still reported."""
    extra = {
        1234: '{"id": "bad", "max_tokens": 5}',
        2000: json.dumps({"id": "job-000005", "prompt": "again"}),
    }
    file = write_jobs(tmp_path / "jobs.jsonl", 2500, extra)
    assert run(tmp_path, queue_url, str(file)) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f'{file}:1234: prompt: one of "prompt" or "messages" is required',
        f"{file}:2000: id: duplicate of line 5 ('job-000005')",
        f"nothing enqueued: 2 problem(s) in {file} "
        "(fix them, or use --skip-invalid to enqueue the valid lines)",
    ]
    # Batches 1-12 precede the bad line; reading runs one batch ahead of adding.
    assert len(recorder.sizes) >= 10, "batches were added before the bad line was read"
    assert sum(counts(tmp_path, queue_url, capsys).values()) == 0


def test_skip_invalid_and_re_enqueue_across_batches(
    tmp_path: Path, queue_url: str, recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {150: "{oops", 333: json.dumps({"id": "job-000001", "prompt": "Write part 1."})}
    file = write_jobs(tmp_path / "jobs.jsonl", 400, extra)
    assert run(tmp_path, queue_url, str(file), "--skip-invalid") == 0
    out, err = capsys.readouterr()
    assert out == "enqueued 398 jobs (0 already existed)\n"
    assert err.splitlines()[-1] == f"skipped 2 problem(s) in {file}"
    assert run(tmp_path, queue_url, str(file), "--skip-invalid") == 0
    assert capsys.readouterr().out == "enqueued 0 jobs (398 already existed)\n"


def test_standard_input_is_streamed_too(
    tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_jobs(tmp_path / "jobs.jsonl", 250).read_bytes()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert run(tmp_path, f"sqlite:///{tmp_path / 'jobs.db'}", "-") == 0
    assert capsys.readouterr().out == "enqueued 250 jobs (0 already existed)\n"
    assert recorder.sizes == [100, 100, 50]


def test_duplicates_are_found_across_batches_on_disk() -> None:
    lines = b"".join(json.dumps({"id": f"j{n % 7}", "prompt": "x"}).encode() + b"\n" for n in range(20))
    jobs = JobFile(io.BytesIO(lines), "f", DEFAULTS, batch_lines=3)
    specs: list[JobSpec] = []
    errors: list[str] = []
    while (batch := jobs.read_batch()) is not None:
        specs.extend(batch.specs)
        errors.extend(batch.errors)
    jobs.close()
    assert [s.id for s in specs] == [f"j{n}" for n in range(7)]
    assert errors[0] == "f:8: id: duplicate of line 1 ('j0')"
    assert len(errors) == 13


@given(st.binary(max_size=40).map(lambda b: bytes(c for c in b if c in b"ab\r\n\x0b ")))
def test_lines_split_as_splitlines_splits_a_whole_file(data: bytes) -> None:
    assert list(_split(io.BytesIO(data))) == data.splitlines()


@given(
    st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.text(max_size=20)), min_size=1, max_size=3)
)
def test_string_messages_are_written_as_json_dumps_writes_them(messages: list[tuple[str, str]]) -> None:
    value = [{"role": role, "content": content} for role, content in messages]
    assert dump_messages(value, {}) == json.dumps(value)


def test_a_file_that_fails_midway_is_named() -> None:
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise OSError(5, "Input/output error")

    jobs = JobFile(io.BufferedReader(Failing()), "f.jsonl", DEFAULTS)
    with pytest.raises(InvalidJobError, match=r"^f\.jsonl: cannot read: Input/output error$"):
        jobs.read_batch()
    jobs.close()
