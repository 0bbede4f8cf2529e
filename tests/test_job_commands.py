"""The job commands end to end: ``worker.cli.main([...])`` on a SQLite file from a config file."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from jobs.models import AttemptResult, CheckpointWrite, Outcome, State, Usage
from jobs.sqlite import SQLiteStore
from jobs.store import Store
from tests.store_fixtures import make_spec
from worker.cli import main

T = TypeVar("T")


class Project:
    """A config file whose queue is ``data/jobs.db`` beside it, and ways to drive it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.toml"
        self.config.write_text('[queue]\nurl = "sqlite:///data/jobs.db"\n', "utf-8")

    def run(self, *args: str) -> int:
        return main([*args, "--config", str(self.config)])

    def with_store(self, action: Callable[[Store], Awaitable[T]]) -> T:
        async def go() -> T:
            store = SQLiteStore(self.root / "data" / "jobs.db")
            try:
                return await action(store)
            finally:
                await store.close()

        return anyio.run(go)

    def jsonl(self, name: str, *lines: Any) -> str:
        path = self.root / name
        path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), "utf-8")
        return str(path)

    def status(self, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
        capsys.readouterr()
        assert self.run("status", "--json") == 0
        data: dict[str, Any] = json.loads(capsys.readouterr().out)
        return data


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


async def finish(store: Store, text: str, outcome: Outcome, joins: tuple[tuple[str, int], ...] = ()) -> str:
    """Claim the next job, commit ``text`` and settle it with ``outcome``; returns its id."""
    [claim] = await store.claim("w1", 30)
    await store.commit([CheckpointWrite(claim.job.id, claim.token, 0, text, Usage(5, 7))], 30)
    error = None if outcome == Outcome.SUCCEEDED else "it broke"
    result = AttemptResult(outcome, usage=Usage(5, 7), error=error, joins=joins)
    await store.settle(claim.job.id, claim.token, result)
    return claim.job.id


# -- enqueue -----------------------------------------------------------------------------------


def test_enqueue_is_idempotent(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    file = project.jsonl("jobs.jsonl", {"id": "a", "prompt": "x"}, "", {"prompt": "y"})
    assert project.run("enqueue", file) == 0
    assert capsys.readouterr().out == "enqueued 2 jobs (0 already existed)\n"
    assert project.run("enqueue", file) == 0
    assert capsys.readouterr().out == "enqueued 0 jobs (2 already existed)\n"


def test_changed_content_is_reported_and_replaced_on_request(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """Re-enqueueing an id with other content names the id and fields; --replace applies it."""
    assert (
        project.run(
            "enqueue", project.jsonl("v1.jsonl", {"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"})
        )
        == 0
    )
    capsys.readouterr()
    v2 = project.jsonl("v2.jsonl", {"id": "a", "prompt": "x2", "max_tokens": 9}, {"id": "b", "prompt": "y"})
    assert project.run("enqueue", v2) == 1
    out, err = capsys.readouterr()
    assert out == "enqueued 0 jobs (2 already existed)\n"
    assert err == (
        f"{v2}: id 'a': exists with different content (messages, max_tokens): left unchanged "
        "(--replace replaces a job that has not started)\n"
    )
    assert project.run("enqueue", v2, "--replace") == 0
    assert capsys.readouterr().out == "enqueued 0 jobs (2 already existed, 1 replaced)\n"
    job = project.with_store(lambda store: store.get("a"))
    assert (job.spec.messages[0].content, job.spec.max_tokens) == ("x2", 9)


def test_replace_refuses_a_job_that_started(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert project.run("enqueue", project.jsonl("v1.jsonl", {"id": "a", "prompt": "x"})) == 0
    project.with_store(lambda store: finish(store, "text", Outcome.SUCCEEDED))
    capsys.readouterr()
    assert project.run("enqueue", project.jsonl("v2.jsonl", {"id": "a", "prompt": "x2"}), "--replace") == 1
    assert "error: job 'a' has started (succeeded, 1 attempt(s))" in capsys.readouterr().err
    assert project.with_store(lambda store: store.get("a")).spec.messages[0].content == "x"


@pytest.mark.parametrize("content", ["", "\n \n"])
def test_an_empty_file_says_so(project: Project, capsys: pytest.CaptureFixture[str], content: str) -> None:
    file = project.root / "empty.jsonl"
    file.write_text(content, "utf-8")
    assert project.run("enqueue", str(file)) == 1
    assert capsys.readouterr().err == f"error: {file}: no jobs (the input is empty): nothing enqueued\n"
    assert not (project.root / "data").exists()


def test_a_bad_line_enqueues_nothing(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    file = project.jsonl(
        "jobs.jsonl", {"id": "a", "prompt": "x"}, {"id": "b"}, "{oops", {"prompt": "z", "max_tokens": -1}
    )
    assert project.run("enqueue", file) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f'{file}:2: prompt: one of "prompt" or "messages" is required'
    assert err[1].startswith(f"{file}:3: line: not valid JSON (")
    assert err[2] == f"{file}:4: max_tokens: must be a positive integer, got -1"
    assert err[3].startswith("nothing enqueued: 3 problem(s)")
    assert not (project.root / "data").exists()


def test_skip_invalid_enqueues_the_good_lines(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    file = project.jsonl("jobs.jsonl", {"id": "a", "prompt": "x"}, {"id": "b"}, {"id": "c", "prompt": "z"})
    assert project.run("enqueue", file, "--skip-invalid") == 0
    captured = capsys.readouterr()
    assert captured.out == "enqueued 2 jobs (0 already existed)\n"
    assert captured.err.startswith(f'{file}:2: prompt: one of "prompt" or "messages" is required\n')
    assert project.status(capsys)["counts"]["queued"] == 2


def test_enqueue_reads_stdin(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = json.dumps({"id": "from-stdin", "prompt": "x"}) + "\n" + json.dumps({"id": 1}) + "\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    assert project.run("enqueue", "-") == 1
    assert capsys.readouterr().err.startswith("<stdin>:2: id: must be 1-200 characters")


def test_enqueue_a_missing_file(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert project.run("enqueue", str(project.root / "nope.jsonl")) == 1
    assert "nope.jsonl: cannot read" in capsys.readouterr().err


# -- status and show ---------------------------------------------------------------------------


def test_status_json_shape(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.with_store(lambda store: store.enqueue([make_spec("a"), make_spec("b"), make_spec("c")]))
    project.with_store(lambda store: finish(store, "Hello 🌍", Outcome.SUCCEEDED))
    status = project.status(capsys)
    assert status == {
        "counts": {"queued": 2, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 0},
        "jobs": 3,
        "committed_chars": 7,
        "usage": {
            "input_tokens": 5,
            "output_tokens": 7,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "estimated_output_tokens": 0,
            "document_tokens": 0,
            "repeated_tokens": 0,
        },
        "next_due": status["next_due"],
        "cost_usd": None,
        "waste_usd": None,
        "output_tokens": {"billed": 7, "in_document": 0, "wasted": 7, "generated_twice": 0, "estimated": 0},
        "prices": status["prices"],
    }
    assert status["prices"]["date"] == "2026-12-02"
    assert isinstance(status["next_due"], str)
    assert project.run("status") == 0
    out = capsys.readouterr().out
    assert "succeeded          1" in out
    assert "total              3 jobs, 7 characters" in out


def test_show_text_and_json(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.with_store(lambda store: store.enqueue([make_spec("a", max_attempts=2)]))
    joins = (("anchor", 2), ("short_repeat", 1))
    project.with_store(lambda store: finish(store, "first try", Outcome.RETRY, joins))

    assert project.run("show", "a") == 0
    out = capsys.readouterr().out
    assert "state      queued (attempts 1, failures 1 of 2)" in out
    assert "#1 w1" in out and "retry" in out and "error: it broke" in out
    assert "joins anchor=2,short_repeat=1" in out
    assert "running -> queued: retry: it broke" in out
    assert out.endswith("text (9 characters)\nfirst try\n")

    assert project.run("show", "a", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"job", "attempts", "history", "text"}
    assert (data["job"]["id"], data["job"]["state"], data["text"]) == ("a", "queued", "first try")
    [attempt] = data["attempts"]
    assert (attempt["outcome"], attempt["resume_mode"], attempt["error"]) == ("retry", "fresh", "it broke")
    assert attempt["usage"]["output_tokens"] == 7
    assert attempt["joins"] == {"anchor": 2, "short_repeat": 1}
    assert [h["reason"] for h in data["history"]] == ["enqueued", "claimed by w1", "retry: it broke"]

    assert project.run("show", "a", "--json", "--no-text") == 0
    assert json.loads(capsys.readouterr().out)["text"] is None


def test_show_thinking_prints_it_per_request_with_size_and_cut(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.with_store(lambda store: store.enqueue([make_spec("a")]))

    async def think(store: Store) -> None:
        [claim] = await store.claim("w1", 30)
        await store.save_thinking("a", claim.token, 1, "Plan: intro.", 15)
        await store.save_thinking("a", claim.token, 2, "Then the body.", 15)
        await store.settle("a", claim.token, AttemptResult(Outcome.SUCCEEDED))

    project.with_store(think)
    assert project.run("show", "a") == 0
    assert "thinking" not in capsys.readouterr().out
    assert project.run("show", "a", "--thinking", "--no-text") == 0
    out = capsys.readouterr().out
    assert "thinking (2 requests)\n  attempt #1 request 1: 12 characters\n    Plan: intro.\n" in out
    assert "  attempt #1 request 2: 14 characters, cut to 3 by thinking_max_chars\n    The\n" in out

    assert project.run("show", "a", "--json") == 0
    assert "thinking" not in json.loads(capsys.readouterr().out)
    assert project.run("show", "a", "--json", "--thinking") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["thinking"] == [
        {"attempt": 1, "request": 1, "chars": 12, "cut": False, "text": "Plan: intro."},
        {"attempt": 1, "request": 2, "chars": 14, "cut": True, "text": "The"},
    ]

    out_dir = project.root / "out"
    assert project.run("export", "--out", str(out_dir), "--thinking") == 0
    thought = (out_dir / "a.thinking.md").read_text("utf-8")
    assert thought.startswith("## attempt 1, request 1 (12 characters)\n\nPlan: intro.\n")
    assert "## attempt 1, request 2 (14 characters, cut to 3 by thinking_max_chars)\n\nThe\n" in thought
    [line] = (out_dir / "manifest.jsonl").read_text("utf-8").splitlines()
    assert json.loads(line)["thinking_file"] == "a.thinking.md"


def test_status_and_show_report_cost_and_waste(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """A priced model gets dollars; a model without a price is "unknown", never a guess."""
    project.with_store(lambda store: store.enqueue([make_spec("a", model="claude-haiku-4-5")]))

    async def billed(store: Store) -> None:
        [claim] = await store.claim("w1", 30)
        usage = Usage(1_000_000, 200_000, document_tokens=150_000, estimated_output_tokens=10)
        await store.commit([CheckpointWrite("a", claim.token, 0, "text", usage)], 30)
        await store.settle("a", claim.token, AttemptResult(Outcome.SUCCEEDED, usage=usage))

    project.with_store(billed)
    status = project.status(capsys)
    assert status["cost_usd"] == pytest.approx(1.0 + 1.0)
    assert status["waste_usd"] == pytest.approx(0.25)
    assert project.run("show", "a", "--no-text") == 0
    out = capsys.readouterr().out
    assert "cost       $2.0000 spent, $0.2500 of it on waste; prompt cache 5m" in out
    assert "billed 200,000 (10 estimated) · in document 150,000 · wasted 50,000" in out
    assert " cost $2.0000" in out, "per attempt"
    project.with_store(lambda store: store.enqueue([make_spec("b")]))
    assert project.status(capsys)["cost_usd"] is None


def test_enqueue_dry_run_prints_worst_case_costs_and_enqueues_nothing(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    file = project.jsonl(
        "jobs.jsonl",
        {
            "id": "a",
            "prompt": "x" * 3000,
            "model": "claude-haiku-4-5",
            "max_tokens": 1000,
            "output_budget": 2000,
        },
        {"id": "b", "prompt": "y", "model": "claude-haiku-4-5", "max_cost_usd": 0.001},
        {"id": "c", "prompt": "z", "model": "unpriced"},
    )
    assert project.run("enqueue", file, "--dry-run") == 0
    lines = capsys.readouterr().out.splitlines()
    # a: 2 requests of a 1,000-token prompt, the second re-sending 1,000 tokens, at the 1 h write
    # rate ($2/MTok), plus 2,000 output tokens at $5/MTok.
    assert lines[0].endswith("worst case $0.0160")
    assert lines[1].endswith("worst case $0.0010 (capped by max_cost_usd $0.0010)")
    assert lines[2].startswith("c  unpriced") and lines[2].endswith("worst case unknown")
    assert lines[3].startswith("3 jobs, worst case unknown in all")
    assert not (project.root / "data").exists(), "a dry run creates no queue"


def test_unknown_ids_are_named(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert project.run("enqueue", project.jsonl("jobs.jsonl", {"id": "a", "prompt": "x"})) == 0
    for command in ("show", "retry", "cancel"):
        assert project.run(command, "no-such-job") == 1
        assert "no job with id 'no-such-job'" in capsys.readouterr().err


def test_commands_that_do_not_enqueue_create_nothing(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped URL gets "no queue at …" (exit 2), and no file or folder appears."""
    out = str(project.root / "out")
    for command in (["status"], ["show", "a"], ["export", "--out", out], ["retry", "a"]):
        assert project.run(*command) == 2
        assert "error: no queue at " in capsys.readouterr().err
    assert sorted(p.name for p in project.root.iterdir()) == ["config.toml"]


def test_status_reads_a_read_only_queue(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert project.run("enqueue", project.jsonl("jobs.jsonl", {"id": "a", "prompt": "x"})) == 0
    db = project.root / "data" / "jobs.db"
    before = db.read_bytes()
    db.chmod(0o444)
    try:
        assert project.status(capsys)["counts"]["queued"] == 1
    finally:
        db.chmod(0o644)
    assert db.read_bytes() == before


# -- export, retry, cancel ---------------------------------------------------------------------


def test_export_writes_text_and_manifest(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.with_store(lambda store: store.enqueue([make_spec("doc"), make_spec("bad")]))
    project.with_store(lambda store: finish(store, "Line one\nline two", Outcome.SUCCEEDED))
    project.with_store(lambda store: finish(store, "partial", Outcome.FAILED))
    out = project.root / "out"

    assert project.run("export", "--out", str(out)) == 0
    assert "exported 1 jobs (1 files)" in capsys.readouterr().out
    assert (out / "doc.md").read_bytes() == b"Line one\nline two"
    assert not (out / "bad.md").exists()

    assert project.run("export", "--out", str(out), "--state", "all") == 0
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text("utf-8").splitlines()]
    assert [(m["id"], m["state"], m["file"]) for m in manifest] == [
        ("bad", "failed", "bad.md"),
        ("doc", "succeeded", "doc.md"),
    ]


def test_retry_and_cancel(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.with_store(lambda store: store.enqueue([make_spec(n) for n in ("f1", "f2", "q")]))
    project.with_store(lambda store: finish(store, "x", Outcome.FAILED))
    project.with_store(lambda store: finish(store, "y", Outcome.FAILED))

    assert project.run("retry", "f1") == 0
    assert capsys.readouterr().out == "re-queued f1 (resumes from 1 characters)\n"
    assert project.run("retry", "q") == 1
    assert "job 'q' is queued: only failed or cancelled jobs can be retried" in capsys.readouterr().err
    assert project.run("retry", "--failed") == 0
    assert capsys.readouterr().out == "re-queued 1 failed jobs\n"
    assert project.run("cancel", "q") == 0
    assert capsys.readouterr().out == "cancelled q\n"
    assert project.run("cancel", "q") == 1
    assert project.with_store(lambda store: store.get("q")).state == State.CANCELLED


def test_retry_set_repairs_a_failed_jobs_spec(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in the model failed the job: `retry --set` fixes it, keeping its text."""
    project.with_store(lambda store: store.enqueue([make_spec("f1", model="claude-sonet-4-6")]))
    project.with_store(lambda store: finish(store, "kept", Outcome.FAILED))

    assert project.run("retry", "f1", "--set", "model=claude-sonnet-4-6", "--set", "max_tokens=2048") == 0
    assert capsys.readouterr().out == (
        "re-queued f1 (resumes from 4 characters, with max_tokens, model changed)\n"
    )
    job = project.with_store(lambda store: store.get("f1"))
    assert (job.state, job.spec.model, job.spec.max_tokens) == (State.QUEUED, "claude-sonnet-4-6", 2048)
    assert project.with_store(lambda store: store.read_text("f1")) == "kept"


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ("max_tokens=0", 1, "job 'f1': --set max_tokens: must be a positive integer"),
        ("prompt=Other.", 1, "job 'f1': --set prompt: cannot be changed by retry"),
        ("colour=red", 1, "job 'f1': --set colour: unknown or unchangeable field"),
        ("prompt_cache=2h", 1, "job 'f1': --set prompt_cache: must be one of"),
        ("=x", 2, "retry --set =x: expected FIELD=VALUE"),
    ],
)
def test_retry_set_refuses_bad_changes_and_changes_nothing(
    project: Project, capsys: pytest.CaptureFixture[str], change: str, code: int, message: str
) -> None:
    """A bad value is input that failed (exit 1, as `enqueue` of a bad line); a malformed flag is
    bad usage (exit 2)."""
    project.with_store(lambda store: store.enqueue([make_spec("f1")]))
    project.with_store(lambda store: finish(store, "kept", Outcome.FAILED))
    before = project.with_store(lambda store: store.get("f1"))

    assert project.run("retry", "f1", "--set", change) == code
    assert message in capsys.readouterr().err
    assert project.with_store(lambda store: store.get("f1")) == before


def test_retry_set_still_takes_settings_and_not_with_failed(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.with_store(lambda store: store.enqueue([make_spec("f1")]))
    project.with_store(lambda store: finish(store, "kept", Outcome.FAILED))
    assert project.run("retry", "--failed", "--set", "model=claude-sonnet-4-6") == 2
    assert "repairs one job" in capsys.readouterr().err
    assert project.run("retry", "f1", "--set", "worker.concurrency=3", "--set", "priority=5") == 0
    assert project.with_store(lambda store: store.get("f1")).spec.priority == 5


def test_retry_needs_an_id_or_failed(project: Project) -> None:
    with pytest.raises(SystemExit) as exit_info:
        project.run("retry")
    assert exit_info.value.code == 2


def test_delete_a_finished_job(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.with_store(lambda store: store.enqueue([make_spec(n) for n in ("f", "q")]))
    project.with_store(lambda store: finish(store, "text", Outcome.FAILED))
    assert project.run("delete", "q") == 1
    assert (
        "job 'q' is queued: only succeeded, failed or cancelled jobs can be deleted"
        in capsys.readouterr().err
    )
    assert project.run("delete", "f") == 0
    assert capsys.readouterr().out == "deleted f (failed, 4 characters)\n"
    assert project.run("delete", "f") == 1
    assert "no job with id 'f'" in capsys.readouterr().err
    assert project.status(capsys)["counts"] == dict.fromkeys(map(str, State), 0) | {"queued": 1}
