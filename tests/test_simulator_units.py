"""Unit tests of the simulator's pure parts: tokenizer, documents, directives, faults, buckets."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.simulator import (
    DEFAULT_DOCUMENT_TOKENS,
    FaultConfig,
    FaultKind,
    RateLimiter,
    RateLimitExceeded,
    RateLimits,
    TokenBucket,
    document_key,
    expected_document,
    model_retired,
    model_supports_prefill,
    parse_directives,
    tokenize,
)
from worker.simulator.faults import plan_fault
from worker.simulator.text import common_prefix_length, load_document, overlap_words


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TestText:
    @given(st.text())
    def test_tokenize_round_trips_any_text(self, text: str) -> None:
        """Joining the tokens gives the text back, whatever the text."""
        assert "".join(tokenize(text)) == text

    def test_tokenize_rule(self) -> None:
        """Words carry their leading space; punctuation and newline runs are tokens of their own."""
        assert tokenize("# Title\n\nHello, world.\n- a") == [
            "#",
            " Title",
            "\n\n",
            "Hello",
            ",",
            " world",
            ".",
            "\n",
            "-",
            " a",
        ]

    @pytest.mark.parametrize("tokens", [1, 2, 3, 7, 25, 300, 5000])
    def test_document_has_exactly_the_requested_tokens(self, tokens: int) -> None:
        """``[sim:tokens=N]`` gives a document of exactly N tokens, which re-tokenize identically."""
        document = load_document(None, f"write [sim:tokens={tokens}]")
        assert len(tokenize(document.text)) == tokens
        assert len(document.ends) == tokens
        assert document.ends[-1] == len(document.text)

    def test_default_length_and_prose_shape(self) -> None:
        """Without a directive the document is 300 tokens of sentences and paragraphs."""
        text = expected_document("You are a writer.", "Write a long essay [sim:tokens=3000]")
        assert len(tokenize(expected_document(None, "short"))) == DEFAULT_DOCUMENT_TOKENS
        assert "\n\n" in text
        assert ". " in text
        assert text == text.strip()

    def test_document_is_a_pure_function_of_system_and_first_user_text(self) -> None:
        """Same prompt, same document and key; any change to either part gives another."""
        assert expected_document("s", "u") == expected_document("s", "u")
        assert expected_document("s", "u") != expected_document("s", "u2")
        assert expected_document("s", "u") != expected_document("s2", "u")
        assert expected_document(None, "u") == expected_document("", "u")
        assert document_key("s", "u") == document_key("s", "u")
        assert len(document_key("s", "u")) == 16
        assert document_key("s", "u") != document_key("s", "u2")

    def test_directives(self) -> None:
        """Directives are read from system and first user text, later ones winning."""
        directives = parse_directives(
            "[sim:tokens=50] [sim:fail_first=2]", "x [sim:refuse] [sim:faults=drop=1,seed=3]"
        )
        assert directives.tokens == 50
        assert directives.fail_first == 2
        assert directives.refuse_after == 8
        assert directives.faults == "drop=1,seed=3"
        assert parse_directives("[sim:refuse_after=3]").refuse_after == 3
        assert parse_directives(None).tokens == DEFAULT_DOCUMENT_TOKENS

    @pytest.mark.parametrize(
        ("text", "names"),
        [("[sim:bogus]", "bogus"), ("[sim:tokens=abc]", "tokens"), ("[sim:tokens=0]", "tokens")],
    )
    def test_bad_directive_raises_naming_it(self, text: str, names: str) -> None:
        """A typo in a directive fails loudly rather than silently generating the default."""
        with pytest.raises(ValueError, match=names):
            parse_directives(text)

    def test_common_prefix_and_overlap_words(self) -> None:
        """Helpers behind mismatched continuations and repeated overlaps."""
        assert common_prefix_length("abcdef", "abcxyz") == 3
        assert common_prefix_length("abc", "abc") == 3
        assert common_prefix_length("abc", "") == 0
        assert overlap_words("One two three, four five.", 3) == "three, four five."
        assert overlap_words("One two", 5) == "One two"
        assert overlap_words("...", 3) == ""


class TestModels:
    @pytest.mark.parametrize(
        "model",
        [
            "claude-haiku-4-5",
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "claude-opus-4-5",
            "claude-opus-4-5-20251101",
            "claude-haiku-4-5-20251001",
            "claude-opus-4-1",
            "claude-opus-4-20250514",
            "claude-sonnet-4-0",
            "claude-3-7-sonnet-latest",
            "claude-3-5-haiku-20241022",
            "claude-3-opus-20240229",
        ],
    )
    def test_prefill_models(self, model: str) -> None:
        """Claude 4.5 and earlier continue a final assistant message."""
        assert model_supports_prefill(model) is True

    @pytest.mark.parametrize(
        "model",
        [
            "claude-opus-4-6",
            "claude-sonnet-4-6",
            "claude-opus-4-7",
            "claude-opus-4-8",
            "claude-sonnet-5",
            "claude-opus-5-5",
            "claude-haiku-5-5",
            "claude-fable-5-2",
            "claude-mythos-5-1",
            "claude-mythos-preview",
        ],
    )
    def test_no_prefill_models(self, model: str) -> None:
        """Claude 4.6 and later, Mythos and Fable reject prefill."""
        assert model_supports_prefill(model) is False

    @pytest.mark.parametrize(
        ("model", "retired"),
        [
            ("claude-sonnet-4-5", True),
            ("claude-sonnet-4-5-20250929", True),
            ("claude-mythos-preview", True),
            ("claude-opus-4-1", True),
            ("claude-opus-4-20250514", True),
            ("claude-sonnet-4-0", True),
            ("claude-3-7-sonnet-latest", True),
            ("claude-3-5-haiku-20241022", True),
            ("claude-3-opus-20240229", True),
            ("claude-2.1", True),
            ("claude-instant-1.2", True),
            ("claude-haiku-4-5", False),
            ("claude-haiku-4-5-20251001", False),
            ("claude-opus-4-5", False),
            ("claude-opus-4-6", False),
            ("claude-sonnet-4-6", False),
            ("claude-sonnet-5-5", False),
            ("claude-mythos-5-1", False),
        ],
    )
    def test_retired_models(self, model: str, retired: bool) -> None:
        """Models past their end of life are answered with a 404, like an unknown id."""
        assert model_retired(model) is retired

    @pytest.mark.parametrize("model", ["gpt-4", "claude-opus-9000", "claude", ""])
    def test_unknown_models(self, model: str) -> None:
        """Anything else is an unknown model (404)."""
        assert model_supports_prefill(model) is None


class TestFaultConfig:
    def test_parse_round_trip(self) -> None:
        """The documented spec parses, and ``to_spec`` parses back to the same config."""
        spec = (
            "http_529=0.1,http_500=0.05,http_429=0.05,midstream_error=0.2,drop=0.1,stall=0.05,"
            "stall_silent=0.02,malformed=0.05,fail_first=2,retry_after=1.5,seed=7"
        )
        config = FaultConfig.parse(spec)
        assert config.http_529 == 0.1
        assert config.fail_first == 2
        assert config.retry_after == 1.5
        assert config.seed == 7
        assert FaultConfig.parse(config.to_spec()) == config
        assert FaultConfig.parse("none") == FaultConfig()
        assert FaultConfig.parse("") == FaultConfig()

    @pytest.mark.parametrize(
        ("spec", "key"),
        [
            ("explode=0.1", "explode"),
            ("drop=lots", "drop"),
            ("drop=1.5", "drop"),
            ("fail_first=1.5", "fail_first"),
            ("drop", "drop"),
            ("drop=0.6,stall=0.6", "sum"),
        ],
    )
    def test_bad_spec_names_the_key(self, spec: str, key: str) -> None:
        """A bad spec raises ValueError naming what is wrong."""
        with pytest.raises(ValueError, match=key):
            FaultConfig.parse(spec)

    def test_document_override(self) -> None:
        """``[sim:faults=...]`` replaces the global config but keeps its seed unless given."""
        base = FaultConfig(http_529=0.5, seed=9)
        assert base.for_document(None, None) == base
        assert base.for_document("drop=1", None) == FaultConfig(drop=1.0, seed=9)
        assert base.for_document(None, 3) == FaultConfig(http_529=0.5, seed=9, fail_first=3)
        assert base.for_document("none", None) == FaultConfig(seed=9)

    def test_plan_is_deterministic_and_follows_probabilities(self) -> None:
        """Same (seed, document, request number) → same plan; frequencies match the spec."""
        config = FaultConfig.parse("http_529=0.2,drop=0.3,seed=1")
        plans = [plan_fault(config, 0, f"doc{i}", 1, 100) for i in range(3000)]
        assert plans == [plan_fault(config, 0, f"doc{i}", 1, 100) for i in range(3000)]
        counts = Counter(plan.kind for plan in plans)
        assert 0.15 < counts[FaultKind.HTTP_529] / 3000 < 0.25
        assert 0.25 < counts[FaultKind.DROP] / 3000 < 0.35
        assert all(1 <= plan.after_tokens <= 99 for plan in plans if plan.kind is FaultKind.DROP)
        other = [plan_fault(config, 1, f"doc{i}", 1, 100) for i in range(3000)]
        assert other != plans

    def test_fail_first(self) -> None:
        """The first N requests of every document get a 529, whatever the draw."""
        config = FaultConfig(fail_first=2)
        kinds = [plan_fault(config, 0, "doc", n, 10).kind for n in (1, 2, 3, 4)]
        assert kinds == [FaultKind.HTTP_529, FaultKind.HTTP_529, None, None]


class TestTokenBucket:
    def test_reserve_refill_refund(self) -> None:
        """Continuous refill at limit/60 per second, capped at capacity; refunds too."""
        clock = FakeClock()
        bucket = TokenBucket(600, clock)
        assert bucket.level() == 600
        bucket.take(600)
        assert bucket.wait_time(100) == pytest.approx(10.0)
        clock.advance(5)
        assert bucket.level() == pytest.approx(50)
        bucket.give_back(500)
        assert bucket.level() == pytest.approx(550)
        clock.advance(3600)
        assert bucket.level() == 600
        bucket.give_back(100)
        assert bucket.level() == 600

    def test_oversized_request_waits_for_a_full_bucket_then_goes_negative(self) -> None:
        """A request bigger than the bucket is admitted only when full, leaving a debt."""
        clock = FakeClock()
        bucket = TokenBucket(60, clock)
        bucket.take(30)
        assert bucket.wait_time(1000) == pytest.approx(30.0)
        clock.advance(30)
        assert bucket.wait_time(1000) == 0
        bucket.take(1000)
        assert bucket.level() == pytest.approx(-940)
        assert bucket.seconds_until_full() == pytest.approx(1000)


class TestRateLimiter:
    def test_refuses_whole_and_names_the_longest_wait(self) -> None:
        """Refusal takes nothing; the 429 names the limit with the longest wait, rounded up."""
        clock = FakeClock()
        limiter = RateLimiter(RateLimits(requests_per_minute=60, output_tokens_per_minute=1000), clock)
        reservation = limiter.reserve(input_tokens=10, max_tokens=1000)
        with pytest.raises(RateLimitExceeded) as caught:
            limiter.reserve(input_tokens=10, max_tokens=100)

        assert caught.value.dimension == "output tokens"
        assert caught.value.retry_after == 6
        assert "1,000 output tokens per minute" in str(caught.value)
        limiter.settle(reservation, output_tokens=200)
        limiter.reserve(input_tokens=10, max_tokens=100)

    def test_settle_refunds_unused_output(self) -> None:
        """Only the tokens actually emitted stay spent."""
        clock = FakeClock()
        limiter = RateLimiter(RateLimits(output_tokens_per_minute=1000), clock)
        limiter.settle(limiter.reserve(0, 900), output_tokens=50)
        headers = limiter.headers(datetime(2026, 1, 1, tzinfo=UTC))
        assert headers["anthropic-ratelimit-output-tokens-remaining"] == "950"

    def test_headers_only_for_limited_dimensions(self) -> None:
        """Limit, remaining and an RFC 3339 reset for each limited dimension, nothing else."""
        clock = FakeClock()
        limiter = RateLimiter(RateLimits(requests_per_minute=2, input_tokens_per_minute=600), clock)
        limiter.reserve(input_tokens=300, max_tokens=5)
        headers = limiter.headers(datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC))
        assert headers == {
            "anthropic-ratelimit-requests-limit": "2",
            "anthropic-ratelimit-requests-remaining": "1",
            "anthropic-ratelimit-requests-reset": "2026-01-01T12:00:30Z",
            "anthropic-ratelimit-input-tokens-limit": "600",
            "anthropic-ratelimit-input-tokens-remaining": "300",
            "anthropic-ratelimit-input-tokens-reset": "2026-01-01T12:00:30Z",
        }
        assert RateLimiter(RateLimits(), clock).headers() == {}
