"""Documents that repeat themselves on purpose: the hard cases for a continuation's join.

``[sim:style=rich]`` documents mix the plain prose of :mod:`worker.simulator.text` with what makes
a join ambiguous or easy to get subtly wrong: genuinely doubled words ("that that"), a refrain
sentence that comes back (sometimes twice in a row), markdown tables whose rows repeat cells and
whole rows, fenced code blocks, accented words and CJK sentences without spaces. A clean
continuation that begins with the same words as the committed tail is common in such text, so a
joiner that trims every repeat is caught out.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

__all__ = ("rich_tokens",)

_ACCENTED = ("café", "naïve", "Zürich", "façade", "smörgåsbord", "señor", "déjà", "über", "coöperate")
_CJK = "河流穿过山谷风雪夜晚城市灯光古老石桥安静早晨花园窗户信件旅程市场"
_CJK_END = ("。", "，", "！")
_CODE = (
    "def measure(river, stone):",
    "    return river + stone",
    "for item in items:",
    "    print(item, item)",
    "if value == value:",
    "    total = total + 1",
)


def rich_tokens(
    rng: random.Random, total: int, words: Sequence[str], tokenize: Callable[[str], list[str]]
) -> list[str]:
    """Exactly ``total`` tokens of mixed text, cut from a longer draft at a token boundary."""
    vocabulary = tuple(words) + _ACCENTED
    refrain = _sentence(rng, vocabulary, rng.randint(3, 7))
    parts: list[str] = []
    count = 0
    while count < total:
        block = _block(rng, vocabulary, refrain)
        parts.append(block)
        count += len(tokenize(block))
    return tokenize("".join(parts))[:total]


def _sentence(rng: random.Random, vocabulary: Sequence[str], length: int) -> str:
    out: list[str] = []
    for _ in range(length):
        word = rng.choice(vocabulary)
        out.append(word)
        if rng.random() < 0.08:
            out.append(word)  # a genuine doubled word
    out[0] = out[0].capitalize()
    return " ".join(out) + "."


def _block(rng: random.Random, vocabulary: Sequence[str], refrain: str) -> str:
    """One paragraph-level block, ending in a blank line."""
    roll = rng.random()
    if roll < 0.12:
        return (refrain + " ") * rng.randint(1, 2) + refrain + "\n\n"
    if roll < 0.22:
        return _table(rng, vocabulary)
    if roll < 0.30:
        lines = [rng.choice(_CODE) for _ in range(rng.randint(2, 5))]
        return "```python\n" + "\n".join(lines) + "\n```\n\n"
    if roll < 0.38:
        sentences = rng.randint(1, 3)
        return (
            "".join(
                "".join(rng.choice(_CJK) for _ in range(rng.randint(4, 12))) + rng.choice(_CJK_END)
                for _ in range(sentences)
            )
            + "\n\n"
        )
    if roll < 0.45:
        return "## " + " ".join(rng.choice(vocabulary).capitalize() for _ in range(2)) + "\n\n"
    if roll < 0.52:
        items = [_sentence(rng, vocabulary, rng.randint(2, 5)) for _ in range(rng.randint(2, 4))]
        return "".join(f"- {item}\n" for item in items) + "\n"
    return " ".join(_sentence(rng, vocabulary, rng.randint(5, 14)) for _ in range(rng.randint(2, 5))) + "\n\n"


def _table(rng: random.Random, vocabulary: Sequence[str]) -> str:
    columns = rng.randint(2, 4)
    header = "| " + " | ".join(rng.choice(vocabulary) for _ in range(columns)) + " |\n"
    rule = "|" + "---|" * columns + "\n"
    cells = [rng.choice(vocabulary) for _ in range(3)]
    rows: list[str] = []
    for _ in range(rng.randint(2, 5)):
        if rows and rng.random() < 0.3:
            rows.append(rows[-1])  # a repeated row
            continue
        rows.append("| " + " | ".join(rng.choice(cells) for _ in range(columns)) + " |\n")
    return header + rule + "".join(rows) + "\n"
