"""Content blocks in job messages (issue 19, item 3): refused at enqueue with their field path,
kept as given, sent to the API as written (the simulator records the bodies), resumed
byte-identically, within the API's 4 cache breakpoints, and estimated for the limiter."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from jobs.blocks import IMAGE_TOKENS, MAX_BREAKPOINTS, PDF_PAGE_TOKENS, estimate_chars
from jobs.costs import load_prices, worst_case_usd
from jobs.jsonl import parse_jobs
from jobs.models import JobSpec, Message, ResumeMode
from tests.pool_harness import CONTINUATION_MODEL, PREFILL_MODEL, pool_run, spec
from worker.caching import MinimumLearner, mark_request
from worker.config import AnthropicSettings, Config
from worker.resume import build_messages
from worker.simulator import Simulator, SimulatorConfig
from worker.simulator.content import IMAGE_TOKENS as SIM_IMAGE_TOKENS
from worker.simulator.content import PDF_TOKENS as SIM_PDF_TOKENS

CONFIG = Config(anthropic=AnthropicSettings(model=CONTINUATION_MODEL, max_tokens=4096))
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
PDF = base64.b64encode(
    b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n2 0 obj << /Type /Page >> endobj\n"
).decode()
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
DOCUMENT = {
    "type": "document",
    "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
    "title": "Notes",
    "cache_control": {"type": "ephemeral", "ttl": "5m"},
}


def text(value: str, ttl: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": value}
    if ttl is not None:
        block["cache_control"] = {"type": "ephemeral", "ttl": ttl}
    return block


def parse(content: object, *more: dict[str, Any], **fields: Any) -> tuple[list[JobSpec], list[str]]:
    messages = [{"role": "user", "content": content}, *more]
    line = json.dumps({"id": "j", "messages": messages, **fields})
    return parse_jobs([line], "f.jsonl", CONFIG.job_defaults())


# -- enqueue ---------------------------------------------------------------------------------------


def test_text_image_and_document_blocks_are_kept_as_given() -> None:
    content = [
        text("Describe these."),
        IMAGE,
        DOCUMENT,
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
    ]
    [job], errors = parse(content)
    assert errors == []
    assert job.messages == (Message("user", tuple(content)),)
    assert job.messages[0].text == "Describe these."


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ({"type": "audio"}, 'content[2].type: unknown block type "audio" (known: text, image, document)'),
        (
            {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": PNG}},
            "content[2].source.media_type: must be one of image/jpeg, image/png, image/gif, image/webp",
        ),
        (
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}},
            "content[2].source.data: is not valid base64",
        ),
        (
            {"type": "image", "source": {"type": "file", "file_id": "f"}},
            "content[2].source.type: must be one of base64, url for an image",
        ),
        (
            {"type": "image", "source": {"type": "url", "url": "ftp://x"}},
            "content[2].source.url: must be an http(s) URL",
        ),
        (
            {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": "eA=="}},
            'content[2].source.media_type: must be one of application/pdf, got "text/plain" (a text/plain',
        ),
        (
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PNG}},
            "content[2].source.data: is not a PDF",
        ),
        (
            {**text("x"), "cache_control": {"type": "ephemeral", "ttl": "10m"}},
            'content[2].cache_control.ttl: must be "5m" or "1h"',
        ),
        ({**text("x"), "citations": []}, "content[2].citations: unknown field of a text block"),
        (text("  "), "content[2].text: must be a non-empty string"),
    ],
)
def test_a_bad_block_is_refused_at_enqueue_with_its_path(block: dict[str, Any], problem: str) -> None:
    specs, errors = parse([text("One."), IMAGE, block])
    assert specs == []
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"f.jsonl:1: messages[0].{problem}"), errors[0]


def test_an_image_past_the_apis_5_mb_is_refused() -> None:
    big = base64.b64encode(b"\0" * (5 * 1024 * 1024 + 1)).decode()
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": big}}
    _, [error] = parse([block])
    assert error == (
        "f.jsonl:1: messages[0].content[0].source.data: "
        "is 5,242,881 bytes; the API takes at most 5,242,880 for an image"
    )


def test_a_job_past_the_apis_32_mb_request_is_refused() -> None:
    pdf = base64.b64encode(b"%PDF" + b"\0" * (9 * 1024 * 1024)).decode()
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
    }
    _, [error] = parse([document] * 3)
    assert error.startswith("f.jsonl:1: messages: are 37,")
    assert error.endswith("bytes as sent; the API takes requests of at most 33,554,432")


def test_an_assistant_turn_takes_text_blocks_only() -> None:
    _, errors = parse("Go.", {"role": "assistant", "content": [IMAGE]}, {"role": "user", "content": "More."})
    assert errors == [
        "f.jsonl:1: messages[1].content[0].type: an assistant turn takes text blocks only, got 'image'"
    ]


def test_a_block_prefill_ending_in_whitespace_is_refused_at_its_last_block() -> None:
    prefill = {"role": "assistant", "content": [text("Once"), text(" upon ")]}
    _, errors = parse("Go.", prefill, model=PREFILL_MODEL)
    assert errors == [
        "f.jsonl:1: messages[1].content[1].text: "
        "a final assistant turn must not end in whitespace (the API refuses it)"
    ]


def test_more_than_4_marks_or_1h_after_5m_are_refused() -> None:
    _, [error] = parse([text(f"part {n}", "5m") for n in range(5)])
    assert error.startswith("f.jsonl:1: messages[0].content[4].cache_control: 5 cache_control marks")
    _, [error] = parse([text("a", "5m"), text("b", "1h")])
    assert error.startswith(
        'f.jsonl:1: messages[0].content[1].cache_control: a "1h" mark must not come after'
    )


# -- the request: resume, caching, estimate --------------------------------------------------------


def test_resume_with_block_messages_keeps_the_blocks_and_appends_only_the_text() -> None:
    user = Message("user", (text("Describe."), IMAGE))
    job = dataclasses.replace(spec("r"), messages=(user,))
    messages, _ = build_messages(job, "So far", ResumeMode.CONTINUATION)
    assert messages[0] == {"role": "user", "content": [text("Describe."), IMAGE]}
    assert messages[1] == {"role": "assistant", "content": "So far"}
    assert messages[2]["role"] == "user" and isinstance(messages[2]["content"], str)
    prefill = Message("assistant", (text("Once", "5m"), text(" upon")))
    job = dataclasses.replace(job, messages=(user, prefill))
    messages, carry = build_messages(job, " a time \n", ResumeMode.PREFILL)
    assert messages[1] == {"role": "assistant", "content": [text("Once", "5m"), text(" upon a time")]}
    assert carry == " \n"
    assert job.messages[1].content[1] == text(" upon"), "the spec's own blocks are not changed"


def request(content: list[dict[str, Any]], system: str | None = "S" * 400) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": content}],
    }
    if system is not None:
        params["system"] = system
    return params


def marks(params: dict[str, Any]) -> list[str]:
    contents = [params.get("system"), *(m["content"] for m in params["messages"])]
    return [
        b["cache_control"]["ttl"] for c in contents if isinstance(c, list) for b in c if "cache_control" in b
    ]


@pytest.mark.parametrize(("theirs", "ours"), [(0, 2), (1, 2), (2, 2), (3, 1), (4, 0)])
def test_our_breakpoints_fill_only_what_the_users_leave_of_4(theirs: int, ours: int) -> None:
    content = [text(f"part {n}", "5m" if n < theirs else None) for n in range(6)]
    params = request(content)
    placed = mark_request(params, prompt_messages=1, ttl="5m", system_tokens=100, learner=MinimumLearner())
    assert placed == ours
    assert len(marks(params)) == theirs + ours <= MAX_BREAKPOINTS
    assert params["messages"][0]["content"][:theirs] == content[:theirs], "the user's marks are kept"


def test_a_users_mark_on_the_last_block_is_not_doubled_and_ttl_order_is_kept() -> None:
    params = request([text("a"), text("b", "1h")])
    placed = mark_request(params, prompt_messages=1, ttl="5m", system_tokens=100, learner=MinimumLearner())
    assert placed == 0, "a 5m system mark before their 1h one would be refused by the API"
    assert marks(params) == ["1h"]
    params = request([text("a"), text("b", "5m")])
    assert mark_request(params, prompt_messages=1, ttl="1h", system_tokens=100, learner=MinimumLearner()) == 1
    assert marks(params) == ["1h", "5m"]


def test_the_estimate_counts_block_text_and_a_stated_figure_for_media() -> None:
    assert estimate_chars("abcd") == 4
    assert estimate_chars([text("abcd"), text("ef")]) == 6
    assert estimate_chars([IMAGE]) == IMAGE_TOKENS * 4
    pages = 2  # two /Type /Page markers
    assert estimate_chars([DOCUMENT]) == len("Notes") + pages * PDF_PAGE_TOKENS * 4
    plain = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x" * 90}}
    assert estimate_chars([plain]) == 90


def test_the_dry_run_estimate_counts_an_image() -> None:
    plain = spec("p", model=PREFILL_MODEL)
    with_image = dataclasses.replace(
        plain, messages=(Message("user", (text(plain.messages[0].text), IMAGE)),)
    )
    prices = load_prices()
    low, high = worst_case_usd(prices, plain), worst_case_usd(prices, with_image)
    assert low is not None and high is not None and high > low


async def test_the_simulator_bills_media_tokens_and_answers_a_bad_block_with_the_apis_400(
    simulator: Simulator,
) -> None:
    async def send(content: list[dict[str, Any]]) -> httpx2.Response:
        body = {"model": PREFILL_MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": content}]}
        async with httpx2.AsyncClient(base_url=simulator.base_url) as http:
            return await http.post("/v1/messages", json=body, headers={"authorization": "Bearer k"})

    alone = (await send([text("Hello there.")])).json()["usage"]["input_tokens"]
    both = await send([text("Hello there."), IMAGE, DOCUMENT])
    assert both.status_code == 200
    usage = both.json()["usage"]
    prompt = usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
    assert prompt == alone + SIM_IMAGE_TOKENS + SIM_PDF_TOKENS
    bad = await send(
        [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PNG}}]
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == {
        "type": "invalid_request_error",
        "message": "messages.0.content.0.document.source.base64: The PDF specified was not valid.",
    }


# -- end to end, the real SDK against the simulator ------------------------------------------------


def block_job(job_id: str, model: str, faults: str | None = None) -> JobSpec:
    base = spec(job_id, tokens=1500, model=model, max_tokens=700, faults=faults)
    blocks = (text(base.messages[0].text, "5m"), IMAGE, DOCUMENT, text("Use both.", "5m"))
    return dataclasses.replace(base, messages=(Message("user", blocks),), system="Be exact. " * 60)


async def test_block_content_arrives_at_the_api_as_written(tmp_path: Path) -> None:
    """From a JSONL line to the request body the simulator recorded: the blocks as written, and
    the user's three marks plus one of ours on the system prompt: the API's 4, not more."""
    given = block_job("b", PREFILL_MODEL)
    line = {
        "id": "b",
        "messages": [{"role": "user", "content": list(given.messages[0].content)}],
        "system": given.system,
        "model": PREFILL_MODEL,
        "max_tokens": 700,
    }
    [job], errors = parse_jobs([json.dumps(line)], "f.jsonl", CONFIG.job_defaults())
    assert errors == []
    run = await pool_run(tmp_path, [job], sim_config=SimulatorConfig(record_requests=True))
    run.assert_exact([job])
    bodies = run.simulator.recorded
    assert len(bodies) >= 2, "a document past max_tokens takes several requests"
    for body in bodies:
        sent = body["messages"][0]["content"]
        assert sent[:3] == list(job.messages[0].content)[:3], "the blocks are sent as written"
        assert sum("cache_control" in b for b in sent) == 3, "the user's three marks, none added"
        assert "cache_control" in body["system"][0], "ours: the fourth, on the system prompt"


@pytest.mark.parametrize("model", [PREFILL_MODEL, CONTINUATION_MODEL])
async def test_a_block_job_resumed_after_faults_stays_byte_identical(tmp_path: Path, model: str) -> None:
    jobs = [block_job(f"f{i}", model, faults=f"drop=0.4,midstream_error=0.3,seed={i}") for i in range(3)]
    run = await pool_run(tmp_path, jobs, sim_config=SimulatorConfig(record_requests=True))
    run.assert_exact(jobs)
    bodies = run.simulator.recorded
    assert len(bodies) > 2 * len(jobs), "the faults made the jobs resume"
    for body in bodies:
        assert body["messages"][0]["content"][1] == IMAGE
        if len(body["messages"]) > 1:
            assert body["messages"][1]["role"] == "assistant"
            assert isinstance(body["messages"][1]["content"], str), (
                "the document is only the assistant's text"
            )
