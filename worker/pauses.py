"""What the pool does with the failure policy's verdicts: pause, spare the job, or stop the run.

Kept apart from ``worker.pool`` (which claims and settles) so the rules read in one place:

* **Weather** (429/529): claims pause for a backoff that grows over the spell (and the server's
  ``retry-after``); the job goes back to the queue uncharged until the spell has lasted longer than
  ``overload_patience`` seconds, after which attempts are counted again. A success, or any output,
  ends the spell. Under ``[rate_limits]`` the fleet limiter also pauses the whole fleet. With
  rate-limit classes (``worker.class_limits``) each class has its own spell and pause (``key``):
  a 429 from Opus never stops the pool from claiming Haiku jobs.
* **Account** (401/402/403): confirmed by one cheap request (the models list); confirmed, the run
  stops with :class:`~worker.errors.AccountError` and the job is released uncharged; if the key
  works after all, the failure is an ordinary attempt failure.
* **Infrastructure** (store outage, disk full): the job is released uncharged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import anthropic
import anyio
import structlog

from jobs.errors import PoolError
from jobs.models import AttemptResult, Outcome
from worker.attempt import AttemptSettings
from worker.errors import AccountError
from worker.policy import Scope, Spell, Verdict, judge, settle_outcome
from worker.retry import backoff_delay

__all__ = ("Pauses",)

log = structlog.get_logger("worker.pauses")

#: How long the confirming request may take.
_PROBE_SECONDS = 10.0


@dataclass(slots=True)
class _Weather:
    """One overload spell: since when, how many hits (the backoff), and the pause it set."""

    spell: Spell = field(default_factory=Spell)
    hits: int = 0
    paused_until: float = 0.0

    def clear(self) -> None:
        self.spell, self.hits = self.spell.clear(), 0


class Pauses:
    """One pool's pause state: the overload spell, and whether the account was confirmed bad."""

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        attempt: AttemptSettings,
        *,
        overload_patience: float,
        halt: Callable[[PoolError], None],
    ) -> None:
        self._client = client
        self._attempt = attempt
        self._patience = overload_patience
        self._halt = halt
        self._weather: dict[str, _Weather] = {}
        self._probe_lock = anyio.Lock()
        self._account_ok = False
        self._stopped = False
        #: Attempts re-queued without being charged.
        self.spared = 0

    def paused_for(self, key: str = "") -> float:
        """Seconds left of the overload pause of ``key`` (a rate-limit class; "": the pool)."""
        weather = self._weather.get(key)
        return 0.0 if weather is None else max(0.0, weather.paused_until - anyio.current_time())

    async def wait_out_weather(self, key: str = "") -> None:
        """Sleep until an overload pause ends (no new claims meanwhile)."""
        delay = self.paused_for(key)
        if delay > 0:
            log.info(
                "worker_paused",
                reason="overloaded or rate limited",
                seconds=round(delay, 3),
                spell_seconds=round(self._weather[key].spell.lasted(anyio.current_time()), 1),
                **({"rate_class": key} if key else {}),
            )
            await anyio.sleep(delay)

    async def apply(self, verdict: Verdict | None, result: AttemptResult, key: str = "") -> AttemptResult:
        """How the attempt that ended with ``verdict`` (None: it did not fail) is recorded;
        ``key`` names the rate-limit class whose weather it was."""
        weather = self._weather.setdefault(key, _Weather())
        if verdict is None or verdict.scope is Scope.JOB:
            if result.outcome is Outcome.SUCCEEDED or result.usage.output_tokens:
                weather.clear()
            return result
        if verdict.weather:
            return self._weathered(verdict, result, weather)
        if verdict.stop and not await self._account_confirmed(verdict):
            verdict = replace(verdict, scope=Scope.ATTEMPT, stop=False)  # the key works: charge it
        return self._recorded(verdict, result, patience_left=True)

    def _recorded(self, verdict: Verdict, result: AttemptResult, *, patience_left: bool) -> AttemptResult:
        outcome = settle_outcome(verdict, patience_left=patience_left)
        if outcome is Outcome.RELEASED:
            self.spared += 1
        return replace(result, outcome=outcome)

    def _weathered(self, verdict: Verdict, result: AttemptResult, weather: _Weather) -> AttemptResult:
        now = anyio.current_time()
        if result.usage.output_tokens:
            # The stream got going before the overload hit: the service is working, so the spell
            # (and the backoff) start again from here.
            weather.clear()
        weather.spell = weather.spell.hit(now)
        weather.hits = min(weather.hits + 1, 32)  # the backoff is capped long before 2**32
        delay = backoff_delay(
            weather.hits,
            base=self._attempt.backoff_base,
            cap=self._attempt.backoff_max,
            retry_after=verdict.retry_after,
            retry_after_max=self._attempt.retry_after_max,
        )
        weather.paused_until = max(weather.paused_until, now + delay)
        patience_left = not weather.spell.exceeded(now, self._patience)
        recorded = self._recorded(verdict, result, patience_left=patience_left)
        return replace(recorded, retry_at=time.time() + delay)

    async def _account_confirmed(self, verdict: Verdict) -> bool:
        """True if a second, cheap request is refused the same way (the run then stops), or cannot
        be made; False if the key works after all."""
        async with self._probe_lock:
            if self._stopped:
                return True
            if self._account_ok:
                return False
            try:
                with anyio.fail_after(_PROBE_SECONDS):
                    await self._client.models.list(limit=1)
            except Exception as exc:
                again = judge(exc)
                if again.scope is Scope.ACCOUNT and again.stop:
                    self._stopped = True
                    log.error("account_refused", kind=verdict.kind, error=verdict.reason)
                    self._halt(AccountError(verdict.reason))
                return True  # confirmed, or unreachable just now: do not charge the job
            self._account_ok = True
            return False
