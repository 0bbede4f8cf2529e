#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.11+.

    python3 dev.py demo    # the demo batch: simulator + SQLite queue + worker pool + export
    python3 dev.py test    # the test suite
    python3 dev.py bench   # the benchmark suite (writes BENCHMARKS.md)
    python3 dev.py run ... # any `python -m worker` command, e.g. `python3 dev.py run status`

The first call creates ./.venv and installs the project with its dev extra; later calls reuse it,
reinstalling only when pyproject.toml changes. Extra arguments go to the command (e.g. pytest's).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".installed-from"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")

COMMANDS = {
    "demo": ["-m", "worker", "demo"],
    "test": ["-m", "pytest"],
    "bench": ["-m", "bench"],
    "run": ["-m", "worker"],
}


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script must say so on an old Python
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"setting up {VENV} (first run only) ...", flush=True)
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except (OSError, subprocess.CalledProcessError) as exc:
            sys.exit(
                f"could not create {VENV} with pip in it ({exc}).\n"
                "On Debian or Ubuntu, Python's venv support is a separate package: "
                "sudo apt install python3-venv (then remove .venv and run this again)."
            )
    print("installing the project and its dev tools into .venv ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        return 2
    ensure_venv()
    command = [str(PYTHON), *COMMANDS[sys.argv[1]], *sys.argv[2:]]
    os.chdir(ROOT)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
