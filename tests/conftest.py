"""Fixtures for every test module: the simulator and the job stores."""

from __future__ import annotations

from tests.simulator_fixtures import *  # noqa: F403
from tests.store_fixtures import *  # noqa: F403
