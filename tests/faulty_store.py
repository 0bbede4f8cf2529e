"""A fault-injecting wrapper around any store: fail the Nth call of a method, or every call for a
while. Used by the pool tests and the contract suite to prove that a store blip or outage loses
nothing and fails no job.

The wrapper raises ``StoreError`` *instead of* calling the wrapped store (the call never reached
it), or, with ``after=True``, *after* the call went through (a commit whose answer was lost).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import anyio

from jobs.errors import StoreError
from jobs.store import Store

__all__ = ("FaultyStore", "Fault")


@dataclass(frozen=True, slots=True)
class Fault:
    method: str | None
    #: Fail the ``nth`` call of ``method`` (1-based; counted per method), or every call when None.
    nth: int | None
    after: bool = False


class FaultyStore:
    """Delegates to ``inner``; ``store`` is the same object typed as a ``Store``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._faults: list[Fault] = []
        self._down_until = 0.0
        self._down_methods: frozenset[str] | None = None
        self._down = False

    @property
    def store(self) -> Store:
        return cast(Store, self)

    def fail_nth(self, method: str, nth: int, *, after: bool = False) -> None:
        """The ``nth`` call of ``method`` from now fails (once)."""
        self._faults.append(Fault(method, self.calls[method] + nth, after))

    def fail_for(self, seconds: float, methods: set[str] | None = None) -> None:
        """Every call (of ``methods``, or all but ``close``) fails for ``seconds`` from now."""
        self._down_until = anyio.current_time() + seconds
        self._down_methods = frozenset(methods) if methods is not None else None

    def go_down(self, methods: set[str] | None = None) -> None:
        """Every call fails until ``come_back``: an outage the test ends when it chooses."""
        self._down = True
        self._down_methods = frozenset(methods) if methods is not None else None

    def come_back(self) -> None:
        self._down = False
        self._down_until = 0.0

    def _is_down(self, name: str) -> bool:
        if name == "close" or (self._down_methods is not None and name not in self._down_methods):
            return False
        return self._down or anyio.current_time() < self._down_until

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target) or name.startswith("_"):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            number = self.calls[name]
            fault = next((f for f in self._faults if f.method == name and f.nth == number), None)
            if self._is_down(name) or (fault is not None and not fault.after):
                self.injected[name] += 1
                raise StoreError(f"injected store fault in {name}")
            result = await target(*args, **kwargs)
            if fault is not None:
                self.injected[name] += 1
                raise StoreError(f"injected store fault after {name}")
            return result

        return call
