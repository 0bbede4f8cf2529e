"""``python -m worker run``: the pool, configured from the settings."""

from __future__ import annotations

import argparse
import sys

import anyio
import anyio.to_thread

from worker.config import Config
from worker.runtime import make_client, make_economy, make_limits, open_runtime, pool_settings
from worker.schedules import load_schedules, run_scheduler

__all__ = ("register", "make_client", "pool_settings", "make_economy")


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run the worker pool",
        description="Claim jobs from the queue and stream them, checkpointing as they go. "
        "SIGINT/SIGTERM: stop claiming, let running jobs finish for the grace period, then "
        "checkpoint and release them; a second signal exits at once.",
    )
    run.add_argument(
        "--concurrency", type=int, default=None, help="jobs at once (default: [worker] concurrency)"
    )
    run.add_argument(
        "--until-empty",
        action="store_true",
        help="exit when nothing is queued or running: 0 if no job failed, 1 otherwise",
    )
    run.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="live progress line on stderr (auto: when stderr is a terminal and logs are not JSON)",
    )
    run.add_argument(
        "--max-cost",
        type=float,
        default=None,
        metavar="USD",
        help="stop claiming once this run has spent this much; running jobs go back to the queue "
        "(default: [costs] max_cost_per_run, 0 = no cap)",
    )
    run.set_defaults(handler=run_pool)


async def run_pool(args: argparse.Namespace, config: Config) -> int:
    from worker.progress import ProgressDisplay

    make_limits(config)  # bad limits stop here, before the schedules are read
    schedules = await anyio.to_thread.run_sync(load_schedules, config)  # a bad schedule stops here
    economy = make_economy(config, getattr(args, "max_cost", None))
    async with open_runtime(config) as runtime:
        pool = runtime.pool(economy=economy)
        show = args.progress == "on" or (
            args.progress == "auto" and sys.stderr.isatty() and config.logging.format != "json"
        )
        async with anyio.create_task_group() as tg:
            if show:
                tg.start_soon(ProgressDisplay(pool, runtime.store).run)
            if schedules:
                tg.start_soon(run_scheduler, schedules, runtime.store, config)
            stats = await pool.run(until_empty=args.until_empty)
            tg.cancel_scope.cancel()
        return 1 if args.until_empty and stats.failed else 0
