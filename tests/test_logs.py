"""Logging: prompt text stays out of the logs unless asked for by name, and debug adds events."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from worker.logs import SDK_LOGGERS, configure_logging

PROMPT = "A SECRET PROMPT ABOUT CATS"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in SDK_LOGGERS}
    yield
    root.handlers, root.level = handlers, level
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)
    structlog.reset_defaults()


def sdk_request_lines() -> None:
    """What the SDK logs for one request: options (with the prompt) at debug, the line at info."""
    logging.getLogger("anthropic._base_client").debug("Request options: %s", {"messages": PROMPT})
    logging.getLogger("httpx2").info('HTTP Request: POST http://sim/v1/messages "HTTP/1.1 200 OK"')


def events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_anthropic_log_debug_does_not_put_prompts_in_our_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_LOG", "debug")
    logging.getLogger("anthropic").setLevel(logging.DEBUG)  # what the SDK did at import
    stream = io.StringIO()
    configure_logging("json", "debug", stream)
    sdk_request_lines()
    text = stream.getvalue()
    assert PROMPT not in text
    assert "HTTP Request: POST" in text, "debug shows the SDK's request lines"
    [warning] = [e for e in events(stream) if e["event"] == "anthropic_log_ignored"]
    assert warning["ANTHROPIC_LOG"] == "debug"


def test_sdk_level_debug_is_the_explicit_way_to_log_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_LOG", raising=False)
    stream = io.StringIO()
    configure_logging("json", "info", stream, sdk_level="debug")
    sdk_request_lines()
    assert PROMPT in stream.getvalue()


def test_info_level_keeps_library_chatter_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_LOG", raising=False)
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    sdk_request_lines()
    structlog.get_logger("worker.test").debug("request_sent", model="m")
    assert stream.getvalue() == ""


def test_debug_adds_our_debug_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_LOG", raising=False)
    stream = io.StringIO()
    configure_logging("json", "debug", stream)
    structlog.get_logger("worker.test").debug("request_sent", model="m")
    assert [e["event"] for e in events(stream)] == ["request_sent"]
