"""The token economy: prompt caching's effect on cost, waste, and whether our bill is honest.

One simulator process (prompt cache with a 1,024-token minimum, 20 % mid-stream faults with the
same seeded draws for every variant: the accounting, request numbers and cache are reset in
between). The workload: documents of ``--tokens`` tokens sharing a ``--system``-token system
prompt, ``max_tokens`` 1,500, so each document is continued; a continuation model (4.6+: the text
so far goes back as an assistant turn). Three variants side by side:

* ``off``: no ``cache_control`` at all (the baseline);
* ``prefix``: breakpoints on the system prompt and the job's prompt (the default);
* ``prefix+checkpoint``: also the document so far, one block per request, breakpoint on the last.

Reported, from the simulator's own accounting unless said otherwise:

* the input cost of continuations and resumes (requests that carried text so far), against the
  uncached run, and the same for the stable prefix alone (system + prompt);
* output tokens wasted (emitted but not in the final documents) ÷ tokens in the documents;
* the cost the store recorded ÷ the cost of the simulator's bill (the same price table).

Each variant's pool is built as ``run`` builds it (``worker.runtime.open_runtime`` on a config
from :func:`bench.common.bench_config`: ``[costs] cache_checkpoint`` on for the third, httpx
transport as before), with its own queue and client.

``python -m bench.economy --docs 100 --tokens 4000 --system 3000``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import anyio

from bench.common import Row, Setting, SimulatorProcess, bench_config, simulator_process
from jobs.costs import PriceTable, load_prices
from jobs.models import JobSpec, Message, State, Usage
from worker.logs import configure_logging
from worker.runtime import open_runtime
from worker.simulator import count_tokens, expected_document

__all__ = ("run", "main", "FAULTS", "MODEL")

FAULTS = "midstream_error=0.1,drop=0.05,malformed=0.05,seed=17"
MODEL = "claude-opus-4-6"
#: Output tokens per request in the issue's workload (each document is continued).
MAX_TOKENS = 1500
VARIANTS = ("off", "prefix", "prefix+checkpoint")


def _system(tokens: int) -> str:
    words = ("Write plainly", "and exactly;", "keep every", "section", "in order.")
    text, i = "", 0
    while count_tokens(text) < tokens:
        text += words[i % len(words)] + " "
        i += 1
    return text.strip()


def _specs(docs: int, tokens: int, system: str, cache: str, max_tokens: int = MAX_TOKENS) -> list[JobSpec]:
    return [
        JobSpec(
            f"doc{i}",
            (Message("user", f"Economy benchmark document {i}. [sim:tokens={tokens}]"),),
            MODEL,
            max_tokens,
            tokens * 3,
            50,
            system=system,
            prompt_cache=cache,
        )
        for i in range(docs)
    ]


def _cost(prices: PriceTable, counts: dict[str, int], *, input_only: bool = False) -> float:
    usage = Usage(
        input_tokens=counts["input_tokens"],
        output_tokens=0 if input_only else counts["output_tokens"],
        cache_creation_input_tokens=counts["cache_write_5m_tokens"],
        cache_read_input_tokens=counts["cache_read_tokens"],
    )
    cost = prices.cost(MODEL, usage)
    assert cost is not None
    return cost


async def _one(sim: SimulatorProcess, tmp: Path, variant: str, specs: list[JobSpec]) -> dict[str, Any]:
    sim.reset()
    settings: dict[str, Setting] = {
        "worker.concurrency": len(specs),
        "worker.poll_seconds": 0.02,
        "worker.backoff_base": 0.01,
        "worker.backoff_max": 0.05,
        "worker.idle_timeout": 30,
        "costs.cache_checkpoint": "on" if variant == "prefix+checkpoint" else "off",
        "anthropic.http_transport": "httpx",
    }
    config = bench_config(tmp, variant.replace("+", "_"), sim.base_url, settings)
    async with open_runtime(config) as runtime:
        store = runtime.store
        await store.enqueue(specs)
        stats = await runtime.pool().run(until_empty=True, handle_signals=False)
        recorded = Usage()
        for spec in specs:
            job = await store.get(spec.id)
            assert job.state is State.SUCCEEDED, (spec.id, job.state, job.last_error)
            assert await store.read_text(spec.id) == expected_document(spec.system, spec.messages[0].text)
            recorded += job.usage
    return {"accounting": sim.accounting(), "recorded": recorded, "retries": stats.retries}


async def run(docs: int, tokens: int, system_tokens: int, max_tokens: int = MAX_TOKENS) -> list[Row]:
    prices = load_prices()
    system = _system(system_tokens)
    prefix_tokens = count_tokens(system) + count_tokens(_specs(1, tokens, system, "off")[0].messages[0].text)
    results: dict[str, dict[str, Any]] = {}
    with (
        simulator_process("--faults", FAULTS, "--cache-min-tokens", "1024") as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for variant in VARIANTS:
            cache = "off" if variant == "off" else "5m"
            specs = _specs(docs, tokens, system, cache, max_tokens)
            results[variant] = await _one(sim, Path(tmp), variant, specs)
    in_documents = sum(
        count_tokens(expected_document(system, s.messages[0].text))
        for s in _specs(docs, tokens, system, "off")
    )
    rows: list[Row] = []
    base = results["off"]["accounting"]
    base_later = _cost(prices, base["billed_continuations"][MODEL], input_only=True)
    price = prices.price(MODEL)
    assert price is not None
    for variant in VARIANTS[1:]:
        accounting = results[variant]["accounting"]
        later = accounting["billed_continuations"][MODEL]
        later_cost = _cost(prices, later, input_only=True)
        # The stable prefix's share: uncached, every continuation re-sent it at the input price.
        prefix_uncached = base["billed_continuations"][MODEL]["requests"] * prefix_tokens * price.input / 1e6
        prefix_cached = later["requests"] * prefix_tokens * price.cache_read / 1e6
        rows.append(
            Row(
                name=f"Input cost of continuations and resumes, caching {variant} vs off",
                ours=f"${later_cost:.4f} ({later['requests']} requests)",
                baseline=f"${base_later:.4f} ({base['billed_continuations'][MODEL]['requests']} requests)",
                ratio=f"{100 * later_cost / base_later:.1f} % of uncached; stable prefix alone "
                f"{100 * prefix_cached / prefix_uncached:.1f} %",
                method=_method(docs, tokens, system_tokens, max_tokens),
            )
        )
    for variant in VARIANTS:
        accounting = results[variant]["accounting"]
        emitted = accounting["output_tokens"]["total"]
        true_cost = _cost(prices, accounting["billed"][MODEL])
        reported = prices.cost(MODEL, results[variant]["recorded"])
        wasted = (emitted - in_documents) / in_documents
        assert reported is not None
        rows.append(
            Row(
                name=f"Waste and honest cost, caching {variant}",
                ours=f"reported ${reported:.4f}; wasted {100 * wasted:.2f} %",
                baseline=f"simulator's bill ${true_cost:.4f}",
                ratio=f"reported ÷ billed {reported / true_cost:.4f}; total cost "
                f"{100 * true_cost / _cost(prices, base['billed'][MODEL]):.1f} % of uncached",
                method=f"{results[variant]['retries']} retries; wasted = tokens the simulator emitted "
                "beyond those in the final documents, ÷ tokens in the documents",
            )
        )
    return rows


def _method(docs: int, tokens: int, system_tokens: int, max_tokens: int) -> str:
    return (
        f"{docs} documents × {tokens:,} tokens sharing a {system_tokens:,}-token system prompt, "
        f"max_tokens {max_tokens:,}, {MODEL} (continuation turns), simulator faults {FAULTS} per "
        "request, same seeded draws per variant; costs from the shipped price table applied to the "
        "simulator's billed tokens; every final text checked byte-identical"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--system", type=int, default=3000)
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    args = parser.parse_args()
    configure_logging("json", "warning")
    for row in anyio.run(run, args.docs, args.tokens, args.system, args.max_tokens):
        print(row.to_json())


if __name__ == "__main__":
    main()
