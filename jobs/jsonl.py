"""Job definitions from a JSONL file: one JSON object per line, validated before anything is queued.

A line::

    {"id"?, "prompt" | "messages", "system"?, "model"?, "max_tokens"?, "output_budget"?,
     "max_attempts"?, "priority"?, "run_at"?, "metadata"?, "max_cost_usd"?, "prompt_cache"?,
     "mode"?}

``mode`` is ``stream``, ``batch`` or ``auto`` (default ``[queue] default_mode``): see
``worker.batches``. ``auto`` goes by batch when the job's ``deadline`` (a time, as ``run_at``)
leaves the batch horizon (``[queue] batch_horizon``, 24 h: how long a batch may take), by stream
otherwise; so does ``batch`` with a deadline inside the horizon (``jobs.batches.route``). It is
decided here, at enqueue, and again by the batch submitter before each batch round: a batch job
whose deadline comes near is switched to streaming.

Every problem of every line is collected as ``FILE:LINE: field: problem`` (lines count from 1,
blank lines included, and are skipped), so a user fixes a file in one pass instead of one error at
a time. ``null`` means "not given" for every optional field. :func:`check_job` validates one
parsed object and returns the spec or its (field, problem) pairs, for callers other than files
(the HTTP API).

**Refused here because they could never succeed** (each would cost a request, then fail): a lone
surrogate in any string (not encodable as UTF-8), a prompt or message of whitespace only, a
final assistant turn (a prefill) on a model that rejects prefill or one that ends in whitespace
(the API refuses both with a 400).

**Content blocks** (text with ``cache_control``, images, documents; see ``jobs.blocks``) are
checked here, field by field (``messages[0].content[2].source.media_type``), and kept as given:
stored, and sent to the API, exactly as written. A string content stays a string.

**run_at** is epoch seconds or an ISO 8601 date *and time* with a UTC offset or ``Z``, in the
extended or basic format (``2030-01-01T09:00:00Z``, ``2030-01-01 09:00+02:00``,
``20300101T0900Z``). A date alone, or a time without an offset, is refused: which midnight is
meant is not written down.

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
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs.batches import route
from jobs.blocks import check_breakpoints, check_content, check_size
from jobs.models import JOB_MODES, PROMPT_CACHE_MODES, JobSpec, Message
from jobs.options import OPTION_FIELDS, REFUSED_SAMPLING, check_options
from jobs.prefill import supports_prefill

__all__ = (
    "JobDefaults",
    "parse_jobs",
    "read_jobs",
    "check_job",
    "parse_object",
    "Problem",
    "is_valid_job_id",
    "derived_id",
    "JOB_ID_PATTERN",
    "FIELDS",
)


@dataclass(frozen=True, slots=True)
class JobDefaults:
    """What a job line that leaves a field out gets: the settings' defaults, as plain data (the
    worker's ``Config.job_defaults()`` builds it), so that reading jobs needs nothing of the worker."""

    model: str
    max_tokens: int
    output_budget: int
    max_attempts: int
    #: 0 = no per-job cost cap.
    max_cost_usd: float
    prompt_cache: str
    #: ``stream``, ``batch`` or ``auto``.
    mode: str
    #: How long a batch may take, for ``auto`` (seconds).
    batch_horizon: float


