"""How money is shown by ``status``, ``show`` and ``enqueue --dry-run``. Pure text.

Kept apart from the command handlers so the wording of costs lives in one place; every figure
comes from :mod:`jobs.costs` and says "unknown" rather than guess when a model has no price.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobs.costs import PriceTable, Spend, format_usd, job_spend, worst_case_usd
from jobs.models import Job, JobSpec

__all__ = ("spend_text", "show_cost_lines", "dry_run_lines", "DryRun")


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


class DryRun:
    """``enqueue --dry-run``'s lines, one job at a time (a file is streamed), then the total."""

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self.jobs = 0
        self.total: float | None = 0.0

    def line(self, spec: JobSpec) -> str:
        """The job's id, model, sizes and worst-case cost; adds it to the total."""
        worst = worst_case_usd(self.prices, spec)
        self.jobs += 1
        self.total = None if self.total is None or worst is None else self.total + worst
        cap = f" (capped by max_cost_usd {format_usd(spec.max_cost_usd)})" if spec.max_cost_usd else ""
        return (
            f"{spec.id}  {spec.model}  max_tokens {spec.max_tokens:,}  output_budget {spec.output_budget:,}"
            f"  worst case {format_usd(worst)}{cap}"
        )

    def summary(self) -> str:
        return (
            f"{self.jobs} jobs, worst case {format_usd(self.total)} in all (prices of {self.prices.date}); "
            "dry run: nothing enqueued"
        )


def dry_run_lines(specs: Sequence[JobSpec], prices: PriceTable) -> list[str]:
    """One line per job (id, model, sizes, worst-case cost), then the total."""
    run = DryRun(prices)
    return [*(run.line(spec) for spec in specs), run.summary()]
