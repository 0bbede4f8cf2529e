"""The continuation join over the simulator's behaviour mix: property tests of the pure rules.

Documents are the simulator's own (``[sim:style=rich]``: doubled words, refrains, tables, code,
accents, CJK, as well as plain prose); the committed text ends where the worker's safe-commit gate
would have left it; the reply is what the simulator's model writes for each behaviour; the deltas
are cut anywhere. The joined text must equal the document.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.models import ResumeMode
from worker.join import JoinRule, clean_after, decide, safe_cut
from worker.resume import Joiner, anchor_for
from worker.simulator.continuation import Echo, EchoSpec, draw_echo, parse_echo
from worker.simulator.text import expected_document

DOCS = [
    expected_document(None, f"Joins property document {i}. [sim:tokens=1500] [sim:style={style}]")
    for i, style in enumerate(["rich", "rich", "rich", "prose"])
]
KINDS = [kind for kind in Echo if kind is not Echo.PREAMBLE]


def committed_at(doc: str, point: int) -> int:
    """Where the safe-commit gate would have left the text when a stream died at ``point``."""
    for back in (300, 1200, 4800):
        start = max(1, point - back)
        cut = safe_cut(doc[:start], doc[start:point], tries=400)
        if cut:
            return start + cut
    return 0


def join_through(committed: str, reply: str, cuts: list[int]) -> str:
    joiner = Joiner(ResumeMode.CONTINUATION, committed, safe_commits=True)
    out, i = [], 0
    for cut in cuts:
        out.append(joiner.feed(reply[i : i + cut]))
        i += cut
    out.append(joiner.feed(reply[i:]))
    return "".join(out) + joiner.finish()


@settings(max_examples=150, derandomize=True, deadline=None)
@given(
    doc=st.sampled_from(DOCS),
    where=st.floats(min_value=0.05, max_value=0.8),
    kind=st.sampled_from(KINDS),
    preamble=st.booleans(),
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.integers(min_value=1, max_value=30), max_size=40),
)
def test_every_behaviour_joins_exactly(
    doc: str, where: float, kind: Echo, preamble: bool, seed: int, cuts: list[int]
) -> None:
    cut = committed_at(doc, int(len(doc) * where))
    committed, truth = doc[:cut], doc[cut : cut + 900]
    spec = EchoSpec(((Echo.PREAMBLE, 1.0), (kind, 1.0)) if preamble else ((kind, 1.0),))
    anchor = anchor_for(committed)
    _, echo = draw_echo(random.Random(seed), spec, committed, anchor)
    assert committed + join_through(committed, echo + truth, cuts) == committed + truth


@settings(max_examples=100, derandomize=True, deadline=None)
@given(doc=st.sampled_from(DOCS), point=st.integers(min_value=200, max_value=6000))
def test_a_safe_commit_is_never_followed_by_its_own_tail(doc: str, point: int) -> None:
    """What makes short repeats decidable: at a safe point, a clean reply is never cut."""
    cut = committed_at(doc, min(point, len(doc) - 1000))
    committed, truth = doc[:cut], doc[cut : cut + 900]
    assert clean_after(committed, truth)
    join = decide(committed, truth, anchor_for(committed))
    assert (join.rule, join.skip) == (JoinRule.CLEAN, 0)


def test_the_issue_repeat_of_two_words_is_cut() -> None:
    """The issue's fleet run: every continuation repeats the last 2 words."""
    spec = parse_echo("repeat:2")
    for doc in DOCS:
        for where in range(300, len(doc) - 1000, 97):
            cut = committed_at(doc, where)
            committed, truth = doc[:cut], doc[cut : cut + 600]
            _, echo = draw_echo(random.Random(where), spec, committed)
            assert join_through(committed, echo + truth, [5] * 50) == truth, (committed[-40:], echo)


def test_parse_echo_names_a_bad_entry() -> None:
    with pytest.raises(ValueError, match="bad entry 'bogus:2'"):
        parse_echo("anchor,bogus:2")
