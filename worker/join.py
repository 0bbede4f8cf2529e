"""Where a continuation joins the committed text: the pure rules, in the order they are tried.

A model asked to continue (``worker.resume``, continuation mode) starts its reply in one of a few
ways: it repeats the anchor it was asked to repeat; it restarts further back (the sentence, the
line, a split word, the last 40 words); it repeats fewer words than asked; it opens with a
one-line preamble; it restates the section heading or the list marker of the current line; or it
just continues. :func:`decide` looks at the start of the reply (``held``) and the end of the
committed text and says how many leading characters of the reply to drop, and which rule said so.

The rules, most certain first (measured by ``python -m bench.joins``):

1. **preamble**: a first line that is not document text (it ends in a newline, and either reads
   like "Continuing from where I left off:" or is short and followed by the anchor) is dropped,
   with the blank lines after it; the other rules then apply to what follows.
2. **restart**: the reply starts with a suffix of the committed text at least as long as the
   anchor (the sentence, the line, a longer repeat): cut after the longest such suffix that starts
   at a word boundary and ends at one (or, when the committed text ends mid-word, the split word
   restarted).
3. **anchor**: the reply starts with the anchor (the last words of the committed text, quoted in
   the request): cut exactly after it.
4. **short_repeat**: the reply repeats fewer words than the anchor: cut. Certain when the text
   was committed at a safe point (:func:`safe_cut`), since its true continuation then never
   starts with its tail; otherwise marked *uncertain* (logged and counted), since cutting a
   genuine repeat is rarer than doubling a repeated word, and less visible.
5. **heading** / **marker**: the reply restates the last markdown heading (followed by the
   continuation of the paragraph under it) or the list or heading marker of the current line.
6. **clean**: none of the above; the reply is appended as it is, less any whitespace that only
   repeats the committed trailing whitespace.

The other half of the design is on the writing side: :func:`safe_cut` says where committed text
may end, so that rule 4 is never fooled by a document that genuinely repeats itself ("that
that", a refrain, a table row). :func:`clean_after` is its test: a point is safe when the joiner,
given the text's true continuation as a reply, would append it unchanged.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass

__all__ = (
    "JoinRule",
    "Join",
    "decide",
    "needs_more",
    "clean_after",
    "safe_cut",
    "anchor_for",
    "MIN_CERTAIN",
    "TAIL_CHARS",
    "ECHO_CHARS",
)

#: Characters of committed text the rules look at.
TAIL_CHARS = 4000
#: The longest echo of the committed text the rules cut (a restarted paragraph fits).
ECHO_CHARS = 3000
#: The longest first line taken for a preamble on the anchor's evidence alone.
PREAMBLE_CHARS = 100
#: Words quoted as the anchor (fewer if they exceed ``_ANCHOR_CHARS``).
ANCHOR_WORDS = 6
_ANCHOR_CHARS = 80
#: Without an anchor, a repeat shorter than this is cut but marked uncertain.
MIN_CERTAIN = 12

_PREAMBLE_RE = re.compile(
    r"(?i)^[^\n]{0,40}\b(?:continu\w*|left off|pick(?:ing)? up|resum\w*|where (?:i|it|we|you) "
    r"(?:stopped|left)|rest of|remainder)\b[^\n]{0,80}(?::|\.\.\.|…)\s*$"
)
_HEADING_RE = re.compile(r"(?m)^#{1,6} [^\n]*$")
_MARKER_RE = re.compile(r"(?:[-*+]|\d{1,3}[.)]|#{1,6}|>) ")
_FIRST_RE = re.compile(r"\w+")
_RESTATE_CHARS = frozenset("#-*+>0123456789")


class JoinRule(enum.StrEnum):
    """Which rule placed the join (recorded per resume in the attempt's history)."""

    PREFILL = "prefill"
    ANCHOR = "anchor"
    RESTART = "restart"
    SHORT_REPEAT = "short_repeat"
    HEADING = "heading"
    MARKER = "marker"
    CLEAN = "clean"


@dataclass(frozen=True, slots=True)
class Join:
    """The decision: drop ``skip`` leading characters of the reply."""

    skip: int
    rule: JoinRule
    preamble: bool = False
    #: The rule could not tell a repeat from genuine text: log ``join_uncertain`` and count it.
    uncertain: bool = False


def _is_word_start(text: str, index: int) -> bool:
    return index == 0 or not text[index - 1].isalnum() or not text[index].isalnum()


def _longest_echo(stem: str, body: str, mid_word: bool) -> int:
    """Length of the longest suffix of ``stem`` that ``body`` starts with, at word boundaries.

    The suffix must start at a word boundary of ``stem``; unless ``stem`` ends mid-word (a split
    word the model restarts), the echo must also end at a word boundary of ``body``.
    """
    limit = min(len(body), len(stem), ECHO_CHARS)
    for size in range(limit, 0, -1):
        start = len(stem) - size
        if not _is_word_start(stem, start) or not body.startswith(stem[start:]):
            continue
        if mid_word or size == len(body) or not (body[size].isalnum() and stem[-1].isalnum()):
            return size
    return 0


def _skip_whitespace(carry: str, new: str, start: int) -> int:
    """Leading characters of ``new[start:]`` that repeat the committed trailing whitespace."""
    count = 0
    while count < len(carry) and start + count < len(new) and new[start + count] == carry[count]:
        count += 1
    return start + count


def _echo_join(committed: str, body: str, anchor: str) -> Join | None:
    """Rules 2-4 on ``body`` (the reply without a preamble); None when nothing repeats."""
    stem = committed.rstrip()
    tail_ws = committed[len(stem) :]
    lead = len(body) - len(body.lstrip())
    text = body[lead:]
    mid_word = not tail_ws and not lead and bool(stem) and stem[-1].isalnum()
    size = _longest_echo(stem, text, mid_word)
    if anchor and size <= len(anchor) and text.startswith(anchor) and stem.endswith(anchor):
        return Join(_skip_whitespace(tail_ws, body, lead + len(anchor)), JoinRule.ANCHOR)
    if size == 0:
        return None
    skip = _skip_whitespace(tail_ws, body, lead + size)
    if size >= (len(anchor) if anchor else MIN_CERTAIN):
        return Join(skip, JoinRule.RESTART)
    # Certain when the text was committed at a safe point (``safe_cut``: after whitespace or a
    # wide character), since its true continuation then never starts with its tail.
    safe = bool(committed) and _is_boundary(committed, len(committed))
    return Join(skip, JoinRule.SHORT_REPEAT, uncertain=not safe)


def _restated_join(committed: str, body: str) -> Join | None:
    """Rule 5: a restated heading line, or the marker of the current line."""
    line_start = committed.rfind("\n") + 1
    line = committed[line_start:]
    marker = _MARKER_RE.match(line)
    if (
        marker
        and not committed.endswith("\n")
        and len(line.strip()) > len(marker.group().strip())
        and body.startswith(marker.group())
        and not body.startswith(line.rstrip())
    ):
        return Join(len(marker.group()), JoinRule.MARKER)
    headings = _HEADING_RE.findall(committed)
    if not headings:
        return None
    heading = headings[-1]
    if committed.rstrip().endswith(heading) or not body.startswith(heading + "\n"):
        return None
    skip = len(heading)
    while skip < len(body) and body[skip] == "\n":
        skip += 1
    return Join(skip, JoinRule.HEADING)


def _after_preamble(body: str) -> int:
    """Where the text after a first line ending in a newline starts (0 if there is none)."""
    newline = body.find("\n")
    if newline <= 0:
        return 0
    end = newline
    while end < len(body) and body[end] == "\n":
        end += 1
    return end


def anchor_for(text: str) -> str:
    """The last ``ANCHOR_WORDS`` words of ``text`` (without trailing whitespace), or "".

    At most ``_ANCHOR_CHARS`` characters, starting at a word; "" when the tail would not quote
    cleanly (it contains the closing tag of the quote).
    """
    stem = text.rstrip()
    tail = stem[-(_ANCHOR_CHARS * 2) :]
    starts = [m.start() for m in _FIRST_RE.finditer(tail)]
    if not starts:
        return ""
    anchor = tail[starts[max(0, len(starts) - ANCHOR_WORDS)] :]
    if len(anchor) > _ANCHOR_CHARS:
        anchor = anchor[-_ANCHOR_CHARS:]
        space = anchor.find(" ")
        anchor = anchor[space + 1 :] if 0 <= space < len(anchor) - 1 else anchor
    return "" if "</last_words>" in anchor or not anchor.strip() else anchor


def _is_preamble(line: str, rest: str, anchor: str) -> bool:
    """A first line (without its newline) that is not document text: it reads like a preamble,
    or it is short and what follows it repeats the anchor."""
    if _PREAMBLE_RE.match(line):
        return True
    return bool(anchor) and len(line) <= PREAMBLE_CHARS and rest.lstrip().startswith(anchor)


def decide(committed: str, held: str, anchor: str = "") -> Join:
    """The join of ``held`` (the start of a reply) onto ``committed``.

    ``committed`` need only be the end of the committed text (``TAIL_CHARS`` is plenty);
    ``anchor`` is the quoted tail the request asked the model to repeat, or "".
    """
    stem = committed.rstrip()
    if not stem:
        return Join(_skip_whitespace(committed, held, 0), JoinRule.CLEAN)
    first = _after_preamble(held)
    if first and len(held) > first:
        line = held[:first].strip()
        rest = held[first:]
        after = _echo_join(committed, rest, anchor) or _restated_join(committed, rest)
        own = _echo_join(committed, held, anchor)
        if _is_preamble(line, rest, anchor) and not (own and own.rule is not JoinRule.SHORT_REPEAT):
            inner = after or Join(_skip_whitespace(committed[len(stem) :], rest, 0), JoinRule.CLEAN)
            return Join(first + inner.skip, inner.rule, preamble=True, uncertain=inner.uncertain)
    join = _echo_join(committed, held, anchor) or _restated_join(committed, held)
    if join is not None:
        return join
    return Join(_skip_whitespace(committed[len(stem) :], held, 0), JoinRule.CLEAN)


def needs_more(committed: str, held: str, anchor: str = "") -> bool:
    """Whether more of the reply could change the decision (``held`` may be an echo's start).

    True while the reply, less leading whitespace and any first line, could still grow into the
    anchor or into a longer suffix of the committed text.
    """
    stem = committed.rstrip()
    if not stem:
        return False
    for body in (held, held[_after_preamble(held) :]):
        text = body.lstrip()
        if not text:
            return True
        if len(text) < len(anchor) and anchor.startswith(text):
            return True
        index = stem.find(text)
        while index != -1:
            if _is_word_start(stem, index) and index + len(text) < len(stem):
                return True
            index = stem.find(text, index + 1)
    return False


def _is_boundary(text: str, index: int) -> bool:
    """Whether a commit may end at ``index``: right after whitespace or a wide (CJK) character."""
    char = text[index - 1]
    return char.isspace() or (char > "\u10ff" and unicodedata.east_asian_width(char) in "WF")


def clean_after(committed: str, truth: str) -> bool:
    """Whether ``truth``, appended to ``committed`` unchanged, could never be mistaken for an echo.

    False when ``truth`` (less leading whitespace) starts with a word-bounded suffix of the
    committed text, or could still grow into one, or starts like a restated heading, marker or a
    preamble line. A resume from such a point would be ambiguous: a reply starting with those
    words may be a repeat or the text itself. See :func:`safe_cut`.
    """
    return _clean_at(committed + truth, len(committed))


def _clean_at(whole: str, end: int) -> bool:
    """:func:`clean_after` for ``whole[:end]`` and ``whole[end:]``, copying only the lookahead."""
    stem_end = end
    while stem_end > 0 and whole[stem_end - 1].isspace():
        stem_end -= 1
    start = end
    while start < len(whole) and whole[start].isspace():
        start += 1
    text = whole[start:]
    if not text or stem_end == 0:
        return bool(text)
    low = max(0, stem_end - ECHO_CHARS)
    if _echo_of_tail(whole, low, stem_end, text):
        return False
    if text[0] in _RESTATE_CHARS and _restated_join(whole[max(0, end - TAIL_CHARS) : end], text) is not None:
        return False
    newline = text.find("\n")
    if newline == -1:
        return len(text) > PREAMBLE_CHARS  # until then, the first line may still be a preamble
    line, rest = text[:newline].strip(), text[newline:].lstrip()
    if len(line) > PREAMBLE_CHARS + 40:
        return True
    if rest[:4] not in whole[max(0, stem_end - _ANCHOR_CHARS - 8) : stem_end]:
        return _PREAMBLE_RE.match(line) is None  # what follows cannot be (or become) the anchor
    anchor = anchor_for(whole[max(0, end - 2 * _ANCHOR_CHARS) : end])
    if anchor and len(line) <= PREAMBLE_CHARS and anchor.startswith(rest):
        return False  # what follows the line may still grow into the anchor
    return not _is_preamble(line, rest, anchor)


def _echo_of_tail(whole: str, low: int, stem_end: int, text: str) -> bool:
    """Whether ``text`` starts with a word-bounded suffix of ``whole[low:stem_end]``, or is the
    start of one. Finds suffix ends through the stem's last characters, so the cost follows the
    lookahead, not the window."""
    key = min(8, stem_end - low)
    for size in range(1, key + 1):
        suffix = whole[stem_end - size : stem_end]
        if size <= len(text) and text.startswith(suffix) and _is_word_start(whole, stem_end - size):
            return True
    tail = whole[stem_end - key : stem_end]
    index = text.find(tail, 1)
    while index != -1:
        size = index + key
        begin = stem_end - size
        if begin >= low and _is_word_start(whole, begin) and whole.startswith(text[:size], begin):
            return True
        index = text.find(tail, index + 1)
    index = whole.find(text, low, stem_end)
    while index != -1:
        if _is_word_start(whole, index):
            return True
        index = whole.find(text, index + 1, stem_end)
    return False


def safe_cut(context: str, pending: str, tries: int = 24) -> int:
    """How much of ``pending`` (text after ``context``) may be committed now: the latest boundary
    from which the rest of ``pending`` continues unambiguously (0 if none is known yet).

    Committing only at such points is what makes a continuation's join decidable: whatever the
    model repeats when it resumes, the committed text's true continuation never starts with the
    committed tail, so any repeat of the tail in the reply is an echo to cut. A candidate needs
    enough text after it to show that its next line is no preamble (a newline, or more than
    ``PREAMBLE_CHARS``); up to ``tries`` candidates are checked, latest first.
    """
    whole = context[-(ECHO_CHARS + TAIL_CHARS) :] + pending
    base = len(whole) - len(pending)
    index = max(pending.rfind("\n"), len(pending) - PREAMBLE_CHARS - 1)
    while index > 0 and tries > 0:
        if _is_boundary(pending, index):
            tries -= 1
            if _clean_at(whole, base + index):
                return index
        index -= 1
    return 0
