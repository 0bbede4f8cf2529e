"""Parsing job definitions from JSONL: every problem reported as ``FILE:LINE: field: problem``."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.jsonl import JOB_ID_PATTERN, check_job, derived_id, is_valid_job_id, parse_jobs
from jobs.models import Message
from worker.config import AnthropicSettings, Config, CostSettings, QueueSettings

CONFIG = Config(
    anthropic=AnthropicSettings(model="default-model", max_tokens=111, output_budget=2222),
    queue=QueueSettings(max_attempts=4),
)


def parse(*lines: str | bytes) -> tuple[list[Any], list[str]]:
    return parse_jobs(lines, "f.jsonl", CONFIG.job_defaults())


def line(**fields: Any) -> str:
    return json.dumps(fields)


def test_defaults_come_from_the_config() -> None:
    [spec], errors = parse(line(id="a", prompt="Write."))
    assert errors == []
    assert (spec.id, spec.messages) == ("a", (Message("user", "Write."),))
    assert (spec.model, spec.max_tokens, spec.output_budget, spec.max_attempts) == (
        "default-model",
        111,
        2222,
        4,
    )
    assert (spec.system, spec.priority, spec.run_at, spec.metadata) == (None, 0, None, {})


def test_every_field_is_read() -> None:
    fields = {
        "id": "doc-1.v2_final",
        "messages": [
            {"role": "user", "content": "Outline."},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "1. "}, {"type": "text", "text": "Intro"}],
            },
            {"role": "user", "content": "Now write it."},
        ],
        "system": "You are terse.",
        "model": "m",
        "max_tokens": 5,
        "output_budget": 50,
        "max_attempts": 2,
        "priority": -3,
        "run_at": "2026-05-01T12:00:00+02:00",
        "metadata": {"team": "docs", "n": [1, 2]},
    }
    [spec], errors = parse(json.dumps(fields))
    assert errors == []
    assert spec.messages == (
        Message("user", "Outline."),
        Message("assistant", ({"type": "text", "text": "1. "}, {"type": "text", "text": "Intro"})),
        Message("user", "Now write it."),
    )
    assert spec.messages[1].text == "1. Intro"
    assert (spec.system, spec.model, spec.max_tokens, spec.output_budget, spec.max_attempts) == (
        "You are terse.",
        "m",
        5,
        50,
        2,
    )
    assert spec.priority == -3
    assert spec.run_at == datetime(2026, 5, 1, 10, 0, tzinfo=UTC).timestamp()
    assert spec.metadata == {"team": "docs", "n": [1, 2]}


def test_run_at_accepts_z_and_epoch_seconds() -> None:
    specs, errors = parse(
        line(id="a", prompt="x", run_at="2026-01-01T00:00:00Z"), line(id="b", prompt="x", run_at=5)
    )
    assert errors == []
    assert [s.run_at for s in specs] == [datetime(2026, 1, 1, tzinfo=UTC).timestamp(), 5.0]


def test_missing_id_is_derived_from_the_line_and_stable() -> None:
    """Re-enqueueing the same file finds the same ids; key order and spacing do not matter."""
    [a], _ = parse('{"prompt": "x", "priority": 1}')
    [b], _ = parse('{"priority":1,"prompt":"x"}')
    [c], _ = parse('{"prompt": "y", "priority": 1}')
    assert a.id == b.id == derived_id({"prompt": "x", "priority": 1})
    assert a.id != c.id
    assert re.fullmatch(r"job-[0-9a-f]{20}", a.id)


def test_line_numbers_count_blank_lines_and_the_bom_is_ignored() -> None:
    specs, errors = parse("\ufeff" + line(id="a", prompt="x"), "", "   ", line(id="b"))
    assert [s.id for s in specs] == ["a"]
    assert errors == ['f.jsonl:4: prompt: one of "prompt" or "messages" is required']


def test_every_problem_of_a_line_is_reported() -> None:
    _, errors = parse(line(id="", prompt=1, max_tokens=0, extra=True, other=None))
    assert [e.split(": ")[1] for e in errors] == ["extra", "other", "id", "prompt", "max_tokens"]


def test_duplicate_ids_are_an_error() -> None:
    specs, errors = parse(
        line(id="a", prompt="x"), line(id="a", prompt="y"), line(prompt="z"), line(prompt="z")
    )
    assert [s.id for s in specs] == ["a", derived_id({"prompt": "z"})]
    assert errors[0] == "f.jsonl:2: id: duplicate of line 1 ('a')"
    assert errors[1].startswith("f.jsonl:4: id: duplicate of line 3")


BAD_LINES: list[tuple[str | bytes, str]] = [
    ("{not json", "f.jsonl:1: line: not valid JSON ("),
    ('{"prompt": NaN}', "f.jsonl:1: line: not valid JSON (NaN is not allowed)"),
    (b'{"prompt": "\xff"}', "f.jsonl:1: line: not valid UTF-8 ("),
    ("[1, 2]", "f.jsonl:1: line: must be a JSON object, got a list"),
    ('"text"', "f.jsonl:1: line: must be a JSON object, got a string"),
    (line(id="a"), 'f.jsonl:1: prompt: one of "prompt" or "messages" is required'),
    (line(prompt="x", messages=[]), 'f.jsonl:1: messages: give "prompt" or "messages", not both'),
    (line(prompt=""), "f.jsonl:1: prompt: must not be empty"),
    (line(prompt=["x"]), "f.jsonl:1: prompt: must be a string, got a list"),
    (line(messages=[]), "f.jsonl:1: messages: must be a non-empty list of messages, got an empty list"),
    (line(messages="hi"), "f.jsonl:1: messages: must be a non-empty list of messages, got a string"),
    (line(messages=["hi"]), "f.jsonl:1: messages[0]: must be an object with role and content, got a string"),
    (line(messages=[{"role": "system", "content": "x"}]), 'f.jsonl:1: messages[0].role: must be "user" or'),
    (
        line(messages=[{"role": "assistant", "content": "x"}]),
        "f.jsonl:1: messages[0].role: the first message",
    ),
    (line(messages=[{"role": "user", "content": ""}]), "f.jsonl:1: messages[0].content: must not be empty"),
    (line(messages=[{"role": "user", "content": 3}]), "f.jsonl:1: messages[0].content: must be a string or"),
    (line(messages=[{"role": "user", "content": []}]), "f.jsonl:1: messages[0].content: must be a string or"),
    (
        line(messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}]),
        "f.jsonl:1: messages[0].content[0].source.type: must be one of base64, url for an image",
    ),
    (
        line(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]),
        "f.jsonl:1: messages[0].content[0].text: must be a non-empty string",
    ),
    (
        line(messages=[{"role": "user", "content": "x", "name": "n"}]),
        "f.jsonl:1: messages[0].name: unknown field",
    ),
    (line(prompt="x", colour="red"), "f.jsonl:1: colour: unknown field (known: id, prompt,"),
    (line(prompt="x", id="../etc/passwd"), "f.jsonl:1: id: must be 1-200 characters"),
    (line(prompt="x", id=".hidden"), "f.jsonl:1: id: must be 1-200 characters"),
    (line(prompt="x", id="a" * 201), "f.jsonl:1: id: must be 1-200 characters"),
    (line(prompt="x", id=7), "f.jsonl:1: id: must be 1-200 characters"),
    (line(prompt="x", system=5), "f.jsonl:1: system: must be a string, got an integer"),
    (line(prompt="x", model=""), "f.jsonl:1: model: must not be empty"),
    (line(prompt="x", max_tokens=0), "f.jsonl:1: max_tokens: must be a positive integer, got 0"),
    (line(prompt="x", output_budget=1.5), "f.jsonl:1: output_budget: must be an integer, got a number"),
    (line(prompt="x", max_attempts="3"), "f.jsonl:1: max_attempts: must be an integer, got a string"),
    (line(prompt="x", max_attempts=True), "f.jsonl:1: max_attempts: must be an integer, got a boolean"),
    (line(prompt="x", priority=2**70), "f.jsonl:1: priority: must fit in 64 bits"),
    (
        line(prompt="x", run_at="tomorrow"),
        "f.jsonl:1: run_at: must be an ISO 8601 date and time with an offset",
    ),
    (
        line(prompt="x", run_at="2026-01-01T00:00:00"),
        "f.jsonl:1: run_at: needs a UTC offset, e.g. 2026-01-01T00:00:00Z or 2026-01-01T00:00:00+00:00",
    ),
    (
        line(prompt="x", run_at="2030-01-01"),
        "f.jsonl:1: run_at: a date alone is not a time: give one with an offset, e.g. 2030-01-01T00:00:00Z",
    ),
    (line(prompt="x", run_at="2030-01-01+00:00"), "f.jsonl:1: run_at: a date alone is not a time"),
    (line(prompt="x", run_at="2030-01-01Z"), "f.jsonl:1: run_at: must be an ISO 8601 date and time"),
    ('{"prompt": "\\ud800"}', "f.jsonl:1: prompt: contains a lone surrogate (\\ud800)"),
    (
        '{"prompt": "x", "metadata": {"k": ["\\udc00"]}}',
        "f.jsonl:1: metadata.k[0]: contains a lone surrogate",
    ),
    (line(prompt=" \n\t"), "f.jsonl:1: prompt: must not be only whitespace"),
    (
        line(messages=[{"role": "user", "content": "   "}]),
        "f.jsonl:1: messages[0].content: must not be only whitespace",
    ),
    (
        line(messages=[{"role": "user", "content": [{"type": "text", "text": " "}]}]),
        "f.jsonl:1: messages[0].content[0].text: must be a non-empty string, got only whitespace",
    ),
    (
        line(messages=[{"role": "user", "content": "Write."}, {"role": "assistant", "content": "Once "}]),
        "f.jsonl:1: messages[1].content: a final assistant turn must not end in whitespace",
    ),
    (
        line(
            model="claude-sonnet-5-5",
            messages=[{"role": "user", "content": "Write."}, {"role": "assistant", "content": "Once"}],
        ),
        "f.jsonl:1: messages[1].role: model claude-sonnet-5-5 does not accept a final assistant turn",
    ),
    (
        '{"prompt": "x", "max_tokens": ' + "9" * 5000 + "}",
        "f.jsonl:1: line: not valid JSON (an integer with more",
    ),
    ('{"prompt": "a\tb"}', "f.jsonl:1: line: not valid JSON (Invalid control character at column"),
    (
        line(prompt="x", id="bad id!"),
        "f.jsonl:1: id: must be 1-200 characters of A-Z a-z 0-9 . _ - and not start",
    ),
    (line(prompt="x", run_at=-1), "f.jsonl:1: run_at: must be a time in epoch seconds, got -1"),
    (
        line(prompt="x", run_at=1.7e12),
        "f.jsonl:1: run_at: must be a time in epoch seconds, got 1700000000000.0",
    ),
    (line(prompt="x", run_at=[1]), "f.jsonl:1: run_at: must be an ISO-8601 string or a number, got a list"),
    (line(prompt="x", metadata=[1]), "f.jsonl:1: metadata: must be an object, got a list"),
]


def test_a_bad_id_is_echoed_back() -> None:
    _, [error] = parse(line(prompt="x", id="bad id!"))
    assert error.endswith(', got "bad id!"')


def test_content_blocks_are_kept_as_given_and_read_as_the_api_joins_them() -> None:
    """Blocks stay blocks (sent as written); their text reads as the API joins it: user blocks are
    separate paragraphs to the model, assistant blocks one continuing text."""
    blocks = [{"type": "text", "text": "Write about cats."}, {"type": "text", "text": "Keep it short."}]
    reply = [{"type": "text", "text": "Cats"}, {"type": "text", "text": " purr"}]
    messages = [{"role": "user", "content": blocks}, {"role": "assistant", "content": reply}]
    [spec], errors = parse(line(messages=messages, model="claude-haiku-4-5"))
    assert errors == []
    assert spec.messages == (Message("user", tuple(blocks)), Message("assistant", tuple(reply)))
    assert [m.text for m in spec.messages] == ["Write about cats.\nKeep it short.", "Cats purr"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2030-01-01T00:00:00Z", 1_893_456_000.0),
        ("2030-01-01 02:00+02:00", 1_893_456_000.0),
        ("20300101T0000Z", 1_893_456_000.0),
        ("2030-01-01T00:00:00.5+00:00", 1_893_456_000.5),
    ],
)
def test_run_at_accepts_iso_8601_times_with_an_offset(value: str, expected: float) -> None:
    [spec], errors = parse(line(prompt="x", run_at=value))
    assert (errors, spec.run_at) == ([], expected)


def test_check_job_returns_fields_and_problems() -> None:
    """The per-record validator the HTTP API shares: no file or line in its answers."""
    assert check_job([1], CONFIG.job_defaults()) == [("line", "must be a JSON object, got a list")]
    assert check_job({"prompt": "", "max_tokens": 0}, CONFIG.job_defaults()) == [
        ("prompt", "must not be empty"),
        ("max_tokens", "must be a positive integer, got 0"),
    ]
    spec = check_job({"id": "a", "prompt": "x"}, CONFIG.job_defaults())
    assert not isinstance(spec, list)
    assert (spec.id, spec.model) == ("a", "default-model")


@pytest.mark.parametrize(("text", "expected"), BAD_LINES)
def test_bad_lines_are_reported_with_file_line_and_field(text: str | bytes, expected: str) -> None:
    specs, errors = parse(text)
    assert specs == []
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors[0]


def test_nulls_mean_not_given() -> None:
    [spec], errors = parse(
        line(prompt="x", system=None, model=None, priority=None, run_at=None, metadata=None)
    )
    assert errors == []
    assert (spec.model, spec.priority, spec.system) == ("default-model", 0, None)


# -- properties ---------------------------------------------------------------------------------

ids = st.from_regex(JOB_ID_PATTERN, fullmatch=True)
#: Valid prompts and model ids: anything with a character that is not whitespace.
texts = st.text(min_size=1, max_size=30).filter(str.strip)
valid_lines = st.fixed_dictionaries(
    {"id": ids, "prompt": texts},
    optional={
        "system": st.text(max_size=10),
        "model": texts,
        "max_tokens": st.integers(1, 2**63 - 1),
        "priority": st.integers(-(2**63) + 1, 2**63 - 1),
        "run_at": st.floats(0, 1e10),
        "metadata": st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
    },
)


@settings(max_examples=60)
@given(valid_lines)
def test_valid_lines_round_trip(fields: dict[str, Any]) -> None:
    [spec], errors = parse(json.dumps(fields))
    assert errors == []
    assert (spec.id, spec.messages) == (fields["id"], (Message("user", fields["prompt"]),))
    assert spec.max_tokens == fields.get("max_tokens", CONFIG.anthropic.max_tokens)
    assert spec.priority == fields.get("priority", 0)
    assert spec.run_at == fields.get("run_at")
    assert spec.metadata == fields.get("metadata", {})


@settings(max_examples=100)
@given(st.lists(st.text(max_size=40) | st.binary(max_size=20), max_size=5))
def test_any_input_gives_specs_or_located_errors(lines: list[str | bytes]) -> None:
    """Garbage never raises; every error names the file, a line number and a field."""
    lines = [item.replace("\n", " ").replace("\r", " ") if isinstance(item, str) else item for item in lines]
    specs, errors = parse_jobs(lines, "in.jsonl", CONFIG.job_defaults())
    for error in errors:
        assert re.match(r"in\.jsonl:[1-5]: [^:\s]+: ", error), error
    assert len({spec.id for spec in specs}) == len(specs)


@given(st.text(max_size=210))
def test_a_valid_id_is_always_a_plain_file_name(value: str) -> None:
    if is_valid_job_id(value):
        out = Path("/export")
        assert (out / f"{value}.md").resolve().parent == out
        assert not value.startswith(".") and "/" not in value and "\\" not in value


def test_config_defaults_apply_per_file() -> None:
    other = replace(CONFIG, anthropic=replace(CONFIG.anthropic, model="other"))
    [spec], _ = parse_jobs([line(prompt="x")], "f.jsonl", other.job_defaults())
    assert spec.model == "other"


def test_cost_cap_and_prompt_cache_are_read_with_config_defaults() -> None:
    """A job's own ``max_cost_usd`` and ``prompt_cache`` win; otherwise [costs] gives them."""
    config = replace(CONFIG, costs=CostSettings(max_cost_usd=2.5, prompt_cache="1h"))
    [own, default], errors = parse_jobs(
        [line(id="a", prompt="W.", max_cost_usd=0.5, prompt_cache="off"), line(id="b", prompt="W.")],
        "f.jsonl",
        config.job_defaults(),
    )
    assert errors == []
    assert (own.max_cost_usd, own.prompt_cache) == (0.5, "off")
    assert (default.max_cost_usd, default.prompt_cache) == (2.5, "1h")
    [none], _ = parse(line(id="c", prompt="W."))
    assert (none.max_cost_usd, none.prompt_cache) == (None, "5m")


