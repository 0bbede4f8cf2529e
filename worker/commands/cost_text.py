"""How money is shown by ``status``, ``show`` and ``enqueue --dry-run``. Pure text.

Kept apart from the command handlers so the wording of costs lives in one place; every figure
comes from :mod:`jobs.costs` and says "unknown" rather than guess when a model has no price.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobs.costs import PriceTable, Spend, format_usd, job_spend, worst_case_usd
from jobs.models import Job, JobSpec

__all__ = ("spend_text", "show_cost_lines", "dry_run_lines")


def spend_text(spend: Spend) -> str:
    """``$1.2345 spent, $0.0123 of it on waste``."""
    return f"{format_usd(spend.total_usd)} spent, {format_usd(spend.waste_usd)} of it on waste"


def show_cost_lines(job: Job, prices: PriceTable) -> list[str]:
    """The cost and output-token lines of ``show``."""
    usage = job.usage
    cap = job.spec.max_cost_usd
    limit = f", cap {format_usd(cap)}" if cap is not None else ""
    estimated = f" ({usage.estimated_output_tokens:,} estimated)" if usage.estimated_output_tokens else ""
    return [
        f"cost       {spend_text(job_spend(prices, job))}{limit}; prompt cache {job.spec.prompt_cache}",
        f"output     billed {usage.output_tokens:,}{estimated} · in document {usage.document_tokens:,} · "
        f"wasted {usage.wasted_output_tokens:,} (generated twice {usage.repeated_tokens:,})",
    ]


def dry_run_lines(specs: Sequence[JobSpec], prices: PriceTable) -> list[str]:
    """One line per job (id, model, sizes, worst-case cost), then the total."""
    lines: list[str] = []
    total: float | None = 0.0
    for spec in specs:
        worst = worst_case_usd(prices, spec)
        total = None if total is None or worst is None else total + worst
        cap = f" (capped by max_cost_usd {format_usd(spec.max_cost_usd)})" if spec.max_cost_usd else ""
        lines.append(
            f"{spec.id}  {spec.model}  max_tokens {spec.max_tokens:,}  output_budget {spec.output_budget:,}"
            f"  worst case {format_usd(worst)}{cap}"
        )
    lines.append(
        f"{len(specs)} jobs, worst case {format_usd(total)} in all (prices of {prices.date}); "
        "dry run: nothing enqueued"
    )
    return lines
