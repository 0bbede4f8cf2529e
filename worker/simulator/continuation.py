"""How a simulated model starts its reply when asked to continue an interrupted answer.

Real models asked to continue do not always start at the next character. This module draws, from
a seeded random source, one of the behaviours they show (the *echo*: what the reply says before
the document's true continuation), so that the worker's joiner meets every one of them:

* ``anchor``: repeats the words the request quoted (``<last_words>...</last_words>``), as asked;
  only drawn when the request quotes an anchor that really ends the text;
* ``repeat``: repeats the last 3-40 words; ``short``: the last 1 or 2 words;
* ``split``: restarts the word the cut split ("gran" + "granite work"; needs a text ending mid-word);
* ``sentence`` / ``line``: restarts from the start of the current sentence or line;
* ``preamble``: a one-line preamble ("Continuing from where I left off:"), then another echo;
* ``heading``: restates the last markdown heading, then continues; ``marker``: restates the list
  or heading marker of the current line;
* ``clean``: none; the reply starts right at the next character (and may happen to begin with
  the same words as the tail, when the document genuinely repeats itself).

A behaviour that does not apply to the text (no heading to restate, no split word) falls back to
``clean``; :func:`draw_echo` returns the behaviour it actually applied. Every echo except
``preamble``, ``heading`` and ``marker`` is a suffix of the text so far.

Spec syntax (``--echo`` and the ``[sim:echo=SPEC]`` directive): ``mixed`` (the default mix),
``none``, or comma-separated ``KIND`` or ``KIND:WEIGHT`` entries; ``repeat:N`` with an integer N
and no other entries means "always repeat exactly N words" (the issue's fleet run uses
``repeat:2``).
"""

from __future__ import annotations

import enum
import random
import re
from dataclasses import dataclass

__all__ = ("Echo", "EchoSpec", "MIXED", "parse_echo", "draw_echo", "requested_anchor", "PREAMBLES")

_ANCHOR_RE = re.compile(r"<last_words>(.*?)</last_words>", re.DOTALL)
_WORD_RE = re.compile(r"\w+")
_SENTENCE_END_RE = re.compile(r"[.!?。！？]\s*")
_HEADING_RE = re.compile(r"(?m)^#{1,6} [^\n]*$")
_MARKER_RE = re.compile(r"(?:[-*+]|\d{1,3}[.)]|#{1,6}|>) ")

PREAMBLES = (
    "Continuing from where I left off:",
    "Here is the rest of the response:",
    "Sure, continuing:",
    "Picking up where the text stopped:",
    "Continuing...",
)


class Echo(enum.StrEnum):
    ANCHOR = "anchor"
    REPEAT = "repeat"
    SHORT = "short"
    SPLIT = "split"
    SENTENCE = "sentence"
    LINE = "line"
    PREAMBLE = "preamble"
    HEADING = "heading"
    MARKER = "marker"
    CLEAN = "clean"


@dataclass(frozen=True, slots=True)
class EchoSpec:
    """Weights of the behaviours, and the word counts ``repeat`` draws from (inclusive)."""

    weights: tuple[tuple[Echo, float], ...]
    repeat_words: tuple[int, int] = (3, 40)


#: The default mix: a model asked for an anchor mostly repeats it; the rest is spread over every
#: deviation. Without an anchor in the request, ``anchor``'s share goes to the others.
MIXED = EchoSpec(
    (
        (Echo.ANCHOR, 0.60),
        (Echo.REPEAT, 0.06),
        (Echo.SHORT, 0.05),
        (Echo.SPLIT, 0.03),
        (Echo.SENTENCE, 0.04),
        (Echo.LINE, 0.03),
        (Echo.PREAMBLE, 0.06),
        (Echo.HEADING, 0.03),
        (Echo.MARKER, 0.03),
        (Echo.CLEAN, 0.07),
    )
)


