"""``python -m worker migrate``: create or upgrade the queue's schema and print its version.

Workers apply automatic migrations themselves on start-up (under an advisory lock, so a fleet
starting together is safe). This command exists for the rest: run it before deploying a version
whose migration is marked not automatic (one that must not run beside live workers), from CI or
a deploy step, or simply to create the schema ahead of the first worker. It is idempotent.

For SQLite, opening the store creates or migrates the file's schema, so the command just opens it.
"""

from __future__ import annotations

import argparse

import anyio

from jobs.backends import open_store
from jobs.store import Store
from worker.config import Config

__all__ = ("register", "migrate_command")


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``migrate`` to the CLI's sub-parsers."""
    migrate = commands.add_parser(
        "migrate",
        parents=[common],
        help="create or upgrade the queue's schema and print its version",
        description="Apply every pending migration to [queue] url, including those workers do "
        "not apply on their own, then print the schema version. Safe to run again.",
    )
    migrate.set_defaults(handler=migrate_command)


async def migrate_command(args: argparse.Namespace, config: Config) -> int:
    """Print ``<backend> (<where>): schema version N``; never prints a password."""
    store: Store = open_store(config.queue_url())
    try:
        version = await store.migrate()
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
    print(f"{store.backend} ({store.where}): schema version {version}")
    return 0
