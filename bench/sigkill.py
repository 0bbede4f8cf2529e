"""SIGKILL mid-stream: text lost, and time until another worker resumes the job.

Two worker processes (``python -m worker run``) share one SQLite queue; a simulator process streams
at a Claude-like 80 tokens/s. Worker A takes the job; once it has streamed for a while it is
killed with SIGKILL at a random moment; worker B, idle until then, resumes the job once A's lease
expires. Measured from the simulator's accounting and the store:

* text lost = tokens A received but had not committed (the simulator emitted them; the final
  document does not contain them twice, so they are re-generated): compared with what a
  restart-from-scratch worker loses (everything A had received);
* time to resume = from the kill to B's first committed text; bounded by ``lease_seconds``.

``python -m bench.sigkill --runs 3`` measures at the default settings (``[queue] lease_seconds``
and ``[worker] poll_seconds`` as shipped); ``--lease 5`` overrides the lease.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import anyio
import anyio.to_thread

from bench.common import Row, SimulatorProcess, median, poll_until, simulator_process
from jobs.models import JobSpec, Message, State
from jobs.sqlite import SQLiteStore
from worker.config import QueueSettings, WorkerSettings
from worker.simulator import count_tokens, document_key, expected_document

__all__ = ("run", "main")

RATE = 80
TOKENS = 3000


def _config(folder: Path, base_url: str, lease: float) -> Path:
    path = folder / "config.toml"
    path.write_text(
        f"""
[anthropic]
base_url = "{base_url}"
[queue]
url = "sqlite:///{folder / "jobs.db"}"
lease_seconds = {lease}
[worker]
poll_seconds = {WorkerSettings().poll_seconds}
[logging]
format = "json"
level = "warning"
""",
        encoding="utf-8",
    )
    return path


async def _one(run: int, sim: SimulatorProcess, folder: Path, lease: float) -> dict[str, float]:
    prompt = f"SIGKILL benchmark {run}. [sim:tokens={TOKENS}]"
    store = SQLiteStore(folder / "jobs.db")
    config = _config(folder, sim.base_url, lease)
    env = {**os.environ, "ANTHROPIC_API_KEY": "bench"}
    command = [sys.executable, "-m", "worker", "run", "--config", str(config)]
    try:
        await store.enqueue(
            [JobSpec(f"k{run}", (Message("user", prompt),), "claude-haiku-4-5", 8000, 20000, 5)]
        )
        job_id = f"k{run}"

        async def committed() -> int:
            return (await store.get(job_id)).committed_chars

        async def started() -> bool:
            return await committed() > 0

        first = await anyio.open_process(command, env=env, stdout=None, stderr=None)
        second = None
        try:
            await poll_until(started, 60)
            await anyio.sleep(random.Random(run).uniform(8.0, 14.0))  # the moment of the kill
            second = await anyio.open_process(command, env=env, stdout=None, stderr=None)
            first.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await first.wait()
            at_kill = await committed()

            async def resumed() -> bool:
                return await committed() > at_kill

            async def done() -> bool:
                return (await store.get(job_id)).state is State.SUCCEEDED

            await poll_until(resumed, lease + 30, every=0.02)
            resumed_after = time.monotonic() - killed_at
            await poll_until(done, 120, every=0.1)
        finally:
            for process in (first, second):
                if process is not None and process.returncode is None:
                    process.terminate()
                    await process.wait()
        text = await store.read_text(f"k{run}")
        assert text == expected_document(None, prompt), "the resumed document differs"
        documents = (await anyio.to_thread.run_sync(sim.accounting))["documents"]
        emitted: int = documents[document_key(None, prompt)]["output_tokens"]
        final = count_tokens(text)
        received_before_kill = count_tokens(text[:at_kill]) + (emitted - final)
        return {"lost": emitted - final, "resumed_after": resumed_after, "received": received_before_kill}
    finally:
        await store.close()


async def run(runs: int, lease: float) -> list[Row]:
    lost: list[float] = []
    resumed: list[float] = []
    received: list[float] = []
    with simulator_process("--tokens-per-second", str(RATE)) as sim:
        for i in range(runs):
            with tempfile.TemporaryDirectory() as tmp:
                result = await _one(i, sim, Path(tmp), lease)
            lost.append(result["lost"])
            resumed.append(result["resumed_after"])
            received.append(result["received"])
    return [
        Row(
            name="SIGKILL mid-stream: text lost, time until another worker resumes",
            ours=(
                f"{median(lost):.0f} tokens lost (≤ 1 s of text at {RATE} tokens/s); resumed after "
                f"{median(resumed):.1f} s (lease {lease:g} s)"
            ),
            baseline=f"{median(received):.0f} tokens lost (restart from scratch: all it had received)",
            ratio=f"{median(received) / max(1.0, median(lost)):.0f}× less text lost",
            method=(
                f"{runs} runs, median; a {TOKENS:,}-token document at {RATE} tokens/s; two `worker run` "
                "processes on one SQLite queue; SIGKILL after 8-14 s of streaming; lost = tokens the "
                "simulator emitted beyond the final document; resumed = kill → first new committed text; "
                "checkpoint_seconds 1"
            ),
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lease", type=float, default=QueueSettings().lease_seconds)
    args = parser.parse_args()
    for row in anyio.run(run, args.runs, args.lease):
        print(row.to_json())


if __name__ == "__main__":
    main()
