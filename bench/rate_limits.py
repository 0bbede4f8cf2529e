"""Rate limits: share of the output-token limit used, and share of requests answered 429.

Side by side in one run, concurrently, for ``--seconds`` (default 150): two pools, each with its
own SQLite queue of the same documents and its own simulator process enforcing the same RPM and
OTPM limits (the API's way: output reserved from ``max_tokens`` at the start, trued up at the end).

* ours: the fleet limiter — reserve ``max_tokens``, refund the unused part when the stream ends;
* baseline: the usual hand-written limiter — reserve ``max_tokens``, never refund.

Documents are 200–1,200 tokens with ``max_tokens`` 4,000, as users typically set it. The share
of the limit used is measured in steady state (the last minute, once the initial full bucket is
spent: tokens emitted ÷ the refill) and overall (tokens emitted ÷ a full bucket at the start plus the refill).

``python -m bench.rate_limits --seconds 150``
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path
from typing import Any

import anthropic
import anyio
import anyio.to_thread

from bench.common import Row, SimulatorProcess, simulator_process
from jobs.buckets import Limits
from jobs.models import JobSpec, Message
from jobs.sqlite import SQLiteStore
from worker.attempt import AttemptSettings
from worker.limits import FleetLimiter
from worker.logs import configure_logging
from worker.pool import Pool, PoolSettings

__all__ = ("run", "main")

RPM = 120
OTPM = 30_000
MAX_TOKENS = 4000
TOKENS_PER_SECOND = 200
MODEL = "claude-haiku-4-5"
#: The last minute of the run: by then the initial full bucket is spent and only the refill counts.
STEADY_SECONDS = 60.0


def _jobs(count: int) -> list[JobSpec]:
    rng = random.Random(5)
    return [
        JobSpec(
            f"rl-{i}",
            (Message("user", f"Rate-limit document {i}. [sim:tokens={rng.randint(200, 1200)}]"),),
            MODEL,
            MAX_TOKENS,
            MAX_TOKENS * 4,
            20,
        )
        for i in range(count)
    ]


async def _side(
    sim: SimulatorProcess, folder: Path, name: str, refund: bool, seconds: float
) -> dict[str, Any]:
    store = SQLiteStore(folder / f"{name}.db")
    client = anthropic.AsyncAnthropic(api_key="bench", base_url=sim.base_url, max_retries=0)
    try:
        await store.enqueue(_jobs(1000))
        limiter = FleetLimiter(store, Limits(requests=RPM, output_tokens=OTPM), refund=refund)
        settings = PoolSettings(
            concurrency=16,
            grace_seconds=0,
            poll_seconds=0.05,
            typical_max_tokens=MAX_TOKENS,
            attempt=AttemptSettings(backoff_base=0.5, backoff_max=5, idle_timeout=30),
        )
        pool = Pool(store, client, settings, limiter=limiter)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.run)
            await anyio.sleep(seconds - STEADY_SECONDS)
            halfway = await anyio.to_thread.run_sync(sim.accounting)
            await anyio.sleep(STEADY_SECONDS)
            accounting = await anyio.to_thread.run_sync(sim.accounting)  # the window ends here
            pool.request_stop()
        requests = accounting["requests"]["total"]
        return {
            "tokens": accounting["output_tokens"]["total"],
            "second_half": accounting["output_tokens"]["total"] - halfway["output_tokens"]["total"],
            "requests": requests,
            "rate_limited": accounting["requests"]["by_status"].get("429", 0),
            "succeeded": pool.stats.succeeded,
        }
    finally:
        await client.close()
        await store.close()


async def run(seconds: float) -> list[Row]:
    flags = ("--rpm", str(RPM), "--otpm", str(OTPM), "--tokens-per-second", str(TOKENS_PER_SECOND))
    results: dict[str, dict[str, Any]] = {}
    with (
        simulator_process(*flags) as ours_sim,
        simulator_process(*flags) as base_sim,
        tempfile.TemporaryDirectory() as tmp,
    ):

        async def side(name: str, sim: SimulatorProcess, refund: bool) -> None:
            results[name] = await _side(sim, Path(tmp), name, refund, seconds)

        async with anyio.create_task_group() as tg:
            tg.start_soon(side, "ours", ours_sim, True)
            tg.start_soon(side, "baseline", base_sim, False)
    allowed = OTPM + OTPM * seconds / 60

    def describe(r: dict[str, Any]) -> str:
        share_429 = r["rate_limited"] / r["requests"] if r["requests"] else 0.0
        steady = r["second_half"] / (OTPM * STEADY_SECONDS / 60)
        return (
            f"{100 * steady:.0f} % of OTPM used in steady state ({100 * r['tokens'] / allowed:.0f} % "
            f"incl. the initial burst), {100 * share_429:.1f} % of "
            f"{r['requests']} requests answered 429, {r['succeeded']} documents"
        )

    ours, base = results["ours"], results["baseline"]
    return [
        Row(
            name="Output-token limit used (and 429s)",
            ours=describe(ours),
            baseline=describe(base) + " (reserve, never refund)",
            ratio=f"{ours['tokens'] / max(1, base['tokens']):.1f}× the tokens",
            method=(
                f"{seconds:.0f} s side by side, each pool against its own simulator process enforcing "
                f"{RPM} RPM and {OTPM:,} OTPM; documents of 200-1,200 tokens with max_tokens {MAX_TOKENS:,}; "
                f"{TOKENS_PER_SECOND} tokens/s per stream; concurrency 16; steady state = tokens emitted in "
                f"the last {STEADY_SECONDS:.0f} s ÷ the limit's refill over them; overall = tokens emitted ÷ "
                "(a full bucket + the refill over the whole window)"
            ),
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=150.0)
    args = parser.parse_args()
    configure_logging("json", "warning")
    for row in anyio.run(run, args.seconds):
        print(row.to_json())


if __name__ == "__main__":
    main()
