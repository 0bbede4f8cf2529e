"""``worker.sse_reader`` yields exactly the events the SDK's own decoder yields.

Streams are generated from event-stream lines (named and unnamed events, multi-line data, empty
data, comments, unknown fields, text outside ASCII), written with LF, CRLF or CR line ends, and cut
into chunks at random places, including inside a line end and inside a UTF-8 character. Both
decoders read the same chunks; their events must be equal, in order.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
from anthropic._streaming import SSEDecoder
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.sse_reader import Event, read_events

_VALUE = st.text(alphabet=st.characters(exclude_characters="\r\n\0", exclude_categories=["Cs"]), max_size=12)
_LINE = st.one_of(
    st.builds(lambda v: f"data: {v}", _VALUE),
    st.builds(lambda v: f"data:{v}", _VALUE),
    st.builds(lambda v: f"event: {v}", _VALUE),
    st.builds(lambda v: f": {v}", _VALUE),  # a comment
    st.builds(lambda v: f"unknown: {v}", _VALUE),
    st.just("data"),  # a field with no colon: empty data
)
_EVENT = st.lists(_LINE, min_size=0, max_size=4)


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


async def _both(parts: list[bytes]) -> tuple[list[Event], list[Event]]:
    ours = [event async for event in read_events(_chunks(parts))]
    theirs = [Event(sse.event, sse.data) async for sse in SSEDecoder().aiter_bytes(_chunks(parts))]
    return ours, theirs


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(_EVENT, max_size=6),
    line_end=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    unterminated=st.booleans(),
)
def test_the_same_events_as_the_sdk_decoder(
    events: list[list[str]], line_end: str, cuts: list[int], unterminated: bool
) -> None:
    text = "".join(line_end.join(lines) + line_end * 2 for lines in events)
    if unterminated:
        text += "data: the body ends here"
    parts = _split(text.encode(), cuts)
    ours, theirs = anyio.run(_both, parts)
    assert ours == theirs


def test_a_messages_stream_read_in_one_byte_chunks() -> None:
    """The events the API sends, each field read as the stream path reads it."""
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "naïve 日本"}}
    body = (
        "event: message_start\ndata: {}\n\n"
        'event: ping\ndata: {"type": "ping"}\n\n'
        f"event: content_block_delta\ndata: {json.dumps(delta, ensure_ascii=False)}\n\n"
    ).encode()
    ours, theirs = anyio.run(_both, [body[i : i + 1] for i in range(len(body))])
    assert ours == theirs
    assert [e.event for e in ours] == ["message_start", "ping", "content_block_delta"]
    assert json.loads(ours[2].data)["delta"]["text"] == "naïve 日本"
