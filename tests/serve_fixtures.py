"""``python -m worker serve`` as a real subprocess, for tests that need the whole command.

``serve_process`` is a factory fixture: ``serve_process(config_path, "--workers", "2")`` starts
the command on a free port, waits for its ``serving on URL`` line, and returns the URL and the
process; every process is stopped (SIGTERM, then SIGKILL) when the test ends. Its stderr (logs,
including the access log) is kept in a file the test can read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server_harness import TOKEN

__all__ = ("Served", "ServeFactory", "serve_process", "write_serve_config", "start_serve", "stop_serve")


@dataclass(frozen=True, slots=True)
class Served:
    url: str
    process: subprocess.Popen[str]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


ServeFactory = Callable[..., Served]


def write_serve_config(tmp_path: Path, *, base_url: str = "", extra: str = "") -> Path:
    """A config with a SQLite queue in ``tmp_path``, fast checkpoints and JSON logs."""
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[anthropic]
base_url = "{base_url}"
[queue]
url = "sqlite:///{tmp_path / "jobs.db"}"
lease_seconds = 3.0
[worker]
checkpoint_seconds = 0.05
poll_seconds = 0.05
idle_timeout = 5.0
backoff_base = 0.05
backoff_max = 0.1
grace_seconds = 1.0
[logging]
format = "json"
{extra}
""",
        encoding="utf-8",
    )
    return path


def start_serve(
    config: Path, log: Path, *args: str, token: str | None = TOKEN, limit: float = 30.0
) -> Served:
    """Start ``serve`` on a free port and wait for its ``serving on`` line."""
    env = {**os.environ, "ANTHROPIC_API_KEY": "test"}
    env.pop("LONGFORM_SERVER_TOKEN", None)
    if token is not None:
        env["LONGFORM_SERVER_TOKEN"] = token
    command = [sys.executable, "-m", "worker", "serve", "--config", str(config), "--port", "0", *args]
    with log.open("w") as errors:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
    deadline = time.monotonic() + limit
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("serving on "):
            return Served(line.split()[-1], process, log)
        if time.monotonic() > deadline:
            break
    stop_serve(process)
    raise AssertionError(f"serve did not start: {log.read_text()}")


def stop_serve(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[ServeFactory]:
    started: list[subprocess.Popen[str]] = []

    def start(config: Path, *args: str, token: str | None = TOKEN) -> Served:
        served = start_serve(config, tmp_path / f"serve-{len(started)}.log", *args, token=token)
        started.append(served.process)
        return served

    yield start
    for process in started:
        stop_serve(process)
