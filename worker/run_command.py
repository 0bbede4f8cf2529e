"""``python -m worker run``: the pool, configured from the settings.

Exit codes: 0 done (or stopped by a signal without ``--until-empty``); 1 a job failed
(``--until-empty``) or the store stayed down past ``[worker] outage_limit``; 3
(``EXIT_ACCOUNT``) the API account or endpoint cannot be used, found by the preflight or
confirmed during the run, with every job left as it was; 130 ``--until-empty`` interrupted by a
signal (running jobs were checkpointed and released).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from jobs.buckets import Limits
from jobs.costs import load_prices
from jobs.errors import AccountError, ConfigError, OutageLimitError, PoolError
from jobs.store import open_store
from worker.config import Config

if TYPE_CHECKING:
    import anthropic

    from worker.economy import Economy
    from worker.pool import Pool, PoolSettings, PoolStats

# The SDK and the pool are imported by the functions that use them: importing the SDK takes
# seconds on a busy machine, and the commands that only read the queue never need it.

__all__ = (
    "register",
    "make_client",
    "pool_settings",
    "EXIT_ACCOUNT",
    "EXIT_INTERRUPTED",
    "make_economy",
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
        overload_patience=w.overload_patience,
        outage_limit=w.outage_limit,
        shutdown_deadline=w.shutdown_deadline,
        max_pending_chars=w.max_pending_chars,
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


def url_source(config: Config) -> str:
    """The setting the base URL came from, for messages."""
    if config.anthropic.base_url:
        return "[anthropic] base_url"
    if os.environ.get("ANTHROPIC_BASE_URL"):
        return "ANTHROPIC_BASE_URL"
    return "the API's default base URL"


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
    from worker.outage import StoreGuard
    from worker.pool import Pool
    from worker.preflight import preflight
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
    guard = StoreGuard(limit=config.worker.outage_limit)
    failure: PoolError | None = None
    try:
        try:
            await preflight(
                client, await store.model_counts(), key_source=KEY_SOURCE, url_source=url_source(config)
            )
        except AccountError as exc:
            print(f"error: {exc}; no job was claimed", file=sys.stderr)
            return EXIT_ACCOUNT
        limiter = None
        if not limits.unlimited:
            limiter = FleetLimiter(store, limits, retry_after_max=config.worker.retry_after_max, guard=guard)
        daily = DailyCap(store, config.costs.daily_cap_usd) if config.costs.daily_cap_usd else None
        pool = Pool(
            store,
            client,
            pool_settings(config),
            limiter=limiter,
            economy=economy,
            daily_cap=daily,
            guard=guard,
        )
        show = args.progress == "on" or (
            args.progress == "auto" and sys.stderr.isatty() and config.logging.format != "json"
        )
        async with anyio.create_task_group() as tg:
            if show:
                tg.start_soon(ProgressDisplay(pool, store).run)
            if schedules:
                tg.start_soon(run_scheduler, schedules, store, config)
            try:
                stats = await pool.run(until_empty=args.until_empty)
            except (AccountError, OutageLimitError) as exc:
                failure = exc
            tg.cancel_scope.cancel()
        if failure is not None:
            return _failed(failure, pool)
        return exit_code(stats, until_empty=args.until_empty)
    finally:
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + config.worker.shutdown_deadline
            await client.close()
            await store.close()


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
