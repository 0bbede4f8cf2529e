"""Pieces every benchmark shares: a simulator in its own process, its accounting, CPU timing,
and the :class:`~worker.config.Config` a user's ``run`` would load (:func:`bench_config`), so the
benchmarks build their pools through the composition root (``worker.runtime.open_runtime``).

The simulator runs as a separate process so that its CPU is never counted against the client
being measured; benchmarks compare two clients side by side in the same run (these machines are
noisy) and report ratios.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2

from worker.config import Config, load_config

__all__ = (
    "SimulatorProcess",
    "simulator_process",
    "bench_config",
    "Setting",
    "free_port",
    "cpu_seconds",
    "median",
    "Row",
    "poll_until",
)

#: A setting's value as a benchmark writes it; turned into the text a ``--set`` flag would carry.
Setting = str | int | float | bool


@dataclass
class SimulatorProcess:
    base_url: str
    process: subprocess.Popen[str]

    def accounting(self) -> dict[str, Any]:
        response = httpx2.get(f"{self.base_url}/_sim/accounting", timeout=30)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def reset(self) -> None:
        httpx2.post(f"{self.base_url}/_sim/reset", timeout=30).raise_for_status()


@contextmanager
def simulator_process(*flags: str) -> Iterator[SimulatorProcess]:
    """``python -m worker.simulator --port 0 FLAGS``, stopped on exit."""
    command = [sys.executable, "-m", "worker.simulator", "--port", "0", *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("simulator listening on "):
            raise RuntimeError(f"the simulator did not start: {line!r}")
        yield SimulatorProcess(line.removeprefix("simulator listening on "), process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def bench_config(
    folder: Path,
    name: str,
    base_url: str,
    settings: Mapping[str, Setting] | None = None,
    *,
    toml: str = "",
) -> Config:
    """The config ``python -m worker run --config <folder>/<name>.toml --set k=v ...`` would load.

    Built by :func:`~worker.config.load_config`, so every value is checked as a user's would be:
    the defaults, then ``toml`` (written to ``<folder>/<name>.toml``; the only way to give
    ``[rate_limits.classes.*]``), then the queue ``sqlite:///<folder>/<name>.db``, the simulator's
    ``base_url`` and ``settings`` (dotted keys such as ``{"worker.concurrency": 16}``) as flags.
    The file is always written, so ``./config.toml`` is never read, and ``env`` is empty, so no
    ``LONGFORM_*`` variable of the shell running the benchmark changes what it measures.
    """
    folder = folder.resolve()
    path = folder / f"{name}.toml"
    path.write_text(toml, encoding="utf-8")
    overrides = {"queue.url": f"sqlite:///{folder / f'{name}.db'}", "anthropic.base_url": base_url}
    overrides |= {key: _flag_text(value) for key, value in (settings or {}).items()}
    return load_config(path, env={}, overrides=overrides)


def _flag_text(value: Setting) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def free_port() -> int:
    """A loopback port free a moment ago, for a setting that must name one (0 there means off)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def poll_until(condition: Callable[[], Awaitable[bool]], limit: float, every: float = 0.05) -> None:
    """Wait until ``condition`` (a durable fact: the store, a process) holds, up to ``limit`` s."""
    with anyio.fail_after(limit):
        while not await condition():  # noqa: ASYNC110 - the facts live in another process
            await anyio.sleep(every)


def cpu_seconds() -> float:
    """CPU time of this process (user + system), the measure of client cost."""
    return time.process_time()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass(frozen=True)
class Row:
    """One line of BENCHMARKS.md."""

    name: str
    ours: str
    baseline: str
    ratio: str
    method: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__)
