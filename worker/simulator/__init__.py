"""An HTTP simulator of the Anthropic Messages API that the real SDK cannot tell from the API.

Tests, benchmarks and the demo drive the official ``anthropic`` SDK against it over real HTTP:
deterministic documents (:func:`expected_document`), the exact SSE grammar, prefill and
continuation rules per model generation, seeded faults, token-bucket rate limits and an
accounting endpoint. Start it in-process with :func:`run_simulator` or from the command line
with ``python -m worker.simulator``.

The HTTP parts (``server``, ``protocol``, ``batches``) are imported on first use of one of their names, so
``python -m worker status`` does not pay for the HTTP stack just to list ``simulate`` in its help.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from worker.simulator.accounting import AccountingSnapshot, DocumentStats
from worker.simulator.faults import FaultConfig, FaultKind
from worker.simulator.ratelimit import RateLimiter, RateLimitExceeded, RateLimits, TokenBucket
from worker.simulator.text import (
    DEFAULT_DOCUMENT_TOKENS,
    count_tokens,
    document_key,
    expected_document,
    parse_directives,
    tokenize,
)

if TYPE_CHECKING:
    from worker.simulator.batches import BatchConfig
    from worker.simulator.protocol import model_retired, model_supports_prefill
    from worker.simulator.server import Simulator, SimulatorConfig, run_simulator

_LAZY = {
    "BatchConfig": "batches",
    "model_retired": "protocol",
    "model_supports_prefill": "protocol",
    "Simulator": "server",
    "SimulatorConfig": "server",
    "run_simulator": "server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = (
    "SimulatorConfig",
    "BatchConfig",
    "Simulator",
    "run_simulator",
    "expected_document",
    "document_key",
    "tokenize",
    "count_tokens",
    "parse_directives",
    "DEFAULT_DOCUMENT_TOKENS",
    "FaultConfig",
    "FaultKind",
    "RateLimits",
    "RateLimiter",
    "RateLimitExceeded",
    "TokenBucket",
    "AccountingSnapshot",
    "DocumentStats",
    "model_supports_prefill",
    "model_retired",
)
