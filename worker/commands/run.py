"""``python -m worker run``: the pool, configured from the settings.

Exit codes: 0 done (or stopped by a signal without ``--until-empty``); 1 a job failed
(``--until-empty``) or the store stayed down past ``[worker] outage_limit``; 3
(``EXIT_ACCOUNT``) the API account or endpoint cannot be used, found by the preflight or
confirmed during the run, with every job left as it was; 130 ``--until-empty`` interrupted by a
signal (running jobs were checkpointed and released).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from jobs.errors import PoolError
from worker.config import Config
from worker.errors import AccountError, OutageLimitError

if TYPE_CHECKING:
    from worker.pool import Pool, PoolStats

# The SDK and the pool are imported by the functions that use them: importing the SDK takes
# seconds on a busy machine, and the commands that only read the queue never need it.

__all__ = (
    "register",
    "EXIT_ACCOUNT",
    "EXIT_INTERRUPTED",
    "exit_code",
)

#: ``run`` stopped by the API account (the preflight's code, kept here without importing the SDK).
EXIT_ACCOUNT = AccountError.exit_code
#: ``run --until-empty`` stopped by SIGINT/SIGTERM before the queue was empty.
EXIT_INTERRUPTED = 130
#: Where the API key comes from (named in messages about a refused key).
KEY_SOURCE = "ANTHROPIC_API_KEY"


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
        help="exit when nothing is queued or running: 0 if every job succeeded in full, 1 if one "
        "failed or was cut off by its output_budget, 130 if stopped by a signal first",
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


def exit_code(stats: PoolStats, *, until_empty: bool) -> int:
    """``run`` stops only by a signal, and exits 0 once it has released its jobs cleanly (the way
    a service is stopped). ``--until-empty`` promises a finished batch: a signal before the queue
    emptied is 130, so a script does not take a stopped batch for a done one; a document cut off by
    its output_budget is not a full success either (1)."""
    if not until_empty:
        return 0
    if stats.interrupted_by is not None:
        return 130
    return 1 if stats.failed or stats.truncated else 0


async def run_pool(args: argparse.Namespace, config: Config) -> int:
    from worker.metrics import serve_metrics
    from worker.preflight import preflight
    from worker.progress import ProgressDisplay
    from worker.runtime import make_economy, make_limits, open_runtime, start_fleet_tasks, url_source
    from worker.schedules import load_schedules, run_scheduler

    make_limits(config)  # bad limits stop here, before the schedules are read
    schedules = await anyio.to_thread.run_sync(load_schedules, config)  # a bad schedule stops here
    economy = make_economy(config, getattr(args, "max_cost", None))
    failure: PoolError | None = None
    async with open_runtime(config) as runtime:
        assert runtime.client is not None
        try:
            models = await runtime.store.model_counts()
            await preflight(runtime.client, models, key_source=KEY_SOURCE, url_source=url_source(config))
        except AccountError as exc:
            print(f"error: {exc}; no job was claimed", file=sys.stderr)
            return EXIT_ACCOUNT
        pool = runtime.pool(economy=economy)
        show = args.progress == "on" or (
            args.progress == "auto" and sys.stderr.isatty() and config.logging.format != "json"
        )
        w = config.worker
        async with (
            serve_metrics(runtime.recorder, w.metrics_host, w.metrics_port),
            anyio.create_task_group() as tg,
        ):
            if show:
                tg.start_soon(ProgressDisplay(pool, runtime.store).run)
            if schedules:
                tg.start_soon(run_scheduler, schedules, runtime.store, config)
            start_fleet_tasks(tg, runtime, pool.worker_id)
            try:
                stats = await pool.run(until_empty=args.until_empty)
            except (AccountError, OutageLimitError) as exc:
                failure = exc
            tg.cancel_scope.cancel()
        if failure is not None:
            return _failed(failure, pool)
        return exit_code(stats, until_empty=args.until_empty)


def _failed(failure: PoolError, pool: Pool) -> int:
    """One line for a run that had to stop; the exit code says which kind."""
    unsaved = pool.writer.stats.unsaved_chars
    note = f"; {unsaved} characters could not be saved" if unsaved else ""
    if isinstance(failure, AccountError):
        print(
            f"error: stopped: the API refused the key from {KEY_SOURCE}: {failure}; "
            f"every job was left as it was (running jobs released){note}",
            file=sys.stderr,
        )
        return EXIT_ACCOUNT
    print(f"error: {failure}{note}", file=sys.stderr)
    return 1
