"""Honest usage for every request, including those that broke mid-stream. Pure, and cheap.

The API reports a request's output tokens in its last ``message_delta``; a stream that breaks
before it (an ``event: error``, a dropped connection, a stall, a worker that is killed) has only
the ``message_start`` usage, whose ``output_tokens`` is a placeholder. Those tokens were still
generated and billed, so they are estimated:

    **estimate** = characters streamed × tokens per character, where tokens per character is
    learned per model from this process's requests that did report their output (the sums, so
    long requests weigh more); until one has, from the prompts sent (their characters against the
    input tokens ``message_start`` reported, the same tokenizer); 1 token per 4 characters before
    any response at all.

The estimate is marked as such (``Usage.estimated_output_tokens``). The same ratio, per request,
splits the output into what landed in the document (characters kept by the joiner), what was
generated twice at a join (characters the joiner dropped as a repeat) and the rest, which was lost
with a broken stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.models import Usage

__all__ = ("OutputEstimator", "RequestChars", "request_usage", "DEFAULT_CHARS_PER_TOKEN")

#: Before any request of a model reported its usage: the usual rule of thumb for English prose.
DEFAULT_CHARS_PER_TOKEN = 4.0


class OutputEstimator:
    """Tokens per streamed character, learned per model; shared by one process's attempts."""

    __slots__ = ("_prompts", "_seen")

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, int]] = {}
        self._prompts: dict[str, tuple[int, int]] = {}

    def learn_prompt(self, model: str, chars: int, tokens: int) -> None:
        """Record a prompt of ``chars`` characters that the API counted as ``tokens``."""
        if chars > 0 and tokens > 0:
            seen_chars, seen_tokens = self._prompts.get(model, (0, 0))
            self._prompts[model] = (seen_chars + chars, seen_tokens + tokens)

    def learn(self, model: str, chars: int, tokens: int) -> None:
        """Record a request that streamed ``chars`` characters and reported ``tokens``."""
        if chars <= 0 or tokens <= 0:
            return
        seen_chars, seen_tokens = self._seen.get(model, (0, 0))
        self._seen[model] = (seen_chars + chars, seen_tokens + tokens)

    def tokens_per_char(self, model: str) -> float:
        seen_chars, seen_tokens = self._seen.get(model) or self._prompts.get(model) or (0, 0)
        return seen_tokens / seen_chars if seen_chars else 1 / DEFAULT_CHARS_PER_TOKEN

    def estimate(self, model: str, chars: int) -> int:
        """Estimated output tokens for ``chars`` streamed characters (at least 1 if any)."""
        if chars <= 0:
            return 0
        return max(1, round(chars * self.tokens_per_char(model)))


@dataclass(slots=True)
class RequestChars:
    """Characters of one request: streamed by the API, and appended to the document."""

    streamed: int = 0
    kept: int = 0
    #: Part of ``streamed`` that was thinking: billed output, neither document nor repeat.
    thinking: int = 0


def request_usage(
    model: str,
    reported: Usage,
    chars: RequestChars,
    *,
    final: bool,
    finished: bool,
    estimator: OutputEstimator,
) -> Usage:
    """The usage to record for one request.

    :param reported: the usage the stream carried (``message_start``, then ``message_delta``).
    :param final: the final usage arrived (a ``message_delta`` with usage).
    :param finished: the request ended normally, so every character not kept was a repeat.
    """
    if final:
        output = reported.output_tokens
        estimated = 0
        estimator.learn(model, chars.streamed, output)
    else:
        estimated = estimator.estimate(model, chars.streamed)
        output = max(estimated, reported.output_tokens if chars.streamed else 0)
    ratio = output / chars.streamed if chars.streamed else 0.0
    document = min(output, round(chars.kept * ratio))
    repeated = (
        min(output - document, round((chars.streamed - chars.thinking - chars.kept) * ratio))
        if finished
        else 0
    )
    return Usage(
        input_tokens=reported.input_tokens,
        output_tokens=output,
        cache_creation_input_tokens=reported.cache_creation_input_tokens,
        cache_read_input_tokens=reported.cache_read_input_tokens,
        estimated_output_tokens=estimated,
        document_tokens=document,
        repeated_tokens=repeated,
    )
