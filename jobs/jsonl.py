"""Job definitions from a JSONL file: one JSON object per line, validated before anything is queued.

A line::

    {"id"?, "prompt" | "messages", "system"?, "model"?, "max_tokens"?, "output_budget"?,
     "max_attempts"?, "priority"?, "run_at"?, "metadata"?, "max_cost_usd"?, "prompt_cache"?}

Every problem of every line is collected as ``FILE:LINE: field: problem`` (lines count from 1,
blank lines included, and are skipped), so a user fixes a file in one pass instead of one error at
a time. ``null`` means "not given" for every optional field.

**Ids.** An id is 1-200 characters of ``[A-Za-z0-9._-]`` that does not start with ``.``: it is
used as a file name by ``export``, so no id can name a path outside the export folder. A line
without an id gets a stable one, ``job-`` + the first 20 hex digits of the SHA-256 of the line's
canonical JSON (keys sorted, no spaces). Re-enqueueing the same file therefore finds the same ids
and adds nothing twice; note that the defaults from the config are not part of that hash, so
changing them does not re-run jobs already enqueued.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobs.models import PROMPT_CACHE_MODES, JobSpec, Message

if TYPE_CHECKING:
    from worker.config import Config

__all__ = ("parse_jobs", "parse_object", "is_valid_job_id", "derived_id", "JOB_ID_PATTERN", "FIELDS")

#: A job id: safe as a file name on every platform we export to.
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")

FIELDS = (
    "id",
    "prompt",
    "messages",
    "system",
    "model",
    "max_tokens",
    "output_budget",
    "max_attempts",
    "priority",
    "run_at",
    "metadata",
    "max_cost_usd",
    "prompt_cache",
)
_POSITIVE_INTS = ("max_tokens", "output_budget", "max_attempts")
#: The store keeps integers in 64 bits.
_INT_MAX = 2**63 - 1


def is_valid_job_id(value: object) -> bool:
    """Whether ``value`` is an acceptable job id (see the module docstring)."""
    return isinstance(value, str) and JOB_ID_PATTERN.fullmatch(value) is not None


def derived_id(line: dict[str, Any]) -> str:
    """The stable id of a line that names none: a hash of its canonical JSON."""
    canonical = json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "job-" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:20]


class _Line:
    """Validates one line's object, collecting problems instead of stopping at the first."""

    def __init__(self, where: str, data: dict[str, Any]) -> None:
        self.where = where
        self.data = data
        self.errors: list[str] = []

    def problem(self, field: str, message: str) -> None:
        self.errors.append(f"{self.where}: {field}: {message}")

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def string(self, name: str, *, empty: bool = False) -> str | None:
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(name, f"must be a string, got {_kind(value)}")
            return None
        if not value and not empty:
            self.problem(name, "must not be empty")
            return None
        return value

    def integer(self, name: str, *, positive: bool) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.problem(name, f"must be an integer, got {_kind(value)}")
        elif positive and value < 1:
            self.problem(name, f"must be a positive integer, got {value}")
        elif abs(value) > _INT_MAX:
            self.problem(name, f"must fit in 64 bits, got {value}")
        else:
            return value
        return None

    def cost(self, name: str) -> float | None:
        """A positive, finite number of US dollars."""
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(name, f"must be a number of US dollars, got {_kind(value)}")
        elif not math.isfinite(value) or value <= 0:
            self.problem(name, f"must be a positive number of US dollars, got {value}")
        else:
            return float(value)
        return None

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.get(name)
        if value is None:
            return None
        if value not in choices:
            self.problem(name, f"must be one of {', '.join(choices)}, got {json.dumps(value)}")
            return None
        return str(value)

    def run_at(self) -> float | None:
        value = self.get("run_at")
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0 or value > 1e11:
                hint = " (milliseconds? use seconds)" if math.isfinite(value) and value > 1e11 else ""
                self.problem("run_at", f"must be a time in epoch seconds, got {value}{hint}")
                return None
            return float(value)
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                self.problem("run_at", f"must be an ISO-8601 time or epoch seconds, got {value!r}")
                return None
            if when.tzinfo is None:
                self.problem("run_at", f"needs a timezone, e.g. {value}Z or {value}+00:00")
                return None
            return when.timestamp()
        self.problem("run_at", f"must be an ISO-8601 string or a number, got {_kind(value)}")
        return None

    def messages(self) -> tuple[Message, ...] | None:
        prompt, messages = self.get("prompt"), self.get("messages")
        if prompt is None and messages is None:
            self.problem("prompt", 'one of "prompt" or "messages" is required')
            return None
        if prompt is not None and messages is not None:
            self.problem("messages", 'give "prompt" or "messages", not both')
            return None
        if prompt is not None:
            text = self.string("prompt")
            return None if text is None else (Message("user", text),)
        if not isinstance(messages, list) or not messages:
            self.problem("messages", f"must be a non-empty list, got {_kind(messages)}")
            return None
        parsed = [self.message(f"messages[{n}]", item) for n, item in enumerate(messages)]
        if any(m is None for m in parsed):
            return None
        result = tuple(m for m in parsed if m is not None)
        if result[0].role != "user":
            self.problem("messages[0].role", 'the first message must be from "user"')
            return None
        return result

    def message(self, field: str, item: object) -> Message | None:
        if not isinstance(item, dict):
            self.problem(field, f"must be an object with role and content, got {_kind(item)}")
            return None
        ok = True
        for key in sorted(set(item) - {"role", "content"}):
            self.problem(f"{field}.{key}", "unknown field (a message has role and content)")
            ok = False
        role = item.get("role")
        if role not in ("user", "assistant"):
            self.problem(f"{field}.role", f'must be "user" or "assistant", got {json.dumps(role)}')
            ok = False
        content = self.content(f"{field}.content", item.get("content"))
        if not ok or content is None:
            return None
        return Message("user" if role == "user" else "assistant", content)

    def content(self, field: str, value: object) -> str | None:
        """A string, or a list of text blocks (joined without separators)."""
        if isinstance(value, str):
            if not value:
                self.problem(field, "must not be empty")
                return None
            return value
        if not isinstance(value, list) or not value:
            self.problem(field, f"must be a string or a non-empty list of text blocks, got {_kind(value)}")
            return None
        texts: list[str] = []
        for n, block in enumerate(value):
            where = f"{field}[{n}]"
            if not isinstance(block, dict) or block.get("type") != "text" or set(block) != {"type", "text"}:
                self.problem(where, 'must be a text block {"type": "text", "text": "..."}')
            elif not isinstance(block["text"], str) or not block["text"]:
                self.problem(f"{where}.text", f"must be a non-empty string, got {_kind(block['text'])}")
            else:
                texts.append(block["text"])
        return "".join(texts) if len(texts) == len(value) else None


