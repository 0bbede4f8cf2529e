"""``python -m bench.cli_startup``: how long a store-only command takes to start, beside bare Python.

Each command runs as a user would (``python -m worker status`` on a small SQLite queue), alternated
with a bare interpreter (``python -c pass``) and with ``python -c "import anthropic"`` (what every
command paid before the SDK was imported lazily), so the three are measured side by side under the
same load. Reported: the median wall time of each, and the command's time as a ratio of the SDK
import it no longer pays.

The children run as in a user's shell: ``PYTHONDONTWRITEBYTECODE`` is removed from their environment
(some sandboxes set it, which makes every start compile the project from source) and one untimed run
of each line comes first, so bytecode caches exist as they would after a first use.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from bench.common import Row, median

#: The store-only commands measured (each must run without importing the SDK).
COMMANDS: tuple[tuple[str, ...], ...] = (("status",), ("show", "j1"), ("status", "--help"))


#: A user's environment: bytecode caches are written and read.
_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def _seconds(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True, env=_ENV)
    return time.perf_counter() - started


def measure(runs: int) -> dict[str, float]:
    """Median seconds per command line, each alternated with the two baselines ``runs`` times."""
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        queue = ["--queue-url", f"sqlite:///{cwd / 'queue.db'}"]
        (cwd / "jobs.jsonl").write_text(json.dumps({"id": "j1", "prompt": "Write."}) + "\n")
        subprocess.run([sys.executable, "-m", "worker", *queue, "enqueue", "jobs.jsonl"], cwd=cwd, check=True)
        lines: dict[str, list[str]] = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import anthropic'": [sys.executable, "-c", "import anthropic"],
        }
        for command in COMMANDS:
            lines[f"worker {' '.join(command)}"] = [sys.executable, "-m", "worker", *queue, *command]
        times: dict[str, list[float]] = {name: [] for name in lines}
        for argv in lines.values():
            _seconds(argv, cwd)  # warm-up: writes the bytecode caches
        for _ in range(runs):
            for name, argv in lines.items():
                times[name].append(_seconds(argv, cwd))
    return {name: median(values) for name, values in times.items()}


async def run(runs: int = 7) -> list[Row]:
    medians = await anyio.to_thread.run_sync(measure, runs)
    bare = medians["python -c pass"]
    sdk = medians["python -c 'import anthropic'"]
    rows = []
    for command in COMMANDS:
        name = f"worker {' '.join(command)}"
        rows.append(
            Row(
                name=f"CLI start-up: `python -m worker {' '.join(command)}`",
                ours=f"{medians[name] * 1000:.0f} ms",
                baseline=f"`import anthropic` alone {sdk * 1000:.0f} ms; bare Python {bare * 1000:.0f} ms",
                ratio=f"{medians[name] / sdk:.2f}× the SDK import",
                method=(
                    f"median of {runs} runs, alternated with the two baselines; a SQLite queue of one job; "
                    "the command imports neither the SDK nor an HTTP stack (tests/test_cli_startup.py)"
                ),
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    for row in anyio.run(run, args.runs):
        print(f"{row.name}: {row.ours} | {row.baseline} | {row.ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
