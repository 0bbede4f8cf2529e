"""The simulator's continuation behaviours: each echo is what its name says, seeded."""

from __future__ import annotations

import random
import re

import pytest

from worker.simulator.continuation import MIXED, PREAMBLES, Echo, EchoSpec, draw_echo, requested_anchor
from worker.simulator.text import parse_directives

TEXT = "# Notes\n\nThe river ran past the mill. It turned west and the\n- first item on the gran"


def only(kind: Echo) -> EchoSpec:
    return EchoSpec(((kind, 1.0),))


@pytest.mark.parametrize(
    ("kind", "echo"),
    [
        (Echo.SPLIT, "gran"),
        (Echo.LINE, "- first item on the gran"),
        (Echo.MARKER, "- "),
        (Echo.HEADING, "# Notes\n\n"),
        (Echo.CLEAN, ""),
    ],
)
def test_each_behaviour_echoes_what_it_says(kind: Echo, echo: str) -> None:
    assert draw_echo(random.Random(1), only(kind), TEXT) == (kind, echo)


def test_sentence_restart_starts_after_the_last_sentence_end() -> None:
    text = "It was late. The river ran past the "
    assert draw_echo(random.Random(1), only(Echo.SENTENCE), text) == (
        Echo.SENTENCE,
        "The river ran past the ",
    )


def test_short_and_long_repeats_are_suffixes_of_the_text() -> None:
    for seed in range(50):
        for kind, low, high in ((Echo.SHORT, 1, 2), (Echo.REPEAT, 3, 40)):
            _, echo = draw_echo(random.Random(seed), only(kind), TEXT * 3)
            assert (TEXT * 3).endswith(echo) and low <= len(re.findall(r"\w+", echo)) <= high


def test_a_preamble_precedes_another_behaviour() -> None:
    spec = EchoSpec(((Echo.PREAMBLE, 1.0), (Echo.SPLIT, 1.0)))
    kind, echo = draw_echo(random.Random(3), spec, TEXT)
    line, _, rest = echo.partition("\n")
    assert kind is Echo.PREAMBLE and line in PREAMBLES and rest.lstrip("\n") == "gran"


def test_the_anchor_is_only_repeated_when_it_really_ends_the_text() -> None:
    assert requested_anchor("go <last_words>on the gran</last_words>", TEXT) == "on the gran"
    assert requested_anchor("go <last_words>not there</last_words>", TEXT) == ""
    assert draw_echo(random.Random(1), only(Echo.ANCHOR), TEXT, "on the gran") == (Echo.ANCHOR, "on the gran")
    assert draw_echo(random.Random(1), only(Echo.ANCHOR), TEXT) == (Echo.CLEAN, "")


def test_the_mix_is_seeded_and_varied() -> None:
    draws = [draw_echo(random.Random(seed), MIXED, TEXT * 5, "on the gran")[0] for seed in range(400)]
    assert draws == [draw_echo(random.Random(seed), MIXED, TEXT * 5, "on the gran")[0] for seed in range(400)]
    assert len(set(draws)) >= 8


def test_directives_name_a_bad_echo_or_style() -> None:
    assert parse_directives("[sim:echo=repeat:2] [sim:style=rich]").echo == "repeat:2"
    with pytest.raises(ValueError, match="bad entry"):
        parse_directives("[sim:echo=sometimes]")
    with pytest.raises(ValueError, match=r"\[sim:style\] must be prose or rich"):
        parse_directives("[sim:style=fancy]")
