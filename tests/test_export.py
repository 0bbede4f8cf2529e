"""Exporting text: byte-exact files, the manifest, and the path-escape defence."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from jobs.errors import OutputError
from jobs.export import MANIFEST_NAME, export_jobs, manifest_entry, safe_path
from jobs.models import AttemptResult, CheckpointWrite, Job, Outcome, State, Usage
from jobs.store import Store
from tests.store_fixtures import FakeClock, StoreFactory, make_spec

TEXTS = {
    "plain": "A short document.",
    "newline": "Ends with a newline.\n",
    "unicode": "Größe 🧪 — 漢字\r\nand a CRLF, a tab\t, and \u2028 separators\n\n",
    "empty": "",
}


async def finish(store: Store, job_id: str, text: str, outcome: Outcome = Outcome.SUCCEEDED) -> None:
    """Claim ``job_id`` (the only queued job), commit ``text`` in two chunks and settle."""
    [claim] = await store.claim("w", 30)
    assert claim.job.id == job_id
    half = len(text) // 2
    writes = [
        CheckpointWrite(job_id, claim.token, 0, text[:half]),
        CheckpointWrite(job_id, claim.token, half, text[half:]),
    ]
    await store.commit(writes, 30)
    result = AttemptResult(
        outcome,
        usage=Usage(3, 4),
        stop_reason="end_turn",
        error="boom" if outcome != Outcome.SUCCEEDED else None,
    )
    await store.settle(job_id, claim.token, result)


def read_manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text("utf-8").splitlines()]


async def test_text_is_exported_byte_for_byte(make_store: StoreFactory, tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)
    store = await make_store(clock)
    for job_id, text in TEXTS.items():
        await store.enqueue([make_spec(job_id)])
        clock.advance(2)
        await finish(store, job_id, text)
    await store.enqueue([make_spec("waiting")])
    out = tmp_path / "new" / "out"

    report = await export_jobs(store, out, page_size=2)

    assert (report.jobs, report.files, report.problems) == (4, 4, ())
    for job_id, text in TEXTS.items():
        assert (out / f"{job_id}.md").read_bytes() == text.encode("utf-8")
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, *(f"{i}.md" for i in TEXTS)])
    manifest = read_manifest(out)
    assert [entry["id"] for entry in manifest] == sorted(TEXTS)
    entry = manifest[0]
    assert entry == {
        "id": "empty",
        "state": "succeeded",
        "attempts": 1,
        "failures": 0,
        "chars": 0,
        "usage": {
            "input_tokens": 3,
            "output_tokens": 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "estimated_output_tokens": 0,
            "document_tokens": 0,
            "repeated_tokens": 0,
        },
        "cost_usd": None,
        "waste_usd": None,
        "output_tokens": {"billed": 4, "in_document": 0, "wasted": 4, "generated_twice": 0, "estimated": 0},
        "stop_reason": "end_turn",
        "last_error": None,
        "created_at": entry["created_at"],
        "started_at": entry["started_at"],
        "finished_at": entry["finished_at"],
        "duration_seconds": 0.0,
        "truncated": False,
        "file": "empty.md",
    }
    assert entry["created_at"].endswith("Z")


async def test_state_filter_and_partial_text(make_store: StoreFactory, tmp_path: Path) -> None:
    """Other states can be exported too: partial text gets a file, a job with none gets null."""
    store = await make_store()
    await store.enqueue([make_spec("broken", max_attempts=1)])
    await finish(store, "broken", "half a doc", Outcome.FAILED)
    await store.enqueue([make_spec("queued")])

    report = await export_jobs(store, tmp_path, [State.FAILED, State.QUEUED])

    assert (report.jobs, report.files) == (2, 1)
    assert (tmp_path / "broken.md").read_text("utf-8") == "half a doc"
    assert [(e["id"], e["state"], e["file"], e["last_error"]) for e in read_manifest(tmp_path)] == [
        ("broken", "failed", "broken.md", "boom"),
        ("queued", "queued", None, None),
    ]


async def test_unsafe_ids_are_reported_and_skipped(make_store: StoreFactory, tmp_path: Path) -> None:
    """Ids from other code paths are checked again: nothing is written outside the folder."""
    store = await make_store()
    area = tmp_path / "area"
    out = area / "out"
    for job_id in ("../escape", ".hidden", "a/b", "ok"):
        await store.enqueue([make_spec(job_id)])
        await finish(store, job_id, "text")

    report = await export_jobs(store, out)

    assert report.files == 1
    assert len(report.problems) == 3
    assert all("not a safe file name" in p for p in report.problems)
    assert sorted(p.name for p in area.rglob("*") if p.is_file()) == [MANIFEST_NAME, "ok.md"]
    assert {e["id"]: e["file"] for e in read_manifest(out)} == {
        "../escape": None,
        ".hidden": None,
        "a/b": None,
        "ok": "ok.md",
    }


def test_safe_path_refuses_links_out_of_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "linked.md").symlink_to(tmp_path / "elsewhere.md")
    assert safe_path(out.resolve(), "linked") is None
    assert safe_path(out.resolve(), "fine") == out.resolve() / "fine.md"
    assert safe_path(out.resolve(), "..") is None


async def test_export_replaces_files_and_leaves_no_temporary_files(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = await make_store()
    await store.enqueue([make_spec("a")])
    await finish(store, "a", "new text")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.md").write_text("old text that is longer", "utf-8")

    await export_jobs(store, out)
    await export_jobs(store, out)

    assert (out / "a.md").read_text("utf-8") == "new text"
    assert sorted(p.name for p in out.iterdir()) == ["a.md", MANIFEST_NAME]


@pytest.mark.parametrize("page_size", [1, 3, 1000])
async def test_paging_sees_every_job_once(make_store: StoreFactory, tmp_path: Path, page_size: int) -> None:
    store = await make_store()
    for n in range(5):
        await store.enqueue([make_spec(f"j{n}")])
        await finish(store, f"j{n}", f"text {n}")
    report = await export_jobs(store, tmp_path, page_size=page_size)
    assert report.jobs == 5
    assert [e["id"] for e in read_manifest(tmp_path)] == [f"j{n}" for n in range(5)]


async def test_files_honour_the_umask(make_store: StoreFactory, tmp_path: Path) -> None:
    """mkstemp makes 0600 files; an export gets 0666 less the umask, like any new file."""
    store = await make_store()
    await store.enqueue([make_spec("a")])
    await finish(store, "a", "text")
    old = os.umask(0o027)
    try:
        await export_jobs(store, tmp_path / "out")
    finally:
        os.umask(old)
    for name in ("a.md", MANIFEST_NAME):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o640


@pytest.mark.parametrize("where", ["is a file", "under a file"])
async def test_an_unwritable_folder_is_one_error_naming_it(
    make_store: StoreFactory, tmp_path: Path, where: str
) -> None:
    store = await make_store()
    await store.enqueue([make_spec("a")])
    await finish(store, "a", "text")
    (tmp_path / "taken").write_text("not a folder", "utf-8")
    out = tmp_path / "taken" if where == "is a file" else tmp_path / "taken" / "out"
    with pytest.raises(OutputError, match=f"cannot export to {out}: .*taken is a file, not a folder"):
        await export_jobs(store, out)
    assert (tmp_path / "taken").read_text("utf-8") == "not a folder"


async def test_files_of_an_earlier_wider_export_are_reported_and_cleaned(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = await make_store()
    await store.enqueue([make_spec("a")])
    await finish(store, "a", "text a")
    await store.enqueue([make_spec("b")])
    await finish(store, "b", "partial b", Outcome.FAILED)
    out = tmp_path / "out"
    (tmp_path / "out").mkdir()
    (out / "notes.md").write_text("the user's own file", "utf-8")
    assert (await export_jobs(store, out, list(State))).files == 2

    report = await export_jobs(store, out)
    assert (report.stale, report.cleaned) == (("b.md",), False)
    assert (out / "b.md").exists()

    report = await export_jobs(store, out, clean=True)
    assert (report.stale, report.cleaned) == (("b.md",), True)
    assert sorted(p.name for p in out.iterdir()) == ["a.md", MANIFEST_NAME, "notes.md"]


def test_the_manifest_carries_cost_and_waste_from_the_price_table() -> None:
    """``claude-test`` has no price (null above); a priced model gets dollars, waste included."""
    usage = Usage(1_000_000, 1_000_000, document_tokens=900_000)
    job = Job(make_spec("priced", model="claude-haiku-4-5"), State.SUCCEEDED, 1, 0, 10, usage, 0.0, 0.0)
    entry = manifest_entry(job, "priced.md")
    assert entry["cost_usd"] == pytest.approx(1.0 + 5.0)
    assert entry["waste_usd"] == pytest.approx(0.5)
    assert entry["output_tokens"]["wasted"] == 100_000
