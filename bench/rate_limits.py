"""Rate limits: share of the output-token limit used, and share of requests answered 429.

Side by side in one run, concurrently, for ``--seconds`` (default 150): two pools, each with its
own SQLite queue of the same documents and its own simulator process enforcing the same RPM and
OTPM limits (the API's way: output reserved from ``max_tokens`` at the start, trued up at the end).

* ours: the fleet limiter — reserve ``max_tokens``, refund the unused part when the stream ends;
* baseline: the usual hand-written limiter — reserve ``max_tokens``, never refund.

Documents are 200–1,200 tokens with ``max_tokens`` 4,000, as users typically set it. The share
of the limit used is measured in steady state (the last minute, once the initial full bucket is
spent: tokens emitted ÷ the refill) and overall (tokens emitted ÷ a full bucket at the start plus the refill).

The two-class run (alongside, in the same run): one simulator process limiting Opus and Haiku
apart (``--rate-class``), and one queue of both, interleaved.

* ours: a limiter per model class (``[rate_limits.classes.*]``): each class has its own buckets,
  and the pool claims only jobs of a class with room;
* baseline: one bucket set for the whole fleet, at the tighter class's limits (the most a single
  limiter can allow without Opus being answered 429).

Each class's share of its own OTPM is measured in steady state, as above.

Every pool is built as ``run`` builds it (``worker.runtime.open_runtime`` on a config from
:func:`bench.common.bench_config`): the limits are ``[rate_limits]`` settings, the Opus class a
``[rate_limits.classes.opus]`` table in the config file; the never-refunding baseline swaps the
runtime's limiter for a ``FleetLimiter(refund=False)`` on the same limits.

``python -m bench.rate_limits --seconds 150``
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from bench.common import Row, Setting, SimulatorProcess, bench_config, simulator_process
from jobs.classes import DEFAULT_CLASS
from jobs.models import JobSpec, Message
from worker.config import Config
from worker.limits import FleetLimiter
from worker.logs import configure_logging
from worker.runtime import Runtime, make_limits, open_runtime

__all__ = ("run", "main")

RPM = 120
OTPM = 30_000
MAX_TOKENS = 4000
TOKENS_PER_SECOND = 200
MODEL = "claude-haiku-4-5"
#: The two-class run: Haiku (the default class) at RPM/OTPM above, Opus at its own, tighter limits.
OPUS_MODEL = "claude-opus-4-6"
OPUS_RPM = 60
OPUS_OTPM = 15_000
CLASS_FLAGS = ("--rate-class", f"opus=claude-opus-*:rpm={OPUS_RPM}:otpm={OPUS_OTPM}")
#: The Opus class of the two-class run, as a user writes it in config.toml.
CLASSES_TOML = f"""
[rate_limits.classes.opus]
match = "claude-opus-*"
requests_per_minute = {OPUS_RPM}
output_tokens_per_minute = {OPUS_OTPM}
"""
#: The pools' former PoolSettings(concurrency=16, grace_seconds=0, poll_seconds=0.05,
#: typical_max_tokens=MAX_TOKENS, backoff 0.5-5 s, idle_timeout=30) as config keys, on the SDK's
#: default httpx transport as before.
SETTINGS: dict[str, Setting] = {
    "worker.concurrency": 16,
    "worker.grace_seconds": 0,
    "worker.poll_seconds": 0.05,
    "anthropic.max_tokens": MAX_TOKENS,
    "worker.backoff_base": 0.5,
    "worker.backoff_max": 5,
    "worker.idle_timeout": 30,
    "anthropic.http_transport": "httpx",
}
#: The last minute of the run: by then the initial full bucket is spent and only the refill counts.
STEADY_SECONDS = 60.0


def _jobs(count: int, models: tuple[str, ...] = (MODEL,)) -> list[JobSpec]:
    rng = random.Random(5)
    return [
        JobSpec(
            f"rl-{i}",
            (Message("user", f"Rate-limit document {i}. [sim:tokens={rng.randint(200, 1200)}]"),),
            models[i % len(models)],
            MAX_TOKENS,
            MAX_TOKENS * 4,
            20,
        )
        for i in range(count)
    ]


async def _side(
    sim: SimulatorProcess,
    folder: Path,
    name: str,
    refund: bool,
    seconds: float,
    classed: bool | None = None,
) -> dict[str, Any]:
    """One pool for ``seconds``. ``classed`` None: the one-class run (``refund`` or not); True or
    False: the two-class run, with a limiter per class or one for the fleet."""
    config = _config(sim, folder, name, classed)
    async with open_runtime(config) as runtime:
        if classed is None:
            await runtime.store.enqueue(_jobs(1000))
        else:
            await runtime.store.enqueue(_jobs(2000, (MODEL, OPUS_MODEL)))
        pool = (runtime if refund else _never_refunds(runtime)).pool()
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.run)
            await anyio.sleep(seconds - STEADY_SECONDS)
            halfway = await anyio.to_thread.run_sync(sim.accounting)
            await anyio.sleep(STEADY_SECONDS)
            accounting = await anyio.to_thread.run_sync(sim.accounting)  # the window ends here
            pool.request_stop()
    requests = accounting["requests"]["total"]
    if classed is not None:
        return _per_class(halfway, accounting, seconds)
    return {
        "tokens": accounting["output_tokens"]["total"],
        "second_half": accounting["output_tokens"]["total"] - halfway["output_tokens"]["total"],
        "requests": requests,
        "rate_limited": accounting["requests"]["by_status"].get("429", 0),
        "succeeded": pool.stats.succeeded,
    }


def _config(sim: SimulatorProcess, folder: Path, name: str, classed: bool | None) -> Config:
    """``[rate_limits]`` of one side: RPM/OTPM (the default class), plus the Opus class when
    ``classed``; the one-bucket baseline (``classed`` False) has only Opus's, tighter limits."""
    rpm, otpm = (OPUS_RPM, OPUS_OTPM) if classed is False else (RPM, OTPM)
    limits: dict[str, Setting] = {
        "rate_limits.requests_per_minute": rpm,
        "rate_limits.output_tokens_per_minute": otpm,
    }
    toml = CLASSES_TOML if classed else ""
    return bench_config(folder, name, sim.base_url, {**SETTINGS, **limits}, toml=toml)


