"""Continuation joins: 10,000 simulated resumes drawn from the simulator's behaviour mix.

Each join cuts a simulated document where the worker could have committed it (after a whole
word; 3 % mid-word, as a capped run or an older checkpoint leaves it; 20 % just before a genuine
repeat, where the document continues with the same words its tail ends with), draws how the model
starts its reply (``worker.simulator.continuation``: anchor, repeats of 1-40 words, split word,
sentence or line restart, preamble, heading or marker, clean), streams the reply through the
joiner in random deltas and compares the joined text with the document.

Three joiners meet the same documents, cuts and seeds, side by side:

* **ours**: the anchored continuation turn plus the rules of ``worker.join``;
* **rules, no anchor**: the same rules with the old turn (so no reply repeats an anchor);
* **before**: the old turn and the old joiner (only repeats of 8+ characters removed).

Reported: exact joins, false trims (a clean reply cut: text lost), doubled text, and joins the
rules logged as uncertain.

``python -m bench.joins --joins 10000``
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.common import Row
from jobs.models import ResumeMode
from worker.join import safe_cut
from worker.logs import configure_logging
from worker.resume import Joiner, anchor_for
from worker.simulator.continuation import MIXED, Echo, draw_echo
from worker.simulator.text import expected_document

__all__ = ("run", "main", "Tally", "simulate")

_DOCS = 40
_DOC_TOKENS = 3000
_REPLY_CHARS = 700
_WORD_RE = re.compile(r"\w+")


@dataclass
class Tally:
    """Counts for one joiner."""

    joins: int = 0
    exact: int = 0
    clean: int = 0
    false_trims: int = 0
    doubled: int = 0
    uncertain: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def rate(self, count: int, total: int | None = None) -> str:
        base = self.joins if total is None else total
        return f"{100 * count / base:.2f} %" if base else "-"


def _documents() -> list[str]:
    styles = ("rich", "rich", "prose")
    return [
        expected_document(None, f"Join benchmark {i}. [sim:tokens={_DOC_TOKENS}] [sim:style={styles[i % 3]}]")
        for i in range(_DOCS)
    ]


def _repeat_points(doc: str) -> list[int]:
    """Word starts where the document continues with the word its text so far ends with."""
    words = list(_WORD_RE.finditer(doc))
    return [b.start() for a, b in itertools.pairwise(words) if a.group() == b.group()]


def _raw_point(rng: random.Random, doc: str, repeats: list[int]) -> int:
    """Where the stream died: anywhere, or (20 %) just before a genuine repeat."""
    if rng.random() < 0.2 and repeats:
        return repeats[rng.randrange(len(repeats))]
    return rng.randrange(400, len(doc) - _REPLY_CHARS)


def _commit_point(doc: str, point: int, how: str) -> int:
    """What the worker had committed when the stream died at ``point``.

    ``safe``: the last point the safe-commit gate released; ``word``: after the last whitespace;
    ``token``: the end of the simulator token (the worker before this change); ``mid``: mid-word.
    """
    if how == "mid":
        while not (doc[point - 1].isalnum() and doc[point].isalnum()):
            point -= 1
        return point
    if how == "token":
        while point < len(doc) and doc[point].isalnum():
            point += 1
        return point
    if how == "word":
        return _word_end(doc[:point])
    for back in (400, 1600, 6400):
        start = max(1, point - back)
        cut = safe_cut(doc[:start], doc[start:point], tries=400)
        if cut:
            return start + cut
    return 0


def _word_end(text: str) -> int:
    index = len(text)
    while index > 0 and not text[index - 1].isspace():
        index -= 1
    return index


def _legacy_skip(committed: str, new: str) -> int:
    """The joiner before this change: drop a repeat of 8+ characters, else repeated whitespace."""
    stem = committed.rstrip()
    tail_ws = committed[len(stem) :]
    lead = len(new) - len(new.lstrip())
    body = new[lead:]
    for size in range(min(len(body), len(stem), 400), 7, -1):
        start = len(stem) - size
        if (start == 0 or not stem[start - 1].isalnum()) and body.startswith(stem[start:]):
            rest = new[lead + size :]
            return lead + size + _common(tail_ws, rest)
    return _common(tail_ws, new)


def _common(a: str, b: str) -> int:
    count = 0
    while count < len(a) and count < len(b) and a[count] == b[count]:
        count += 1
    return count


def _deltas(rng: random.Random, text: str) -> list[str]:
    out, i = [], 0
    while i < len(text):
        size = rng.randint(1, 12)
        out.append(text[i : i + size])
        i += size
    return out


@dataclass(frozen=True)
class _Setup:
    anchored: bool
    commits: str
    legacy: bool = False


_SETUPS = {
    "ours": _Setup(anchored=True, commits="safe"),
    "safe commits, no anchor": _Setup(anchored=False, commits="safe"),
    "anchor, whole words": _Setup(anchored=True, commits="word"),
    "before": _Setup(anchored=False, commits="token", legacy=True),
}


def _join(committed: str, reply: str, deltas: list[str], setup: _Setup) -> tuple[str, bool]:
    if setup.legacy:
        return reply[_legacy_skip(committed[-464:], reply) :], False
    joiner = Joiner(ResumeMode.CONTINUATION, committed, safe_commits=True, anchor=setup.anchored)
    out = "".join(joiner.feed(d) for d in deltas) + joiner.finish()
    return out, bool(joiner.join and joiner.join.uncertain)


def simulate(joins: int, seed: int = 7) -> dict[str, Tally]:
    """Run ``joins`` joins for each setup; the same stream deaths and reply seeds for all."""
    docs = _documents()
    repeats = [_repeat_points(d) for d in docs]
    tallies = {name: Tally() for name in _SETUPS}
    rng = random.Random(seed)
    for n in range(joins):
        index = rng.randrange(len(docs))
        doc = docs[index]
        point = _raw_point(rng, doc, repeats[index])
        mid = rng.random() < 0.03
        for name, setup in _SETUPS.items():
            cut = _commit_point(doc, point, "mid" if mid else setup.commits)
            committed, truth = doc[:cut], doc[cut : cut + _REPLY_CHARS]
            anchor = anchor_for(committed) if setup.anchored else ""
            kind, echo = draw_echo(random.Random(f"{seed}:{n}"), MIXED, committed, anchor)
            reply = echo + truth
            deltas = _deltas(random.Random(f"deltas:{seed}:{n}"), reply)
            out, uncertain = _join(committed, reply, deltas, setup)
            _count(tallies[name], kind, out, truth, uncertain)
    return tallies


def _count(tally: Tally, kind: Echo, out: str, truth: str, uncertain: bool) -> None:
    tally.joins += 1
    tally.uncertain += uncertain
    clean = kind is Echo.CLEAN
    tally.clean += clean
    if out == truth:
        tally.exact += 1
        return
    tally.failures[kind.value] += 1
    if len(out) < len(truth):
        tally.false_trims += clean
    else:
        tally.doubled += 1


async def run(joins: int = 10_000) -> list[Row]:
    """The benchmark rows (``python -m bench`` calls this)."""
    tallies = simulate(joins)
    ours, before = tallies["ours"], tallies["before"]

    def text(t: Tally) -> str:
        return (
            f"{t.rate(t.exact)} exact, {t.rate(t.false_trims, t.clean)} false trims of clean replies, "
            f"{t.rate(t.doubled)} doubled"
        )

    others = "; ".join(f"{name}: {text(t)}" for name, t in tallies.items() if name not in ("ours", "before"))

    method = (
        f"{joins:,} joins over {_DOCS} simulated documents of {_DOC_TOKENS:,} tokens (two thirds "
        "[sim:style=rich]: doubled words, refrains, tables, code, accents, CJK); cuts after whole "
        "words, 3 % mid-word, 20 % before a genuine repeat; replies from the simulator's default "
        "echo mix, streamed in 1-12 character deltas; the same cuts and seeds for every joiner"
    )
    return [
        Row(
            name="Continuation joins: anchored turn + join rules",
            ours=text(ours) + f", {ours.rate(ours.uncertain)} logged uncertain",
            baseline="before: " + text(before),
            ratio=others,
            method=method,
        )
    ]


def _report(joins: int, out: Callable[[str], None] = print) -> None:
    tallies = simulate(joins)
    for name, t in tallies.items():
        out(
            f"{name:>17}: exact {t.rate(t.exact)}  false trims {t.rate(t.false_trims, t.clean)} of "
            f"{t.clean} clean ({t.rate(t.false_trims)} of all)  doubled {t.rate(t.doubled)}  "
            f"uncertain {t.rate(t.uncertain)}  failures by behaviour {dict(t.failures.most_common())}"
        )


def main() -> None:
    configure_logging("json", "error", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m bench.joins", description=__doc__)
    parser.add_argument("--joins", type=int, default=10_000)
    _report(parser.parse_args().joins)


if __name__ == "__main__":
    main()
