"""Prices as data: the shipped table, overrides, and the cost of a usage (``jobs.costs``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.costs import Spend, format_usd, load_prices
from jobs.errors import ConfigError
from jobs.models import Usage


def test_the_shipped_table_carries_its_date_and_sources() -> None:
    table = load_prices()
    assert table.date == "2026-12-02"
    assert "SERVICE.md" in table.source
    price = table.price("claude-opus-4-8")
    assert price is not None and (price.input, price.output, price.cache_read) == (5.0, 25.0, 0.5)
    assert all(p.source for p in table.models.values()), "every row names its source"


def test_unverified_and_unknown_models_cost_unknown_never_a_guess() -> None:
    table = load_prices()
    for model in ("claude-fable-5-2", "claude-mythos-5-2", "claude-haiku-5-5", "my-own-model"):
        assert table.cost(model, Usage(1000, 1000)) is None
        assert table.spend(model, Usage(1000, 1000)) == Spend(None, None)
    assert format_usd(None) == "unknown"


def test_cost_prices_every_token_class_and_the_write_ttl() -> None:
    table = load_prices()
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=2_000_000,
        cache_creation_input_tokens=1_000_000,
        cache_read_input_tokens=10_000_000,
        document_tokens=1_500_000,
    )
    # Sonnet 5.5: 2 in, 10 out, 2.50 write (5 m) or 4 (1 h), 0.20 read.
    assert table.cost("claude-sonnet-5-5", usage) == pytest.approx(2 + 20 + 2.5 + 2)
    assert table.cost("claude-sonnet-5-5", usage, "1h") == pytest.approx(2 + 20 + 4 + 2)
    spend = table.spend("claude-sonnet-5-5", usage)
    assert spend.waste_usd == pytest.approx(5.0), "500k output tokens not in the document"
    assert (spend + Spend(1.0, None)).waste_usd is None


def test_a_price_file_overrides_and_extends_the_shipped_rows(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        'date = "2027-01-01"\nsource = "our contract"\n'
        "[models.claude-haiku-5-5]\ninput = 0.1\noutput = 0.5\ncache_write_5m = 0.125\n"
        "cache_write_1h = 0.2\ncache_read = 0.01\n"
        "[models.claude-opus-4-8]\ninput = 4\noutput = 20\ncache_write_5m = 5\ncache_write_1h = 8\n"
        "cache_read = 0.4\n"
    )
    table = load_prices(path)
    assert table.date == "2027-01-01" and "our contract" in table.source
    assert table.cost("claude-haiku-5-5", Usage(1_000_000, 0)) == pytest.approx(0.1)
    assert table.cost("claude-opus-4-8", Usage(0, 1_000_000)) == pytest.approx(20)
    assert table.cost("claude-sonnet-5-5", Usage(0, 1_000_000)) == pytest.approx(10), "shipped rows stay"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[models.m]\ninput = 1\n", "models.m.output: required"),
        ("[models.m]\ninput = -1\noutput = 1\n", "models.m.input: must be a number >= 0, got -1"),
        ('[models.m]\ninput = "1"\n', "models.m.input: must be a number >= 0"),
        ("[models.m]\nimput = 1\n", "models.m: unknown key 'imput'"),
        ("models = 3\n", "models must be a table"),
        ("[models\n", "not valid TOML"),
    ],
)
def test_a_bad_price_file_is_one_clear_error(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=str(path)) as caught:
        load_prices(path)
    assert message in str(caught.value)
