"""The typed config validator: each declared shape accepts what it should and names what it wants."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from worker.config_types import Mismatch, declared_types, describe, from_text, from_toml


@dataclass(frozen=True)
class Sample:
    count: int = 1
    ratio: float = 0.5
    name: str = "x"
    enabled: bool = False
    limit: int | None = None
    tags: tuple[str, ...] = ()


KINDS = declared_types(Sample)


def test_annotations_are_resolved_to_real_types_not_their_text() -> None:
    assert KINDS["count"] is int and KINDS["ratio"] is float
    assert describe(KINDS["limit"]) == "an integer or none"
    assert describe(KINDS["tags"]) == "a list of strings"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("count", 3, 3),
        ("ratio", 2, 2.0),
        ("ratio", 0.25, 0.25),
        ("name", "y", "y"),
        ("enabled", True, True),
        ("limit", 7, 7),
        ("tags", ["a", "b"], ("a", "b")),
    ],
)
def test_toml_values_of_the_declared_type_are_taken(key: str, value: object, expected: object) -> None:
    got = from_toml(KINDS[key], value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "wanted"),
    [
        ("count", True, "an integer"),
        ("count", 1.5, "an integer"),
        ("count", "3", "an integer"),
        ("ratio", False, "a number"),
        ("name", 3, "a string"),
        ("enabled", 1, "true or false"),
        ("limit", "7", "an integer or none"),
        ("tags", ["a", 1], "a list of strings"),
        ("tags", "a", "a list of strings"),
    ],
)
def test_toml_values_of_another_type_are_refused_with_what_was_wanted(
    key: str, value: object, wanted: str
) -> None:
    with pytest.raises(Mismatch) as caught:
        from_toml(KINDS[key], value)
    assert str(caught.value) == wanted


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("count", " 12 ", 12),
        ("ratio", "1e-3", 0.001),
        ("name", " kept as typed ", " kept as typed "),
        ("enabled", "Yes", True),
        ("enabled", "off", False),
        ("limit", "none", None),
        ("limit", "", None),
        ("limit", "40", 40),
        ("tags", "a, b,,c", ("a", "b", "c")),
    ],
)
def test_text_from_the_environment_or_a_flag_is_converted(key: str, raw: str, expected: object) -> None:
    assert from_text(KINDS[key], raw) == expected


@pytest.mark.parametrize(
    ("key", "raw"), [("count", "1.5"), ("ratio", "fast"), ("enabled", "maybe"), ("limit", "x")]
)
def test_text_that_does_not_convert_is_refused(key: str, raw: str) -> None:
    with pytest.raises(Mismatch) as caught:
        from_text(KINDS[key], raw)
    assert str(caught.value) == describe(KINDS[key])


def test_a_shape_it_does_not_know_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        describe(dict[str, int])
