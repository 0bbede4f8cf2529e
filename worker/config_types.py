"""Config values checked and converted by the type each setting declares.

``worker.config`` declares every setting as a typed dataclass field; this module reads the real
type (``typing.get_type_hints``, not the annotation's text, which ``from __future__ import
annotations`` turns into a string) and turns a TOML value, or the text of an environment variable
or flag, into it. It knows the shapes settings take: ``int``, ``float`` (an integer is accepted),
``str``, ``bool``, ``X | None`` and ``tuple[str, ...]``. A value that does not fit raises
:class:`Mismatch` with the phrase the caller puts after "must be".

Why not pydantic or cattrs: the whole job is a dozen lines per shape, the messages must name the
key and where it came from (file, variable, flag) in our own words, and the command line must not
pay a large import at start-up for a handful of settings.
"""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin, get_type_hints

__all__ = ("Mismatch", "declared_types", "describe", "from_toml", "from_text", "is_number")

#: Text that means "no value" for an optional setting given in an environment variable or flag.
NONE_TEXT = frozenset({"", "none"})
_TRUE_TEXT = frozenset({"1", "true", "yes", "on"})
_FALSE_TEXT = frozenset({"0", "false", "no", "off"})


class Mismatch(ValueError):
    """The value does not have the declared type; ``str(exc)`` completes "must be …"."""


_DECLARED: dict[type, dict[str, Any]] = {}


def declared_types(cls: type) -> dict[str, Any]:
    """Field name → the real type it declares (annotations resolved once per class)."""
    if cls not in _DECLARED:
        _DECLARED[cls] = get_type_hints(cls)
    return _DECLARED[cls]


def _optional_inner(kind: Any) -> Any | None:
    """``X`` for ``X | None`` (or ``Optional[X]``); None for any other type."""
    if get_origin(kind) in (Union, types.UnionType):
        rest = [arg for arg in get_args(kind) if arg is not type(None)]
        if len(rest) == 1 and len(get_args(kind)) == 2:
            return rest[0]
    return None


def _is_str_tuple(kind: Any) -> bool:
    return get_origin(kind) is tuple and get_args(kind) == (str, ...)


def describe(kind: Any) -> str:
    """How a value of ``kind`` is described after "must be"."""
    inner = _optional_inner(kind)
    if inner is not None:
        return f"{describe(inner)} or none"
    if _is_str_tuple(kind):
        return "a list of strings"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if kind in names:
        return names[kind]
    raise TypeError(f"no config shape for type {kind!r}")


def is_number(value: object) -> bool:
    """An int or float that is not a bool (TOML's ``true`` is no number)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def from_toml(kind: Any, value: Any) -> Any:
    """``value`` as read by tomllib, checked against ``kind`` (an int becomes a float where a float
    is declared); raises :class:`Mismatch`."""
    inner = _optional_inner(kind)
    if inner is not None:
        try:
            return from_toml(inner, value)  # TOML has no null: a missing key keeps the default
        except Mismatch:
            raise Mismatch(describe(kind)) from None
    if _is_str_tuple(kind):
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is float:
        if is_number(value):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"no config shape for type {kind!r}")
    raise Mismatch(describe(kind))


def from_text(kind: Any, raw: str) -> Any:
    """The text of an environment variable or flag as a value of ``kind``; raises
    :class:`Mismatch`. Lists are comma-separated; ``none`` (or nothing) clears an optional one."""
    inner = _optional_inner(kind)
    if inner is not None:
        if raw.strip().lower() in NONE_TEXT:
            return None
        try:
            return from_text(inner, raw)
        except Mismatch:
            raise Mismatch(describe(kind)) from None
    if _is_str_tuple(kind):
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if kind is str:
        return raw
    text = raw.strip().lower()
    if kind is bool:
        if text in _TRUE_TEXT | _FALSE_TEXT:
            return text in _TRUE_TEXT
        raise Mismatch(describe(kind))
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise Mismatch(describe(kind)) from None
    raise TypeError(f"no config shape for type {kind!r}")
