"""Resuming a document from its committed text, exactly. Unit- and property-tested.

Two modes (../shared/ANTHROPIC.md §6, ../shared/PEERS.md §6):

* **prefill** (models of the 4.5 generation and earlier): the text so far goes last, as an assistant
  message, and the model continues right after it. The API rejects a prefill that ends in
  whitespace, so trailing whitespace is trimmed off and remembered (the *carry*); the model's
  continuation usually starts with that whitespace, and the joiner drops what is already committed.
  This join is exact by construction and is unchanged.
* **continuation** (4.6 and later reject prefill with a 400): the text so far as an assistant turn,
  then a user turn asking to continue. The model's reply may start with a repeat of 1-40 words, a
  restarted word, sentence or line, a preamble or a restated heading or list marker;
  ``worker.join`` decides where the join is. The request and the join were designed together and
  chosen by measurement (``python -m bench.joins``: 10,000 joins over the simulator's behaviour
  mix, on documents full of genuine repeats):

  - **Commit only at safe points** (models that resume by continuation, from their first
    request): text is held back until the gate (``worker.join.safe_cut``) sees that what follows
    a candidate point does not begin with the committed tail (nor like a heading, marker or
    preamble line). A checkpoint, hence a resume, then never ends between "that" and "that", so
    any repeat of the tail a reply opens with is an echo, however short: the rules can cut 1- and
    2-word repeats without ever trimming a clean continuation. A stream that stops at
    ``max_tokens`` drops its unsafe tail; the next request rewrites it. This alone takes the
    exact-join rate from 63 % (the old 8-character rule) to 99.9 %, with no false trims; whole
    words without the safety check leave a quarter of the clean continuations at genuine repeats
    wrongly cut.
  - **Ask for an anchor.** The user turn quotes the last words (``anchor_for``) and asks the model
    to begin by repeating them: a reply that does is cut exactly after them, and a short first
    line followed by the anchor is recognisably a preamble. This takes the rate to 99.97 %.
  - **Never silently double text.** A repeat shorter than the anchor after a commit that was not
    made at a safe point (an older checkpoint, a capped hold) is cut and logged as
    ``join_uncertain`` with both sides; the attempt counts it. Every join records its rule
    (:class:`worker.join.JoinRule`) in the attempt's history.

The joiner works on a stream of deltas, holding back ``OVERLAP_WINDOW`` characters at the start of
a request (longer while the reply is still an echo of the committed text, up to ``MAX_HOLD``), so
its cost per delta stays flat however long the document grows.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import structlog

from jobs.blocks import content_json
from jobs.models import JobSpec, ResumeMode
from jobs.prefill import supports_prefill
from worker.join import (
    ANCHOR_WORDS,
    ECHO_CHARS,
    TAIL_CHARS,
    Join,
    JoinRule,
    anchor_for,
    decide,
    needs_more,
    safe_cut,
)

__all__ = (
    "CONTINUE_INSTRUCTION",
    "OVERLAP_WINDOW",
    "MAX_HOLD",
    "ANCHOR_WORDS",
    "supports_prefill",
    "anchor_for",
    "continue_instruction",
    "build_messages",
    "Joiner",
)

log = structlog.get_logger("worker.resume")

#: The continuation turn when no anchor can be quoted.
CONTINUE_INSTRUCTION = (
    "Your previous response was interrupted. Continue it exactly where it stopped, from the very next "
    "character. Do not repeat any text, do not summarise, and add no preamble or commentary."
)
_ANCHORED_INSTRUCTION = (
    "Your previous response was interrupted. It ended with these words:\n"
    "<last_words>{anchor}</last_words>\n"
    "Begin your reply by repeating those words exactly, then continue the response from there as "
    "if it had never stopped. Do not summarise, and add no preamble or commentary."
)
#: Characters of new text held back at the start of a continuation, to find where it joins.
OVERLAP_WINDOW = 400
#: The most held back while the reply still repeats committed text (a restarted paragraph).
MAX_HOLD = 4000
#: Text held back longer than this is committed anyway, up to its last word boundary.
_PENDING_MAX = 2000
_CONTEXT_CHARS = 2 * ECHO_CHARS
#: Held-back characters added between two looks for a safe point (the cost stays per chunk).
_CHECK_EVERY = 128


def build_messages(spec: JobSpec, text: str, mode: ResumeMode) -> tuple[list[dict[str, Any]], str]:
    """The request's messages for a document whose text so far is ``text``.

    Returns the messages and the *carry*: trailing whitespace of ``text`` that was trimmed off a
    prefill (empty in the other modes). A job whose own prompt ends with an assistant turn (a user's
    prefill) has the generated text appended to that turn: to its last text block when it is given
    as blocks, so the user's blocks (and their ``cache_control``) are sent as written. The prompt's
    content, blocks included, is copied as stored; only ``text`` is ever the assistant's new text.
    """
    base: list[dict[str, Any]] = [{"role": m.role, "content": content_json(m.content)} for m in spec.messages]
    if mode is ResumeMode.FRESH or not text:
        return base, ""
    head: str | list[dict[str, Any]] = ""
    if base and base[-1]["role"] == "assistant":
        head = base.pop()["content"]
    if mode is ResumeMode.PREFILL:
        trimmed = text.rstrip()
        return [*base, {"role": "assistant", "content": _appended(head, trimmed)}], text[len(trimmed) :]
    return [
        *base,
        {"role": "assistant", "content": _appended(head, text)},
        {"role": "user", "content": continue_instruction(anchor_for(text))},
    ], ""


def _appended(head: str | list[dict[str, Any]], text: str) -> str | list[dict[str, Any]]:
    """The user's prefill ``head`` (a string, or text blocks) followed by the generated ``text``."""
    if isinstance(head, str):
        return head + text
    *rest, last = head
    return [*rest, {**last, "text": last["text"] + text}]


