"""Model classes: which rate-limit buckets a model's requests draw on. Pure.

The API sets its rate limits per model class (../shared/ANTHROPIC.md §5): Opus, Sonnet and Haiku
each have their own requests, input and output tokens per minute. ``[rate_limits]`` says so with a
table per class, each matching model ids by glob patterns (``claude-opus-*``); the top-level
values are the default class, for every model no class matches. The first class (in the order
written) whose pattern matches a model wins.

Each class has its own bucket row in the store (:func:`bucket_key`), so the fleet shares one set
of buckets per class, and a full or paused class never holds up another. Globs are matched with
:func:`fnmatch.fnmatchcase` (case-sensitive, as model ids are): no own pattern language.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from jobs.buckets import Limits

__all__ = ("DEFAULT_CLASS", "ModelClass", "RateClasses", "bucket_key", "valid_class_name")

#: The name of the class the top-level ``[rate_limits]`` values describe.
DEFAULT_CLASS = "default"
#: The store's bucket key of the default class (as it was before there were classes).
_BASE_KEY = "anthropic"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def valid_class_name(name: str) -> bool:
    """Lower-case letters, digits, ``-`` and ``_`` (it becomes part of a store key and a label)."""
    return bool(_NAME.match(name)) and name != DEFAULT_CLASS


def bucket_key(name: str) -> str:
    """The store key of a class's buckets; the default class keeps the key it always had."""
    return _BASE_KEY if name == DEFAULT_CLASS else f"{_BASE_KEY}:{name}"


@dataclass(frozen=True, slots=True)
class ModelClass:
    name: str
    #: Glob patterns over model ids; a model matching any of them is in the class.
    patterns: tuple[str, ...]
    limits: Limits

    def matches(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.patterns)


@dataclass(frozen=True, slots=True)
class RateClasses:
    """The default limits and the named classes, in the order they are matched."""

    default: Limits
    classes: tuple[ModelClass, ...] = ()

    def class_of(self, model: str) -> str:
        for cls in self.classes:
            if cls.matches(model):
                return cls.name
        return DEFAULT_CLASS

    def limits_of(self, name: str) -> Limits:
        for cls in self.classes:
            if cls.name == name:
                return cls.limits
        return self.default

    @property
    def names(self) -> tuple[str, ...]:
        return (*(cls.name for cls in self.classes), DEFAULT_CLASS)

    @property
    def unlimited(self) -> bool:
        return self.default.unlimited and all(cls.limits.unlimited for cls in self.classes)

    def group(self, models: Sequence[str]) -> dict[str, list[str]]:
        """``models`` by the class each belongs to (classes with none left out)."""
        grouped: dict[str, list[str]] = {}
        for model in models:
            grouped.setdefault(self.class_of(model), []).append(model)
        return grouped
