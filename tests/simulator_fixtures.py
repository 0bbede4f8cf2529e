"""Pytest fixtures that run the Messages API simulator in-process on a free port.

``tests/conftest.py`` re-exports them with ``from tests.simulator_fixtures import *``. Each
simulator is function-scoped: it binds to the test's event loop, and its accounting and
per-document request numbers start from zero in every test.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any, Protocol

import pytest

from worker.simulator import Simulator, SimulatorConfig, run_simulator

__all__ = ("SimulatorFactory", "simulator", "make_simulator")


class SimulatorFactory(Protocol):
    """Starts a simulator from a config and/or :class:`SimulatorConfig` field overrides."""

    async def __call__(self, config: SimulatorConfig | None = None, /, **overrides: Any) -> Simulator: ...


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    """A running simulator with the default config (no faults, no limits, unpaced)."""
    async with run_simulator(SimulatorConfig()) as running:
        yield running


@pytest.fixture
async def make_simulator() -> AsyncIterator[SimulatorFactory]:
    """A factory for simulators with custom configs; all are stopped when the test ends.

    ``await make_simulator(otpm=1000)`` or ``await make_simulator(SimulatorConfig(...), seed=3)``.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def factory(config: SimulatorConfig | None = None, /, **overrides: Any) -> Simulator:
            chosen = dataclasses.replace(config or SimulatorConfig(), **overrides)
            return await stack.enter_async_context(run_simulator(chosen))

        yield factory
