"""``simulate``: serve the Messages API simulator from the command line.

The simulator itself lives in :mod:`worker.simulator`; this module only puts it on the command
line, loading it when the command is typed.
"""

from __future__ import annotations

import argparse

from worker.config import Config

__all__ = ("register",)


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    from worker.simulator import cli as simulator_cli

    simulate = commands.add_parser(
        "simulate",
        parents=[common],
        help="serve the Anthropic Messages API simulator (for tests, demos and benchmarks)",
        description="A real HTTP server that speaks the Messages API with SSE, deterministic text, "
        "fault injection and rate limits.",
    )
    simulator_cli.add_arguments(simulate)
    simulate.set_defaults(handler=_simulate, needs_config=False)


async def _simulate(args: argparse.Namespace, config: Config) -> int:
    from worker.simulator import cli as simulator_cli

    return await simulator_cli.serve(args)
