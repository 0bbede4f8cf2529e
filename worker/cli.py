"""The command line: ``python -m worker <command>``.

Each command module registers its sub-commands with a handler
``async def handler(args, config) -> int``; this module parses the arguments, loads the config
(file, environment, flags), configures logging once, runs the handler, and turns the errors a user
can fix (bad config, bad input, a missing job) into one message and an exit code, never a traceback.

Exit codes: 0 success, 1 a job or an input failed, 2 bad usage or configuration, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from jobs.errors import ConfigError, InvalidJobError, MissingDependencyError, PoolError, StoreError
from worker.config import Config, load_config
from worker.logs import configure_logging

__all__ = ("main", "build_parser", "Handler", "common_options")

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
    return common


def build_parser() -> argparse.ArgumentParser:
    from worker import demo, job_commands, migrate_command, run_command, schedule_commands, serve_command
    from worker.simulator import cli as simulator_cli

    common = common_options()
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="A durable worker pool that writes long documents with Claude.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    run_command.register(commands, common)
    demo.register(commands, common)
    job_commands.register(commands, common)
    schedule_commands.register(commands, common)
    migrate_command.register(commands, common)
    serve_command.register(commands, common)

    simulate = commands.add_parser(
        "simulate",
        parents=[common],
        help="serve the Anthropic Messages API simulator (for tests, demos and benchmarks)",
        description="A real HTTP server that speaks the Messages API with SSE, deterministic text, "
        "fault injection and rate limits.",
    )
    simulator_cli.add_arguments(simulate)
    simulate.set_defaults(handler=_simulate, needs_config=False)
    return parser


async def _simulate(args: argparse.Namespace, config: Config) -> int:
    from worker.simulator import cli as simulator_cli

    return await simulator_cli.serve(args)


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in getattr(args, "set", []) or []:
        dotted, sep, text = item.partition("=")
        if not sep or "." not in dotted:
            raise ConfigError(f"flag --set {item!r}: expected SECTION.KEY=VALUE")
        overrides[dotted.strip()] = text
    for attr, dotted in _SHORT_FLAGS.items():
        value: Any = getattr(args, attr, None)
        if value is not None:
            overrides[dotted] = str(value)
    if getattr(args, "log_format", None):
        overrides["logging.format"] = args.log_format
    if getattr(args, "log_level", None):
        overrides["logging.level"] = args.log_level
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(getattr(args, "config", None), overrides=_overrides(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.logging.format, config.logging.level)
    handler: Handler = args.handler
    try:
        return anyio.run(handler, args, config)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MissingDependencyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (InvalidJobError, StoreError, PoolError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
