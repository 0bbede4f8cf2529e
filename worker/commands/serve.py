"""``python -m worker serve``: the HTTP API and live relay, optionally with workers in-process.

``serve --workers N`` also runs a pool of concurrency N beside the server, so one machine needs
one process; ``serve`` alone (N = 0) only serves, and needs no API key: separate ``run`` processes,
on this machine or others, do the work through the shared queue.

The server, the runtime and the SDK are imported when ``serve`` runs, not when the command line is
built: every other command starts without paying for them (``tests/test_cli_startup.py``).

Prints ``serving on http://HOST:PORT`` once listening (port 0 picks a free port, which that line
names). SIGINT/SIGTERM: the relay ends every stream (viewers reconnect elsewhere with
``Last-Event-ID``), the pool stops as ``run`` does, and the server closes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from typing import TYPE_CHECKING

import anyio
import structlog

from worker.config import Config

if TYPE_CHECKING:
    from aiohttp import web

    from worker.pool import Pool
    from worker.runtime import Runtime
    from worker.server import Relay

__all__ = ("register", "serve")

log = structlog.get_logger("worker.server")

#: Seconds the server waits for open requests when it stops (streams are ended first).
SHUTDOWN_SECONDS = 3.0


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    serve_parser = commands.add_parser(
        "serve",
        parents=[common],
        help="serve the HTTP API and the live relay of every job's text",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve_parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="also run a worker pool of concurrency N in this process (default 0: serve only)",
    )
    serve_parser.add_argument("--host", default=None, help="interface to bind (default: [server] host)")
    serve_parser.add_argument("--port", type=int, default=None, help="port (default: [server] port; 0: any)")
    serve_parser.set_defaults(handler=serve)


def _settings(args: argparse.Namespace, config: Config) -> Config:
    server = config.server
    if args.host is not None:
        server = dataclasses.replace(server, host=args.host)
    if args.port is not None:
        server = dataclasses.replace(server, port=args.port)
    return dataclasses.replace(config, server=server)


async def serve(args: argparse.Namespace, config: Config) -> int:
    if args.workers < 0:
        print("error: --workers must be 0 or more", file=sys.stderr)
        return 2
    from aiohttp import web

    from jobs.backends import open_store
    from worker.runtime import open_runtime
    from worker.server import Relay, build_app, resolve_token
    from worker.server.app import ACCESS_LOG_FORMAT

    config = _settings(args, config)
    if config.logging.level in ("debug", "info"):
        logging.getLogger("aiohttp.access").setLevel(logging.INFO)  # one line per request (app.py)
    token = await anyio.to_thread.run_sync(resolve_token, config)
    if token.generated:
        # Printed once, on the start that made it; never logged.
        print(f"generated an API token (stored in {token.path}, mode 0600): {token.value}", file=sys.stderr)
    async with open_runtime(config, with_client=args.workers > 0) as runtime:
        pool = _pool(runtime, args.workers)
        # The relay reads through a store of its own: its reads never queue behind the pool's
        # checkpoints and claims on one connection (SQLite WAL lets readers run beside a writer).
        relay_store = open_store(config.queue_url())
        relay = Relay(
            relay_store,
            watched=pool.writer.watched if pool is not None else None,
            heartbeat_seconds=config.server.heartbeat_seconds,
        )
        app = build_app(config, runtime.store, relay, token.value)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_SECONDS,
            access_log_format=ACCESS_LOG_FORMAT,
        )
        await runner.setup()
        try:
            await _start_site(runner, config, args.workers)
            await _run_until_stopped(relay, pool, runtime, config)
        finally:
            relay.close()
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
                await relay_store.close()
        log.info("server_stopped")
    return 0


async def _start_site(runner: web.AppRunner, config: Config, workers: int) -> None:
    """Listen on ``[server] host:port`` and say where (port 0 asks the system for a free one)."""
    from aiohttp import web

    site = web.TCPSite(runner, config.server.host, config.server.port)
    await site.start()
    host, port = _bound(runner, config)
    log.info("server_started", host=host, port=port, workers=workers)
    print(f"serving on http://{host}:{port}", flush=True)


async def _run_until_stopped(relay: Relay, pool: Pool | None, runtime: Runtime, config: Config) -> None:
    """The relay beside the in-process pool (and its metrics), or beside a wait for a signal."""
    from worker.metrics import serve_metrics
    from worker.runtime import start_fleet_tasks

    async with anyio.create_task_group() as tg:
        tg.start_soon(relay.run)
        if pool is not None:
            # In-process workers are part of the fleet: its one submitter or pruner may be here.
            start_fleet_tasks(tg, runtime, pool.worker_id)
            w = config.worker
            async with serve_metrics(runtime.recorder, w.metrics_host, w.metrics_port):
                await pool.run()
        else:
            await _wait_for_signal()
        relay.close()
        tg.cancel_scope.cancel()


def _pool(runtime: Runtime, workers: int) -> Pool | None:
    """The in-process pool of ``--workers N``: watched jobs checkpoint at the live interval."""
    from worker.runtime import pool_settings

    if workers == 0:
        return None
    config = runtime.config
    settings = dataclasses.replace(
        pool_settings(config),
        concurrency=workers,
        live_checkpoint_seconds=config.server.live_checkpoint_seconds,
    )
    return runtime.pool(settings)


def _bound(runner: web.AppRunner, config: Config) -> tuple[str, int]:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return str(address[0]), int(address[1])
    return config.server.host, config.server.port


async def _wait_for_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("signal_received", signal=signal.Signals(signum).name)
            return
