"""structlog, configured once at start-up.

Console rendering on a TTY, JSON lines otherwise (or as forced by ``[logging] format``).
``merge_contextvars`` comes first, so ``bound_contextvars(job_id=…, attempt=…)`` around a unit of
work tags every event logged inside it. Events have stable names (``job_claimed``,
``checkpoint_saved``, …) and carry data as fields; prompt text and the API key are never logged.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ("configure_logging", "get_logger")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog for this process. ``fmt`` is auto, console or json."""
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer())
    else:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger whose events carry ``logger=name``."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(logger=name)
    return logger
