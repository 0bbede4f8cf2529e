"""``python -m worker demo``: the whole flow in one command, for a newcomer.

Starts the bundled API simulator with some faults and a rate limit (or, with ANTHROPIC_API_KEY set
and ``--simulator`` not given, talks to Claude), enqueues a sample batch on a fresh SQLite queue,
runs the pool with its progress display, exports the documents, and prints where they are with a
summary: retries, resumes, tokens, and the tokens the faults wasted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from jobs.buckets import Limits
from jobs.export import export_jobs
from jobs.models import JobSpec, Message, State
from jobs.sqlite import SQLiteStore
from worker.config import Config
from worker.logs import configure_logging

if TYPE_CHECKING:
    from worker.pool import PoolStats
    from worker.simulator import Simulator
    from worker.simulator.accounting import AccountingSnapshot

# The pool, the SDK and the simulator are imported when the demo runs (see worker.commands.run).

__all__ = ("register", "TOPICS", "SIM_FAULTS")

#: (id, subject, length in tokens for the simulator, model). Some are longer than max_tokens, so
#: they are continued seamlessly; the models alternate between the two resume modes.
TOPICS: tuple[tuple[str, str, int, str], ...] = (
    ("lighthouses", "the history of lighthouse keeping", 2400, "claude-haiku-4-5"),
    ("tides", "how tides work, for sailors", 1800, "claude-sonnet-5-5"),
    ("sourdough", "a practical guide to sourdough starters", 3200, "claude-haiku-4-5"),
    ("glaciers", "how glaciers shape valleys", 2600, "claude-sonnet-5-5"),
    ("bridges", "the engineering of suspension bridges", 4200, "claude-haiku-4-5"),
    ("beekeeping", "a first year of beekeeping", 2000, "claude-sonnet-5-5"),
    ("typography", "a short history of typefaces", 2800, "claude-haiku-4-5"),
    ("rivers", "why rivers meander", 1600, "claude-sonnet-5-5"),
    ("clocks", "the mechanics of pendulum clocks", 3600, "claude-haiku-4-5"),
    ("mapmaking", "how maps were made before satellites", 2200, "claude-sonnet-5-5"),
    ("volcanoes", "reading the signs of a waking volcano", 3000, "claude-haiku-4-5"),
    ("libraries", "the architecture of great libraries", 5000, "claude-sonnet-5-5"),
)

SIM_FAULTS = "http_529=0.05,http_429=0.02,midstream_error=0.06,drop=0.04,malformed=0.02,stall=0.02,seed=7"
SIM_TOKENS_PER_SECOND = 300.0
SIM_LIMITS = Limits(requests=300, output_tokens=90_000)
DEMO_MAX_TOKENS = 1500


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="run a sample batch end to end (simulator by default; Claude with ANTHROPIC_API_KEY)",
        description=__doc__,
    )
    demo.add_argument("--out", type=Path, default=Path("demo"), help="folder for the queue and documents")
    mode = demo.add_mutually_exclusive_group()
    mode.add_argument("--simulator", action="store_true", help="use the bundled simulator even with a key")
    mode.add_argument("--claude", action="store_true", help="use the real API (needs ANTHROPIC_API_KEY)")
    demo.add_argument("--jobs", type=int, default=None, help="documents to write (default 12; 3 on Claude)")
    demo.set_defaults(handler=run_demo)


def _jobs(count: int, simulated: bool, config: Config) -> list[JobSpec]:
    specs: list[JobSpec] = []
    for job_id, subject, tokens, model in (TOPICS * (count // len(TOPICS) + 1))[:count]:
        prompt = f"Write a well-structured article in Markdown about {subject}."
        if simulated:
            prompt += f" [sim:tokens={tokens}]"
        specs.append(
            JobSpec(
                id=job_id if count <= len(TOPICS) else f"{job_id}-{len(specs)}",
                messages=(Message("user", prompt),),
                model=model if simulated else config.anthropic.model,
                max_tokens=DEMO_MAX_TOKENS,
                output_budget=20_000,
                max_attempts=config.queue.max_attempts,
                system="You write clear, accurate, engaging long-form articles.",
            )
        )
    return specs


@asynccontextmanager
async def _api(simulated: bool) -> AsyncIterator[Simulator | None]:
    from worker.simulator import FaultConfig, SimulatorConfig, run_simulator

    if not simulated:
        yield None
        return
    sim_config = SimulatorConfig(
        faults=FaultConfig.parse(SIM_FAULTS),
        tokens_per_second=SIM_TOKENS_PER_SECOND,
        rpm=SIM_LIMITS.requests,
        otpm=SIM_LIMITS.output_tokens,
        repeat_overlap=0.5,
        ping_interval=0.5,
    )
    async with run_simulator(sim_config) as sim:
        yield sim


def _explain(simulated: bool) -> None:
    if simulated:
        print(
            "Demo on the bundled simulator: a real HTTP server speaking the Messages API, injecting\n"
            f"faults ({SIM_FAULTS.rsplit(',', 1)[0]}) under a rate limit of "
            f"{SIM_LIMITS.output_tokens:,} output tokens/min.\n"
            "(Set ANTHROPIC_API_KEY and pass --claude to run the same flow against Claude.)\n"
        )
    else:
        print("Demo against the Claude API (ANTHROPIC_API_KEY is set; --simulator to use the simulator).\n")


async def run_demo(args: argparse.Namespace, config: Config) -> int:
    has_key = bool(os.environ.get("ANTHROPIC_API_KEY"))
    if args.claude and not has_key:
        print("error: --claude needs ANTHROPIC_API_KEY", file=sys.stderr)
        return 2
    simulated = args.simulator or not (args.claude or has_key)
    count = args.jobs or (len(TOPICS) if simulated else 3)
    out: Path = args.out
    documents = out / "documents"
    configure_logging("json" if not sys.stderr.isatty() else "console", "warning")
    _explain(simulated)
    await anyio.to_thread.run_sync(_fresh_folder, out)
    jobs = _jobs(count, simulated, config)
    started = time.monotonic()
    store = SQLiteStore(out / "queue.db")
    try:
        async with _api(simulated) as sim:
            await store.enqueue(jobs)
            print(f"Enqueued {len(jobs)} documents on {out / 'queue.db'}; running the pool ...")
            stats = await _run_pool(store, _demo_config(config, sim, out / "queue.db"))
            report = await export_jobs(store, documents, (State.SUCCEEDED, State.FAILED))
            accounting = sim.accounting() if sim is not None else None
        elapsed = time.monotonic() - started
        print(f"\nDocuments: {documents.resolve()}/ (manifest: {report.manifest.name})")
        exact, total_in, total_out = await _print_documents(store, jobs, check=sim is not None)
        print(
            f"\nSummary: {stats.succeeded} succeeded, {stats.failed} failed in {elapsed:.1f} s; "
            f"{stats.retries} retries, {stats.resumes} resumed from a checkpoint; "
            f"{total_in:,} input and {total_out:,} output tokens."
        )
        if accounting is not None:
            _print_simulator(accounting, jobs, exact)
        print(
            f"\nNext: python -m worker show {jobs[0].id} --queue-url sqlite:///{(out / 'queue.db').resolve()}"
        )
        return 0 if stats.failed == 0 else 1
    finally:
        await store.close()


def _demo_config(config: Config, sim: Simulator | None, queue: Path) -> Config:
    """The settings ``run`` would use on the demo's queue, with six workers; against the simulator
    also its address, its rate limits, and a watchdog and backoff scaled to its quick faults."""
    queue_url = f"sqlite:///{queue.resolve()}"
    worker = dataclasses.replace(config.worker, concurrency=6, poll_seconds=0.1)
    config = dataclasses.replace(
        config, queue=dataclasses.replace(config.queue, url=queue_url), worker=worker
    )
    if sim is None:
        return config
    os.environ.setdefault("ANTHROPIC_API_KEY", "simulator")
    return dataclasses.replace(
        config,
        anthropic=dataclasses.replace(config.anthropic, base_url=sim.base_url),
        worker=dataclasses.replace(config.worker, idle_timeout=3.0, backoff_base=0.2, backoff_max=2.0),
        rate_limits=dataclasses.replace(
            config.rate_limits,
            requests_per_minute=SIM_LIMITS.requests,
            output_tokens_per_minute=SIM_LIMITS.output_tokens,
        ),
    )


async def _run_pool(store: SQLiteStore, run_config: Config) -> PoolStats:
    """Run the pool, built by the composition root as ``run`` builds it, until the queue is empty,
    with the progress line (reading the counts through the demo's own store)."""
    from worker.progress import ProgressDisplay
    from worker.runtime import open_runtime

    async with open_runtime(run_config) as runtime:
        pool = runtime.pool()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ProgressDisplay(pool, store).run)
            stats = await pool.run(until_empty=True)
            tg.cancel_scope.cancel()
        return stats


