"""The simulator's prompt cache, through the real SDK over HTTP: exact prefix at block boundaries,
minimum length, TTL on a clock the test moves, the usage fields, and ITPM that ignores reads."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.simulator_fixtures import SimulatorFactory
from tests.store_fixtures import FakeClock
from worker.simulator import Simulator, count_tokens
from worker.simulator.cache import CachePlan, PromptBlock, PromptCache

MODEL = "claude-opus-4-6"
SYSTEM = "You write long reports. " * 200  # ~1,000 tokens by the simulator's tokenizer
PROMPT = "Report number one. [sim:tokens=40]"


def client_for(sim: Simulator) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0)


def cached(text: str, ttl: str = "5m") -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": ttl}}]


async def usage_of(sim: Simulator, system: Any, prompt: Any = PROMPT) -> dict[str, int]:
    client = client_for(sim)
    try:
        message = await client.messages.create(
            model=MODEL, max_tokens=100, system=system, messages=[{"role": "user", "content": prompt}]
        )
    finally:
        await client.close()
    usage = message.usage
    return {
        "input": usage.input_tokens,
        "write": usage.cache_creation_input_tokens or 0,
        "read": usage.cache_read_input_tokens or 0,
    }


async def test_a_marked_prefix_is_written_once_then_read(make_simulator: SimulatorFactory) -> None:
    sim = await make_simulator(cache_min_tokens=500)
    system_tokens = count_tokens(SYSTEM)
    first = await usage_of(sim, cached(SYSTEM))
    second = await usage_of(sim, cached(SYSTEM), "A different prompt. [sim:tokens=40]")
    assert first["write"] == system_tokens and first["read"] == 0
    assert second["read"] == system_tokens and second["write"] == 0
    assert second["input"] == count_tokens("A different prompt. [sim:tokens=40]")
    billed = sim.accounting().billed[MODEL]
    assert billed["cache_write_5m_tokens"] == system_tokens
    assert billed["cache_read_tokens"] == system_tokens


async def test_one_changed_byte_misses_and_unmarked_prompts_never_cache(
    make_simulator: SimulatorFactory,
) -> None:
    sim = await make_simulator(cache_min_tokens=500)
    await usage_of(sim, cached(SYSTEM))
    changed = await usage_of(sim, cached(SYSTEM[:-1] + "!"))
    plain = await usage_of(sim, SYSTEM)
    assert (changed["read"], changed["write"]) == (0, count_tokens(SYSTEM[:-1] + "!"))
    assert (plain["read"], plain["write"]) == (0, 0)


async def test_below_the_minimum_nothing_is_cached_silently(make_simulator: SimulatorFactory) -> None:
    sim = await make_simulator(cache_min_tokens=5000)
    for _ in range(2):
        usage = await usage_of(sim, cached(SYSTEM))
        assert (usage["read"], usage["write"]) == (0, 0)
        assert usage["input"] > 1000


async def test_entries_expire_after_their_ttl_on_the_simulator_clock(
    make_simulator: SimulatorFactory,
) -> None:
    clock = FakeClock(1000.0)
    sim = await make_simulator(cache_min_tokens=500, clock=clock)
    await usage_of(sim, cached(SYSTEM))
    clock.advance(299)
    assert (await usage_of(sim, cached(SYSTEM)))["read"] > 0, "a read within 5 minutes refreshes the entry"
    clock.advance(299)
    assert (await usage_of(sim, cached(SYSTEM)))["read"] > 0
    clock.advance(301)
    assert (await usage_of(sim, cached(SYSTEM)))["read"] == 0, "expired: written again"
    await usage_of(sim, cached(SYSTEM + "x", "1h"))
    clock.advance(3000)
    assert (await usage_of(sim, cached(SYSTEM + "x", "1h")))["read"] > 0


async def test_more_than_four_breakpoints_is_a_400(make_simulator: SimulatorFactory) -> None:
    sim = await make_simulator()
    blocks = [cached(f"part {i}")[0] for i in range(5)]
    with pytest.raises(anthropic.BadRequestError, match="A maximum of 4 blocks with cache_control"):
        await usage_of(sim, blocks)


async def test_cache_reads_do_not_count_against_itpm(make_simulator: SimulatorFactory) -> None:
    """With an ITPM below two full prompts, a second request that reads the prefix still fits."""
    tokens = count_tokens(SYSTEM)
    sim = await make_simulator(cache_min_tokens=500, itpm=tokens + 200, clock=FakeClock(0.0))
    await usage_of(sim, cached(SYSTEM))
    second = await usage_of(sim, cached(SYSTEM))
    assert second["read"] == tokens
    with pytest.raises(anthropic.RateLimitError):
        await usage_of(sim, SYSTEM + " uncached")


def test_the_longest_live_prefix_within_the_lookback_is_read() -> None:
    clock = FakeClock(0.0)
    cache = PromptCache(clock, min_tokens=10)
    head = [PromptBlock("system", "s", 10, "5m"), PromptBlock("user", "u", 10, "5m")]
    cache.commit(cache.plan("m", head))
    grown = [*head, PromptBlock("assistant", "a1", 30), PromptBlock("assistant", "a2", 30, "5m")]
    plan = cache.plan("m", grown)
    assert plan == CachePlan(read=20, write_5m=60, entries=plan.entries)
    assert cache.plan("other-model", head).read == 0, "entries are per model"
