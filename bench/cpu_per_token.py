"""CPU per streamed token: the pool (checkpoints on) against the raw SDK on the same streams.

Side by side in one run, alternating, against one simulator process streaming unpaced:

* raw SDK: ``messages.create(stream=True)``, iterating the events and keeping the text deltas;
* the SDK's ``messages.stream()`` helper (for reference: it rebuilds the text on every delta);
* the pool: one job through claim, stream, coalesced SQLite checkpoints, settle.

Reported: CPU seconds of this process per 1,000 tokens, median of the repetitions, and the ratio
pool ÷ raw SDK. ``python -m bench.cpu_per_token --tokens 10000 100000``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import anthropic
import anyio

from bench.common import Row, cpu_seconds, median, simulator_process
from jobs.models import JobSpec, Message
from jobs.sqlite import SQLiteStore
from worker.attempt import AttemptSettings
from worker.logs import configure_logging
from worker.pool import Pool, PoolSettings

__all__ = ("run", "main")

MODEL = "claude-haiku-4-5"


def _prompt(tokens: int, rep: int) -> str:
    return f"Benchmark document {rep}. [sim:tokens={tokens}]"


async def _raw(client: anthropic.AsyncAnthropic, tokens: int, rep: int) -> float:
    parts: list[str] = []
    start = cpu_seconds()
    stream = await client.messages.create(
        model=MODEL,
        max_tokens=tokens + 10,
        messages=[{"role": "user", "content": _prompt(tokens, rep)}],
        stream=True,
    )
    async for event in stream:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            parts.append(event.delta.text)
    text = "".join(parts)
    assert text
    return cpu_seconds() - start


async def _helper(client: anthropic.AsyncAnthropic, tokens: int, rep: int) -> float:
    start = cpu_seconds()
    async with client.messages.stream(
        model=MODEL, max_tokens=tokens + 10, messages=[{"role": "user", "content": _prompt(tokens, rep)}]
    ) as stream:
        async for _ in stream.text_stream:
            pass
    return cpu_seconds() - start


async def _pool(client: anthropic.AsyncAnthropic, tokens: int, rep: int, folder: Path) -> float:
    store = SQLiteStore(folder / f"cpu-{tokens}-{rep}.db")
    try:
        spec = JobSpec(
            id=f"cpu-{rep}",
            messages=(Message("user", _prompt(tokens, rep)),),
            model=MODEL,
            max_tokens=tokens + 10,
            output_budget=tokens * 2,
            max_attempts=3,
        )
        await store.enqueue([spec])
        settings = PoolSettings(concurrency=1, poll_seconds=0.01, attempt=AttemptSettings(idle_timeout=60))
        start = cpu_seconds()
        stats = await Pool(store, client, settings).run(until_empty=True, handle_signals=False)
        elapsed = cpu_seconds() - start
        assert stats.succeeded == 1
        return elapsed
    finally:
        await store.close()


async def run(sizes: list[int], reps: int, with_helper: bool = True) -> list[Row]:
    rows: list[Row] = []
    with simulator_process("--tokens-per-delta", "1-4") as sim, tempfile.TemporaryDirectory() as tmp:
        client = anthropic.AsyncAnthropic(api_key="bench", base_url=sim.base_url, max_retries=0)
        try:
            for tokens in sizes:
                raw: list[float] = []
                pool: list[float] = []
                helper: list[float] = []
                for rep in range(reps):
                    raw.append(await _raw(client, tokens, rep))
                    pool.append(await _pool(client, tokens, rep, Path(tmp)))
                    if with_helper and (tokens <= 20_000 or rep == 0):
                        helper.append(await _helper(client, tokens, rep))
                per_k: dict[str, Any] = {
                    "raw": median(raw) / tokens * 1000,
                    "pool": median(pool) / tokens * 1000,
                }
                helper_note = ""
                if helper:
                    per_k["helper"] = median(helper) / tokens * 1000
                    helper_note = (
                        f"; SDK messages.stream() helper: {per_k['helper'] * 1000:.2f} ms/1k tokens "
                        f"({per_k['helper'] / per_k['raw']:.1f}× raw)"
                    )
                rows.append(
                    Row(
                        name=f"CPU per streamed token, {tokens:,}-token document",
                        ours=f"{per_k['pool'] * 1000:.2f} ms/1k tokens",
                        baseline=f"{per_k['raw'] * 1000:.2f} ms/1k tokens (raw SDK)",
                        ratio=f"{per_k['pool'] / per_k['raw']:.2f}× raw SDK",
                        method=(
                            f"pool (claim, stream, SQLite checkpoints every 2000 chars / 1 s, settle) vs "
                            f"create(stream=True) keeping deltas; same simulator process, unpaced, "
                            f"1-4 tokens/delta; CPU of the client process, median of {reps} alternating "
                            f"runs{helper_note}"
                        ),
                    )
                )
        finally:
            await client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    configure_logging("json", "warning")
    for row in anyio.run(run, args.tokens, args.reps):
        print(row.to_json())


if __name__ == "__main__":
    main()