async def _print_documents(store: SQLiteStore, jobs: list[JobSpec], *, check: bool) -> tuple[int, int, int]:
    """One line per document; returns how many match the simulator's text (when ``check``) and the
    input and output tokens spent."""
    from worker.simulator import expected_document

    total_in = total_out = exact = 0
    for job in jobs:
        state = await store.get(job.id)
        total_in += state.usage.input_tokens
        total_out += state.usage.output_tokens
        text = await store.read_text(job.id)
        if check and text == expected_document(job.system, job.messages[0].text):
            exact += 1
        print(
            f"  {job.id + '.md':<18} {state.state:<9} {len(text):>7,} chars  "
            f"{state.attempts} attempt{'s' if state.attempts != 1 else ''}  {job.model}"
        )
    return exact, total_in, total_out


def _print_simulator(accounting: AccountingSnapshot, jobs: list[JobSpec], exact: int) -> None:
    faults = ", ".join(f"{n} {kind}" for kind, n in sorted(accounting.faults_injected.items())) or "none"
    twice = max(0, accounting.output_tokens - _doc_tokens(jobs))
    print(
        f"Simulator: faults injected: {faults}; requests refused by its rate limit: "
        f"{accounting.rate_limited}.\n"
        f"Tokens streamed in failed requests: {accounting.failed_output_tokens:,}, every one of them "
        f"kept in a checkpoint and resumed from; tokens generated twice: {twice:,}.\n"
        f"Byte-identical to a fault-free run: {exact}/{len(jobs)} documents."
    )


def _fresh_folder(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _doc_tokens(jobs: list[JobSpec]) -> int:
    from worker.simulator import count_tokens, expected_document

    return sum(count_tokens(expected_document(j.system, j.messages[0].text)) for j in jobs)
