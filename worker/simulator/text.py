"""Deterministic documents, the simulator's tokenizer, prompt directives and continuation.

The document a request gets is a pure function of the system prompt and the first user message,
so a test (or a benchmark) can compute the exact text it should end up with, whatever faults,
retries and continuations happened on the way. The text is prose-shaped on purpose: sentences,
commas, paragraph breaks and markdown headings put whitespace at the token joins, which is
where resume logic usually goes wrong.

Tokenizer rule: a token is a run of newlines, or one optional space followed by a word
(``\\w+``), or one optional space followed by one punctuation character, or any other single
whitespace character. Every character falls in one of those classes, so
``"".join(tokenize(text)) == text`` for any text.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import random
import re
from array import array
from dataclasses import dataclass

from worker.simulator.continuation import parse_echo
from worker.simulator.rich_text import rich_tokens

__all__ = (
    "DEFAULT_DOCUMENT_TOKENS",
    "MAX_DOCUMENT_TOKENS",
    "Directives",
    "Document",
    "tokenize",
    "count_tokens",
    "parse_directives",
    "document_key",
    "expected_document",
    "load_document",
    "common_prefix_length",
    "overlap_words",
)

#: Document length when the prompt carries no ``[sim:tokens=N]`` directive.
DEFAULT_DOCUMENT_TOKENS = 300
#: Upper bound for ``[sim:tokens=N]``; keeps one typo from eating the machine's memory.
MAX_DOCUMENT_TOKENS = 2_000_000

_TOKEN_RE = re.compile(r"\n+| ?\w+| ?[^\w\s]|\s")
_DIRECTIVE_RE = re.compile(r"\[sim:([A-Za-z_]+)(?:=([^\]]*))?\]")
_WORD_RE = re.compile(r"\w+")

_VOCABULARY = (
    "the of and to in is that for it as was with be by on not this are or from at which but "
    "an they you were her she there been one all we their has would when if so no what can "
    "more other into could time these two may then first any only new very also some after "
    "over such most made between many through long where much should well people down own just "
    "because good each those how too little state world even back while last might great old "
    "year off come since against go came right used take three himself few house use during "
    "without again place around however home small found thought went say part once general "
    "high upon school every still number within point water large system order river garden "
    "morning evening light stone window harbour letter journey market valley winter summer "
    "question answer reason matter history language country mountain village station engine "
    "paper signal measure careful quiet bright distant gentle patient steady narrow ordinary "
    "sudden simple certain common public private famous strange modern ancient further rather "
    "perhaps almost always never often together already enough nearly quickly slowly clearly "
    "carefully build carry follow wonder remember imagine consider explain describe measure "
    "gather notice prepare continue return arrive decide discover"
)
_WORDS = tuple(_VOCABULARY.split())

_TITLES = (
    "Notes On The River Harbour Winter Journey Letters From Valley Market Engine Signal "
    "Quiet Morning Distant Station Language Of Stone Light Garden History Mountain Village"
)
_TITLE_WORDS = tuple(_TITLES.split())


@dataclass(frozen=True, slots=True)
class Directives:
    """Document-level simulator directives read from the system prompt and first user message.

    Syntax: ``[sim:KEY]`` or ``[sim:KEY=VALUE]`` anywhere in the text. Keys:
    ``tokens=N`` (document length), ``refuse`` (refuse after 8 tokens), ``refuse_after=N``,
    ``fail_first=N``, ``faults=SPEC`` (a fault spec in the ``--faults`` syntax, or ``none``),
    ``style=prose|rich`` (:mod:`worker.simulator.rich_text`) and ``echo=SPEC`` (how continuations
    start, :mod:`worker.simulator.continuation`; overrides the server's ``--echo``).
    """

    tokens: int = DEFAULT_DOCUMENT_TOKENS
    refuse_after: int | None = None
    fail_first: int | None = None
    faults: str | None = None
    style: str = "prose"
    echo: str | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """One generated document with its token boundaries precomputed.

    ``ends[i]`` is the character offset where token ``i`` ends, so slicing out any run of
    tokens is a bisect plus a string slice: cheap enough for hundreds of concurrent streams.
    An ``array`` keeps that at 8 bytes per token (a 100k-token document costs ~1.3 MB cached).
    """

    key: str
    text: str
    ends: array[int]

    def token_index_after(self, offset: int) -> int:
        """Index of the first token that ends after ``offset`` (the token containing it)."""
        return bisect.bisect_right(self.ends, offset)


def tokenize(text: str) -> list[str]:
    """Split ``text`` into the simulator's tokens; joining them gives ``text`` back."""
    return _TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """Number of tokens in ``text``: the simulator's input-token estimate."""
    return sum(1 for _ in _TOKEN_RE.finditer(text))


def _positive_int(key: str, value: str | None) -> int:
    if value is None or not value.strip().isdigit():
        raise ValueError(f"simulator directive [sim:{key}] needs a non-negative integer value")

    return int(value)


def parse_directives(*texts: str | None) -> Directives:
    """Read the ``[sim:...]`` directives from ``texts``; later ones win.

    :raises ValueError: on an unknown key or a bad value, naming the directive, so a typo in
        a prompt fails loudly instead of silently generating the default document.
    """
    tokens = DEFAULT_DOCUMENT_TOKENS
    refuse_after: int | None = None
    fail_first: int | None = None
    faults: str | None = None
    style, echo = "prose", None
    for text in texts:
        for match in _DIRECTIVE_RE.finditer(text or ""):
            key, value = match.group(1).lower(), match.group(2)
            if key == "tokens":
                tokens = _positive_int(key, value)
                if not 1 <= tokens <= MAX_DOCUMENT_TOKENS:
                    raise ValueError(f"simulator directive [sim:tokens] must be 1..{MAX_DOCUMENT_TOKENS}")

            elif key == "refuse":
                refuse_after = 8 if value is None else _positive_int(key, value)
            elif key == "refuse_after":
                refuse_after = _positive_int(key, value)
            elif key == "fail_first":
                fail_first = _positive_int(key, value)
            elif key == "faults":
                faults = (value or "").strip()
            elif key == "style":
                style = (value or "").strip().lower()
                if style not in ("prose", "rich"):
                    raise ValueError("simulator directive [sim:style] must be prose or rich")
            elif key == "echo":
                echo = (value or "").strip()
                parse_echo(echo)
            else:
                raise ValueError(f"unknown simulator directive [sim:{key}]")

    return Directives(tokens, refuse_after, fail_first, faults, style, echo)


def _digest(system: str | None, first_user_text: str) -> bytes:
    payload = json.dumps([system or "", first_user_text], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).digest()


def document_key(system: str | None, first_user_text: str) -> str:
    """Short stable identifier of the document for this prompt (16 hex characters)."""
    return _digest(system, first_user_text).hex()[:16]


def expected_document(system: str | None, first_user_text: str) -> str:
    """The full document the simulator writes for this prompt, independent of model and seed."""
    return load_document(system, first_user_text).text


@functools.lru_cache(maxsize=256)
def load_document(system: str | None, first_user_text: str) -> Document:
    """Generate (once, then cached) the document for this prompt.

    :raises ValueError: if the prompt carries a malformed directive.
    """
    directives = parse_directives(system, first_user_text)
    rng = random.Random(int.from_bytes(_digest(system, first_user_text)[:8], "big"))
    if directives.style == "rich":
        tokens = rich_tokens(rng, directives.tokens, _WORDS, tokenize)
    else:
        tokens = _generate_tokens(rng, directives.tokens)
    ends = array("q", itertools.accumulate(map(len, tokens)))
    return Document(key=document_key(system, first_user_text), text="".join(tokens), ends=ends)


def _sentence(rng: random.Random, words: int, line_start: bool, commas: bool) -> list[str]:
    """A sentence of ``words`` words plus its end mark, as tokens (commas add tokens)."""
    out: list[str] = []
    for i in range(words):
        word = rng.choice(_WORDS)
        if i == 0:
            word = word.capitalize()

        out.append(word if (i == 0 and line_start) else " " + word)
        if commas and 0 < i < words - 2 and rng.random() < 0.1:
            out.append(",")

    out.append("?" if rng.random() < 0.06 else ".")
    return out


def _generate_tokens(rng: random.Random, total: int) -> list[str]:
    """Exactly ``total`` tokens of prose: an optional title, sections, paragraphs and lists."""
    out: list[str] = []

    def left() -> int:
        return total - len(out)

    if total >= 24 and rng.random() < 0.6:
        out.append("#")
        out.extend(" " + rng.choice(_TITLE_WORDS) for _ in range(rng.randint(2, 5)))
        out.append("\n\n")

    paragraphs = 0
    line_start = True
    while left() > 0:
        if left() == 1:
            out.append(rng.choice(_WORDS).capitalize() if line_start else ".")
            break

        words = rng.randint(5, 17)
        if left() < words + 12:
            out.extend(_sentence(rng, left() - 1, line_start, commas=False))
            break

        out.extend(_sentence(rng, words, line_start, commas=True))
        line_start = False
        if rng.random() < 0.25 and left() >= 12:
            out.append("\n\n")
            paragraphs += 1
            line_start = True
            _maybe_block(rng, out, paragraphs, left())

    return out


def _maybe_block(rng: random.Random, out: list[str], paragraphs: int, left: int) -> None:
    """Sometimes start a section heading or a bullet list after a paragraph break."""
    if paragraphs % 5 == 0 and left >= 30:
        out.append("#")
        out.append("#")
        out.extend(" " + rng.choice(_TITLE_WORDS) for _ in range(rng.randint(1, 4)))
        out.append("\n\n")
    elif rng.random() < 0.1 and left >= 60:
        items = rng.randint(2, 4)
        for item in range(items):
            out.append("-")
            out.extend(" " + rng.choice(_WORDS) for _ in range(rng.randint(2, 6)))
            out.append("\n" if item < items - 1 else "\n\n")


def common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix of ``a`` and ``b``."""
    limit = min(len(a), len(b))
    if a[:limit] == b[:limit]:
        return limit

    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1

    return low


def overlap_words(text_so_far: str, words: int) -> str:
    """The tail of ``text_so_far`` from the start of its last ``words`` words.

    This is what a model repeats when it "continues" by restating the end of the previous
    answer; the client's overlap removal has to cut exactly this.
    """
    tail = text_so_far[-1000:]
    starts = [match.start() for match in _WORD_RE.finditer(tail)]
    if not starts:
        return ""

    return tail[starts[max(0, len(starts) - words)] :]
