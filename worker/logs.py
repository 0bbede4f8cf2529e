"""structlog, configured once at start-up.

Console rendering on a TTY, JSON lines otherwise (or as forced by ``[logging] format``).
``merge_contextvars`` comes first, so ``bound_contextvars(job_id=…, attempt=…)`` around a unit of
work tags every event logged inside it. Events have stable names (``job_claimed``,
``checkpoint_saved``, …) and carry data as fields; prompt text and the API key are never logged.

**Levels.** ``info`` logs one event per state change; ``debug`` adds our debug events (the config
in effect, each request's shape: model, max_tokens, resume mode, sizes) and the libraries' info
lines (the SDK's ``HTTP Request: POST … 200 OK``, the PostgreSQL pool's connection events).

**The SDK's own loggers** (``anthropic``, ``httpx2``) log each request's options, prompt included,
at debug level, which ``ANTHROPIC_LOG=debug`` turns on. That is never done behind the user's back:
their level is ours to set, from ``[logging] sdk_level`` (``auto`` = warning, or info when
``level`` is debug). Only ``sdk_level = "debug"`` (``--set logging.sdk_level=debug``) lets the
SDK log prompt text; ``ANTHROPIC_LOG`` alone gets a warning that says so.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog

__all__ = ("configure_logging", "get_logger", "add_logger_name")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
#: The SDK's loggers; at debug level they log request options, prompt text included.
SDK_LOGGERS = ("anthropic", "httpx2", "httpx", "httpcore")


class _NamedPrintLogger(structlog.PrintLogger):
    """A print logger that remembers the name given to ``structlog.get_logger(name)``."""

    def __init__(self, stream: TextIO, name: str | None) -> None:
        super().__init__(stream)
        self.name = name


class _NamedPrintLoggerFactory:
    """structlog passes ``get_logger``'s positional arguments here; the print factory drops them."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, *args: object) -> _NamedPrintLogger:
        name = args[0] if args and isinstance(args[0], str) else None
        return _NamedPrintLogger(self._stream, name)


def add_logger_name(
    logger: object, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """``logger=<module name>`` on every event (unless one was bound already)."""
    name = getattr(logger, "name", None)
    if name and "logger" not in event_dict:
        event_dict["logger"] = name
    return event_dict


def configure_logging(
    fmt: str = "auto", level: str = "info", stream: TextIO | None = None, sdk_level: str = "auto"
) -> None:
    """Configure structlog for this process. ``fmt`` is auto, console or json; ``sdk_level`` is
    auto, warning, info or debug (see the module docstring)."""
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if console:
        renderer = structlog.dev.ConsoleRenderer()
    else:
        processors.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    processors.append(renderer)
    _route_stdlib_logging(stream, renderer, _LEVELS[level])
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_NamedPrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _set_sdk_level(level, sdk_level)


def _set_sdk_level(level: str, sdk_level: str) -> None:
    if sdk_level == "auto":
        sdk_level = "info" if level == "debug" else "warning"
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(_LEVELS[sdk_level])
    asked = os.environ.get("ANTHROPIC_LOG")
    if asked and sdk_level != "debug":
        structlog.get_logger("worker.logs").warning(
            "anthropic_log_ignored",
            ANTHROPIC_LOG=asked,
            sdk_level=sdk_level,
            note='the SDK\'s debug lines hold prompt text: set [logging] sdk_level = "debug" to log them',
        )


def _route_stdlib_logging(stream: TextIO, renderer: structlog.typing.Processor, level: int) -> None:
    """Libraries that log through ``logging`` (the PostgreSQL driver's pool) come out in the same
    format, so a JSON log stays one JSON object per line."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO if level == logging.DEBUG else max(level, logging.WARNING))


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger whose events carry ``logger=name``."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
