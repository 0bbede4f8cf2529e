"""The bytes of one Server-Sent Event: shared by the relay's cache and the viewers."""

from __future__ import annotations

import json
from typing import Any

__all__ = ("encode_event",)


def encode_event(name: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """``id:`` (when given), ``event:`` and one ``data:`` line of JSON: JSON escapes CR and LF,
    which SSE would otherwise split the data on."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
