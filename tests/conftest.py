"""Fixtures for every test module: the simulator, the job stores, and clean global state."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from tests.serve_fixtures import *  # noqa: F403
from tests.simulator_fixtures import *  # noqa: F403
from tests.store_fixtures import *  # noqa: F403


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """``worker.cli.main`` configures logging for the process, bound to the stream of the moment;
    a test that calls it must not leave later tests logging into a closed capture."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level
