"""The pure parts of the token economy: output estimates, breakpoints, the learned minimum, and
the limiter's reservation once a prefix is cached."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.models import JobSpec, Message, Usage
from worker.accounting import OutputEstimator, RequestChars, request_usage
from worker.caching import MAX_BREAKPOINTS, MinimumLearner, cache_reads_count_for_itpm, mark_request
from worker.economy import AttemptEconomy, Economy
from worker.stream import StreamResult

MODEL = "claude-opus-4-6"


def test_a_broken_stream_is_estimated_from_its_characters_and_marked() -> None:
    estimator = OutputEstimator()
    assert estimator.estimate(MODEL, 400) == 100, "4 characters a token before anything is known"
    estimator.learn_prompt(MODEL, 1000, 200)
    assert estimator.estimate(MODEL, 400) == 80, "then the prompt's ratio"
    estimator.learn(MODEL, 600, 100)
    assert estimator.estimate(MODEL, 600) == 100, "then the output's"
    broken = request_usage(
        MODEL,
        Usage(50, 1),
        RequestChars(streamed=600, kept=300),
        final=False,
        finished=False,
        estimator=estimator,
    )
    assert (broken.input_tokens, broken.output_tokens, broken.estimated_output_tokens) == (50, 100, 100)
    assert (broken.document_tokens, broken.repeated_tokens) == (50, 0), (
        "the unkept half was lost, not repeated"
    )


def test_a_finished_request_uses_the_api_count_and_splits_repeats() -> None:
    estimator = OutputEstimator()
    done = request_usage(
        MODEL,
        Usage(50, 120),
        RequestChars(streamed=600, kept=540),
        final=True,
        finished=True,
        estimator=estimator,
    )
    assert (done.output_tokens, done.estimated_output_tokens) == (120, 0)
    assert (done.document_tokens, done.repeated_tokens, done.wasted_output_tokens) == (108, 12, 12)
    assert estimator.tokens_per_char(MODEL) == pytest.approx(0.2), "and teaches the estimator"
    nothing = request_usage(
        MODEL, Usage(50, 1), RequestChars(), final=False, finished=False, estimator=estimator
    )
    assert nothing.output_tokens == 0, "a stream that broke before any text billed no output"


def params(system: str | None = "S" * 100, assistant: str | None = None) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Write."}]
    if assistant is not None:
        messages += [{"role": "assistant", "content": assistant}, {"role": "user", "content": "Continue."}]
    out: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": messages}
    if system is not None:
        out["system"] = system
    return out


def test_breakpoints_go_on_the_system_prompt_and_the_jobs_own_prompt() -> None:
    request = params(assistant="so far")
    placed = mark_request(request, prompt_messages=1, ttl="1h", system_tokens=25, learner=MinimumLearner())
    assert placed == 2 <= MAX_BREAKPOINTS
    control = {"type": "ephemeral", "ttl": "1h"}
    assert request["system"] == [{"type": "text", "text": "S" * 100, "cache_control": control}]
    assert request["messages"][0]["content"] == [{"type": "text", "text": "Write.", "cache_control": control}]
    assert request["messages"][1]["content"] == "so far", "the growing text is not marked by default"


def test_checkpoint_segments_become_blocks_with_a_breakpoint_on_the_last() -> None:
    request = params(system=None, assistant="one two")
    placed = mark_request(
        request,
        prompt_messages=1,
        ttl="5m",
        system_tokens=0,
        learner=MinimumLearner(),
        segments=["one ", "two"],
    )
    assert placed == 2
    blocks = request["messages"][1]["content"]
    assert [b["text"] for b in blocks] == ["one ", "two"]
    assert "cache_control" not in blocks[0] and blocks[1]["cache_control"]["ttl"] == "5m"
    mismatched = params(system=None, assistant="one two")
    mark_request(
        mismatched, prompt_messages=1, ttl="5m", system_tokens=0, learner=MinimumLearner(), segments=["x"]
    )
    assert mismatched["messages"][1]["content"] == "one two", (
        "segments that do not join to the text: no blocks"
    )


def test_the_minimum_is_learned_from_usage_and_a_short_system_prompt_loses_its_breakpoint() -> None:
    learner = MinimumLearner()
    learner.learn(MODEL, 800, Usage(800, 10))  # marked 800 tokens, nothing cached: too short
    learner.learn(MODEL, 1500, Usage(10, 10, 1500, 0))
    assert learner.bounds(MODEL) == (800, 1500)
    request = params()
    assert mark_request(request, prompt_messages=1, ttl="5m", system_tokens=700, learner=learner) == 1
    assert "cache_control" not in request["system"][0]
    assert learner.worth_marking(MODEL, 900) and not learner.worth_marking("claude-opus-4-6", 800)
    assert learner.bounds("other") == (0, float("inf"))


def test_the_limiter_reserves_only_the_uncached_input_once_the_prefix_is_cached() -> None:
    assert not cache_reads_count_for_itpm(MODEL)
    spec = JobSpec("j", (Message("user", "Write."),), MODEL, 100, 1000, 3, system="S" * 4000)
    economy = AttemptEconomy(Economy(), spec, Usage(), "")
    first = economy.prepare(params(system="S" * 4000), 100)
    result = StreamResult(usage=Usage(2, 1, 0, 1000), final_usage=True)
    economy.begin(result)
    economy.finish(finished=True)
    second = economy.prepare(params(system="S" * 4000), 100)
    assert second == first - 1000
