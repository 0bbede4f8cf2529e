"""Message content as the API reads it: a string, or a list of text, image and document blocks.

Validated like the API (the messages are its 400 wording, field paths with dots: ``messages.0.
content.1.image.source.base64.media_type``), and rendered as :class:`PromptBlock` for the prompt
cache. The model is simulated from text only, so an image or a document adds its tokens to the
prompt (and a cache key of its bytes), not words to the document:

* an image costs ``IMAGE_TOKENS`` (1,600, the most an image costs at the API's default
  resolution, which scales larger images down; width×height/750 below that);
* a PDF costs ``PDF_TOKENS`` (3,000: the simulator does not parse PDFs), a plain-text document
  the tokens of its text.

Limits: an image of at most 5 MB (decoded), an assistant turn of text blocks only (the API refuses
a ``document`` there and takes images only from the user).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from worker.simulator.cache import PromptBlock
from worker.simulator.text import count_tokens

__all__ = ("ContentError", "Content", "read_content", "IMAGE_TOKENS", "PDF_TOKENS")

IMAGE_TOKENS = 1_600
PDF_TOKENS = 3_000
_MAX_IMAGE_BYTES = 5 * 1024 * 1024
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_TAGS = ("text", "image", "document")


class ContentError(ValueError):
    """A malformed content block: the message is the API's 400 text."""


@dataclass(frozen=True, slots=True)
class Content:
    """One message's content: its text (text blocks joined), rendered blocks, and the tokens of
    its images and documents."""

    text: str
    blocks: tuple[PromptBlock, ...]
    media_tokens: int = 0

    @property
    def empty(self) -> bool:
        return not self.text and not self.media_tokens


def read_content(content: object, where: str, role: str, joiner: str) -> Content:
    """Validate ``content`` (at ``where``, e.g. ``messages.0.content``) as the API does."""
    if isinstance(content, str):
        block = (PromptBlock(role, content, count_tokens(content)),) if content else ()
        return Content(content, block)
    if not isinstance(content, list):
        raise ContentError(f"{where}: Input should be a valid string or a list of content blocks")
    texts: list[str] = []
    blocks: list[PromptBlock] = []
    media = 0
    for index, block in enumerate(content):
        at = f"{where}.{index}"
        if not isinstance(block, dict):
            raise ContentError(f"{at}: Input should be a valid dictionary or object to extract fields from")
        kind = block.get("type")
        if kind not in _TAGS:
            raise ContentError(f"{at}: {_tag_mismatch(kind, _TAGS)}")
        ttl = _cache_ttl(block, f"{at}.{kind}")
        if kind == "text":
            text = _text_block(block, at)
            texts.append(text)
            blocks.append(PromptBlock(role, text, count_tokens(text), ttl))
            continue
        if role != "user":
            raise ContentError(f"{at}: {kind} content blocks are only allowed in user messages")
        tokens = _image_tokens(block, at) if kind == "image" else _document_tokens(block, at)
        media += tokens
        key = json.dumps(block.get("source"), sort_keys=True)
        blocks.append(PromptBlock(role, f"\x00{kind}\x00{key}", tokens, ttl))
    return Content(joiner.join(texts), tuple(blocks), media)


def _tag_mismatch(kind: object, tags: tuple[str, ...]) -> str:
    expected = ", ".join(f"'{tag}'" for tag in tags)
    return f"Input tag '{kind}' found using 'type' does not match any of the expected tags: {expected}"


def _text_block(block: dict[str, Any], at: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise ContentError(f"{at}.text.text: Input should be a valid string")
    if not text:
        raise ContentError("messages: text content blocks must be non-empty")
    return text


def _cache_ttl(block: dict[str, Any], where: str) -> str | None:
    """The block's ``cache_control`` TTL (``5m`` by default), or None without one."""
    control = block.get("cache_control")
    if control is None:
        return None
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise ContentError(f"{where}.cache_control.type: Input should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        raise ContentError(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def _source(block: dict[str, Any], at: str, kinds: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise ContentError(f"{at}.source: Field required")
    kind = source.get("type")
    if kind not in kinds:
        raise ContentError(f"{at}.source: {_tag_mismatch(kind, kinds)}")
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ContentError(f"{at}.source.url.url: Input should be a valid URL")
    return str(kind), source


def _decoded(source: dict[str, Any], at: str) -> bytes:
    data = source.get("data")
    if not isinstance(data, str):
        raise ContentError(f"{at}.data: Input should be a valid string")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ContentError(f"{at}.data: Input should be a valid base64 string") from None


def _image_tokens(block: dict[str, Any], at: str) -> int:
    kind, source = _source(block, f"{at}.image", ("base64", "url"))
    if kind == "url":
        return IMAGE_TOKENS
    where = f"{at}.image.source.base64"
    if source.get("media_type") not in _IMAGE_TYPES:
        allowed = ", ".join(f"'{t}'" for t in _IMAGE_TYPES[:-1]) + f" or '{_IMAGE_TYPES[-1]}'"
        raise ContentError(f"{where}.media_type: Input should be {allowed}")
    size = len(_decoded(source, where))
    if size > _MAX_IMAGE_BYTES:
        raise ContentError(f"{where}: image exceeds 5 MB maximum: {size} bytes > {_MAX_IMAGE_BYTES} bytes")
    return IMAGE_TOKENS


def _document_tokens(block: dict[str, Any], at: str) -> int:
    kind, source = _source(block, f"{at}.document", ("base64", "text", "url"))
    where = f"{at}.document.source.{kind}"
    if kind == "url":
        return PDF_TOKENS
    if kind == "text":
        data = source.get("data")
        if source.get("media_type") != "text/plain":
            raise ContentError(f"{where}.media_type: Input should be 'text/plain'")
        if not isinstance(data, str):
            raise ContentError(f"{where}.data: Input should be a valid string")
        return count_tokens(data)
    if source.get("media_type") != "application/pdf":
        raise ContentError(f"{where}.media_type: Input should be 'application/pdf'")
    if not _decoded(source, where).startswith(b"%PDF"):
        raise ContentError(f"{where}: The PDF specified was not valid.")
    return PDF_TOKENS
