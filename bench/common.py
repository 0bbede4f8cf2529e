"""Pieces every benchmark shares: a simulator in its own process, its accounting, CPU timing.

The simulator runs as a separate process so that its CPU is never counted against the client
being measured; benchmarks compare two clients side by side in the same run (these machines are
noisy) and report ratios.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2

__all__ = ("SimulatorProcess", "simulator_process", "cpu_seconds", "median", "Row", "poll_until")


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
