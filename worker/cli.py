"""The command line: ``python -m worker <command>``.

Each module of :mod:`worker.commands` registers its sub-commands with a handler
``async def handler(args, config) -> int``; this thin dispatcher parses the arguments, loads the config
(file, environment, flags), configures logging once, runs the handler, and turns the errors a user
can fix (bad config, bad input, a missing job) into one message and an exit code, never a traceback.

Errors raised inside task groups arrive wrapped in (nested) exception groups: they are unwrapped,
and the first of the project's errors is printed as ``error: …`` with its class's ``exit_code``.
Anything else is a bug and keeps its traceback; ``--debug`` prints the traceback of every error.

Exit codes: 0 success, 1 a job or an input failed, 2 bad usage or configuration, 130 interrupted
(plus any code a :class:`~jobs.errors.PoolError` subclass declares).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import structlog

from jobs.errors import ConfigError, PoolError
from worker.config import Config, load_config
from worker.logs import configure_logging

__all__ = (
    "main",
    "build_parser",
    "requested_command",
    "COMMAND_MODULES",
    "Handler",
    "common_options",
    "user_error",
    "report_error",
    "INTERRUPTED",
)

#: The exit code of a run stopped by SIGINT/SIGTERM (128 + SIGINT, as shells report it).
INTERRUPTED = 130

Handler = Callable[[argparse.Namespace, Config], Awaitable[int]]

#: Flags whose value is a config key: ``--concurrency 16`` is ``--set worker.concurrency=16``.
_SHORT_FLAGS: dict[str, str] = {
    "concurrency": "worker.concurrency",
    "queue_url": "queue.url",
    "model": "anthropic.model",
    "base_url": "anthropic.base_url",
}


def common_options() -> argparse.ArgumentParser:
    """Options every command accepts, before or after the command name."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("settings")
    group.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="config file (default: ./config.toml if present)",
    )
    group.add_argument(
        "--set",
        action="append",
        default=argparse.SUPPRESS,
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set worker.concurrency=16 (repeatable)",
    )
    group.add_argument(
        "--log-format",
        choices=("auto", "console", "json"),
        default=argparse.SUPPRESS,
        help="force console or JSON-lines logs (default: [logging] format)",
    )
    group.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default=argparse.SUPPRESS
    )
    group.add_argument("--queue-url", default=argparse.SUPPRESS, help="shortcut for --set queue.url=URL")
    group.add_argument("--model", default=argparse.SUPPRESS, help="shortcut for --set anthropic.model=ID")
    group.add_argument(
        "--base-url", default=argparse.SUPPRESS, help="shortcut for --set anthropic.base_url=URL"
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the traceback of an error (and log at debug level unless --log-level says otherwise)",
    )
    return common


#: The module that registers each command. ``main`` imports only the module of the command typed,
#: so ``status`` never loads the scheduler's cron parser, the demo or the pool (see
#: ``tests/test_cli_startup.py``); help and unknown commands load them all.
COMMAND_MODULES: dict[str, str] = {
    "run": "worker.commands.run",
    "demo": "worker.commands.demo",
    "enqueue": "worker.commands.enqueue",
    **dict.fromkeys(("status", "show", "export", "retry", "cancel", "delete"), "worker.commands.queue"),
    "prune": "worker.commands.prune",
    "schedule": "worker.commands.schedule",
    "migrate": "worker.commands.migrate",
    "serve": "worker.commands.serve",
    "simulate": "worker.commands.simulate",
}


def requested_command(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (common options may come before it), or None if there is none
    or the common options do not parse (the full parser then reports the mistake)."""
    try:
        _, rest = common_options().parse_known_args(list(argv))
    except SystemExit:
        return None
    return next((word for word in rest if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for every command, or only for ``command`` when it is a known one."""
    from importlib import import_module

    if command in COMMAND_MODULES:
        modules = [COMMAND_MODULES[command]]
    else:
        modules = list(dict.fromkeys(COMMAND_MODULES.values()))
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="A durable worker pool that writes long documents with Claude.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in modules:
        import_module(name).register(commands, common)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    """``section.key`` -> (text, which flag gave it), so a bad value names the flag typed."""
    overrides: dict[str, tuple[str, str]] = {}
    for item in getattr(args, "set", []) or []:
        dotted, sep, text = item.partition("=")
        if getattr(args, "job_fields_in_set", False) and "." not in dotted:
            continue  # a job field (`retry ID --set model=...`): the command reads it

        if not sep or "." not in dotted:
            raise ConfigError(f"flag --set {item!r}: expected SECTION.KEY=VALUE")
        overrides[dotted.strip()] = (text, f"flag --set {dotted.strip()}")
    for attr, dotted in _SHORT_FLAGS.items():
        value: Any = getattr(args, attr, None)
        if value is not None:
            overrides[dotted] = (str(value), f"flag --{attr.replace('_', '-')}")
    if getattr(args, "debug", False) and not getattr(args, "log_level", None):
        overrides["logging.level"] = ("debug", "flag --debug")
    if getattr(args, "log_format", None):
        overrides["logging.format"] = (args.log_format, "flag --log-format")
    if getattr(args, "log_level", None):
        overrides["logging.level"] = (args.log_level, "flag --log-level")
    return overrides


def _log_config(config: Config) -> None:
    """At debug level, the settings in effect (the queue URL without its password)."""
    url = config.queue_url()
    parts = urlsplit(url)
    if parts.password:
        url = url.replace(f":{parts.password}@", ":***@", 1)
    structlog.get_logger("worker.cli").debug(
        "config_loaded",
        source=None if config.source is None else str(config.source),
        queue_url=url,
        base_url=config.api_base_url(),
        model=config.anthropic.model,
        concurrency=config.worker.concurrency,
    )


def user_error(exc: BaseException) -> PoolError | None:
    """The project error to report for ``exc``: itself, or the first one inside (nested) exception
    groups, whose other members are only cancellations, interrupts or more of our errors. None if
    something else is inside: a bug, which must keep its traceback."""
    if isinstance(exc, PoolError):
        return exc
    if not isinstance(exc, BaseExceptionGroup):
        return None
    found: PoolError | None = None
    for inner in exc.exceptions:
        error = user_error(inner)
        if error is None and not _is_interrupt(inner):
            return None
        found = found or error
    return found


def _is_interrupt(exc: BaseException) -> bool:
    # The loop is gone by now, so anyio cannot say which class it cancels with: the CLI runs
    # anyio on asyncio, whose cancellation is asyncio.CancelledError.
    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
        return True
    return isinstance(exc, BaseExceptionGroup) and all(_is_interrupt(e) for e in exc.exceptions)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(requested_command(argv))
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        config = load_config(getattr(args, "config", None), overrides=_overrides(args))
        configure_logging(config.logging.format, config.logging.level, sdk_level=config.logging.sdk_level)
        _log_config(config)
        handler: Handler = args.handler
        return anyio.run(handler, args, config)
    except BaseException as exc:  # every error ends here, as a message or a traceback
        return report_error(exc, debug)


def report_error(exc: BaseException, debug: bool) -> int:
    """Print ``exc`` as one line and return its exit code; re-raise what is not ours."""
    error = user_error(exc)
    if error is None:
        if _is_interrupt(exc):
            return INTERRUPTED
        raise exc
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {error}", file=sys.stderr)
    return error.exit_code