class _NotJSON(ValueError):
    """Python's json accepts NaN and Infinity; JSON does not, and nor do we."""


def _reject_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not allowed")


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", float: "a number"}
    if value is None:
        return "null"
    if type(value) is int:
        return "an integer"
    return names.get(type(value), type(value).__name__)


def _parse_line(where: str, data: dict[str, Any], config: Config) -> tuple[JobSpec | None, list[str]]:
    line = _Line(where, data)
    for name in sorted(set(data) - set(FIELDS)):
        line.problem(name, f"unknown field (known: {', '.join(FIELDS)})")
    job_id = data.get("id")
    if job_id is None:
        job_id = derived_id(data)
    elif not is_valid_job_id(job_id):
        line.problem("id", "must be 1-200 characters of A-Z a-z 0-9 . _ - and not start with '.'")
    messages = line.messages()
    system = line.string("system", empty=True)
    model = line.string("model")
    ints = {name: line.integer(name, positive=True) for name in _POSITIVE_INTS}
    priority = line.integer("priority", positive=False)
    run_at = line.run_at()
    max_cost = line.cost("max_cost_usd")
    prompt_cache = line.choice("prompt_cache", PROMPT_CACHE_MODES)
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        line.problem("metadata", f"must be an object, got {_kind(metadata)}")
    if line.errors or messages is None:
        return None, line.errors
    defaults = config.anthropic
    spec = JobSpec(
        id=job_id,
        messages=messages,
        model=model or defaults.model,
        max_tokens=ints["max_tokens"] or defaults.max_tokens,
        output_budget=ints["output_budget"] or defaults.output_budget,
        max_attempts=ints["max_attempts"] or config.queue.max_attempts,
        system=system or None,
        priority=priority or 0,
        run_at=run_at,
        metadata=metadata or {},
        max_cost_usd=max_cost or config.costs.max_cost_usd or None,
        prompt_cache=prompt_cache or config.costs.prompt_cache,
    )
    return spec, []


def parse_object(data: object, where: str, config: Config) -> tuple[JobSpec | None, list[str]]:
    """Validate one already-decoded job object (an HTTP body's, say) exactly as a JSONL line is
    validated; problems read ``WHERE: field: problem``."""
    if not isinstance(data, dict):
        return None, [f"{where}: job: must be a JSON object, got {_kind(data)}"]
    return _parse_line(where, data, config)


def parse_jobs(
    lines: Iterable[str | bytes], source_name: str, config: Config
) -> tuple[list[JobSpec], list[str]]:
    """Parse and validate every line; returns the valid specs and every problem found.

    ``lines`` may be bytes (decoded as UTF-8 here, so a bad byte is reported with its line) or
    text. Defaults for model, max_tokens, output_budget, max_attempts, max_cost_usd and
    prompt_cache come from ``config``.
    """
    specs: list[JobSpec] = []
    errors: list[str] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        where = f"{source_name}:{number}"
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                errors.append(f"{where}: line: not valid UTF-8 ({exc.reason} at byte {exc.start})")
                continue
        if number == 1:
            raw = raw.removeprefix("\ufeff")
        if not raw.strip():
            continue
        try:
            data = json.loads(raw, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            errors.append(f"{where}: line: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except _NotJSON as exc:
            errors.append(f"{where}: line: not valid JSON ({exc})")
            continue
        except RecursionError:
            errors.append(f"{where}: line: not valid JSON (nested too deeply)")
            continue
        if not isinstance(data, dict):
            errors.append(f"{where}: line: must be a JSON object, got {_kind(data)}")
            continue
        spec, problems = _parse_line(where, data, config)
        errors.extend(problems)
        if spec is None:
            continue
        if spec.id in first_line:
            errors.append(f"{where}: id: duplicate of line {first_line[spec.id]} ({spec.id!r})")
            continue
        first_line[spec.id] = number
        specs.append(spec)
    return specs, errors
