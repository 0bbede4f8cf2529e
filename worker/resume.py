"""Resuming a document from its committed text, exactly. Pure and unit-tested.

Two modes (../shared/ANTHROPIC.md §6, ../shared/PEERS.md §6):

* **prefill** (models of the 4.5 generation and earlier): the text so far goes last, as an assistant
  message, and the model continues right after it. The API rejects a prefill that ends in
  whitespace, so trailing whitespace is trimmed off and remembered (the *carry*); the model's
  continuation usually starts with that whitespace, and the joiner drops what is already committed.
* **continuation** (4.6 and later reject prefill with a 400): the text so far as an assistant turn,
  then a user turn asking to continue. Such models sometimes repeat a few words at the join; the
  joiner holds back the start of the new text until it can find and drop the longest repeat.

The joiner works on a stream of deltas, holding back at most ``OVERLAP_WINDOW`` characters at the
start of a request, so its cost per delta stays flat however long the document grows.
"""

from __future__ import annotations

from jobs.models import JobSpec, ResumeMode
from jobs.prefill import supports_prefill

__all__ = (
    "CONTINUE_INSTRUCTION",
    "OVERLAP_WINDOW",
    "MIN_OVERLAP",
    "supports_prefill",
    "build_messages",
    "Joiner",
    "remove_overlap",
)

CONTINUE_INSTRUCTION = (
    "Your previous response was interrupted. Continue it exactly where it stopped, from the very next "
    "character. Do not repeat any text, do not summarise, and add no preamble or commentary."
)
#: Characters of new text held back at the start of a continuation, to find a repeated join.
OVERLAP_WINDOW = 400
#: A repeat shorter than this is not removed: too likely to be a coincidence.
MIN_OVERLAP = 8


def build_messages(spec: JobSpec, text: str, mode: ResumeMode) -> tuple[list[dict[str, str]], str]:
    """The request's messages for a document whose text so far is ``text``.

    Returns the messages and the *carry*: trailing whitespace of ``text`` that was trimmed off a
    prefill (empty in the other modes). A job whose own prompt ends with an assistant turn (a user's
    prefill) has the generated text appended to that turn.
    """
    base = [{"role": m.role, "content": m.content} for m in spec.messages]
    if mode is ResumeMode.FRESH or not text:
        return base, ""
    head = ""
    if base and base[-1]["role"] == "assistant":
        head = base.pop()["content"]
    if mode is ResumeMode.PREFILL:
        whole = head + text
        trimmed = whole.rstrip()
        return [*base, {"role": "assistant", "content": trimmed}], whole[len(trimmed) :]
    return [
        *base,
        {"role": "assistant", "content": head + text},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ], ""


def remove_overlap(committed: str, new: str) -> int:
    """How many leading characters of ``new`` repeat text already at the end of ``committed``.

    Looks for the longest repeat of at least ``MIN_OVERLAP`` characters, starting at a word
    boundary of ``committed``, after the whitespace at the join is set aside; then drops whatever
    leading whitespace of the rest is already committed. Returns 0 when nothing repeats.
    """
    stem = committed.rstrip()
    tail_ws = committed[len(stem) :]
    lead = len(new) - len(new.lstrip())
    body = new[lead:]
    best = 0
    limit = min(len(body), len(stem), OVERLAP_WINDOW)
    for size in range(limit, MIN_OVERLAP - 1, -1):
        start = len(stem) - size
        if (start == 0 or not stem[start - 1].isalnum()) and body.startswith(stem[start:]):
            best = size
            break
    if best == 0:
        return _skip_committed_whitespace(tail_ws, new)
    rest = new[lead + best :]
    return lead + best + _skip_committed_whitespace(tail_ws, rest)


def _skip_committed_whitespace(carry: str, new: str) -> int:
    """Leading characters of ``new`` that repeat the committed trailing whitespace ``carry``."""
    count = 0
    while count < len(carry) and count < len(new) and new[count] == carry[count]:
        count += 1
    return count


class Joiner:
    """Turns one request's stream of deltas into the exact text to append to the document.

    ``feed`` returns what can be appended now; ``finish`` what is left once the stream ended well.
    If the stream fails instead, whatever is still held back is simply dropped: it was not
    resolved, and the next request regenerates it.
    """

    __slots__ = ("_committed_tail", "_decided", "_held", "_held_len", "_limit", "_mode")

    def __init__(self, mode: ResumeMode, committed: str, carry: str = "") -> None:
        self._mode = mode
        self._held: list[str] = []
        self._held_len = 0
        if mode is ResumeMode.PREFILL:
            # Only the carried whitespace can be repeated: hold back at most that much.
            self._committed_tail = carry
            self._limit = len(carry)
        else:
            self._committed_tail = committed[-(OVERLAP_WINDOW + 64) :]
            self._limit = OVERLAP_WINDOW if committed else 0
        self._decided = self._limit == 0

    def feed(self, delta: str) -> str:
        if self._decided:
            return delta
        self._held.append(delta)
        self._held_len += len(delta)
        if self._held_len <= self._limit and not self._can_decide_early():
            return ""
        return self._resolve()

    def finish(self) -> str:
        """The rest of the text, once the stream ended normally."""
        return "" if self._decided else self._resolve()

    def _can_decide_early(self) -> bool:
        # In prefill mode, any non-whitespace character ends the carried whitespace.
        return self._mode is ResumeMode.PREFILL and not "".join(self._held).isspace()

    def _resolve(self) -> str:
        held = "".join(self._held)
        self._held.clear()
        self._decided = True
        if self._mode is ResumeMode.PREFILL:
            skip = _skip_committed_whitespace(self._committed_tail, held)
        else:
            skip = remove_overlap(self._committed_tail, held)
        return held[skip:]