def _never_refunds(runtime: Runtime) -> Runtime:
    """The runtime with the usual hand-written limiter: reserve ``max_tokens``, never refund."""
    config = runtime.config
    limiter = FleetLimiter(
        runtime.store,
        make_limits(config),
        refund=False,
        retry_after_max=config.worker.retry_after_max,
        guard=runtime.guard,
    )
    return dataclasses.replace(runtime, limiter=limiter)


def _per_class(halfway: dict[str, Any], end: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Per model class: output tokens in the steady window, requests served, and 429s."""
    limited = end["requests"]["rate_limited_by_class"]
    out: dict[str, Any] = {}
    for name, model, otpm in ((DEFAULT_CLASS, MODEL, OTPM), ("opus", OPUS_MODEL, OPUS_OTPM)):
        billed, before = end["billed"].get(model, {}), halfway["billed"].get(model, {})
        steady = billed.get("output_tokens", 0) - before.get("output_tokens", 0)
        rate_limited = limited.get("" if name == DEFAULT_CLASS else name, 0)
        out[name] = {
            "steady_share": steady / (otpm * STEADY_SECONDS / 60),
            "overall_share": billed.get("output_tokens", 0) / (otpm + otpm * seconds / 60),
            "requests": billed.get("requests", 0) + rate_limited,
            "rate_limited": rate_limited,
        }
    return out


def _describe_classes(r: dict[str, Any]) -> str:
    parts = []
    for name, label in ((DEFAULT_CLASS, f"Haiku ({OTPM:,} OTPM)"), ("opus", f"Opus ({OPUS_OTPM:,} OTPM)")):
        c = r[name]
        share_429 = c["rate_limited"] / c["requests"] if c["requests"] else 0.0
        parts.append(
            f"{label}: {100 * c['steady_share']:.0f} % of its OTPM in steady state "
            f"({100 * c['overall_share']:.0f} % incl. the initial burst), "
            f"{100 * share_429:.1f} % of {c['requests']} requests 429"
        )
    return "; ".join(parts)


async def run(seconds: float) -> list[Row]:
    flags = ("--rpm", str(RPM), "--otpm", str(OTPM), "--tokens-per-second", str(TOKENS_PER_SECOND))
    results: dict[str, dict[str, Any]] = {}
    with (
        simulator_process(*flags) as ours_sim,
        simulator_process(*flags) as base_sim,
        simulator_process(*flags, *CLASS_FLAGS) as classes_sim,
        simulator_process(*flags, *CLASS_FLAGS) as one_bucket_sim,
        tempfile.TemporaryDirectory() as tmp,
    ):

        async def side(name: str, sim: SimulatorProcess, refund: bool, classed: bool | None) -> None:
            results[name] = await _side(sim, Path(tmp), name, refund, seconds, classed)

        async with anyio.create_task_group() as tg:
            tg.start_soon(side, "ours", ours_sim, True, None)
            tg.start_soon(side, "baseline", base_sim, False, None)
            tg.start_soon(side, "classes", classes_sim, True, True)
            tg.start_soon(side, "one_bucket", one_bucket_sim, True, False)
    return [
        _single_class_row(results["ours"], results["baseline"], seconds),
        _two_class_row(results, seconds),
    ]


def _describe(r: dict[str, Any], seconds: float) -> str:
    allowed = OTPM + OTPM * seconds / 60
    share_429 = r["rate_limited"] / r["requests"] if r["requests"] else 0.0
    steady = r["second_half"] / (OTPM * STEADY_SECONDS / 60)
    return (
        f"{100 * steady:.0f} % of OTPM used in steady state ({100 * r['tokens'] / allowed:.0f} % "
        f"incl. the initial burst), {100 * share_429:.1f} % of "
        f"{r['requests']} requests answered 429, {r['succeeded']} documents"
    )


def _single_class_row(ours: dict[str, Any], base: dict[str, Any], seconds: float) -> Row:
    return Row(
        name="Output-token limit used (and 429s)",
        ours=_describe(ours, seconds),
        baseline=_describe(base, seconds) + " (reserve, never refund)",
        ratio=f"{ours['tokens'] / max(1, base['tokens']):.1f}× the tokens",
        method=(
            f"{seconds:.0f} s side by side, each pool against its own simulator process enforcing "
            f"{RPM} RPM and {OTPM:,} OTPM; documents of 200-1,200 tokens with max_tokens {MAX_TOKENS:,}; "
            f"{TOKENS_PER_SECOND} tokens/s per stream; concurrency 16; steady state = tokens emitted in "
            f"the last {STEADY_SECONDS:.0f} s ÷ the limit's refill over them; overall = tokens emitted ÷ "
            "(a full bucket + the refill over the whole window)"
        ),
    )


def _two_class_row(results: dict[str, dict[str, Any]], seconds: float) -> Row:
    return Row(
        name="Two model classes, each its own OTPM (and 429s)",
        ours=_describe_classes(results["classes"]),
        baseline=_describe_classes(results["one_bucket"]) + " (one bucket set, the tighter limits)",
        ratio=(
            f"{_class_tokens(results['classes']) / max(1e-9, _class_tokens(results['one_bucket'])):.1f}"
            "× the tokens"
        ),
        method=(
            f"{seconds:.0f} s, beside the run above: one queue of Haiku and Opus jobs interleaved, "
            f"each pool against its own simulator process limiting Haiku to {RPM} RPM / {OTPM:,} OTPM "
            f"and Opus to {OPUS_RPM} RPM / {OPUS_OTPM:,} OTPM (--rate-class); ours: [rate_limits] "
            "with an opus class; baseline: one fleet bucket set at Opus's limits; same documents, "
            "max_tokens, speed and concurrency; steady state = a class's output tokens in the last "
            f"{STEADY_SECONDS:.0f} s ÷ its OTPM's refill over them; overall = its tokens ÷ (a full "
            "bucket + the refill over the whole window)"
        ),
    )


def _class_tokens(r: dict[str, Any]) -> float:
    return float(r[DEFAULT_CLASS]["steady_share"] * OTPM + r["opus"]["steady_share"] * OPUS_OTPM)


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
