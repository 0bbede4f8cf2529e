"""Resume modes and the joiner: a continuation stitched onto committed text is exact."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from jobs.models import JobSpec, Message, ResumeMode
from worker.resume import (
    CONTINUE_INSTRUCTION,
    MIN_OVERLAP,
    Joiner,
    build_messages,
    remove_overlap,
    supports_prefill,
)


def spec(*messages: Message) -> JobSpec:
    return JobSpec(
        id="j",
        messages=messages or (Message("user", "Write."),),
        model="m",
        max_tokens=10,
        output_budget=100,
        max_attempts=3,
    )


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-sonnet-4-5", True),
        ("claude-sonnet-4-5-20250929", True),
        ("claude-opus-4-5", True),
        ("claude-haiku-4-5-20251001", True),
        ("claude-opus-4-1", True),
        ("claude-3-5-sonnet-latest", True),
        ("claude-opus-4-6", False),
        ("claude-sonnet-4-6", False),
        ("claude-opus-4-8", False),
        ("claude-opus-5", False),
        ("claude-sonnet-5-5", False),
        ("claude-haiku-5-5", False),
        ("claude-mythos-preview", False),
        ("claude-fable-5-2", False),
    ],
)
def test_supports_prefill(model: str, expected: bool) -> None:
    assert supports_prefill(model) is expected


def test_prefill_trims_trailing_whitespace_and_returns_it_as_carry() -> None:
    messages, carry = build_messages(spec(), "Once upon a time.\n\n", ResumeMode.PREFILL)
    assert messages[-1] == {"role": "assistant", "content": "Once upon a time."}
    assert carry == "\n\n"


def test_prefill_extends_a_users_own_prefill() -> None:
    messages, carry = build_messages(
        spec(Message("user", "Write."), Message("assistant", "# Title")), "\n\nBody ", ResumeMode.PREFILL
    )
    assert messages == [
        {"role": "user", "content": "Write."},
        {"role": "assistant", "content": "# Title\n\nBody"},
    ]
    assert carry == " "


def test_continuation_ends_with_a_user_turn() -> None:
    messages, carry = build_messages(spec(), "Half a story ", ResumeMode.CONTINUATION)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == "Half a story "
    assert messages[2]["content"] == CONTINUE_INSTRUCTION
    assert carry == ""


def test_fresh_sends_the_prompt_as_given() -> None:
    messages, carry = build_messages(spec(), "", ResumeMode.PREFILL)
    assert messages == [{"role": "user", "content": "Write."}]
    assert carry == ""


def feed_all(joiner: Joiner, deltas: list[str]) -> str:
    return "".join(joiner.feed(d) for d in deltas) + joiner.finish()


def test_prefill_joiner_drops_the_carried_whitespace_once() -> None:
    joiner = Joiner(ResumeMode.PREFILL, "A.\n\n", carry="\n\n")
    assert feed_all(joiner, ["\n", "\nB", " c"]) == "B c"


def test_prefill_joiner_keeps_text_when_the_model_does_not_repeat_whitespace() -> None:
    joiner = Joiner(ResumeMode.PREFILL, "A. ", carry=" ")
    assert feed_all(joiner, ["B", " c"]) == "B c"


def test_continuation_joiner_removes_repeated_words() -> None:
    committed = "The river ran past the old mill and into the valley. "
    joiner = Joiner(ResumeMode.CONTINUATION, committed)
    out = feed_all(joiner, ["into the", " valley. ", "Then the rain came."])
    assert committed + out == committed + "Then the rain came."


def test_continuation_joiner_leaves_a_clean_continuation_alone() -> None:
    committed = "The river ran past the old mill. "
    out = feed_all(Joiner(ResumeMode.CONTINUATION, committed), ["Then", " the rain came."])
    assert out == "Then the rain came."


def test_short_coincidences_are_not_removed() -> None:
    assert remove_overlap("it was the end", "the end of days") == 0


words = st.lists(
    st.sampled_from(["alpha", "beta", "gamma", "delta", "ember", "frost", "grove", "harbor"]), min_size=1
)


@given(
    head=words,
    tail=words,
    repeat=st.integers(min_value=0, max_value=8),
    sep=st.sampled_from([" ", "\n\n", ". "]),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=30),
)
def test_continuation_join_is_exact(
    head: list[str], tail: list[str], repeat: int, sep: str, cuts: list[int]
) -> None:
    """Whatever the model repeats of the last words (or nothing), however the deltas are cut,
    committed + joined == the document."""
    committed = " ".join(head) + sep
    rest = " ".join(tail)
    repeated = " ".join(head[-repeat:]) + sep if repeat else ""
    assume(not repeated or len(repeated.strip()) >= MIN_OVERLAP)
    # A clean continuation that happens to begin with the committed tail (at least MIN_OVERLAP
    # characters, at a word boundary) cannot be told from a repeat; the property is stated for
    # text that does not.
    stem = committed.rstrip()
    echoes = [stem[i:] for i in range(len(stem)) if i == 0 or not stem[i - 1].isalnum()]
    assume(not any(len(e) >= MIN_OVERLAP and rest.startswith(e) for e in echoes))
    stream = repeated + rest
    deltas, i = [], 0
    for cut in cuts:
        deltas.append(stream[i : i + cut])
        i += cut
    deltas.append(stream[i:])
    out = feed_all(Joiner(ResumeMode.CONTINUATION, committed), [d for d in deltas if d])
    assert committed + out == committed + rest


@given(body=st.text(min_size=1), ws=st.sampled_from(["", " ", "\n", "\n\n", " \n"]), rest=st.text())
def test_prefill_join_is_exact(body: str, ws: str, rest: str) -> None:
    """The model continues right after the trimmed prefill: its output starts with the trimmed
    whitespace (exactly as the simulator and prefill models do) and the join is exact."""
    committed = body + ws
    messages, carry = build_messages(spec(), committed, ResumeMode.PREFILL)
    prefill = messages[-1]["content"]
    model_output = committed[len(prefill) :] + rest
    out = feed_all(Joiner(ResumeMode.PREFILL, committed, carry), [model_output[:1], model_output[1:]])
    assert committed + out == committed + rest
