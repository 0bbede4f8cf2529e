"""What tokens cost: a per-model price table read from data, and the cost of a usage. Pure.

The prices ship as ``jobs/prices.toml``, which carries its date and sources; a config can point at
a file of the same shape that overrides or extends rows (``[costs] prices_file``). A model that no
row names has no price, and its cost is ``None`` ("unknown"): a made-up number on a bill is worse
than none.

Why a cost is computed from summed usage: every shipped price is linear in tokens (no price bands
by prompt length, so Haiku 5.5 is left out of the file), so the cost of a sum of requests is the
sum of their costs, and an attempt's or a job's cost follows from the usage the store already sums.
Cache writes are priced at the TTL the job asked for (``5m`` or ``1h``), since the usage we keep
does not split them.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from jobs.blocks import estimate_chars
from jobs.errors import ConfigError
from jobs.models import Job, JobSpec, Totals, Usage

__all__ = (
    "Price",
    "PriceTable",
    "Spend",
    "load_prices",
    "parse_prices",
    "format_usd",
    "job_spend",
    "totals_spend",
    "token_accounting",
    "worst_case_usd",
    "PER_TOKENS",
)

#: Prices are quoted per this many tokens (USD per million tokens, "MTok").
PER_TOKENS = 1_000_000

_RATES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices in USD per million tokens."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    #: The Batch API bills input and output at this fraction.
    batch_discount: float = 0.5
    source: str = ""

    def cost(self, usage: Usage, ttl: str = "5m", *, batch: bool = False) -> float:
        """USD for ``usage``; cache writes priced at ``ttl``. ``batch``: sent through Message
        Batches, where "all usage is charged at 50 %" (SERVICE.md §1.5): the discount applies
        to every rate, cache writes and reads included."""
        write = self.cache_write_1h if ttl == "1h" else self.cache_write_5m
        total = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_creation_input_tokens * write
            + usage.cache_read_input_tokens * self.cache_read
        )
        return total * (self.batch_discount if batch else 1.0) / PER_TOKENS

    def output_cost(self, tokens: int, *, batch: bool = False) -> float:
        return tokens * self.output * (self.batch_discount if batch else 1.0) / PER_TOKENS


@dataclass(frozen=True, slots=True)
class Spend:
    """A job's (or many jobs') cost, split the way ``status`` and ``show`` report it.

    ``None`` is unknown: some model had no price."""

    total_usd: float | None
    #: The part paid for output tokens that are not in the final document.
    waste_usd: float | None

    def __add__(self, other: Spend) -> Spend:
        return Spend(_add(self.total_usd, other.total_usd), _add(self.waste_usd, other.waste_usd))


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices by model id, with the date and source of the table."""

    date: str
    source: str
    models: Mapping[str, Price] = field(default_factory=dict)

    def price(self, model: str) -> Price | None:
        return self.models.get(model)

    def cost(self, model: str, usage: Usage, ttl: str = "5m", *, batch: bool = False) -> float | None:
        """USD for ``usage`` of ``model`` (at the batch price with ``batch``); None if the model
        has no price."""
        price = self.models.get(model)
        return None if price is None else price.cost(usage, ttl, batch=batch)

    def spend(self, model: str, usage: Usage, ttl: str = "5m", *, batch: bool = False) -> Spend:
        """Total and waste; waste is the output billed beyond the tokens in the document."""
        price = self.models.get(model)
        if price is None:
            return Spend(None, None)
        waste = price.output_cost(usage.wasted_output_tokens, batch=batch)
        return Spend(price.cost(usage, ttl, batch=batch), waste)

    def merged(self, other: PriceTable) -> PriceTable:
        """This table with ``other``'s rows added or replacing ours; ``other``'s date wins."""
        return PriceTable(
            date=other.date or self.date,
            source=f"{self.source}; {other.source}" if other.source else self.source,
            models={**self.models, **other.models},
        )


def format_usd(value: float | None) -> str:
    """``$1.2345`` (four decimals: a request costs fractions of a cent), or ``unknown``."""
    return "unknown" if value is None else f"${value:,.4f}"