def test_bad_cost_cap_and_prompt_cache_name_the_line_and_field() -> None:
    specs, errors = parse(
        line(id="a", prompt="W.", max_cost_usd=0),
        line(id="b", prompt="W.", max_cost_usd="1"),
        line(id="c", prompt="W.", prompt_cache="forever"),
    )
    assert specs == []
    assert errors == [
        "f.jsonl:1: max_cost_usd: must be a positive number of US dollars, got 0",
        "f.jsonl:2: max_cost_usd: must be a number of US dollars, got a string",
        'f.jsonl:3: prompt_cache: must be one of off, 5m, 1h, got "forever"',
    ]


def test_mode_is_read_checked_and_defaults_from_the_config() -> None:
    [streamed, batched], errors = parse(line(id="a", prompt="W."), line(id="b", prompt="W.", mode="batch"))
    assert errors == [] and (streamed.mode, batched.mode) == ("stream", "batch")
    config = replace(CONFIG, queue=QueueSettings(default_mode="batch"))
    [spec], _ = parse_jobs([line(id="c", prompt="W.")], "f.jsonl", config.job_defaults())
    assert spec.mode == "batch"
    _, errors = parse(line(id="d", prompt="W.", mode="later"))
    assert errors == ['f.jsonl:1: mode: must be one of stream, batch, auto, got "later"']


