#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.11+.

    python3 dev.py demo            # the demo batch: simulator + SQLite queue + worker pool + export
    python3 dev.py test            # the test suite, on the locked dependencies
    python3 dev.py test --latest   # the suite on the newest releases pyproject.toml allows
    python3 dev.py bench           # the benchmark suite (writes BENCHMARKS.md)
    python3 dev.py lock            # refresh requirements.lock from pyproject.toml (needs the index)
    python3 dev.py run ...         # any `python -m worker` command, e.g. `python3 dev.py run status`

The first call creates ./.venv and installs exactly the set pinned, with hashes, in requirements.lock
(the runtime, the postgres extra, the dev tools and the build backend); later calls reuse it,
reinstalling only when pyproject.toml or the lock changes. Extra arguments go to the command.

Why pip and not uv to install: pip ships with Python, so a fresh machine needs nothing else, and
`--require-hashes` makes it refuse anything the lock does not name. The lock itself is written by
uv (`uv pip compile --universal --generate-hashes`), a well-kept resolver, pinned here so that a
refresh is reproducible too.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
LOCK = ROOT / "requirements.lock"
VENV = ROOT / ".venv"
LATEST_VENV = ROOT / ".venv-latest"
TOOLS_VENV = ROOT / ".venv-tools"
UV_VERSION = "0.13.9"
EXTRAS = ("postgres", "dev")

COMMANDS = {
    "demo": ["-m", "worker", "demo"],
    "test": ["-m", "pytest"],
    "bench": ["-m", "bench"],
    "run": ["-m", "worker"],
}


def python_in(env: Path) -> Path:
    bin_dir = env / ("Scripts" if os.name == "nt" else "bin")
    return bin_dir / ("python.exe" if os.name == "nt" else "python")


def create_venv(env: Path) -> None:
    print(f"setting up {env} ...", flush=True)
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(env)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(
            f"could not create {env} with pip in it ({exc}).\n"
            "On Debian or Ubuntu, Python's venv support is a separate package: "
            "sudo apt install python3-venv (then remove the folder and run this again)."
        )


def pip(env: Path, *args: str) -> None:
    command = [str(python_in(env)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*command, *args], check=True)


def ensure_venv() -> Path:
    """The locked environment: exactly the lock's versions, then the project itself without deps."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this script must say so on an old Python
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if not LOCK.exists():
        sys.exit(f"{LOCK.name} is missing: run `python3 dev.py lock` to write it")
    stamp = VENV / ".installed-from"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + LOCK.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == wanted and python_in(VENV).exists():
        return VENV
    if not python_in(VENV).exists():
        create_venv(VENV)
    print(f"installing the locked dependencies ({LOCK.name}) into {VENV.name} ...", flush=True)
    pip(VENV, "--require-hashes", "--no-deps", "-r", str(LOCK))
    pip(VENV, "--no-deps", "--no-build-isolation", "-e", str(ROOT))
    stamp.write_text(wanted)
    return VENV


def latest_venv() -> Path:
    """A throw-away environment with the newest releases pyproject.toml's ranges allow."""
    create_venv(LATEST_VENV)
    print("installing the newest releases the ranges allow (no lock) ...", flush=True)
    pip(LATEST_VENV, "--upgrade", "-e", f"{ROOT}[{','.join(EXTRAS)}]")
    freeze = subprocess.run(
        [str(python_in(LATEST_VENV)), "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    print("latest: installed " + " ".join(freeze.split()), flush=True)
    return LATEST_VENV


def build_requirements() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        requires: list[str] = tomllib.load(handle)["build-system"]["requires"]
    return requires


def lock() -> int:
    """Rewrite requirements.lock with uv: universal (any OS, Python 3.11+), with hashes."""
    uv = TOOLS_VENV / ("Scripts" if os.name == "nt" else "bin") / "uv"
    if not uv.exists():
        create_venv(TOOLS_VENV)
        pip(TOOLS_VENV, f"uv=={UV_VERSION}")
    with tempfile.TemporaryDirectory() as scratch:
        build_in = Path(scratch) / "build.in"
        build_in.write_text("\n".join(build_requirements()) + "\n")
        command = [str(uv), "pip", "compile", "pyproject.toml", str(build_in)]
        command += [arg for extra in EXTRAS for arg in ("--extra", extra)]
        command += ["--universal", "--python-version", "3.11", "--generate-hashes", "--upgrade"]
        command += ["--no-header", "--quiet", "-o", str(LOCK)]
        status = subprocess.call(command, cwd=ROOT)
    if status == 0:
        text = LOCK.read_text().replace(str(build_in), "build-system.requires")
        header = "# The locked set (python3 dev.py lock). dev.py installs it with --require-hashes.\n"
        LOCK.write_text(header + text)
        print(f"wrote {LOCK.name}")
    return status


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {*COMMANDS, "lock"}:
        print(__doc__)
        return 2
    if sys.argv[1] == "lock":
        return lock()
    args = sys.argv[2:]
    if sys.argv[1] == "test" and "--latest" in args:
        args.remove("--latest")
        env = latest_venv()
    else:
        env = ensure_venv()
    os.chdir(ROOT)
    try:
        return subprocess.call([str(python_in(env)), *COMMANDS[sys.argv[1]], *args])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