def parse_prices(data: Mapping[str, Any], where: str) -> PriceTable:
    """Validate a price table's TOML data; every problem is a ``ConfigError`` naming the key."""
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{where}: models must be a table of [models.<model-id>] tables")
    table: dict[str, Price] = {}
    for model, row in models.items():
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: models.{model} must be a table")
        unknown = set(row) - {*_RATES, "batch_discount", "source"}
        if unknown:
            raise ConfigError(f"{where}: models.{model}: unknown key {sorted(unknown)[0]!r}")
        rates = {name: _rate(row, name, f"{where}: models.{model}.{name}") for name in _RATES}
        discount = _rate(row, "batch_discount", f"{where}: models.{model}.batch_discount", 0.5)
        table[model] = Price(**rates, batch_discount=discount, source=str(row.get("source", "")))
    return PriceTable(date=str(data.get("date", "")), source=str(data.get("source", "")), models=table)


def _rate(row: Mapping[str, Any], name: str, where: str, default: float | None = None) -> float:
    if name not in row:
        if default is not None:
            return default
        raise ConfigError(f"{where}: required (USD per million tokens)")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where}: must be a number >= 0, got {value!r}")
    return float(value)


def _read(path: Path) -> Mapping[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read price file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_prices(override: Path | None = None) -> PriceTable:
    """The shipped table, with ``override``'s rows (if given) on top."""
    shipped = resources.files("jobs").joinpath("prices.toml").read_text(encoding="utf-8")
    table = parse_prices(tomllib.loads(shipped), "jobs/prices.toml")
    if override is None:
        return table
    return table.merged(parse_prices(_read(override), str(override)))


def job_spend(table: PriceTable, job: Job) -> Spend:
    """A job's cost so far and the part of it spent on waste (see :meth:`PriceTable.spend`); a
    job of mode ``batch`` at the batch price (every request of it went by batch)."""
    batch = job.spec.mode == "batch"
    return table.spend(job.spec.model, job.usage, job.spec.prompt_cache, batch=batch)


def totals_spend(table: PriceTable, totals: Iterable[Totals]) -> Spend:
    """The cost of many jobs from the store's aggregate rows: exact, since each row is one model,
    one cache TTL and one job mode (a cost is linear in usage within one price; batch jobs at the
    batch price, as :func:`job_spend`) and carries the per-job waste summed. Unknown (None) when
    some row's model has no price."""
    spend = Spend(0.0, 0.0)
    for row in totals:
        price = table.price(row.model)
        if price is None:
            return Spend(None, None)
        batch = row.mode == "batch"
        spend += Spend(
            price.cost(row.usage, row.prompt_cache, batch=batch),
            price.output_cost(row.wasted_output_tokens, batch=batch),
        )
    return spend


def token_accounting(usage: Usage) -> dict[str, int]:
    """The output tokens of a job, split the way ``show`` and the manifest report them."""
    return {
        "billed": usage.output_tokens,
        "in_document": usage.document_tokens,
        "wasted": usage.wasted_output_tokens,
        "generated_twice": usage.repeated_tokens,
        "estimated": usage.estimated_output_tokens,
    }


#: Characters per token assumed for a prompt at ``enqueue --dry-run``: fewer than the usual 4, so
#: the estimate leans high (newer tokenizers use up to ~35 % more tokens for the same text).
DRY_RUN_CHARS_PER_TOKEN = 3.0


def worst_case_usd(table: PriceTable, spec: JobSpec) -> float | None:
    """The most ``spec`` can cost without faults: its whole ``output_budget`` generated, in
    requests of ``max_tokens``, each re-sending the prompt and the text so far at the dearest input
    rate (no cache reads); capped by its ``max_cost_usd``. None if the model has no price."""
    price = table.price(spec.model)
    if price is None:
        return None
    chars = len(spec.system or "") + sum(estimate_chars(m.content) for m in spec.messages)
    prompt = math.ceil(chars / DRY_RUN_CHARS_PER_TOKEN)
    requests = math.ceil(spec.output_budget / spec.max_tokens)
    resent = spec.max_tokens * requests * (requests - 1) // 2  # text so far, summed over requests
    dearest = max(price.input, price.cache_write_5m, price.cache_write_1h)
    usd = ((prompt * requests + resent) * dearest + spec.output_budget * price.output) / PER_TOKENS
    return usd if spec.max_cost_usd is None else min(usd, spec.max_cost_usd)