def test_auto_mode_goes_by_batch_only_when_the_deadline_leaves_the_batch_horizon() -> None:
    now = datetime.now(UTC).timestamp()
    far = datetime.fromtimestamp(now + 2 * 86400, UTC).isoformat()
    [late, soon, epoch], errors = parse(
        line(id="a", prompt="W.", mode="auto", deadline=far),
        line(id="b", prompt="W.", mode="auto", deadline=now + 3600),
        line(id="c", prompt="W.", mode="auto", deadline=now + 90000),
    )
    assert errors == [] and (late.mode, soon.mode, epoch.mode) == ("batch", "stream", "batch")
    _, errors = parse(line(id="d", prompt="W.", mode="auto"), line(id="e", prompt="W.", deadline="tomorrow"))
    assert errors[0] == (
        "f.jsonl:1: mode: auto needs a deadline (a time, as run_at, or timeout_seconds)"
        " to choose batch or stream"
    )
    assert errors[1].startswith("f.jsonl:2: deadline: must be an ISO 8601 date and time")
    config = replace(CONFIG, queue=QueueSettings(default_mode="auto"))
    [plain], _ = parse_jobs([line(id="f", prompt="W.")], "f.jsonl", config.job_defaults())
    assert plain.mode == "stream"  # auto without a deadline: streamed