def continue_instruction(anchor: str) -> str:
    """The continuation turn, quoting ``anchor`` when there is one."""
    return _ANCHORED_INSTRUCTION.format(anchor=anchor) if anchor else CONTINUE_INSTRUCTION


def _skip_committed_whitespace(carry: str, new: str) -> int:
    """Leading characters of ``new`` that repeat the committed trailing whitespace ``carry``."""
    count = 0
    while count < len(carry) and count < len(new) and new[count] == carry[count]:
        count += 1
    return count


def _word_boundary(text: str) -> int:
    """The end of the last whole word of ``text``: after its last whitespace or wide character."""
    for index in range(len(text) - 1, -1, -1):
        char = text[index]
        if char.isspace() or (char > "\u10ff" and unicodedata.east_asian_width(char) in "WF"):
            return index + 1
    return 0


class Joiner:
    """Turns one request's stream of deltas into the exact text to append to the document.

    ``feed`` returns what can be appended now; ``finish`` what is left once the stream ended well.
    If the stream fails instead, whatever is still held back is simply dropped: it was not
    resolved, and the next request regenerates it. ``join`` is the decision, once made (None for
    a fresh request).
    """

    __slots__ = (
        "_anchor",
        "_committed_tail",
        "_context",
        "_decided",
        "_held",
        "_held_len",
        "_limit",
        "_mode",
        "_next_check",
        "_partial",
        "_safe_commits",
        "join",
    )

    def __init__(
        self,
        mode: ResumeMode,
        committed: str,
        carry: str = "",
        *,
        safe_commits: bool = False,
        anchor: bool = True,
    ) -> None:
        self._mode = mode
        self._held: list[str] = []
        self._held_len = 0
        self._anchor = ""
        self._partial = ""
        self._next_check = 0
        self._context = committed[-_CONTEXT_CHARS:]
        self._safe_commits = safe_commits
        self.join: Join | None = None
        if mode is ResumeMode.PREFILL:
            # Only the carried whitespace can be repeated: hold back at most that much.
            self._committed_tail = carry
            self._limit = len(carry)
            if not carry:
                self.join = Join(0, JoinRule.PREFILL)
        elif mode is ResumeMode.CONTINUATION and committed:
            self._committed_tail = committed[-TAIL_CHARS:]
            self._anchor = anchor_for(committed) if anchor else ""
            self._limit = OVERLAP_WINDOW
        else:
            self._committed_tail = ""
            self._limit = 0
        self._decided = self._limit == 0

    def feed(self, delta: str) -> str:
        if not self._decided:
            self._held.append(delta)
            self._held_len += len(delta)
            if not self._ready():
                return ""
            delta = self._resolve()
        return self._gate(delta) if self._safe_commits else delta

    def finish(self, complete: bool = True) -> str:
        """The rest of the text, once the stream ended normally.

        ``complete`` is False when the stream stopped at ``max_tokens``: with safe commits, the
        text after the last safe point is then dropped, for the next request to rewrite.
        """
        out = "" if self._decided else self._resolve()
        if not self._safe_commits:
            return out
        self._next_check = 0
        out = self._gate(out)
        if complete:
            out, self._partial = out + self._partial, ""
        return out

    def _ready(self) -> bool:
        if self._mode is ResumeMode.PREFILL:
            # Any non-whitespace character ends the carried whitespace.
            return self._held_len > self._limit or not "".join(self._held).isspace()
        if self._held_len < self._limit:
            return False
        if self._held_len >= MAX_HOLD:
            return True
        return not needs_more(self._committed_tail, "".join(self._held), self._anchor)

    def _resolve(self) -> str:
        held = "".join(self._held)
        self._held.clear()
        self._decided = True
        if self._mode is ResumeMode.PREFILL:
            self.join = Join(_skip_committed_whitespace(self._committed_tail, held), JoinRule.PREFILL)
        else:
            self.join = decide(self._committed_tail, held, self._anchor)
            if self.join.uncertain:
                log.warning(
                    "join_uncertain",
                    rule=str(self.join.rule),
                    committed_tail=self._committed_tail[-60:],
                    reply_head=held[:80],
                    cut=self.join.skip,
                )
        return held[self.join.skip :]

    def _gate(self, text: str) -> str:
        """With safe commits: release text up to the latest point it continues unambiguously."""
        pending = self._partial + text
        if len(pending) < self._next_check:
            self._partial = pending
            return ""
        cut = safe_cut(self._context, pending)
        self._next_check = len(pending) - cut + _CHECK_EVERY
        if cut == 0 and len(pending) > _PENDING_MAX:
            cut = _word_boundary(pending[:-1]) or len(pending)
        self._partial = pending[cut:]
        if cut:
            self._context = (self._context + pending[:cut])[-_CONTEXT_CHARS:]
        return pending[:cut]
