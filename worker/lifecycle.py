"""Model lifecycle: which models the SDK lists as deprecated, and keeping its warnings out of jobs.

Models age while a queue waits. The SDK carries the deprecation table the API publishes (model id →
end-of-life date) and warns on every request to a listed model. We read that same table, so a new
SDK release updates us without a list of our own, and report it as data: one ``model_deprecated``
warning per model, with its end-of-life date and how many jobs use it, at enqueue and at worker
start. A deprecated model still works until its end of life, so its jobs run as usual.

The SDK's own request-time warnings must never fail a job. Under ``-W error`` or pytest's
``filterwarnings = error`` a ``DeprecationWarning`` raised inside ``messages.create`` becomes an
exception in the attempt. The warning is issued inside the SDK's coroutine, and Python 3.11's
``warnings.catch_warnings`` is process-wide, not task-local: a scope around one request would race
with every other task's requests. So the pool installs, once, narrow "ignore" filters for exactly
the SDK's request-time messages (``ignore_request_warnings``); what they said is reported here, as
structured events, instead.

A model past its end of life is answered with a 404 (or a 400 naming the model): that fails only
its jobs, with a message from ``retired_model_reason`` that names the model and says it was retired.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import structlog

__all__ = (
    "deprecated_models",
    "end_of_life",
    "log_deprecated",
    "ignore_request_warnings",
    "retired_model_reason",
)

log = structlog.get_logger("worker.lifecycle")

#: The messages the SDK warns with inside ``messages.create``/``stream`` (resources/messages).
_REQUEST_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"The model '.*' is deprecated and will reach end-of-life", DeprecationWarning),
    (r"Using Claude with .* and 'thinking\.type=enabled' is deprecated", UserWarning),
)
_MODEL_IN_MESSAGE = re.compile(r"model[:\s]+'?([A-Za-z0-9._:@/-]+)'?")


@functools.cache
def deprecated_models() -> Mapping[str, str]:
    """The SDK's deprecation table (model id → end-of-life date, as the SDK words it).

    It is the table behind the SDK's warnings: the ``DEPRECATED_MODELS`` its ``messages.create``
    consults. Commands that make no API call must not pay for importing the SDK (seconds), so
    unless the SDK is already loaded the table's own small module (``anthropic/_data``, plain data)
    is loaded from the installed package without importing the package. An SDK without a table
    gives an empty one: nothing is deprecated as far as we know.
    """
    loaded = sys.modules.get("anthropic.resources.messages.messages")
    if loaded is None:
        table = _table_from_data_module()
        if table is not None:
            return table
        from anthropic.resources.messages import messages as loaded
    table = getattr(loaded, "DEPRECATED_MODELS", None)
    return dict(table) if isinstance(table, Mapping) else {}


def _table_from_data_module() -> dict[str, str] | None:
    package = importlib.util.find_spec("anthropic")
    if package is None or package.origin is None:
        return None
    path = Path(package.origin).parent / "_data" / "deprecated_models.py"
    spec = importlib.util.spec_from_file_location("_longform_sdk_deprecated_models", path)
    if not path.is_file() or spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = getattr(module, "DEPRECATED_MODELS", None)
    return {str(k): str(v) for k, v in table.items()} if isinstance(table, Mapping) else None


def end_of_life(model: str) -> str | None:
    """When ``model`` reaches its end of life, if the SDK lists it as deprecated."""
    return deprecated_models().get(model)


def log_deprecated(model_counts: Mapping[str, int], *, where: str) -> list[str]:
    """One ``model_deprecated`` warning per deprecated model among ``model_counts``; returns them."""
    table = deprecated_models()
    found = sorted(model for model in model_counts if model in table)
    for model in found:
        log.warning(
            "model_deprecated",
            model=model,
            end_of_life=table[model],
            jobs=model_counts[model],
            where=where,
            hint="the jobs run until then; re-enqueue or `retry --set model=...` to move them",
        )
    return found


def ignore_request_warnings() -> None:
    """Make the SDK's request-time warnings harmless under any warnings filter (see the docstring).

    Idempotent: ``warnings.filterwarnings`` replaces an identical filter rather than adding one.
    """
    for message, category in _REQUEST_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def retired_model_reason(status: int, api_message: str) -> str | None:
    """A clear reason for an API answer that says the model is not served, else ``None``.

    The API answers a retired model as it answers an unknown one: 404 ``not_found_error`` with the
    message ``model: <id>`` (some gateways use a 400 naming the model instead).
    """
    lowered = api_message.lower()
    is_model_404 = status == 404 and lowered.startswith("model")
    names_model = "model" in lowered and ("not found" in lowered or "invalid model" in lowered)
    is_model_400 = status == 400 and names_model
    if not (is_model_404 or is_model_400):
        return None
    match = _MODEL_IN_MESSAGE.search(api_message)
    model = match.group(1) if match else "?"
    eol = end_of_life(model)
    when = f" (end of life {eol})" if eol else ""
    return (
        f"model {model!r} is not served by the API: it was retired{when} or never existed "
        f"(HTTP {status}: {api_message}); move its jobs to a current model"
    )