#: A problem with one field: (field, what is wrong), e.g. ("messages[1].content", "must not be empty").
Problem = tuple[str, str]

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
    "mode",
    *OPTION_FIELDS,
    *REFUSED_SAMPLING,
)
_FIELD_SET = frozenset(FIELDS)
#: ``mode`` as a file may give it: a stored job is ``stream`` or ``batch``.
_MODES = (*JOB_MODES, "auto")
_POSITIVE_INTS = ("max_tokens", "output_budget", "max_attempts")
#: What ``_check_fields`` returns, each None unless given and valid.
_CHECKED = ("system", "model", *_POSITIVE_INTS, "priority", "run_at", "max_cost_usd", "prompt_cache")
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

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.errors: list[Problem] = []

    def problem(self, field: str, message: str) -> None:
        self.errors.append((field, message))

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def string(self, name: str, *, empty: bool = False) -> str | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(name, f"must be a string, got {_kind(value)}")
            return None
        if not value and not empty:
            self.problem(name, "must not be empty")
            return None
        if value and not value.strip() and not empty:
            self.problem(name, "must not be only whitespace")
            return None
        return value

    def integer(self, name: str, *, positive: bool) -> int | None:
        value = self.data.get(name)
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
        value = self.data.get(name)
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
        value = self.data.get(name)
        if value is None:
            return None
        if value not in choices:
            self.problem(name, f"must be one of {', '.join(choices)}, got {json.dumps(value)}")
            return None
        return str(value)

    def run_at(self, name: str = "run_at") -> float | None:
        """A time: epoch seconds, or an ISO 8601 / RFC 3339 string with an offset."""
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0 or value > 1e11:
                hint = " (milliseconds? use seconds)" if math.isfinite(value) and value > 1e11 else ""
                self.problem(name, f"must be a time in epoch seconds, got {value}{hint}")
                return None
            return float(value)
        if isinstance(value, str):
            return self.iso_time(value, name)
        self.problem(name, f"must be an ISO-8601 string or a number, got {_kind(value)}")
        return None

    def iso_time(self, value: str, name: str = "run_at") -> float | None:
        rule = "an ISO 8601 date and time with an offset, e.g. 2030-01-01T09:00:00Z, or epoch seconds"
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            self.problem(name, f"must be {rule}, got {value!r}")
            return None
        if _TIME_PART.search(value) is None:
            # Python reads "2030-01-01+00:00" as a bare date and drops the offset: refuse both.
            day = when.date().isoformat()
            self.problem(name, f"a date alone is not a time: give one with an offset, e.g. {day}T00:00:00Z")
            return None
        if when.tzinfo is None:
            self.problem(name, f"needs a UTC offset, e.g. {value}Z or {value}+00:00")
            return None
        return when.timestamp()

    def mode(self, default: str, horizon: float, deadline: float | None) -> str | None:
        """The job's route (``jobs.batches.route``): ``auto`` (given, or the default) and ``batch``
        decided by the deadline."""
        mode = self.choice("mode", _MODES)
        if (
            self.get("mode") == "auto"
            and self.get("deadline") is None
            and self.get("timeout_seconds") is None
        ):
            self.problem(
                "mode",
                "auto needs a deadline (a time, as run_at, or timeout_seconds) to choose batch or stream",
            )
            return None
        return route(mode or default, deadline, time.time(), horizon)

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
            got = "an empty list" if messages == [] else _kind(messages)
            self.problem("messages", f"must be a non-empty list of messages, got {got}")
            return None
        parsed = [self.message(f"messages[{n}]", item) for n, item in enumerate(messages)]
        if any(m is None for m in parsed):
            return None
        result = tuple(m for m in parsed if m is not None)
        if result[0].role != "user":
            self.problem("messages[0].role", 'the first message must be from "user"')
            return None
        before = len(self.errors)
        check_breakpoints(((f"messages[{n}].content", m.content) for n, m in enumerate(result)), self.problem)
        check_size([m.content for m in result], self.problem)
        return result if len(self.errors) == before else None

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
        content = check_content(f"{field}.content", item.get("content"), str(role), self.problem)
        if not ok or content is None:
            return None
        return Message("user" if role == "user" else "assistant", content)

    def prefill(self, messages: tuple[Message, ...], model: str) -> None:
        """A final assistant turn must suit the model and the API's rule on whitespace."""
        last = len(messages) - 1
        if messages[last].role != "assistant":
            return
        if not supports_prefill(model):
            self.problem(
                f"messages[{last}].role",
                f"model {model} does not accept a final assistant turn (prefill): end with a user turn",
            )
        elif (text := _final_text(messages[last].content)) != text.rstrip():
            where = (
                "" if isinstance(messages[last].content, str) else f"[{len(messages[last].content) - 1}].text"
            )
            self.problem(
                f"messages[{last}].content{where}",
                "a final assistant turn must not end in whitespace (the API refuses it)",
            )


def _final_text(content: str | tuple[dict[str, Any], ...]) -> str:
    """The text a prefill ends with: the string, or its last block's (an assistant turn's blocks
    are all text)."""
    return content if isinstance(content, str) else str(content[-1].get("text", ""))


def _load(raw: str) -> tuple[Any, str | None]:
    """The line's value, or why it is not JSON we accept."""
    try:
        return _DECODER.decode(raw), None
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg.removesuffix(' at')} at column {exc.colno}"
    except RecursionError:
        return None, "nested too deeply"
    except ValueError as exc:  # NaN/Infinity, or an integer past Python's digit limit
        text = str(exc)
        if "digits" in text:
            return None, "an integer with more than 4300 digits"
        return None, text