def parse_echo(spec: str) -> EchoSpec:
    """Parse an echo spec; raises ``ValueError`` naming the bad entry."""
    text = spec.strip().lower()
    if text in ("", "mixed"):
        return MIXED
    if text == "none":
        return EchoSpec(((Echo.CLEAN, 1.0),))
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if len(entries) == 1 and entries[0].startswith("repeat:") and entries[0][7:].isdigit():
        words = int(entries[0][7:])
        return EchoSpec(((Echo.REPEAT, 1.0),), (words, words))
    weights: list[tuple[Echo, float]] = []
    for entry in entries:
        name, _, weight = entry.partition(":")
        try:
            weights.append((Echo(name), float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"echo spec {spec!r}: bad entry {entry!r}") from None
    return EchoSpec(tuple(weights))


def requested_anchor(user_text: str, so_far: str) -> str:
    """The anchor a continuation turn quotes, if it really ends the text so far; else ""."""
    match = _ANCHOR_RE.search(user_text)
    if match is None:
        return ""
    anchor = match.group(1)
    return anchor if anchor and so_far.rstrip().endswith(anchor) else ""


def draw_echo(rng: random.Random, spec: EchoSpec, so_far: str, anchor: str = "") -> tuple[Echo, str]:
    """One behaviour and its echo for a reply continuing ``so_far`` (empty text: no echo)."""
    if not so_far:
        return Echo.CLEAN, ""
    kind = _pick(rng, spec, anchor)
    if kind is Echo.PREAMBLE:
        line = rng.choice(PREAMBLES) + rng.choice(("\n", "\n\n"))
        inner = EchoSpec(tuple(w for w in spec.weights if w[0] is not Echo.PREAMBLE), spec.repeat_words)
        _, echo = draw_echo(rng, inner, so_far, anchor) if inner.weights else (Echo.CLEAN, "")
        return Echo.PREAMBLE, line + echo
    echo = _echo(rng, kind, spec, so_far, anchor)
    return (kind, echo) if echo else (Echo.CLEAN, "")


def _pick(rng: random.Random, spec: EchoSpec, anchor: str) -> Echo:
    choices = [(k, w) for k, w in spec.weights if w > 0 and (anchor or k is not Echo.ANCHOR)]
    if not choices:
        return Echo.CLEAN
    point = rng.random() * sum(w for _, w in choices)
    for kind, weight in choices:
        point -= weight
        if point < 0:
            return kind
    return choices[-1][0]


def _echo(rng: random.Random, kind: Echo, spec: EchoSpec, so_far: str, anchor: str) -> str:
    stem = so_far.rstrip()
    if kind is Echo.ANCHOR:
        return so_far[len(stem) - len(anchor) :]
    if kind is Echo.REPEAT:
        return _last_words(so_far, rng.randint(*spec.repeat_words))
    if kind is Echo.SHORT:
        return _last_words(so_far, rng.randint(1, 2))
    if kind is Echo.SPLIT:
        tail = so_far[-1000:]
        words = list(_WORD_RE.finditer(tail))
        return tail[words[-1].start() :] if words and words[-1].end() == len(tail) else ""
    if kind is Echo.SENTENCE:
        ends = [m.end() for m in _SENTENCE_END_RE.finditer(stem, max(0, len(stem) - 2000), len(stem) - 1)]
        start = max([*ends, stem.rfind("\n", 0, len(stem) - 1) + 1])
        return so_far[start:]
    if kind is Echo.LINE:
        return so_far[stem.rfind("\n", 0, len(stem) - 1) + 1 :]
    if kind is Echo.HEADING:
        headings = list(_HEADING_RE.finditer(so_far[-3000:]))
        if not headings or so_far[-3000:][headings[-1].end() :].strip() == "":
            return ""
        return headings[-1].group() + "\n\n"
    if kind is Echo.MARKER:
        line = so_far[so_far.rfind("\n") + 1 :]
        marker = _MARKER_RE.match(line)
        if marker is None or so_far.endswith("\n") or len(line.strip()) <= len(marker.group().strip()):
            return ""
        return marker.group()
    return ""


def _last_words(text: str, words: int) -> str:
    tail = text[-1500:]
    starts = [m.start() for m in _WORD_RE.finditer(tail)]
    return tail[starts[max(0, len(starts) - words)] :] if starts else ""
