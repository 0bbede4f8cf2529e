"""Command-line front end: ``python -m worker simulate`` and ``python -m worker.simulator``.

Prints exactly one line, ``simulator listening on http://HOST:PORT``, once the socket is bound,
so a parent process (a test, a benchmark, the demo script) can read the URL and start its
clients; with ``--port 0`` that line is the only way to learn the port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from typing import TYPE_CHECKING

from worker.simulator.faults import FaultConfig
from worker.simulator.ratelimit import RateClass, parse_rate_class

if TYPE_CHECKING:
    from worker.simulator.server import SimulatorConfig

# The server (and its HTTP stack) is imported when it starts, not when the CLI builds its parser.

__all__ = ("add_arguments", "config_from_args", "serve", "run")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _rate_class(value: str) -> RateClass:
    try:
        return parse_rate_class(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tokens_per_delta(value: str) -> tuple[int, int]:
    """``"3"`` or ``"1-4"`` → an inclusive range."""
    low, _, high = value.partition("-")
    try:
        bounds = (int(low), int(high or low))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected N or LOW-HIGH, got {value!r}") from exc

    if not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected 1 <= LOW <= HIGH, got {value!r}")

    return bounds


def _fault_spec(value: str) -> FaultConfig:
    try:
        return FaultConfig.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to bind; 0 picks a free one (default 8765)"
    )
    parser.add_argument(
        "--faults",
        type=_fault_spec,
        default=FaultConfig(),
        metavar="SPEC",
        help="fault spec, e.g. 'http_529=0.1,midstream_error=0.2,drop=0.1,fail_first=2,seed=7' "
        "(keys: http_529 http_500 http_429 midstream_error drop stall stall_silent malformed "
        "fail_first retry_after seed)",
    )
    parser.add_argument(
        "--tokens-per-second", type=float, default=0.0, help="generation speed per stream; 0 = unpaced"
    )
    parser.add_argument(
        "--tokens-per-delta",
        type=_tokens_per_delta,
        default=(1, 4),
        metavar="N|LOW-HIGH",
        help="tokens per content_block_delta (default 1-4)",
    )
    parser.add_argument(
        "--ping-interval", type=float, default=5.0, help="seconds of silence before a ping (default 5)"
    )
    _add_limit_arguments(parser)
    _add_model_arguments(parser)


def _add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """Rate limits, fleet-wide and per model class."""
    parser.add_argument("--rpm", type=int, default=0, help="requests per minute; 0 = unlimited")
    parser.add_argument("--itpm", type=int, default=0, help="input tokens per minute; 0 = unlimited")
    parser.add_argument("--otpm", type=int, default=0, help="output tokens per minute; 0 = unlimited")
    parser.add_argument(
        "--rate-class",
        type=_rate_class,
        action="append",
        default=[],
        metavar="NAME=GLOB[,GLOB]:rpm=N:itpm=N:otpm=N",
        help="limits of their own for the models GLOB matches (repeatable; the first match wins)",
    )


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """How the simulated model behaves: continuations, the key it accepts, seeds, cache, overload."""
    parser.add_argument(
        "--repeat-overlap",
        type=float,
        default=0.0,
        help="probability that a continuation first repeats the last 3-8 words (default 0)",
    )
    parser.add_argument(
        "--echo",
        default=None,
        help="how continuations start: mixed, none, repeat:N or KIND:WEIGHT,... (replaces --repeat-overlap)",
    )
    parser.add_argument("--api-key", default=None, help="require this API key (default: accept any)")
    parser.add_argument("--seed", type=int, default=0, help="seed for delta sizes, overlaps and faults")
    parser.add_argument(
        "--cache-min-tokens",
        type=int,
        default=1024,
        help="shortest prompt prefix (tokens) the prompt cache stores (default 1024)",
    )
    parser.add_argument(
        "--overload-seconds",
        type=float,
        default=0.0,
        help="answer every Messages request 529 for this many seconds from the first (default 0)",
    )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Build the :class:`SimulatorConfig` the parsed flags describe."""
    from worker.simulator.server import SimulatorConfig

    return SimulatorConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        faults=args.faults,
        tokens_per_second=args.tokens_per_second,
        tokens_per_delta=args.tokens_per_delta,
        ping_interval=args.ping_interval,
        rpm=args.rpm,
        itpm=args.itpm,
        otpm=args.otpm,
        rate_classes=tuple(args.rate_class),
        repeat_overlap=args.repeat_overlap,
        echo=args.echo,
        cache_min_tokens=args.cache_min_tokens,
        seed=args.seed,
        overload_seconds=args.overload_seconds,
    )


def _install_signal_handlers(stop: asyncio.Event) -> bool:
    """Route SIGINT/SIGTERM to ``stop``; only possible when the loop runs in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False

    loop = asyncio.get_running_loop()
    for signum in _SIGNALS:
        loop.add_signal_handler(signum, stop.set)

    return True


async def _stop_with_main_thread(stop: asyncio.Event) -> None:
    """In a worker thread no signal reaches us: stop once the main thread has finished."""
    while threading.main_thread().is_alive():  # noqa: ASYNC110 - no event marks its end
        await asyncio.sleep(0.5)

    stop.set()


async def serve(args: argparse.Namespace) -> int:
    """Serve in the running event loop until SIGINT/SIGTERM (main thread) or cancellation.

    This is the entry point for callers that already run an asyncio loop (``anyio.run`` on
    the asyncio backend): ``return await serve(args)``.
    """
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2

    from worker.simulator.server import run_simulator

    stop = asyncio.Event()
    handled = _install_signal_handlers(stop)
    watchdog = None if handled else asyncio.create_task(_stop_with_main_thread(stop))
    try:
        async with run_simulator(config) as simulator:
            print(f"simulator listening on {simulator.base_url}", flush=True)
            await stop.wait()
    except OSError as exc:
        print(f"simulator: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        if handled:
            for signum in _SIGNALS:
                asyncio.get_running_loop().remove_signal_handler(signum)

        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    return 0


def run(args: argparse.Namespace) -> int:
    """Serve in a new event loop until SIGINT/SIGTERM; returns the process exit code.

    Run from a worker thread (``anyio.to_thread.run_sync(run, args)``), signals go to the main
    thread instead, so the server stops when the main thread finishes; prefer :func:`serve`.
    """
    return asyncio.run(serve(args))
