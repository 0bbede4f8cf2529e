"""The token economy of one attempt: caching, budgets and honest usage around each request.

:class:`Attempt` stays about generating text; this object is consulted at three points of each
request: ``prepare`` (place the cache breakpoints, fit ``max_tokens`` into the budgets, size the
limiter's reservation), ``live`` (the usage so far, the request in flight included, read by every
checkpoint) and ``finish`` (the request's usage: the API's, or an estimate for a broken stream).

:class:`Economy` holds what a whole process shares: the price table, the output estimator, what
has been learnt about minimum cacheable lengths, and the run's budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import structlog

from jobs.blocks import estimate_chars
from jobs.costs import PriceTable, format_usd, load_prices
from jobs.models import JobSpec, Usage
from worker.accounting import OutputEstimator, RequestChars, request_usage
from worker.budget import MIN_REQUEST_TOKENS, RunBudget, affordable_max_tokens, worst_case_cost
from worker.caching import MinimumLearner, cache_reads_count_for_itpm, mark_request
from worker.errors import BudgetError
from worker.stream import StreamResult

__all__ = ("Economy", "AttemptEconomy", "RunBudgetSpent")

log = structlog.get_logger("worker.economy")


class RunBudgetSpent(Exception):
    """The run's ``--max-cost`` is spent: the attempt hands its job back to the queue."""


@dataclass(slots=True)
class Economy:
    """Shared by every attempt of one process."""

    prices: PriceTable = field(default_factory=load_prices)
    estimator: OutputEstimator = field(default_factory=OutputEstimator)
    learner: MinimumLearner = field(default_factory=MinimumLearner)
    budget: RunBudget = field(default_factory=RunBudget)
    #: Also cache the document so far, one block per request (see ``worker.caching``).
    cache_checkpoint: bool = False


