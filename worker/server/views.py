"""How jobs look over HTTP: one JSON shape for every route that returns a job.

Never the prompt, the system prompt or the document: a job's text is read through its own routes
(``/text``, ``/events``), so listing jobs never moves documents, and nothing secret lands in a
proxy's or a client's logs by accident.
"""

from __future__ import annotations

import base64
from typing import Any

from jobs.models import Job, Thinking

__all__ = ("job_json", "thinking_json", "encode_cursor", "decode_cursor")


def job_json(job: Job) -> dict[str, Any]:
    spec = job.spec
    return {
        "id": job.id,
        "state": str(job.state),
        "model": spec.model,
        "mode": spec.mode,
        "priority": spec.priority,
        "max_tokens": spec.max_tokens,
        "output_budget": spec.output_budget,
        "max_attempts": spec.max_attempts,
        "attempts": job.attempts,
        "failures": job.failures,
        "text_length": job.committed_chars,
        "usage": job.usage.as_dict(),
        "error": job.last_error,
        "stop_reason": job.stop_reason,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "metadata": dict(spec.metadata),
    }


def thinking_json(kept: Thinking) -> dict[str, Any]:
    """One request's kept thinking: ``chars`` is what it streamed, ``cut`` whether the job's bound
    (``[worker] thinking_max_chars``) kept less."""
    return {
        "attempt": kept.attempt,
        "request": kept.request,
        "chars": kept.chars,
        "cut": kept.cut,
        "created_at": kept.created_at,
        "text": kept.text,
    }


def encode_cursor(last_id: str) -> str:
    """An opaque keyset cursor: the last id of a page (clients must not build their own)."""
    return base64.urlsafe_b64encode(last_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str | None:
    """The id a cursor names, or None if it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True).decode("utf-8")
    except (ValueError, UnicodeError):
        return None
    return decoded or None
