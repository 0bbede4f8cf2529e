"""Shared pieces for end-to-end pool tests: the real SDK, over real HTTP, against the simulator."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anthropic

from jobs.models import JobSpec, Message, State
from jobs.sqlite import SQLiteStore
from jobs.store import Store
from worker.attempt import AttemptSettings
from worker.economy import Economy
from worker.pool import Pool, PoolSettings, PoolStats
from worker.recorder import Recorder
from worker.simulator import Simulator, SimulatorConfig, expected_document, run_simulator

__all__ = (
    "PREFILL_MODEL",
    "CONTINUATION_MODEL",
    "FAST_SETTINGS",
    "spec",
    "Run",
    "pool_run",
    "simulated",
)

#: A current model of the 4.5 generation (not deprecated in the locked SDK): resumes by prefill.
PREFILL_MODEL = "claude-haiku-4-5"
#: A 4.6+ model: rejects prefill, resumes by a continuation turn.
CONTINUATION_MODEL = "claude-opus-4-6"

#: Settings that make faults cheap to recover from in tests: short backoff, quick stall detection.
FAST_SETTINGS = PoolSettings(
    concurrency=8,
    lease_seconds=10.0,
    checkpoint_chars=400,
    checkpoint_seconds=0.05,
    grace_seconds=1.0,
    poll_seconds=0.02,
    attempt=AttemptSettings(idle_timeout=0.6, backoff_base=0.01, backoff_max=0.05, retry_after_max=0.05),
)


def spec(
    job_id: str,
    *,
    tokens: int = 400,
    model: str = PREFILL_MODEL,
    faults: str | None = None,
    max_tokens: int = 4096,
    output_budget: int = 200_000,
    max_attempts: int = 30,
    system: str | None = None,
    extra: str = "",
) -> JobSpec:
    """A job whose simulated document has ``tokens`` tokens and, optionally, its own faults."""
    directives = f"[sim:tokens={tokens}]"
    if faults:
        directives += f" [sim:faults={faults}]"
    prompt = f"Write document {job_id}. {directives}{extra}"
    return JobSpec(
        id=job_id,
        messages=(Message("user", prompt),),
        model=model,
        max_tokens=max_tokens,
        output_budget=output_budget,
        max_attempts=max_attempts,
        system=system,
    )


def expected(job: JobSpec) -> str:
    return expected_document(job.system, job.messages[0].text)


@dataclass
class Run:
    """The outcome of one pool run: stats, final states and texts."""

    stats: PoolStats
    states: dict[str, State]
    texts: dict[str, str]
    simulator: Simulator
    store: Store

    def assert_exact(self, jobs: Sequence[JobSpec]) -> None:
        """Every job succeeded with exactly the text of a fault-free run."""
        for job in jobs:
            assert self.states[job.id] is State.SUCCEEDED, (job.id, self.states[job.id])
            want = expected(job)
            got = self.texts[job.id]
            assert got == want, (
                f"{job.id}: {len(got)} chars vs {len(want)} expected; first diff at {_diff(got, want)}"
            )


def _diff(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


@asynccontextmanager
async def simulated(config: SimulatorConfig | None = None) -> AsyncIterator[Simulator]:
    async with run_simulator(config or SimulatorConfig()) as sim:
        yield sim


async def pool_run(
    tmp_path: Path,
    jobs: Sequence[JobSpec],
    *,
    sim_config: SimulatorConfig | None = None,
    settings: PoolSettings = FAST_SETTINGS,
    store: Store | None = None,
    economy: Economy | None = None,
    recorder: Recorder | None = None,
    **setting_overrides: object,
) -> Run:
    """Enqueue ``jobs``, run a pool until the queue is empty, and collect the results.

    The store is a fresh SQLite file unless ``store`` is given (then the caller closes it).
    """
    if setting_overrides:
        settings = dataclasses.replace(settings, **setting_overrides)  # type: ignore[arg-type]
    own = store is None
    store = store or SQLiteStore(tmp_path / "jobs.db")
    try:
        async with simulated(sim_config) as sim:
            client = anthropic.AsyncAnthropic(
                api_key="test",
                base_url=sim.base_url,
                max_retries=0,
                http_client=anthropic.DefaultAioHttpClient(),
            )
            try:
                await store.enqueue(jobs)
                pool = Pool(store, client, settings, economy=economy, recorder=recorder)
                stats = await pool.run(until_empty=True, handle_signals=False)
            finally:
                await client.close()
            states = {job.id: (await store.get(job.id)).state for job in jobs}
            texts = {job.id: await store.read_text(job.id) for job in jobs}
            return Run(stats, states, texts, sim, store)
    finally:
        if own:
            await store.close()