class AttemptEconomy:
    """One attempt's side of the economy; see the module docstring."""

    def __init__(self, economy: Economy, spec: JobSpec, spent_before: Usage, text: str) -> None:
        self.economy = economy
        self.spec = spec
        self.spent_before = spent_before
        self.ttl = "1h" if spec.prompt_cache == "1h" else "5m"
        #: The document so far, split where each request of this attempt started.
        self.segments = [text] if text else []
        #: The text the request in flight appended, in the pieces it arrived in: joined once at
        #: ``finish``, since growing one string per delta would copy it each time (quadratic).
        self._current: list[str] = []
        self._result: StreamResult | None = None
        self._chars = RequestChars()
        self._marked_prefix = 0
        self._prompt_chars = 0
        self._cached_last = 0
        self._reserved = 0.0

    def cost(self, usage: Usage) -> float | None:
        return self.economy.prices.cost(self.spec.model, usage, self.ttl)

    def prepare(self, params: dict[str, Any], max_tokens: int) -> int:
        """Fit ``params`` for the next request; returns the input tokens the limiter should reserve.

        Raises ``BudgetError`` when the job's cap leaves no room, ``RunBudgetSpent`` when the run's
        does not."""
        model = self.spec.model
        chars = self._prompt_chars = _prompt_chars(params)
        per_char = max(self.economy.estimator.tokens_per_char(model), 0.25)
        prompt_tokens = math.ceil(chars * per_char) + 16
        params["max_tokens"] = self._afford(prompt_tokens, max_tokens)
        if self.spec.prompt_cache != "off":
            system = params.get("system")
            system_tokens = math.ceil(len(system) * per_char) if isinstance(system, str) else 0
            self._marked_prefix = math.ceil(_prefix_chars(params, len(self.spec.messages)) * per_char)
            mark_request(
                params,
                prompt_messages=len(self.spec.messages),
                ttl=self.ttl,
                system_tokens=system_tokens,
                learner=self.economy.learner,
                segments=self.segments if self.economy.cache_checkpoint else None,
            )
        reads_free = not cache_reads_count_for_itpm(model)
        return max(16, prompt_tokens - self._cached_last) if reads_free else prompt_tokens

    def _afford(self, prompt_tokens: int, max_tokens: int) -> int:
        price = self.economy.prices.price(self.spec.model)
        cap = self.spec.max_cost_usd
        budget = self.economy.budget
        if cap is None and budget.cap_usd is None:
            return max_tokens
        if price is None:
            raise BudgetError(
                f"budget: no price for model {self.spec.model!r}, so a cost cap cannot be kept "
                "(add the model to a [costs] prices_file)"
            )
        if cap is not None:
            spent = price.cost(self.spent_before, self.ttl)
            fits = affordable_max_tokens(price, prompt_tokens, cap - spent)
            if fits < MIN_REQUEST_TOKENS:
                raise BudgetError(
                    f"budget: spent {format_usd(spent)} of max_cost_usd {format_usd(cap)}; "
                    "the next request could cost more than is left"
                )
            max_tokens = min(max_tokens, fits)
        run_left = budget.left_usd
        if run_left is not None:
            run_fits = affordable_max_tokens(price, prompt_tokens, run_left)
            if run_fits < MIN_REQUEST_TOKENS:
                budget.reached = True
                raise RunBudgetSpent(f"the run's cost cap is reached ({format_usd(budget.spent_usd)} spent)")
            max_tokens = min(max_tokens, run_fits)
            self._reserved = worst_case_cost(price, prompt_tokens, max_tokens)
            budget.reserve(self._reserved)
        return max_tokens

    def release(self) -> None:
        """Give back a reservation no request used (the attempt ended before sending it)."""
        if self._reserved:
            self.economy.budget.settle(self._reserved, 0.0)
            self._reserved = 0.0

    def begin(self, result: StreamResult) -> RequestChars:
        """A request starts; ``result`` fills in as it streams (read by ``live``)."""
        self._result, self._chars = result, RequestChars()
        self._current = []
        return self._chars

    def kept(self, text: str) -> None:
        """Text the request in flight appended to the document."""
        self._chars.kept += len(text)
        self._current.append(text)

    def live(self, so_far: Usage) -> Usage:
        """``so_far`` plus the request in flight, its output estimated from what has streamed."""
        result = self._result
        if result is None:
            return so_far
        self._learn_prompt(result)
        self._chars.streamed = result.chars
        self._chars.thinking = result.thinking_chars
        estimator = self.economy.estimator
        usage = request_usage(
            self.spec.model, result.usage, self._chars, final=False, finished=False, estimator=estimator
        )
        return so_far + usage

    def finish(self, *, finished: bool) -> Usage:
        """The request ended (well or not): its usage, counted against the budgets."""
        result, chars = self._result, self._chars
        assert result is not None, "finish() without begin()"
        self._result = None
        if segment := "".join(self._current):
            self.segments.append(segment)
        self._current = []
        chars.streamed = result.chars
        chars.thinking = result.thinking_chars
        self._learn_prompt(result)
        usage = request_usage(
            self.spec.model,
            result.usage,
            chars,
            final=result.final_usage,
            finished=finished,
            estimator=self.economy.estimator,
        )
        if usage.estimated_output_tokens:
            log.info("usage_estimated", chars=chars.streamed, output_tokens=usage.estimated_output_tokens)
        if self.spec.prompt_cache != "off" and usage.prompt_tokens:
            self.economy.learner.learn(self.spec.model, self._marked_prefix, usage)
        self._cached_last = usage.cache_read_input_tokens + usage.cache_creation_input_tokens
        self.spent_before = self.spent_before + usage
        cost = self.cost(usage)
        self.economy.budget.settle(self._reserved, cost or 0.0)
        self._reserved = 0.0
        return usage

    def _learn_prompt(self, result: StreamResult) -> None:
        """Once per request, as soon as ``message_start`` told the prompt's size in tokens."""
        if self._prompt_chars and result.usage.prompt_tokens:
            self.economy.estimator.learn_prompt(
                self.spec.model, self._prompt_chars, result.usage.prompt_tokens
            )
            self._prompt_chars = 0


def _prompt_chars(params: dict[str, Any]) -> int:
    """The prompt's size in characters; blocks count as ``jobs.blocks.estimate_chars`` says."""
    chars = len(params.get("system") or "")
    for message in params["messages"]:
        chars += estimate_chars(message["content"])
    return chars


def _prefix_chars(params: dict[str, Any], prompt_messages: int) -> int:
    """Characters of the stable prefix: the system prompt and the job's own prompt."""
    chars = len(params.get("system") or "")
    for message in params["messages"][:prompt_messages]:
        chars += estimate_chars(message["content"])
    return chars
