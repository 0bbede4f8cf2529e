"""Content blocks in a job's messages: checked at enqueue, kept as given, estimated for the limiter.

A message's ``content`` is a string or a list of blocks, as the Messages API takes it::

    {"type": "text", "text": "...", "cache_control"?: {"type": "ephemeral", "ttl"?: "5m" | "1h"}}
    {"type": "image", "source": SOURCE, "cache_control"?: ...}
    {"type": "document", "source": SOURCE, "title"?: "...", "context"?: "...", "cache_control"?: ...}

An image's SOURCE is ``{"type": "base64", "media_type": "image/jpeg" | "image/png" | "image/gif" |
"image/webp", "data": ...}`` or ``{"type": "url", "url": "https://..."}``; a document's is
``{"type": "base64", "media_type": "application/pdf", "data": ...}``, ``{"type": "text",
"media_type": "text/plain", "data": ...}`` or ``{"type": "url", "url": ...}`` (a PDF). Why at
enqueue: each mistake here would cost a queue wait and then a 400. The limits are the API's: an
image of at most 5 MB, a request of at most 32 MB (so a document of at most that); an assistant
turn takes text blocks only (the API refuses a document there, and images are a user's input).

The user's own ``cache_control`` marks are kept and counted: at most 4 in a job (the API's limit
per request, which ours must share, see ``worker.caching``), and a ``1h`` mark never after a ``5m``
one (the API refuses that order).

**Input estimate** (:func:`estimate_chars`, in characters, which the economy turns into tokens at
≤ 4 characters a token). Text counts its length. An image counts ``IMAGE_TOKENS`` (1,600) tokens
whatever its bytes: the API scales a large image down and bills about width×height/750 tokens,
which is at most ~1,600 at its default resolution, and the size is not knowable from base64
without decoding the image. A PDF counts ``PDF_PAGE_TOKENS`` (2,500) tokens a page (its text plus
an image of the page); pages are counted from the ``/Type /Page`` markers of the decoded bytes,
or, when none are visible (compressed object streams), one page per 50 KB. A PDF by URL is
assumed to have ``URL_PDF_PAGES`` (10) pages. A plain-text document counts its text.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = (
    "BLOCK_TYPES",
    "IMAGE_MEDIA_TYPES",
    "MAX_IMAGE_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_BREAKPOINTS",
    "IMAGE_TOKENS",
    "PDF_PAGE_TOKENS",
    "URL_PDF_PAGES",
    "check_content",
    "check_breakpoints",
    "check_size",
    "content_json",
    "content_from_json",
    "text_of",
    "estimate_chars",
)

BLOCK_TYPES = ("text", "image", "document")
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
#: The API's limits: 5 MB an image, 32 MB a request.
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_REQUEST_BYTES = 32 * 1024 * 1024
#: ``cache_control`` marks per request, ours and the user's together.
MAX_BREAKPOINTS = 4
IMAGE_TOKENS = 1_600
PDF_PAGE_TOKENS = 2_500
URL_PDF_PAGES = 10
_CHARS_PER_TOKEN = 4
_PDF_BYTES_PER_PAGE = 50_000
_PAGE_MARK = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_FIELDS = {
    "text": ("type", "text", "cache_control"),
    "image": ("type", "source", "cache_control"),
    "document": ("type", "source", "title", "context", "cache_control"),
}

#: Reports one problem: (field path, what is wrong).
Report = Callable[[str, str], None]


def check_content(
    field: str, value: object, role: str, problem: Report
) -> str | tuple[dict[str, Any], ...] | None:
    """A message's content as given (a string, or a tuple of blocks), or None after reporting."""
    if isinstance(value, str):
        if not value.strip():
            problem(field, "must not be empty" if not value else "must not be only whitespace")
            return None
        return value
    if not isinstance(value, list) or not value:
        problem(field, f"must be a string or a non-empty list of content blocks, got {_kind(value)}")
        return None
    before = _Counter(problem)
    for n, block in enumerate(value):
        _check_block(f"{field}[{n}]", block, role, before)
    if before.count:
        return None
    return tuple(_copy(block) for block in value)


