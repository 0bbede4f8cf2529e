"""The OpenAPI 3.1 document of the API, served at ``GET /v1/openapi.json``.

Written by hand, next to the routes it describes (aiohttp has no schema generator, and a document
derived from handler signatures would not know the error shapes anyway). ``tests/test_server_api.py``
checks that every route the app serves is documented and fuzzes the non-streaming ones from this
document with Schemathesis; the event stream is tested with a real streaming client instead
(fuzzers read a body to its end, and this one has none while a job runs).
"""

from __future__ import annotations

from typing import Any

from jobs.models import REVISABLE_FIELDS

__all__ = ("openapi_document",)

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "problems": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "field", "message"],
                "properties": {
                    "index": {"type": ["integer", "null"]},
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}

_USAGE = {
    "type": "object",
    "properties": {
        name: {"type": "integer"}
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        )
    },
}

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_STRING_OR_NULL = {"type": ["string", "null"]}

_JOB = {
    "type": "object",
    "required": ["id", "state", "attempts", "text_length", "usage"],
    "properties": {
        "id": {"type": "string"},
        "state": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
        "model": {"type": "string"},
        "mode": {"type": "string", "enum": ["stream", "batch"], "description": "how its requests go"},
        "priority": {"type": "integer"},
        "max_tokens": {"type": "integer"},
        "output_budget": {"type": "integer"},
        "max_attempts": {"type": "integer"},
        "attempts": {"type": "integer"},
        "failures": {"type": "integer"},
        "text_length": {"type": "integer", "description": "characters of committed text"},
        "usage": _USAGE,
        "error": _STRING_OR_NULL,
        "stop_reason": _STRING_OR_NULL,
        "created_at": {"type": "number"},
        "updated_at": {"type": "number"},
        "started_at": _NUMBER_OR_NULL,
        "finished_at": _NUMBER_OR_NULL,
        "metadata": {"type": "object"},
    },
}

_THINKING = {
    "type": "object",
    "required": ["id", "thinking"],
    "properties": {
        "id": {"type": "string"},
        "thinking": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["attempt", "request", "chars", "cut", "created_at", "text"],
                "properties": {
                    "attempt": {"type": "integer"},
                    "request": {"type": "integer"},
                    "chars": {"type": "integer", "description": "characters the request streamed"},
                    "cut": {"type": "boolean", "description": "kept less than streamed (thinking_max_chars)"},
                    "created_at": {"type": "number"},
                    "text": {"type": "string"},
                },
            },
        },
    },
}

_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["user", "assistant"]},
        "content": {
            "description": "A string, or content blocks (text, image, document) as the Messages API takes",
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}],
        },
    },
}

_JOB_INPUT = {
    "type": "object",
    "description": "A job, exactly as a line of a JSONL file: prompt or messages, the rest optional.",
    "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$"},
        "prompt": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
        "system": _STRING_OR_NULL,
        "model": {"type": "string"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "output_budget": {"type": "integer", "minimum": 1},
        "max_attempts": {"type": "integer", "minimum": 1},
        "priority": {"type": "integer"},
        "run_at": {"oneOf": [{"type": "number"}, {"type": "string"}]},
        "metadata": {"type": "object"},
        "mode": {"type": "string", "enum": ["stream", "batch", "auto"]},
        "deadline": {"oneOf": [{"type": "number"}, {"type": "string"}], "description": "for mode auto"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Bad request: the error names the field",
        401: "Missing or invalid bearer token",
        404: "No such job",
        409: "The job's state does not allow this",
        413: "Request body too large",
        503: "The job store is unreachable",
    }
    return {str(code): _json(_ERROR, words[code]) for code in codes}


_LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}


def _batch(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["jobs"], "properties": {"jobs": {"type": "array", "items": item}}}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _job_action(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [_ID],
            "responses": {"200": _json(_JOB, "The job now"), **_errors(401, 404, 409, 503)},
        }
    }


def _retry_action() -> dict[str, Any]:
    action = _job_action(
        "Re-queue a failed or cancelled job, keeping its text; `set` repairs the fields that say how "
        f"it runs first ({', '.join(REVISABLE_FIELDS)})"
    )
    changes = {"type": "object", "properties": {"set": {"type": "object"}}, "additionalProperties": False}
    action["post"]["requestBody"] = {"required": False, "content": {"application/json": {"schema": changes}}}
    action["post"]["responses"].update(_errors(400))
    return action


def openapi_document() -> dict[str, Any]:
    """The document; ``servers`` is left out so clients use the URL they fetched it from."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "longform-worker", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {**_service_paths(), **_collection_paths(), **_job_paths()},
    }


def _service_paths() -> dict[str, Any]:
    """Health, readiness, metrics and this document."""
    return {
        "/healthz": {
            "get": {
                "summary": "Liveness (no token needed)",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "The process is up")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Whether the job store is reachable",
                "responses": {"200": _json({"type": "object"}, "Ready"), **_errors(401, 503)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "The queue's figures for Prometheus (token needed unless metrics_auth = none)",
                "responses": {
                    "200": {
                        "description": "Prometheus text format (OpenMetrics when asked by Accept)",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(401, 503),
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), **_errors(401)},
            }
        },
    }


def _collection_paths() -> dict[str, Any]:
    """``/v1/jobs``: submit one job or a batch, and list them page by page."""
    page = {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "properties": {"jobs": {"type": "array", "items": _JOB}, "next_cursor": _STRING_OR_NULL},
    }
    batch_in = {
        "type": "object",
        "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "items": _JOB_INPUT}},
    }
    batch_out = {
        "type": "object",
        "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "items": _JOB}},
    }
    submitted = {"oneOf": [_JOB, batch_out]}
    return {
        "/v1/jobs": {
            "post": {
                "summary": "Submit one job or a batch, all or nothing; idempotent by id",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"oneOf": [_JOB_INPUT, batch_in]}}},
                },
                "responses": {
                    "201": _json(submitted, "Stored (at least one job was new)"),
                    "200": _json(submitted, "Every id existed already: the stored jobs"),
                    **_errors(400, 401, 413, 503),
                },
            },
            "get": {
                "summary": "List jobs by id, with keyset pagination",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": _json(page, "A page of jobs"), **_errors(400, 401, 503)},
            },
        },
    }


def _job_paths() -> dict[str, Any]:
    """One job: its record, text, thinking, live events and actions."""
    return {
        "/v1/jobs/{id}": {
            "get": {
                "summary": "A job's state, attempts, usage, timings, error and text length",
                "parameters": [_ID],
                "responses": {"200": _json(_JOB, "The job"), **_errors(401, 404, 503)},
            }
        },
        "/v1/jobs/{id}/text": {
            "get": {
                "summary": "The committed text from character offset N",
                "parameters": [
                    _ID,
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {
                    "200": {
                        "description": "UTF-8 text",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/v1/jobs/{id}/thinking": {
            "get": {
                "summary": "The thinking kept beside the job, per attempt and request (not in its text)",
                "parameters": [_ID],
                "responses": {"200": _json(_THINKING, "The kept thinking"), **_errors(401, 404, 503)},
            }
        },
        "/v1/jobs/{id}/events": {
            "get": {
                "summary": "Live relay (SSE): text, state and done events; resumable by Last-Event-ID",
                "parameters": [
                    _ID,
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "An event stream; ends after the done event",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 404),
                },
            }
        },
        "/v1/jobs/{id}/cancel": _job_action("Cancel a queued or running job (409 if finished)"),
        "/v1/jobs/{id}/retry": _retry_action(),
    }
