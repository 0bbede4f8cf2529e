"""``python -m worker schedule list|run``: inspect the ``[[schedules]]`` and fire one by hand.

``run`` is for "run the nightly report now": it fires the schedule at a tick of *now*, truncated
to the second, so its job ids are as distinct as any tick's and a double-click within one second
still enqueues once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread

from jobs.backends import open_store
from worker.config import Config
from worker.schedules import Schedule, fire, load_schedules, next_fire_times

__all__ = ("register", "list_schedules", "run_schedule")

#: How many upcoming ticks ``schedule list`` shows.
_UPCOMING = 3


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    schedule = commands.add_parser(
        "schedule",
        parents=[common],
        help="list the cron schedules, or fire one now",
        description="Cron schedules are [[schedules]] tables in config.toml; every `run` worker "
        "fires them, and each tick enqueues once across the fleet.",
    )
    actions = schedule.add_subparsers(dest="schedule_command", metavar="<action>", required=True)
    listing = actions.add_parser(
        "list",
        parents=[common],
        help="each schedule with its next fire times",
        description=f"Each schedule, its cron, timezone, missed-tick policy and next {_UPCOMING} "
        "fire times in its timezone.",
    )
    listing.add_argument("--json", action="store_true", help="one JSON array instead of text")
    listing.set_defaults(handler=list_schedules)
    run = actions.add_parser(
        "run",
        parents=[common],
        help="fire one schedule now",
        description="Enqueue a schedule's jobs at a tick of now (truncated to the second).",
    )
    run.add_argument("name", help="the schedule's name")
    run.set_defaults(handler=run_schedule)


async def list_schedules(args: argparse.Namespace, config: Config) -> int:
    schedules = await anyio.to_thread.run_sync(load_schedules, config)
    now = time.time()
    if args.json:
        print(json.dumps([_describe(s, now) for s in schedules], indent=2))
        return 0
    if not schedules:
        print(f"no schedules in {config.source or 'the config (no config file)'}")
        return 0
    for schedule in schedules:
        print(
            f"{schedule.name}  cron {schedule.cron!r}  timezone {schedule.timezone}  "
            f"missed={schedule.missed}  jobs: {_jobs_text(schedule)}"
        )
        upcoming = next_fire_times(schedule, now, _UPCOMING)
        print("  next: " + (", ".join(_local(schedule, t).isoformat(sep=" ") for t in upcoming) or "never"))
    return 0


async def run_schedule(args: argparse.Namespace, config: Config) -> int:
    schedules = {s.name: s for s in await anyio.to_thread.run_sync(load_schedules, config)}
    schedule = schedules.get(args.name)
    if schedule is None:
        known = ", ".join(schedules) or "none are configured"
        print(f"error: no schedule named {args.name!r} (known: {known})", file=sys.stderr)
        return 1
    tick = datetime.fromtimestamp(int(time.time()), UTC)
    store = open_store(config.queue_url())
    try:
        result = await fire(schedule, tick, store, config)
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
    print(
        f"fired {schedule.name} at {tick.strftime('%Y-%m-%dT%H:%M:%SZ')}: "
        f"{len(result.inserted)} inserted, {len(result.existing)} existing"
    )
    for job_id in result.inserted:
        print(f"  inserted {job_id}")
    for job_id in result.existing:
        print(f"  existing {job_id}")
    return 0


def _local(schedule: Schedule, tick: datetime) -> datetime:
    return tick.astimezone(schedule.zone)


def _describe(schedule: Schedule, now: float) -> dict[str, Any]:
    upcoming = next_fire_times(schedule, now, _UPCOMING)
    return {
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "missed": str(schedule.missed),
        "jobs_file": str(schedule.jobs_file) if schedule.jobs_file else None,
        "jobs": len(schedule.jobs),
        "next": [_local(schedule, tick).isoformat() for tick in upcoming],
    }


def _jobs_text(schedule: Schedule) -> str:
    if schedule.jobs_file is None:
        return "1 inline job"
    count = len(schedule.jobs)
    return f"{count} job{'s' if count != 1 else ''} from {schedule.jobs_file}"
