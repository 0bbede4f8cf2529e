"""The README's first command, run as a user runs it: ``python -m worker demo`` on the simulator.

It goes through the composition root like ``run`` does; every document must match the
simulator's fault-free text, the documents and the manifest must be written, and the exit code
must say success.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(240)


def test_the_demo_writes_every_document_exactly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "LONGFORM_"))}
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "worker", "demo", "--simulator", "--jobs", "4", "--out", str(out)],
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Byte-identical to a fault-free run: 4/4 documents." in done.stdout
    assert "Summary: 4 succeeded, 0 failed" in done.stdout
    manifest = [json.loads(line) for line in (out / "documents" / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 4 and {entry["state"] for entry in manifest} == {"succeeded"}
    for entry in manifest:
        assert (out / "documents" / f"{entry['id']}.md").stat().st_size > 1000
    assert "simulator" not in (out / "queue.db").read_bytes().decode("latin-1")  # the key stays out
