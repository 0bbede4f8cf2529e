"""Resume modes and the joiner: a continuation stitched onto committed text is exact."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.models import JobSpec, Message, ResumeMode
from worker.join import JoinRule
from worker.resume import (
    Joiner,
    anchor_for,
    build_messages,
    continue_instruction,
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
    assert messages[2]["content"] == continue_instruction("Half a story")
    assert "<last_words>Half a story</last_words>" in messages[2]["content"]
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


def test_a_short_repeat_after_a_safe_commit_is_cut() -> None:
    """The issue's failure: the model repeats the last two short words ("we how")."""
    committed = "the canyon we how "
    joiner = Joiner(ResumeMode.CONTINUATION, committed)
    assert feed_all(joiner, ["we how", " granite walls."]) == "granite walls."
    assert joiner.join is not None
    assert (joiner.join.rule, joiner.join.uncertain) == (JoinRule.SHORT_REPEAT, False)


def test_a_short_repeat_after_an_unsafe_commit_is_cut_and_marked_uncertain() -> None:
    joiner = Joiner(ResumeMode.CONTINUATION, "it was the end")
    assert feed_all(joiner, ["the end", " of days"]) == " of days"
    assert joiner.join is not None and joiner.join.uncertain


def test_a_reply_that_repeats_the_anchor_is_cut_after_it() -> None:
    committed = "one two three four five six seven eight "
    assert anchor_for(committed) == "three four five six seven eight"
    joiner = Joiner(ResumeMode.CONTINUATION, committed)
    assert feed_all(joiner, ["three four five six seven eight", " nine"]) == "nine"
    assert joiner.join is not None and joiner.join.rule is JoinRule.ANCHOR


def test_a_preamble_line_is_dropped() -> None:
    committed = "The river ran past the old mill and into the "
    joiner = Joiner(ResumeMode.CONTINUATION, committed)
    out = feed_all(joiner, ["Continuing from where I left off:\n\n", "valley. Then the rain came."])
    assert out == "valley. Then the rain came."
    assert joiner.join is not None and joiner.join.preamble


def test_safe_commits_never_end_between_a_genuine_repeat() -> None:
    """ "that that": nothing is committed between the two, so no resume can start there."""
    text = "He said that that was all. " + "Then the rain came down over the valley and the river rose. " * 3
    joiner = Joiner(ResumeMode.FRESH, "", safe_commits=True)
    pieces = [joiner.feed(text[i : i + 3]) for i in range(0, len(text), 3)]
    commits = list(itertools.accumulate(pieces))
    assert "He said that " not in commits
    assert commits[-1] + joiner.finish() == text


def test_max_tokens_drops_the_text_that_is_not_yet_safe() -> None:
    joiner = Joiner(ResumeMode.FRESH, "", safe_commits=True)
    text = (
        "A long enough line of prose that has no newline in it at all, so it runs on and on. " * 2
        + "The gran"
    )
    out = joiner.feed(text) + joiner.finish(complete=False)
    assert text.startswith(out) and len(out) < len(text)
    assert out[-1].isspace()


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