class _Counter:
    """Counts the problems it passes on, so the caller knows whether its part was clean."""

    def __init__(self, problem: Report) -> None:
        self.problem = problem
        self.count = 0

    def __call__(self, field: str, message: str) -> None:
        self.count += 1
        self.problem(field, message)


def _check_block(where: str, block: object, role: str, problem: Report) -> None:
    if not isinstance(block, dict):
        problem(where, f"must be a content block object, got {_kind(block)}")
        return
    kind = block.get("type")
    if kind not in _FIELDS:
        problem(f"{where}.type", f"unknown block type {_shown(kind)} (known: {', '.join(BLOCK_TYPES)})")
        return
    if role == "assistant" and kind != "text":
        problem(f"{where}.type", f"an assistant turn takes text blocks only, got {kind!r}")
        return
    for key in sorted(set(block) - set(_FIELDS[kind])):
        problem(f"{where}.{key}", f"unknown field of a {kind} block (known: {', '.join(_FIELDS[kind])})")
    if "cache_control" in block:
        _check_cache_control(f"{where}.cache_control", block["cache_control"], problem)
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str) or not text.strip():
            problem(f"{where}.text", f"must be a non-empty string, got {_kind(text)}")
        return
    for key in ("title", "context"):
        if key in block and not isinstance(block[key], str):
            problem(f"{where}.{key}", f"must be a string, got {_kind(block[key])}")
    _check_source(f"{where}.source", block.get("source"), kind, problem)


def _check_cache_control(where: str, control: object, problem: Report) -> None:
    if not isinstance(control, dict):
        problem(where, f'must be {{"type": "ephemeral"}} with an optional ttl, got {_kind(control)}')
        return
    for key in sorted(set(control) - {"type", "ttl"}):
        problem(f"{where}.{key}", "unknown field (known: type, ttl)")
    if control.get("type") != "ephemeral":
        problem(f"{where}.type", f'must be "ephemeral", got {_shown(control.get("type"))}')
    if "ttl" in control and control["ttl"] not in ("5m", "1h"):
        problem(f"{where}.ttl", f'must be "5m" or "1h", got {_shown(control["ttl"])}')


def _check_source(where: str, source: object, kind: str, problem: Report) -> None:
    kinds = ("base64", "url") if kind == "image" else ("base64", "text", "url")
    if not isinstance(source, dict):
        problem(where, f"must be a source object (type: {', '.join(kinds)}), got {_kind(source)}")
        return
    source_type = source.get("type")
    if source_type not in kinds:
        problem(
            f"{where}.type", f"must be one of {', '.join(kinds)} for {_a(kind)}, got {_shown(source_type)}"
        )
        return
    if source_type == "url":
        _only(where, source, ("type", "url"), problem)
        url = source.get("url")
        if not isinstance(url, str) or not re.match(r"https?://[^\s/]+", url):
            problem(f"{where}.url", f"must be an http(s) URL, got {_shown(url)}")
        return
    _only(where, source, ("type", "media_type", "data"), problem)
    allowed = (
        IMAGE_MEDIA_TYPES
        if kind == "image"
        else (("application/pdf",) if source_type == "base64" else ("text/plain",))
    )
    media_type = source.get("media_type")
    if media_type not in allowed:
        hint = ' (a text/plain document takes source type "text")' if media_type == "text/plain" else ""
        problem(f"{where}.media_type", f"must be one of {', '.join(allowed)}, got {_shown(media_type)}{hint}")
        return
    data = source.get("data")
    if not isinstance(data, str) or not data:
        problem(f"{where}.data", f"must be a non-empty string, got {_kind(data)}")
    elif source_type == "base64":
        _check_base64(f"{where}.data", data, kind, problem)


def _check_base64(where: str, data: str, kind: str, problem: Report) -> None:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        problem(where, "is not valid base64 (standard alphabet, padded, no line breaks)")
        return
    if kind == "document" and not raw.startswith(b"%PDF"):
        problem(where, "is not a PDF (its bytes do not start with %PDF)")
    size = len(raw)
    limit = MAX_IMAGE_BYTES if kind == "image" else MAX_REQUEST_BYTES
    if size > limit:
        problem(where, f"is {size:,} bytes; the API takes at most {limit:,} for {_a(kind)}")