def test_a_batch_job_whose_deadline_is_inside_the_horizon_is_streamed() -> None:
    """Explicit ``batch`` follows the same rule (``jobs.batches.route``): a batch might land late."""
    now = datetime.now(UTC).timestamp()
    [soon, later, forever], errors = parse(
        line(id="a", prompt="W.", mode="batch", deadline=now + 3600),
        line(id="b", prompt="W.", mode="batch", deadline=now + 2 * 86400),
        line(id="c", prompt="W.", mode="batch"),
    )
    assert errors == [] and (soon.mode, later.mode, forever.mode) == ("stream", "batch", "batch")
    config = replace(CONFIG, queue=QueueSettings(batch_horizon=600))
    [short], _ = parse_jobs(
        [line(id="d", prompt="W.", mode="batch", deadline=now + 3600)], "f.jsonl", config.job_defaults()
    )
    assert short.mode == "batch"  # a 10-minute horizon: an hour is time enough


def test_timeout_seconds_is_a_deadline_for_the_route() -> None:
    [soon, later, explicit], errors = parse(
        line(id="a", prompt="W.", mode="auto", timeout_seconds=3600),
        line(id="b", prompt="W.", mode="auto", timeout_seconds=2 * 86400),
        line(id="c", prompt="W.", mode="batch", timeout_seconds=600),
    )
    assert errors == [] and (soon.mode, later.mode, explicit.mode) == ("stream", "batch", "stream")
    assert later.deadline is not None
