"""``python -m worker prune --older-than 30d [--state succeeded] [--dry-run]``: delete finished
jobs that ended long ago, with their text, attempts, history and thinking.

Only succeeded, failed and cancelled jobs are ever deleted (all three unless ``--state`` names
some); a queued or running job never is, however old. Age is the time since the job ended (its
``finished_at``). The store deletes a thousand jobs per transaction (``Store.prune``), so workers
keep claiming and checkpointing while a large prune runs. ``[queue] retention`` makes ``run`` do
the same every few minutes. Makes no API call, so it never imports the SDK.
"""

from __future__ import annotations

import argparse

from jobs.models import TERMINAL_STATES, State
from worker.commands.queue import opened_store
from worker.config import Config
from worker.retention import parse_duration

__all__ = ("register", "prune_command")

_PRUNABLE = [state.value for state in State if state in TERMINAL_STATES]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``prune`` to the CLI's sub-parsers."""
    prune = commands.add_parser(
        "prune",
        parents=[common],
        help="delete finished jobs that ended longer ago than a duration",
        description="Delete succeeded, failed and cancelled jobs (text, attempts, history, "
        "thinking) that ended longer ago than --older-than. Queued and running jobs are never "
        "deleted. [queue] retention does this automatically in `run`.",
    )
    prune.add_argument(
        "--older-than",
        required=True,
        metavar="AGE",
        help="time since the job ended: a number and s, m, h or d (90s, 30m, 12h, 30d)",
    )
    prune.add_argument(
        "--state",
        action="append",
        choices=_PRUNABLE,
        metavar="STATE",
        help=f"only jobs in this state (repeatable; {', '.join(_PRUNABLE)}; default: all three)",
    )
    prune.add_argument("--dry-run", action="store_true", help="count the jobs, delete nothing")
    prune.set_defaults(handler=prune_command)


async def prune_command(args: argparse.Namespace, config: Config) -> int:
    """``pruned N jobs (STATES) that ended over AGE ago``, or ``would prune …`` with ``--dry-run``."""
    older_than = parse_duration(args.older_than, "flag --older-than")
    states = [State(s) for s in dict.fromkeys(args.state)] if args.state else None
    async with opened_store(config, "existing") as store:
        count = await store.prune(older_than, states, dry_run=args.dry_run)
    which = ", ".join(s.value for s in states) if states else "succeeded, failed or cancelled"
    verb = "would prune" if args.dry_run else "pruned"
    print(f"{verb} {count:,} job{'' if count == 1 else 's'} ({which}) that ended over {args.older_than} ago")
    return 0