def _only(where: str, source: Mapping[str, Any], known: tuple[str, ...], problem: Report) -> None:
    for key in sorted(set(source) - set(known)):
        problem(f"{where}.{key}", f"unknown field (known: {', '.join(known)})")


def check_breakpoints(contents: Iterable[tuple[str, object]], problem: Report) -> None:
    """The user's own marks over a job's messages (field, content): at most ``MAX_BREAKPOINTS``,
    and no ``1h`` after a ``5m`` (the API's rules, which hold for the whole request)."""
    marks: list[tuple[str, str]] = []
    for field, content in contents:
        for n, block in enumerate(content if isinstance(content, tuple) else ()):
            control = block.get("cache_control")
            if isinstance(control, dict):
                marks.append((f"{field}[{n}].cache_control", str(control.get("ttl", "5m"))))
    if len(marks) > MAX_BREAKPOINTS:
        problem(
            marks[MAX_BREAKPOINTS][0],
            f"{len(marks)} cache_control marks; the API takes at most {MAX_BREAKPOINTS} a request",
        )
    seen_5m = False
    for where, ttl in marks:
        if ttl == "5m":
            seen_5m = True
        elif seen_5m:
            problem(where, 'a "1h" mark must not come after a "5m" one (the API refuses that order)')
            return


def check_size(contents: Sequence[str | tuple[dict[str, Any], ...]], problem: Report) -> None:
    """The messages' bytes as sent (base64 included) within the API's 32 MB a request."""
    size = 0
    for content in contents:
        encoded = content if isinstance(content, str) else json.dumps(list(content), ensure_ascii=False)
        size += len(encoded.encode("utf-8", "surrogatepass"))
    if size > MAX_REQUEST_BYTES:
        problem(
            "messages", f"are {size:,} bytes as sent; the API takes requests of at most {MAX_REQUEST_BYTES:,}"
        )


def content_json(content: str | Sequence[Mapping[str, Any]]) -> str | list[dict[str, Any]]:
    """The content as the API and the store take it: a fresh copy, so a request may change its blocks."""
    return content if isinstance(content, str) else [_copy(block) for block in content]


def content_from_json(value: object) -> str | tuple[dict[str, Any], ...]:
    """The inverse of :func:`content_json`, for stored messages (checked at enqueue)."""
    if isinstance(value, list):
        return tuple(_copy(block) for block in value)
    return str(value)


def text_of(content: str | Sequence[Mapping[str, Any]], joiner: str = "") -> str:
    """The text of the content's text blocks, joined as the API reads them (``\\n`` in a user turn)."""
    if isinstance(content, str):
        return content
    return joiner.join(str(block["text"]) for block in content if block.get("type") == "text")


def estimate_chars(content: object) -> int:
    """The content's size in characters of prompt, for the limiter and cost estimates (module docstring)."""
    if isinstance(content, str):
        return len(content)
    if not isinstance(content, Sequence):
        return 0
    return sum(_block_chars(block) for block in content if isinstance(block, Mapping))


def _block_chars(block: Mapping[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return len(str(block.get("text", "")))
    if kind == "image":
        return IMAGE_TOKENS * _CHARS_PER_TOKEN
    source = block.get("source")
    source = source if isinstance(source, Mapping) else {}
    extra = len(str(block.get("title") or "")) + len(str(block.get("context") or ""))
    if source.get("type") == "text":
        return extra + len(str(source.get("data", "")))
    if source.get("type") == "url":
        return extra + URL_PDF_PAGES * PDF_PAGE_TOKENS * _CHARS_PER_TOKEN
    return extra + _pdf_pages(str(source.get("data", ""))) * PDF_PAGE_TOKENS * _CHARS_PER_TOKEN


def _pdf_pages(data: str) -> int:
    try:
        raw = base64.b64decode(data)
    except (binascii.Error, ValueError):
        return 1
    pages = len(_PAGE_MARK.findall(raw))
    return pages or max(1, math.ceil(len(raw) / _PDF_BYTES_PER_PAGE))


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "image" else f"a {kind}"


def _shown(value: object) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: object) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        float: "a number",
        int: "an integer",
    }
    if value is None:
        return "null"
    if value == "":
        return "an empty string"
    if isinstance(value, str) and not value.strip():
        return "only whitespace"
    return names.get(type(value), type(value).__name__)