class _NotJSON(ValueError):
    """Python's json accepts NaN and Infinity; JSON does not, and nor do we."""


def _reject_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not allowed")


#: One decoder for every line (``json.loads`` with an argument builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", float: "a number"}
    if value is None:
        return "null"
    if type(value) is int:
        return "an integer"
    if value == "":
        return "an empty string"
    if isinstance(value, str) and not value.strip():
        return "only whitespace"
    return names.get(type(value), type(value).__name__)


_TIME_PART = re.compile(r"\d[Tt ]\d")


def _surrogates(value: object, field: str) -> list[Problem]:
    """Strings that cannot be UTF-8 (a lone surrogate such as "\\ud800"), anywhere in ``value``."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return [(field, f"contains a lone surrogate (\\u{ord(value[exc.start]):04x}), not valid Unicode")]
        return []
    if isinstance(value, dict):
        found = [p for k in value for p in _surrogates(k, f"{field} key")]
        return found + [p for k, v in value.items() for p in _surrogates(v, f"{field}.{k}")]
    if isinstance(value, list):
        return [p for n, item in enumerate(value) for p in _surrogates(item, f"{field}[{n}]")]
    return []


def check_job(data: object, defaults: JobDefaults) -> JobSpec | list[Problem]:
    """Validate one job object (a parsed JSONL line, or an HTTP request's body).

    Returns the spec, with ``defaults`` filled in, or every problem found as
    (field, problem) pairs; the field is ``line`` when the object itself is wrong.
    """
    return _check_job(data, defaults, scan_surrogates=True)


def _check_job(data: object, defaults: JobDefaults, *, scan_surrogates: bool) -> JobSpec | list[Problem]:
    """:func:`check_job`; ``scan_surrogates`` False skips the walk for lone surrogates, for a line
    whose JSON text has no ``\\u`` escape (decoded UTF-8 cannot hold one otherwise)."""
    if not isinstance(data, dict):
        return [("line", f"must be a JSON object, got {_kind(data)}")]
    line = _Line(data)
    if not _FIELD_SET.issuperset(data):
        for name in sorted(set(data) - _FIELD_SET):
            line.problem(name, f"unknown field (known: {', '.join(FIELDS)})")
    job_id = _job_id(line)
    messages = line.messages()
    fields = _check_fields(line, defaults)
    if messages is not None:
        _check_last_turn(line, messages, fields["model"] or defaults.model, fields["options"])
    if scan_surrogates:
        for name in sorted(data):
            line.errors.extend(_surrogates(data[name], name))
    if line.errors or messages is None:
        return line.errors
    return _spec(job_id, messages, fields, defaults)


def _job_id(line: _Line) -> str:
    """The line's id, or the one derived from its content; a bad id is reported."""
    job_id = line.get("id")
    if job_id is None:
        return derived_id(line.data)
    if not is_valid_job_id(job_id):
        shown = json.dumps(job_id, ensure_ascii=False)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        line.problem(
            "id", f"must be 1-200 characters of A-Z a-z 0-9 . _ - and not start with '.', got {shown}"
        )
    return str(job_id)


def _check_fields(line: _Line, defaults: JobDefaults) -> dict[str, Any]:
    """Every field but the id and the messages, checked (``None`` where absent or wrong). A field
    absent from the line is not looked at (most lines give few of them)."""
    data = line.data
    fields: dict[str, Any] = dict.fromkeys(_CHECKED)
    if "system" in data:
        fields["system"] = line.string("system", empty=True)
    if "model" in data:
        fields["model"] = line.string("model")
    for name in _POSITIVE_INTS:
        if name in data:
            fields[name] = line.integer(name, positive=True)
    if "priority" in data:
        fields["priority"] = line.integer("priority", positive=False)
    if "run_at" in data:
        fields["run_at"] = line.run_at()
    if "max_cost_usd" in data:
        fields["max_cost_usd"] = line.cost("max_cost_usd")
    if "prompt_cache" in data:
        fields["prompt_cache"] = line.choice("prompt_cache", PROMPT_CACHE_MODES)
    deadline = line.run_at("deadline") if "deadline" in data else None
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        line.problem("metadata", f"must be an object, got {_kind(metadata)}")
    fields["metadata"] = metadata
    fields["options"] = check_options(
        data, line.problem, max_tokens=fields["max_tokens"] or defaults.max_tokens, deadline=deadline
    )
    # The route takes the deadline the options settled on (``timeout_seconds`` becomes one).
    fields["mode"] = line.mode(defaults.mode, defaults.batch_horizon, fields["options"].get("deadline"))
    return fields


def _check_last_turn(line: _Line, messages: tuple[Message, ...], model: str, options: dict[str, Any]) -> None:
    """A final assistant turn must suit the model, and cannot be combined with thinking."""
    line.prefill(messages, model)
    if options.get("thinking") and messages[-1].role == "assistant":
        line.problem(
            f"messages[{len(messages) - 1}].role",
            "a final assistant turn (prefill) cannot be combined with thinking: end with a user turn",
        )


def _spec(
    job_id: str, messages: tuple[Message, ...], fields: dict[str, Any], defaults: JobDefaults
) -> JobSpec:
    """The spec of a valid line, with ``defaults`` filled in."""
    return JobSpec(
        id=job_id,
        messages=messages,
        model=fields["model"] or defaults.model,
        max_tokens=fields["max_tokens"] or defaults.max_tokens,
        output_budget=fields["output_budget"] or defaults.output_budget,
        max_attempts=fields["max_attempts"] or defaults.max_attempts,
        system=fields["system"] or None,
        priority=fields["priority"] or 0,
        run_at=fields["run_at"],
        metadata=fields["metadata"] or {},
        max_cost_usd=fields["max_cost_usd"] or defaults.max_cost_usd or None,
        prompt_cache=fields["prompt_cache"] or defaults.prompt_cache,
        mode=fields["mode"] or "stream",
        **fields["options"],
    )


def parse_object(data: object, where: str, defaults: JobDefaults) -> tuple[JobSpec | None, list[str]]:
    """Validate one already-decoded job object (an HTTP body's, say) exactly as a JSONL line is
    validated; problems read ``WHERE: field: problem``."""
    if not isinstance(data, dict):
        return None, [f"{where}: job: must be a JSON object, got {_kind(data)}"]
    result = check_job(data, defaults)
    if isinstance(result, JobSpec):
        return result, []
    return None, [f"{where}: {field}: {problem}" for field, problem in result]


def read_jobs(
    lines: Iterable[str | bytes], source_name: str, defaults: JobDefaults, *, start: int = 1
) -> Iterator[tuple[int, JobSpec | list[str]]]:
    """Each non-blank line's number and its spec, or its problems as ``FILE:LINE: field: problem``,
    one line at a time (nothing is held but the current line). Duplicate ids are not looked for
    here: :func:`parse_jobs` does it in memory, ``jobs.intake`` on disk. ``start`` is the number of
    the first line given (a reader that feeds a file in batches)."""
    for number, raw in enumerate(lines, start=start):
        # Text decoded here from UTF-8 holds a lone surrogate only through a \\u escape.
        scan = not isinstance(raw, bytes)
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    number,
                    [f"{source_name}:{number}: line: not valid UTF-8 ({exc.reason} at byte {exc.start})"],
                )
                continue
        if number == 1:
            raw = raw.removeprefix("\ufeff")
        if not raw.strip():
            continue
        data, problem = _load(raw)
        if problem is not None:
            yield number, [f"{source_name}:{number}: line: not valid JSON ({problem})"]
            continue
        spec = _check_job(data, defaults, scan_surrogates=scan or "\\u" in raw)
        if isinstance(spec, list):
            yield number, [f"{source_name}:{number}: {field}: {message}" for field, message in spec]
        else:
            yield number, spec


def parse_jobs(
    lines: Iterable[str | bytes], source_name: str, defaults: JobDefaults
) -> tuple[list[JobSpec], list[str]]:
    """Parse and validate every line; returns the valid specs and every problem found.

    ``lines`` may be bytes (decoded as UTF-8 here, so a bad byte is reported with its line) or
    text. Defaults for model, max_tokens, output_budget, max_attempts, max_cost_usd and
    prompt_cache come from ``defaults``. Holds every spec: ``jobs.intake`` streams a file instead.
    """
    specs: list[JobSpec] = []
    errors: list[str] = []
    first_line: dict[str, int] = {}
    for number, spec in read_jobs(lines, source_name, defaults):
        if isinstance(spec, list):
            errors.extend(spec)
        elif spec.id in first_line:
            errors.append(
                f"{source_name}:{number}: id: duplicate of line {first_line[spec.id]} ({spec.id!r})"
            )
        else:
            first_line[spec.id] = number
            specs.append(spec)
    return specs, errors
