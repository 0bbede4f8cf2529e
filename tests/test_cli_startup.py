"""Commands that make no API call start without importing the SDK or the HTTP stack.

Importing ``anthropic`` costs seconds on a loaded machine; ``status``, ``show``, ``enqueue`` and the
other store-only commands must not pay it. Each command runs for real (not only ``--help``) in a
fresh interpreter, against a SQLite queue, and the test reads which modules that interpreter loaded.
No wall-clock time is asserted: what is measured is what was imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Imported by a command only when it talks to the API or serves HTTP.
HEAVY = ("anthropic", "httpx", "aiohttp")

_PROBE = """
import json, sys
from worker.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:  # --help
    code = exit.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("PROBE " + json.dumps({{"code": code, "heavy": heavy}}))
"""


#: What only other commands need: the cron parser (``schedule``), the demo, the pool, the server.
OTHER_COMMANDS = (
    "croniter",
    "worker.commands.demo",
    "worker.pool",
    "worker.commands.serve",
    "worker.schedules",
)


def _run(tmp_path: Path, *argv: str, watch: tuple[str, ...] = HEAVY) -> dict[str, object]:
    queue = f"sqlite:///{tmp_path / 'queue.db'}"
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=watch), "--queue-url", queue, *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return _probe_result(completed)


def _probe_result(completed: subprocess.CompletedProcess[str]) -> dict[str, object]:
    lines = [line for line in completed.stdout.splitlines() if line.startswith("PROBE ")]
    assert lines, completed.stdout + completed.stderr
    result: dict[str, object] = json.loads(lines[-1].removeprefix("PROBE "))
    return result


@pytest.fixture
def queued(tmp_path: Path) -> Path:
    """A queue holding one job, ``j1``, created by ``enqueue`` (itself under test)."""
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "j1", "prompt": "Write.", "max_tokens": 64}) + "\n")
    assert _run(tmp_path, "enqueue", str(jobs)) == {"code": 0, "heavy": []}
    return tmp_path


@pytest.mark.parametrize(
    "argv",
    [
        ("status",),
        ("show", "j1"),
        ("export", "--out", "out", "--state", "all"),
        ("cancel", "j1"),
        ("schedule", "list"),
        ("migrate",),
        ("prune", "--older-than", "30d"),
        ("prune", "--older-than", "90s", "--state", "failed", "--dry-run"),
        ("status", "--help"),
    ],
    ids=lambda argv: " ".join(argv),
)
def test_store_commands_do_not_import_the_sdk(queued: Path, argv: tuple[str, ...]) -> None:
    result = _run(queued, *argv)
    assert result["heavy"] == [], f"{' '.join(argv)} imported {result['heavy']}"
    assert result["code"] == 0


@pytest.mark.parametrize("argv", [("status",), ("show", "j1"), ("status", "--help")], ids=" ".join)
def test_a_command_loads_only_its_own_module(queued: Path, argv: tuple[str, ...]) -> None:
    """``status`` registers and imports the job commands alone, not every command's module."""
    assert _run(queued, *argv, watch=OTHER_COMMANDS) == {"code": 0, "heavy": []}


def test_help_still_lists_every_command(queued: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "worker", "--help"], cwd=queued, capture_output=True, text=True, check=True
    )
    for command in ("run", "demo", "enqueue", "status", "schedule", "migrate", "serve", "simulate"):
        assert command in completed.stdout


def test_retry_does_not_import_the_sdk(queued: Path) -> None:
    assert _run(queued, "cancel", "j1")["code"] == 0
    assert _run(queued, "retry", "j1") == {"code": 0, "heavy": []}


def test_the_probe_sees_an_import_when_there_is_one(queued: Path) -> None:
    """The check can fail: the SDK imported by hand shows up."""
    probe = _PROBE.replace("from worker.cli", "import anthropic\nfrom worker.cli")
    completed = subprocess.run(
        [sys.executable, "-c", probe.format(heavy=HEAVY), "status"],
        cwd=queued,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    heavy = _probe_result(completed)["heavy"]
    assert isinstance(heavy, list) and "anthropic" in heavy
