"""One attempt at one job: the requests that extend its document until it is done or fails.

An attempt starts from the committed text (empty for a fresh job) and makes requests until the
model ends its turn:

* a stream that stops at ``max_tokens`` is continued, as long as the job's total output budget
  allows, so that a long document comes out as one seamless text;
* a model that rejects prefill is switched to a continuation turn and remembered;
* any other failure ends the attempt; ``worker.retry`` decides whether the job is retried (back to
  the queue with a backoff, resuming from its checkpoint) or failed.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import anyio
import structlog

from jobs.models import (
    STOP_SEQUENCE,
    TRUNCATED,
    AttemptResult,
    Claim,
    Outcome,
    ResumeMode,
    Usage,
    WriteStatus,
    stop_sequence_reason,
)
from jobs.store import Store
from worker.admission import Limiter, Unlimited
from worker.checkpoint import CheckpointWriter, JobText
from worker.economy import AttemptEconomy, Economy, RunBudgetSpent
from worker.errors import DeadlineError, RefusalError
from worker.nonstream import nonstream_max_tokens, nonstream_request
from worker.policy import Verdict, judge
from worker.recorder import Recorder, RequestFacts
from worker.request_options import request_options, thinks
from worker.resume import Joiner, build_messages, supports_prefill
from worker.retry import RequestTimeoutError, backoff_delay, is_prefill_rejection
from worker.stream import StreamResult, stream_request

__all__ = ("AttemptSettings", "Attempt")

log = structlog.get_logger("worker.attempt")

#: Stop reasons after which the document is complete as far as the model is concerned.
_FINISHED = frozenset(
    {"end_turn", "stop_sequence", "pause_turn", "tool_use", "model_context_window_exceeded"}
)


@dataclass(frozen=True, slots=True)
class AttemptSettings:
    idle_timeout: float = 60.0
    #: The longest one request may run, whatever it streams (None = no limit).
    request_timeout: float | None = None
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 120.0
    #: After this many failed attempts, a job continues with non-streaming requests (0 = never);
    #: see ``worker.nonstream``.
    nonstream_after: int = 0
    #: Characters of thinking a job keeps beside its document (``Store.save_thinking``).
    thinking_max_chars: int = 200_000


#: How long a request's thinking may take to save once the request ended (shielded).
THINKING_SAVE_SECONDS = 10.0

#: The key of ``Attempt.joins`` that counts an attempt's non-streaming requests (kept with the
#: join rules, so that the attempt's history records which way its text came).
NONSTREAMING = "nonstreaming"


class Attempt:
    """Runs one claimed attempt; ``run`` never raises except for cancellation."""

    def __init__(
        self,
        claim: Claim,
        text: JobText,
        *,
        client: anthropic.AsyncAnthropic,
        writer: CheckpointWriter,
        settings: AttemptSettings,
        no_prefill: set[str],
        limiter: Limiter | None = None,
        rand: Callable[[], float] = random.random,
        economy: Economy | None = None,
        recorder: Recorder | None = None,
        store: Store | None = None,
    ) -> None:
        self.claim = claim
        self.spec = claim.job.spec
        self.text = text
        self.client = client
        self.writer = writer
        self.settings = settings
        self.no_prefill = no_prefill
        self.limiter: Limiter = limiter or Unlimited()
        self.rand = rand
        self.recorder = recorder or Recorder()
        #: Where each request's thinking is kept (None: not kept, only counted).
        self.store = store
        self.usage = Usage()
        self.requests = 0
        self.first_mode: ResumeMode | None = None
        self.time_to_first_token: float | None = None
        self.stop_reason: str | None = None
        #: The stop sequence that ended the last request, if one did.
        self.stop_sequence: str | None = None
        #: Characters of thinking streamed in this attempt (never part of the document).
        self.thinking_chars = 0
        #: The failure policy's verdict on how the attempt ended (None if it did not fail); the pool
        #: reads it to pause, to stop on account errors, and to spare the job an attempt.
        self.verdict: Verdict | None = None
        #: Which rule placed each resume's join (``worker.join.JoinRule``), plus "uncertain".
        self.joins: Counter[str] = Counter()
        self.economy = AttemptEconomy(economy or Economy(), self.spec, claim.job.usage, claim.text)
        after = settings.nonstream_after
        #: This attempt's requests do not stream: the job's streams failed ``nonstream_after`` times.
        self.nonstreaming = after > 0 and claim.job.failures >= after
        text.usage_fn = lambda: self.economy.live(self.usage)

    def result(
        self, outcome: Outcome, *, error: str | None = None, retry_at: float | None = None
    ) -> AttemptResult:
        return AttemptResult(
            outcome=outcome,
            usage=self.usage,
            requests=self.requests,
            resume_mode=self.first_mode or ResumeMode.FRESH,
            stop_reason=self.stop_reason,
            error=error,
            retry_at=retry_at,
            time_to_first_token=self.time_to_first_token,
            joins=tuple(sorted(self.joins.items())),
        )

    async def run(self) -> AttemptResult:
        try:
            await self._generate()
        except RunBudgetSpent as exc:
            log.warning("run_budget_spent", error=str(exc))
            return self.result(Outcome.RELEASED, error=str(exc))
        except Exception as exc:
            return self._failed(exc)
        finally:
            self.economy.release()
        return self.result(Outcome.SUCCEEDED)

    def _failed(self, exc: Exception) -> AttemptResult:
        decision = self.verdict = judge(exc)
        if not decision.retryable:
            log.warning(
                "attempt_failed", kind=decision.kind, error=decision.reason, retryable=False, scope="job"
            )
            return self.result(Outcome.FAILED, error=decision.reason)
        failures = self.claim.job.failures + 1
        delay = backoff_delay(
            failures,
            base=self.settings.backoff_base,
            cap=self.settings.backoff_max,
            retry_after=decision.retry_after,
            retry_after_max=self.settings.retry_after_max,
            rand=self.rand,
        )
        log.info(
            "attempt_failed",
            kind=decision.kind,
            error=decision.reason,
            retryable=True,
            scope=str(decision.scope),
            retry_in=round(delay, 3),
        )
        return self.result(Outcome.RETRY, error=decision.reason, retry_at=time.time() + delay)

    def _continues(self) -> bool:
        """Whether this job resumes by a continuation turn (and so commits whole words only):
        its model rejects prefill, or it thinks (the API allows no prefill with thinking)."""
        model = self.spec.model
        return model in self.no_prefill or not supports_prefill(model) or thinks(self.spec)

    def _mode(self, text: str) -> ResumeMode:
        if not text:
            return ResumeMode.FRESH
        return ResumeMode.CONTINUATION if self._continues() else ResumeMode.PREFILL

    async def _generate(self) -> None:
        spec = self.spec
        already_spent = self.claim.job.usage.output_tokens
        while True:
            self._check_deadline()
            budget_left = spec.output_budget - already_spent - self.usage.output_tokens
            if budget_left <= 0:
                log.warning("output_budget_exhausted", output_budget=spec.output_budget)
                self.stop_reason = TRUNCATED
                return
            text = self.text.text()
            mode = self._mode(text)
            if self.first_mode is None:
                self.first_mode = mode
            params, carry = self._request_params(text, mode, budget_left)
            reserve = self.economy.prepare(params, int(params["max_tokens"]))
            params.update(request_options(spec, int(params["max_tokens"])))
            try:
                joiner = Joiner(mode, text, carry, safe_commits=self._continues())
                stop = await self._request(params, joiner, reserve)
            except anthropic.BadRequestError as exc:
                if mode is ResumeMode.PREFILL and is_prefill_rejection(exc):
                    log.info("prefill_rejected", model=spec.model)
                    self.no_prefill.add(spec.model)
                    self.first_mode = None if self.requests == 1 else self.first_mode
                    continue
                raise
            if not self._continues_after(stop):
                return

    def _request_params(self, text: str, mode: ResumeMode, budget_left: int) -> tuple[dict[str, Any], str]:
        """The next request's model, ``max_tokens`` (within the budget, the output bucket and the
        non-streaming guard), messages and system prompt; and the text the joiner carries."""
        spec = self.spec
        messages, carry = build_messages(spec, text, mode)
        max_tokens = min(spec.max_tokens, budget_left, self.limiter.max_output_tokens or budget_left)
        if self.nonstreaming:
            max_tokens = min(max_tokens, nonstream_max_tokens(spec.model))
        params: dict[str, Any] = {"model": spec.model, "max_tokens": max_tokens, "messages": messages}
        if spec.system is not None:
            params["system"] = spec.system
        log.debug(
            "request_sent",
            model=spec.model,
            max_tokens=max_tokens,
            resume_mode=str(mode),
            messages=len(messages),
            chars_so_far=len(text),
        )
        return params, carry

    def _continues_after(self, stop: str | None) -> bool:
        """Record how a request stopped; True when the document goes on with another request."""
        self.stop_reason = stop
        if stop == STOP_SEQUENCE:
            self.stop_reason = stop_sequence_reason(self.stop_sequence)
            return False  # the document ends at its stop sequence: finished, not continued
        if stop == "refusal":
            raise RefusalError(
                f"the model refused (stop_reason refusal) after {self.text.length()} characters"
            )
        if stop == "max_tokens":
            return True  # long-form: continue the same document until the model ends its turn
        if stop is not None and stop not in _FINISHED:
            log.warning("unknown_stop_reason", stop_reason=stop)
        return False

    def _check_deadline(self) -> None:
        """A job past its deadline fails (reason ``deadline``) before another request; its text stays."""
        deadline = self.spec.deadline
        if deadline is not None and time.time() >= deadline:
            raise DeadlineError(f"deadline: the job's deadline passed after {self.text.length()} characters")

    def _time_limit(self) -> float | None:
        """When (anyio clock) this request must end: the request limit, or the job's deadline."""
        limits = []
        if self.settings.request_timeout is not None:
            limits.append(self.settings.request_timeout)
        if self.spec.deadline is not None:
            limits.append(max(0.0, self.spec.deadline - time.time()))
        return anyio.current_time() + min(limits) if limits else None

    async def _request(self, params: dict[str, Any], joiner: Joiner, reserve: int) -> str | None:
        """One request; returns its stop reason. Its usage is counted even if it fails (estimated
        from the streamed text when the stream broke: ``worker.accounting``)."""
        writer, job, economy = self.writer, self.text, self.economy
        result = StreamResult()
        thoughts: list[str] = []
        ticket = await self.limiter.acquire(reserve, int(params["max_tokens"]))
        self.requests += 1
        job.requests = self.requests
        error: BaseException | None = None

        def append(text: str) -> None:
            if text:
                economy.kept(text)
                writer.add(job, text)

        economy.begin(result)
        self.recorder.stream_started()
        sent = anyio.current_time()
        limit = self._time_limit()
        try:
            with anyio.CancelScope(deadline=math.inf if limit is None else limit) as scope:
                await self._send(
                    params, lambda delta: append(joiner.feed(delta)), ticket, result, thoughts.append
                )
            if scope.cancelled_caught:
                self._check_deadline()
                raise RequestTimeoutError(
                    f"the request ran past request_timeout {self.settings.request_timeout:g} s"
                )
            self.stop_sequence = result.stop_sequence
            append(joiner.finish(complete=result.stop_reason != "max_tokens"))
            if self.nonstreaming:
                self.joins[NONSTREAMING] += 1
                await writer.flush(job)  # each whole message is a checkpoint of its own
        except BaseException as exc:
            error = exc
            raise
        finally:
            if joiner.join is not None:
                self.joins[str(joiner.join.rule)] += 1
                if joiner.join.uncertain:
                    self.joins["uncertain"] += 1
            self.thinking_chars += result.thinking_chars
            await self._keep_thinking("".join(thoughts))
            usage = economy.finish(finished=error is None)
            self.usage = self.usage + usage
            self._record(usage, result, anyio.current_time() - sent, error)
            if self.time_to_first_token is None:
                self.time_to_first_token = result.time_to_first_token
            with anyio.CancelScope(shield=True):
                await self.limiter.release(ticket, usage, result.headers, error)
        return result.stop_reason

    async def _keep_thinking(self, thinking: str) -> None:
        """Keep this request's thinking beside the job, shielded and fenced like a checkpoint. A
        request that broke keeps the thinking it streamed before the break; a store that fails
        here loses only this thinking (the document and the attempt go on)."""
        if not thinking or self.store is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(THINKING_SAVE_SECONDS):
            try:
                status = await self.store.save_thinking(
                    self.claim.job.id,
                    self.claim.token,
                    self.requests,
                    thinking,
                    self.settings.thinking_max_chars,
                )
            except Exception as exc:
                log.warning("thinking_not_kept", error=str(exc), chars=len(thinking))
                return
            if status is not WriteStatus.OK:
                log.info("thinking_not_kept", reason=str(status), chars=len(thinking))

    async def _send(
        self,
        params: dict[str, Any],
        on_text: Callable[[str], None],
        ticket: Any,
        result: StreamResult,
        on_thinking: Callable[[str], None] | None = None,
    ) -> None:
        """One request, streamed or (for a job whose streams keep failing) not."""
        on_response = lambda headers: self.limiter.started(ticket, headers)  # noqa: E731
        if self.nonstreaming:
            await nonstream_request(
                self.client, params, on_text=on_text, on_response=on_response, result=result
            )
            return
        await stream_request(
            self.client,
            params,
            idle_timeout=self.settings.idle_timeout,
            on_text=on_text,
            on_response=on_response,
            result=result,
            on_thinking=on_thinking,
        )

    def _record(
        self, usage: Usage, result: StreamResult, seconds: float, error: BaseException | None
    ) -> None:
        """One call per request to the process's recorder (a no-op unless metrics are on)."""
        recorder = self.recorder
        if not recorder.enabled:
            return
        ttft = result.time_to_first_token
        recorder.request_ended(
            RequestFacts(self.spec.model, usage, seconds=seconds, time_to_first_token=ttft, error=error)
        )
