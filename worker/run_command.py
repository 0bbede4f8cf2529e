"""``python -m worker run``: the pool, configured from the settings."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from jobs.buckets import Limits
from jobs.costs import load_prices
from jobs.errors import ConfigError
from jobs.store import open_store
from worker.config import Config

if TYPE_CHECKING:
    import anthropic

    from worker.economy import Economy
    from worker.pool import PoolSettings, PoolStats

# The SDK and the pool are imported by the functions that use them: importing the SDK takes
# seconds on a busy machine, and the commands that only read the queue never need it.

__all__ = ("register", "make_client", "pool_settings", "make_economy", "exit_code")


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


def make_client(config: Config) -> anthropic.AsyncAnthropic:
    """The SDK client: retries off (the pool owns them), timeouts that suit long streams."""
    import anthropic
    import httpx2

    base_url = config.api_base_url()
    api_key = os.environ.get("ANTHROPIC_API_KEY")
    if not api_key:
        if base_url is None:
            raise ConfigError(
                "ANTHROPIC_API_KEY is not set: export it, or point [anthropic] base_url "
                "(or ANTHROPIC_BASE_URL) at a simulator (python -m worker simulate)"
            )
        api_key = "no-key-set"
    idle = config.worker.idle_timeout
    timeout = httpx2.Timeout(timeout=idle + 30, connect=config.anthropic.connect_timeout)
    limits = httpx2.Limits(
        max_connections=max(1000, config.worker.concurrency * 2),
        max_keepalive_connections=max(100, config.worker.concurrency),
    )
    if config.anthropic.http_transport == "aiohttp":
        http_client: httpx2.AsyncClient = anthropic.DefaultAioHttpClient(timeout=timeout, limits=limits)
    else:
        http_client = anthropic.DefaultAsyncHttpxClient(timeout=timeout, limits=limits)
    return anthropic.AsyncAnthropic(
        api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout, http_client=http_client
    )


def pool_settings(config: Config) -> PoolSettings:
    from worker.attempt import AttemptSettings
    from worker.pool import PoolSettings

    w = config.worker
    return PoolSettings(
        concurrency=w.concurrency,
        lease_seconds=config.queue.lease_seconds,
        checkpoint_chars=w.checkpoint_chars,
        checkpoint_seconds=w.checkpoint_seconds,
        grace_seconds=w.grace_seconds,
        poll_seconds=w.poll_seconds,
        typical_max_tokens=config.anthropic.max_tokens,
        attempt=AttemptSettings(
            idle_timeout=w.idle_timeout,
            backoff_base=w.backoff_base,
            backoff_max=w.backoff_max,
            retry_after_max=w.retry_after_max,
        ),
    )


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


def make_economy(config: Config, max_cost: float | None = None) -> Economy:
    """Prices (shipped, plus ``[costs] prices_file``) and the run's budget."""
    from worker.budget import RunBudget
    from worker.economy import Economy

    cap = config.costs.max_cost_per_run if max_cost is None else max_cost
    if cap < 0:
        raise ConfigError(f"run --max-cost must be at least 0, got {cap}")
    return Economy(
        prices=load_prices(config.prices_path()),
        budget=RunBudget(cap or None),
        cache_checkpoint=config.costs.cache_checkpoint == "on",
    )


async def run_pool(args: argparse.Namespace, config: Config) -> int:
    from worker.daily_cap import DailyCap
    from worker.limits import FleetLimiter, check_limits
    from worker.pool import Pool
    from worker.progress import ProgressDisplay
    from worker.schedules import load_schedules, run_scheduler

    limits = Limits(
        requests=config.rate_limits.requests_per_minute,
        input_tokens=config.rate_limits.input_tokens_per_minute,
        output_tokens=config.rate_limits.output_tokens_per_minute,
    )
    check_limits(limits, config.anthropic.max_tokens)
    schedules = await anyio.to_thread.run_sync(load_schedules, config)  # a bad schedule stops here
    economy = make_economy(config, getattr(args, "max_cost", None))
    client = make_client(config)
    store = open_store(config.queue_url())
    try:
        limiter = None
        if not limits.unlimited:
            limiter = FleetLimiter(store, limits, retry_after_max=config.worker.retry_after_max)
        daily = DailyCap(store, config.costs.daily_cap_usd) if config.costs.daily_cap_usd else None
        pool = Pool(store, client, pool_settings(config), limiter=limiter, economy=economy, daily_cap=daily)
        show = args.progress == "on" or (
            args.progress == "auto" and sys.stderr.isatty() and config.logging.format != "json"
        )
        async with anyio.create_task_group() as tg:
            if show:
                tg.start_soon(ProgressDisplay(pool, store).run)
            if schedules:
                tg.start_soon(run_scheduler, schedules, store, config)
            stats = await pool.run(until_empty=args.until_empty)
            tg.cancel_scope.cancel()
        return exit_code(stats, until_empty=args.until_empty)
    finally:
        with anyio.CancelScope(shield=True):
            await client.close()
            await store.close()
